//! The admin protocol: [`Handler::handle`] hands each request to one function of its own.
//! Edits are checked completely before anything changes; what changes ends with a snapshot
//! to the queues, health checkers and routes to match (see `state`).

use super::super::admin::{Handler, ReadAhead};
use super::super::protocol::Request;
use super::super::registry::{EditError, ServiceEntry};
use super::state::Daemon;
use crate::config::{self, ServiceConfig, ServiceEdit};
use crate::plugin::Plugin;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::info;

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address:port (\"10.77.1.1:80\", \"[fd77::1]:80\")"))
}

fn json<T: serde::Serialize>(v: T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// True if a `plugin-swap` target names a file rather than a scheduler by name: it ends in
/// `.wasm`, has a `/`, or exists (relative to the daemon's directory).
fn swap_target_is_path(target: &str) -> bool {
    !config::BUILTIN_SCHEDULERS.contains(&target)
        && (target.ends_with(".wasm")
            || target.contains('/')
            || std::fs::symlink_metadata(target).is_ok())
}

impl Handler for Daemon {
    /// A `plugin-swap` to a file reads it here, off the daemon's lock, with the checks of
    /// [`crate::plugin::read_plugin_file`] (a regular file, at most
    /// [`crate::plugin::MAX_PLUGIN_BYTES`]).
    fn read_ahead(req: &Request) -> Result<Option<ReadAhead>, String> {
        match req {
            Request::PluginSwap { target, .. } if swap_target_is_path(target) => {
                let path = std::path::PathBuf::from(target);
                let bytes = crate::plugin::read_plugin_file(&path).map_err(|e| e.to_string())?;
                Ok(Some(ReadAhead { path, bytes }))
            }
            _ => Ok(None),
        }
    }

    /// Handles one admin request.
    fn handle(&mut self, req: Request, ahead: Option<ReadAhead>) -> Result<Value, String> {
        match req {
            Request::Status {} => json(self.status()),
            Request::List {} => json(self.list()),
            Request::Connections { max } => {
                json(self.connections(max.unwrap_or(10_000).min(1_000_000)))
            }
            Request::Reload {
                dry_run,
                keep_runtime,
            } => self
                .reload_with(super::reload::ReloadOptions {
                    dry_run,
                    keep_runtime,
                })
                .map(Value::String),
            Request::Save {} => self.save().map(Value::String),
            Request::PluginSwap { service, target } => {
                self.swap(&service, &target, ahead).map(Value::String)
            }
            Request::Plugins {} => json(self.plugin_list()),
            Request::Top {} => json(self.top_view()),
            Request::Zero { service } => self.on_zero(service.as_deref()),
            Request::ServerAdd {
                service,
                addr,
                weight,
                upper,
                lower,
                forward,
            } => self.on_server_add(&service, &addr, weight, (upper, lower), forward.as_deref()),
            Request::ServerRemove {
                service,
                addr,
                expire,
            } => self.on_server_remove(&service, &addr, expire),
            Request::ServerWeight {
                service,
                addr,
                weight,
            } => self.on_server_weight(&service, &addr, weight),
            Request::ServiceAdd { name, edit } => self.on_service_add(&name, edit),
            Request::ServiceEdit { name, edit } => self.on_service_edit(&name, edit),
            Request::ServiceRemove { name, expire } => self.on_service_remove(&name, expire),
            Request::Ha { role } => json(self.on_ha(role.as_deref())?),
        }
    }
}

impl Daemon {
    /// `ha`: sync's state; with a role, switch to it first. Becoming master (or active)
    /// makes every held entry live in every queue.
    fn on_ha(&mut self, role: Option<&str>) -> Result<crate::control::protocol::HaResult, String> {
        use crate::config::SyncRole;
        let Some(node) = &self.sync else {
            return Err(
                "connection sync is off: configure [director.sync] (docs/HA.md)".to_string(),
            );
        };
        let link = node.link.clone();
        if let Some(r) = role {
            let r = SyncRole::parse(r)
                .ok_or_else(|| format!("unknown role {r:?}: expected master, backup or active"))?;
            let was = link.role();
            link.set_role(r);
            if r != SyncRole::Backup {
                self.queues.send_all(|| crate::dataplane::Control::Promote);
            }
            if r != was {
                tracing::info!(
                    from = was.name(),
                    to = r.name(),
                    "sync role: {} -> {}",
                    was.name(),
                    r.name()
                );
            }
        }
        self.ha_status()
            .ok_or_else(|| "connection sync is off".to_string())
    }

    /// Sync's role, peers and counters; `None` when sync is off.
    pub fn ha_status(&self) -> Option<crate::control::protocol::HaResult> {
        self.ha_status_held(self.queues.report().held)
    }

    /// [`Daemon::ha_status`] with the held entries already counted (the tick has the
    /// queues' merged report at hand).
    pub(super) fn ha_status_held(&self, held: u64) -> Option<crate::control::protocol::HaResult> {
        use std::sync::atomic::Ordering::Relaxed;
        let (node, cfg) = (self.sync.as_ref()?, self.cfg.director.sync.as_ref()?);
        let link = &node.link;
        let st = &link.stats;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        Some(crate::control::protocol::HaResult {
            role: link.role().name().to_string(),
            id: cfg.id,
            listen: node.local.to_string(),
            peers: node.peers(),
            held,
            lag_ms: n(&st.lag_us) as f64 / 1000.0,
            queued: n(&st.queued),
            queue_full: n(&st.queue_full),
            sent_entries: n(&st.sent_entries),
            sent_messages: n(&st.sent_messages),
            send_errors: n(&st.send_errors),
            received_messages: n(&st.received_messages),
            received_entries: n(&st.received_entries),
            applied: n(&st.applied),
            ignored: n(&st.ignored),
            lost_messages: n(&st.lost),
            rejected: crate::sync::Reject::ALL
                .iter()
                .zip(&st.rejected)
                .map(|(r, c)| (r.label().to_string(), n(c)))
                .collect(),
            bulk_sent: n(&st.bulk_sent),
            bulk_received: n(&st.bulk_received),
        })
    }

    /// `zero`: the statistics `list` shows start again from the queues' counters now, for
    /// every service or for one and its realservers.
    fn on_zero(&mut self, service: Option<&str>) -> Result<Value, String> {
        let r = self.report();
        match service {
            None => self.stats.zero_all(r),
            Some(name) => {
                let e = self
                    .registry
                    .service(name)
                    .ok_or_else(|| format!("no service named {name:?}"))?;
                let dests: Vec<usize> = e.dests.iter().map(|d| d.id as usize).collect();
                self.stats.zero_service(&r, e.id as usize, &dests);
            }
        }
        Ok("zeroed".into())
    }

    /// `server-add`: a realserver with its weight (default 1) and connection thresholds
    /// `(upper, lower)` (default 0).
    fn on_server_add(
        &mut self,
        service: &str,
        a: &str,
        weight: Option<u64>,
        (upper, lower): (Option<u32>, Option<u32>),
        forward: Option<&str>,
    ) -> Result<Value, String> {
        let w = weight.unwrap_or(1);
        let w = config::check_weight(w).ok_or_else(|| EditError::BadWeight(w).to_string())?;
        let forward = forward
            .map(config::Forward::parse)
            .transpose()
            .map_err(|m| format!("forward: {m}"))?;
        // A bare address takes the service's port (what a tunnelled or directly routed
        // server needs).
        let vip_port = self.registry.service(service).map(|e| e.cfg.vip.port());
        let bare = a
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(a);
        let text = match (bare.parse::<std::net::IpAddr>(), vip_port) {
            (Ok(ip), Some(port)) => std::net::SocketAddr::new(ip, port).to_string(),
            _ => a.to_string(),
        };
        let addr = config::server_endpoint(&text).map_err(|e| e.to_string())?;
        let server = config::ServerConfig {
            upper: upper.unwrap_or(0),
            lower: lower.unwrap_or(0),
            forward,
            ..config::ServerConfig::new(addr, w)
        };
        // On a copy, with the forwarding checks (tunnel source, directly connected), as
        // every edit that may add a tunnelled or routed server.
        self.edit_registry(Default::default(), |r| r.add_server(service, server))?;
        Ok(Value::String("ok".into()))
    }

    /// `server-remove`: its connections drain, or with `expire` end on their next packet
    /// (also for a realserver already draining).
    fn on_server_remove(&mut self, service: &str, a: &str, expire: bool) -> Result<Value, String> {
        let a = addr(a)?;
        match self.registry.remove_server(service, a) {
            Ok(()) => {}
            // `--expire` on a realserver already draining expires its connections.
            Err(EditError::UnknownServer(..))
                if expire && self.registry.expire_removed(service, Some(a)) > 0 =>
            {
                return Ok("ok".into())
            }
            Err(e) => return Err(e.to_string()),
        }
        if expire {
            self.registry.expire_removed(service, Some(a));
        }
        info!(service = %service, server = %a, expire, "server removed");
        Ok(self.edited())
    }

    /// `server-weight`.
    fn on_server_weight(&mut self, service: &str, a: &str, weight: u64) -> Result<Value, String> {
        self.registry
            .set_weight(service, addr(a)?, weight)
            .map_err(|e| e.to_string())?;
        Ok(self.edited())
    }

    /// `service-add`: validated as a `[[service]]` of the config file, with no realservers.
    fn on_service_add(&mut self, name: &str, edit: ServiceEdit) -> Result<Value, String> {
        let known = |n: &str| self.plugins.manager.loaded.contains_key(n);
        let cfg = config::new_service(name, edit, &known).map_err(|e| e.to_string())?;
        let extra = self.catalogue_for(&cfg)?;
        self.check_plugin_kinds(&cfg, &extra)?;
        self.check_not_draining(&cfg)?;
        let (proto, vip, sched) = (cfg.proto.name(), cfg.vip, cfg.scheduler.clone());
        self.edit_registry(extra, |r| r.add_service(cfg))?;
        info!(service = %name, proto, vip = %vip, scheduler = %sched, "service added");
        Ok("ok".into())
    }

    /// `service-edit`: only the fields given change; connections are kept.
    fn on_service_edit(&mut self, name: &str, edit: ServiceEdit) -> Result<Value, String> {
        let base = self
            .registry
            .service(name)
            .ok_or_else(|| EditError::UnknownService(name.to_string()).to_string())?
            .cfg
            .clone();
        let known = |n: &str| self.plugins.manager.loaded.contains_key(n);
        let cfg = config::edit_service(&base, edit, &known).map_err(|e| e.to_string())?;
        if cfg == base {
            return Ok("unchanged".into());
        }
        let extra = self.catalogue_for(&cfg)?;
        self.check_plugin_kinds(&cfg, &extra)?;
        let swapped = cfg.scheduler != base.scheduler;
        let (from, to) = (base.scheduler.clone(), cfg.scheduler.clone());
        self.edit_registry(extra, |r| r.edit_service(cfg))?;
        if swapped {
            self.plugins.manager.count_swap(name);
            info!(service = %name, from = %from, to = %to, "scheduler swapped");
        }
        info!(service = %name, "service edited");
        Ok("ok".into())
    }

    /// `service-remove`: its connections drain, or with `expire` end on their next packet
    /// (also for a service already draining).
    fn on_service_remove(&mut self, name: &str, expire: bool) -> Result<Value, String> {
        match self.registry.remove_service(name) {
            Ok(()) => {}
            // `--expire` on a service already draining expires its connections.
            Err(EditError::UnknownService(_))
                if expire && self.registry.expire_removed(name, None) > 0 =>
            {
                return Ok("ok".into())
            }
            Err(e) => return Err(e.to_string()),
        }
        if expire {
            self.registry.expire_removed(name, None);
        }
        info!(service = %name, expire, "service removed");
        Ok(self.edited())
    }

    /// A new service must not take the name or the virtual address of a removed service
    /// whose connections are still draining: the queues match a connection to its service,
    /// so those connections would be cut. The same name at the same address is the service
    /// coming back, and keeps them.
    fn check_not_draining(&self, cfg: &ServiceConfig) -> Result<(), String> {
        let same_vip = |e: &ServiceEntry| e.cfg.proto == cfg.proto && e.cfg.vip == cfg.vip;
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

    /// The catalogue plugins a service names (scheduler, persistence, defenses) that are
    /// not loaded yet, loaded from the config's catalogue directories (not committed: the
    /// edit does that if it succeeds).
    fn catalogue_for(
        &mut self,
        cfg: &ServiceConfig,
    ) -> Result<BTreeMap<String, Arc<Plugin>>, String> {
        let mut names = vec![cfg.scheduler.as_str()];
        names.extend(cfg.persistence.iter().map(|p| p.plugin.as_str()));
        names.extend(cfg.defense.iter().map(String::as_str));
        let dirs = self.cfg.director.catalogue_dirs();
        self.plugins
            .manager
            .load_catalogue(&names, &dirs)
            .map_err(|e| format!("service {:?}: {e}", cfg.name))
    }

    /// A service's scheduler, persistence and defenses must be plugins of the right kind,
    /// loaded or in `extra`.
    fn check_plugin_kinds(
        &self,
        cfg: &ServiceConfig,
        extra: &BTreeMap<String, Arc<Plugin>>,
    ) -> Result<(), String> {
        let want = std::iter::once((&cfg.scheduler, crate::plugin::Kind::Scheduler))
            .filter(|(s, _)| !config::BUILTIN_SCHEDULERS.contains(&s.as_str()))
            .chain(
                cfg.persistence
                    .iter()
                    .map(|p| (&p.plugin, crate::plugin::Kind::Persistence)),
            )
            .chain(
                cfg.defense
                    .iter()
                    .map(|d| (d, crate::plugin::Kind::Defense)),
            );
        for (name, kind) in want {
            let found = self
                .plugins
                .manager
                .loaded
                .get(name.as_str())
                .or_else(|| extra.get(name.as_str()));
            match found {
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
}
