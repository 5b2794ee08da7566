//! A service's scheduler in one queue: its plugin's [`PolicySlot`] if the service uses one
//! (the active instance, then the one a swap replaced), and a built-in, tried in that order.
//!
//! The plugin and the built-in read the same packed load ([`ringvs_abi::Load`]), filled
//! once per new flow from the realservers' shared state: weight 0 for a server that may not
//! take new flows (quiesced, removed, down, over its threshold).

use super::policy::{Ctx, Func, PolicySlot, Prepared, SlotId};
use super::service::Dest;
use crate::plugin::builtin::Builtin;
use crate::plugin::{flow, SchedulerInstance, ServerInfo};
use ringvs_abi::Load;
use std::net::SocketAddr;
use std::sync::Arc;

/// A plugin scheduler prepared for a snapshot: one instance per queue, initialised and told
/// the service's realservers.
pub type PluginSched = Prepared<SchedulerInstance>;

/// One service's scheduling in one queue.
#[derive(Debug)]
pub struct SchedSlot {
    /// The built-in: the scheduler of built-in services, the last fallback of the others.
    pub builtin: Builtin,
    /// The plugin, if the service uses one.
    pub plugin: Option<PolicySlot<SchedulerInstance>>,
    /// The service version the instances were told the servers of.
    pub servers_version: u64,
    load: Vec<u32>,
}

/// The servers of a service, as plugins are told them.
pub fn server_infos(dests: &[Dest]) -> Vec<ServerInfo> {
    dests
        .iter()
        .map(|d| ServerInfo {
            addr: d.addr,
            weight: d.state.weight(),
        })
        .collect()
}

impl SchedSlot {
    /// A slot with only a built-in.
    pub fn builtin(b: Builtin) -> SchedSlot {
        SchedSlot {
            builtin: b,
            plugin: None,
            servers_version: 0,
            load: Vec::new(),
        }
    }

    /// Makes the slot match a snapshot's service: its built-in (the scheduler itself, or wlc
    /// behind a plugin) and its prepared plugin. A plugin kept across a change of the
    /// service's servers is told the new list.
    pub fn sync(
        &mut self,
        name: &str,
        prepared: Option<&Arc<PluginSched>>,
        dests: &[Dest],
        version: u64,
        at: SlotId,
        ctx: &mut Ctx<'_>,
    ) {
        let builtin = if prepared.is_some() { "wlc" } else { name };
        if self.builtin.name() != builtin {
            self.builtin = Builtin::by_name(builtin).unwrap_or_else(Builtin::wlc);
        }
        let replaced = PolicySlot::sync(&mut self.plugin, prepared, at, ctx);
        if replaced {
            // Prepared with the snapshot's servers.
            self.servers_version = version;
        } else if self.servers_version != version {
            self.servers_version = version;
            if let Some(slot) = self.plugin.as_mut() {
                let infos = server_infos(dests);
                slot.tell(Func::ServersChanged, ctx, |i| i.servers_changed(&infos));
            }
        }
    }

    /// Picks a realserver for a flow `client → vip`: an index into `dests`. Plugin faults
    /// are handled by the slot; without an answer the built-in decides.
    #[inline]
    pub fn pick(
        &mut self,
        proto: u8,
        client: SocketAddr,
        vip: SocketAddr,
        dests: &[Dest],
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        self.load.clear();
        for d in dests {
            let w = if d.state.schedulable() {
                d.state.weight()
            } else {
                0
            };
            self.load.extend_from_slice(&[
                w,
                d.state.counters.active(),
                d.state.counters.inactive(),
            ]);
        }
        if let Some(slot) = self.plugin.as_mut() {
            let flow = flow(proto, client, vip);
            let load = &self.load;
            if let Some(r) = slot.call(Func::Pick, ctx, |i| i.pick(&flow, load)) {
                return r;
            }
        }
        self.builtin.pick(Load::new(&self.load))
    }

    /// Stops using the plugin (the service is going away); its instances are given back.
    pub fn give_back(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(mut slot) = self.plugin.take() {
            slot.give_back(ctx);
        }
    }
}
