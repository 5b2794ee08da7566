//! One queue's data plane: its connection table, its scheduler instances and its counters.
//! Nothing here is shared with other queues on the packet path except the per-realserver
//! connection counts, which change per connection, not per packet.

use super::blocks::{BlockList, BlockMode};
use super::defense::{self, DefenseSlot};
use super::defrag::{self, Defrag, Handoff, Outcome};
use super::nat::{self, Csum, Side};
use super::persist::{self, PersistSlot};
use super::policy::{
    reserve_touched, Ctx, Instance, PluginEvent, PluginStats, Policy, PolicySlot, Role, SlotId,
    MAX_SAMPLES,
};
use super::sched::SchedSlot;
use super::service::{DestState, Service, Snapshot, DEST_F_EXPIRE, DEST_F_GONE, DEST_F_REMOVED};
use super::sources::{SourceCount, SourceSketch, TopTalkers};
use super::stats::{Counters, DropReason, ShardReport, Traffic};
use super::synproxy::{self, cookie::CookieKeys, SynProxy};
use super::templates::{Bind, TemplateId, TemplateStore};
use super::{Packet, Pipeline, Verdict};
use crate::conn::state::STATES;
use crate::conn::{
    ConnId, ConnTable, Direction, Event, HashKey, NewConn, State, StateTable, Tick, F_INACTIVE,
    F_PERSISTENT, TICKS_PER_SEC,
};
use crate::plugin::builtin::Builtin;
use crate::wire::ip_proto;
use crate::wire::tcp::flags as tf;
use crate::wire::{Ipv4Packet, TcpPacket, UdpPacket};
use crossbeam_channel::{Receiver, Sender};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each queue's share of `director.conn_memory_limit` for `queues` queues. The limit bounds
/// all the memory the director grows under load: of it, [`working_reserve`] is kept for
/// the director's own working memory (counters, plugin calls, the control plane's work,
/// which grow with the traffic, not with the table), and each queue gets an even share of
/// the rest for its table and its SYN proxy's stash.
pub fn queue_share(limit: usize, queues: usize) -> usize {
    limit.saturating_sub(working_reserve(limit)) / queues.max(1)
}

/// What [`queue_share`] keeps out of `limit`: 2 MiB, or 1/8 of a smaller limit. Measured in
/// the lab at the table's limit (`examples/lab/test-flood.sh`, the IPVS rows: the table full,
/// defenses ticking, metrics scraped every second): the rest of the process grew by 0.6 to
/// 1.5 MiB with two queues.
pub fn working_reserve(limit: usize) -> usize {
    (limit / 8).min(2 << 20)
}

/// Most expirations handled in one `poll` (the rest follow on the next).
const EXPIRE_BUDGET: usize = 65_536;

/// Settings of one queue.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Queue index.
    pub id: usize,
    /// This queue's share of `conn_memory_limit`.
    pub memory_limit: usize,
    /// Connection hash key.
    pub hash_key: HashKey,
    /// Common time origin of all queues.
    pub start: Instant,
    /// IPVS `expire_nodest_conn`.
    pub expire_nodest_conn: bool,
    /// Where plugin events go (the control plane); `None` in tests and replay.
    pub events: Option<Sender<PluginEvent>>,
    /// Director-wide per-source counts, shared by the queues.
    pub sources: Arc<SourceSketch>,
    /// Number of queues (defenses are told; each sees its share).
    pub queues: usize,
    /// Director-wide persistence templates, shared by the queues.
    pub templates: Arc<TemplateStore>,
    /// The SYN proxy's cookie secrets, shared by the queues.
    pub cookies: Arc<CookieKeys>,
    /// Defense ticks run on a thread of the queue's own, so that the packets of the queue
    /// never wait for a plugin's tick (the daemon); otherwise on the queue's thread, at the
    /// second's boundary (tests, replay: deterministic).
    pub tick_thread: bool,
    /// With several queues: where queue 0 hands the datagrams it reassembled to the queue
    /// that owns their flow ([`defrag`](super::defrag)).
    pub handoff: Option<Arc<Handoff>>,
    /// Connection sync with other directors (`crate::sync`); `None`: off.
    pub sync: Option<crate::sync::QueueSync>,
}

impl ShardConfig {
    /// For tests and benchmarks: queue 0 of 1 with `memory_limit` bytes, a fixed hash key,
    /// started now, no events, and its own source sketch, template store and cookie keys.
    pub fn test(memory_limit: usize) -> ShardConfig {
        ShardConfig {
            id: 0,
            memory_limit,
            hash_key: HashKey([7, 9]),
            start: Instant::now(),
            expire_nodest_conn: false,
            events: None,
            sources: Default::default(),
            queues: 1,
            templates: Default::default(),
            cookies: Default::default(),
            tick_thread: false,
            handoff: None,
            sync: None,
        }
    }
}

