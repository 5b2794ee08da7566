//! What crosses the ringvs plugin boundary, written once.
//!
//! The WIT package (`sdk/wit/plugin.wit`) is the law of the boundary; this crate is its Rust
//! side, shared by the director (`ringvs`) and the plugin SDK (`ringvs-sdk`) so that neither
//! copies a definition from the other:
//!
//! - [`state`]: the connection states, directions and events, and IPVS's two TCP state
//!   tables (`tcp_states`, `tcp_states_dos` of `ip_vs_proto_tcp.c`) as data, exactly once;
//! - [`load`]: the packed per-server load a scheduler is handed, with the least-cost and
//!   least-cost-per-weight maths that lc, wlc, sed and nq are made of (the built-in
//!   schedulers call it too);
//! - the limits below, each named once. A test reads the WIT and fails if a limit written
//!   there and its constant here diverge.
//!
//! `no_std`, no dependencies: it builds into every plugin.

#![no_std]
#![deny(missing_docs)]

pub mod load;
pub mod state;

pub use load::{Load, Server};
pub use state::{Direction, Event, State, StateTable, StateTableError, Timeouts};

/// The version of the WIT package `ringvs:plugin`, as the WIT declares it.
#[macro_export]
macro_rules! wit_version {
    () => {
        "0.2.0"
    };
}

/// The version of the WIT package `ringvs:plugin` (see [`wit_version!`] for a literal).
pub const WIT_VERSION: &str = wit_version!();

/// A WIT interface's fully qualified name: `wit_interface!("scheduler")` is
/// `"ringvs:plugin/scheduler@0.2.0"`.
#[macro_export]
macro_rules! wit_interface {
    ($name:literal) => {
        concat!("ringvs:plugin/", $name, "@", $crate::wit_version!())
    };
}

/// The name of the custom section in which a plugin built with the SDK carries its crate's
/// name and version, `"NAME VERSION"` in UTF-8 (`ringvs plugin list --available` shows it).
/// A macro for `#[link_section]`, which takes a literal.
#[macro_export]
macro_rules! ident_section {
    () => {
        "ringvs-plugin"
    };
}

/// The name of the plugin ident custom section (see [`ident_section!`]).
pub const IDENT_SECTION: &str = ident_section!();

/// Numbers a server takes in a scheduler's packed `load` list: weight, active, inactive.
pub const LOAD_STRIDE: usize = 3;

/// Most heavy hitters a defense's `tick-stats.top-sources` lists.
pub const MAX_TOP_SOURCES: usize = 16;

/// Longest block a defense may ask for, in seconds (a day).
pub const MAX_BLOCK_SECS: u32 = 86_400;

/// Most actions the host applies from one defense tick; the rest are refused and counted.
pub const MAX_TICK_ACTIONS: usize = 256;

/// Most connection ids one defense tick may ask to drop (`drop-connections`, all actions
/// of the tick together); a larger request is refused as a whole.
pub const MAX_TICK_DROPS: usize = 4096;

/// Most table slots the host visits for a defense's `drop-embryonic` actions in one tick.
pub const MAX_TICK_SCAN: u32 = 65_536;

/// Most table slots one `table.scan` call visits (a larger count is cut to it): what the
/// host builds for one call stays small however much a plugin asks for.
pub const MAX_SCAN_SLOTS: u32 = 4096;

/// Most blocks a service's defenses may hold at once.
pub const MAX_BLOCKS: usize = 4096;

/// Most `log` messages the host keeps per plugin instance and second; the rest are dropped
/// and counted.
pub const MAX_LOG_PER_SEC: u32 = 10;

/// Longest `log` message in bytes; a longer one is cut (at a character boundary).
pub const MAX_LOG_BYTES: usize = 1024;

#[cfg(test)]
mod wit_tests;
