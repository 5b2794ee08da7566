//! Prometheus metrics: names (node_exporter's ipvs collector with our prefix), help texts,
//! and the once-a-second update from the queues' reports.
//!
//! The queues never touch the metrics registry: they publish plain counters a few times a
//! second and the control plane sets the exported values here. Every name is in [`ALL`] with
//! its type; `docs/METRICS.md` lists them with their labels and when each one appears.

pub mod traffic;

use crate::conn::State;
use crate::control::protocol::ListResult;
use crate::dataplane::stats::{DropReason, Evicted, ShardReport};
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `ringvs_connections_total`.
pub const CONNECTIONS: &str = "ringvs_connections_total";
/// `ringvs_incoming_packets_total`.
pub const IN_PACKETS: &str = "ringvs_incoming_packets_total";
/// `ringvs_outgoing_packets_total`.
pub const OUT_PACKETS: &str = "ringvs_outgoing_packets_total";
/// `ringvs_incoming_bytes_total`.
pub const IN_BYTES: &str = "ringvs_incoming_bytes_total";
/// `ringvs_outgoing_bytes_total`.
pub const OUT_BYTES: &str = "ringvs_outgoing_bytes_total";
/// `ringvs_backend_connections_active{service,server}`.
pub const BACKEND_ACTIVE: &str = "ringvs_backend_connections_active";
/// `ringvs_backend_connections_inactive{service,server}`.
pub const BACKEND_INACTIVE: &str = "ringvs_backend_connections_inactive";
/// `ringvs_backend_weight{service,server}`.
pub const BACKEND_WEIGHT: &str = "ringvs_backend_weight";
/// `ringvs_backend_up{service,server}`: 1 unless a health check holds the server down.
pub const BACKEND_UP: &str = "ringvs_backend_up";
/// `ringvs_health_checks_total{service,server,result}`.
pub const HEALTH_CHECKS: &str = "ringvs_health_checks_total";
/// `ringvs_health_transitions_total{service,server,state}`.
pub const HEALTH_TRANSITIONS: &str = "ringvs_health_transitions_total";
/// `ringvs_backend_connections_persistent{service,server}`.
pub const BACKEND_PERSISTENT: &str = "ringvs_backend_connections_persistent";
/// `ringvs_backend_overloaded{service,server}`.
pub const BACKEND_OVERLOADED: &str = "ringvs_backend_overloaded";
/// `ringvs_persistence_templates`.
pub const TEMPLATES: &str = "ringvs_persistence_templates";
/// `ringvs_persistence_template_memory_bytes`.
pub const TEMPLATE_MEMORY: &str = "ringvs_persistence_template_memory_bytes";
/// `ringvs_persistence_template_memory_limit_bytes`.
pub const TEMPLATE_LIMIT: &str = "ringvs_persistence_template_memory_limit_bytes";
/// `ringvs_conntable_entries{state}`.
pub const TABLE_ENTRIES: &str = "ringvs_conntable_entries";
/// `ringvs_conntable_memory_bytes`.
pub const TABLE_MEMORY: &str = "ringvs_conntable_memory_bytes";
/// `ringvs_conntable_memory_limit_bytes`.
pub const TABLE_LIMIT: &str = "ringvs_conntable_memory_limit_bytes";
/// `ringvs_dropped_packets_total{reason}`.
pub const DROPPED: &str = "ringvs_dropped_packets_total";
/// `ringvs_evictions_total{reason}`.
pub const EVICTIONS: &str = "ringvs_evictions_total";
/// `ringvs_syn_proxy_total{event}`.
pub const SYN_PROXY: &str = "ringvs_syn_proxy_total";
/// `ringvs_syn_proxy_active{service}`.
pub const SYN_PROXY_ACTIVE: &str = "ringvs_syn_proxy_active";
/// `ringvs_plugin_memory_bytes`.
pub const PLUGIN_MEMORY: &str = "ringvs_plugin_memory_bytes";
/// `ringvs_passthrough_packets_total`.
pub const PASSTHROUGH: &str = "ringvs_passthrough_packets_total";
/// `ringvs_icmp_translated_total`.
pub const ICMP_TRANSLATED: &str = "ringvs_icmp_translated_total";
/// `ringvs_reassembled_total`.
pub const REASSEMBLED: &str = "ringvs_reassembled_total";
/// `ringvs_sloppy_entries_total`.
pub const SLOPPY: &str = "ringvs_sloppy_entries_total";
/// `ringvs_tunnel_too_big_total`.
pub const TUNNEL_TOO_BIG: &str = "ringvs_tunnel_too_big_total";
/// `ringvs_io_packets_total{queue,direction}`.
pub const IO_PACKETS: &str = "ringvs_io_packets_total";
/// `ringvs_io_bytes_total{queue,direction}`.
pub const IO_BYTES: &str = "ringvs_io_bytes_total";
/// `ringvs_io_dropped_packets_total{queue,reason}`.
pub const IO_DROPPED: &str = "ringvs_io_dropped_packets_total";

