//! Plugin instances: one per queue, each call under an epoch deadline and a memory limit.
//!
//! Any fault (a trap, a missed deadline, a memory limit hit, a return that breaks the WIT's
//! rules) poisons the instance: the caller must drop it and fall back.

use super::bindings::{defense, persistence, scheduler, types};
use super::runtime::{Plugin, PluginError, Pre, Runtime};
use super::store::{new_store, with_table, HostState, LogBudget, TableView};
use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use wasmtime::{Store, Trap};

/// What went wrong in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The call ran past its deadline (an infinite loop, or just too slow).
    Deadline,
    /// The instance asked for more memory than its limit.
    Memory,
    /// The guest trapped (`unreachable`, out-of-bounds access, a panic in the guest).
    Trap,
    /// The guest answered, but with something the WIT forbids (e.g. an unknown server).
    BadReturn,
}

impl FaultKind {
    /// Every kind, in order.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Deadline,
        FaultKind::Memory,
        FaultKind::Trap,
        FaultKind::BadReturn,
    ];

    /// The `kind` label of `ringvs_plugin_traps_total`.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Trap => "trap",
            FaultKind::BadReturn => "bad_return",
        }
    }
}

/// A fault, with what the host saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// Details for the log.
    pub detail: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)
    }
}

impl Fault {
    /// A bad return.
    pub fn bad_return(detail: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::BadReturn,
            detail: detail.into(),
        }
    }
}

fn classify(store: &Store<HostState>, e: wasmtime::Error) -> Fault {
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return Fault {
            kind: FaultKind::Deadline,
            detail: "the call ran past its deadline".into(),
        };
    }
    if store.data().limits.denied {
        return Fault {
            kind: FaultKind::Memory,
            detail: format!("{e:#}"),
        };
    }
    Fault {
        kind: FaultKind::Trap,
        detail: format!("{e:#}"),
    }
}

/// A realserver as a scheduler plugin is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo {
    /// Address and port.
    pub addr: SocketAddr,
    /// Configured weight.
    pub weight: u32,
}

/// The WIT form of an address: IPv4 as one number, IPv6 as two halves, high first.
pub fn wit_ip(a: IpAddr) -> types::Ip {
    match a {
        IpAddr::V4(a) => types::Ip::V4(u32::from(a)),
        IpAddr::V6(a) => {
            let n = u128::from(a);
            types::Ip::V6(((n >> 64) as u64, n as u64))
        }
    }
}

/// The WIT flow of a flow (client and service share a family).
pub fn flow(proto: u8, client: SocketAddr, vip: SocketAddr) -> types::Flow {
    types::Flow {
        proto,
        client: wit_ip(client.ip()),
        client_port: client.port(),
        vip: wit_ip(vip.ip()),
        vport: vip.port(),
    }
}

/// The WIT flow of an IPv4 flow.
#[inline]
pub fn flow_v4(proto: u8, client: SocketAddrV4, vip: SocketAddrV4) -> types::Flow {
    flow(proto, client.into(), vip.into())
}

/// Calls `f` allowing `ticks` epochs of guest execution, classifying any error.
fn guarded<T>(
    store: &mut Store<HostState>,
    ticks: u64,
    f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<T>,
) -> Result<T, Fault> {
    let s = store.data_mut();
    s.crossings = 0;
    s.allowed = ticks;
    store.set_epoch_deadline(1);
    f(store).map_err(|e| classify(store, e))
}

/// Instantiates `pre` in a fresh store.
fn instantiate<B>(
    plugin: &Plugin,
    f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<B>,
) -> Result<(Store<HostState>, B), PluginError> {
    let (rt, what) = (&plugin.runtime, &plugin.name);
    let log = LogBudget::new(plugin.name.clone(), plugin.logs.clone());
    let mut store = new_store(&rt.engine, rt.opts.memory_limit, rt.memory.clone(), log);
    let s = store.data_mut();
    s.crossings = 0;
    s.allowed = Runtime::ticks(rt.opts.setup_deadline);
    store.set_epoch_deadline(1);
    let b = f(&mut store)
        .map_err(|e| PluginError::Engine(format!("cannot instantiate {what}: {e:#}")))?;
    Ok((store, b))
}

