//! Write ringvs policies — schedulers, persistence and defenses — as WebAssembly components.
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2`. It implements one trait and
//! exports it with one macro:
//!
//! ```ignore
//! #![no_std]
//! use ringvs_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct LeastActive;
//!
//! impl Scheduler for LeastActive {
//!     fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
//!         servers.available().min_by_key(|s| s.active).map(|s| s.index)
//!     }
//! }
//!
//! export_scheduler!(LeastActive);
//! ```
//!
//! Every hook but the deciding one (`pick`, `affinity`) has a default that does nothing.
//! Plugins are `#![no_std]` (with `alloc`): the SDK brings the allocator, the canonical-ABI
//! `cabi_realloc` and a panic handler that traps, so a plugin imports nothing from WASI and
//! the host links nothing into it. A panic in a plugin traps its instance; the host falls back
//! and counts it.
//!
//! [`testing`] runs a plugin's logic natively (no wasm) in unit tests; the director crate's
//! `ringvs::plugin::harness` loads the built component in wasmtime exactly as the director
//! does. The WIT package the plugins implement is this crate's `wit/plugin.wit`.

#![cfg_attr(all(target_family = "wasm", not(feature = "std")), no_std)]
#![deny(missing_docs)]

extern crate alloc;
// The generated bindings name this crate by path, from inside it too.
extern crate self as ringvs_sdk;

mod config;
mod defense;
mod flow;
pub mod log;
mod persistence;
pub mod pressure;
#[doc(hidden)]
pub mod rt;
mod scheduler;
pub mod testing;

pub use config::Config;
pub use defense::{
    Action, BlockMode, Defense, Direction, Entry, Event, Prefix, SourceRate, SourceStats,
    StateTable, Table, TcpState, TickStats, Verdict, MAX_BLOCK_SECS, MAX_SCAN_SLOTS,
    MAX_TICK_ACTIONS, MAX_TICK_DROPS, MAX_TOP_SOURCES,
};
pub use flow::{Flow, Proto};
pub use persistence::Persistence;
pub use scheduler::{Scheduler, Server, ServerInfo, Servers};

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        export_defense, export_persistence, export_scheduler, Action, BlockMode, Config, Defense,
        Direction, Entry, Event, Flow, Persistence, Prefix, Proto, Scheduler, Server, ServerInfo,
        Servers, SourceRate, SourceStats, StateTable, Table, TcpState, TickStats, Verdict,
    };
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
    pub use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
}

/// Bindings generated from `sdk/wit/` (hidden: plugins use the traits above).
#[doc(hidden)]
pub mod __wit {
    pub use wit_bindgen;

    /// The scheduler world.
    pub mod sched {
        wit_bindgen::generate!({
            path: "wit",
            world: "scheduler-plugin",
            runtime_path: "ringvs_sdk::__wit::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "ringvs_sdk::__wit::sched",
        });
    }

    /// The persistence world.
    pub mod persist {
        wit_bindgen::generate!({
            path: "wit",
            world: "persistence-plugin",
            runtime_path: "ringvs_sdk::__wit::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "ringvs_sdk::__wit::persist",
            with: {
                "ringvs:plugin/types@0.2.0": crate::__wit::sched::ringvs::plugin::types,
                "ringvs:plugin/log@0.2.0": crate::__wit::sched::ringvs::plugin::log,
            },
        });
    }

    /// The defense world.
    pub mod def {
        wit_bindgen::generate!({
            path: "wit",
            world: "defense-plugin",
            runtime_path: "ringvs_sdk::__wit::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "ringvs_sdk::__wit::def",
            with: {
                "ringvs:plugin/types@0.2.0": crate::__wit::sched::ringvs::plugin::types,
                "ringvs:plugin/log@0.2.0": crate::__wit::sched::ringvs::plugin::log,
            },
        });
    }

    pub use sched::ringvs::plugin::types;
}
