//! Host-side bindings generated from `sdk/wit/` (the only definition of the boundary).

#![allow(missing_docs, clippy::all)]

/// The `scheduler-plugin` world.
pub mod scheduler {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "scheduler-plugin",
    });
}

/// The `persistence-plugin` world.
pub mod persistence {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "persistence-plugin",
        with: {
            "ringvs:plugin/types": super::scheduler::ringvs::plugin::types,
            "ringvs:plugin/log": super::scheduler::ringvs::plugin::log,
        },
    });
}

/// The `defense-plugin` world.
pub mod defense {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "defense-plugin",
        with: {
            "ringvs:plugin/types": super::scheduler::ringvs::plugin::types,
            "ringvs:plugin/log": super::scheduler::ringvs::plugin::log,
        },
    });
}

/// The `log` import every world shares.
pub use scheduler::ringvs::plugin::log;
/// The types every world shares.
pub use scheduler::ringvs::plugin::types;
