//! The running daemon's state, in parts, and what every change ends with: a snapshot to the
//! queues, health checkers and routes that match the registry. Also the once-a-second tick
//! and the shutdown.

use super::super::plugins::PluginManager;
use super::super::registry::{EditError, Registry};
use super::super::routes::AutoRoutes;
use super::queues::Queues;
use super::rates::Stats;
use crate::config::Config;
use crate::conn::TICKS_PER_SEC;
use crate::dataplane::blocks::{Block, BlockList};
use crate::dataplane::service::Snapshot;
use crate::dataplane::sources::{merge_top, SourceCount, SourceSketch};
use crate::dataplane::stats::ShardReport;
use crate::dataplane::templates::TemplateStore;
use crate::dataplane::{Control, PluginEvent};
use crate::plugin::Plugin;
use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::{error, info, warn};

/// The plugins and what comes back from them.
pub(super) struct Plugins {
    /// Loaded plugins and the instances prepared for the queues.
    pub(super) manager: PluginManager,
    /// From the queues: faults, retired instances, block requests.
    pub(super) events: Receiver<PluginEvent>,
    /// The persistence templates every queue shares.
    pub(super) templates: Arc<TemplateStore>,
}

/// Clients as the director sees them: per-source counts, the heaviest sources, the blocks
/// defenses asked for.
pub(super) struct Sources {
    /// Per-source counts, shared with the queues.
    pub(super) sketch: Arc<SourceSketch>,
    /// The director's top sources of the last second.
    pub(super) top: Arc<Vec<SourceCount>>,
    /// Active blocks.
    pub(super) blocks: BlockList,
}

impl Sources {
    pub(super) fn new(sketch: Arc<SourceSketch>) -> Sources {
        Sources {
            sketch,
            top: Arc::new(Vec::new()),
            blocks: BlockList::default(),
        }
    }
}

/// The running daemon's state, shared by the control loop and the admin socket.
pub struct Daemon {
    pub(super) cfg: Config,
    pub(super) registry: Registry,
    pub(super) queues: Queues,
    pub(super) plugins: Plugins,
    pub(super) sources: Sources,
    pub(super) stats: Stats,
    pub(super) health: crate::health::Monitor,
    /// Routes installed with `director.routes = "auto"`.
    pub(super) routes: Option<AutoRoutes>,
    /// IPv6 on the TUN device: on while an IPv6 service exists (`None`: not set yet).
    pub(super) device_ipv6: Option<bool>,
    /// Who may use the admin socket (changed on reload by `director.admin_group`).
    pub(super) admin: Option<super::super::admin::Access>,
    /// Reloads done and refused.
    pub(super) reloads: super::reload::ReloadStats,
    /// With `[director.sync]`: the sync thread.
    pub(super) sync: Option<crate::sync::node::Node>,
    /// After SIGTERM with `director.stop_delay`: when the data plane stops.
    pub(super) stopping: Option<std::time::Instant>,
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

impl Daemon {
    pub(super) fn new(
        cfg: Config,
        registry: Registry,
        queues: Queues,
        plugins: Plugins,
        sources: Sources,
    ) -> Daemon {
        Daemon {
            cfg,
            registry,
            queues,
            plugins,
            sources,
            stats: Stats::default(),
            health: crate::health::Monitor::new(tokio::runtime::Handle::try_current().ok()),
            routes: None,
            device_ipv6: None,
            admin: None,
            reloads: Default::default(),
            sync: None,
            stopping: None,
        }
    }

    /// Gives the daemon the admin socket's access handle, so that a reload can change
    /// `director.admin_group` (the real daemon does this at start; tests with a detached
    /// daemon do it after binding).
    pub fn attach_admin(&mut self, access: super::super::admin::Access) {
        self.admin = Some(access);
    }

    /// Every queue's report, merged.
    pub fn report(&self) -> ShardReport {
        self.queues.report()
    }

    /// Hands the queues a new snapshot (the steering program first).
    pub(super) fn broadcast(&mut self, snap: Snapshot) {
        if let Err(e) = self.queues.update_steering(&snap) {
            error!("steering: {e}; flows of new services may be dropped until it succeeds");
        }
        let snap = Arc::new(snap);
        self.queues.send_all(|| Control::Snapshot(snap.clone()));
        for name in self
            .plugins
            .manager
            .unload_unused(&self.cfg, &self.registry)
        {
            info!(plugin = %name, "plugin {name} unloaded: no service uses it and the config does not declare it");
        }
    }

