//! Policies: built-in schedulers, and WebAssembly components loaded with wasmtime.
//!
//! - [`builtin`]: `rr` and `wlc`, native and always there (the fallback).
//! - [`Runtime`]: one shared wasmtime `Engine` (component model, pooling allocator,
//!   `concurrency_support(false)`, epoch interruption driven by a 1 ms ticker thread) and the
//!   loader: sha256 pin, compilation, world and import checks, configuration.
//! - [`SchedulerInstance`] and its siblings: one instance per queue, each call under an epoch
//!   deadline and a memory limit; any fault poisons the instance ([`Fault`]).

mod bindings;
pub mod builtin;
mod instance;
mod runtime;

pub use instance::{
    defense_types, flow_v4, table_types, DefenseInstance, Fault, FaultKind, PersistenceInstance,
    SchedulerInstance, ServerInfo, TableView,
};
pub use runtime::{
    flatten_config as runtime_flatten, hex, Kind, Plugin, PluginError, Runtime, RuntimeOptions,
};

/// The WIT flow record (what `SchedulerInstance::pick` takes).
pub type FlowWit = bindings::types::Flow;
/// The WIT address.
pub type FlowWitIp = bindings::types::Ip;