/// A connection as listed by `ringvs list --connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// IP protocol.
    pub proto: u8,
    /// Client.
    pub client: std::net::SocketAddr,
    /// Service slot.
    pub svc: u16,
    /// Realserver slot.
    pub dest: u32,
    /// State.
    pub state: State,
    /// Seconds until it expires.
    pub expires_in: Duration,
}

/// A queue's tables together (see [`Shard::tables`]).
struct Tables {
    by_state: [u32; crate::conn::state::STATES],
    entries: u64,
    memory_bytes: u64,
    memory_limit: u64,
    capacity: u64,
    link_bytes: u64,
}

/// Messages from the control plane, applied between batches.
#[derive(Debug)]
pub enum Control {
    /// Use this snapshot from the next packet on.
    Snapshot(Arc<Snapshot>),
    /// Send back up to `max` connections.
    ListConns {
        /// Limit.
        max: usize,
        /// Where to answer.
        reply: Sender<Vec<ConnInfo>>,
    },
    /// The director-wide block list.
    Blocks(Arc<BlockList>),
    /// The director-wide top sources of the last second, and the memory the system has
    /// available (for defenses' ticks).
    Top {
        /// Heaviest first.
        sources: Arc<Vec<SourceCount>>,
        /// Bytes.
        system_available: u64,
    },
    /// A fresh instance of one of a service's policies (after a fault).
    Fresh {
        /// Service slot.
        svc: u16,
        /// Which policy.
        role: Role,
        /// The instance.
        instance: Instance,
    },
    /// Entries a peer director sent (`crate::sync`).
    Synced(Vec<crate::sync::Entry>),
    /// This director became master: held synced entries go live.
    Promote,
    /// For a bulk transfer: the entries of up to `shard::sync::DUMP_SLOTS` table slots
    /// from `from`, and where to go on.
    SyncDump {
        /// First slot.
        from: u32,
        /// Where to answer.
        reply: Sender<(Vec<crate::sync::Entry>, Option<u32>)>,
    },
    /// Stop the queue.
    Stop,
}

/// What a queue shares with the control plane.
#[derive(Debug, Default)]
pub struct ShardShared {
    /// The latest report, refreshed every tick.
    pub report: Mutex<ShardReport>,
    /// Set once the queue has polled: its I/O is running.
    pub ready: AtomicBool,
}

/// Per-service state a queue keeps.
#[derive(Debug)]
struct SvcRt {
    sched: SchedSlot,
    table: StateTable,
    timeouts: [Tick; STATES],
    /// The service's own timeouts in seconds (defense levels may override some).
    own: [u32; STATES],
    defenses: Vec<DefenseSlot>,
    /// The persistence plugin, if the service is persistent.
    persist: Option<PersistSlot>,
    /// Template timeout, ticks.
    persist_timeout: Tick,
    /// Its SYN proxy here.
    proxy: ProxyRt,
    /// Its guard against floods of new UDP flows here.
    udp_guard: FloodGuard,
    /// This queue's share of the service's `max_conns` (0: none).
    max_conns: u32,
    /// `sloppy`: a TCP segment of an unknown connection opens an entry.
    sloppy: bool,
    /// How long an unreplied UDP entry lives, ticks.
    udp_unreplied: Tick,
    /// An IPv6 TCP service whose `syn_proxy` is not off: the proxy does not answer IPv6
    /// yet, so while the queue falls behind its SYNs from unknown sources are shed
    /// ([`shed`]) instead of forwarded.
    shed6: bool,
}

