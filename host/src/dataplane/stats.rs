//! Counters kept by each queue without atomics on the packet path, and the report the queue
//! publishes for the control plane a few times a second.

use crate::conn::state::STATES;

/// Why a packet was dropped. Each is counted in `ringvs_dropped_packets_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Truncated or malformed IPv4/TCP/UDP/ICMP header, or a bad length.
    Malformed = 0,
    /// IPv4 options on traffic to a virtual address or on a service's reply (no legitimate
    /// TCP/UDP client needs them; source routing is abuse). Other traffic with options
    /// passes unchanged.
    IpOptions,
    /// A fragment to a virtual address, or the first fragment of a service's reply: ringvs
    /// does not reassemble. Other fragments pass unchanged.
    Fragment,
    /// Not TCP, UDP or ICMP, addressed to a virtual address.
    UnknownProto,
    /// Addressed to a virtual address, but no service on that protocol and port.
    NoService,
    /// TCP flags that make no sense (SYN+FIN, SYN+RST, FIN+RST, none, FIN without ACK).
    TcpFlags,
    /// A TCP segment other than a SYN for a connection the table does not know.
    NoConn,
    /// No realserver can take a new flow (all quiesced, down or overloaded).
    NoServer,
    /// The connection table is at its memory limit and early drop found no entry less
    /// valuable than the new flow among those it sampled: new flow refused.
    TableFull,
    /// A reply from a realserver port for a connection the table does not know.
    StaleReply,
    /// The connection's realserver was removed and `expire_nodest_conn` is on.
    DestRemoved,
    /// An ICMP error quoting a flow the table does not know.
    IcmpNoConn,
    /// ICMP to a virtual address that is neither an echo request nor an error IPVS relates
    /// to a connection (destination unreachable, source quench, time exceeded).
    IcmpOther,
    /// A wrong IPv4 header checksum, or a wrong ICMP checksum on a message ringvs would
    /// answer or translate.
    BadChecksum,
    /// A defense plugin refused the new flow (its admission, or its drop rate).
    Defense,
    /// The source is blocked (mode `drop`): every packet to a service is dropped.
    Blocked,
    /// The source is tarpitted: its new flows are refused silently.
    Tarpit,
    /// A new flow of a persistent service needed a template and the template store is at
    /// its memory limit (`director.template_memory_limit`).
    TemplateFull,
    /// The service is at its `max_conns` and none of its entries could be evicted.
    MaxConns,
    /// A client packet while the SYN proxy opens its connection, whose data could not be
    /// kept for the realserver (the client sends it again).
    ProxyOpening,
    /// A new flow of a UDP service under a flood of new flows, beyond what the service
    /// admits until the flood ends.
    FloodLimit,
    /// A segmentation-offload super-packet for a tunnelled realserver (`forward = "tun"`):
    /// it cannot be tunnelled through TUN (see `dataplane::tunnel`).
    TunnelGso,
    /// A SYN the SYN proxy did not answer because the queue fell behind and its source never
    /// completed a handshake (see `dataplane::shard::shed`); the client retransmits.
    Overload,
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = 23;

impl DropReason {
    /// Every reason, in order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Malformed,
        DropReason::IpOptions,
        DropReason::Fragment,
        DropReason::UnknownProto,
        DropReason::NoService,
        DropReason::TcpFlags,
        DropReason::NoConn,
        DropReason::NoServer,
        DropReason::TableFull,
        DropReason::StaleReply,
        DropReason::DestRemoved,
        DropReason::IcmpNoConn,
        DropReason::IcmpOther,
        DropReason::BadChecksum,
        DropReason::Defense,
        DropReason::Blocked,
        DropReason::Tarpit,
        DropReason::TemplateFull,
        DropReason::MaxConns,
        DropReason::ProxyOpening,
        DropReason::FloodLimit,
        DropReason::TunnelGso,
        DropReason::Overload,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::IpOptions => "ip_options",
            DropReason::Fragment => "fragment",
            DropReason::UnknownProto => "unknown_proto",
            DropReason::NoService => "no_service",
            DropReason::TcpFlags => "tcp_flags",
            DropReason::NoConn => "no_conn",
            DropReason::NoServer => "no_server",
            DropReason::TableFull => "table_full",
            DropReason::StaleReply => "stale_reply",
            DropReason::DestRemoved => "dest_removed",
            DropReason::IcmpNoConn => "icmp_no_conn",
            DropReason::IcmpOther => "icmp_other",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Defense => "defense",
            DropReason::Blocked => "blocked",
            DropReason::Tarpit => "tarpit",
            DropReason::TemplateFull => "template_full",
            DropReason::MaxConns => "max_conns",
            DropReason::ProxyOpening => "proxy_opening",
            DropReason::FloodLimit => "flood_limit",
            DropReason::TunnelGso => "tunnel_gso",
            DropReason::Overload => "overload",
        }
    }
}