fn init_result(r: Result<Result<(), String>, Fault>) -> Result<(), PluginError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(PluginError::ConfigRejected(msg)),
        Err(f) => Err(PluginError::SelfTest(format!("init: {f}"))),
    }
}

/// A scheduler plugin instance.
pub struct SchedulerInstance {
    store: Store<HostState>,
    b: scheduler::SchedulerPlugin,
    call: u64,
    setup: u64,
    /// The plugin it is an instance of.
    pub plugin: Arc<Plugin>,
}

impl fmt::Debug for SchedulerInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchedulerInstance({})", self.plugin.name)
    }
}

impl SchedulerInstance {
    /// Instantiates a scheduler plugin and hands it its configuration.
    pub fn new(plugin: &Arc<Plugin>) -> Result<SchedulerInstance, PluginError> {
        let Pre::Scheduler(pre) = &plugin.pre else {
            return Err(PluginError::WrongWorld(
                plugin.path.clone(),
                format!("is a {} plugin, not a scheduler", plugin.kind.name()),
            ));
        };
        let rt = &plugin.runtime;
        let (store, b) = instantiate(plugin, |s| pre.instantiate(s))?;
        let mut me = SchedulerInstance {
            store,
            b,
            call: Runtime::ticks(rt.opts.call_deadline),
            setup: Runtime::ticks(rt.opts.setup_deadline),
            plugin: plugin.clone(),
        };
        let cfg = plugin.config.clone();
        let ticks = me.setup;
        init_result(guarded(&mut me.store, ticks, |s| {
            me.b.ringvs_plugin_scheduler().call_init(s, &cfg)
        }))?;
        Ok(me)
    }

    /// Tells the instance the service's realservers.
    pub fn servers_changed(&mut self, servers: &[ServerInfo]) -> Result<(), Fault> {
        let list: Vec<types::Server> = servers
            .iter()
            .map(|s| types::Server {
                addr: wit_ip(s.addr.ip()),
                port: s.addr.port(),
                weight: s.weight,
            })
            .collect();
        let b = &self.b;
        guarded(&mut self.store, self.setup, |s| {
            b.ringvs_plugin_scheduler().call_servers_changed(s, &list)
        })
    }

    /// Picks a realserver. `load` is weight, active, inactive per server. The answer is
    /// checked: an index out of range or of a weight-0 server is a fault.
    #[inline]
    pub fn pick(&mut self, flow: &types::Flow, load: &[u32]) -> Result<Option<usize>, Fault> {
        let b = &self.b;
        let r = guarded(&mut self.store, self.call, |s| {
            b.ringvs_plugin_scheduler().call_pick(s, *flow, load)
        })?;
        match r {
            None => Ok(None),
            Some(i) => {
                let i = i as usize;
                match load.get(i * ringvs_abi::LOAD_STRIDE) {
                    Some(0) => Err(Fault::bad_return(format!(
                        "picked server {i}, whose weight is 0"
                    ))),
                    Some(_) => Ok(Some(i)),
                    None => Err(Fault::bad_return(format!(
                        "picked server {i} of {}",
                        load.len() / ringvs_abi::LOAD_STRIDE
                    ))),
                }
            }
        }
    }

    /// The instance's private state.
    pub fn export_state(&mut self) -> Result<Vec<u8>, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.setup, |s| {
            b.ringvs_plugin_scheduler().call_export_state(s)
        })
    }

    /// Hands over a predecessor's state; `Ok(Err(msg))` if the plugin did not understand it.
    pub fn import_state(&mut self, state: &[u8]) -> Result<Result<(), String>, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.setup, |s| {
            b.ringvs_plugin_scheduler().call_import_state(s, state)
        })
    }
}

/// A persistence plugin instance.
pub struct PersistenceInstance {
    store: Store<HostState>,
    b: persistence::PersistencePlugin,
    call: u64,
    setup: u64,
    /// The plugin it is an instance of.
    pub plugin: Arc<Plugin>,
}

impl fmt::Debug for PersistenceInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersistenceInstance({})", self.plugin.name)
    }
}