/// One queue's pipeline.
pub struct Shard {
    cfg: ShardConfig,
    now: Tick,
    /// Ticks since the shard started, never wrapping: for what must count past the wrap of
    /// [`Shard::now`] (the cookie secret's generations).
    elapsed: u64,
    table: ConnTable<Ipv4Addr>,
    snap: Arc<Snapshot>,
    svcs: Vec<Option<SvcRt>>,
    dests: Vec<Option<Arc<DestState>>>,
    counters: Counters,
    svc_traffic: Vec<Traffic>,
    dest_traffic: Vec<Traffic>,
    shared: Arc<ShardShared>,
    plugin_stats: PluginStats,
    blocks: Arc<BlockList>,
    /// Blocks this queue's defenses asked for that the director's list (`blocks`, shared by
    /// the queues: changing it would copy it) does not carry yet; looked up first.
    own_blocks: BlockList,
    top: TopTalkers,
    director_top: Arc<Vec<SourceCount>>,
    system_available: u64,
    /// Second of the last defense tick, and the counters then (for per-second rates).
    tick_sec: u64,
    tick_base: (u64, u64),
    rng: u64,
    /// The outer IP identification of the next tunnelled packet.
    tunnel_ident: u16,
    rx: Option<Receiver<Control>>,
    published: Tick,
    stopped: bool,
    /// The template controlling each connection slot (id + 1; 0: none), for the connections
    /// flagged `F_PERSISTENT`. Allocated (zeroed, so untouched until used) the first time a
    /// persistent service appears: 4 bytes per slot of the table.
    links: Vec<u32>,
    /// Second of the last template sweep.
    swept_sec: u64,
    /// Live entries per service slot (for `max_conns`).
    svc_conns: Vec<u32>,
    /// The SYN proxy: cookies, the stash, resets to send.
    proxy: SynProxy,
    /// The tick thread's end, with [`ShardConfig::tick_thread`].
    ticker: Option<ticker::Ticker>,
    /// Actions of ticks that came back, not yet applied.
    applying: std::collections::VecDeque<tick::Applying>,
    /// Fragments of services' traffic being reassembled.
    defrag: Defrag,
    /// The services as steering keys them (for [`ShardConfig::handoff`]).
    steered: Vec<(u8, Ipv4Addr, u16)>,
    /// Entries received by sync and not yet live (`sync::AUX_HELD`).
    held: u64,
    /// What the queue sheds when its backend falls behind.
    shed: shed::Shed,
    /// The hashes `prefetch` computed for the batch `process` is going through.
    hints: Hints,
    /// IPv6 flows, once an IPv6 service exists.
    six: Option<Box<six::Six>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.cfg.id)
            .field("table", &self.table)
            .finish()
    }
}

/// Sensible TCP flag combinations only: the rule, over FIN, SYN, RST and ACK.
const fn flags_rule(f: u8) -> bool {
    let (syn, fin, rst, ack) = (
        f & tf::SYN != 0,
        f & tf::FIN != 0,
        f & tf::RST != 0,
        f & tf::ACK != 0,
    );
    !(syn && (fin || rst)) && !(fin && rst) && (syn || fin || rst || ack) && (!fin || ack)
}

/// Which of the 16 combinations of FIN, SYN, RST (bits 0–2) and ACK (bit 3) are sane: the
/// rule, worked out at compile time, so that a packet pays a shift and a test.
const SANE_FLAGS: u16 = {
    let mut mask = 0u16;
    let mut i = 0;
    while i < 16 {
        let f = (i as u8 & (tf::FIN | tf::SYN | tf::RST)) | if i & 8 != 0 { tf::ACK } else { 0 };
        if flags_rule(f) {
            mask |= 1 << i;
        }
        i += 1;
    }
    mask
};

/// Sensible TCP flag combinations only (see [`flags_rule`]).
#[inline]
fn tcp_flags_sane(f: u8) -> bool {
    let i = (f & (tf::FIN | tf::SYN | tf::RST)) | (f & tf::ACK) >> 1;
    SANE_FLAGS >> i & 1 != 0
}

impl Shard {
    /// A queue with an empty table. Fails if its memory share cannot hold a table.
    pub fn new(
        cfg: ShardConfig,
        snap: Arc<Snapshot>,
        rx: Option<Receiver<Control>>,
    ) -> Result<Shard, crate::conn::BudgetTooSmall> {
        let now = Self::tick_at(&cfg, Instant::now());
        // The SYN proxy's stash comes out of the queue's budget.
        let stash = synproxy::stash_memory(cfg.memory_limit);
        // So does reassembly's.
        let reassembly = defrag::memory(cfg.memory_limit);
        let table = ConnTable::new(
            cfg.memory_limit.saturating_sub(stash + reassembly),
            cfg.hash_key,
            now,
        )?;
        let proxy = SynProxy::new(cfg.cookies.clone(), stash);
        let ticker = cfg.tick_thread.then(|| ticker::Ticker::new(cfg.id));
        let shed = shed::Shed::new(HashKey([
            cfg.hash_key.0[0].rotate_left(17) ^ 0x5348_4544,
            cfg.hash_key.0[1].rotate_left(29),
        ]));
        let mut s = Shard {
            cfg,
            now,
            elapsed: u64::from(now),
            table,
            snap: Arc::new(Snapshot::default()),
            svcs: Vec::new(),
            dests: Vec::new(),
            counters: Counters::default(),
            svc_traffic: Vec::new(),
            dest_traffic: Vec::new(),
            shared: Arc::new(ShardShared::default()),
            plugin_stats: PluginStats::new(),
            blocks: Arc::new(BlockList::default()),
            own_blocks: BlockList::default(),
            top: TopTalkers::default(),
            director_top: Arc::new(Vec::new()),
            system_available: 0,
            tick_sec: 0,
            tick_base: (0, 0),
            rng: 0x9e37_79b9_7f4a_7c15,
            tunnel_ident: 0,
            rx,
            published: 0,
            stopped: false,
            links: Vec::new(),
            swept_sec: 0,
            svc_conns: Vec::new(),
            proxy,
            ticker,
            applying: Default::default(),
            defrag: Defrag::new(reassembly),
            steered: Vec::new(),
            held: 0,
            shed,
            hints: Hints::default(),
            six: None,
        };
        if let Ok(mut r) = s.shared.report.lock() {
            reserve_touched(&mut r.plugin_samples, 10 * MAX_SAMPLES);
        }
        s.apply_snapshot(snap);
        s.publish();
        Ok(s)
    }