/// Packets, bytes and connections of one service or realserver (ipvsadm `--stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets client → server.
    pub in_pkts: u64,
    /// Packets server → client.
    pub out_pkts: u64,
    /// Bytes client → server.
    pub in_bytes: u64,
    /// Bytes server → client.
    pub out_bytes: u64,
}

impl Traffic {
    /// Counts since `base` (for `--zero`, which never resets the monotonic counters).
    pub fn since(&self, base: &Traffic) -> Traffic {
        Traffic {
            conns: self.conns.saturating_sub(base.conns),
            in_pkts: self.in_pkts.saturating_sub(base.in_pkts),
            out_pkts: self.out_pkts.saturating_sub(base.out_pkts),
            in_bytes: self.in_bytes.saturating_sub(base.in_bytes),
            out_bytes: self.out_bytes.saturating_sub(base.out_bytes),
        }
    }

    /// Adds another's counts.
    pub fn add(&mut self, o: &Traffic) {
        self.conns += o.conns;
        self.in_pkts += o.in_pkts;
        self.out_pkts += o.out_pkts;
        self.in_bytes += o.in_bytes;
        self.out_bytes += o.out_bytes;
    }
}

/// A queue's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// All traffic through services.
    pub total: Traffic,
    /// Drops by reason.
    pub drops: [u64; DROP_REASONS],
    /// Packets passed through unchanged (not for a service, not a tracked reply).
    pub passthrough: u64,
    /// ICMP errors translated for a tracked flow.
    pub icmp_translated: u64,
    /// Echo requests to a virtual address answered.
    pub echo_replies: u64,
    /// Datagrams reassembled from fragments (services' traffic).
    pub reassembled: u64,
    /// Packets for a tunnelled realserver too big for the tunnel with DF set, answered with
    /// ICMP fragmentation-needed.
    pub tunnel_too_big: u64,
    /// Connections expired by their timer.
    pub expired: u64,
    /// New-flow attempts (admitted or not).
    pub attempts: u64,
    /// Entries opened by a TCP segment other than a SYN (`sloppy` services).
    pub sloppy: u64,
    /// New flows sent to their realserver by an existing persistence template (a hit).
    pub persist_hits: u64,
    /// Entries evicted to make room for new flows, per [`Evicted`] class.
    pub evictions: [u64; EVICT_CLASSES],
    /// SYN proxy events, per [`crate::dataplane::synproxy::Event`].
    pub syn_proxy: [u64; crate::dataplane::synproxy::EVENTS],
}

/// Why an entry was evicted for a new flow (early drop), in eviction order: the first
/// classes go first. Counted in `ringvs_evictions_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Evicted {
    /// It never completed a handshake (TCP SYN_RECV, SYNACK, NONE) or, UDP, never saw a
    /// reply.
    Unreplied = 0,
    /// It was closing (FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK), or it is a UDP
    /// exchange of one datagram that got its answer.
    Closing = 1,
    /// Idle for at least [`IDLE_TICKS`] with at most [`FEW_PACKETS`] packets from its
    /// client.
    Idle = 2,
}

/// Number of eviction classes.
pub const EVICT_CLASSES: usize = 3;

/// Ticks without a packet after which a connection with few packets is evictable (2 s).
pub const IDLE_TICKS: u32 = 2 * crate::conn::TICKS_PER_SEC;
/// Packets from the client up to which an idle connection is evictable.
pub const FEW_PACKETS: u32 = 8;

impl Evicted {
    /// Every class, in eviction order.
    pub const ALL: [Evicted; EVICT_CLASSES] = [Evicted::Unreplied, Evicted::Closing, Evicted::Idle];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Evicted::Unreplied => "unreplied",
            Evicted::Closing => "closing",
            Evicted::Idle => "idle",
        }
    }
}