impl PersistenceInstance {
    /// Instantiates a persistence plugin with `config` (the service's `persistence.config`).
    pub fn new(
        plugin: &Arc<Plugin>,
        config: &[(String, String)],
    ) -> Result<PersistenceInstance, PluginError> {
        let Pre::Persistence(pre) = &plugin.pre else {
            return Err(PluginError::WrongWorld(
                plugin.path.clone(),
                format!(
                    "is a {} plugin, not a persistence plugin",
                    plugin.kind.name()
                ),
            ));
        };
        let rt = &plugin.runtime;
        let (store, b) = instantiate(plugin, |s| pre.instantiate(s))?;
        let mut me = PersistenceInstance {
            store,
            b,
            call: Runtime::ticks(rt.opts.call_deadline),
            setup: Runtime::ticks(rt.opts.setup_deadline),
            plugin: plugin.clone(),
        };
        let ticks = me.setup;
        let cfg = config.to_vec();
        init_result(guarded(&mut me.store, ticks, |s| {
            me.b.ringvs_plugin_persistence().call_init(s, &cfg)
        }))?;
        Ok(me)
    }

    /// The affinity key of a new flow.
    #[inline]
    pub fn affinity(&mut self, flow: &types::Flow) -> Result<Option<u64>, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.call, |s| {
            b.ringvs_plugin_persistence().call_affinity(s, *flow)
        })
    }

    /// The instance's private state.
    pub fn export_state(&mut self) -> Result<Vec<u8>, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.setup, |s| {
            b.ringvs_plugin_persistence().call_export_state(s)
        })
    }

    /// Hands over a predecessor's state.
    pub fn import_state(&mut self, state: &[u8]) -> Result<Result<(), String>, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.setup, |s| {
            b.ringvs_plugin_persistence().call_import_state(s, state)
        })
    }
}

/// The defense interface's types.
pub use defense::exports::ringvs::plugin::defense as defense_types;
/// The table interface's types.
pub use defense::ringvs::plugin::table as table_types;

/// A defense plugin instance.
pub struct DefenseInstance {
    store: Store<HostState>,
    b: defense::DefensePlugin,
    call: u64,
    setup: u64,
    tick: u64,
    /// The plugin it is an instance of.
    pub plugin: Arc<Plugin>,
}

impl fmt::Debug for DefenseInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DefenseInstance({})", self.plugin.name)
    }
}

impl DefenseInstance {
    /// Instantiates a defense plugin and hands it its configuration.
    pub fn new(plugin: &Arc<Plugin>) -> Result<DefenseInstance, PluginError> {
        let Pre::Defense(pre) = &plugin.pre else {
            return Err(PluginError::WrongWorld(
                plugin.path.clone(),
                format!("is a {} plugin, not a defense", plugin.kind.name()),
            ));
        };
        let rt = &plugin.runtime;
        let (store, b) = instantiate(plugin, |s| pre.instantiate(s))?;
        let mut me = DefenseInstance {
            store,
            b,
            call: Runtime::ticks(rt.opts.call_deadline),
            setup: Runtime::ticks(rt.opts.setup_deadline),
            tick: Runtime::ticks(rt.opts.tick_deadline),
            plugin: plugin.clone(),
        };
        let ticks = me.setup;
        let cfg = plugin.config.clone();
        init_result(guarded(&mut me.store, ticks, |s| {
            me.b.ringvs_plugin_defense().call_init(s, &cfg)
        }))?;
        Ok(me)
    }

    /// The state tables per level.
    pub fn levels(&mut self) -> Result<Vec<defense_types::StateTable>, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.setup, |s| {
            b.ringvs_plugin_defense().call_levels(s)
        })
    }

    /// Admission of a new flow.
    #[inline]
    pub fn admit(
        &mut self,
        flow: &types::Flow,
        source: defense_types::SourceStats,
    ) -> Result<defense_types::Verdict, Fault> {
        let b = &self.b;
        guarded(&mut self.store, self.call, |s| {
            b.ringvs_plugin_defense().call_admit(s, *flow, source)
        })
    }

    /// The once-a-second tick, with `table` visible to the plugin for its duration.
    pub fn tick(
        &mut self,
        stats: &defense_types::TickStats,
        table: Option<&dyn TableView>,
    ) -> Result<Vec<defense_types::Action>, Fault> {
        let (b, tick) = (&self.b, self.tick);
        with_table(&mut self.store, table, |store| {
            guarded(store, tick, |s| {
                b.ringvs_plugin_defense().call_tick(s, stats)
            })
        })
    }
}