    /// What this queue publishes.
    pub fn shared(&self) -> Arc<ShardShared> {
        self.shared.clone()
    }

    /// The connection table (tests, benchmarks, replay).
    pub fn table(&self) -> &ConnTable<Ipv4Addr> {
        &self.table
    }

    /// The IPv6 connection table, once an IPv6 service has appeared (tests).
    pub fn table6(&self) -> Option<&ConnTable<std::net::Ipv6Addr>> {
        self.six.as_ref().map(|s| &s.table)
    }

    /// The queue's SYN proxy (tests, replay).
    pub fn syn_proxy(&self) -> &SynProxy {
        &self.proxy
    }

    /// Defense ticks out on the queue's tick thread or not yet fully applied (handed over
    /// by a `poll`, applied by later ones).
    pub fn ticks_in_flight(&self) -> usize {
        self.ticker.as_ref().map_or(0, |t| t.in_flight) + self.applying.len()
    }

    /// The queue's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Packets that took the hash `prefetch` computed for them, so far.
    #[cfg(test)]
    pub(crate) fn hints_taken(&self) -> u64 {
        self.hints.taken.get()
    }

    /// Current tick.
    pub fn now(&self) -> Tick {
        self.now
    }

    /// Moves the clock (tests and replay drive time explicitly) and does what is due.
    pub fn set_now(&mut self, now: Tick) {
        self.move_clock(now);
        self.on_tick();
    }

    /// Every tick: expiry, the SYN proxy's reading of the pressure, the cookie secret's
    /// rotation.
    fn on_tick(&mut self) {
        self.expire();
        self.expire6();
        self.defrag.expire(self.now);
        self.count_lost_fragments();
        let by_state = self.table.by_state();
        let p = Pressure {
            entries: self.table.len() as u64,
            capacity: self.table.capacity() as u64,
            embryonic: u64::from(by_state[State::SynRecv as usize])
                + u64::from(by_state[State::SynAck as usize]),
        };
        for rt in self.svcs.iter_mut().flatten() {
            rt.proxy.tick(p);
            rt.udp_guard.tick();
        }
        self.shed.tick(self.elapsed);
        let period = u64::from(synproxy::cookie::ROTATE_SECS * TICKS_PER_SEC);
        self.proxy.keys().rotate_to((self.elapsed / period) as u32);
        let table = &self.table;
        self.proxy.retry_due(self.now, |conn, client| {
            table.entry_at(conn).is_some_and(|(_, c)| {
                c.flags & crate::conn::F_PROXY_OPENING != 0
                    && c.caddr() == *client.ip()
                    && c.cport() == client.port()
            })
        });
    }

    /// Sets the wrapping clock to `now` and moves the wide one by as much (never back).
    fn move_clock(&mut self, now: Tick) {
        if crate::conn::reached(now, self.now) {
            self.elapsed += u64::from(now.wrapping_sub(self.now));
        }
        self.now = now;
    }

    /// The wrapping clock at `t`: ticks since start modulo 2^32 (see [`crate::conn::Tick`]).
    fn tick_at(cfg: &ShardConfig, t: Instant) -> Tick {
        let d = t.saturating_duration_since(cfg.start);
        (d.as_millis() / (1000 / TICKS_PER_SEC as u128)) as Tick
    }