    /// Installs and removes routes to match the registry (`director.routes = "auto"`).
    /// Also turns IPv6 on the TUN device on or off as IPv6 services come and go.
    pub(super) fn sync_routes(&mut self) -> Result<(), String> {
        // IPv6 on the device for IPv6 services, and for the outer headers of IPv6 tunnels.
        let ipv6 = self.cfg.director.io == crate::config::Io::Tun
            && (self.registry.services().any(|s| s.cfg.vip.is_ipv6())
                || self.registry.first_tunnelled6().is_some());
        let tun = self.cfg.director.io == crate::config::Io::Tun;
        if tun && Some(ipv6) != self.device_ipv6 {
            if ipv6 {
                if let Some(p) = super::super::routes::check_forwarding6() {
                    warn!("{p}");
                }
            }
            if let Err(e) = super::super::routes::device_ipv6(&self.cfg.director.device, ipv6) {
                warn!("{e}");
            }
            self.device_ipv6 = Some(ipv6);
        }
        let Some(r) = self.routes.as_mut() else {
            return Ok(());
        };
        let vips: BTreeSet<_> = self.registry.services().map(|s| s.cfg.vip.ip()).collect();
        let servers: BTreeSet<_> = self
            .registry
            .services()
            .flat_map(|s| s.cfg.servers.iter().map(|x| x.addr.ip()))
            .collect();
        r.sync(&vips, &servers).map_err(|e| e.to_string())
    }

    /// Sorry servers on or off to match their services' realservers
    /// ([`Registry::update_sorry`]); each change is logged.
    pub(super) fn sync_sorry(&mut self) {
        for (service, addr, on) in self.registry.update_sorry() {
            if on {
                warn!(service = %service, sorry_server = %addr, "sorry server ON: no realserver can take new flows");
            } else {
                info!(service = %service, sorry_server = %addr, "sorry server off: a realserver serves again");
            }
        }
    }

    /// Weights from dynamic script checks into the realservers' shared state.
    fn sync_dynamic_weights(&mut self) {
        for (service, server, w) in self.health.dynamic_weights() {
            if self.registry.set_dynamic_weight(&service, server, w) {
                info!(service = %service, server = %server, weight = w, "weight set by a dynamic check");
            }
        }
    }

