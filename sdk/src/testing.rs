//! Testing plugins.
//!
//! [`SchedulerHarness`] (and its siblings) run a plugin's logic natively, in ordinary unit
//! tests: no wasm, no director. They play the host's part: they keep the realservers'
//! weights and connection counts and hand the plugin the same views the director would.
//!
//! To test the *built component* in wasmtime through the director's own plugin runtime, use
//! `ringvs::plugin::harness` (a dev-dependency on the director crate, `ringvs`): the SDK
//! itself depends on nothing of the director, so that it can be published on its own.

use crate::{
    Action, Config, Defense, Entry, Flow, Persistence, Scheduler, ServerInfo, Servers, SourceStats,
    StateTable, Table, TickStats, Verdict,
};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use ringvs_abi::LOAD_STRIDE;

/// The messages the plugin logged ([`crate::log`]) on this thread since the last call, in
/// order (native tests only: in a component they go to the director).
#[cfg(not(target_family = "wasm"))]
pub fn take_logs() -> Vec<(crate::log::Level, String)> {
    crate::log::imp::take()
}

/// Parses `"addr:port"` (panics on bad test input, with the input in the message).
pub fn endpoint(s: &str) -> (IpAddr, u16) {
    let a: SocketAddr = s
        .parse()
        .unwrap_or_else(|_| panic!("not an address:port: {s:?}"));
    (a.ip(), a.port())
}

/// A TCP flow from `client` (`"addr:port"`) to `vip` (`"addr:port"`).
pub fn flow(client: &str, vip: &str) -> Flow {
    let (c, cp) = endpoint(client);
    let (v, vp) = endpoint(vip);
    Flow::tcp(c, cp, v, vp)
}

/// A pick fixture: the servers' weights, their `(active, inactive)` counts, the pick expected.
pub type PickCase<'a> = (&'a [u32], &'a [(u32, u32)], Option<usize>);

/// Runs each fixture on a fresh harness from `make(weights)` with the counts set: one pick
/// of a flow 10.77.0.2:40000 → 10.77.100.100:80 must give the expected index (the panic
/// names the case's position).
pub fn check_picks<T: Scheduler>(make: impl Fn(&[u32]) -> SchedulerHarness<T>, cases: &[PickCase]) {
    let f = flow("10.77.0.2:40000", "10.77.100.100:80");
    for (i, (weights, conns, want)) in cases.iter().enumerate() {
        let mut h = make(weights);
        for (j, (active, inactive)) in conns.iter().enumerate() {
            h.set_conns(j, *active, *inactive);
        }
        assert_eq!(h.pick(&f), *want, "case {i}");
    }
}

/// Runs a [`Scheduler`] natively with a host-like view of the realservers.
pub struct SchedulerHarness<T: Scheduler> {
    inst: T,
    servers: Vec<ServerInfo>,
    load: Vec<u32>,
}

impl<T: Scheduler> SchedulerHarness<T> {
    /// Builds the scheduler with `config` (as `init` would).
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut inst = T::default();
        inst.configure(&Config::from_pairs(config))?;
        Ok(SchedulerHarness {
            inst,
            servers: Vec::new(),
            load: Vec::new(),
        })
    }

    /// Sets the realservers (`("addr:port", weight)`), all idle; calls `servers_changed`.
    pub fn servers(mut self, list: &[(&str, u32)]) -> Self {
        self.servers = list
            .iter()
            .map(|(a, w)| {
                let (addr, port) = endpoint(a);
                ServerInfo {
                    addr,
                    port,
                    weight: *w,
                }
            })
            .collect();
        self.load = list.iter().flat_map(|(_, w)| [*w, 0, 0]).collect();
        self.inst.servers_changed(&self.servers);
        self
    }

    /// Sets realservers `10.77.1.1:80`, `10.77.1.2:80`, … with these weights, all idle.
    pub fn weights(self, weights: &[u32]) -> Self {
        let names: Vec<String> = (1..=weights.len())
            .map(|i| format!("10.77.1.{i}:80"))
            .collect();
        let list: Vec<(&str, u32)> = names
            .iter()
            .map(String::as_str)
            .zip(weights.iter().copied())
            .collect();
        self.servers(&list)
    }

    /// Sets server `i`'s connection counts.
    pub fn set_conns(&mut self, i: usize, active: u32, inactive: u32) {
        self.load[i * LOAD_STRIDE + 1] = active;
        self.load[i * LOAD_STRIDE + 2] = inactive;
    }

    /// Sets server `i`'s current weight (0 quiesces it).
    pub fn set_weight(&mut self, i: usize, weight: u32) {
        self.load[i * LOAD_STRIDE] = weight;
    }

    /// Server `i`'s (active, inactive) counts.
    pub fn conns(&self, i: usize) -> (u32, u32) {
        (
            self.load[i * LOAD_STRIDE + 1],
            self.load[i * LOAD_STRIDE + 2],
        )
    }

    /// Asks the scheduler, checking its answer as the director does (an index out of range,
    /// or of a weight-0 server, panics the test).
    pub fn pick(&mut self, flow: &Flow) -> Option<usize> {
        let servers = Servers::new(&self.load, &self.servers);
        let r = self.inst.pick(flow, &servers);
        if let Some(i) = r {
            assert!(
                i < self.servers.len(),
                "picked server {i} of {}",
                self.servers.len()
            );
            assert!(
                self.load[i * LOAD_STRIDE] > 0,
                "picked server {i}, whose weight is 0"
            );
        }
        r
    }

    /// Picks and, like the director, counts the new flow on the chosen server
    /// (`established`: as an active connection, else an inactive one).
    pub fn pick_and_count(&mut self, flow: &Flow, established: bool) -> Option<usize> {
        let r = self.pick(flow);
        if let Some(i) = r {
            self.load[i * LOAD_STRIDE + if established { 1 } else { 2 }] += 1;
        }
        r
    }

    /// The scheduler itself.
    pub fn instance(&mut self) -> &mut T {
        &mut self.inst
    }

    /// Moves the scheduler's exported state into a fresh instance of `U` (a hot swap).
    pub fn swap_to<U: Scheduler>(
        mut self,
        config: &[(&str, &str)],
    ) -> Result<SchedulerHarness<U>, String> {
        let mut next = SchedulerHarness::<U>::new(config)?;
        next.servers = core::mem::take(&mut self.servers);
        next.load = core::mem::take(&mut self.load);
        next.inst.servers_changed(&next.servers);
        next.inst.import_state(&self.inst.export_state())?;
        Ok(next)
    }
}

