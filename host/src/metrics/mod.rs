//! Prometheus metrics: names (node_exporter's ipvs collector with our prefix), help texts,
//! and the once-a-second update from the queues' reports.
//!
//! The queues never touch the metrics registry: they publish plain counters a few times a
//! second and the control plane sets the exported values here.

use crate::conn::State;
use crate::control::protocol::ListResult;
use crate::dataplane::stats::{DropReason, ShardReport};
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use std::net::SocketAddr;
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
/// `ringvs_passthrough_packets_total`.
pub const PASSTHROUGH: &str = "ringvs_passthrough_packets_total";
/// `ringvs_icmp_translated_total`.
pub const ICMP_TRANSLATED: &str = "ringvs_icmp_translated_total";

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
/// `ringvs_plugin_swaps_total{service}`.
pub const PLUGIN_SWAPS: &str = "ringvs_plugin_swaps_total";

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
/// `ringvs_blocked_prefixes`.
pub const BLOCKED: &str = "ringvs_blocked_prefixes";
/// `ringvs_top_source_new_flows{rank,source}`.
pub const TOP_FLOWS: &str = "ringvs_top_source_new_flows";
/// `ringvs_top_source_packets{rank,source}`.
pub const TOP_PACKETS: &str = "ringvs_top_source_packets";
/// Sources exported in the top metrics (bounded label cardinality).
pub const TOP_N: usize = 10;

/// Installs the exporter on `addr` (inside the current Tokio runtime).
pub fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        // Series of removed services and servers disappear.
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(10)),
        )
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PLUGIN_CALL_SECONDS.to_string()),
            &[
                250e-9, 500e-9, 1e-6, 2e-6, 5e-6, 10e-6, 50e-6, 100e-6, 1e-3, 10e-3,
            ],
        )
        .map_err(|e| format!("metrics: {e}"))?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe();
    Ok(())
}

/// Registers help texts.
pub fn describe() {
    describe_counter!(CONNECTIONS, "Connections scheduled to a realserver.");
    describe_counter!(IN_PACKETS, "Packets from clients forwarded to realservers.");
    describe_counter!(
        OUT_PACKETS,
        "Packets from realservers forwarded to clients."
    );
    describe_counter!(
        IN_BYTES,
        Unit::Bytes,
        "Bytes from clients forwarded to realservers."
    );
    describe_counter!(
        OUT_BYTES,
        Unit::Bytes,
        "Bytes from realservers forwarded to clients."
    );
    describe_gauge!(
        BACKEND_ACTIVE,
        "Connections in ESTABLISHED per realserver (ActiveConn)."
    );
    describe_gauge!(
        BACKEND_INACTIVE,
        "Connections in other states per realserver (InActConn)."
    );
    describe_gauge!(
        BACKEND_WEIGHT,
        "Current weight per realserver (0 = quiesced)."
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
        "The connection tables' memory budget."
    );
    describe_counter!(DROPPED, "Packets dropped, by reason.");
    describe_counter!(
        PASSTHROUGH,
        "Packets neither for a service nor from one, passed unchanged."
    );
    describe_counter!(
        ICMP_TRANSLATED,
        "ICMP errors about tracked flows translated."
    );
    describe_counter!(PLUGIN_CALLS, "Calls into plugins, by plugin and function.");
    describe_gauge!(
        DEFENSE_ACTIVE,
        "1 while a defense is doing something (level, drop rate, or actions in its last tick)."
    );
    describe_gauge!(
        DEFENSE_LEVEL,
        "A defense's level (highest over the queues)."
    );
    describe_gauge!(DEFENSE_POISONED, "Queues where a defense's instance is poisoned: no defense action there until it is replaced.");
    describe_counter!(
        DEFENSE_ACTIONS,
        "Defense actions applied, by plugin and action."
    );
    describe_counter!(
        DEFENSE_REFUSED,
        "Defense actions refused by the host (not allowed), by plugin and action."
    );
    describe_gauge!(BLOCKED, "Source prefixes blocked by defenses now.");
    describe_gauge!(
        TOP_FLOWS,
        "New flows in the last second of the heaviest sources (rank 1 is the heaviest)."
    );
    describe_gauge!(
        TOP_PACKETS,
        "Packets in the last second of the heaviest sources (sampled)."
    );
    metrics::describe_histogram!(
        PLUGIN_CALL_SECONDS,
        Unit::Seconds,
        "Duration of plugin calls (one call in 16 is timed)."
    );
    describe_counter!(
        PLUGIN_TRAPS,
        "Plugin faults by kind (deadline, memory, trap, bad_return); each poisons the instance."
    );
    describe_counter!(PLUGIN_DEADLINE, "Plugin calls stopped by their deadline.");
    describe_counter!(
        PLUGIN_FALLBACKS,
        "Decisions taken by a fallback because the plugin's instance was poisoned."
    );
    describe_counter!(
        PLUGIN_SWAPS,
        "Scheduler and persistence plugin swaps per service (reload, SIGHUP or `ringvs plugin swap`)."
    );
}

