//! Policies: built-in schedulers, and WebAssembly components loaded with wasmtime.
//!
//! - [`builtin`]: `rr` and `wlc`, native and always there (the fallback).
//! - [`catalogue`]: the plugins every ringvs ships, usable by name, and where their files
//!   are found.
//! - [`Runtime`]: one shared wasmtime `Engine` (component model, pooling allocator,
//!   `concurrency_support(false)`, epoch interruption driven by a 1 ms ticker thread) and the
//!   loader: sha256 pin, compilation, world and import checks, configuration.
//! - [`SchedulerInstance`] and its siblings: one instance per queue, each call under an epoch
//!   deadline and a memory limit; any fault poisons the instance ([`Fault`]).
//!
//! Inside, each module uses only those before it: `bindings` (the WIT's generated code) →
//! `store` (one instance's host state, [`TableView`]) → `runtime` (the engine; compiling and
//! checking a component) → `instance` (calls under deadlines) → `load` ([`Runtime::load`]:
//! read, pin, compile, self-test).

mod bindings;
pub mod builtin;
pub mod catalogue;
pub mod harness;
mod instance;
mod load;
pub use load::{read_plugin_file, MAX_PLUGIN_BYTES};
mod runtime;
mod store;

pub use instance::{
    defense_types, flow, flow_v4, table_types, wit_ip, DefenseInstance, Fault, FaultKind,
    PersistenceInstance, SchedulerInstance, ServerInfo,
};
pub use runtime::{
    flatten_config as runtime_flatten, hex, Kind, Plugin, PluginError, Runtime, RuntimeOptions,
};
pub use store::{LogCounters, TableView};

/// The WIT flow record (what `SchedulerInstance::pick` takes).
pub type FlowWit = bindings::types::Flow;
/// The WIT address.
pub type FlowWitIp = bindings::types::Ip;