/// What a queue publishes for the control plane.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    /// Snapshot generation the queue is on.
    pub generation: u64,
    /// Queue counters.
    pub counters: Counters,
    /// Per service slot.
    pub services: Vec<Traffic>,
    /// Per realserver slot.
    pub dests: Vec<Traffic>,
    /// Live entries per state.
    pub by_state: [u32; STATES],
    /// Live entries.
    pub entries: u64,
    /// Bytes accounted to the table.
    pub memory_bytes: u64,
    /// The table's budget.
    pub memory_limit: u64,
    /// Entries the budget allows.
    pub capacity: u64,
    /// Per service slot: the SYN proxy answers its new connections (in this queue; merged:
    /// in any queue).
    pub proxying: Vec<bool>,
    /// Bytes of the persistence link column (4 per connection slot, allocated once the
    /// queue has a persistent service; outside `conn_memory_limit`).
    pub link_bytes: u64,
    /// Entries received by sync and not yet live (`dataplane::shard::sync`).
    pub held: u64,
    /// Plugin calls, faults and fallbacks, per plugin name.
    pub plugins: Vec<(std::sync::Arc<str>, super::policy::PluginCounters)>,
    /// Timed plugin calls since the control plane last took them.
    pub plugin_samples: Vec<(std::sync::Arc<str>, super::policy::Func, f64)>,
    /// The queue's top sources of the last second.
    pub top: Vec<super::sources::SourceCount>,
    /// The queue's defenses.
    pub defenses: Vec<DefenseStatus>,
}

impl ShardReport {
    /// Adds another queue's report (for totals).
    pub fn merge(&mut self, o: &ShardReport) {
        self.generation = self.generation.max(o.generation);
        self.counters.total.add(&o.counters.total);
        for (a, b) in self.counters.drops.iter_mut().zip(o.counters.drops) {
            *a += b;
        }
        self.counters.passthrough += o.counters.passthrough;
        self.counters.icmp_translated += o.counters.icmp_translated;
        self.counters.tunnel_too_big += o.counters.tunnel_too_big;
        self.counters.echo_replies += o.counters.echo_replies;
        self.counters.reassembled += o.counters.reassembled;
        self.counters.expired += o.counters.expired;
        self.counters.attempts += o.counters.attempts;
        self.counters.sloppy += o.counters.sloppy;
        self.counters.persist_hits += o.counters.persist_hits;
        for (a, b) in self.counters.evictions.iter_mut().zip(o.counters.evictions) {
            *a += b;
        }
        for (a, b) in self.counters.syn_proxy.iter_mut().zip(o.counters.syn_proxy) {
            *a += b;
        }
        if self.proxying.len() < o.proxying.len() {
            self.proxying.resize(o.proxying.len(), false);
        }
        for (a, b) in self.proxying.iter_mut().zip(&o.proxying) {
            *a |= *b;
        }
        self.defenses.extend(o.defenses.iter().cloned());
        merge_vec(&mut self.services, &o.services);
        merge_vec(&mut self.dests, &o.dests);
        for (a, b) in self.by_state.iter_mut().zip(o.by_state) {
            *a += b;
        }
        self.entries += o.entries;
        self.memory_bytes += o.memory_bytes;
        self.memory_limit += o.memory_limit;
        self.capacity += o.capacity;
        self.link_bytes += o.link_bytes;
        self.held += o.held;
        for (name, c) in &o.plugins {
            match self.plugins.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => {
                    for (a, b) in t.calls.iter_mut().zip(c.calls) {
                        *a += b;
                    }
                    for (a, b) in t.faults.iter_mut().zip(c.faults) {
                        *a += b;
                    }
                    t.fallbacks += c.fallbacks;
                    t.busy += c.busy;
                    t.refused_flows += c.refused_flows;
                    for (a, b) in t.actions.iter_mut().zip(c.actions) {
                        *a += b;
                    }
                    for (a, b) in t.refused.iter_mut().zip(c.refused) {
                        *a += b;
                    }
                }
                None => self.plugins.push((name.clone(), c.clone())),
            }
        }
    }
}

fn merge_vec(a: &mut Vec<Traffic>, b: &[Traffic]) {
    if a.len() < b.len() {
        a.resize(b.len(), Traffic::default());
    }
    for (x, y) in a.iter_mut().zip(b) {
        x.add(y);
    }
}

/// What a queue reports about one defense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefenseStatus {
    /// Service slot.
    pub svc: u16,
    /// The plugin.
    pub plugin: std::sync::Arc<str>,
    /// Its level in this queue.
    pub level: u8,
    /// Its drop rate in this queue.
    pub drop_rate: u32,
    /// It is doing something (level, drop rate, or actions in its last tick).
    pub active: bool,
    /// Its instance is usable (false while poisoned: no defense action).
    pub healthy: bool,
}
