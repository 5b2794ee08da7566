//! Per-service and per-backend traffic counters (ipvsadm `--stats` per line, as counters),
//! the service info metric that carries a service's address for joins (and node_exporter's
//! `node_ipvs_backend_*` labels: `examples/prometheus/node-ipvs.rules.yml`), the build info,
//! the reload counters, and the notify hooks' runs.
//!
//! Labels are bounded by the config: `service` is a `[[service]]` name, `server` a
//! realserver's `addr:port`. A label set's counters never go down, even when a service or
//! realserver is removed and comes back in a new slot ([`Totals`] keeps what left); while it
//! is removed, its series are not set and expire from the scrape.

use crate::dataplane::stats::Traffic;
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use std::collections::HashMap;
use std::net::SocketAddr;

use super::Kind;

/// `ringvs_service_connections_total{service}`.
pub const SERVICE_CONNECTIONS: &str = "ringvs_service_connections_total";
/// `ringvs_service_incoming_packets_total{service}`.
pub const SERVICE_IN_PACKETS: &str = "ringvs_service_incoming_packets_total";
/// `ringvs_service_outgoing_packets_total{service}`.
pub const SERVICE_OUT_PACKETS: &str = "ringvs_service_outgoing_packets_total";
/// `ringvs_service_incoming_bytes_total{service}`.
pub const SERVICE_IN_BYTES: &str = "ringvs_service_incoming_bytes_total";
/// `ringvs_service_outgoing_bytes_total{service}`.
pub const SERVICE_OUT_BYTES: &str = "ringvs_service_outgoing_bytes_total";
/// `ringvs_backend_connections_total{service,server}`.
pub const BACKEND_CONNECTIONS: &str = "ringvs_backend_connections_total";
/// `ringvs_backend_incoming_packets_total{service,server}`.
pub const BACKEND_IN_PACKETS: &str = "ringvs_backend_incoming_packets_total";
/// `ringvs_backend_outgoing_packets_total{service,server}`.
pub const BACKEND_OUT_PACKETS: &str = "ringvs_backend_outgoing_packets_total";
/// `ringvs_backend_incoming_bytes_total{service,server}`.
pub const BACKEND_IN_BYTES: &str = "ringvs_backend_incoming_bytes_total";
/// `ringvs_backend_outgoing_bytes_total{service,server}`.
pub const BACKEND_OUT_BYTES: &str = "ringvs_backend_outgoing_bytes_total";
/// `ringvs_service_info{service,proto,local_address,local_port}`: 1.
pub const SERVICE_INFO: &str = "ringvs_service_info";
/// `ringvs_build_info{version,revision,wit}`: 1.
pub const BUILD_INFO: &str = "ringvs_build_info";
/// `ringvs_reloads_total{result}`.
pub const RELOADS: &str = "ringvs_reloads_total";
/// `ringvs_last_reload_timestamp_seconds`.
pub const LAST_RELOAD: &str = "ringvs_last_reload_timestamp_seconds";
/// `ringvs_last_reload_successful`.
pub const LAST_RELOAD_OK: &str = "ringvs_last_reload_successful";
/// `ringvs_notify_total{service,event,result}`.
pub const NOTIFY: &str = "ringvs_notify_total";

/// Every metric of this module, with its type (beside [`super::ALL`]).
pub const ALL: [(&str, Kind); 16] = [
    (SERVICE_CONNECTIONS, Kind::Counter),
    (SERVICE_IN_PACKETS, Kind::Counter),
    (SERVICE_OUT_PACKETS, Kind::Counter),
    (SERVICE_IN_BYTES, Kind::Counter),
    (SERVICE_OUT_BYTES, Kind::Counter),
    (BACKEND_CONNECTIONS, Kind::Counter),
    (BACKEND_IN_PACKETS, Kind::Counter),
    (BACKEND_OUT_PACKETS, Kind::Counter),
    (BACKEND_IN_BYTES, Kind::Counter),
    (BACKEND_OUT_BYTES, Kind::Counter),
    (SERVICE_INFO, Kind::Gauge),
    (BUILD_INFO, Kind::Gauge),
    (RELOADS, Kind::Counter),
    (LAST_RELOAD, Kind::Gauge),
    (LAST_RELOAD_OK, Kind::Gauge),
    (NOTIFY, Kind::Counter),
];

