//! The control plane's side of plugins: loading (with the sha256 pin and a self-test),
//! re-using unchanged plugins across reloads, preparing one instance per queue off the data
//! path, re-instantiating poisoned ones with backoff, and counting swaps.

use super::registry::{Registry, ServiceEntry};
use crate::config::{Config, PluginDecl, BUILTIN_SCHEDULERS};
use crate::dataplane::sched::PluginSched;
use crate::dataplane::service::Snapshot;
use crate::dataplane::PluginEvent;
use crate::plugin::{Kind, Plugin, Runtime, RuntimeOptions, SchedulerInstance, ServerInfo};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Longest wait before re-instantiating a poisoned plugin.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A plugin that has not faulted for this long starts its backoff over.
const BACKOFF_RESET: Duration = Duration::from_secs(300);

/// A re-instantiation waiting for its time.
struct Retry {
    due: Instant,
    shard: usize,
    svc: u16,
    plugin: Arc<Plugin>,
}

/// Plugins as the daemon knows them.
#[derive(Default)]
pub struct PluginManager {
    runtime: Option<Arc<Runtime>>,
    /// Loaded plugins by name.
    pub loaded: BTreeMap<String, Arc<Plugin>>,
    prepared: HashMap<u16, Arc<PluginSched>>,
    pending: Vec<Retry>,
    backoff: HashMap<(u16, usize), (u32, Instant)>,
    /// Swaps per service name.
    pub swaps: BTreeMap<String, u64>,
}

/// How each declared plugin is used by the services (its kind follows).
pub fn usage(cfg: &Config) -> Result<HashMap<String, Kind>, String> {
    let mut used: HashMap<String, Kind> = HashMap::new();
    let mut note = |name: &str, kind: Kind, svc: &str| -> Result<(), String> {
        match used.insert(name.to_string(), kind) {
            Some(k) if k != kind => Err(format!(
                "{}: plugin {name:?} is used as a {} and, by service {svc:?}, as a {}",
                cfg.path.display(),
                k.name(),
                kind.name()
            )),
            _ => Ok(()),
        }
    };
    for s in &cfg.services {
        if !BUILTIN_SCHEDULERS.contains(&s.scheduler.as_str()) {
            note(&s.scheduler, Kind::Scheduler, &s.name)?;
        }
        if let Some(p) = &s.persistence {
            note(&p.plugin, Kind::Persistence, &s.name)?;
        }
        for d in &s.defense {
            note(d, Kind::Defense, &s.name)?;
        }
    }
    Ok(used)
}

/// The servers of a registry entry, in the order its snapshot lists them.
pub fn server_infos_of(e: &ServiceEntry) -> Vec<ServerInfo> {
    e.dests
        .iter()
        .map(|d| ServerInfo {
            addr: d.addr,
            weight: d.state.weight(),
        })
        .collect()
}

fn sha256_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

impl PluginManager {
    /// The shared runtime, built on first use.
    pub fn runtime(&mut self) -> Result<Arc<Runtime>, String> {
        if let Some(r) = &self.runtime {
            return Ok(r.clone());
        }
        let r = Runtime::new(RuntimeOptions::default()).map_err(|e| e.to_string())?;
        self.runtime = Some(r.clone());
        Ok(r)
    }

    /// Loads every plugin `cfg` declares, re-using those already loaded from the same bytes
    /// with the same configuration. Changes nothing; `commit` installs the result.
    pub fn load_config(&mut self, cfg: &Config) -> Result<BTreeMap<String, Arc<Plugin>>, String> {
        let used = usage(cfg)?;
        let mut out = BTreeMap::new();
        for (name, decl) in &cfg.plugins {
            let plugin = self
                .load_decl(name, decl, used.get(name).copied())
                .map_err(|e| format!("{}: {e}", cfg.path.display()))?;
            out.insert(name.clone(), plugin);
        }
        Ok(out)
    }

    fn load_decl(
        &mut self,
        name: &str,
        decl: &PluginDecl,
        kind: Option<Kind>,
    ) -> Result<Arc<Plugin>, String> {
        let flat = crate::plugin::runtime_flatten(&decl.config);
        if let Some(old) = self.loaded.get(name) {
            if old.path == decl.path
                && old.config == flat
                && sha256_of(&decl.path) == Some(old.sha256)
                && decl.sha256.is_none_or(|s| s == old.sha256)
                && kind.is_none_or(|k| k == old.kind)
            {
                return Ok(old.clone());
            }
        }
        let rt = self.runtime()?;
        rt.load(name, &decl.path, decl.sha256, &decl.config, kind)
            .map_err(|e| format!("plugins.{name}: {e}"))
    }

