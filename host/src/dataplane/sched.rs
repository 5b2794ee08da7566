//! A service's scheduler in one queue: a plugin instance if the service uses one, the
//! instance it replaced, and a built-in, tried in that order.
//!
//! A fault poisons the plugin instance: it is retired (dropped off the data path by the
//! control plane), the flow is scheduled by the fallback, and a fresh instance is asked for;
//! the control plane delivers it after a backoff.

use super::service::Dest;
use crate::plugin::builtin::Builtin;
use crate::plugin::{flow_v4, Fault, FaultKind, Plugin, SchedulerInstance, ServerInfo};
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Plugin functions counted in `ringvs_plugin_calls_total{func}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    /// `pick`.
    Pick = 0,
    /// `servers-changed`.
    ServersChanged,
    /// `export-state` / `import-state`.
    State,
    /// `affinity`.
    Affinity,
    /// `admit`.
    Admit,
    /// `tick`.
    Tick,
}

/// Number of [`Func`]s.
pub const FUNCS: usize = 6;

impl Func {
    /// Every function, in order.
    pub const ALL: [Func; FUNCS] = [
        Func::Pick,
        Func::ServersChanged,
        Func::State,
        Func::Affinity,
        Func::Admit,
        Func::Tick,
    ];

    /// The `func` label.
    pub fn label(self) -> &'static str {
        match self {
            Func::Pick => "pick",
            Func::ServersChanged => "servers_changed",
            Func::State => "state",
            Func::Affinity => "affinity",
            Func::Admit => "admit",
            Func::Tick => "tick",
        }
    }
}

/// Calls, faults and fallbacks of one plugin in one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginCounters {
    /// Calls per [`Func`].
    pub calls: [u64; FUNCS],
    /// Faults per [`FaultKind`].
    pub faults: [u64; 4],
    /// Decisions taken by a fallback because the plugin's instance was poisoned.
    pub fallbacks: u64,
    /// Defense actions applied, per [`super::defense::ActionKind`].
    pub actions: [u64; super::defense::ACTIONS],
    /// Defense actions refused.
    pub refused: [u64; super::defense::ACTIONS],
    /// New flows a defense refused (its `admit`, or its drop rate).
    pub refused_flows: u64,
}

/// Every `SAMPLE_EVERY`-th call is timed for the latency histogram.
const SAMPLE_EVERY: u64 = 16;

/// Per-queue bookkeeping of plugin calls (published with the queue's report).
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Counters per plugin name.
    pub counters: Vec<(Arc<str>, PluginCounters)>,
    /// Timed calls (plugin, function, seconds) since the last publish.
    pub samples: Vec<(Arc<str>, Func, f64)>,
    seq: u64,
}

impl PluginStats {
    fn counters(&mut self, name: &Arc<str>) -> &mut PluginCounters {
        let i = match self
            .counters
            .iter()
            .position(|(n, _)| Arc::ptr_eq(n, name) || n == name)
        {
            Some(i) => i,
            None => {
                self.counters
                    .push((name.clone(), PluginCounters::default()));
                self.counters.len() - 1
            }
        };
        &mut self.counters[i].1
    }

    /// Runs a plugin call, counting it and timing one in [`SAMPLE_EVERY`].
    #[inline]
    pub fn call<T>(
        &mut self,
        name: &Arc<str>,
        func: Func,
        f: impl FnOnce() -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        let t = self.start();
        let r = f();
        self.finish(name, func, t, &r);
        r
    }

    /// A call begins: its start time if it is one of the [`SAMPLE_EVERY`] timed. With
    /// [`PluginStats::finish`], for a call that borrows the instance that owns the name.
    #[inline]
    pub fn start(&mut self) -> Option<Instant> {
        self.seq += 1;
        let timed = self.seq.is_multiple_of(SAMPLE_EVERY) && self.samples.len() < 65_536;
        timed.then(Instant::now)
    }

    /// Counts a call begun with [`PluginStats::start`] and its outcome.
    #[inline]
    pub fn finish<T>(
        &mut self,
        name: &Arc<str>,
        func: Func,
        t: Option<Instant>,
        r: &Result<T, Fault>,
    ) {
        let c = self.counters(name);
        c.calls[func as usize] += 1;
        if let Err(fault) = &r {
            c.faults[FaultKind::ALL
                .iter()
                .position(|k| *k == fault.kind)
                .unwrap_or(2)] += 1;
        }
        if let Some(t) = t {
            self.samples
                .push((name.clone(), func, t.elapsed().as_secs_f64()));
        }
    }

    /// The counters of a defense plugin (for its actions).
    pub fn defense(&mut self, name: &Arc<str>) -> &mut PluginCounters {
        self.counters(name)
    }

    /// Counts a decision taken by a fallback.
    pub fn fallback(&mut self, name: &Arc<str>) {
        self.counters(name).fallbacks += 1;
    }
}

/// A plugin scheduler prepared by the control plane for every queue: one instance each,
/// already initialised and told the service's realservers.
pub struct PluginSched {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// One instance per queue, taken by the queue when it switches to this snapshot.
    pub instances: Mutex<Vec<Option<SchedulerInstance>>>,
}

impl std::fmt::Debug for PluginSched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginSched({})", self.plugin.name)
    }
}

/// What a queue tells the control plane about plugins.
pub enum PluginEvent {
    /// The queue has no usable instance of a service's plugin (it was poisoned, or none
    /// was prepared for this queue) and wants a fresh one.
    NeedScheduler {
        /// Queue.
        shard: usize,
        /// Service slot.
        svc: u16,
        /// The plugin.
        plugin: Arc<Plugin>,
        /// What happened, if it was a fault.
        fault: Option<Fault>,
    },
    /// The queue has no usable instance of one of a service's defenses.
    NeedDefense {
        /// Queue.
        shard: usize,
        /// Service slot.
        svc: u16,
        /// Position of the defense in the service's list.
        index: usize,
        /// The plugin.
        plugin: Arc<Plugin>,
        /// What happened, if it was a fault.
        fault: Option<Fault>,
    },
    /// The queue has no usable instance of a service's persistence plugin.
    NeedPersistence {
        /// Queue.
        shard: usize,
        /// Service slot.
        svc: u16,
        /// The plugin.
        plugin: Arc<Plugin>,
        /// What happened, if it was a fault.
        fault: Option<Fault>,
    },
    /// A defense asked to block a prefix (already applied in the asking queue).
    Block {
        /// The checked request.
        req: super::defense::BlockRequest,
        /// The plugin.
        by: Arc<str>,
    },
    /// A defense asked to lift a block.
    Unblock {
        /// Prefix address.
        addr: std::net::Ipv4Addr,
        /// Prefix length.
        len: u8,
    },
    /// An instance the queue no longer uses, to be dropped off the data path.
    Retire(Box<dyn std::any::Any + Send>),
}

impl std::fmt::Debug for PluginEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginEvent::NeedScheduler {
                shard,
                svc,
                plugin,
                fault,
            } => {
                write!(
                    f,
                    "NeedScheduler(queue {shard}, service {svc}, {}: {fault:?})",
                    plugin.name
                )
            }
            PluginEvent::NeedDefense {
                shard,
                svc,
                index,
                plugin,
                fault,
            } => {
                write!(
                    f,
                    "NeedDefense(queue {shard}, service {svc}, #{index} {}: {fault:?})",
                    plugin.name
                )
            }
            PluginEvent::NeedPersistence {
                shard,
                svc,
                plugin,
                fault,
            } => {
                write!(
                    f,
                    "NeedPersistence(queue {shard}, service {svc}, {}: {fault:?})",
                    plugin.name
                )
            }
            PluginEvent::Block { req, by } => write!(f, "Block({req:?} by {by})"),
            PluginEvent::Unblock { addr, len } => write!(f, "Unblock({addr}/{len})"),
            PluginEvent::Retire(_) => f.write_str("Retire"),
        }
    }
}

/// One service's scheduling in one queue.
pub struct SchedSlot {
    /// The built-in: the scheduler of built-in services, the last fallback of the others.
    pub builtin: Builtin,
    /// The plugin the service uses, if any.
    pub plugin: Option<Arc<Plugin>>,
    /// Its instance in this queue (none while poisoned).
    pub active: Option<SchedulerInstance>,
    /// The instance it replaced in a swap: the first fallback.
    pub previous: Option<SchedulerInstance>,
    /// A fresh instance has been asked for.
    pub waiting: bool,
    /// The service version the instances were told the servers of.
    pub servers_version: u64,
    load: Vec<u32>,
}

impl std::fmt::Debug for SchedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedSlot")
            .field("builtin", &self.builtin.name())
            .field("plugin", &self.plugin.as_ref().map(|p| p.name.clone()))
            .field("active", &self.active.is_some())
            .field("previous", &self.previous.is_some())
            .finish()
    }
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
            active: None,
            previous: None,
            waiting: false,
            servers_version: 0,
            load: Vec::new(),
        }
    }

    /// Picks a realserver for a flow `client → vip`: an index into `dests`. Plugin faults
    /// are handled here; `events` receives what the control plane must know.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn pick(
        &mut self,
        proto: u8,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        dests: &[Dest],
        ids: (usize, u16),
        stats: &mut PluginStats,
        events: Option<&crossbeam_channel::Sender<PluginEvent>>,
    ) -> Option<usize> {
        if self.active.is_none() && self.previous.is_none() {
            if let Some(p) = &self.plugin {
                // The service's plugin is poisoned and no fallback instance is left.
                stats.fallback(&p.name);
            }
            return self.builtin.pick(dests);
        }
        let flow = flow_v4(proto, client, vip);
        let flow = &flow;
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
        // The instances are borrowed by their calls and the names only counted after them:
        // cloning a name's `Arc` per new flow would bounce its count between the queues.
        if let Some(inst) = self.active.as_mut() {
            let t = stats.start();
            let r = inst.pick(flow, &self.load);
            stats.finish(&inst.plugin.name, Func::Pick, t, &r);
            match r {
                Ok(r) => return r,
                Err(fault) => self.poison(fault, ids, events),
            }
        }
        if let Some(p) = &self.plugin {
            stats.fallback(&p.name);
        }
        if let Some(prev) = self.previous.as_mut() {
            let t = stats.start();
            let r = prev.pick(flow, &self.load);
            stats.finish(&prev.plugin.name, Func::Pick, t, &r);
            match r {
                Ok(r) => return r,
                Err(_) => {
                    // The fallback failed too: retire it, no replacement is asked for.
                    if let (Some(p), Some(tx)) = (self.previous.take(), events) {
                        let _ = tx.send(PluginEvent::Retire(Box::new(p)));
                    }
                }
            }
        }
        self.builtin.pick(dests)
    }

    fn poison(
        &mut self,
        fault: Fault,
        (shard, svc): (usize, u16),
        events: Option<&crossbeam_channel::Sender<PluginEvent>>,
    ) {
        let Some(inst) = self.active.take() else {
            return;
        };
        let plugin = inst.plugin.clone();
        if let Some(tx) = events {
            let _ = tx.send(PluginEvent::Retire(Box::new(inst)));
            if !self.waiting {
                self.waiting = true;
                let _ = tx.send(PluginEvent::NeedScheduler {
                    shard,
                    svc,
                    plugin,
                    fault: Some(fault),
                });
            }
        }
    }

    /// Tells the instances the service's servers (after a change). A fault poisons.
    pub fn servers_changed(
        &mut self,
        dests: &[Dest],
        version: u64,
        ids: (usize, u16),
        stats: &mut PluginStats,
        events: Option<&crossbeam_channel::Sender<PluginEvent>>,
    ) {
        self.servers_version = version;
        let infos = server_infos(dests);
        if let Some(inst) = self.active.as_mut() {
            let name = inst.plugin.name.clone();
            if let Err(f) = stats.call(&name, Func::ServersChanged, || inst.servers_changed(&infos))
            {
                self.poison(f, ids, events);
            }
        }
        if let Some(prev) = self.previous.as_mut() {
            let name = prev.plugin.name.clone();
            if stats
                .call(&name, Func::ServersChanged, || prev.servers_changed(&infos))
                .is_err()
            {
                if let (Some(p), Some(tx)) = (self.previous.take(), events) {
                    let _ = tx.send(PluginEvent::Retire(Box::new(p)));
                }
            }
        }
    }

    /// Installs a new instance of the service's plugin: the current one (if any) hands over
    /// its state and becomes the fallback.
    pub fn install(
        &mut self,
        mut new: SchedulerInstance,
        ids: (usize, u16),
        stats: &mut PluginStats,
        events: Option<&crossbeam_channel::Sender<PluginEvent>>,
    ) {
        self.waiting = false;
        let mut import_fault = None;
        if let Some(mut old) = self.active.take() {
            let oname = old.plugin.name.clone();
            if let Ok(state) = stats.call(&oname, Func::State, || old.export_state()) {
                if !state.is_empty() {
                    let nname = new.plugin.name.clone();
                    // A refusal means "start fresh"; a fault poisons the new instance.
                    if let Err(f) = stats.call(&nname, Func::State, || new.import_state(&state)) {
                        import_fault = Some(f);
                    }
                }
            }
            if let (Some(p), Some(tx)) = (self.previous.replace(old), events) {
                let _ = tx.send(PluginEvent::Retire(Box::new(p)));
            }
        }
        self.active = Some(new);
        if let Some(f) = import_fault {
            self.poison(f, ids, events);
        }
    }

    /// Asks the control plane for an instance (none was prepared for this queue).
    pub fn request(
        &mut self,
        (shard, svc): (usize, u16),
        events: Option<&crossbeam_channel::Sender<PluginEvent>>,
    ) {
        if let (Some(plugin), Some(tx), false) = (self.plugin.clone(), events, self.waiting) {
            self.waiting = true;
            let _ = tx.send(PluginEvent::NeedScheduler {
                shard,
                svc,
                plugin,
                fault: None,
            });
        }
    }

    /// Stops using plugins (the service switched to a built-in); instances are retired.
    pub fn drop_plugins(&mut self, events: Option<&crossbeam_channel::Sender<PluginEvent>>) {
        self.plugin = None;
        self.waiting = false;
        for i in [self.active.take(), self.previous.take()]
            .into_iter()
            .flatten()
        {
            if let Some(tx) = events {
                let _ = tx.send(PluginEvent::Retire(Box::new(i)));
            }
        }
    }
}
