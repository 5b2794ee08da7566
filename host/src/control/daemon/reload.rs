//! Re-reading the config file, and switching a service's scheduler at runtime. Both prepare
//! everything on copies (plugins compiled and self-tested, per-queue instances created)
//! before anything is switched.

use super::super::admin::ReadAhead;
use super::super::plugins::{PathLoad, Prepared};
use super::super::registry::Registry;
use super::state::Daemon;
use crate::config::{self, Director};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

/// What a swap by path found behind a name loaded before.
enum Rebuild {
    /// The same build (sha256) as loaded.
    Unchanged(Arc<crate::plugin::Plugin>),
    /// A new build: the file, the old and the new sha256.
    Changed {
        path: PathBuf,
        old: [u8; 32],
        new: [u8; 32],
    },
}

/// How a reload runs (`ringvs reload --dry-run --keep-runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadOptions {
    /// Say what would change; change nothing.
    pub dry_run: bool,
    /// Keep runtime edits the file does not contradict (see `config::diff`).
    pub keep_runtime: bool,
}

/// Reloads done and refused, for the metrics.
#[derive(Debug, Default, Clone)]
pub struct ReloadStats {
    /// Reloads applied (SIGHUP, `ringvs reload`; not dry runs).
    pub ok: u64,
    /// Reloads refused (the file, a plugin, a key that cannot change).
    pub failed: u64,
    /// When the last reload was tried, seconds since the Unix epoch (0: none yet).
    pub last_unix: f64,
    /// Whether the last one was applied.
    pub last_ok: bool,
}

impl ReloadStats {
    fn record(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.last_ok = ok;
        self.last_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    }
}

/// How a reload treats `[director]`: the keys that differ between `d0` and `d1` but cannot
/// change while running (the reload is refused, naming them), and those it applies, in
/// words. Every key is one or the other: the destructuring below does not compile when a
/// key is added to [`Director`] until it is sorted here.
fn director_changes(d0: &Director, d1: &Director) -> (Vec<&'static str>, Vec<String>) {
    let Director {
        io,
        interfaces,
        xdp_mode,
        device,
        queues,
        conn_memory_limit,
        admin_socket,
        admin_group,
        metrics_listen,
        routes,
        offload,
        mtu,
        expire_nodest_conn,
        expire_quiescent_template,
        template_memory_limit,
        log_format,
        plugin_dirs,
        user,
        tunnel_source,
        tunnel_source6,
        stop_delay,
        queue_nice,
        sync,
    } = d1;
    let mut fixed = Vec::new();
    let mut refuse = |changed: bool, key: &'static str| {
        if changed {
            fixed.push(key);
        }
    };
    refuse(*device != d0.device, "director.device");
    refuse(*sync != d0.sync, "director.sync");
    refuse(*queues != d0.queues, "director.queues");
    refuse(
        *conn_memory_limit != d0.conn_memory_limit,
        "director.conn_memory_limit",
    );
    refuse(*offload != d0.offload, "director.offload");
    // The I/O backend and its XDP programs are set up at start.
    refuse(*io != d0.io, "director.io");
    refuse(*interfaces != d0.interfaces, "director.interfaces");
    refuse(*xdp_mode != d0.xdp_mode, "director.xdp_mode");
    refuse(*admin_socket != d0.admin_socket, "director.admin_socket");
    refuse(
        *metrics_listen != d0.metrics_listen,
        "director.metrics_listen",
    );
    refuse(*routes != d0.routes, "director.routes");
    refuse(
        *template_memory_limit != d0.template_memory_limit,
        "director.template_memory_limit",
    );
    // Set on the device at start.
    refuse(*mtu != d0.mtu, "director.mtu");
    // Every queue's table holds it from start.
    refuse(
        *expire_nodest_conn != d0.expire_nodest_conn,
        "director.expire_nodest_conn",
    );
    // The log subscriber is installed once (`ringvs run --log-format` overrides it).
    refuse(*log_format != d0.log_format, "director.log_format");
    // Root is given up once, after setup; it cannot be taken back.
    refuse(*user != d0.user, "director.user");
    // Set by each queue thread when it starts.
    refuse(*queue_nice != d0.queue_nice, "director.queue_nice");
    let mut applied = Vec::new();
    if *stop_delay != d0.stop_delay {
        applied.push(format!(
            "director.stop_delay {}s -> {stop_delay}s",
            d0.stop_delay
        ));
    }
    if *admin_group != d0.admin_group {
        let show = |g: &Option<String>| g.clone().unwrap_or_else(|| "none".into());
        applied.push(format!(
            "director.admin_group {} -> {}",
            show(&d0.admin_group),
            show(admin_group)
        ));
    }
    if *expire_quiescent_template != d0.expire_quiescent_template {
        applied.push(format!(
            "director.expire_quiescent_template {} -> {expire_quiescent_template}",
            d0.expire_quiescent_template
        ));
    }
    if *tunnel_source != d0.tunnel_source {
        let show = |a: &Option<std::net::Ipv4Addr>| a.map_or("auto".into(), |a| a.to_string());
        applied.push(format!(
            "director.tunnel_source {} -> {}",
            show(&d0.tunnel_source),
            show(tunnel_source)
        ));
    }
    if *tunnel_source6 != d0.tunnel_source6 {
        let show = |a: &Option<std::net::Ipv6Addr>| a.map_or("auto".into(), |a| a.to_string());
        applied.push(format!(
            "director.tunnel_source6 {} -> {}",
            show(&d0.tunnel_source6),
            show(tunnel_source6)
        ));
    }
    if *plugin_dirs != d0.plugin_dirs {
        applied.push(format!(
            "director.plugin_dirs {:?} -> {plugin_dirs:?}",
            d0.plugin_dirs
        ));
    }
    (fixed, applied)
}