/// `ringvs_sync_role{role}`: 1 for the current role.
pub const SYNC_ROLE: &str = "ringvs_sync_role";
/// `ringvs_sync_sent_entries_total`.
pub const SYNC_SENT_ENTRIES: &str = "ringvs_sync_sent_entries_total";
/// `ringvs_sync_sent_messages_total`.
pub const SYNC_SENT_MESSAGES: &str = "ringvs_sync_sent_messages_total";
/// `ringvs_sync_send_errors_total`.
pub const SYNC_SEND_ERRORS: &str = "ringvs_sync_send_errors_total";
/// `ringvs_sync_not_queued_total`.
pub const SYNC_NOT_QUEUED: &str = "ringvs_sync_not_queued_total";
/// `ringvs_sync_received_messages_total`.
pub const SYNC_RECEIVED_MESSAGES: &str = "ringvs_sync_received_messages_total";
/// `ringvs_sync_received_entries_total{result}`.
pub const SYNC_RECEIVED_ENTRIES: &str = "ringvs_sync_received_entries_total";
/// `ringvs_sync_lost_messages_total`.
pub const SYNC_LOST: &str = "ringvs_sync_lost_messages_total";
/// `ringvs_sync_rejected_total{reason}`.
pub const SYNC_REJECTED: &str = "ringvs_sync_rejected_total";
/// `ringvs_sync_bulk_transfers_total{direction}`.
pub const SYNC_BULK: &str = "ringvs_sync_bulk_transfers_total";
/// `ringvs_sync_held_entries`.
pub const SYNC_HELD: &str = "ringvs_sync_held_entries";
/// `ringvs_sync_lag_seconds`.
pub const SYNC_LAG: &str = "ringvs_sync_lag_seconds";
/// `ringvs_sync_peer_last_seen_seconds{peer}`.
pub const SYNC_PEER_SEEN: &str = "ringvs_sync_peer_last_seen_seconds";

/// `ringvs_plugin_calls_total{plugin,func}`.
pub const PLUGIN_CALLS: &str = "ringvs_plugin_calls_total";
/// `ringvs_plugin_call_seconds{plugin,func}` (histogram of sampled calls).
pub const PLUGIN_CALL_SECONDS: &str = "ringvs_plugin_call_seconds";
/// `ringvs_plugin_traps_total{plugin,kind}`.
pub const PLUGIN_TRAPS: &str = "ringvs_plugin_traps_total";
/// `ringvs_plugin_deadline_hits_total{plugin}`.
pub const PLUGIN_DEADLINE: &str = "ringvs_plugin_deadline_hits_total";
/// `ringvs_plugin_fallbacks_total{plugin}`.
pub const PLUGIN_FALLBACKS: &str = "ringvs_plugin_fallbacks_total";
/// `ringvs_plugin_busy_total{plugin}`.
pub const PLUGIN_BUSY: &str = "ringvs_plugin_busy_total";
/// `ringvs_plugin_swaps_total{service}`.
pub const PLUGIN_SWAPS: &str = "ringvs_plugin_swaps_total";
/// `ringvs_plugin_log_messages_total{plugin,level}`.
pub const PLUGIN_LOG: &str = "ringvs_plugin_log_messages_total";
/// `ringvs_plugin_log_dropped_total{plugin}`.
pub const PLUGIN_LOG_DROPPED: &str = "ringvs_plugin_log_dropped_total";

/// `ringvs_defense_active{service,plugin}`.
pub const DEFENSE_ACTIVE: &str = "ringvs_defense_active";
/// `ringvs_defense_level{service,plugin}`.
pub const DEFENSE_LEVEL: &str = "ringvs_defense_level";
/// `ringvs_defense_poisoned_queues{service,plugin}`.
pub const DEFENSE_POISONED: &str = "ringvs_defense_poisoned_queues";
/// `ringvs_defense_actions_total{plugin,action}`.
pub const DEFENSE_ACTIONS: &str = "ringvs_defense_actions_total";
/// `ringvs_defense_actions_refused_total{plugin,action}`.
pub const DEFENSE_REFUSED: &str = "ringvs_defense_actions_refused_total";
/// `ringvs_defense_refused_flows_total{plugin}`.
pub const DEFENSE_REFUSED_FLOWS: &str = "ringvs_defense_refused_flows_total";
/// `ringvs_blocked_prefixes`.
pub const BLOCKED: &str = "ringvs_blocked_prefixes";
/// `ringvs_top_source_new_flows{source}`.
pub const TOP_FLOWS: &str = "ringvs_top_source_new_flows";
/// `ringvs_top_source_packets{source}`.
pub const TOP_PACKETS: &str = "ringvs_top_source_packets";
/// Sources exported in the top metrics (bounded label cardinality).
pub const TOP_N: usize = 10;
/// Gauges not set for this long disappear (removed services, servers, sources).
pub const GAUGE_IDLE: Duration = Duration::from_secs(10);

/// What a metric is, as Prometheus's `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// A value now.
    Gauge,
    /// Buckets, `_sum` and `_count`.
    Histogram,
}

