//! The daemon: startup in a safe order, one thread per queue, the control loop (signals,
//! admin socket, metrics, reload), and an orderly shutdown.
//!
//! Startup checks everything that can fail before touching the network (config, admin
//! socket, metrics listener), then creates the device, starts the queues and waits until
//! each runs, then installs routes if asked. Any failure undoes what was done.

use super::admin;
use super::notify;
use super::plugins::{Fresh, PluginManager};
use super::protocol::{
    ConnRow, ConnectionsResult, ListResult, Rates, Request, ServerInfo, ServiceInfo, StatusResult,
};
use super::registry::{EditError, Registry};
use super::routes::{self, AutoRoutes};
use crate::config::{self, Config, Routes};
use crate::conn::HashKey;
use crate::conn::TICKS_PER_SEC;
use crate::dataplane::blocks::{Block, BlockList};
use crate::dataplane::service::{Snapshot, DEST_F_DOWN, DEST_F_OVERLOAD};
use crate::dataplane::shard::{ConnInfo, ShardShared};
use crate::dataplane::sources::{merge_top, SourceCount, SourceSketch};
use crate::dataplane::stats::{ShardReport, Traffic};
use crate::dataplane::templates::TemplateStore;
use crate::dataplane::{Control, PluginEvent, Shard, ShardConfig};
use crate::io::steer;
use crate::io::tun::{attach_steering_bpf, TunDevice, TunOptions};
use crate::io::uring::{run_queue, QueueStats, UringOptions};
use crossbeam_channel::Sender;
use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// A queue thread and how to reach it.
struct Queue {
    tx: Sender<Control>,
    shared: Arc<ShardShared>,
    thread: Option<JoinHandle<std::io::Result<QueueStats>>>,
}

/// Rates from successive one-second samples.
#[derive(Default)]
struct RateTracker {
    prev: Option<(Instant, ShardReport)>,
    services: Vec<Rates>,
    dests: Vec<Rates>,
}

fn rate_of(now: &Traffic, before: &Traffic, secs: f64) -> Rates {
    let d = now.since(before);
    Rates {
        cps: d.conns as f64 / secs,
        in_pps: d.in_pkts as f64 / secs,
        out_pps: d.out_pkts as f64 / secs,
        in_bps: d.in_bytes as f64 / secs,
        out_bps: d.out_bytes as f64 / secs,
    }
}

impl RateTracker {
    fn sample(&mut self, r: &ShardReport) {
        let now = Instant::now();
        if let Some((t, prev)) = &self.prev {
            let secs = now.duration_since(*t).as_secs_f64().max(0.001);
            let empty = Traffic::default();
            self.services = r
                .services
                .iter()
                .enumerate()
                .map(|(i, x)| rate_of(x, prev.services.get(i).unwrap_or(&empty), secs))
                .collect();
            self.dests = r
                .dests
                .iter()
                .enumerate()
                .map(|(i, x)| rate_of(x, prev.dests.get(i).unwrap_or(&empty), secs))
                .collect();
        }
        self.prev = Some((now, r.clone()));
    }
}

/// The running daemon's state, shared by the control loop and the admin socket.
pub struct Daemon {
    cfg: Config,
    plugins: PluginManager,
    events: crossbeam_channel::Receiver<PluginEvent>,
    /// A queue descriptor kept for device-wide ioctls (steering), with more than one queue.
    steer_fd: Option<OwnedFd>,
    /// The services the attached steering program knows.
    steered: Vec<(u8, std::net::Ipv4Addr, u16)>,
    registry: Registry,
    queues: Vec<Queue>,
    started: Instant,
    routes: Option<AutoRoutes>,
    zero: ShardReport,
    rates: RateTracker,
    sources: Arc<SourceSketch>,
    templates: Arc<TemplateStore>,
    blocks: BlockList,
    top: Arc<Vec<SourceCount>>,
    /// The sources the top-talker metrics showed at the last update.
    top_shown: crate::metrics::TopShown,
    health: crate::health::Monitor,
}

/// A fatal startup or runtime error.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

impl From<String> for DaemonError {
    fn from(s: String) -> Self {
        DaemonError(s)
    }
}