/// What a reload says it did.
fn reload_message(changed: &[String], swapped: &[String], persist_swapped: &[String]) -> String {
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
    msg
}

impl Daemon {
    /// Re-reads the config file (SIGHUP). All or nothing: on any error the running
    /// configuration is untouched.
    pub fn reload(&mut self) -> Result<String, String> {
        self.reload_with(ReloadOptions::default())
    }

    /// Re-reads the config file; with `dry_run` says what that would change and changes
    /// nothing; with `keep_runtime` keeps the runtime edits the file leaves alone. The
    /// answer names the runtime edits the reload reverts (or keeps).
    pub fn reload_with(&mut self, o: ReloadOptions) -> Result<String, String> {
        let res = self.try_reload(o);
        if !o.dry_run {
            self.reloads.record(res.is_ok());
            match &res {
                Ok(m) => info!(keep_runtime = o.keep_runtime, "reload: {m}"),
                Err(e) => warn!("reload refused: {e}"),
            }
        }
        res
    }

    fn try_reload(&mut self, o: ReloadOptions) -> Result<String, String> {
        let new = config::load(&self.cfg.path).map_err(|e| e.to_string())?;
        let (fixed, applied) = director_changes(&self.cfg.director, &new.director);
        if !fixed.is_empty() {
            return Err(format!(
                "{}: {} cannot change while running (restart ringvs); nothing was applied",
                self.cfg.path.display(),
                fixed.join(", ")
            ));
        }
        super::super::admin::check_group(new.director.admin_group.as_deref())
            .map_err(|e| format!("{}: {e}; nothing was applied", self.cfg.path.display()))?;
        let plan = config::diff::plan(
            &self.registry.service_configs(),
            &self.cfg.services,
            &new.services,
            o.keep_runtime,
        );
        // Everything that can fail happens on copies first: plugins are compiled and
        // self-tested, per-queue instances created; only then is anything switched.
        let loaded = self.plugins.manager.load_config(&new)?;
        if o.dry_run {
            return Ok(self.dry_run_text(&plan, &applied, &loaded));
        }
        // The copy shares the realservers' state: put it back if anything below fails.
        let saved = self.registry.save_shared();
        let mut trial = self.registry.clone();
        let tried = trial
            .apply(&plan.services)
            .map_err(|e| e.to_string())
            .and_then(|changed| {
                let d = &new.director;
                crate::control::forwarding::resolve(&mut trial, d.tunnel_source, d.tunnel_source6)?;
                crate::control::forwarding::check_routed(
                    &trial,
                    new.director.io == crate::config::Io::AfXdp,
                )?;
                Ok(changed)
            })
            .and_then(|changed| {
                let prepared = self
                    .plugins
                    .manager
                    .prepare(&trial, self.queues.len(), &loaded)?;
                Ok((changed, prepared))
            })
            .and_then(|t| {
                // Last, as it changes the socket file: the admin group.
                if new.director.admin_group != self.cfg.director.admin_group {
                    if let Some(a) = &self.admin {
                        a.set_group(new.director.admin_group.as_deref())?;
                    }
                }
                Ok(t)
            });
        let (changed, prepared) = match tried {
            Ok(t) => t,
            Err(e) => {
                Registry::restore(saved);
                return Err(e);
            }
        };
        // Plugins whose file changed under the same name: both hashes, for the answer.
        let rebuilt: Vec<String> = loaded
            .iter()
            .filter_map(|(name, p)| {
                let old = self.plugins.manager.loaded.get(name)?;
                (old.sha256 != p.sha256).then(|| {
                    format!(
                        "plugin {name} reloaded: sha256 {} -> {}",
                        crate::plugin::hex(&old.sha256),
                        crate::plugin::hex(&p.sha256)
                    )
                })
            })
            .collect();
        let swapped = self.schedulers_swapped(&trial, &prepared);
        let persist_swapped = self.persistence_swapped(&trial, &prepared);
        self.registry = trial;
        self.plugins.manager.commit(loaded);
        self.plugins
            .templates
            .set_expire_quiescent(new.director.expire_quiescent_template);
        self.cfg = new;
        self.sync_health();
        let snap = self.plugins.manager.snapshot(&mut self.registry, prepared);
        self.broadcast(snap);
        self.sync_sorry();
        for s in swapped.iter().chain(&persist_swapped) {
            self.plugins.manager.count_swap(s);
        }
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        for c in plan.reverted() {
            warn!(change = %c.text, "reload reverted a runtime edit");
        }
        let mut msg = reload_message(&changed, &swapped, &persist_swapped);
        for r in &rebuilt {
            info!("reload: {r}");
            msg += &format!("; {r}");
        }
        if !applied.is_empty() {
            msg += &format!("; {}", applied.join("; "));
        }
        let list = |it: &mut dyn Iterator<Item = &config::diff::Change>| {
            it.map(|c| c.text.clone()).collect::<Vec<_>>().join("; ")
        };
        let reverted = list(&mut plan.reverted());
        if !reverted.is_empty() {
            msg += &format!(
                "; reverted runtime edits: {reverted} (`ringvs reload --keep-runtime` keeps them; `ringvs save` writes them out)"
            );
        }
        let kept = list(&mut plan.kept());
        if !kept.is_empty() {
            msg += &format!("; kept runtime edits: {kept}");
        }
        Ok(msg)
    }