/// Every metric ringvs exports, with its type.
pub const ALL: [(&str, Kind); 63] = [
    (CONNECTIONS, Kind::Counter),
    (IN_PACKETS, Kind::Counter),
    (OUT_PACKETS, Kind::Counter),
    (IN_BYTES, Kind::Counter),
    (OUT_BYTES, Kind::Counter),
    (BACKEND_ACTIVE, Kind::Gauge),
    (BACKEND_INACTIVE, Kind::Gauge),
    (BACKEND_WEIGHT, Kind::Gauge),
    (BACKEND_UP, Kind::Gauge),
    (HEALTH_CHECKS, Kind::Counter),
    (HEALTH_TRANSITIONS, Kind::Counter),
    (BACKEND_PERSISTENT, Kind::Gauge),
    (BACKEND_OVERLOADED, Kind::Gauge),
    (TEMPLATES, Kind::Gauge),
    (TEMPLATE_MEMORY, Kind::Gauge),
    (TEMPLATE_LIMIT, Kind::Gauge),
    (TABLE_ENTRIES, Kind::Gauge),
    (TABLE_MEMORY, Kind::Gauge),
    (TABLE_LIMIT, Kind::Gauge),
    (DROPPED, Kind::Counter),
    (EVICTIONS, Kind::Counter),
    (SYN_PROXY, Kind::Counter),
    (SYN_PROXY_ACTIVE, Kind::Gauge),
    (PLUGIN_MEMORY, Kind::Gauge),
    (PASSTHROUGH, Kind::Counter),
    (ICMP_TRANSLATED, Kind::Counter),
    (REASSEMBLED, Kind::Counter),
    (SLOPPY, Kind::Counter),
    (TUNNEL_TOO_BIG, Kind::Counter),
    (IO_PACKETS, Kind::Counter),
    (IO_BYTES, Kind::Counter),
    (IO_DROPPED, Kind::Counter),
    (SYNC_ROLE, Kind::Gauge),
    (SYNC_SENT_ENTRIES, Kind::Counter),
    (SYNC_SENT_MESSAGES, Kind::Counter),
    (SYNC_SEND_ERRORS, Kind::Counter),
    (SYNC_NOT_QUEUED, Kind::Counter),
    (SYNC_RECEIVED_MESSAGES, Kind::Counter),
    (SYNC_RECEIVED_ENTRIES, Kind::Counter),
    (SYNC_LOST, Kind::Counter),
    (SYNC_REJECTED, Kind::Counter),
    (SYNC_BULK, Kind::Counter),
    (SYNC_HELD, Kind::Gauge),
    (SYNC_LAG, Kind::Gauge),
    (SYNC_PEER_SEEN, Kind::Gauge),
    (PLUGIN_CALLS, Kind::Counter),
    (PLUGIN_CALL_SECONDS, Kind::Histogram),
    (PLUGIN_TRAPS, Kind::Counter),
    (PLUGIN_DEADLINE, Kind::Counter),
    (PLUGIN_FALLBACKS, Kind::Counter),
    (PLUGIN_BUSY, Kind::Counter),
    (PLUGIN_SWAPS, Kind::Counter),
    (PLUGIN_LOG, Kind::Counter),
    (PLUGIN_LOG_DROPPED, Kind::Counter),
    (DEFENSE_ACTIVE, Kind::Gauge),
    (DEFENSE_LEVEL, Kind::Gauge),
    (DEFENSE_POISONED, Kind::Gauge),
    (DEFENSE_ACTIONS, Kind::Counter),
    (DEFENSE_REFUSED, Kind::Counter),
    (DEFENSE_REFUSED_FLOWS, Kind::Counter),
    (BLOCKED, Kind::Gauge),
    (TOP_FLOWS, Kind::Gauge),
    (TOP_PACKETS, Kind::Gauge),
];

/// The exporter's settings: series expiry and the plugin-call histogram's buckets.
fn builder() -> Result<metrics_exporter_prometheus::PrometheusBuilder, String> {
    builder_expiring(GAUGE_IDLE)
}

/// [`builder`], series not set for `idle` expiring.
fn builder_expiring(
    idle: Duration,
) -> Result<metrics_exporter_prometheus::PrometheusBuilder, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        // Series of removed services, servers and sources disappear: every series is set
        // every second while what it is about exists (event counters included, see
        // `traffic::count_event`).
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE | metrics_util::MetricKindMask::COUNTER,
            Some(idle),
        )
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PLUGIN_CALL_SECONDS.to_string()),
            &[
                250e-9, 500e-9, 1e-6, 2e-6, 5e-6, 10e-6, 50e-6, 100e-6, 1e-3, 10e-3,
            ],
        )
        .map_err(|e| format!("metrics: {e}"))
}

/// Installs the exporter on `addr` (inside the current Tokio runtime).
pub fn install(addr: SocketAddr) -> Result<(), String> {
    builder()?
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe();
    traffic::build_info();
    Ok(())
}