    /// Starts, stops or keeps health checkers to match the registry.
    pub(super) fn sync_health(&mut self) {
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

    /// A new snapshot for the queues after an edit that loads no plugin.
    pub(super) fn republish(&mut self) {
        let manager = &self.plugins.manager;
        match manager.prepare(&self.registry, self.queues.len(), &Default::default()) {
            Ok(prepared) => {
                let snap = self.plugins.manager.snapshot(&mut self.registry, prepared);
                self.broadcast(snap);
            }
            Err(e) => error!("cannot publish the configuration: {e}"),
        }
    }

    /// Applies an edit that may need new plugin instances: on a copy first, and only if
    /// every instance can be prepared does the copy become the registry. A copy shares the
    /// realservers' state (weights, flags, thresholds): on failure it is put back as it was.
    /// `extra` are plugins the edit needs that are not loaded yet (catalogue plugins named
    /// at runtime): they are committed with the edit.
    pub(super) fn edit_registry(
        &mut self,
        extra: BTreeMap<String, Arc<Plugin>>,
        edit: impl FnOnce(&mut Registry) -> Result<(), EditError>,
    ) -> Result<(), String> {
        let saved = self.registry.save_shared();
        let mut trial = self.registry.clone();
        let configured = self.cfg.director.tunnel_source;
        let configured6 = self.cfg.director.tunnel_source6;
        let l2 = self.cfg.director.io == crate::config::Io::AfXdp;
        let prepared = edit(&mut trial)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::control::forwarding::resolve(&mut trial, configured, configured6))
            .and_then(|()| crate::control::forwarding::check_routed(&trial, l2))
            .and_then(|()| {
                self.plugins
                    .manager
                    .prepare(&trial, self.queues.len(), &extra)
            });
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                Registry::restore(saved);
                return Err(e);
            }
        };
        self.registry = trial;
        self.plugins.manager.commit(extra);
        let snap = self.plugins.manager.snapshot(&mut self.registry, prepared);
        self.broadcast(snap);
        self.sync_health();
        self.sync_sorry();
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        Ok(())
    }

    /// After an edit made on the registry itself (no plugin to prepare): health checks, a
    /// snapshot, routes. The answer `"ok"`.
    pub(super) fn edited(&mut self) -> serde_json::Value {
        self.sync_health();
        self.republish();
        self.sync_sorry();
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        serde_json::Value::String("ok".into())
    }

    /// Once a second: rates, metrics, garbage collection, queue health.
    pub(super) fn tick(&mut self) -> Result<(), String> {
        let r = self.queues.report();
        self.stats.rates.sample(&r);
        if self.registry.collect_garbage() {
            self.republish();
        }
        // A freed slot's counters go on in the queues: `list --stats` starts its next
        // service from here.
        let (services, dests) = self.registry.take_freed();
        for sid in services {
            self.stats.zero_service(&r, sid as usize, &[]);
        }
        let dests: Vec<usize> = dests.into_iter().map(|d| d as usize).collect();
        self.stats.zero_dests(&r, &dests);
        self.sync_dynamic_weights();
        self.sync_sorry();
        self.take_events();
        self.update_top();
        self.deliver_fresh();
        if self.cfg.director.metrics_listen.is_some() {
            crate::metrics::update(&r, &self.list());
            crate::metrics::update_templates(&self.template_status(&r));
            if let Some(h) = self.ha_status_held(r.held) {
                crate::metrics::update_sync(&h);
            }
            crate::metrics::update_io(self.cfg.director.io.label(), &self.queues.io());
            let samples = self.queues.take_samples();
            crate::metrics::update_plugins(&r, samples, &self.plugins.manager.swaps);
            crate::metrics::plugin_memory(self.plugins.manager.memory_in_use());
            crate::metrics::update_plugin_logs(&self.plugins.manager.log_counters());
            let top = self.top_view();
            crate::metrics::update_defense(&top, &mut self.stats.top_shown);
            let (services, backends) = self.traffic_rows(&r);
            crate::metrics::traffic::update(&mut self.stats.totals, &services, &backends);
            let l = &self.reloads;
            crate::metrics::traffic::update_reloads(l.ok, l.failed, l.last_unix, l.last_ok);
            // Gauges not set for 10 s disappear: the build info is set every second too.
            crate::metrics::traffic::build_info();
        }
        self.queues.check_threads()
    }

    /// Plugin events: retired instances are dropped here, off the data path; poisoned ones
    /// are replaced after their backoff; blocks are added, removed and expired, and the
    /// queues get the new list if it changed.
    fn take_events(&mut self) {
        let now = self.queues.now_tick();
        let blocks = &mut self.sources.blocks;
        let mut blocks_changed = blocks.expire(now);
        while let Ok(ev) = self.plugins.events.try_recv() {
            match ev {
                PluginEvent::Block { req, by } => {
                    // Bounded below the wrapping clock's horizon (a block of 3.4 years at most).
                    let span = req
                        .secs
                        .saturating_mul(TICKS_PER_SEC)
                        .min(crate::conn::MAX_STEP);
                    let until = now.wrapping_add(span);
                    info!(plugin = %by, prefix = %format!("{}/{}", req.addr, req.len), secs = req.secs, mode = ?req.mode, "source blocked");
                    let mode = req.mode;
                    blocks.insert(req.svc, req.addr, req.len, Block { until, mode, by });
                    blocks_changed = true;
                }
                PluginEvent::Unblock { svc, addr, len } => {
                    blocks_changed |= blocks.remove(svc, addr, len)
                }
                other => self.plugins.manager.on_event(other),
            }
        }
        if blocks_changed {
            let b = Arc::new(blocks.clone());
            self.queues.send_all(|| Control::Blocks(b.clone()));
        }
    }

    /// Per-source rates roll over; the queues' top talkers merge into the director's, which
    /// every queue gets back with the memory the system has available.
    fn update_top(&mut self) {
        self.sources.sketch.rotate();
        self.sources.top = Arc::new(merge_top(&self.queues.tops(), 64));
        let available = mem_available();
        let top = &self.sources.top;
        self.queues.send_all(|| Control::Top {
            sources: top.clone(),
            system_available: available,
        });
    }

    /// Fresh instances for poisoned ones, to the queues that wait for them.
    fn deliver_fresh(&mut self) {
        for (at, instance) in self.plugins.manager.due(&self.registry) {
            let msg = Control::Fresh {
                svc: at.svc,
                role: at.role,
                instance,
            };
            self.queues.send(at.shard, msg);
        }
    }

    /// Stops the health checks and the queues, and removes the routes it installed.
    pub(super) fn shutdown(&mut self) {
        if let Some(mut n) = self.sync.take() {
            n.stop();
        }
        self.health.stop_all();
        self.queues.stop();
        if let Some(mut r) = self.routes.take() {
            for e in r.remove_all() {
                warn!("routes: {e}");
            }
        }
    }
}
