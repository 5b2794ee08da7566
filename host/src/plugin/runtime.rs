//! The shared engine and the compiler: what a plugin is ([`Kind`], [`Plugin`]), how it is
//! compiled and checked. Loading, with the self-test on instances, is [`Runtime::load`]
//! (module `load`).

use super::bindings::{defense, persistence, scheduler};
use super::store::HostState;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// What a plugin is, from the interface it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Exports `ringvs:plugin/scheduler`.
    Scheduler,
    /// Exports `ringvs:plugin/persistence`.
    Persistence,
    /// Exports `ringvs:plugin/defense`.
    Defense,
}

impl Kind {
    /// The exported interface's name.
    pub fn interface(self) -> &'static str {
        match self {
            Kind::Scheduler => ringvs_abi::wit_interface!("scheduler"),
            Kind::Persistence => ringvs_abi::wit_interface!("persistence"),
            Kind::Defense => ringvs_abi::wit_interface!("defense"),
        }
    }

    /// A word for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scheduler => "scheduler",
            Kind::Persistence => "persistence",
            Kind::Defense => "defense",
        }
    }
}

/// Limits and deadlines of plugin calls.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Most linear memory one instance may have, bytes.
    pub memory_limit: usize,
    /// Deadline of a per-flow call (`pick`, `affinity`, `admit`).
    pub call_deadline: Duration,
    /// Deadline of `init`, `servers-changed`, state hand-off and self-tests.
    pub setup_deadline: Duration,
    /// Deadline of a defense `tick`.
    pub tick_deadline: Duration,
    /// Most instances alive at once (the pooling allocator's slots).
    pub max_instances: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            memory_limit: 16 << 20,
            call_deadline: Duration::from_millis(2),
            setup_deadline: Duration::from_millis(200),
            tick_deadline: Duration::from_millis(50),
            max_instances: 512,
        }
    }
}

