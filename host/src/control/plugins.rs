//! The control plane's side of plugins: loading (with the sha256 pin and a self-test),
//! re-using unchanged plugins across reloads, preparing one instance per queue off the data
//! path, re-instantiating poisoned ones with backoff, and counting swaps.

use super::registry::{Registry, ServiceEntry, ServicePlugins};
use crate::config::{Config, PluginDecl, BUILTIN_SCHEDULERS};
use crate::dataplane::defense::{validate_levels, PluginDefense};
use crate::dataplane::persist::PluginPersist;
use crate::dataplane::policy::{Instance, PluginEvent, Prepared as PreparedPolicy, Role, SlotId};
use crate::dataplane::sched::PluginSched;
use crate::dataplane::service::Snapshot;
use crate::plugin::catalogue;
use crate::plugin::{
    DefenseInstance, Fault, Kind, PersistenceInstance, Plugin, Runtime, RuntimeOptions,
    SchedulerInstance, ServerInfo,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Longest wait before re-instantiating a poisoned plugin.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A plugin that has not faulted for this long starts its backoff over.
const BACKOFF_RESET: Duration = Duration::from_secs(300);

/// A re-instantiation waiting for its time.
struct Retry {
    due: Instant,
    at: SlotId,
    plugin: Arc<Plugin>,
}

/// Plugin schedulers, defenses and persistence plugins prepared for a snapshot.
#[derive(Default)]
pub struct Prepared {
    scheds: HashMap<u16, Arc<PluginSched>>,
    defenses: HashMap<u16, Vec<Arc<PluginDefense>>>,
    persists: HashMap<u16, Arc<PluginPersist>>,
}

impl Prepared {
    /// The prepared scheduler of a service.
    pub fn sched(&self, svc: u16) -> Option<&Arc<PluginSched>> {
        self.scheds.get(&svc)
    }

    /// The prepared persistence plugin of a service.
    pub fn persistence(&self, svc: u16) -> Option<&Arc<PluginPersist>> {
        self.persists.get(&svc)
    }
}

/// A service's `persistence.config`, flattened as the plugin receives it.
fn persist_config(e: &ServiceEntry) -> Vec<(String, String)> {
    e.cfg
        .persistence
        .as_ref()
        .map(|p| crate::plugin::runtime_flatten(&p.config))
        .unwrap_or_default()
}

/// What [`PluginManager::load_path`] found.
pub enum PathLoad {
    /// A plugin not loaded before.
    New(Arc<Plugin>),
    /// The file is the build already loaded under its name (same sha256).
    Unchanged(Arc<Plugin>),
    /// The file changed since it was loaded: the new build, and the old one's sha256.
    Rebuilt {
        /// The new build.
        plugin: Arc<Plugin>,
        /// The sha256 of the build it replaces.
        old: [u8; 32],
    },
}

/// Plugins as the daemon knows them.
#[derive(Default)]
pub struct PluginManager {
    runtime: Option<Arc<Runtime>>,
    /// Loaded plugins by name.
    pub loaded: BTreeMap<String, Arc<Plugin>>,
    prepared: Prepared,
    pending: Vec<Retry>,
    backoff: HashMap<SlotId, (u32, Instant)>,
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
    crate::plugin::read_plugin_file(path)
        .ok()
        .map(|b| Sha256::digest(&b).into())
}

impl PluginManager {
    /// Linear memory of every live plugin instance, bytes.
    pub fn memory_in_use(&self) -> usize {
        self.runtime.as_ref().map_or(0, |r| r.memory_in_use())
    }

    /// Every plugin name's `log` counters (none before the runtime exists).
    pub fn log_counters(&self) -> Vec<(Arc<str>, Arc<crate::plugin::LogCounters>)> {
        self.runtime
            .as_ref()
            .map_or_else(Vec::new, |r| r.log_counters())
    }

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
                .map_err(|e| {
                    let hint = match decl.source {
                        crate::config::PluginSource::Implicit => format!(
                            " (a catalogue plugin used by name gets an empty config: give it one in a [plugins.{name}] entry, `config = {{ … }}`, no path needed)"
                        ),
                        _ => String::new(),
                    };
                    format!("{}: {e}{hint}", cfg.path.display())
                })?;
            out.insert(name.clone(), plugin);
        }
        // A persistence plugin is configured per service: each service's config must be
        // one its plugin accepts (the self-test above used `[plugins.NAME].config`).
        for (i, s) in cfg.services.iter().enumerate() {
            let Some(p) = &s.persistence else { continue };
            let Some(plugin) = out.get(&p.plugin) else {
                continue;
            };
            let flat = crate::plugin::runtime_flatten(&p.config);
            PersistenceInstance::new(plugin, &flat).map_err(|e| {
                format!(
                    "{}: key `service[{i}].persistence.config` (plugin {:?}): {e}",
                    cfg.path.display(),
                    p.plugin
                )
            })?;
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

    /// Loads the catalogue plugins among `names` that are neither built-ins nor loaded yet,
    /// from `dirs`, with an empty config (for runtime edits and swaps). Changes nothing;
    /// `commit` installs the result.
    pub fn load_catalogue(
        &mut self,
        names: &[&str],
        dirs: &[std::path::PathBuf],
    ) -> Result<BTreeMap<String, Arc<Plugin>>, String> {
        let mut out = BTreeMap::new();
        for &name in names {
            if BUILTIN_SCHEDULERS.contains(&name)
                || self.loaded.contains_key(name)
                || out.contains_key(name)
            {
                continue;
            }
            let Some(entry) = catalogue::get(name) else {
                continue;
            };
            let path =
                catalogue::locate(entry, dirs).ok_or_else(|| catalogue::not_found(entry, dirs))?;
            let rt = self.runtime()?;
            let plugin = rt
                .load(name, &path, None, &serde_json::json!({}), Some(entry.kind))
                .map_err(|e| format!("catalogue plugin {name}: {e}{}", config_hint(name, &e)))?;
            out.insert(name.to_string(), plugin);
        }
        Ok(out)
    }

    /// Loads a scheduler for `ringvs plugin swap SERVICE PATH` (no config) from the file's
    /// `bytes`, read already; `pin` is the sha256 the config pins for its name, if any. A
    /// file loaded before under its name: the same bytes (sha256) give the loaded plugin
    /// back, other bytes are compiled as a new build.
    pub fn load_path(
        &mut self,
        path: &Path,
        bytes: Vec<u8>,
        pin: Option<[u8; 32]>,
    ) -> Result<PathLoad, String> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: not a file name", path.display()))?
            .to_string();
        let old = self.loaded.get(&name).cloned();
        if let Some(p) = &old {
            if p.path != path {
                return Err(format!(
                    "a plugin named {name:?} is already loaded from {}; swap by that name or rename the file",
                    p.path.display()
                ));
            }
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            if p.kind == Kind::Scheduler && digest == p.sha256 {
                return Ok(PathLoad::Unchanged(p.clone()));
            }
        }
        let rt = self.runtime()?;
        let plugin = rt
            .load_bytes(
                &name,
                path,
                bytes,
                pin,
                &serde_json::json!({}),
                Some(Kind::Scheduler),
            )
            .map_err(|e| e.to_string())?;
        Ok(match old {
            Some(old) => PathLoad::Rebuilt {
                plugin,
                old: old.sha256,
            },
            None => PathLoad::New(plugin),
        })
    }

    /// Installs a loaded set (after everything else of a reload succeeded). Plugins loaded
    /// by path for swaps stay.
    pub fn commit(&mut self, plugins: BTreeMap<String, Arc<Plugin>>) {
        for (k, v) in plugins {
            self.loaded.insert(k, v);
        }
    }

    /// Forgets the loaded plugins nothing needs any more: neither declared in the config
    /// (`[plugins.NAME]`) nor named by a service of `registry` (draining ones included) as its
    /// scheduler, persistence or defense — a catalogue plugin a swap left behind, a build
    /// loaded by path and swapped out again. Their compiled code is freed once the last
    /// queue instance of them is gone (instances hold it). Returns the names forgotten.
    pub fn unload_unused(&mut self, cfg: &Config, registry: &Registry) -> Vec<String> {
        let declared = |n: &str| {
            cfg.plugins
                .get(n)
                .is_some_and(|d| d.source != crate::config::PluginSource::Implicit)
        };
        let used = |n: &str| {
            registry.all_services().iter().any(|e| {
                e.cfg.scheduler == n
                    || e.cfg.persistence.as_ref().is_some_and(|p| p.plugin == n)
                    || e.cfg.defense.iter().any(|d| d == n)
            })
        };
        let gone: Vec<String> = self
            .loaded
            .keys()
            .filter(|n| !declared(n) && !used(n))
            .cloned()
            .collect();
        for n in &gone {
            self.loaded.remove(n);
        }
        gone
    }

    /// The prepared plugin scheduler of a service, if any.
    pub fn prepared(&self, svc: u16) -> Option<&Arc<PluginSched>> {
        self.prepared.scheds.get(&svc)
    }

    /// The prepared persistence plugin of a service, if any.
    pub fn prepared_persistence(&self, svc: u16) -> Option<&Arc<PluginPersist>> {
        self.prepared.persists.get(&svc)
    }

    /// Prepares per-queue instances for every service whose scheduler or defenses are
    /// plugins that changed; re-uses the rest. Fails (changing nothing) if any instance
    /// cannot be created or a defense hands over invalid state tables.
    pub fn prepare(
        &self,
        registry: &Registry,
        queues: usize,
        loaded: &BTreeMap<String, Arc<Plugin>>,
    ) -> Result<Prepared, String> {
        let mut out = Prepared::default();
        let find = |name: &str, svc: &str| {
            loaded
                .get(name)
                .or_else(|| self.loaded.get(name))
                .cloned()
                .ok_or_else(|| format!("service {svc:?}: plugin {name:?} is not loaded"))
        };
        for e in registry.all_services() {
            if e.removed {
                continue;
            }
            if !BUILTIN_SCHEDULERS.contains(&e.cfg.scheduler.as_str()) {
                let plugin = find(&e.cfg.scheduler, &e.cfg.name)?;
                match self.prepared.scheds.get(&e.id) {
                    Some(p) if Arc::ptr_eq(&p.plugin, &plugin) => {
                        out.scheds.insert(e.id, p.clone());
                    }
                    _ => {
                        let instances = per_queue(queues, || self.instance(&plugin, e))?;
                        out.scheds
                            .insert(e.id, Arc::new(PluginSched::new(plugin, (), instances)));
                    }
                }
            }
            let mut defenses = Vec::new();
            for (i, name) in e.cfg.defense.iter().enumerate() {
                let plugin = find(name, &e.cfg.name)?;
                if plugin.kind != Kind::Defense {
                    return Err(format!(
                        "service {:?}: plugin {name:?} is a {} plugin, not a defense",
                        e.cfg.name,
                        plugin.kind.name()
                    ));
                }
                match self.prepared.defenses.get(&e.id).and_then(|v| v.get(i)) {
                    Some(p) if Arc::ptr_eq(&p.plugin, &plugin) => defenses.push(p.clone()),
                    _ => defenses.push(Arc::new(self.defense(&plugin, queues)?)),
                }
            }
            if !defenses.is_empty() {
                out.defenses.insert(e.id, defenses);
            }
            if let Some(pc) = &e.cfg.persistence {
                let plugin = find(&pc.plugin, &e.cfg.name)?;
                if plugin.kind != Kind::Persistence {
                    return Err(format!(
                        "service {:?}: plugin {:?} is a {} plugin, not a persistence plugin",
                        e.cfg.name,
                        pc.plugin,
                        plugin.kind.name()
                    ));
                }
                let config = persist_config(e);
                match self.prepared.persists.get(&e.id) {
                    // Same plugin, same config: the queues keep their instances.
                    Some(p) if Arc::ptr_eq(&p.plugin, &plugin) && p.extra == config => {
                        out.persists.insert(e.id, p.clone());
                    }
                    _ => {
                        let instances = per_queue(queues, || {
                            PersistenceInstance::new(&plugin, &config).map_err(|err| {
                                format!(
                                    "service {:?}: persistence plugin {}: {err}",
                                    e.cfg.name, plugin.name
                                )
                            })
                        })?;
                        out.persists.insert(
                            e.id,
                            Arc::new(PluginPersist::new(plugin, config, instances)),
                        );
                    }
                }
            }
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

    /// A defense's levels (asked once, checked) and one instance per queue.
    fn defense(&self, plugin: &Arc<Plugin>, queues: usize) -> Result<PluginDefense, String> {
        let name = &plugin.name;
        let new = || DefenseInstance::new(plugin).map_err(|err| format!("plugin {name}: {err}"));
        let mut first = new()?;
        let tables = first
            .levels()
            .map_err(|f| format!("plugin {name}: levels: {f}"))?;
        let levels = validate_levels(name, tables).map_err(|err| err.to_string())?;
        let mut instances = vec![first];
        instances.extend(per_queue(queues.saturating_sub(1), new)?);
        Ok(PreparedPolicy::new(
            plugin.clone(),
            levels.into(),
            instances,
        ))
    }

    /// The snapshot with `prepared` plugins; `prepared` becomes current.
    pub fn snapshot(&mut self, registry: &mut Registry, prepared: Prepared) -> Snapshot {
        let snap = registry.snapshot_with(&mut |e| ServicePlugins {
            sched: prepared.scheds.get(&e.id).cloned(),
            defenses: prepared.defenses.get(&e.id).cloned().unwrap_or_default(),
            persistence: prepared.persists.get(&e.id).cloned(),
        });
        self.prepared = prepared;
        snap
    }

    /// Handles an event from a queue (blocks are the caller's to apply).
    pub fn on_event(&mut self, ev: PluginEvent) {
        match ev {
            PluginEvent::Retire(inst) => drop(inst),
            PluginEvent::Need { at, plugin, fault } => self.need(at, plugin, fault),
            PluginEvent::Block { .. } | PluginEvent::Unblock { .. } => {}
        }
    }

    fn need(&mut self, at: SlotId, plugin: Arc<Plugin>, fault: Option<Fault>) {
        let now = Instant::now();
        let entry = self.backoff.entry(at).or_insert((0, now));
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
            warn!(plugin = %plugin.name, queue = at.shard, service = at.svc, role = ?at.role,
                "plugin fault ({f}); falling back, new instance in {}s", wait.as_secs());
        }
        self.pending.retain(|r| r.at != at);
        self.pending.push(Retry {
            due: now + wait,
            at,
            plugin,
        });
    }

    /// Instances due now, with the slot each is for. Failed attempts are rescheduled.
    pub fn due(&mut self, registry: &Registry) -> Vec<(SlotId, Instance)> {
        let now = Instant::now();
        let (due, later): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|r| r.due <= now);
        self.pending = later;
        let mut out = Vec::new();
        for r in due {
            let Some(e) = registry.all_services().iter().find(|e| e.id == r.at.svc) else {
                continue;
            };
            let named =
                |err: crate::plugin::PluginError| format!("plugin {}: {err}", r.plugin.name);
            let made = match r.at.role {
                Role::Scheduler => self.instance(&r.plugin, e).map(Instance::Scheduler),
                Role::Defense(_) => DefenseInstance::new(&r.plugin)
                    .map(Instance::Defense)
                    .map_err(named),
                Role::Persistence => PersistenceInstance::new(&r.plugin, &persist_config(e))
                    .map(Instance::Persistence)
                    .map_err(named),
            };
            match made {
                Ok(inst) => {
                    info!(plugin = %r.plugin.name, queue = r.at.shard, service = %e.cfg.name, "new plugin instance");
                    out.push((r.at, inst));
                }
                Err(err) => {
                    warn!("{err}; retrying");
                    self.need(r.at, r.plugin, Some(Fault::bad_return(err)));
                }
            }
        }
        out
    }

    /// Counts a swap of a service's scheduler or persistence plugin.
    pub fn count_swap(&mut self, service: &str) {
        *self.swaps.entry(service.to_string()).or_default() += 1;
    }
}

/// For a catalogue plugin loaded at runtime with an empty config that refused it: how to
/// give it one.
fn config_hint(name: &str, e: &crate::plugin::PluginError) -> String {
    match e {
        crate::plugin::PluginError::ConfigRejected(_) => format!(
            " (a catalogue plugin named at runtime gets an empty config: declare it in the config file, [plugins.{name}] config = {{ … }}, and reload)"
        ),
        _ => String::new(),
    }
}

/// `n` instances made by `make`, or its first error.
fn per_queue<I>(n: usize, make: impl Fn() -> Result<I, String>) -> Result<Vec<I>, String> {
    (0..n).map(|_| make()).collect()
}