    /// Loads a scheduler from a file for `ringvs plugin swap SERVICE PATH` (no config).
    pub fn load_path(&mut self, path: &Path) -> Result<Arc<Plugin>, String> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: not a file name", path.display()))?
            .to_string();
        if let Some(p) = self.loaded.get(&name) {
            if p.path != path {
                return Err(format!(
                    "a plugin named {name:?} is already loaded from {}; swap by that name or rename the file",
                    p.path.display()
                ));
            }
        }
        let rt = self.runtime()?;
        rt.load(
            &name,
            path,
            None,
            &serde_json::json!({}),
            Some(Kind::Scheduler),
        )
        .map_err(|e| e.to_string())
    }

    /// Installs a loaded set (after everything else of a reload succeeded). Plugins loaded
    /// by path for swaps stay.
    pub fn commit(&mut self, plugins: BTreeMap<String, Arc<Plugin>>) {
        for (k, v) in plugins {
            self.loaded.insert(k, v);
        }
    }

    /// The prepared plugin scheduler of a service, if any.
    pub fn prepared(&self, svc: u16) -> Option<&Arc<PluginSched>> {
        self.prepared.get(&svc)
    }

    /// Prepares per-queue instances for every service whose scheduler is a plugin and whose
    /// plugin changed; re-uses the rest. Fails (changing nothing) if any instance cannot be
    /// created.
    pub fn prepare(
        &self,
        registry: &Registry,
        queues: usize,
        loaded: &BTreeMap<String, Arc<Plugin>>,
    ) -> Result<HashMap<u16, Arc<PluginSched>>, String> {
        let mut out = HashMap::new();
        for e in registry.all_services() {
            if BUILTIN_SCHEDULERS.contains(&e.cfg.scheduler.as_str()) {
                continue;
            }
            if e.removed {
                continue;
            }
            let plugin = loaded
                .get(&e.cfg.scheduler)
                .or_else(|| self.loaded.get(&e.cfg.scheduler))
                .ok_or_else(|| {
                    format!(
                        "service {:?}: scheduler plugin {:?} is not loaded",
                        e.cfg.name, e.cfg.scheduler
                    )
                })?
                .clone();
            if let Some(p) = self.prepared.get(&e.id) {
                if Arc::ptr_eq(&p.plugin, &plugin) {
                    out.insert(e.id, p.clone());
                    continue;
                }
            }
            let mut instances = Vec::with_capacity(queues);
            for _ in 0..queues {
                instances.push(Some(self.instance(&plugin, e)?));
            }
            out.insert(
                e.id,
                Arc::new(PluginSched {
                    plugin,
                    instances: Mutex::new(instances),
                }),
            );
        }
        Ok(out)
    }

    fn instance(
        &self,
        plugin: &Arc<Plugin>,
        e: &ServiceEntry,
    ) -> Result<SchedulerInstance, String> {
        let mut inst = SchedulerInstance::new(plugin)
            .map_err(|err| format!("plugin {}: {err}", plugin.name))?;
        inst.servers_changed(&server_infos_of(e))
            .map_err(|f| format!("plugin {}: servers-changed: {f}", plugin.name))?;
        Ok(inst)
    }

    /// The snapshot with `prepared` plugin schedulers; `prepared` becomes current.
    pub fn snapshot(
        &mut self,
        registry: &mut Registry,
        prepared: HashMap<u16, Arc<PluginSched>>,
    ) -> Snapshot {
        let snap = registry.snapshot_with(&mut |e| prepared.get(&e.id).cloned());
        self.prepared = prepared;
        snap
    }

    /// Handles an event from a queue.
    pub fn on_event(&mut self, ev: PluginEvent) {
        match ev {
            PluginEvent::Retire(inst) => drop(inst),
            PluginEvent::NeedScheduler {
                shard,
                svc,
                plugin,
                fault,
            } => {
                let now = Instant::now();
                let entry = self.backoff.entry((svc, shard)).or_insert((0, now));
                if now.duration_since(entry.1) > BACKOFF_RESET {
                    entry.0 = 0;
                }
                let wait = if fault.is_some() {
                    Duration::from_secs(1u64 << entry.0.min(6)).min(MAX_BACKOFF)
                } else {
                    Duration::ZERO
                };
                if let Some(f) = &fault {
                    entry.0 += 1;
                    entry.1 = now;
                    warn!(plugin = %plugin.name, queue = shard, service = svc, "plugin fault ({f}); falling back, new instance in {}s", wait.as_secs());
                }
                self.pending.retain(|r| !(r.svc == svc && r.shard == shard));
                self.pending.push(Retry {
                    due: now + wait,
                    shard,
                    svc,
                    plugin,
                });
            }
        }
    }

    /// Instances due now: (queue, service, instance). Failed attempts are rescheduled.
    pub fn due(&mut self, registry: &Registry) -> Vec<(usize, u16, SchedulerInstance)> {
        let now = Instant::now();
        let (due, later): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|r| r.due <= now);
        self.pending = later;
        let mut out = Vec::new();
        for r in due {
            let Some(e) = registry.all_services().iter().find(|e| e.id == r.svc) else {
                continue;
            };
            match self.instance(&r.plugin, e) {
                Ok(inst) => {
                    info!(plugin = %r.plugin.name, queue = r.shard, service = %e.cfg.name, "new plugin instance");
                    out.push((r.shard, r.svc, inst));
                }
                Err(err) => {
                    warn!("{err}; retrying");
                    self.on_event(PluginEvent::NeedScheduler {
                        shard: r.shard,
                        svc: r.svc,
                        plugin: r.plugin,
                        fault: Some(crate::plugin::Fault::bad_return(err)),
                    });
                }
            }
        }
        out
    }

    /// Counts a swap of a service's scheduler.
    pub fn count_swap(&mut self, service: &str) {
        *self.swaps.entry(service.to_string()).or_default() += 1;
    }
}
