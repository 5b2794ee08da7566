//! Writing to the director's log: the WIT's `log` import.
//!
//! ```ignore
//! use ringvs_sdk::log;
//! log::info(&format!("{} servers", list.len()));
//! ```
//!
//! The director writes each message to its tracing output with the plugin's name and the
//! level, and counts it (`ringvs_plugin_log_messages_total{plugin,level}`). It keeps at most
//! [`MAX_PER_SEC`] messages per second per instance (one instance runs per queue); the rest
//! are dropped and counted (`ringvs_plugin_log_dropped_total`). A message over [`MAX_BYTES`]
//! bytes is cut. Logging never fails and never traps.
//!
//! In native tests nothing reaches a director: the messages of the current thread are kept
//! for [`crate::testing::take_logs`].

/// Most messages the director keeps per instance and second.
pub const MAX_PER_SEC: u32 = ringvs_abi::MAX_LOG_PER_SEC;
/// Longest message in bytes; longer ones are cut.
pub const MAX_BYTES: usize = ringvs_abi::MAX_LOG_BYTES;

/// How much a message matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Something an operator may want to know.
    Info,
    /// Detail for whoever debugs the plugin.
    Debug,
    /// Even more detail.
    Trace,
}

/// Writes `message` at `level` to the director's log.
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Writes `message` at level error.
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// Writes `message` at level warn.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Writes `message` at level info.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Writes `message` at level debug.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Writes `message` at level trace.
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

#[cfg(target_family = "wasm")]
mod imp {
    use super::Level;
    use crate::__wit::sched::ringvs::plugin::log as wit;

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Error => wit::Level::Error,
            Level::Warn => wit::Level::Warn,
            Level::Info => wit::Level::Info,
            Level::Debug => wit::Level::Debug,
            Level::Trace => wit::Level::Trace,
        };
        wit::log(level, message);
    }
}

#[cfg(not(target_family = "wasm"))]
pub(crate) mod imp {
    extern crate std;
    use super::Level;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use core::cell::RefCell;

    std::thread_local! {
        static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn log(level: Level, message: &str) {
        LOGS.with(|l| l.borrow_mut().push((level, message.to_string())));
    }

    pub(crate) fn take() -> Vec<(Level, String)> {
        LOGS.with(|l| core::mem::take(&mut *l.borrow_mut()))
    }
}