fn pin_to_cpu(i: usize) {
    // Safety: `set` is a plain bitmask owned by this frame; sched_setaffinity only reads it.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        if n <= 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % n as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl Daemon {
    /// Ticks since start (the queues' clock).
    fn now_tick(&self) -> crate::conn::Tick {
        (self.started.elapsed().as_millis() / (1000 / TICKS_PER_SEC as u128)) as crate::conn::Tick
    }

    /// The director's top sources, blocks and defenses (`ringvs top`).
    fn top_view(&self) -> super::protocol::TopResult {
        let now = self.now_tick();
        let r = self.report();
        let svc_name = |id: u16| {
            self.registry
                .all_services()
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.cfg.name.clone())
                .unwrap_or_default()
        };
        let mut defenses: Vec<super::protocol::DefenseInfo> = Vec::new();
        for d in &r.defenses {
            let service = svc_name(d.svc);
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
                None => defenses.push(super::protocol::DefenseInfo {
                    service,
                    plugin: d.plugin.to_string(),
                    level: d.level,
                    drop_rate: d.drop_rate,
                    active: d.active,
                    poisoned_queues: u32::from(!d.healthy),
                }),
            }
        }
        super::protocol::TopResult {
            sources: self.top.iter().take(20).copied().collect(),
            blocks: self
                .blocks
                .iter()
                .filter(|(_, _, b)| b.until > now)
                .map(|(a, l, b)| super::protocol::BlockInfo {
                    prefix: format!("{a}/{l}"),
                    secs_left: (b.until - now) / TICKS_PER_SEC,
                    mode: b.mode,
                    by: b.by.to_string(),
                })
                .collect(),
            defenses,
            entries: r.entries,
            capacity: r.capacity,
            embryonic: r.by_state[crate::conn::State::SynRecv as usize] as u64
                + r.by_state[crate::conn::State::SynAck as usize] as u64,
        }
    }

    /// The timed plugin calls the queues collected since the last call.
    fn take_samples(&self) -> Vec<(Arc<str>, crate::dataplane::sched::Func, f64)> {
        let mut out = Vec::new();
        for q in &self.queues {
            if let Ok(mut r) = q.shared.report.lock() {
                out.append(&mut r.plugin_samples);
            }
        }
        out
    }

    /// Every queue's report, merged.
    pub fn report(&self) -> ShardReport {
        let mut total = ShardReport::default();
        for q in &self.queues {
            if let Ok(r) = q.shared.report.lock() {
                total.merge(&r);
            }
        }
        total
    }

    /// Keeps the device's steering program in step with the services (before the queues see
    /// them, so that a new service's flows are keyed on their clients from the start).
    fn update_steering(&mut self, snap: &Snapshot) -> Result<(), String> {
        let Some(fd) = &self.steer_fd else {
            return Ok(());
        };
        let mut services: Vec<_> = snap
            .services()
            .map(|s| (s.proto.number(), *s.vip.ip(), s.vip.port()))
            .collect();
        services.sort_unstable();
        if services == self.steered {
            return Ok(());
        }
        let prog = steer::program(&services, self.queues.len() as u32);
        let prog_fd = steer::load(&prog).map_err(|e| e.to_string())?;
        attach_steering_bpf(fd.as_fd(), prog_fd.as_fd())
            .map_err(|e| format!("cannot attach the steering program: {e}"))?;
        self.steered = services;
        Ok(())
    }

    fn broadcast(&mut self, snap: Snapshot) {
        if let Err(e) = self.update_steering(&snap) {
            error!("steering: {e}; flows of new services may be dropped until it succeeds");
        }
        let snap = Arc::new(snap);
        for q in &self.queues {
            let _ = q.tx.send(Control::Snapshot(snap.clone()));
        }
    }

    fn sync_routes(&mut self) -> Result<(), String> {
        let Some(r) = self.routes.as_mut() else {
            return Ok(());
        };
        let vips: BTreeSet<_> = self.registry.services().map(|s| *s.cfg.vip.ip()).collect();
        let servers: BTreeSet<_> = self
            .registry
            .services()
            .flat_map(|s| s.cfg.servers.iter().map(|x| *x.addr.ip()))
            .collect();
        r.sync(&vips, &servers).map_err(|e| e.to_string())
    }

    /// Re-reads the config file. All or nothing: on any error the running configuration is
    /// untouched.
    pub fn reload(&mut self) -> Result<String, String> {
        let new = config::load(&self.cfg.path).map_err(|e| e.to_string())?;
        let d0 = &self.cfg.director;
        let d1 = &new.director;
        let mut fixed = Vec::new();
        if d0.device != d1.device {
            fixed.push("director.device");
        }
        if d0.queues != d1.queues {
            fixed.push("director.queues");
        }
        if d0.conn_memory_limit != d1.conn_memory_limit {
            fixed.push("director.conn_memory_limit");
        }
        if d0.offload != d1.offload {
            fixed.push("director.offload");
        }
        if d0.admin_socket != d1.admin_socket || d0.metrics_listen != d1.metrics_listen {
            fixed.push("director.admin_socket/metrics_listen");
        }
        if d0.routes != d1.routes {
            fixed.push("director.routes");
        }
        if d0.template_memory_limit != d1.template_memory_limit {
            fixed.push("director.template_memory_limit");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "{}: {} cannot change while running (restart ringvs); nothing was applied",
                self.cfg.path.display(),
                fixed.join(", ")
            ));
        }
        // Everything that can fail happens on copies first: plugins are compiled and
        // self-tested, per-queue instances created; only then is anything switched.
        let loaded = self.plugins.load_config(&new)?;
        // The copy shares the realservers' state: put it back if anything below fails.
        let saved = self.registry.save_shared();
        let mut trial = self.registry.clone();
        let tried = trial
            .apply(&new.services)
            .map_err(|e| e.to_string())
            .and_then(|changed| {
                let prepared = self.plugins.prepare(&trial, self.queues.len(), &loaded)?;
                Ok((changed, prepared))
            });
        let (changed, prepared) = match tried {
            Ok(t) => t,
            Err(e) => {
                Registry::restore(saved);
                return Err(e);
            }
        };
        let swapped: Vec<String> = trial
            .services()
            .filter(|e| {
                let Some(old) = self.registry.service(&e.cfg.name) else {
                    return false;
                };
                let old_plugin = self.plugins.prepared(e.id).map(|p| p.plugin.clone());
                let new_plugin = prepared.sched(e.id).map(|p| p.plugin.clone());
                old.cfg.scheduler != e.cfg.scheduler
                    || match (old_plugin, new_plugin) {
                        (Some(a), Some(b)) => !Arc::ptr_eq(&a, &b),
                        (a, b) => a.is_some() != b.is_some(),
                    }
            })
            .map(|e| e.cfg.name.clone())
            .collect();
        // Persistence plugins swapped: another plugin, or the same with a new config (the
        // queues take new instances; the templates stay).
        let persist_swapped: Vec<String> = trial
            .services()
            .filter(|e| {
                let (Some(old), Some(new)) = (
                    self.plugins.prepared_persistence(e.id),
                    prepared.persistence(e.id),
                ) else {
                    return false;
                };
                !Arc::ptr_eq(old, new)
            })
            .map(|e| e.cfg.name.clone())
            .collect();
        self.registry = trial;
        self.plugins.commit(loaded);
        self.templates
            .set_expire_quiescent(new.director.expire_quiescent_template);
        self.cfg = new;
        self.sync_health();
        let snap = self.plugins.snapshot(&mut self.registry, prepared);
        self.broadcast(snap);
        for s in swapped.iter().chain(&persist_swapped) {
            self.plugins.count_swap(s);
        }
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        let mut msg = if changed.is_empty() && swapped.is_empty() && persist_swapped.is_empty() {
            "configuration unchanged".to_string()
        } else {
            format!("reloaded; changed services: {}", changed.join(", "))
        };
        if !swapped.is_empty() {
            msg += &format!("; schedulers swapped: {}", swapped.join(", "));
        }
        if !persist_swapped.is_empty() {
            msg += &format!(
                "; persistence swapped (templates kept): {}",
                persist_swapped.join(", ")
            );
        }
        Ok(msg)
    }

    /// Switches a service's scheduler at runtime to a built-in, a loaded plugin, or a
    /// plugin file. The plugin is compiled, self-tested and instantiated for every queue
    /// before anything changes; queues switch between two new flows and existing flows keep
    /// their realservers. The config file is not edited: a reload applies the file again.
    pub fn swap(&mut self, service: &str, target: &str) -> Result<String, String> {
        let from = self
            .registry
            .service(service)
            .ok_or_else(|| format!("no service named {service:?}"))?
            .cfg
            .scheduler
            .clone();
        let mut extra = std::collections::BTreeMap::new();
        let name = if config::BUILTIN_SCHEDULERS.contains(&target) {
            target.to_string()
        } else if let Some(p) = self.plugins.loaded.get(target) {
            if p.kind != crate::plugin::Kind::Scheduler {
                return Err(format!(
                    "plugin {target:?} is a {} plugin, not a scheduler",
                    p.kind.name()
                ));
            }
            target.to_string()
        } else if target.ends_with(".wasm") || std::path::Path::new(target).is_file() {
            let p = self.plugins.load_path(std::path::Path::new(target))?;
            let n = p.name.to_string();
            extra.insert(n.clone(), p);
            n
        } else {
            return Err(format!(
                "{target:?} is neither a built-in scheduler ({}), a loaded plugin ({}), nor a .wasm file",
                config::BUILTIN_SCHEDULERS.join(", "),
                self.plugins.loaded.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let mut trial = self.registry.clone();
        trial
            .set_scheduler(service, &name)
            .map_err(|e| e.to_string())?;
        let prepared = self.plugins.prepare(&trial, self.queues.len(), &extra)?;
        self.registry = trial;
        self.plugins.commit(extra);
        let snap = self.plugins.snapshot(&mut self.registry, prepared);
        self.broadcast(snap);
        self.plugins.count_swap(service);
        info!(service, from = %from, to = %name, "scheduler swapped");
        Ok(format!(
            "{service}: scheduler {from} -> {name} on {} queue(s)",
            self.queues.len()
        ))
    }

    /// A new snapshot for the queues after an edit that loads no plugin.
    fn republish(&mut self) {
        match self
            .plugins
            .prepare(&self.registry, self.queues.len(), &Default::default())
        {
            Ok(prepared) => {
                let snap = self.plugins.snapshot(&mut self.registry, prepared);
                self.broadcast(snap);
            }
            Err(e) => error!("cannot publish the configuration: {e}"),
        }
    }

    /// Services with counts, statistics since the last zero, and rates.
    pub fn list(&self) -> ListResult {
        let r = self.report();
        let empty = Traffic::default();
        let services = self
            .registry
            .all_services()
            .iter()
            .filter(|e| !e.removed || !e.dests.is_empty())
            .map(|e| {
                let sid = e.id as usize;
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
                ServiceInfo {
                    name: e.cfg.name.clone(),
                    proto: e.cfg.proto.name().to_string(),
                    vip: e.cfg.vip.to_string(),
                    scheduler: e.cfg.scheduler.clone(),
                    flags,
                    draining: e.removed,
                    stats: r
                        .services
                        .get(sid)
                        .unwrap_or(&empty)
                        .since(self.zero.services.get(sid).unwrap_or(&empty)),
                    rate: self.rates.services.get(sid).copied().unwrap_or_default(),
                    servers: e
                        .dests
                        .iter()
                        .map(|d| {
                            let did = d.id as usize;
                            let checked = if d.removed() {
                                None
                            } else {
                                self.health.status(&e.cfg.name, d.addr)
                            };
                            ServerInfo {
                                addr: d.addr.to_string(),
                                forward: e.cfg.forward.ipvsadm_name().to_string(),
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
                                health_since_secs: checked
                                    .as_ref()
                                    .map(|h| h.since.elapsed().as_secs()),
                                stats: r
                                    .dests
                                    .get(did)
                                    .unwrap_or(&empty)
                                    .since(self.zero.dests.get(did).unwrap_or(&empty)),
                                rate: self.rates.dests.get(did).copied().unwrap_or_default(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        ListResult { services }
    }

    fn plugin_list(&self) -> Vec<super::protocol::PluginInfo> {
        let r = self.report();
        self.plugins
            .loaded
            .values()
            .map(|p| {
                let c = r
                    .plugins
                    .iter()
                    .find(|(n, _)| **n == *p.name)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                super::protocol::PluginInfo {
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

    fn status(&self) -> StatusResult {
        let r = self.report();
        let (checked, down) = self.health.counts();
        StatusResult {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
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
        }
    }

    fn template_status(&self, r: &ShardReport) -> super::protocol::TemplateStatus {
        let t = self.templates.stats();
        super::protocol::TemplateStatus {
            entries: t.entries,
            capacity: t.capacity,
            memory_bytes: t.memory_bytes,
            memory_limit: t.memory_limit,
            refused: t.refused,
            link_bytes: r.link_bytes,
            expire_quiescent_template: self.templates.expire_quiescent(),
        }
    }

    fn connections(&self, max: usize) -> ConnectionsResult {
        let mut all: Vec<ConnInfo> = Vec::new();
        let mut replies = Vec::new();
        for q in &self.queues {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if q.tx
                .send(Control::ListConns {
                    max: max + 1,
                    reply: tx,
                })
                .is_ok()
            {
                replies.push(rx);
            }
        }
        for rx in replies {
            if let Ok(mut v) = rx.recv_timeout(Duration::from_secs(2)) {
                all.append(&mut v);
            }
        }
        let snap = self.registry.all_services();
        let svc_of = |id: u16| snap.iter().find(|e| e.id == id);
        let dest_of = |svc: Option<&super::registry::ServiceEntry>, id: u32| {
            svc.and_then(|s| s.dests.iter().find(|d| d.id == id))
                .map(|d| d.addr.to_string())
                .unwrap_or_else(|| "?".into())
        };
        // Templates first, as ipvsadm -Lnc shows them: state NONE, the client network (the
        // affinity key, an address when it fits in 32 bits) with port 0.
        let now = self.now_tick();
        let templates = self.templates.list(max + 1);
        let mut conns: Vec<ConnRow> = templates
            .iter()
            .map(|t| {
                let svc = svc_of(t.svc);
                ConnRow {
                    proto: svc
                        .map_or("TCP", |s| match s.cfg.proto {
                            config::Proto::Tcp => "TCP",
                            config::Proto::Udp => "UDP",
                        })
                        .to_string(),
                    expire_secs: (t.expires.saturating_sub(now) / TICKS_PER_SEC) as u64,
                    state: "NONE".into(),
                    source: template_source(t.key),
                    virtual_addr: svc
                        .map(|s| s.cfg.vip.to_string())
                        .unwrap_or_else(|| "?".into()),
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
                virtual_addr: svc
                    .map(|s| s.cfg.vip.to_string())
                    .unwrap_or_else(|| "?".into()),
                destination: dest_of(svc, c.dest),
                template: false,
            }
        }));
        let truncated = conns.len() > max;
        conns.truncate(max);
        ConnectionsResult { conns, truncated }
    }

    /// Applies an edit that may need new plugin instances: on a copy first, and only if
    /// every instance can be prepared does the copy become the registry. A copy shares the
    /// realservers' state (weights, flags, thresholds): on failure it is put back as it was.
    fn edit_registry(
        &mut self,
        edit: impl FnOnce(&mut Registry) -> Result<(), EditError>,
    ) -> Result<(), String> {
        let saved = self.registry.save_shared();
        let mut trial = self.registry.clone();
        let prepared = edit(&mut trial).map_err(|e| e.to_string()).and_then(|()| {
            self.plugins
                .prepare(&trial, self.queues.len(), &Default::default())
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                Registry::restore(saved);
                return Err(e);
            }
        };
        self.registry = trial;
        let snap = self.plugins.snapshot(&mut self.registry, prepared);
        self.broadcast(snap);
        self.sync_health();
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        Ok(())
    }

    /// A new service must not take the name or the virtual address of a removed service
    /// whose connections are still draining: the queues match a connection to its service,
    /// so those connections would be cut. The same name at the same address is the service
    /// coming back, and keeps them.
    fn check_not_draining(&self, cfg: &config::ServiceConfig) -> Result<(), String> {
        let same_vip =
            |e: &super::registry::ServiceEntry| e.cfg.proto == cfg.proto && e.cfg.vip == cfg.vip;
        let conflict = self.registry.all_services().iter().find(|e| {
            e.removed && !e.dests.is_empty() && ((e.cfg.name == cfg.name) != same_vip(e))
        });
        let Some(e) = conflict else { return Ok(()) };
        let conns: u64 = e
            .dests
            .iter()
            .map(|d| u64::from(d.state.counters.active()) + u64::from(d.state.counters.inactive()))
            .sum();
        Err(format!(
            "removed service {:?} ({} {}) still has {conns} connection(s) draining; add {:?} once they have ended (`ringvs service remove {} --expire` ends each on its next packet)",
            e.cfg.name,
            e.cfg.proto.name(),
            e.cfg.vip,
            cfg.name,
            e.cfg.name
        ))
    }

    /// A service's scheduler and defenses must be plugins of the right kind.
    fn check_plugin_kinds(&self, cfg: &config::ServiceConfig) -> Result<(), String> {
        let want = std::iter::once((&cfg.scheduler, crate::plugin::Kind::Scheduler))
            .filter(|(s, _)| !config::BUILTIN_SCHEDULERS.contains(&s.as_str()))
            .chain(
                cfg.defense
                    .iter()
                    .map(|d| (d, crate::plugin::Kind::Defense)),
            );
        for (name, kind) in want {
            match self.plugins.loaded.get(name.as_str()) {
                Some(p) if p.kind == kind => {}
                Some(p) => {
                    return Err(format!(
                        "service {:?}: plugin {name:?} is a {} plugin, not a {}",
                        cfg.name,
                        p.kind.name(),
                        kind.name()
                    ))
                }
                None => {
                    return Err(format!(
                        "service {:?}: plugin {name:?} is not loaded",
                        cfg.name
                    ))
                }
            }
        }
        Ok(())
    }

    /// Starts, stops or keeps health checkers to match the registry.
    fn sync_health(&mut self) {
        let r = self.health.sync(self.registry.health_wants());
        if r.started + r.changed + r.stopped > 0 {
            info!(
                started = r.started,
                changed = r.changed,
                stopped = r.stopped,
                kept = r.kept,
                "health checks updated"
            );
        }
    }

    fn edited(&mut self) -> serde_json::Value {
        self.sync_health();
        self.republish();
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        serde_json::Value::String("ok".into())
    }

    /// Handles one admin request.
    pub fn handle(&mut self, req: Request) -> Result<serde_json::Value, String> {
        fn addr(s: &str) -> Result<SocketAddrV4, String> {
            s.parse()
                .map_err(|_| format!("{s:?} is not an IPv4 address:port"))
        }
        let json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| e.to_string());
        match req {
            Request::Status {} => json(serde_json::to_value(self.status())),
            Request::List {} => json(serde_json::to_value(self.list())),
            Request::Connections { max } => json(serde_json::to_value(
                self.connections(max.unwrap_or(10_000).min(1_000_000)),
            )),
            Request::Reload {} => self.reload().map(serde_json::Value::String),
            Request::PluginSwap { service, target } => {
                self.swap(&service, &target).map(serde_json::Value::String)
            }
            Request::Plugins {} => json(serde_json::to_value(self.plugin_list())),
            Request::Top {} => json(serde_json::to_value(self.top_view())),
            Request::Zero { service } => {
                let r = self.report();
                match service {
                    None => self.zero = r,
                    Some(name) => {
                        let e = self
                            .registry
                            .service(&name)
                            .ok_or_else(|| format!("no service named {name:?}"))?;
                        let sid = e.id as usize;
                        let ids: Vec<usize> = e.dests.iter().map(|d| d.id as usize).collect();
                        let z = &mut self.zero;
                        if z.services.len() < r.services.len() {
                            z.services.resize(r.services.len(), Traffic::default());
                        }
                        if z.dests.len() < r.dests.len() {
                            z.dests.resize(r.dests.len(), Traffic::default());
                        }
                        if let Some(t) = r.services.get(sid) {
                            z.services[sid] = *t;
                        }
                        for i in ids {
                            if let Some(t) = r.dests.get(i) {
                                z.dests[i] = *t;
                            }
                        }
                    }
                }
                Ok("zeroed".into())
            }
            Request::ServerAdd {
                service,
                addr: a,
                weight,
                upper,
                lower,
            } => {
                let w = weight.unwrap_or(1);
                let w =
                    config::check_weight(w).ok_or_else(|| EditError::BadWeight(w).to_string())?;
                let server = config::ServerConfig {
                    upper: upper.unwrap_or(0),
                    lower: lower.unwrap_or(0),
                    ..config::ServerConfig::new(addr(&a)?, w)
                };
                self.registry
                    .add_server(&service, server)
                    .map_err(|e| e.to_string())?;
                Ok(self.edited())
            }
            Request::ServerRemove {
                service,
                addr: a,
                expire,
            } => {
                let a = addr(&a)?;
                match self.registry.remove_server(&service, a) {
                    Ok(()) => {}
                    // `--expire` on a realserver already draining expires its connections.
                    Err(EditError::UnknownServer(..))
                        if expire && self.registry.expire_removed(&service, Some(a)) > 0 =>
                    {
                        return Ok("ok".into())
                    }
                    Err(e) => return Err(e.to_string()),
                }
                if expire {
                    self.registry.expire_removed(&service, Some(a));
                }
                info!(service = %service, server = %a, expire, "server removed");
                Ok(self.edited())
            }
            Request::ServiceAdd { name, edit } => {
                let cfg =
                    config::new_service(&name, edit, &|n| self.plugins.loaded.contains_key(n))
                        .map_err(|e| e.to_string())?;
                self.check_plugin_kinds(&cfg)?;
                self.check_not_draining(&cfg)?;
                let (proto, vip, sched) = (cfg.proto.name(), cfg.vip, cfg.scheduler.clone());
                self.edit_registry(|r| r.add_service(cfg))?;
                info!(service = %name, proto, vip = %vip, scheduler = %sched, "service added");
                Ok("ok".into())
            }
            Request::ServiceEdit { name, edit } => {
                let base = self
                    .registry
                    .service(&name)
                    .ok_or_else(|| EditError::UnknownService(name.clone()).to_string())?
                    .cfg
                    .clone();
                let cfg =
                    config::edit_service(&base, edit, &|n| self.plugins.loaded.contains_key(n))
                        .map_err(|e| e.to_string())?;
                if cfg == base {
                    return Ok("unchanged".into());
                }
                self.check_plugin_kinds(&cfg)?;
                let swapped = cfg.scheduler != base.scheduler;
                let (from, to) = (base.scheduler.clone(), cfg.scheduler.clone());
                self.edit_registry(|r| r.edit_service(cfg))?;
                if swapped {
                    self.plugins.count_swap(&name);
                    info!(service = %name, from = %from, to = %to, "scheduler swapped");
                }
                info!(service = %name, "service edited");
                Ok("ok".into())
            }
            Request::ServiceRemove { name, expire } => {
                match self.registry.remove_service(&name) {
                    Ok(()) => {}
                    // `--expire` on a service already draining expires its connections.
                    Err(EditError::UnknownService(_))
                        if expire && self.registry.expire_removed(&name, None) > 0 =>
                    {
                        return Ok("ok".into())
                    }
                    Err(e) => return Err(e.to_string()),
                }
                if expire {
                    self.registry.expire_removed(&name, None);
                }
                info!(service = %name, expire, "service removed");
                Ok(self.edited())
            }
            Request::ServerWeight {
                service,
                addr: a,
                weight,
            } => {
                self.registry
                    .set_weight(&service, addr(&a)?, weight)
                    .map_err(|e| e.to_string())?;
                Ok(self.edited())
            }
        }
    }

    /// Once a second: rates, metrics, garbage collection, queue health.
    fn tick(&mut self) -> Result<(), String> {
        let r = self.report();
        self.rates.sample(&r);
        if self.registry.collect_garbage() {
            self.republish();
        }
        // Plugin events: retired instances are dropped here, off the data path; poisoned
        // ones are replaced after their backoff.
        let now = self.now_tick();
        let mut blocks_changed = self.blocks.expire(now);
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                PluginEvent::Block { req, by } => {
                    let until = now.saturating_add(req.secs.saturating_mul(TICKS_PER_SEC));
                    info!(plugin = %by, prefix = %format!("{}/{}", req.addr, req.len), secs = req.secs, mode = ?req.mode, "source blocked");
                    self.blocks.insert(
                        req.addr,
                        req.len,
                        Block {
                            until,
                            mode: req.mode,
                            by,
                        },
                    );
                    blocks_changed = true;
                }
                PluginEvent::Unblock { addr, len } => {
                    blocks_changed |= self.blocks.remove(addr, len)
                }
                other => self.plugins.on_event(other),
            }
        }
        if blocks_changed {
            let b = Arc::new(self.blocks.clone());
            for q in &self.queues {
                let _ = q.tx.send(Control::Blocks(b.clone()));
            }
        }
        // Per-source rates roll over; the queues' top talkers merge into the director's.
        self.sources.rotate();
        let parts: Vec<Vec<SourceCount>> = self
            .queues
            .iter()
            .filter_map(|q| q.shared.report.lock().ok().map(|r| r.top.clone()))
            .collect();
        self.top = Arc::new(merge_top(&parts, 64));
        let available = mem_available();
        for q in &self.queues {
            let _ = q.tx.send(Control::Top {
                sources: self.top.clone(),
                system_available: available,
            });
        }
        for (shard, svc, fresh) in self.plugins.due(&self.registry) {
            if let Some(q) = self.queues.get(shard) {
                let msg = match fresh {
                    Fresh::Scheduler(i) => Control::Scheduler {
                        svc,
                        instance: Box::new(i),
                    },
                    Fresh::Defense(index, i) => Control::Defense {
                        svc,
                        index,
                        instance: Box::new(i),
                    },
                    Fresh::Persistence(i) => Control::Persistence {
                        svc,
                        instance: Box::new(i),
                    },
                };
                let _ = q.tx.send(msg);
            }
        }
        let samples = self.take_samples();
        if self.cfg.director.metrics_listen.is_some() {
            crate::metrics::update(&r, &self.list());
            crate::metrics::update_templates(&self.template_status(&r));
            crate::metrics::update_plugins(&r, &samples, &self.plugins.swaps);
            let top = self.top_view();
            crate::metrics::update_defense(&top, &mut self.top_shown);
        }
        for (i, q) in self.queues.iter_mut().enumerate() {
            if q.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let res = q.thread.take().map(|t| t.join());
                return Err(match res {
                    Some(Ok(Ok(_))) => format!("queue {i} stopped unexpectedly"),
                    Some(Ok(Err(e))) => format!("queue {i} failed: {e}"),
                    _ => format!("queue {i} panicked"),
                });
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        self.health.stop_all();
        for q in &self.queues {
            let _ = q.tx.send(Control::Stop);
        }
        for (i, q) in self.queues.iter_mut().enumerate() {
            if let Some(t) = q.thread.take() {
                match t.join() {
                    Ok(Ok(stats)) => info!(queue = i, ?stats, "queue stopped"),
                    Ok(Err(e)) => warn!(queue = i, "queue ended with an error: {e}"),
                    Err(_) => warn!(queue = i, "queue thread panicked"),
                }
            }
        }
        if let Some(mut r) = self.routes.take() {
            for e in r.remove_all() {
                warn!("routes: {e}");
            }
        }
    }
}

/// How `ringvs list --connections` shows a template's affinity key as its source: an
/// address with port 0 when the key fits in 32 bits (persist-netmask's keys are the masked
/// client address, so this reads like ipvsadm -Lnc), else the key in hex.
fn template_source(key: u64) -> String {
    match u32::try_from(key) {
        Ok(a) => format!("{}:0", std::net::Ipv4Addr::from(a)),
        Err(_) => format!("{key:#018x}:0"),
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes (0 if unreadable).
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Queue `id` of `n`: its share of the memory budget and what all queues share.
#[allow(clippy::too_many_arguments)]
fn shard_config(
    cfg: &Config,
    id: usize,
    n: usize,
    hash_key: HashKey,
    start: Instant,
    events: &crossbeam_channel::Sender<PluginEvent>,
    sources: &Arc<SourceSketch>,
    templates: &Arc<TemplateStore>,
) -> ShardConfig {
    ShardConfig {
        id,
        memory_limit: cfg.director.conn_memory_limit / n,
        hash_key,
        start,
        expire_nodest_conn: cfg.director.expire_nodest_conn,
        events: Some(events.clone()),
        sources: sources.clone(),
        queues: n,
        templates: templates.clone(),
    }
}

/// The persistence template store every queue shares (`director.template_memory_limit`).
fn template_store(cfg: &Config) -> Result<Arc<TemplateStore>, String> {
    let templates = TemplateStore::new(cfg.director.template_memory_limit, HashKey::random())
        .map_err(|e| format!("{}: director.{e}", cfg.path.display()))?;
    templates.set_expire_quiescent(cfg.director.expire_quiescent_template);
    Ok(Arc::new(templates))
}

/// What a daemon starts from: the registry, its plugins (compiled, checked and self-tested,
/// one instance per queue) and the first snapshot. Touches nothing outside the process.
fn initial(cfg: &Config) -> Result<(Registry, PluginManager, Snapshot), String> {
    let mut registry = Registry::new(&cfg.services).map_err(|e| e.to_string())?;
    let mut plugins = PluginManager::default();
    let loaded = plugins.load_config(cfg)?;
    let prepared = plugins.prepare(&registry, cfg.director.queues, &loaded)?;
    plugins.commit(loaded);
    let snap = plugins.snapshot(&mut registry, prepared);
    Ok((registry, plugins, snap))
}

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: Config,
        plugins: PluginManager,
        registry: Registry,
        queues: Vec<Queue>,
        events: crossbeam_channel::Receiver<PluginEvent>,
        sources: Arc<SourceSketch>,
        templates: Arc<TemplateStore>,
        started: Instant,
    ) -> Daemon {
        Daemon {
            cfg,
            plugins,
            events,
            steer_fd: None,
            steered: Vec::new(),
            registry,
            queues,
            started,
            routes: None,
            zero: ShardReport::default(),
            rates: RateTracker::default(),
            sources,
            templates,
            blocks: BlockList::default(),
            top: Arc::new(Vec::new()),
            top_shown: crate::metrics::TopShown::default(),
            health: crate::health::Monitor::new(tokio::runtime::Handle::try_current().ok()),
        }
    }

    /// A daemon whose `director.queues` queues are attached to no device: the caller drives
    /// the returned shards (e.g. with [`crate::io::mem::process_packets`], whose `poll`
    /// applies what the control plane sent). Everything else is the real daemon: the admin
    /// protocol, runtime edits, reloads and plugin swaps, with no privileges needed and no
    /// route, device or steering program touched. Tests drive the admin socket with it.
    /// (`connections` asks every queue and waits for its answer: it needs the shards polled
    /// meanwhile; `tick` is not run, so drained realservers are not collected.)
    pub fn detached(cfg: Config) -> Result<(Daemon, Vec<Shard>), String> {
        let start = Instant::now();
        let (registry, plugins, snap) = initial(&cfg)?;
        let snap = Arc::new(snap);
        let (events_tx, events) = crossbeam_channel::unbounded();
        let sources = Arc::new(SourceSketch::new());
        let templates = template_store(&cfg)?;
        let n = cfg.director.queues;
        let key = HashKey::random();
        let mut queues = Vec::with_capacity(n);
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded();
            let shard_cfg = shard_config(&cfg, i, n, key, start, &events_tx, &sources, &templates);
            let shard = Shard::new(shard_cfg, snap.clone(), Some(rx)).map_err(|e| e.to_string())?;
            queues.push(Queue {
                tx,
                shared: shard.shared(),
                thread: None,
            });
            shards.push(shard);
        }
        let d = Daemon::new(
            cfg, plugins, registry, queues, events, sources, templates, start,
        );
        Ok((d, shards))
    }
}

/// Starts the queues on the device's descriptors; waits until each is running.
fn start_queues(
    cfg: &Config,
    fds: Vec<OwnedFd>,
    snap: Arc<Snapshot>,
    start: Instant,
    events: crossbeam_channel::Sender<PluginEvent>,
    sources: Arc<SourceSketch>,
    templates: Arc<TemplateStore>,
) -> Result<Vec<Queue>, String> {
    let n = fds.len();
    let key = HashKey::random();
    let vnet = cfg.director.offload;
    let mut queues = Vec::with_capacity(n);
    for (i, fd) in fds.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shard_cfg = shard_config(cfg, i, n, key, start, &events, &sources, &templates);
        let mut shard = Shard::new(shard_cfg, snap.clone(), Some(rx)).map_err(|e| e.to_string())?;
        let shared = shard.shared();
        let pin = n > 1;
        let thread = std::thread::Builder::new()
            .name(format!("ringvs-q{i}"))
            .spawn(move || {
                if pin {
                    pin_to_cpu(i);
                }
                let opts = UringOptions::for_device(vnet);
                run_queue(fd.as_fd(), vnet, &opts, &mut shard)
            })
            .map_err(|e| format!("cannot start queue thread {i}: {e}"))?;
        queues.push(Queue {
            tx,
            shared,
            thread: Some(thread),
        });
    }
    // Wait until every queue has polled once (its ring is up) or one has failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = true;
        for (i, q) in queues.iter_mut().enumerate() {
            if q.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let res = q.thread.take().map(|t| t.join());
                for q in &queues {
                    let _ = q.tx.send(Control::Stop);
                }
                return Err(match res {
                    Some(Ok(Err(e))) => format!("queue {i} could not start: {e}"),
                    _ => format!("queue {i} could not start"),
                });
            }
            all &= q.shared.ready.load(std::sync::atomic::Ordering::Acquire);
        }
        if all {
            return Ok(queues);
        }
        if Instant::now() > deadline {
            for q in &queues {
                let _ = q.tx.send(Control::Stop);
            }
            return Err("queues did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the daemon until SIGTERM or SIGINT; `log_format` overrides `director.log_format`.
pub fn run(path: &Path, log_format: Option<config::LogFormat>) -> Result<(), DaemonError> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    super::logging::init(log_format.unwrap_or(cfg.director.log_format));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> Result<(), DaemonError> {
    let start = Instant::now();
    // Plugins are compiled, checked and self-tested before anything touches the network.
    let (registry, plugins, snap) = initial(&cfg)?;
    let snap = Arc::new(snap);
    let (events_tx, events) = crossbeam_channel::unbounded();
    let templates = template_store(&cfg)?;

    // Fail early, before touching the network.
    let listener = admin::bind(
        &cfg.director.admin_socket,
        cfg.director.admin_group.as_deref(),
    )?;
    if let Some(addr) = cfg.director.metrics_listen {
        crate::metrics::install(addr)?;
    }
    for p in routes::check_forwarding() {
        if cfg.director.routes == Routes::Auto {
            return Err(DaemonError(format!(
                "routes = \"auto\" needs forwarding: {p}"
            )));
        }
        warn!("{p}");
    }

    let tun = TunDevice::create(&TunOptions {
        name: cfg.director.device.clone(),
        queues: cfg.director.queues,
        vnet_hdr: cfg.director.offload,
        mtu: cfg.director.mtu,
        txqueuelen: None,
    })
    .map_err(|e| format!("cannot create device {}: {e}", cfg.director.device))?;
    for w in routes::device_sysctls(tun.name()) {
        warn!("{w}");
    }
    let device = tun.name().to_string();
    // With several queues, both directions of a flow must reach the same queue: steer on the
    // client endpoint before any queue runs.
    let mut steer_fd = None;
    let mut steered = Vec::new();
    if cfg.director.queues > 1 {
        let fd = tun.queue_fds()[0]
            .try_clone()
            .map_err(|e| format!("cannot duplicate a queue descriptor: {e}"))?;
        let mut services: Vec<_> = snap
            .services()
            .map(|s| (s.proto.number(), *s.vip.ip(), s.vip.port()))
            .collect();
        services.sort_unstable();
        let prog = steer::load(&steer::program(&services, cfg.director.queues as u32)).map_err(|e| {
            format!("director.queues = {} needs the TUN steering program: {e}; use queues = 1 or run as root with BPF allowed", cfg.director.queues)
        })?;
        attach_steering_bpf(fd.as_fd(), prog.as_fd())
            .map_err(|e| format!("cannot attach the steering program to {}: {e}", tun.name()))?;
        steer_fd = Some(fd);
        steered = services;
    }
    let sources = Arc::new(SourceSketch::new());
    let queues = start_queues(
        &cfg,
        tun.into_queues(),
        snap,
        start,
        events_tx,
        sources.clone(),
        templates.clone(),
    )?;

    let routes = (cfg.director.routes == Routes::Auto).then(|| AutoRoutes::new(&device));
    let mut daemon = Daemon::new(
        cfg, plugins, registry, queues, events, sources, templates, start,
    );
    daemon.steer_fd = steer_fd;
    daemon.steered = steered;
    daemon.routes = routes;
    daemon.sync_health();
    if let Err(e) = daemon.sync_routes() {
        daemon.shutdown();
        return Err(DaemonError(format!("cannot install routes: {e}")));
    }
    let table = daemon.report();
    info!(
        device = %device,
        queues = daemon.queues.len(),
        offload = daemon.cfg.director.offload,
        services = daemon.registry.services().count(),
        table_entries = table.capacity,
        bytes_per_entry = crate::conn::ConnTable::<std::net::Ipv4Addr>::ENTRY_BYTES,
        "ringvs running"
    );
    let socket_path: PathBuf = daemon.cfg.director.admin_socket.clone();
    let daemon = Arc::new(Mutex::new(daemon));
    let server = tokio::spawn(admin::serve(listener, daemon.clone()));
    if let Err(e) = notify::notify(&format!(
        "READY=1\nSTATUS=forwarding on {device}, admin socket {}",
        socket_path.display()
    )) {
        warn!("sd_notify: {e}");
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let outcome: Result<(), DaemonError> = loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = notify::notify(&notify::reloading());
                let d = daemon.clone();
                let res = tokio::task::spawn_blocking(move || d.lock().map_err(|_| "lock".to_string())?.reload()).await;
                match res {
                    Ok(Ok(m)) => info!("SIGHUP: {m}"),
                    Ok(Err(e)) => error!("SIGHUP: reload refused: {e}"),
                    Err(e) => error!("SIGHUP: {e}"),
                }
                let _ = notify::notify("READY=1");
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break Ok(()); }
            _ = int.recv() => { info!("SIGINT: stopping"); break Ok(()); }
            _ = tick.tick() => {
                let d = daemon.clone();
                let res = tokio::task::spawn_blocking(move || match d.lock() {
                    Ok(mut d) => d.tick(),
                    Err(_) => Err("daemon state poisoned".to_string()),
                }).await;
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => { error!("{e}"); break Err(DaemonError(e)); }
                    Err(e) => { break Err(DaemonError(e.to_string())); }
                }
            }
        }
    };
    let _ = notify::notify("STOPPING=1");
    server.abort();
    let _ = std::fs::remove_file(&socket_path);
    let d = daemon.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut d) = d.lock() {
            d.shutdown();
        }
    })
    .await;
    info!("ringvs stopped");
    outcome
}