    /// What a reload with `plan` would do, one change a line.
    fn dry_run_text(
        &self,
        plan: &config::diff::Plan,
        applied: &[String],
        loaded: &BTreeMap<String, Arc<crate::plugin::Plugin>>,
    ) -> String {
        let mut lines: Vec<String> = applied.iter().map(|a| format!("~ {a}")).collect();
        for (name, p) in loaded {
            match self.plugins.manager.loaded.get(name) {
                Some(old) if Arc::ptr_eq(old, p) => {}
                Some(_) => lines.push(format!(
                    "~ plugin {name}: reloaded ({} {}, sha256 {})",
                    p.kind.name(),
                    p.path.display(),
                    &crate::plugin::hex(&p.sha256)[..16]
                )),
                None => lines.push(format!(
                    "+ plugin {name}: {} {} sha256 {}",
                    p.kind.name(),
                    p.path.display(),
                    &crate::plugin::hex(&p.sha256)[..16]
                )),
            }
        }
        lines.extend(plan.changes.iter().map(|c| c.to_string()));
        let reverted = plan.reverted().count();
        let changes = lines.len() - plan.kept().count();
        let head = if lines.is_empty() {
            format!(
                "dry run: {} is what runs; a reload would change nothing",
                self.cfg.path.display()
            )
        } else {
            format!(
                "dry run: a reload of {} would make {changes} change(s), {reverted} of them reverting runtime edits; nothing was applied",
                self.cfg.path.display(),
            )
        };
        std::iter::once(head)
            .chain(lines)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Services of `trial` whose scheduler is another than now: another name, or another
    /// plugin behind it.
    fn schedulers_swapped(&self, trial: &Registry, prepared: &Prepared) -> Vec<String> {
        trial
            .services()
            .filter(|e| {
                let Some(old) = self.registry.service(&e.cfg.name) else {
                    return false;
                };
                let old_plugin = self
                    .plugins
                    .manager
                    .prepared(e.id)
                    .map(|p| p.plugin.clone());
                let new_plugin = prepared.sched(e.id).map(|p| p.plugin.clone());
                old.cfg.scheduler != e.cfg.scheduler
                    || match (old_plugin, new_plugin) {
                        (Some(a), Some(b)) => !Arc::ptr_eq(&a, &b),
                        (a, b) => a.is_some() != b.is_some(),
                    }
            })
            .map(|e| e.cfg.name.clone())
            .collect()
    }

    /// Services of `trial` whose persistence plugin is swapped: another plugin, or the same
    /// with a new config (the queues take new instances; the templates stay).
    fn persistence_swapped(&self, trial: &Registry, prepared: &Prepared) -> Vec<String> {
        trial
            .services()
            .filter(|e| {
                let (Some(old), Some(new)) = (
                    self.plugins.manager.prepared_persistence(e.id),
                    prepared.persistence(e.id),
                ) else {
                    return false;
                };
                !Arc::ptr_eq(old, new)
            })
            .map(|e| e.cfg.name.clone())
            .collect()
    }

    /// Switches a service's scheduler at runtime to a built-in, a loaded plugin, or a
    /// plugin file. The plugin is compiled, self-tested and instantiated for every queue
    /// before anything changes; queues switch between two new flows and existing flows keep
    /// their realservers. The config file is not edited: a reload applies the file again.
    /// A file target arrives read (`ahead`, see [`crate::control::admin::Handler::read_ahead`]).
    pub fn swap(
        &mut self,
        service: &str,
        target: &str,
        ahead: Option<ReadAhead>,
    ) -> Result<String, String> {
        let from = self
            .registry
            .service(service)
            .ok_or_else(|| format!("no service named {service:?}"))?
            .cfg
            .scheduler
            .clone();
        let mut extra = BTreeMap::new();
        let (name, rebuilt) = self.scheduler_named(target, ahead, &mut extra)?;
        if let Some(Rebuild::Unchanged(p)) = &rebuilt {
            if name == from {
                return Ok(format!(
                    "{service}: scheduler {name} unchanged ({} sha256 {})",
                    p.path.display(),
                    crate::plugin::hex(&p.sha256)
                ));
            }
        }
        let mut trial = self.registry.clone();
        trial
            .set_scheduler(service, &name)
            .map_err(|e| e.to_string())?;
        let prepared = self
            .plugins
            .manager
            .prepare(&trial, self.queues.len(), &extra)?;
        self.registry = trial;
        self.plugins.manager.commit(extra);
        let snap = self.plugins.manager.snapshot(&mut self.registry, prepared);
        self.broadcast(snap);
        self.plugins.manager.count_swap(service);
        let mut msg = format!(
            "{service}: scheduler {from} -> {name} on {} queue(s)",
            self.queues.len()
        );
        if let Some(Rebuild::Changed { path, old, new }) = &rebuilt {
            let (old, new) = (crate::plugin::hex(old), crate::plugin::hex(new));
            info!(service, from = %from, to = %name, path = %path.display(), old_sha256 = %old, new_sha256 = %new, "scheduler swapped to a rebuilt plugin");
            msg += &format!("; {} rebuilt: sha256 {old} -> {new}", path.display());
        } else {
            info!(service, from = %from, to = %name, "scheduler swapped");
        }
        Ok(msg)
    }

    /// The scheduler `target` names: a built-in, a loaded scheduler plugin, or a `.wasm`
    /// file, read already (`ahead`) and loaded into `extra`, not yet committed, unless it is
    /// the build already loaded under its name; for a file, whether it was loaded before and
    /// changed since. A file whose name (its stem) the config pins with `sha256` must match
    /// the pin.
    fn scheduler_named(
        &mut self,
        target: &str,
        ahead: Option<ReadAhead>,
        extra: &mut BTreeMap<String, Arc<crate::plugin::Plugin>>,
    ) -> Result<(String, Option<Rebuild>), String> {
        let name = self.scheduler_named_not_a_file(target, extra)?;
        if let Some(name) = name {
            return Ok((name, None));
        }
        if let Some(file) = ahead {
            let stem = file.path.file_stem().and_then(|s| s.to_str());
            let pin = stem
                .and_then(|n| self.cfg.plugins.get(n))
                .and_then(|d| d.sha256);
            return Ok(
                match self
                    .plugins
                    .manager
                    .load_path(&file.path, file.bytes, pin)?
                {
                    PathLoad::New(p) => {
                        let n = p.name.to_string();
                        extra.insert(n.clone(), p);
                        (n, None)
                    }
                    PathLoad::Unchanged(p) => (p.name.to_string(), Some(Rebuild::Unchanged(p))),
                    PathLoad::Rebuilt { plugin, old } => {
                        let n = plugin.name.to_string();
                        let change = Rebuild::Changed {
                            path: plugin.path.clone(),
                            old,
                            new: plugin.sha256,
                        };
                        extra.insert(n.clone(), plugin);
                        (n, Some(change))
                    }
                },
            );
        }
        Err(format!(
            "{target:?} is neither a built-in scheduler ({}), a loaded plugin ({}), nor a .wasm file",
            config::BUILTIN_SCHEDULERS.join(", "),
            self.plugins
                .manager
                .loaded
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// A built-in, a loaded plugin or a catalogue scheduler called `target`; `None` if it is
    /// none of those (a file, perhaps).
    fn scheduler_named_not_a_file(
        &mut self,
        target: &str,
        extra: &mut BTreeMap<String, Arc<crate::plugin::Plugin>>,
    ) -> Result<Option<String>, String> {
        if config::BUILTIN_SCHEDULERS.contains(&target) {
            return Ok(Some(target.to_string()));
        }
        if let Some(p) = self.plugins.manager.loaded.get(target) {
            if p.kind != crate::plugin::Kind::Scheduler {
                return Err(format!(
                    "plugin {target:?} is a {} plugin, not a scheduler",
                    p.kind.name()
                ));
            }
            return Ok(Some(target.to_string()));
        }
        if crate::plugin::catalogue::get(target).is_some() {
            let dirs = self.cfg.director.catalogue_dirs();
            let mut found = self.plugins.manager.load_catalogue(&[target], &dirs)?;
            let p = found
                .remove(target)
                .ok_or_else(|| format!("catalogue plugin {target:?} did not load"))?;
            if p.kind != crate::plugin::Kind::Scheduler {
                return Err(format!(
                    "catalogue plugin {target:?} is a {} plugin, not a scheduler",
                    p.kind.name()
                ));
            }
            extra.insert(target.to_string(), p);
            return Ok(Some(target.to_string()));
        }
        Ok(None)
    }
}

impl Daemon {
    /// The running state as a config file (`ringvs save`, ipvsadm-save): the director as
    /// running, the plugins (catalogue plugins used by name need no entry; plugins loaded
    /// at runtime by path get an entry pinned to their sha256 and are named in the header),
    /// and the services as the registry holds them, runtime edits included.
    pub fn save(&self) -> Result<String, String> {
        let services = self.registry.service_configs();
        let used = |name: &str| {
            services.iter().any(|s| {
                s.scheduler == name
                    || s.persistence.as_ref().is_some_and(|p| p.plugin == name)
                    || s.defense.iter().any(|d| d == name)
            })
        };
        let mut plugins = self.cfg.plugins.clone();
        let mut runtime = Vec::new();
        for (name, p) in &self.plugins.manager.loaded {
            if plugins.contains_key(name) || !used(name) {
                continue;
            }
            if crate::plugin::catalogue::get(name).is_some() {
                runtime.push(format!(
                    "#   {name}: catalogue {} plugin {}, named at runtime (a catalogue name needs no entry)",
                    p.kind.name(),
                    p.path.display()
                ));
                continue;
            }
            runtime.push(format!(
                "#   {name}: {} plugin {}, swapped in by path at runtime (its entry below pins its sha256)",
                p.kind.name(),
                p.path.display()
            ));
            plugins.insert(
                name.clone(),
                config::PluginDecl {
                    name: name.clone(),
                    path: p.path.clone(),
                    sha256: Some(p.sha256),
                    config: serde_json::Value::Object(Default::default()),
                    source: config::PluginSource::Path,
                },
            );
        }
        let body = config::save::to_toml(&self.cfg.director, &plugins, &services)?;
        let mut head = format!(
            "# ringvs save: the running state of ringvs {}, whose config file is {}.\n\
             # `ringvs check -c FILE` accepts this file; as the config file (copied over it and\n\
             # reloaded, or given to `ringvs run -c`) it reproduces the services, realservers,\n\
             # weights, thresholds, health checks and plugins running now, runtime edits included.\n",
            crate::LONG_VERSION,
            self.cfg.path.display()
        );
        if runtime.is_empty() {
            head += "# Runtime-only plugins: none.\n";
        } else {
            head += &format!(
                "# Runtime-only plugins (not in {}):\n{}\n",
                self.cfg.path.display(),
                runtime.join("\n")
            );
        }
        Ok(format!("{head}\n{body}"))
    }
}