/// Runs a [`Persistence`] natively.
pub struct PersistenceHarness<T: Persistence> {
    inst: T,
}

impl<T: Persistence> PersistenceHarness<T> {
    /// Builds it with `config`.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut inst = T::default();
        inst.configure(&Config::from_pairs(config))?;
        Ok(PersistenceHarness { inst })
    }

    /// The affinity key of `flow`.
    pub fn affinity(&mut self, flow: &Flow) -> Option<u64> {
        self.inst.affinity(flow)
    }
}

/// Runs a [`Defense`] natively.
pub struct DefenseHarness<T: Defense> {
    inst: T,
}

impl<T: Defense> DefenseHarness<T> {
    /// Builds it with `config`.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut inst = T::default();
        inst.configure(&Config::from_pairs(config))?;
        Ok(DefenseHarness { inst })
    }

    /// Admission of a flow whose source has `source` counts.
    pub fn admit(&mut self, flow: &Flow, source: SourceStats) -> Verdict {
        self.inst.admit(flow, &source)
    }

    /// The state tables it hands the host.
    pub fn levels(&self) -> Vec<StateTable> {
        self.inst.levels()
    }

    /// A tick with `stats`, the plugin seeing `table`.
    pub fn tick(&mut self, stats: &TickStats, table: &dyn Table) -> Vec<Action> {
        self.inst.tick(stats, table)
    }

    /// The defense itself.
    pub fn instance(&mut self) -> &mut T {
        &mut self.inst
    }
}

/// A connection table for [`DefenseHarness::tick`]: slots, some of them live entries.
#[derive(Debug, Clone, Default)]
pub struct MockTable {
    /// Slot count.
    pub slots: u32,
    /// Live entries (their `id` is their slot).
    pub entries: Vec<Entry>,
    /// Slots scanned so far (to check how much of the table a tick looked at).
    pub scanned: core::cell::Cell<u64>,
}

impl MockTable {
    /// A table of `slots` slots holding `entries`.
    pub fn new(slots: u32, entries: Vec<Entry>) -> MockTable {
        MockTable {
            slots,
            entries,
            scanned: core::cell::Cell::new(0),
        }
    }
}

impl Table for MockTable {
    fn slots(&self) -> u32 {
        self.slots
    }

    fn scan(&self, start: u32, count: u32) -> Vec<Entry> {
        let n = self.slots.max(1);
        self.scanned.set(self.scanned.get() + count as u64);
        let end = start as u64 + count.min(n) as u64;
        // Entries sorted by slot make each scan a range (or two, when it wraps).
        let mut live: Vec<&Entry> = self.entries.iter().collect();
        live.sort_by_key(|e| e.id);
        let in_range = |id: u32| {
            let id = id as u64;
            (id >= start as u64 && id < end) || (end > n as u64 && id < end - n as u64)
        };
        live.into_iter()
            .filter(|e| in_range(e.id))
            .copied()
            .collect()
    }
}