/// Registers help texts (every metric in [`ALL`] and [`traffic::ALL`] has one).
pub fn describe() {
    traffic::describe();
    describe_counter!(
        CONNECTIONS,
        "Connections (TCP connections and UDP flows) scheduled to a realserver."
    );
    describe_counter!(IN_PACKETS, "Packets from clients forwarded to realservers.");
    describe_counter!(
        OUT_PACKETS,
        "Packets from realservers forwarded to clients."
    );
    describe_counter!(
        IN_BYTES,
        Unit::Bytes,
        "Bytes (whole IP packets) from clients forwarded to realservers."
    );
    describe_counter!(
        OUT_BYTES,
        Unit::Bytes,
        "Bytes (whole IP packets) from realservers forwarded to clients."
    );
    describe_counter!(
        SLOPPY,
        "Entries opened by a TCP segment other than a SYN of a connection the table did not know (services with sloppy = true: connections another director started)."
    );
    describe_gauge!(
        BACKEND_ACTIVE,
        "Connections in ESTABLISHED per realserver (ipvsadm ActiveConn)."
    );
    describe_gauge!(
        BACKEND_INACTIVE,
        "Connections in any other state per realserver (ipvsadm InActConn)."
    );
    describe_gauge!(
        BACKEND_WEIGHT,
        "Current weight per realserver (0 = quiesced: no new connections)."
    );
    describe_gauge!(
        BACKEND_UP,
        "1 if the realserver may get new flows as far as health checks go (healthy, or not checked), 0 while a check holds it down or it was never checked successfully."
    );
    describe_counter!(
        HEALTH_CHECKS,
        "Health checks run per realserver, by result (ok, timeout, refused, bad_status, error)."
    );
    describe_counter!(
        HEALTH_TRANSITIONS,
        "Health changes per realserver, by the state entered (up, down)."
    );
    describe_gauge!(
        BACKEND_PERSISTENT,
        "Persistence templates pointing at each realserver (PersistConn); not counted in active or inactive."
    );
    describe_gauge!(
        BACKEND_OVERLOADED,
        "1 while a realserver is over its upper connection threshold (no new flows until below the lower one)."
    );
    describe_gauge!(
        TEMPLATES,
        "Persistence templates in the shared store (all services)."
    );
    describe_gauge!(
        TEMPLATE_MEMORY,
        Unit::Bytes,
        "Bytes used by the persistence template store."
    );
    describe_gauge!(
        TEMPLATE_LIMIT,
        Unit::Bytes,
        "The persistence template store's budget (director.template_memory_limit)."
    );
    describe_gauge!(TABLE_ENTRIES, "Tracked connections per state.");
    describe_gauge!(
        TABLE_MEMORY,
        Unit::Bytes,
        "Bytes used by the connection tables."
    );
    describe_gauge!(
        TABLE_LIMIT,
        Unit::Bytes,
        "The connection tables' memory budget (director.conn_memory_limit)."
    );
    describe_counter!(DROPPED, "Packets dropped, by reason.");
    describe_counter!(
        EVICTIONS,
        "Connection entries evicted to make room for new flows when the table or a service's max_conns was full (early drop), by reason: unreplied, closing, idle."
    );
    describe_counter!(
        SYN_PROXY,
        "SYN proxy events: cookies sent, returned valid or invalid, realservers opened, refused or silent, data kept or dropped."
    );
    describe_gauge!(
        PLUGIN_MEMORY,
        Unit::Bytes,
        "Linear memory of every live plugin instance (each at most the runtime's per-instance limit); outside conn_memory_limit."
    );
    describe_gauge!(
        SYN_PROXY_ACTIVE,
        "1 while the SYN proxy answers a service's new connections (in at least one queue)."
    );
    describe_counter!(
        PASSTHROUGH,
        "Packets neither for a service nor from one, passed unchanged."
    );
    describe_counter!(
        ICMP_TRANSLATED,
        "ICMP errors about tracked flows translated."
    );
    describe_counter!(
        REASSEMBLED,
        "Datagrams of services' traffic (to a virtual address, from a NAT realserver) reassembled from fragments."
    );
    describe_gauge!(
        SYNC_ROLE,
        "Connection sync: 1 for this director's role (master, backup, active), 0 for the others."
    );
    describe_counter!(
        SYNC_SENT_ENTRIES,
        "Connection sync: entries sent to the peers (each counted once per message)."
    );
    describe_counter!(
        SYNC_SENT_MESSAGES,
        "Connection sync: messages sent, every peer counted (heartbeats and bulk transfers included)."
    );
    describe_counter!(
        SYNC_SEND_ERRORS,
        "Connection sync: messages the socket refused to send."
    );
    describe_counter!(
        SYNC_NOT_QUEUED,
        "Connection sync: changed entries a queue could not queue because the sync thread was behind (rate bound); sent again at their next due packet."
    );
    describe_counter!(
        SYNC_RECEIVED_MESSAGES,
        "Connection sync: authenticated, fresh messages received from peers."
    );
    describe_counter!(
        SYNC_RECEIVED_ENTRIES,
        "Connection sync: entries received, by result: taken into the table, or ignored (no such service or realserver here, a full table, or a live connection of this director's own)."
    );
    describe_counter!(
        SYNC_LOST,
        "Connection sync: peers' messages that never arrived (sequence numbers that left the 64-message replay window untaken); their entries come again at their next period or state change."
    );
    describe_counter!(
        SYNC_REJECTED,
        "Connection sync: messages refused before anything in them was used, by reason (length, magic, version, oversized, mac, header, entry, replay)."
    );
    describe_counter!(
        SYNC_BULK,
        "Connection sync: whole-table transfers to a peer that (re)joined (sent) and from a peer (received)."
    );
    describe_gauge!(
        SYNC_HELD,
        "Connection sync: received entries held, not yet counted for scheduling (until this director is master or a packet uses them)."
    );
    describe_gauge!(
        SYNC_LAG,
        Unit::Seconds,
        "Connection sync: the longest a changed entry waited in the sync thread before its message left, over the last second."
    );
    describe_gauge!(
        SYNC_PEER_SEEN,
        Unit::Seconds,
        "Connection sync: seconds since the last message from each peer."
    );
    describe_counter!(
        TUNNEL_TOO_BIG,
        "Packets for tunnelled realservers (forward = \"tun\") too big for the tunnel with DF set: the client got ICMP fragmentation-needed."
    );
    describe_counter!(
        IO_PACKETS,
        "Packets through each queue's packet I/O (TUN reads and writes, AF_XDP frames), by direction (rx, tx)."
    );
    describe_counter!(
        IO_BYTES,
        Unit::Bytes,
        "Bytes (IP packets) through each queue's packet I/O, by direction (rx, tx)."
    );
    describe_counter!(
        IO_DROPPED,
        "Packets the packet I/O lost or could not take, per queue, by reason (tun: write_error, enobufs, discarded, and the kernel's kernel_queue_full for the whole device on queue 0; af_xdp: discarded, tx_full, no_neighbour, no_route, handoff_full and the kernel's rx_ring_full, kernel_rx_dropped, fill_ring_empty, invalid_desc)."
    );
    describe_counter!(
        PLUGIN_CALLS,
        "Calls into plugins, by plugin and function (pick, servers_changed, state, affinity, admit, tick)."
    );
    metrics::describe_histogram!(
        PLUGIN_CALL_SECONDS,
        Unit::Seconds,
        "Duration of plugin calls in seconds (one call in 16 is timed)."
    );
    describe_counter!(
        PLUGIN_TRAPS,
        "Plugin faults by kind (deadline, memory, trap, bad_return); each poisons the instance."
    );
    describe_counter!(
        PLUGIN_DEADLINE,
        "Plugin calls stopped by their deadline (also counted as kind=deadline in ringvs_plugin_traps_total)."
    );
    describe_counter!(
        PLUGIN_FALLBACKS,
        "Decisions taken by a fallback because the plugin's instance was poisoned."
    );
    describe_counter!(
        PLUGIN_BUSY,
        "New flows a defense did not see because its instance was running its tick on the queue's tick thread (admitted on the host's own protections)."
    );
    describe_counter!(
        PLUGIN_SWAPS,
        "Scheduler and persistence plugin swaps per service (reload, SIGHUP or `ringvs plugin swap`)."
    );
    describe_counter!(
        PLUGIN_LOG,
        "Messages plugins wrote to the director's log (the WIT's `log` import), by plugin and level."
    );
    describe_counter!(
        PLUGIN_LOG_DROPPED,
        "Plugin log messages dropped by the host's rate limit (10 a second per instance)."
    );
    describe_gauge!(
        DEFENSE_ACTIVE,
        "1 while a defense is doing something (level, drop rate, or actions in its last tick), else 0."
    );
    describe_gauge!(
        DEFENSE_LEVEL,
        "A defense's level (highest over the queues; 0 = normal)."
    );
    describe_gauge!(
        DEFENSE_POISONED,
        "Queues where a defense's instance is poisoned: no defense action there until it is replaced."
    );
    describe_counter!(
        DEFENSE_ACTIONS,
        "Defense actions applied, by plugin and action."
    );
    describe_counter!(
        DEFENSE_REFUSED,
        "Defense actions refused by the host (not allowed), by plugin and action."
    );
    describe_counter!(
        DEFENSE_REFUSED_FLOWS,
        "New flows refused by a defense plugin (its admission verdict or its drop rate), by plugin."
    );
    describe_gauge!(BLOCKED, "Source prefixes blocked by defenses now.");
    describe_gauge!(
        TOP_FLOWS,
        "New flows in the last second of the 10 heaviest sources (0 for a source that just left the top)."
    );
    describe_gauge!(
        TOP_PACKETS,
        "Packets in the last second of the 10 heaviest sources by new flows (estimated from a 1-in-16 sample)."
    );
}