    /// Switches to a new snapshot. Services whose definition did not change keep their
    /// scheduler state; a service whose plugin changed switches to the instance prepared for
    /// this queue (the old one hands over its state and stays as the fallback); connections
    /// are untouched.
    pub fn apply_snapshot(&mut self, snap: Arc<Snapshot>) {
        if self.cfg.handoff.is_some() {
            self.steered = snap.steered();
        }
        self.sync_six(&snap);
        let mut svcs: Vec<Option<SvcRt>> = Vec::with_capacity(snap.service_slots());
        svcs.resize_with(snap.service_slots(), || None);
        let shard = self.cfg.id;
        let mut ctx = Ctx {
            stats: &mut self.plugin_stats,
            events: self.cfg.events.as_ref(),
        };
        for svc in snap.services() {
            let at = |role| SlotId {
                shard,
                svc: svc.id,
                role,
            };
            let mut rt = self
                .svcs
                .get_mut(svc.id as usize)
                .and_then(Option::take)
                .unwrap_or_else(|| SvcRt {
                    sched: SchedSlot::builtin(Builtin::wlc()),
                    table: StateTable::NORMAL,
                    timeouts: svc.timeout_ticks(),
                    own: svc.timeouts.0,
                    defenses: Vec::new(),
                    persist: None,
                    persist_timeout: 0,
                    proxy: ProxyRt::default(),
                    udp_guard: FloodGuard::default(),
                    max_conns: 0,
                    sloppy: false,
                    udp_unreplied: 0,
                    shed6: false,
                });
            // The proxy needs both directions: a TCP service whose realservers all answer
            // through the director (NAT); it answers IPv4 only.
            let two_way = svc.dests.iter().all(|d| d.forward.two_way());
            rt.proxy.mode = ProxyMode::of(
                svc.syn_proxy,
                svc.proto == crate::config::Proto::Tcp && two_way && svc.vip.is_ipv4(),
            );
            rt.shed6 = svc.proto == crate::config::Proto::Tcp
                && svc.syn_proxy != crate::config::SynProxyMode::Off
                && !svc.vip.is_ipv4();
            let queues = self.cfg.queues.max(1) as u32;
            rt.max_conns = svc.max_conns.div_ceil(queues);
            rt.sloppy = svc.sloppy;
            rt.udp_unreplied = svc
                .udp_unreplied
                .min(svc.timeouts.0[State::Udp as usize])
                .saturating_mul(TICKS_PER_SEC);
            defense::sync(&mut rt.defenses, &svc.defenses, (shard, svc.id), &mut ctx);
            PolicySlot::sync(
                &mut rt.persist,
                svc.persistence.as_ref(),
                at(Role::Persistence),
                &mut ctx,
            );
            rt.persist_timeout = svc.persist_timeout.saturating_mul(TICKS_PER_SEC);
            if rt.persist.is_some() && self.links.is_empty() {
                self.links = vec![0; self.table.capacity()];
            }
            rt.own = svc.timeouts.0;
            rt.sched.sync(
                &svc.scheduler,
                svc.plugin.as_ref(),
                &svc.dests,
                svc.version,
                at(Role::Scheduler),
                &mut ctx,
            );
            (rt.table, rt.timeouts) = defense::effective_table(&rt.defenses, &rt.own);
            svcs[svc.id as usize] = Some(rt);
            for d in &svc.dests {
                let i = d.id as usize;
                if self.dests.len() <= i {
                    self.dests.resize(i + 1, None);
                }
                self.dests[i] = Some(d.state.clone());
            }
        }
        // Services gone from the snapshot: their plugin instances leave the data path.
        for mut rt in self.svcs.iter_mut().filter_map(Option::take) {
            rt.sched.give_back(&mut ctx);
            defense::sync(&mut rt.defenses, &[], (shard, 0), &mut ctx);
            if let Some(mut p) = rt.persist.take() {
                p.give_back(&mut ctx);
            }
        }
        if self.svc_traffic.len() < snap.service_slots() {
            self.svc_traffic
                .resize(snap.service_slots(), Traffic::default());
        }
        if self.svc_conns.len() < snap.service_slots() {
            self.svc_conns.resize(snap.service_slots(), 0);
        }
        if self.dest_traffic.len() < snap.dest_slots() {
            self.dest_traffic
                .resize(snap.dest_slots(), Traffic::default());
        }
        self.svcs = svcs;
        self.snap = snap;
    }

    #[inline]
    fn drop(&mut self, r: DropReason) -> Verdict {
        self.counters.drops[r as usize] += 1;
        Verdict::Drop
    }

    #[inline]
    fn pass(&mut self) -> Verdict {
        self.counters.passthrough += 1;
        Verdict::Forward
    }

    /// Both tables' figures: the IPv6 table counts with the IPv4 one (its budget is on top
    /// of the limit).
    fn tables(&self) -> Tables {
        let mut t = Tables {
            by_state: *self.table.by_state(),
            entries: self.table.len() as u64,
            memory_bytes: self.table.memory_bytes() as u64,
            memory_limit: self.cfg.memory_limit as u64,
            capacity: self.table.capacity() as u64,
            link_bytes: (self.links.len() * 4) as u64,
        };
        if let Some(six) = self.six.as_ref() {
            for (a, b) in t.by_state.iter_mut().zip(six.table.by_state()) {
                *a += b;
            }
            t.entries += six.table.len() as u64;
            t.memory_bytes += six.table.memory_bytes() as u64;
            t.memory_limit += six::table_memory(self.cfg.memory_limit) as u64;
            t.capacity += six.table.capacity() as u64;
            t.link_bytes += (six.links.len() * 4) as u64;
        }
        t
    }

