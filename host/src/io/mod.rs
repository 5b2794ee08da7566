//! Packet I/O backends.
//!
//! - [`tun`]: creates the multi-queue TUN device, one file descriptor per queue.
//! - [`mem`]: the same contract over byte slices, for tests and replay.
//! - [`pcap`]: classic pcap reading (IP packets out of the usual link types) and writing.
//!
pub mod mem;
pub mod pcap;
pub mod tun;

pub use mem::{process_packets, process_packets_vnet};
pub use pcap::{PcapError, PcapReader, PcapRecord, PcapWriter};
pub use tun::{attach_steering_bpf, detach_steering_bpf, TunDevice, TunOptions};

use std::fmt;

/// An I/O error with what was being done when it happened; the original error stays
/// reachable through [`std::error::Error::source`].
#[derive(Debug)]
struct Context {
    what: String,
    source: std::io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps `e` with `what`, keeping its kind.
pub(crate) fn ctx(e: std::io::Error, what: String) -> std::io::Error {
    std::io::Error::new(e.kind(), Context { what, source: e })
}

/// The OS error number behind `e`, looking through the context this module adds.
pub fn os_error(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Context>())
            .and_then(|c| os_error(&c.source))
    })
}
