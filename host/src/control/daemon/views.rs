//! The read-only answers: `status`, `list`, `connections`, `plugins` and `top`. They read
//! the queues' reports, the registry and the health checkers; they change nothing.

use super::super::protocol::{
    BlockInfo, ConnRow, ConnectionsResult, DefenseInfo, ListResult, PluginInfo, ServerInfo,
    ServiceInfo, StatusResult, TemplateStatus, TopResult,
};
use super::super::registry::{DestEntry, ServiceEntry};
use super::state::Daemon;
use crate::config::Proto;
use crate::conn::TICKS_PER_SEC;
use crate::dataplane::service::{DEST_F_DOWN, DEST_F_OVERLOAD};
use crate::dataplane::shard::DefenseStatus;
use crate::dataplane::stats::ShardReport;

/// How `ringvs list --connections` shows a template's affinity key as its source: an
/// address with port 0 when the key fits in 32 bits (persist-netmask's keys are the masked
/// client address, so this reads like ipvsadm -Lnc), else the key in hex.
fn template_source(key: u64) -> String {
    match u32::try_from(key) {
        Ok(a) => format!("{}:0", std::net::Ipv4Addr::from(a)),
        Err(_) => format!("{key:#018x}:0"),
    }
}

/// A service's flags as ipvsadm shows them (`persistent 300`, `mask …`), and its health
/// check.
fn service_flags(e: &ServiceEntry) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(p) = &e.cfg.persistence {
        flags.push(format!("persistent {}", p.timeout_secs));
        if let Some(m) = p.display_mask() {
            flags.push(format!("mask {m}"));
        }
    }
    if let Some(h) = &e.cfg.health {
        flags.push(format!("health {} {}", h.kind.name(), h.on_fail.name()));
    }
    if let Some(d) = e.dests.iter().find(|d| d.sorry && !d.removed()) {
        let state = if d.state.weight() > 0 {
            "active"
        } else {
            "standby"
        };
        flags.push(format!("sorry {} {state}", d.addr));
    }
    flags
}

/// The defenses of every queue, one per service and plugin: the highest level and drop
/// rate over the queues, active in any, and how many queues have it poisoned.
fn merge_defenses(
    statuses: &[DefenseStatus],
    service_name: impl Fn(u16) -> String,
) -> Vec<DefenseInfo> {
    let mut defenses: Vec<DefenseInfo> = Vec::new();
    for d in statuses {
        let service = service_name(d.svc);
        match defenses
            .iter_mut()
            .find(|x| x.service == service && x.plugin == *d.plugin)
        {
            Some(x) => {
                x.level = x.level.max(d.level);
                x.drop_rate = x.drop_rate.max(d.drop_rate);
                x.active |= d.active;
                x.poisoned_queues += u32::from(!d.healthy);
            }
            None => defenses.push(DefenseInfo {
                service,
                plugin: d.plugin.to_string(),
                level: d.level,
                drop_rate: d.drop_rate,
                active: d.active,
                poisoned_queues: u32::from(!d.healthy),
            }),
        }
    }
    defenses
}