    /// Publishes counters for the control plane (never blocks the queue).
    pub fn publish(&mut self) {
        if let Ok(mut r) = self.shared.report.try_lock() {
            r.generation = self.snap.generation;
            r.counters.clone_from(&self.counters);
            r.counters.syn_proxy = self.proxy.events;
            r.proxying.clear();
            r.proxying.extend(
                self.svcs
                    .iter()
                    .map(|rt| rt.as_ref().is_some_and(|rt| rt.proxy.active())),
            );
            r.services.clone_from(&self.svc_traffic);
            r.dests.clone_from(&self.dest_traffic);
            let t = self.tables();
            r.by_state = t.by_state;
            r.entries = t.entries;
            r.memory_bytes = t.memory_bytes;
            r.memory_limit = t.memory_limit;
            r.capacity = t.capacity;
            r.link_bytes = t.link_bytes;
            r.held = self.held;
            r.plugins.clone_from(&self.plugin_stats.counters);
            // Bounded: ten publications' worth waits for the control plane at most; more
            // (a control plane too busy to collect) is dropped rather than kept.
            let room = (10 * MAX_SAMPLES).saturating_sub(r.plugin_samples.len());
            self.plugin_stats.samples.truncate(room);
            r.plugin_samples.append(&mut self.plugin_stats.samples);
            self.published = self.now;
        }
    }

    /// A fresh instance for a service's policy (after a fault); given back if the slot
    /// changed meanwhile.
    fn deliver(&mut self, svc: u16, role: Role, instance: Instance) {
        let mut ctx = Ctx {
            stats: &mut self.plugin_stats,
            events: self.cfg.events.as_ref(),
        };
        let Some(rt) = self.svcs.get_mut(svc as usize).and_then(Option::as_mut) else {
            ctx.retire_any(instance);
            return;
        };
        let instance = match (role, instance) {
            (Role::Scheduler, Instance::Scheduler(i)) => match rt.sched.plugin.as_mut() {
                Some(slot) => {
                    slot.deliver(i, &mut ctx);
                    return;
                }
                None => i.into_instance(),
            },
            (Role::Persistence, Instance::Persistence(i)) => match rt.persist.as_mut() {
                Some(slot) => {
                    slot.deliver(i, &mut ctx);
                    return;
                }
                None => i.into_instance(),
            },
            (Role::Defense(index), Instance::Defense(i)) => match rt.defenses.get_mut(index) {
                Some(slot) => {
                    slot.deliver(i, &mut ctx);
                    return;
                }
                None => i.into_instance(),
            },
            (_, other) => other,
        };
        ctx.retire_any(instance);
    }

    /// Up to `max` connections, IPv4 first (`ringvs list --connections`).
    pub fn list(&self, max: usize) -> Vec<ConnInfo> {
        fn info<A: crate::conn::FlowAddr>(c: &crate::conn::Conn<A>, now: Tick) -> ConnInfo {
            let tick = Duration::from_millis(1000 / TICKS_PER_SEC as u64);
            ConnInfo {
                proto: c.proto(),
                client: std::net::SocketAddr::new(c.caddr().ip(), c.cport()),
                svc: c.svc,
                dest: c.dest,
                state: c.state,
                expires_in: tick * crate::conn::ticks_left(c.expires(), now),
            }
        }
        let v4 = self.table.iter().map(|(_, c)| info(c, self.now));
        let v6 = self
            .six
            .iter()
            .flat_map(|s| s.table.iter().map(|(_, c)| info(c, self.now)));
        v4.chain(v6).take(max).collect()
    }

    fn control(&mut self) {
        let Some(rx) = self.rx.clone() else { return };
        while let Ok(m) = rx.try_recv() {
            match m {
                Control::Snapshot(s) => {
                    self.apply_snapshot(s);
                    self.publish();
                }
                Control::ListConns { max, reply } => {
                    let _ = reply.send(self.list(max));
                }
                Control::Fresh {
                    svc,
                    role,
                    instance,
                } => self.deliver(svc, role, instance),
                Control::Blocks(b) => {
                    self.own_blocks.forget_those_in(&b);
                    self.blocks = b;
                }
                Control::Top {
                    sources,
                    system_available,
                } => {
                    self.director_top = sources;
                    self.system_available = system_available;
                }
                Control::Synced(entries) => {
                    self.apply_synced(&entries);
                }
                Control::Promote => self.promote_held(),
                Control::SyncDump { from, reply } => {
                    let _ = reply.send(self.dump(from));
                }
                Control::Stop => self.stopped = true,
            }
        }
    }
}