/// Help texts of this module's metrics.
pub fn describe() {
    let what = [
        (
            SERVICE_CONNECTIONS,
            BACKEND_CONNECTIONS,
            "Connections (TCP) and flows (UDP) scheduled",
            None,
        ),
        (
            SERVICE_IN_PACKETS,
            BACKEND_IN_PACKETS,
            "Packets from clients forwarded",
            None,
        ),
        (
            SERVICE_OUT_PACKETS,
            BACKEND_OUT_PACKETS,
            "Packets to clients forwarded",
            None,
        ),
        (
            SERVICE_IN_BYTES,
            BACKEND_IN_BYTES,
            "Bytes (whole IP packets) from clients forwarded",
            Some(Unit::Bytes),
        ),
        (
            SERVICE_OUT_BYTES,
            BACKEND_OUT_BYTES,
            "Bytes (whole IP packets) to clients forwarded",
            Some(Unit::Bytes),
        ),
    ];
    for (svc, backend, text, unit) in what {
        match unit {
            Some(u) => {
                describe_counter!(svc, u, format!("{text}, per service (ipvsadm --stats)."));
                describe_counter!(
                    backend,
                    u,
                    format!("{text}, per realserver (ipvsadm --stats).")
                );
            }
            None => {
                describe_counter!(svc, format!("{text}, per service (ipvsadm --stats)."));
                describe_counter!(
                    backend,
                    format!("{text}, per realserver (ipvsadm --stats).")
                );
            }
        }
    }
    describe_gauge!(
        SERVICE_INFO,
        "1 per live service, with its protocol (TCP/UDP) and virtual address and port: join on `service` for node_exporter's labels."
    );
    describe_gauge!(
        BUILD_INFO,
        "1, with the version, the git revision and the WIT version of the running ringvs."
    );
    describe_counter!(
        RELOADS,
        "Config reloads (SIGHUP, `ringvs reload`), by result: ok or failed (nothing applied)."
    );
    describe_gauge!(
        LAST_RELOAD,
        Unit::Seconds,
        "When the last reload was tried, seconds since the Unix epoch (0: none since start)."
    );
    describe_counter!(
        NOTIFY,
        "Notify hooks (a service's notify.up/down), by event and result: ok, failed, timeout (killed at its timeout), error (could not run), dropped (over max_per_minute)."
    );
    describe_gauge!(
        LAST_RELOAD_OK,
        "1 if the last reload was applied (or none was tried), 0 if it was refused."
    );
}

/// `ringvs_build_info`: set at start and every second (unset gauges expire).
pub fn build_info() {
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "revision" => crate::REVISION,
        "wit" => ringvs_abi::WIT_VERSION
    )
    .set(1.0);
}

/// The reload metrics from the daemon's count.
pub fn update_reloads(ok: u64, failed: u64, last_unix: f64, last_ok: bool) {
    counter!(RELOADS, "result" => "ok").absolute(ok);
    counter!(RELOADS, "result" => "failed").absolute(failed);
    gauge!(LAST_RELOAD).set(last_unix);
    gauge!(LAST_RELOAD_OK).set(if last_ok || ok + failed == 0 {
        1.0
    } else {
        0.0
    });
}

/// A notify hook of `service` for `event` ended with `result`, or was `dropped`.
pub fn notified(service: &str, event: &'static str, result: &'static str) {
    count_event(Event {
        name: NOTIFY,
        service: service.to_string(),
        server: None,
        labels: vec![("event", event), ("result", result)],
    });
}