/// Defense gauges and the top sources (ranks 1 to [`TOP_N`], so at most that many series
/// at a time; series of sources that left the top disappear with the gauges' idle timeout).
pub fn update_defense(top: &crate::control::protocol::TopResult) {
    for d in &top.defenses {
        let labels = [("service", d.service.clone()), ("plugin", d.plugin.clone())];
        gauge!(DEFENSE_ACTIVE, &labels).set(if d.active { 1.0 } else { 0.0 });
        gauge!(DEFENSE_LEVEL, &labels).set(d.level as f64);
        gauge!(DEFENSE_POISONED, &labels).set(d.poisoned_queues as f64);
    }
    gauge!(BLOCKED).set(top.blocks.len() as f64);
    for (i, s) in top.sources.iter().take(TOP_N).enumerate() {
        let labels = [
            ("rank", (i + 1).to_string()),
            ("source", s.addr.to_string()),
        ];
        gauge!(TOP_FLOWS, &labels).set(s.new_flows as f64);
        gauge!(TOP_PACKETS, &labels).set(s.packets as f64);
    }
}

/// Plugin metrics: counters from the merged report, the sampled call durations, swaps.
pub fn update_plugins(
    r: &ShardReport,
    samples: &[(std::sync::Arc<str>, crate::dataplane::sched::Func, f64)],
    swaps: &std::collections::BTreeMap<String, u64>,
) {
    use crate::dataplane::sched::Func;
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
    counter!(PASSTHROUGH).absolute(r.counters.passthrough);
    counter!(ICMP_TRANSLATED).absolute(r.counters.icmp_translated);
    for s in State::ALL {
        gauge!(TABLE_ENTRIES, "state" => s.name()).set(r.by_state[s as usize] as f64);
    }
    gauge!(TABLE_MEMORY).set(r.memory_bytes as f64);
    gauge!(TABLE_LIMIT).set(r.memory_limit as f64);
    for svc in &list.services {
        for srv in &svc.servers {
            let labels = [("service", svc.name.clone()), ("server", srv.addr.clone())];
            gauge!(BACKEND_ACTIVE, &labels).set(srv.active as f64);
            gauge!(BACKEND_INACTIVE, &labels).set(srv.inactive as f64);
            gauge!(BACKEND_WEIGHT, &labels).set(srv.weight as f64);
            gauge!(BACKEND_PERSISTENT, &labels).set(srv.persistent as f64);
            gauge!(BACKEND_OVERLOADED, &labels).set(if srv.overloaded { 1.0 } else { 0.0 });
        }
    }
}

/// The persistence template store's gauges.
pub fn update_templates(t: &crate::control::protocol::TemplateStatus) {
    gauge!(TEMPLATES).set(t.entries as f64);
    gauge!(TEMPLATE_MEMORY).set(t.memory_bytes as f64);
    gauge!(TEMPLATE_LIMIT).set(t.memory_limit as f64);
}