impl Daemon {
    /// The director's top sources, blocks and defenses (`ringvs top`).
    pub(super) fn top_view(&self) -> TopResult {
        let now = self.queues.now_tick();
        let r = self.report();
        let service_name = |id: u16| {
            self.registry
                .all_services()
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.cfg.name.clone())
                .unwrap_or_default()
        };
        TopResult {
            sources: self.sources.top.iter().take(20).copied().collect(),
            blocks: self
                .sources
                .blocks
                .iter()
                .filter(|(_, _, _, b)| !crate::conn::reached(now, b.until))
                .map(|(svc, a, l, b)| BlockInfo {
                    prefix: format!("{a}/{l}"),
                    secs_left: crate::conn::ticks_left(b.until, now) / TICKS_PER_SEC,
                    mode: b.mode,
                    by: b.by.to_string(),
                    service: service_name(svc),
                })
                .collect(),
            defenses: merge_defenses(&r.defenses, service_name),
            entries: r.entries,
            capacity: r.capacity,
            embryonic: r.by_state[crate::conn::State::SynRecv as usize] as u64
                + r.by_state[crate::conn::State::SynAck as usize] as u64,
        }
    }

    /// Every slot's counters since start, for the per-service and per-backend metrics
    /// (draining services and realservers included until they are collected).
    pub(super) fn traffic_rows(
        &self,
        r: &ShardReport,
    ) -> (
        Vec<crate::metrics::traffic::ServiceRow>,
        Vec<crate::metrics::traffic::BackendRow>,
    ) {
        use crate::metrics::traffic::{BackendRow, ServiceRow};
        let mut services = Vec::new();
        let mut backends = Vec::new();
        for e in self.registry.all_services() {
            if e.removed && e.dests.is_empty() {
                continue;
            }
            services.push(ServiceRow {
                slot: e.id,
                service: e.cfg.name.clone(),
                proto: e.cfg.proto.name(),
                vip: e.cfg.vip,
                live: !e.removed,
                traffic: r.services.get(e.id as usize).copied().unwrap_or_default(),
            });
            for d in &e.dests {
                backends.push(BackendRow {
                    slot: d.id,
                    service: e.cfg.name.clone(),
                    server: d.addr.to_string(),
                    traffic: r.dests.get(d.id as usize).copied().unwrap_or_default(),
                });
            }
        }
        (services, backends)
    }

    /// Services with counts, statistics since the last zero, and rates.
    pub fn list(&self) -> ListResult {
        let r = self.report();
        let services = self
            .registry
            .all_services()
            .iter()
            .filter(|e| !e.removed || !e.dests.is_empty())
            .map(|e| {
                let sid = e.id as usize;
                ServiceInfo {
                    name: e.cfg.name.clone(),
                    proto: e.cfg.proto.name().to_string(),
                    vip: e.cfg.vip.to_string(),
                    scheduler: e.cfg.scheduler.clone(),
                    flags: {
                        let mut f = service_flags(e);
                        if r.proxying.get(sid).copied().unwrap_or(false) {
                            f.push("synproxy".into());
                        }
                        f
                    },
                    draining: e.removed,
                    syn_proxy: e.cfg.syn_proxy.name().to_string(),
                    syn_proxy_active: r.proxying.get(sid).copied().unwrap_or(false),
                    stats: self.stats.service_since_zero(&r, sid),
                    rate: self
                        .stats
                        .rates
                        .services
                        .get(sid)
                        .copied()
                        .unwrap_or_default(),
                    servers: e.dests.iter().map(|d| self.server_info(&r, e, d)).collect(),
                }
            })
            .collect();
        ListResult { services }
    }

    /// One realserver of service `e` in `list`.
    fn server_info(&self, r: &ShardReport, e: &ServiceEntry, d: &DestEntry) -> ServerInfo {
        let did = d.id as usize;
        let checked = if d.removed() {
            None
        } else {
            self.health.status(&e.cfg.name, d.addr)
        };
        ServerInfo {
            addr: d.addr.to_string(),
            forward: d.forward.ipvsadm_name().to_string(),
            weight: d.state.weight(),
            active: d.state.counters.active(),
            inactive: d.state.counters.inactive(),
            persistent: d.state.counters.persistent(),
            upper: d.state.upper(),
            lower: d.state.lower(),
            overloaded: d.state.flags() & DEST_F_OVERLOAD != 0,
            draining: d.removed(),
            health: match &checked {
                Some(h) if h.health.serving() => "up",
                Some(_) => "down",
                None if d.state.flags() & DEST_F_DOWN != 0 => "down",
                None => "unchecked",
            }
            .into(),
            health_reason: checked.as_ref().and_then(|h| h.reason.clone()),
            health_since_secs: checked.as_ref().map(|h| h.since.elapsed().as_secs()),
            stats: self.stats.dest_since_zero(r, did),
            rate: self.stats.rates.dests.get(did).copied().unwrap_or_default(),
        }
    }

    /// Loaded plugins with the services using them and their calls and faults.
    pub(super) fn plugin_list(&self) -> Vec<PluginInfo> {
        let r = self.report();
        self.plugins
            .manager
            .loaded
            .values()
            .map(|p| {
                let c = r
                    .plugins
                    .iter()
                    .find(|(n, _)| **n == *p.name)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                PluginInfo {
                    name: p.name.to_string(),
                    kind: p.kind.name().to_string(),
                    path: p.path.display().to_string(),
                    sha256: crate::plugin::hex(&p.sha256),
                    services: self
                        .registry
                        .services()
                        .filter(|e| {
                            e.cfg.scheduler == *p.name
                                || e.cfg.defense.iter().any(|d| *d == *p.name)
                                || e.cfg
                                    .persistence
                                    .as_ref()
                                    .is_some_and(|x| x.plugin == *p.name)
                        })
                        .map(|e| e.cfg.name.clone())
                        .collect(),
                    calls: c.calls.iter().sum(),
                    faults: c.faults.iter().sum(),
                    fallbacks: c.fallbacks,
                }
            })
            .collect()
    }

    /// Table occupancy, drops by reason, queues, health counts, templates.
    pub(super) fn status(&self) -> StatusResult {
        let r = self.report();
        let (checked, down) = self.health.counts();
        StatusResult {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.queues.uptime().as_secs(),
            device: self.cfg.director.device.clone(),
            queues: self.queues.len(),
            offload: self.cfg.director.offload,
            generation: r.generation,
            entries: r.entries,
            capacity: r.capacity,
            memory_bytes: r.memory_bytes,
            memory_limit: r.memory_limit,
            by_state: crate::conn::State::ALL
                .iter()
                .map(|s| (s.name().to_string(), r.by_state[*s as usize] as u64))
                .collect(),
            drops: crate::dataplane::stats::DropReason::ALL
                .iter()
                .map(|d| (d.label().to_string(), r.counters.drops[*d as usize]))
                .collect(),
            passthrough: r.counters.passthrough,
            servers_checked: checked as u64,
            servers_down: down as u64,
            templates: Some(self.template_status(&r)),
            unready: self.unready(),
        }
    }

    /// Why this director should not be announced to a router (`ringvs ha ready`; empty:
    /// ready): it is stopping, or a service has no realserver (its sorry server included)
    /// that can take a new flow (health checks not passed yet, all down, quiesced or over
    /// their thresholds).
    pub(super) fn unready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(at) = self.stopping {
            let left = at.saturating_duration_since(std::time::Instant::now());
            why.push(format!(
                "stopping: SIGTERM received, the data plane stops in {:.1} s (director.stop_delay)",
                left.as_secs_f64()
            ));
        }
        for e in self.registry.services() {
            if !e
                .dests
                .iter()
                .any(|d| !d.removed() && d.state.schedulable())
            {
                why.push(format!(
                    "service {:?} ({} {}): no realserver can take a new flow ({} configured; down, quiesced or overloaded)",
                    e.cfg.name,
                    e.cfg.proto.name(),
                    e.cfg.vip,
                    e.dests.iter().filter(|d| !d.removed()).count()
                ));
            }
        }
        why
    }

    /// The persistence template store.
    pub(super) fn template_status(&self, r: &ShardReport) -> TemplateStatus {
        let templates = &self.plugins.templates;
        let t = templates.stats();
        TemplateStatus {
            entries: t.entries,
            capacity: t.capacity,
            memory_bytes: t.memory_bytes,
            memory_limit: t.memory_limit,
            refused: t.refused,
            link_bytes: r.link_bytes,
            expire_quiescent_template: templates.expire_quiescent(),
        }
    }

    /// Up to `max` persistence templates and connections, templates first as ipvsadm -Lnc
    /// shows them.
    pub(super) fn connections(&self, max: usize) -> ConnectionsResult {
        let all = self.queues.connections(max + 1);
        let services = self.registry.all_services();
        let svc_of = |id: u16| services.iter().find(|e| e.id == id);
        let vip_of = |svc: Option<&ServiceEntry>| {
            svc.map(|s| s.cfg.vip.to_string())
                .unwrap_or_else(|| "?".into())
        };
        let dest_of = |svc: Option<&ServiceEntry>, id: u32| {
            svc.and_then(|s| s.dests.iter().find(|d| d.id == id))
                .map(|d| d.addr.to_string())
                .unwrap_or_else(|| "?".into())
        };
        // Templates: state NONE, the client network (the affinity key, an address when it
        // fits in 32 bits) with port 0.
        let now = self.queues.now_tick();
        let templates = self.plugins.templates.list(max + 1);
        let mut conns: Vec<ConnRow> = templates
            .iter()
            .map(|t| {
                let svc = svc_of(t.svc);
                ConnRow {
                    proto: svc
                        .map_or("TCP", |s| match s.cfg.proto {
                            Proto::Tcp => "TCP",
                            Proto::Udp => "UDP",
                        })
                        .to_string(),
                    expire_secs: (crate::conn::ticks_left(t.expires, now) / TICKS_PER_SEC) as u64,
                    state: "NONE".into(),
                    source: template_source(t.key),
                    virtual_addr: vip_of(svc),
                    destination: dest_of(svc, t.dest),
                    template: true,
                }
            })
            .collect();
        conns.extend(all.into_iter().map(|c| {
            let svc = svc_of(c.svc);
            ConnRow {
                proto: if c.proto == 6 { "TCP" } else { "UDP" }.to_string(),
                expire_secs: c.expires_in.as_secs(),
                state: c.state.name().to_string(),
                source: c.client.to_string(),
                virtual_addr: vip_of(svc),
                destination: dest_of(svc, c.dest),
                template: false,
            }
        }));
        let truncated = conns.len() > max;
        conns.truncate(max);
        ConnectionsResult { conns, truncated }
    }
}