/// The sources the top-source gauges showed at the last update.
#[derive(Debug, Default)]
pub struct TopShown(Vec<IpAddr>);

/// Defense gauges and the top sources. At most [`TOP_N`] sources are set per update; a source
/// that left the top is set to 0 once and then disappears with the gauges' idle timeout, so a
/// scrape shows at most [`TOP_N`] non-zero sources (plus zeros for at most [`GAUGE_IDLE`]).
/// There is no rank label: a source keeps its one series however its rank moves
/// (`topk()` ranks them).
pub fn update_defense(top: &crate::control::protocol::TopResult, shown: &mut TopShown) {
    for d in &top.defenses {
        let labels = [("service", d.service.clone()), ("plugin", d.plugin.clone())];
        gauge!(DEFENSE_ACTIVE, &labels).set(if d.active { 1.0 } else { 0.0 });
        gauge!(DEFENSE_LEVEL, &labels).set(d.level as f64);
        gauge!(DEFENSE_POISONED, &labels).set(d.poisoned_queues as f64);
    }
    gauge!(BLOCKED).set(top.blocks.len() as f64);
    let now: Vec<IpAddr> = top.sources.iter().take(TOP_N).map(|s| s.addr).collect();
    for gone in shown.0.iter().filter(|a| !now.contains(a)) {
        let labels = [("source", gone.to_string())];
        gauge!(TOP_FLOWS, &labels).set(0.0);
        gauge!(TOP_PACKETS, &labels).set(0.0);
    }
    for s in top.sources.iter().take(TOP_N) {
        let labels = [("source", s.addr.to_string())];
        gauge!(TOP_FLOWS, &labels).set(s.new_flows as f64);
        gauge!(TOP_PACKETS, &labels).set(s.packets as f64);
    }
    shown.0 = now;
}

/// Plugin metrics: counters from the merged report, the sampled call durations, swaps.
pub fn update_plugins(
    r: &ShardReport,
    samples: &[(std::sync::Arc<str>, crate::dataplane::policy::Func, f64)],
    swaps: &std::collections::BTreeMap<String, u64>,
) {
    use crate::dataplane::policy::Func;
    use crate::plugin::FaultKind;
    for (name, c) in &r.plugins {
        let plugin = name.to_string();
        for f in Func::ALL {
            if c.calls[f as usize] > 0 {
                counter!(PLUGIN_CALLS, "plugin" => plugin.clone(), "func" => f.label())
                    .absolute(c.calls[f as usize]);
            }
        }
        for k in FaultKind::ALL {
            counter!(PLUGIN_TRAPS, "plugin" => plugin.clone(), "kind" => k.label())
                .absolute(c.faults[k as usize]);
        }
        counter!(PLUGIN_DEADLINE, "plugin" => plugin.clone())
            .absolute(c.faults[FaultKind::Deadline as usize]);
        counter!(PLUGIN_FALLBACKS, "plugin" => plugin.clone()).absolute(c.fallbacks);
        if c.busy > 0 || c.calls[Func::Tick as usize] > 0 {
            counter!(PLUGIN_BUSY, "plugin" => plugin.clone()).absolute(c.busy);
        }
        if c.refused_flows > 0 {
            counter!(DEFENSE_REFUSED_FLOWS, "plugin" => plugin.clone()).absolute(c.refused_flows);
        }
        for a in crate::dataplane::defense::ActionKind::ALL {
            let (n, r) = (c.actions[a as usize], c.refused[a as usize]);
            if n + r > 0 {
                counter!(DEFENSE_ACTIONS, "plugin" => plugin.clone(), "action" => a.label())
                    .absolute(n);
                counter!(DEFENSE_REFUSED, "plugin" => plugin.clone(), "action" => a.label())
                    .absolute(r);
            }
        }
    }
    for (name, func, secs) in samples {
        metrics::histogram!(PLUGIN_CALL_SECONDS, "plugin" => name.to_string(), "func" => func.label())
            .record(*secs);
    }
    for (svc, n) in swaps {
        counter!(PLUGIN_SWAPS, "service" => svc.clone()).absolute(*n);
    }
}

