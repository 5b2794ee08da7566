//! Re-reading the config file, and switching a service's scheduler at runtime. Both prepare
//! everything on copies (plugins compiled and self-tested, per-queue instances created)
//! before anything is switched.

use super::super::plugins::Prepared;
use super::super::registry::Registry;
use super::state::Daemon;
use crate::config::{self, Director};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// The `director` settings that differ between `d0` and `d1` but cannot change while
/// running.
fn fixed_changes(d0: &Director, d1: &Director) -> Vec<&'static str> {
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
    fixed
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
    /// Re-reads the config file. All or nothing: on any error the running configuration is
    /// untouched.
    pub fn reload(&mut self) -> Result<String, String> {
        let new = config::load(&self.cfg.path).map_err(|e| e.to_string())?;
        let fixed = fixed_changes(&self.cfg.director, &new.director);
        if !fixed.is_empty() {
            return Err(format!(
                "{}: {} cannot change while running (restart ringvs); nothing was applied",
                self.cfg.path.display(),
                fixed.join(", ")
            ));
        }
        // Everything that can fail happens on copies first: plugins are compiled and
        // self-tested, per-queue instances created; only then is anything switched.
        let loaded = self.plugins.manager.load_config(&new)?;
        // The copy shares the realservers' state: put it back if anything below fails.
        let saved = self.registry.save_shared();
        let mut trial = self.registry.clone();
        let tried = trial
            .apply(&new.services)
            .map_err(|e| e.to_string())
            .and_then(|changed| {
                let prepared = self
                    .plugins
                    .manager
                    .prepare(&trial, self.queues.len(), &loaded)?;
                Ok((changed, prepared))
            });
        let (changed, prepared) = match tried {
            Ok(t) => t,
            Err(e) => {
                Registry::restore(saved);
                return Err(e);
            }
        };
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
        for s in swapped.iter().chain(&persist_swapped) {
            self.plugins.manager.count_swap(s);
        }
        if let Err(e) = self.sync_routes() {
            warn!("routes: {e}");
        }
        Ok(reload_message(&changed, &swapped, &persist_swapped))
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
    pub fn swap(&mut self, service: &str, target: &str) -> Result<String, String> {
        let from = self
            .registry
            .service(service)
            .ok_or_else(|| format!("no service named {service:?}"))?
            .cfg
            .scheduler
            .clone();
        let mut extra = BTreeMap::new();
        let name = self.scheduler_named(target, &mut extra)?;
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
        info!(service, from = %from, to = %name, "scheduler swapped");
        Ok(format!(
            "{service}: scheduler {from} -> {name} on {} queue(s)",
            self.queues.len()
        ))
    }

    /// The scheduler `target` names: a built-in, a loaded scheduler plugin, or a `.wasm`
    /// file (loaded into `extra`, not yet committed).
    fn scheduler_named(
        &mut self,
        target: &str,
        extra: &mut BTreeMap<String, Arc<crate::plugin::Plugin>>,
    ) -> Result<String, String> {
        if config::BUILTIN_SCHEDULERS.contains(&target) {
            return Ok(target.to_string());
        }
        if let Some(p) = self.plugins.manager.loaded.get(target) {
            if p.kind != crate::plugin::Kind::Scheduler {
                return Err(format!(
                    "plugin {target:?} is a {} plugin, not a scheduler",
                    p.kind.name()
                ));
            }
            return Ok(target.to_string());
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
            return Ok(target.to_string());
        }
        if target.ends_with(".wasm") || Path::new(target).is_file() {
            let p = self.plugins.manager.load_path(Path::new(target))?;
            let n = p.name.to_string();
            extra.insert(n.clone(), p);
            return Ok(n);
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
}