mod flow;
mod hints;
mod icmp;
mod proxy;
pub(crate) mod shed;
mod six;
pub mod sync;
mod tick;
mod ticker;

use flow::L4;
use hints::{FlowKey, Hints};
use proxy::{FloodGuard, Mode as ProxyMode, Pressure, ProxyRt};

pub use super::stats::DefenseStatus;

impl Shard {
    /// A fragment, or a packet with IP options. Only what the director would rewrite needs
    /// a whole datagram with a plain header: traffic to a virtual address, and a service's
    /// replies (a first fragment shows their ports); those are dropped with `reason`.
    /// Everything else — a realserver's own traffic, anything routed through — passes as
    /// it is. The later fragments of a dropped reply pass too: without their first one the
    /// client cannot reassemble them.
    #[cold]
    /// A fragment to a virtual address or from a NAT realserver: held until its datagram is
    /// whole, which then goes through the pipeline, here or at the queue that owns its flow.
    fn reassemble(&mut self, pkt: &mut Packet<'_>) -> Verdict {
        let outcome = self.defrag.add(pkt.data(), self.now);
        self.count_lost_fragments();
        let len = match outcome {
            Outcome::Held => return Verdict::Consumed,
            Outcome::Refused => return self.drop(DropReason::Fragment),
            Outcome::Complete(len) => len,
        };
        self.counters.reassembled += 1;
        if let Some(h) = self.cfg.handoff.clone() {
            let mut whole = vec![0u8; len];
            self.defrag.take(&mut whole);
            let owner = h.owner(&whole, &self.steered);
            if owner != self.cfg.id {
                return if h.send(owner, whole) {
                    Verdict::Consumed
                } else {
                    self.drop(DropReason::Fragment)
                };
            }
            let Some(out) = pkt.resize(len) else {
                return self.drop(DropReason::Fragment);
            };
            out.copy_from_slice(&whole);
        } else {
            let Some(out) = pkt.resize(len) else {
                self.defrag.discard_ready();
                return self.drop(DropReason::Fragment);
            };
            self.defrag.take(out);
        }
        self.process(pkt)
    }

    /// Fragments held for reassembly and lost since (their datagram discarded).
    fn count_lost_fragments(&mut self) {
        self.counters.drops[DropReason::Fragment as usize] += self.defrag.take_lost();
    }

    /// Datagrams another queue reassembled for a flow of this one: through the pipeline, and
    /// what it forwards to `f`.
    fn handed_over(&mut self, f: &mut dyn FnMut(&[u8])) {
        let Some(h) = self.cfg.handoff.clone() else {
            return;
        };
        while let Some(d) = h.recv(self.cfg.id) {
            // Room after it too, as the backends' buffers have (the SYN proxy's answers grow).
            let mut buf = vec![0u8; super::HEADROOM + d.len() + 256];
            buf[super::HEADROOM..super::HEADROOM + d.len()].copy_from_slice(&d);
            if let Some(mut p) = Packet::new(&mut buf, super::HEADROOM, d.len()) {
                if self.process(&mut p) == Verdict::Forward {
                    f(p.data());
                }
            }
        }
    }

    fn fragment_or_options(&mut self, ip: &Ipv4Packet<&[u8]>, reason: DropReason) -> Verdict {
        let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
        let reply = ip.frag_offset() == 0
            && matches!(proto, ip_proto::TCP | ip_proto::UDP)
            && ip.payload().get(..2).is_some_and(|p| {
                self.snap
                    .is_realserver(proto, src, u16::from_be_bytes([p[0], p[1]]))
            });
        if self.snap.is_vip(dst) || reply {
            self.drop(reason)
        } else {
            self.pass()
        }
    }
}

impl Pipeline for Shard {
    fn prefetch(&mut self, batch: &[&[u8]]) {
        // Whatever the table's size: with the hashes handed to `process`, prefetching pays
        // from a thousand flows up (docs/PERFORMANCE.md, 2026-12-06 night).
        self.hints.start();
        let six = self.six.as_deref();
        let snap = &self.snap;
        // First pass: every key of the batch; then each family's hashes side by side and
        // their buckets prefetched; the last pass reads the buckets for the entries.
        for (i, d) in batch.iter().take(hints::BATCH).enumerate() {
            let key = FlowKey::read(
                d,
                |proto, dst, dport| snap.service_at(proto, dst, dport).is_some(),
                |proto, dst, dport| snap.service_at6(proto, dst, dport).is_some(),
            );
            match key {
                Some(k) => self.hints.set(i, k),
                None => self.hints.clear(i),
            }
        }
        self.hints.hash(&self.table, six.map(|s| &s.table));
        for i in 0..batch.len().min(hints::BATCH) {
            match (self.hints.at(i), six) {
                (Some((k, h)), Some(six)) if k.is_v6() => six.table.prefetch_entry(h),
                (Some((k, h)), _) if !k.is_v6() => self.table.prefetch_entry(h),
                _ => {}
            }
        }
    }