/// Why a plugin cannot be used. Nothing running is changed by a failed load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The file cannot be read.
    Read(PathBuf, String),
    /// The file is not what `sha256` pins.
    Sha256 {
        /// The file.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// Not a WebAssembly component.
    NotComponent(PathBuf, String),
    /// Compilation failed.
    Compile(PathBuf, String),
    /// It exports none of the plugin interfaces, or not the one wanted.
    WrongWorld(PathBuf, String),
    /// It imports something the host does not provide.
    Imports(PathBuf, String),
    /// Its `init` rejected the configuration.
    ConfigRejected(String),
    /// It failed its self-test (trapped, hung, or answered nonsense).
    SelfTest(String),
    /// The engine could not be built or an instance not created.
    Engine(String),
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            PluginError::Sha256 { path, expected, actual } => write!(
                f,
                "{}: sha256 mismatch: the config pins {expected}, the file is {actual}; refusing it",
                path.display()
            ),
            PluginError::NotComponent(p, e) => write!(f, "{}: {e}", p.display()),
            PluginError::Compile(p, e) => write!(f, "{}: does not compile: {e}", p.display()),
            PluginError::WrongWorld(p, e) => write!(f, "{}: {e}", p.display()),
            PluginError::Imports(p, e) => write!(f, "{}: {e}", p.display()),
            PluginError::ConfigRejected(m) => write!(f, "the plugin rejected its config: {m}"),
            PluginError::SelfTest(m) => write!(f, "the plugin failed its self-test: {m}"),
            PluginError::Engine(m) => write!(f, "wasmtime: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

/// Pre-instantiated bindings of a compiled plugin.
#[derive(Clone)]
pub(crate) enum Pre {
    Scheduler(scheduler::SchedulerPluginPre<HostState>),
    Persistence(persistence::PersistencePluginPre<HostState>),
    Defense(defense::DefensePluginPre<HostState>),
}

/// A compiled, checked plugin, ready to instantiate (cheap to share between threads).
pub struct Plugin {
    /// The name services refer to (`[plugins.NAME]`, or the file stem for a path).
    pub name: Arc<str>,
    /// What it is.
    pub kind: Kind,
    /// Its file.
    pub path: PathBuf,
    /// SHA-256 of the file.
    pub sha256: [u8; 32],
    /// Its configuration, flattened.
    pub config: Vec<(String, String)>,
    pub(crate) pre: Pre,
    pub(crate) runtime: Arc<Runtime>,
    /// Its `log` messages, over all its instances.
    pub logs: Arc<super::store::LogCounters>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("sha256", &hex(&self.sha256))
            .finish()
    }
}

impl Plugin {
    /// True if `other` is the same file with the same configuration.
    pub fn same_as(&self, other: &Plugin) -> bool {
        self.sha256 == other.sha256 && self.config == other.config && self.name == other.name
    }
}

/// Lowercase hexadecimal.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Flattens a TOML/JSON configuration table into the WIT `config` pairs: nested keys joined
/// with dots, array elements numbered, scalars written without quotes.
pub fn flatten_config(v: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    walk(&key(k), v, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&key(&i.to_string()), v, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            serde_json::Value::Null => out.push((prefix.to_string(), String::new())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out.sort();
    out
}

/// Stops the epoch ticker when the runtime goes.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The shared engine, linkers and limits.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) opts: RuntimeOptions,
    sched_linker: Linker<HostState>,
    persist_linker: Linker<HostState>,
    defense_linker: Linker<HostState>,
    _ticker: Ticker,
    /// Linear memory of every live instance, bytes.
    pub(crate) memory: Arc<std::sync::atomic::AtomicUsize>,
    /// `log` counters by plugin name: every build loaded under a name counts in the same
    /// ones, so the exported counters never go down across a rebuild.
    logs: std::sync::Mutex<std::collections::BTreeMap<Arc<str>, Arc<super::store::LogCounters>>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("opts", &self.opts).finish()
    }
}

/// Period of the epoch ticker: deadlines are counted in these.
pub(crate) const EPOCH: Duration = Duration::from_millis(1);

impl Runtime {
    /// The `log` counters of the plugins loaded under `name` (created on first use).
    fn log_counters_of(&self, name: &str) -> Arc<super::store::LogCounters> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry(name.into()).or_default().clone()
    }

    /// Every plugin name's `log` counters, for the metrics.
    pub fn log_counters(&self) -> Vec<(Arc<str>, Arc<super::store::LogCounters>)> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter().map(|(n, c)| (n.clone(), c.clone())).collect()
    }

    /// Builds the engine and starts its epoch ticker.
    pub fn new(opts: RuntimeOptions) -> Result<Arc<Runtime>, PluginError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        // Concurrency support makes every synchronous call about 3× slower (MEASURED.md).
        cfg.concurrency_support(false);
        cfg.epoch_interruption(true);
        // Compilation happens on the control thread and, without wasmtime's
        // `parallel-compilation` feature, never fans out onto data-plane cores.
        cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Reserve only the memory limit per instance (not wasmtime's default 4 GiB plus
        // guard, which for hundreds of pool slots is terabytes of address space and fails
        // under heuristic overcommit). Bounds checks become explicit: cheap for plugins
        // that touch little memory.
        let reservation = (opts.memory_limit.max(1 << 16) as u64).next_multiple_of(1 << 16);
        cfg.memory_reservation(reservation);
        cfg.memory_guard_size(1 << 16);
        cfg.memory_reservation_for_growth(0);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(opts.max_instances);
        pool.total_core_instances(opts.max_instances * 2);
        pool.total_memories(opts.max_instances * 2);
        pool.total_tables(opts.max_instances * 2);
        pool.max_memory_size(opts.memory_limit.max(1 << 16));
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        // Every world imports `log`; the defense world the table too.
        let link = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut sched_linker = Linker::new(&engine);
        scheduler::SchedulerPlugin::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut sched_linker, |s| s)
        .map_err(link)?;
        let mut persist_linker = Linker::new(&engine);
        persistence::PersistencePlugin::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut persist_linker, |s| s)
        .map_err(link)?;
        let mut defense_linker = Linker::new(&engine);
        defense::DefensePlugin::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut defense_linker,
            |s| s,
        )
        .map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("ringvs-epoch".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH);
                    match weak.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Arc::new(Runtime {
            engine,
            opts,
            sched_linker,
            persist_linker,
            defense_linker,
            _ticker: Ticker { stop },
            memory: Default::default(),
            logs: Default::default(),
        }))
    }

    /// Linear memory of every live instance of this runtime's plugins, bytes (what they
    /// grew to: pages are resident once the guest touches them).
    pub fn memory_in_use(&self) -> usize {
        self.memory.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Epoch ticks for a deadline (at least two, so a call never starts already late).
    pub(crate) fn ticks(d: Duration) -> u64 {
        (d.as_micros() / EPOCH.as_micros()).max(1) as u64 + 1
    }

    /// The runtime's limits.
    pub fn options(&self) -> &RuntimeOptions {
        &self.opts
    }

    /// Compiles and checks the plugin file `path` whose contents are `bytes` (SHA-256
    /// `sha256`): a component exporting one of the plugin interfaces (`want` restricts the
    /// kind) and importing nothing the host does not link. No self-test: see
    /// [`Runtime::load`] for what a caller may use.
    pub(super) fn compile(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        bytes: &[u8],
        sha256: [u8; 32],
        config: &serde_json::Value,
        want: Option<Kind>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let p = path.to_path_buf();
        match bytes.get(0..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => {}
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(PluginError::NotComponent(
                    p,
                    "is a core WebAssembly module, not a component: build it for wasm32-wasip2 with ringvs-sdk".into(),
                ))
            }
            Some([0, b'a', b's', b'm', ..]) => {
                return Err(PluginError::NotComponent(p, "is WebAssembly of an unknown version, not a component".into()))
            }
            _ => {
                return Err(PluginError::NotComponent(
                    p,
                    "is not a WebAssembly component (no \\0asm header)".into(),
                ))
            }
        }
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| PluginError::Compile(p.clone(), format!("{e:#}")))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let kind = [Kind::Scheduler, Kind::Persistence, Kind::Defense]
            .into_iter()
            .find(|k| exports.iter().any(|e| e == k.interface()))
            .ok_or_else(|| {
                // Built against another version of the WIT: say so, and what to do.
                let other = exports
                    .iter()
                    .find_map(|e| e.strip_prefix("ringvs:plugin/")?.split_once('@'))
                    .map(|(_, v)| {
                        format!(
                            "; it was built for WIT ringvs:plugin@{v}: rebuild it against the ringvs-sdk of this ringvs (docs/PLUGINS.md, \"WIT versions\")"
                        )
                    })
                    .unwrap_or_default();
                PluginError::WrongWorld(
                    p.clone(),
                    format!(
                        "exports none of ringvs:plugin/{{scheduler,persistence,defense}}@{} (it exports: {}){other}",
                        ringvs_abi::WIT_VERSION,
                        if exports.is_empty() { "nothing".into() } else { exports.join(", ") }
                    ),
                )
            })?;
        if let Some(w) = want {
            if w != kind {
                return Err(PluginError::WrongWorld(
                    p,
                    format!(
                        "is a {} plugin (exports {}), not a {}",
                        kind.name(),
                        kind.interface(),
                        w.name()
                    ),
                ));
            }
        }
        // Only what the world declares is linked: anything else is refused by name.
        let allowed: &[&str] = match kind {
            Kind::Defense => &[
                ringvs_abi::wit_interface!("types"),
                ringvs_abi::wit_interface!("log"),
                ringvs_abi::wit_interface!("table"),
            ],
            _ => &[
                ringvs_abi::wit_interface!("types"),
                ringvs_abi::wit_interface!("log"),
            ],
        };
        let extra: Vec<&String> = imports
            .iter()
            .filter(|i| !allowed.contains(&i.as_str()))
            .collect();
        if !extra.is_empty() {
            return Err(PluginError::Imports(
                p,
                format!(
                    "imports {} which ringvs does not provide to a {} plugin (a plugin built with ringvs-sdk imports nothing but ringvs:plugin/log; std's panic and print machinery pull in wasi:cli)",
                    extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    kind.name()
                ),
            ));
        }
        let pre = match kind {
            Kind::Scheduler => {
                let ip = self
                    .sched_linker
                    .instantiate_pre(&component)
                    .map_err(|e| PluginError::Imports(p.clone(), format!("{e:#}")))?;
                Pre::Scheduler(
                    scheduler::SchedulerPluginPre::new(ip)
                        .map_err(|e| PluginError::WrongWorld(p.clone(), format!("{e:#}")))?,
                )
            }
            Kind::Persistence => {
                let ip = self
                    .persist_linker
                    .instantiate_pre(&component)
                    .map_err(|e| PluginError::Imports(p.clone(), format!("{e:#}")))?;
                Pre::Persistence(
                    persistence::PersistencePluginPre::new(ip)
                        .map_err(|e| PluginError::WrongWorld(p.clone(), format!("{e:#}")))?,
                )
            }
            Kind::Defense => {
                let ip = self
                    .defense_linker
                    .instantiate_pre(&component)
                    .map_err(|e| PluginError::Imports(p.clone(), format!("{e:#}")))?;
                Pre::Defense(
                    defense::DefensePluginPre::new(ip)
                        .map_err(|e| PluginError::WrongWorld(p.clone(), format!("{e:#}")))?,
                )
            }
        };
        Ok(Arc::new(Plugin {
            name: name.into(),
            kind,
            path: path.to_path_buf(),
            sha256,
            config: flatten_config(config),
            pre,
            runtime: self.clone(),
            logs: self.log_counters_of(name),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_flattened() {
        let v: serde_json::Value = serde_json::json!({"netmask": "255.255.255.0", "limits": {"rate": 100, "burst": 2.5}, "on": true, "list": [1, "x"]});
        assert_eq!(
            flatten_config(&v),
            vec![
                ("limits.burst".into(), "2.5".into()),
                ("limits.rate".into(), "100".into()),
                ("list.0".into(), "1".into()),
                ("list.1".into(), "x".into()),
                ("netmask".into(), "255.255.255.0".into()),
                ("on".into(), "true".into()),
            ]
        );
    }

    #[test]
    fn deadlines_in_ticks() {
        assert_eq!(Runtime::ticks(Duration::from_millis(2)), 3);
        assert_eq!(Runtime::ticks(Duration::from_micros(10)), 2);
    }
}