/// Sets the exported values from the merged queue report and the service list.
pub fn update(r: &ShardReport, list: &ListResult) {
    let t = &r.counters.total;
    counter!(CONNECTIONS).absolute(t.conns);
    counter!(IN_PACKETS).absolute(t.in_pkts);
    counter!(OUT_PACKETS).absolute(t.out_pkts);
    counter!(IN_BYTES).absolute(t.in_bytes);
    counter!(OUT_BYTES).absolute(t.out_bytes);
    for reason in DropReason::ALL {
        counter!(DROPPED, "reason" => reason.label()).absolute(r.counters.drops[reason as usize]);
    }
    for e in Evicted::ALL {
        counter!(EVICTIONS, "reason" => e.label()).absolute(r.counters.evictions[e as usize]);
    }
    for e in crate::dataplane::synproxy::Event::ALL {
        counter!(SYN_PROXY, "event" => e.label()).absolute(r.counters.syn_proxy[e as usize]);
    }
    counter!(PASSTHROUGH).absolute(r.counters.passthrough);
    counter!(ICMP_TRANSLATED).absolute(r.counters.icmp_translated);
    counter!(REASSEMBLED).absolute(r.counters.reassembled);
    counter!(SLOPPY).absolute(r.counters.sloppy);
    counter!(TUNNEL_TOO_BIG).absolute(r.counters.tunnel_too_big);
    for s in State::ALL {
        gauge!(TABLE_ENTRIES, "state" => s.name()).set(r.by_state[s as usize] as f64);
    }
    gauge!(TABLE_MEMORY).set(r.memory_bytes as f64);
    gauge!(TABLE_LIMIT).set(r.memory_limit as f64);
    for svc in &list.services {
        gauge!(SYN_PROXY_ACTIVE, "service" => svc.name.clone()).set(if svc.syn_proxy_active {
            1.0
        } else {
            0.0
        });
        // From the start, so that increase() sees the first swap.
        counter!(PLUGIN_SWAPS, "service" => svc.name.clone()).increment(0);
        for srv in &svc.servers {
            let labels = [("service", svc.name.clone()), ("server", srv.addr.clone())];
            gauge!(BACKEND_ACTIVE, &labels).set(srv.active as f64);
            gauge!(BACKEND_INACTIVE, &labels).set(srv.inactive as f64);
            gauge!(BACKEND_WEIGHT, &labels).set(srv.weight as f64);
            gauge!(BACKEND_PERSISTENT, &labels).set(srv.persistent as f64);
            gauge!(BACKEND_OVERLOADED, &labels).set(if srv.overloaded { 1.0 } else { 0.0 });
            // A draining (removed) server is no longer part of the service: no health series.
            if !srv.draining {
                gauge!(BACKEND_UP, &labels).set(if srv.health == "down" { 0.0 } else { 1.0 });
            }
        }
    }
}

/// The packet I/O's counters, per queue (`io` in queue order), for `backend` ("tun" or
/// "af_xdp"): only the drop reasons that backend can count are exported.
pub fn update_io(backend: &str, io: &[crate::io::IoSnapshot]) {
    use crate::io::{IoDir, IoDrop};
    for (q, s) in io.iter().enumerate() {
        let queue = q.to_string();
        for d in IoDir::ALL {
            counter!(IO_PACKETS, "queue" => queue.clone(), "direction" => d.label())
                .absolute(s.packets[d as usize]);
            counter!(IO_BYTES, "queue" => queue.clone(), "direction" => d.label())
                .absolute(s.bytes[d as usize]);
        }
        for r in IoDrop::ALL.into_iter().filter(|r| r.applies_to(backend)) {
            counter!(IO_DROPPED, "queue" => queue.clone(), "reason" => r.label())
                .absolute(s.drops[r as usize]);
        }
    }
}

/// The plugins' `log` messages, by plugin name (every build loaded under a name counts in
/// the same series).
pub fn update_plugin_logs(
    logs: &[(
        std::sync::Arc<str>,
        std::sync::Arc<crate::plugin::LogCounters>,
    )],
) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, c) in logs {
        for (i, level) in crate::plugin::LogCounters::LEVELS.iter().enumerate() {
            counter!(PLUGIN_LOG, "plugin" => name.to_string(), "level" => *level)
                .absolute(c.written[i].load(Relaxed));
        }
        counter!(PLUGIN_LOG_DROPPED, "plugin" => name.to_string())
            .absolute(c.dropped.load(Relaxed));
    }
}

/// Connection sync's metrics.
pub fn update_sync(h: &crate::control::protocol::HaResult) {
    for r in ["master", "backup", "active"] {
        gauge!(SYNC_ROLE, "role" => r).set(if h.role == r { 1.0 } else { 0.0 });
    }
    counter!(SYNC_SENT_ENTRIES).absolute(h.sent_entries);
    counter!(SYNC_SENT_MESSAGES).absolute(h.sent_messages);
    counter!(SYNC_SEND_ERRORS).absolute(h.send_errors);
    counter!(SYNC_NOT_QUEUED).absolute(h.queue_full);
    counter!(SYNC_RECEIVED_MESSAGES).absolute(h.received_messages);
    counter!(SYNC_LOST).absolute(h.lost_messages);
    counter!(SYNC_RECEIVED_ENTRIES, "result" => "taken").absolute(h.applied);
    counter!(SYNC_RECEIVED_ENTRIES, "result" => "ignored").absolute(h.ignored);
    for (reason, n) in &h.rejected {
        counter!(SYNC_REJECTED, "reason" => reason.clone()).absolute(*n);
    }
    counter!(SYNC_BULK, "direction" => "sent").absolute(h.bulk_sent);
    counter!(SYNC_BULK, "direction" => "received").absolute(h.bulk_received);
    gauge!(SYNC_HELD).set(h.held as f64);
    gauge!(SYNC_LAG).set(h.lag_ms / 1000.0);
    for p in &h.peers {
        if let Some(ms) = p.last_seen_ms {
            gauge!(SYNC_PEER_SEEN, "peer" => p.addr.to_string()).set(ms as f64 / 1000.0);
        }
    }
}

/// The plugins' linear memory.
pub fn plugin_memory(bytes: usize) {
    gauge!(PLUGIN_MEMORY).set(bytes as f64);
}

/// The persistence template store's gauges.
pub fn update_templates(t: &crate::control::protocol::TemplateStatus) {
    gauge!(TEMPLATES).set(t.entries as f64);
    gauge!(TEMPLATE_MEMORY).set(t.memory_bytes as f64);
    gauge!(TEMPLATE_LIMIT).set(t.memory_limit as f64);
}