    #[inline]
    fn process(&mut self, pkt: &mut Packet<'_>) -> Verdict {
        self.hints.next();
        let csum = match pkt.vnet {
            Some(v) if v.needs_csum() => Csum::Partial,
            _ => Csum::Full,
        };
        let data = pkt.data();
        if data.first().is_some_and(|b| b >> 4 == 6) {
            return self.process6(pkt, csum);
        }
        let Ok(ip) = Ipv4Packet::new_checked(data) else {
            return self.drop(DropReason::Malformed);
        };
        if !ip.verify_checksum() {
            return self.drop(DropReason::BadChecksum);
        }
        if ip.is_fragment()
            && (self.snap.is_vip(ip.dst_addr()) || self.snap.is_nat_realserver_addr(ip.src_addr()))
        {
            return self.reassemble(pkt);
        }
        let odd = if ip.is_fragment() {
            Some(DropReason::Fragment)
        } else if ip.header_len() != crate::wire::ipv4::HEADER_LEN {
            Some(DropReason::IpOptions)
        } else {
            None
        };
        if let Some(reason) = odd {
            return self.fragment_or_options(&ip, reason);
        }
        let (src, dst, proto, ihl, total) = (
            ip.src_addr(),
            ip.dst_addr(),
            ip.protocol(),
            ip.header_len(),
            ip.total_len() as usize,
        );
        // Bytes after the IP total length (padding) are not part of the packet.
        let data = &data[..total];
        let (sport, dport, flags) = match proto {
            ip_proto::TCP => {
                let Ok(t) = TcpPacket::new_checked(&data[ihl..]) else {
                    return self.drop(DropReason::Malformed);
                };
                if !tcp_flags_sane(t.flags()) {
                    return self.drop(DropReason::TcpFlags);
                }
                (t.src_port(), t.dst_port(), t.flags())
            }
            ip_proto::UDP => {
                let Ok(u) = UdpPacket::new_checked(&data[ihl..]) else {
                    return self.drop(DropReason::Malformed);
                };
                (u.src_port(), u.dst_port(), 0)
            }
            ip_proto::ICMP => return self.icmp(&mut pkt.data_mut()[..total], ihl, dst),
            _ => {
                return if self.snap.is_vip(dst) {
                    self.drop(DropReason::UnknownProto)
                } else {
                    self.pass()
                };
            }
        };
        let l4 = L4 {
            proto,
            src: SocketAddrV4::new(src, sport),
            dst: SocketAddrV4::new(dst, dport),
            flags,
            csum,
            total,
        };
        if let Some(svc) = self.snap.service_at(proto, dst, dport) {
            return self.inbound(pkt, l4, svc);
        }
        if self.snap.is_vip(dst) {
            return self.drop(DropReason::NoService);
        }
        self.outbound(pkt, l4)
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[u8])) {
        self.proxy.drain(f);
        self.handed_over(f);
    }

    #[inline]
    fn behind(&mut self) {
        self.shed.behind();
    }

    fn lost(&mut self) {
        self.shed.lost();
    }

    fn poll(&mut self, now: Instant) -> bool {
        self.shed.pass();
        if !self.shared.ready.load(Ordering::Relaxed) {
            self.shared.ready.store(true, Ordering::Release);
        }
        let tick = Self::tick_at(&self.cfg, now);
        self.control();
        self.serve_ticks();
        if tick != self.now {
            self.move_clock(tick);
            self.on_tick();
            let sec = (tick / TICKS_PER_SEC) as u64;
            if sec != self.tick_sec {
                self.tick_sec = sec;
                self.second();
            }
            self.publish();
        }
        !self.stopped
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    /// The mask says what the rule says for every flags byte (PSH, URG, ECE and CWR do not
    /// matter), and keeps the cases IPVS's lists name.
    #[test]
    fn flags_mask_is_the_rule() {
        for f in 0..=u8::MAX {
            assert_eq!(tcp_flags_sane(f), flags_rule(f), "flags {f:#04x}");
        }
        for ok in [
            tf::SYN,
            tf::SYN | tf::ACK,
            tf::ACK,
            tf::FIN | tf::ACK,
            tf::RST,
            tf::RST | tf::ACK,
        ] {
            assert!(tcp_flags_sane(ok | tf::PSH), "{ok:#04x}");
        }
        for bad in [
            0,
            tf::FIN,
            tf::SYN | tf::FIN,
            tf::SYN | tf::RST,
            tf::FIN | tf::RST | tf::ACK,
        ] {
            assert!(!tcp_flags_sane(bad), "{bad:#04x}");
        }
    }
}
