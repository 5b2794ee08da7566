//! A service's persistence plugin in one queue: the instance that answers `affinity` for new
//! flows. The templates themselves are the host's ([`super::templates`]), so replacing the
//! instance — a reload that swaps the plugin, or a fresh one after a fault — loses nothing.
//!
//! A fault (trap, deadline, memory) poisons the instance: the flow is scheduled normally, as
//! if the service were not persistent, the fallback is counted, and a fresh instance is asked
//! for; the control plane delivers it after the same backoff as schedulers'. Until then every
//! new flow of the service is scheduled normally (and counted as a fallback).

use super::sched::{Func, PluginEvent, PluginStats};
use crate::plugin::{flow_v4, Fault, PersistenceInstance, Plugin};
use crossbeam_channel::Sender;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};

/// A persistence plugin prepared by the control plane for every queue: its configuration
/// (the service's `persistence.config`, flattened) and one initialised instance per queue.
pub struct PluginPersist {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// The configuration its instances were given.
    pub config: Vec<(String, String)>,
    /// One instance per queue, taken by the queue when it switches to this snapshot.
    pub instances: Mutex<Vec<Option<PersistenceInstance>>>,
}

impl std::fmt::Debug for PluginPersist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginPersist({})", self.plugin.name)
    }
}

/// A service's persistence in one queue.
#[derive(Debug)]
pub struct PersistSlot {
    /// What the control plane prepared (the slot's identity across snapshots).
    pub prepared: Arc<PluginPersist>,
    /// The instance (none while poisoned or not yet delivered).
    pub inst: Option<PersistenceInstance>,
    /// A fresh instance has been asked for.
    pub waiting: bool,
}

fn retire(inst: PersistenceInstance, events: Option<&Sender<PluginEvent>>) {
    if let Some(tx) = events {
        let _ = tx.send(PluginEvent::Retire(Box::new(inst)));
    }
}

impl PersistSlot {
    /// The affinity key of a new flow, or `None` (not persistent: no key, or no usable
    /// instance). A fault poisons the instance.
    #[inline]
    pub fn affinity(
        &mut self,
        proto: u8,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        ids: (usize, u16),
        stats: &mut PluginStats,
        events: Option<&Sender<PluginEvent>>,
    ) -> Option<u64> {
        // Borrowed, not cloned: the name's reference count is shared by every queue.
        let name = &self.prepared.plugin.name;
        let Some(inst) = self.inst.as_mut() else {
            stats.fallback(name);
            self.request(ids, None, events);
            return None;
        };
        let flow = flow_v4(proto, client, vip);
        match stats.call(name, Func::Affinity, || inst.affinity(&flow)) {
            Ok(key) => key,
            Err(fault) => {
                stats.fallback(name);
                self.poison(fault, ids, events);
                None
            }
        }
    }

    fn poison(&mut self, fault: Fault, ids: (usize, u16), events: Option<&Sender<PluginEvent>>) {
        if let Some(inst) = self.inst.take() {
            retire(inst, events);
        }
        self.request(ids, Some(fault), events);
    }

    /// Asks the control plane for a fresh instance (once until it comes).
    fn request(
        &mut self,
        (shard, svc): (usize, u16),
        fault: Option<Fault>,
        events: Option<&Sender<PluginEvent>>,
    ) {
        if self.waiting {
            return;
        }
        if let Some(tx) = events {
            self.waiting = true;
            let _ = tx.send(PluginEvent::NeedPersistence {
                shard,
                svc,
                plugin: self.prepared.plugin.clone(),
                fault,
            });
        }
    }

    /// Takes a fresh instance (after a fault), if it is still of this slot's plugin and the
    /// slot has none; otherwise gives it back to be retired.
    pub fn deliver(&mut self, inst: PersistenceInstance, events: Option<&Sender<PluginEvent>>) {
        if self.inst.is_none() && Arc::ptr_eq(&self.prepared.plugin, &inst.plugin) {
            self.inst = Some(inst);
            self.waiting = false;
        } else {
            retire(inst, events);
        }
    }
}

/// Makes a service's persistence slot match what the snapshot prepared: an unchanged
/// preparation keeps its slot; a new one takes the instance prepared for this queue, which
/// takes over its predecessor's private state (`export-state` / `import-state`); a service
/// that is no longer persistent gives its instance back. Templates are untouched.
pub fn sync_persist(
    slot: &mut Option<PersistSlot>,
    prepared: Option<&Arc<PluginPersist>>,
    ids: (usize, u16),
    stats: &mut PluginStats,
    events: Option<&Sender<PluginEvent>>,
) {
    let Some(p) = prepared else {
        if let Some(inst) = slot.take().and_then(|s| s.inst) {
            retire(inst, events);
        }
        return;
    };
    if slot.as_ref().is_some_and(|s| Arc::ptr_eq(&s.prepared, p)) {
        return;
    }
    let mut new = PersistSlot {
        prepared: p.clone(),
        inst: p
            .instances
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(ids.0).and_then(Option::take)),
        waiting: false,
    };
    if let Some(mut old) = slot.take().and_then(|s| s.inst) {
        let mut import_fault = None;
        if let Some(inst) = new.inst.as_mut() {
            let oname = old.plugin.name.clone();
            if let Ok(state) = stats.call(&oname, Func::State, || old.export_state()) {
                if !state.is_empty() {
                    let nname = inst.plugin.name.clone();
                    // A refusal means "start fresh"; a fault poisons the new instance.
                    if let Err(f) = stats.call(&nname, Func::State, || inst.import_state(&state)) {
                        import_fault = Some(f);
                    }
                }
            }
        }
        retire(old, events);
        if let Some(f) = import_fault {
            new.poison(f, ids, events);
        }
    }
    if new.inst.is_none() {
        new.request(ids, None, events);
    }
    *slot = Some(new);
}