/// One series of a counter of events (health checks and transitions, notify runs): its
/// name, the service and realserver it is about, and its other labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    /// The metric.
    pub name: &'static str,
    /// The `service` label.
    pub service: String,
    /// The `server` label, if the metric has one.
    pub server: Option<String>,
    /// The other labels.
    pub labels: Vec<(&'static str, &'static str)>,
}

/// Counts of events, kept here and exported every second with the traffic counters, for the
/// services and realservers that exist: a removed one's series stop being set and expire
/// from the scrape (the exporter's idle timeout), and go on from their count if it comes
/// back. Bounded by the config's label sets, like [`Totals`].
static EVENTS: std::sync::Mutex<std::collections::BTreeMap<Event, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts one event.
pub fn count_event(e: Event) {
    if let Ok(mut m) = EVENTS.lock() {
        *m.entry(e).or_insert(0) += 1;
    }
}

/// Sets the event counters of the services and realservers in the rows.
fn update_events(services: &[ServiceRow], backends: &[BackendRow]) {
    let Ok(m) = EVENTS.lock() else { return };
    if m.is_empty() {
        return;
    }
    // Sets of what exists: one lookup per event key, not a scan of every row.
    let svcs: std::collections::HashSet<&str> =
        services.iter().map(|s| s.service.as_str()).collect();
    let servers: std::collections::HashSet<(&str, &str)> = backends
        .iter()
        .map(|b| (b.service.as_str(), b.server.as_str()))
        .collect();
    for (e, &n) in m.iter() {
        let exists = match &e.server {
            None => svcs.contains(e.service.as_str()),
            Some(server) => servers.contains(&(e.service.as_str(), server.as_str())),
        };
        if !exists {
            continue;
        }
        let mut labels = vec![("service", e.service.clone())];
        labels.extend(e.server.iter().map(|s| ("server", s.clone())));
        labels.extend(e.labels.iter().map(|&(k, v)| (k, v.to_string())));
        counter!(e.name, &labels).absolute(n);
    }
}

/// A service's counters from one slot of the queues' report.
#[derive(Debug, Clone)]
pub struct ServiceRow {
    /// The service's slot.
    pub slot: u16,
    /// Its name.
    pub service: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Its virtual address.
    pub vip: SocketAddr,
    /// False while draining (removed): counted, but no info series.
    pub live: bool,
    /// Its counters since start.
    pub traffic: Traffic,
}

/// A realserver's counters from one slot of the queues' report.
#[derive(Debug, Clone)]
pub struct BackendRow {
    /// The realserver's slot.
    pub slot: u32,
    /// Its service's name.
    pub service: String,
    /// Its `addr:port`.
    pub server: String,
    /// Its counters since start.
    pub traffic: Traffic,
}

fn add(a: &mut Traffic, b: &Traffic) {
    a.conns += b.conns;
    a.in_pkts += b.in_pkts;
    a.out_pkts += b.out_pkts;
    a.in_bytes += b.in_bytes;
    a.out_bytes += b.out_bytes;
}

/// Per label set, what slots that are gone had counted, so that a label set's counters stay
/// monotonic when a service or realserver leaves its slot and comes back in another.
#[derive(Debug, Default)]
pub struct Totals {
    /// Slot → (labels, last counters).
    services: HashMap<u16, (String, Traffic)>,
    /// Slot → what its counters stood at when its label set took it: a service slot is
    /// reused once its service is gone, and the queues' counters go on.
    service_start: HashMap<u16, Traffic>,
    dests: HashMap<u32, ((String, String), Traffic)>,
    /// Realserver slot → what its counters stood at when its label set took it.
    dest_start: HashMap<u32, Traffic>,
    /// Labels → what gone slots counted.
    service_base: HashMap<String, Traffic>,
    dest_base: HashMap<(String, String), Traffic>,
}

