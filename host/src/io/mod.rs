//! Packet I/O backends.
//!
//! The seam is [`QueueIo`]: one queue of a backend, run on its own thread, reads packets,
//! hands each to a [`Pipeline`](crate::dataplane::Pipeline) starting at its IP header, and
//! sends what the pipeline forwards. The data plane does not know which backend runs it.
//! [`AnyQueue`] dispatches statically between the two real backends:
//!
//! - TUN ([`TunQueue`], `director.io = "tun"`, the default): works everywhere; the kernel
//!   routes traffic into a TUN device and forwards what ringvs writes back.
//! - AF_XDP ([`xdp::XdpQueue`], `director.io = "af_xdp"`): sockets on the client- and
//!   realserver-facing interfaces; Ethernet is stripped on receive and built on transmit.
//!
//! Modules:
//!
//! - [`tun`]: creates the multi-queue TUN device, one file descriptor per queue.
//! - [`uring`]: the data-plane backend. [`run_queue`] drives one queue with one io_uring on
//!   the calling thread (thread per queue, nothing shared on the hot path) and hands every
//!   packet to a [`Pipeline`](crate::dataplane::Pipeline).
//! - [`mem`]: the same contract over byte slices, for tests and replay.
//! - [`pcap`]: pcap and pcapng reading (IP packets out of the usual link types), raw-IP pcap
//!   writing.
//! - [`steer`]: the keyed symmetric steering of a multi-queue TUN device (and, in Rust, of
//!   the AF_XDP queues' hand-off).
//! - [`xdp`]: the AF_XDP backend; [`bpf`]: the eBPF assembler and syscalls both use.
//!
//! # The io_uring design, and why
//!
//! Buffers: one anonymous mapping, cut into fixed-size slots. Each slot is registered as a
//! fixed buffer (so a forwarded packet is written with `WriteFixed` from where it was read,
//! without the kernel pinning pages per write) and, under the same id, offered to the kernel
//! in a provided-buffer ring. The read lands at `HEADROOM - vnet_len` in the slot, so the IP
//! header is always at [`HEADROOM`](crate::dataplane::HEADROOM) and the virtio-net header,
//! if any, just before it; the data plane can `prepend` (e.g. an LVS-TUN outer header) and
//! the backend still has room to put the virtio-net header back in front.
//!
//! Reads: one multishot read (`IORING_OP_READ_MULTISHOT`, Linux 6.7) on the raw descriptor,
//! which need not be non-blocking. Seen on Linux 6.18:
//!
//! - Many one-shot reads in flight on one TUN descriptor wake each other; the losers of a
//!   wakeup get `EAGAIN` a second time and io_uring punts them to io-wq worker threads (up to
//!   13 `iou-wrk` threads seen for 32 reads in the tests). One multishot read waits by
//!   polling and never needed a worker; writes to TUN complete inline.
//! - A multishot read on a *registered* file completes at once with `EBADFD`, hence the raw
//!   descriptor. (A registered file also keeps the device alive after the ring is dropped:
//!   see [`tun::EBUSY_RETRY`].)
//!
//! When multishot is unavailable, a fixed number of plain reads with `IOSQE_BUFFER_SELECT` is
//! kept in flight instead. When the buffer ring runs dry the read ends with `ENOBUFS`; it is
//! re-armed once buffers come back (the packets wait in the device's transmit queue, which is
//! why the device gets a long `txqueuelen`).
//!
//! Ownership: a slot belongs to the kernel while it is in the buffer ring or lent to a write,
//! and to the queue's thread between a read completion and the next write (or its return to
//! the ring on `Drop`). A write completion returns its slot whatever the result, like
//! tokio-uring's `BufResult`. The mapping is unmapped only after every operation has
//! completed; see [`uring`] for the details.
//!
//! Batching: every available completion is handled before the next submission, then
//! [`Pipeline::poll`](crate::dataplane::Pipeline::poll) runs once; the wait for completions
//! has a timeout ([`UringOptions::idle_timeout`]) so `poll` also runs when idle.

pub mod bpf;
pub mod counters;
pub mod mem;
pub mod pcap;
pub mod steer;
pub mod tun;
pub mod uring;
pub mod xdp;

pub use counters::{IoCounters, IoDir, IoDrop, IoSnapshot};
pub use mem::{process_packets, process_packets_vnet};
pub use pcap::{PcapError, PcapReader, PcapRecord, PcapWriter};
pub use tun::{attach_steering_bpf, detach_steering_bpf, TunDevice, TunOptions};
pub use uring::{run_queue, QueueStats, UringOptions};

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};

use crate::dataplane::Pipeline;

/// One queue of a packet-I/O backend, moved to its own thread and run there.
pub trait QueueIo: Send + 'static {
    /// Runs the queue on the calling thread until
    /// [`Pipeline::poll`](crate::dataplane::Pipeline::poll) returns `false`: receives
    /// packets, hands each to `pipeline`, sends those it forwards, and keeps `live` up to
    /// date with what it counts. Returns what the queue did.
    fn run<P: Pipeline>(self, pipeline: &mut P, live: &IoCounters) -> std::io::Result<IoStats>;
}

/// What a queue did, by backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoStats {
    /// A TUN queue.
    Tun(QueueStats),
    /// An AF_XDP queue.
    Xdp(xdp::XdpQueueStats),
}

/// A TUN queue: its descriptor and how to drive it.
#[derive(Debug)]
pub struct TunQueue {
    /// The queue's descriptor.
    pub fd: OwnedFd,
    /// Whether the device was opened with `IFF_VNET_HDR`.
    pub vnet_hdr: bool,
    /// The io_uring tuning.
    pub opts: UringOptions,
}

impl QueueIo for TunQueue {
    fn run<P: Pipeline>(self, pipeline: &mut P, live: &IoCounters) -> std::io::Result<IoStats> {
        run_queue(self.fd.as_fd(), self.vnet_hdr, &self.opts, pipeline, live).map(IoStats::Tun)
    }
}

impl QueueIo for xdp::XdpQueue {
    fn run<P: Pipeline>(self, pipeline: &mut P, live: &IoCounters) -> std::io::Result<IoStats> {
        xdp::XdpQueue::run(self, pipeline, live).map(IoStats::Xdp)
    }
}

/// A queue of either backend (static dispatch: the pipeline is monomorphised per backend).
#[derive(Debug)]
pub enum AnyQueue {
    /// TUN.
    Tun(TunQueue),
    /// AF_XDP.
    Xdp(xdp::XdpQueue),
}

impl QueueIo for AnyQueue {
    fn run<P: Pipeline>(self, pipeline: &mut P, live: &IoCounters) -> std::io::Result<IoStats> {
        match self {
            AnyQueue::Tun(q) => q.run(pipeline, live),
            AnyQueue::Xdp(q) => QueueIo::run(q, pipeline, live),
        }
    }
}

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