/// One health check of a realserver ran, with `result` ("ok" or the failure's label).
pub fn health_checked(service: &str, server: &str, result: &'static str) {
    health_event(HEALTH_CHECKS, service, server, ("result", result));
}

/// A realserver's health changed to `state`.
pub fn health_changed(service: &str, server: &str, state: &'static str) {
    health_event(HEALTH_TRANSITIONS, service, server, ("state", state));
}

/// Counts an event of a realserver (exported from the count every second).
fn health_event(
    name: &'static str,
    service: &str,
    server: &str,
    label: (&'static str, &'static str),
) {
    traffic::count_event(traffic::Event {
        name,
        service: service.to_string(),
        server: Some(server.to_string()),
        labels: vec![label],
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{DefenseInfo, Rates, ServerInfo, ServiceInfo, TopResult};
    use crate::dataplane::policy::{Func, PluginCounters};
    use crate::dataplane::sources::SourceCount;
    use crate::dataplane::stats::Traffic;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A report in which every counter has moved, as after traffic through a busy director.
    fn busy() -> (ShardReport, ListResult) {
        let mut r = ShardReport::default();
        r.counters.total = Traffic {
            conns: 10,
            in_pkts: 100,
            out_pkts: 90,
            in_bytes: 6000,
            out_bytes: 90_000,
        };
        r.counters.drops = [1; crate::dataplane::stats::DROP_REASONS];
        r.memory_bytes = 4096;
        r.memory_limit = 1 << 20;
        let c = PluginCounters {
            calls: [7; crate::dataplane::policy::FUNCS],
            faults: [1; 4],
            actions: [2; crate::dataplane::defense::ACTIONS],
            refused: [1; crate::dataplane::defense::ACTIONS],
            refused_flows: 5,
            ..Default::default()
        };
        r.plugins = vec![(Arc::from("sched-wlc"), c)];
        let server = |addr: &str| ServerInfo {
            addr: addr.into(),
            forward: "Masq".into(),
            weight: 1,
            active: 2,
            inactive: 3,
            persistent: 0,
            draining: false,
            health: "unchecked".into(),
            health_reason: None,
            health_since_secs: None,
            upper: 0,
            lower: 0,
            overloaded: false,
            stats: Traffic::default(),
            rate: Rates::default(),
        };
        let list = ListResult {
            services: vec![ServiceInfo {
                name: "web".into(),
                syn_proxy: "auto".into(),
                syn_proxy_active: false,
                proto: "tcp".into(),
                vip: "10.77.100.100:80".into(),
                scheduler: "sched-wlc".into(),
                flags: vec![],
                draining: false,
                stats: Traffic::default(),
                rate: Rates::default(),
                servers: vec![server("10.77.1.1:8080"), server("10.77.1.2:8080")],
            }],
        };
        (r, list)
    }

    /// `n` sources 10.0.0.first.. with decreasing new flows.
    fn top(first: u8, n: u8) -> TopResult {
        TopResult {
            sources: (0..n)
                .map(|i| SourceCount {
                    addr: std::net::Ipv4Addr::new(10, 0, 0, first + i).into(),
                    new_flows: 100 - u32::from(i),
                    packets: 1000,
                })
                .collect(),
            blocks: vec![],
            defenses: vec![DefenseInfo {
                service: "web".into(),
                plugin: "secure-tcp".into(),
                level: 0,
                drop_rate: 0,
                active: false,
                poisoned_queues: 0,
            }],
            entries: 0,
            capacity: 0,
            embryonic: 0,
        }
    }

    /// Families of a text exposition: name -> (HELP, TYPE, sample lines).
    type Families = BTreeMap<String, (String, String, Vec<String>)>;

    fn families(text: &str) -> Families {
        let mut f = Families::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                f.entry(name.into()).or_default().0 = help.into();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                f.entry(name.into()).or_default().1 = kind.into();
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s))
                    .find(|base| f.get(*base).is_some_and(|e| e.1 == "histogram"))
                    .unwrap_or(name);
                f.entry(family.into()).or_default().2.push(line.into());
            }
        }
        f
    }

    fn render(shown: &mut TopShown, tops: &[TopResult]) -> Families {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        let (r, list) = busy();
        let mut swaps = BTreeMap::new();
        swaps.insert("web".to_string(), 2);
        metrics::with_local_recorder(&recorder, || {
            describe();
            update(&r, &list);
            update_templates(&crate::control::protocol::TemplateStatus {
                entries: 3,
                capacity: 100,
                memory_bytes: 96,
                memory_limit: 3200,
                ..Default::default()
            });
            health_checked("web", "10.77.1.1:8080", "ok");
            health_changed("web", "10.77.1.1:8080", "up");
            // Event counters are set with the traffic counters, for what exists.
            traffic::update(
                &mut traffic::Totals::default(),
                &[traffic::ServiceRow {
                    slot: 0,
                    service: "web".into(),
                    proto: "tcp",
                    vip: "10.77.100.100:80".parse().unwrap(),
                    live: true,
                    traffic: Default::default(),
                }],
                &[traffic::BackendRow {
                    slot: 0,
                    service: "web".into(),
                    server: "10.77.1.1:8080".into(),
                    traffic: Default::default(),
                }],
            );
            update_plugins(&r, &[(Arc::from("sched-wlc"), Func::Pick, 2e-6)], &swaps);
            plugin_memory(1 << 20);
            update_plugin_logs(&[(Arc::from("sched-wlc"), Default::default())]);
            update_io("tun", &io_busy());
            update_sync(&ha_busy());
            for t in tops {
                update_defense(t, shown);
            }
        });
        families(&handle.render())
    }

    /// Two TUN queues: the second read 10 packets and lost 4 to ENOBUFS.
    fn io_busy() -> [crate::io::IoSnapshot; 2] {
        let mut q1 = crate::io::IoSnapshot {
            packets: [10, 6],
            bytes: [1000, 600],
            ..Default::default()
        };
        q1.drops[crate::io::IoDrop::Enobufs as usize] = 4;
        [Default::default(), q1]
    }

    #[test]
    fn io_counters_per_queue_with_the_backends_reasons() {
        let f = render(&mut TopShown::default(), &[]);
        let lines = |name: &str| f[name].2.clone();
        let dropped = lines(IO_DROPPED);
        // Four TUN reasons per queue (the kernel's on every queue, counted on queue 0), none
        // of AF_XDP's.
        assert_eq!(dropped.len(), 8, "{dropped:?}");
        assert!(dropped.contains(
            &r#"ringvs_io_dropped_packets_total{queue="1",reason="enobufs"} 4"#.to_string()
        ));
        assert!(
            !dropped.iter().any(|l| l.contains("tx_full")),
            "{dropped:?}"
        );
        let packets = lines(IO_PACKETS);
        assert!(packets
            .contains(&r#"ringvs_io_packets_total{queue="1",direction="rx"} 10"#.to_string()));
        assert!(
            packets.contains(&r#"ringvs_io_packets_total{queue="0",direction="tx"} 0"#.to_string())
        );
        assert!(lines(IO_BYTES)
            .contains(&r#"ringvs_io_bytes_total{queue="1",direction="tx"} 600"#.to_string()));
    }

    fn ha_busy() -> crate::control::protocol::HaResult {
        crate::control::protocol::HaResult {
            role: "backup".into(),
            id: 2,
            listen: "10.77.9.2:8848".into(),
            peers: vec![crate::sync::node::PeerStatus {
                addr: "10.77.9.1:8848".parse().unwrap(),
                id: Some(1),
                epoch: 1_764_000_000,
                last_seen_ms: Some(250),
                messages: 9,
                bulk_sent: 0,
            }],
            held: 40,
            lag_ms: 3.0,
            queued: 0,
            queue_full: 1,
            sent_entries: 0,
            sent_messages: 9,
            send_errors: 0,
            received_messages: 9,
            received_entries: 41,
            applied: 40,
            ignored: 1,
            lost_messages: 2,
            rejected: crate::sync::Reject::ALL
                .iter()
                .map(|r| {
                    (
                        r.label().to_string(),
                        u64::from(*r == crate::sync::Reject::Mac) * 5,
                    )
                })
                .collect(),
            bulk_sent: 0,
            bulk_received: 1,
        }
    }

    #[test]
    fn sync_metrics_say_the_role_the_refusals_by_reason_and_the_peers() {
        let f = render(&mut TopShown::default(), &[]);
        let lines = |name: &str| f[name].2.clone();
        let role = lines(SYNC_ROLE);
        assert!(
            role.contains(&r#"ringvs_sync_role{role="backup"} 1"#.to_string()),
            "{role:?}"
        );
        assert!(
            role.contains(&r#"ringvs_sync_role{role="master"} 0"#.to_string()),
            "{role:?}"
        );
        let rejected = lines(SYNC_REJECTED);
        assert_eq!(
            rejected.len(),
            crate::sync::Reject::ALL.len(),
            "{rejected:?}"
        );
        assert!(rejected.contains(&r#"ringvs_sync_rejected_total{reason="mac"} 5"#.to_string()));
        assert!(lines(SYNC_RECEIVED_ENTRIES)
            .contains(&r#"ringvs_sync_received_entries_total{result="ignored"} 1"#.to_string()));
        assert!(lines(SYNC_PEER_SEEN).contains(
            &r#"ringvs_sync_peer_last_seen_seconds{peer="10.77.9.1:8848"} 0.25"#.to_string()
        ));
        assert_eq!(lines(SYNC_HELD), ["ringvs_sync_held_entries 40"]);
    }

    #[test]
    fn every_metric_has_help_type_and_a_conventional_name() {
        let f = render(&mut TopShown::default(), &[top(1, 3)]);
        for (name, kind) in ALL {
            let (help, ty, samples) = f.get(name).unwrap_or_else(|| panic!("{name} not exported"));
            assert!(!help.is_empty(), "{name}: no help text");
            let want = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert_eq!(ty, want, "{name}");
            assert!(!samples.is_empty(), "{name}: no samples");
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
            assert!(name.starts_with("ringvs_"), "{name}");
        }
        let ours: Vec<&str> = ALL.iter().chain(&traffic::ALL).map(|(n, _)| *n).collect();
        for name in f.keys() {
            assert!(
                ours.contains(&name.as_str()),
                "{name} is exported but not in ALL"
            );
        }
        // Swaps start at 0 for every service and then follow the manager's count.
        assert!(f[PLUGIN_SWAPS]
            .2
            .contains(&r#"ringvs_plugin_swaps_total{service="web"} 2"#.to_string()));
    }

    #[test]
    fn top_sources_are_bounded_and_leavers_go_to_zero() {
        let n = TOP_N as u8;
        let mut shown = TopShown::default();
        // Twice as many sources as shown; then a wholly different top.
        let f = render(&mut shown, &[top(1, 2 * n), top(100, 2 * n)]);
        let nonzero = |name: &str| {
            f[name]
                .2
                .iter()
                .filter(|l| !l.ends_with(" 0"))
                .map(|l| l.split(' ').next().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        for name in [TOP_FLOWS, TOP_PACKETS] {
            let live = nonzero(name);
            let want: Vec<String> = (100..100 + n)
                .map(|i| format!("{name}{{source=\"10.0.0.{i}\"}}"))
                .collect();
            let mut live = live;
            live.sort();
            assert_eq!(live, want, "{name}");
            // The first top's sources are still there for the idle timeout, but at 0.
            assert_eq!(f[name].2.len(), 2 * TOP_N, "{name}");
            assert!(f[name].2.iter().all(|l| !l.contains("rank=")), "{name}");
        }
    }
}
