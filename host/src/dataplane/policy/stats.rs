//! Per-queue accounting of plugin calls: calls and faults per function, fallbacks, defense
//! actions, and a sample of call latencies (published with the queue's report).

use crate::plugin::{defense_types as dt, Fault, FaultKind};
use std::sync::Arc;
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
    /// Decisions taken by a fallback because the instance was busy elsewhere (a defense's
    /// `admit` while its tick runs off the queue's thread).
    pub busy: u64,
    /// Defense actions applied, per [`ActionKind`].
    pub actions: [u64; ACTIONS],
    /// Defense actions refused.
    pub refused: [u64; ACTIONS],
    /// New flows a defense refused (its `admit`, or its drop rate).
    pub refused_flows: u64,
}

/// Every `SAMPLE_EVERY`-th call is timed for the latency histogram.
const SAMPLE_EVERY: u64 = 16;

/// Most timed calls a queue keeps between two publications (10 a second): a flood of new
/// flows must not grow the queue's memory, and a histogram needs no more. The buffers are
/// reserved up front (see [`PluginStats::new`]).
pub const MAX_SAMPLES: usize = 512;

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
    /// Empty, with the sample buffer reserved and touched now (so that a flood of new
    /// flows does not grow the queue's resident memory later).
    pub fn new() -> PluginStats {
        let mut samples = Vec::new();
        reserve_touched(&mut samples, MAX_SAMPLES);
        PluginStats {
            counters: Vec::new(),
            samples,
            seq: 0,
        }
    }

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
        let timed = self.seq.is_multiple_of(SAMPLE_EVERY) && self.samples.len() < MAX_SAMPLES;
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

    /// Counts a call made elsewhere (lent instance) that took `elapsed`, and its outcome;
    /// timed as one in [`SAMPLE_EVERY`] calls, as any other.
    pub fn record<T>(
        &mut self,
        name: &Arc<str>,
        func: Func,
        elapsed: std::time::Duration,
        r: &Result<T, Fault>,
    ) {
        let timed = self.start().is_some();
        self.finish(name, func, None, r);
        if timed {
            self.samples
                .push((name.clone(), func, elapsed.as_secs_f64()));
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

    /// Counts a decision taken without the plugin because its instance was busy elsewhere.
    pub fn busy(&mut self, name: &Arc<str>) {
        self.counters(name).busy += 1;
    }
}

/// Action kinds, for `ringvs_defense_actions_total{action}` and the refused ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `set-level`.
    SetLevel = 0,
    /// `drop-connections`.
    DropConnections,
    /// `drop-embryonic`.
    DropEmbryonic,
    /// `drop-rate`.
    DropRate,
    /// `block`.
    Block,
    /// `unblock`.
    Unblock,
    /// `syn-proxy`.
    SynProxy,
}

/// Number of [`ActionKind`]s.
pub const ACTIONS: usize = 7;

impl ActionKind {
    /// Every kind.
    pub const ALL: [ActionKind; ACTIONS] = [
        ActionKind::SetLevel,
        ActionKind::DropConnections,
        ActionKind::DropEmbryonic,
        ActionKind::DropRate,
        ActionKind::Block,
        ActionKind::Unblock,
        ActionKind::SynProxy,
    ];

    /// The `action` label.
    pub fn label(self) -> &'static str {
        match self {
            ActionKind::SetLevel => "set_level",
            ActionKind::DropConnections => "drop_connections",
            ActionKind::DropEmbryonic => "drop_embryonic",
            ActionKind::DropRate => "drop_rate",
            ActionKind::Block => "block",
            ActionKind::Unblock => "unblock",
            ActionKind::SynProxy => "syn_proxy",
        }
    }

    /// The kind of an action.
    pub fn of(a: &dt::Action) -> ActionKind {
        match a {
            dt::Action::SetLevel(_) => ActionKind::SetLevel,
            dt::Action::DropConnections(_) => ActionKind::DropConnections,
            dt::Action::DropEmbryonic(_) => ActionKind::DropEmbryonic,
            dt::Action::DropRate(_) => ActionKind::DropRate,
            dt::Action::Block(_) => ActionKind::Block,
            dt::Action::Unblock(_) => ActionKind::Unblock,
            dt::Action::SynProxy(_) => ActionKind::SynProxy,
        }
    }
}

/// Reserves room for `n` samples and writes every byte of it once, so that its pages are
/// resident from now on rather than when a flood fills it.
pub fn reserve_touched(v: &mut Vec<(Arc<str>, Func, f64)>, n: usize) {
    let name: Arc<str> = Arc::from("");
    v.reserve(n);
    v.resize(v.capacity(), (name, Func::Pick, 0.0));
    v.clear();
}