impl Totals {
    /// The counters of each label set in a slot now: its gone slots' and its current
    /// slots' together (a label set in no slot is not exported: it expires from the scrape).
    fn services(&mut self, rows: &[ServiceRow]) -> HashMap<String, Traffic> {
        let mut now: HashMap<u16, (String, Traffic)> = HashMap::new();
        for r in rows {
            let start = self.service_start.entry(r.slot).or_default();
            now.insert(r.slot, (r.service.clone(), r.traffic.since(start)));
        }
        for (slot, (label, t)) in &self.services {
            match now.get(slot) {
                Some((l, _)) if l == label => {}
                _ => {
                    add(self.service_base.entry(label.clone()).or_default(), t);
                    // The slot's next occupant starts where this one's counters stood.
                    let start = self.service_start.entry(*slot).or_default();
                    add(start, t);
                    // A new occupant in the same update: counted from there.
                    if let (Some((_, t)), Some(r)) =
                        (now.get_mut(slot), rows.iter().find(|r| r.slot == *slot))
                    {
                        *t = r.traffic.since(start);
                    }
                }
            }
        }
        self.services = now;
        let mut out = HashMap::new();
        for (label, t) in self.services.values() {
            let base = self.service_base.get(label).copied().unwrap_or_default();
            add(out.entry(label.clone()).or_insert(base), t);
        }
        out
    }

    fn dests(&mut self, rows: &[BackendRow]) -> HashMap<(String, String), Traffic> {
        let mut now: HashMap<u32, ((String, String), Traffic)> = HashMap::new();
        for r in rows {
            let start = self.dest_start.entry(r.slot).or_default();
            let label = (r.service.clone(), r.server.clone());
            now.insert(r.slot, (label, r.traffic.since(start)));
        }
        for (slot, (label, t)) in &self.dests {
            match now.get(slot) {
                Some((l, _)) if l == label => {}
                _ => {
                    add(self.dest_base.entry(label.clone()).or_default(), t);
                    let start = self.dest_start.entry(*slot).or_default();
                    add(start, t);
                    if let (Some((_, t)), Some(r)) =
                        (now.get_mut(slot), rows.iter().find(|r| r.slot == *slot))
                    {
                        *t = r.traffic.since(start);
                    }
                }
            }
        }
        self.dests = now;
        let mut out = HashMap::new();
        for (label, t) in self.dests.values() {
            let base = self.dest_base.get(label).copied().unwrap_or_default();
            add(out.entry(label.clone()).or_insert(base), t);
        }
        out
    }
}

/// Sets the per-service and per-backend counters, the event counters and the service info.
pub fn update(totals: &mut Totals, services: &[ServiceRow], backends: &[BackendRow]) {
    update_events(services, backends);
    for (service, t) in totals.services(services) {
        let l = [("service", service)];
        counter!(SERVICE_CONNECTIONS, &l).absolute(t.conns);
        counter!(SERVICE_IN_PACKETS, &l).absolute(t.in_pkts);
        counter!(SERVICE_OUT_PACKETS, &l).absolute(t.out_pkts);
        counter!(SERVICE_IN_BYTES, &l).absolute(t.in_bytes);
        counter!(SERVICE_OUT_BYTES, &l).absolute(t.out_bytes);
    }
    for ((service, server), t) in totals.dests(backends) {
        let l = [("service", service), ("server", server)];
        counter!(BACKEND_CONNECTIONS, &l).absolute(t.conns);
        counter!(BACKEND_IN_PACKETS, &l).absolute(t.in_pkts);
        counter!(BACKEND_OUT_PACKETS, &l).absolute(t.out_pkts);
        counter!(BACKEND_IN_BYTES, &l).absolute(t.in_bytes);
        counter!(BACKEND_OUT_BYTES, &l).absolute(t.out_bytes);
    }
    for s in services.iter().filter(|s| s.live) {
        gauge!(
            SERVICE_INFO,
            "service" => s.service.clone(),
            "proto" => s.proto.to_ascii_uppercase(),
            "local_address" => s.vip.ip().to_string(),
            "local_port" => s.vip.port().to_string()
        )
        .set(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Traffic {
        Traffic {
            conns: n,
            in_pkts: 10 * n,
            out_pkts: 9 * n,
            in_bytes: 600 * n,
            out_bytes: 9000 * n,
        }
    }

    fn svc(slot: u16, name: &str, n: u64) -> ServiceRow {
        ServiceRow {
            slot,
            service: name.into(),
            proto: "tcp",
            vip: "10.77.100.100:80".parse().unwrap(),
            live: true,
            traffic: t(n),
        }
    }

    fn srv(slot: u32, name: &str, server: &str, n: u64) -> BackendRow {
        BackendRow {
            slot,
            service: name.into(),
            server: server.into(),
            traffic: t(n),
        }
    }

    #[test]
    fn a_label_set_stays_monotonic_when_its_slot_changes() {
        let mut tot = Totals::default();
        assert_eq!(tot.services(&[svc(0, "web", 5)])["web"], t(5));
        // Removed (slot 0 gone): not exported; then back in slot 3 from zero: 5 + 2, never
        // below 5.
        assert!(!tot.services(&[]).contains_key("web"));
        assert_eq!(tot.services(&[svc(3, "web", 2)])["web"], t(7));
        // A draining slot and a live one of the same name add up.
        let both = tot.services(&[svc(3, "web", 4), svc(4, "web", 1)]);
        assert_eq!(both["web"], t(10));
        let d = tot.dests(&[
            srv(1, "web", "10.77.1.1:8080", 3),
            srv(2, "web", "10.77.1.2:8080", 1),
        ]);
        assert_eq!(d[&("web".into(), "10.77.1.1:8080".into())], t(3));
        let d = tot.dests(&[srv(7, "web", "10.77.1.1:8080", 1)]);
        assert_eq!(d[&("web".into(), "10.77.1.1:8080".into())], t(4));
        assert!(!d.contains_key(&("web".into(), "10.77.1.2:8080".into())));
        let d = tot.dests(&[
            srv(8, "web", "10.77.1.2:8080", 2),
            srv(7, "web", "10.77.1.1:8080", 1),
        ]);
        assert_eq!(d[&("web".into(), "10.77.1.2:8080".into())], t(3));
    }

    /// A service slot is reused once its service is gone (issue 11): the queues' counters of
    /// the slot go on, and the new service counts from where they stood.
    #[test]
    fn a_reused_service_slot_starts_its_new_service_from_zero() {
        let mut tot = Totals::default();
        assert_eq!(tot.services(&[svc(0, "old", 5)])["old"], t(5));
        assert!(tot.services(&[]).is_empty());
        // The slot's counters stood at 5; "new" has counted 2 since.
        let now = tot.services(&[svc(0, "new", 7)]);
        assert_eq!((now["new"], now.get("old")), (t(2), None));
        assert_eq!(tot.services(&[svc(0, "new", 9)])["new"], t(4));
        // Taken over in one update, without a gap.
        let now = tot.services(&[svc(0, "third", 10)]);
        assert_eq!((now["third"], now.get("new")), (t(1), None));
        // "old" back, in another slot: from where it stood.
        assert_eq!(tot.services(&[svc(1, "old", 1)])["old"], t(6));
        // Realserver ids alike.
        let a = ("web".to_string(), "10.77.1.1:8080".to_string());
        let b = ("web".to_string(), "10.77.1.9:8080".to_string());
        assert_eq!(tot.dests(&[srv(5, "web", "10.77.1.1:8080", 3)])[&a], t(3));
        assert!(tot.dests(&[]).is_empty());
        let now = tot.dests(&[srv(5, "web", "10.77.1.9:8080", 4)]);
        assert_eq!((now.get(&a), now[&b]), (None, t(1)));
    }

    /// Label sets of removed objects expire (issue 11): a removed realserver's series, event
    /// counters included, are no longer set and leave the scrape; back, they go on from
    /// their counts.
    #[test]
    fn a_removed_servers_series_expire_and_come_back_from_their_counts() {
        let recorder = super::super::builder_expiring(std::time::Duration::from_millis(300))
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        let (gone, stays) = ("10.77.1.7:8080", "10.77.1.8:8080");
        let checks = |server: &str| {
            format!(
                "ringvs_health_checks_total{{service=\"exp\",server=\"{server}\",result=\"ok\"}}"
            )
        };
        let conns = |server: &str| {
            format!("ringvs_backend_connections_total{{service=\"exp\",server=\"{server}\"}}")
        };
        metrics::with_local_recorder(&recorder, || {
            let mut tot = Totals::default();
            super::super::health_checked("exp", gone, "ok");
            super::super::health_checked("exp", stays, "ok");
            update(
                &mut tot,
                &[svc(0, "exp", 6)],
                &[srv(1, "exp", gone, 5), srv(2, "exp", stays, 1)],
            );
            let text = handle.render();
            for line in [format!("{} 1", checks(gone)), format!("{} 5", conns(gone))] {
                assert!(text.contains(&line), "{line} not in:\n{text}");
            }
            // Removed; the exporter's idle timeout passes with the daemon updating.
            for _ in 0..4 {
                update(&mut tot, &[svc(0, "exp", 6)], &[srv(2, "exp", stays, 1)]);
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
            let text = handle.render();
            assert!(!text.contains(&checks(gone)), "{text}");
            assert!(!text.contains(&conns(gone)), "{text}");
            for line in [
                format!("{} 1", checks(stays)),
                format!("{} 1", conns(stays)),
            ] {
                assert!(text.contains(&line), "{line} not in:\n{text}");
            }
            // Back, in another slot.
            super::super::health_checked("exp", gone, "ok");
            update(
                &mut tot,
                &[svc(0, "exp", 8)],
                &[srv(3, "exp", gone, 2), srv(2, "exp", stays, 1)],
            );
            let text = handle.render();
            for line in [format!("{} 2", checks(gone)), format!("{} 7", conns(gone))] {
                assert!(text.contains(&line), "{line} not in:\n{text}");
            }
        });
    }

    #[test]
    fn every_metric_is_exported_with_help_and_type() {
        let recorder = super::super::builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            build_info();
            update_reloads(3, 1, 1.7e9, false);
            notified("web", "down", "timeout");
            let mut tot = Totals::default();
            update(
                &mut tot,
                &[svc(0, "web", 5)],
                &[srv(1, "web", "10.77.1.1:8080", 5)],
            );
        });
        let text = handle.render();
        for (name, kind) in ALL {
            let want = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert!(
                text.contains(&format!("# TYPE {name} {want}")),
                "{name}:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert_eq!(name.ends_with("_total"), kind == Kind::Counter, "{name}");
            assert!(
                !super::super::ALL.iter().any(|(n, _)| *n == name),
                "{name} twice"
            );
        }
        for line in [
            "ringvs_backend_incoming_bytes_total{service=\"web\",server=\"10.77.1.1:8080\"} 3000",
            "ringvs_service_connections_total{service=\"web\"} 5",
            "ringvs_reloads_total{result=\"ok\"} 3",
            "ringvs_reloads_total{result=\"failed\"} 1",
            "ringvs_last_reload_successful 0",
            "ringvs_service_info{service=\"web\",proto=\"TCP\",local_address=\"10.77.100.100\",local_port=\"80\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(
            text.contains(&format!(
                "ringvs_build_info{{version=\"{}\",revision=\"{}\",wit=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                crate::REVISION,
                ringvs_abi::WIT_VERSION
            )),
            "{text}"
        );
    }
}
