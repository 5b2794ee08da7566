//! What a queue's packet I/O counts while it runs, published for the control plane.
//!
//! Each backend keeps its own plain counters ([`QueueStats`](super::QueueStats),
//! [`XdpQueueStats`](super::xdp::XdpQueueStats)) and copies them here once per loop pass
//! with relaxed stores: one writer (the queue's thread), one reader (the control plane's
//! once-a-second metrics update), no read-modify-write on the hot path. A scrape therefore
//! sees at most one pass's worth of lag, and the figures a queue returns when it stops are
//! the same ones.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Packets through a queue's I/O, by direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDir {
    /// Received from the device or sockets.
    Rx = 0,
    /// Sent.
    Tx,
}

impl IoDir {
    /// Every direction, in index order.
    pub const ALL: [IoDir; 2] = [IoDir::Rx, IoDir::Tx];

    /// The `direction` label.
    pub fn label(self) -> &'static str {
        match self {
            IoDir::Rx => "rx",
            IoDir::Tx => "tx",
        }
    }
}

/// Why the packet I/O (not the data plane) lost or could not take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDrop {
    /// TUN: a write failed (its errno is logged at shutdown).
    WriteError = 0,
    /// TUN: a read found the buffer ring empty; the packet waits in the device's queue, and
    /// the kernel drops it once that is full.
    Enobufs,
    /// TUN, counted by the kernel: a queue of the device was full and the kernel dropped the
    /// packet it was handing to ringvs (the device's `tx_dropped`). The kernel counts for the
    /// whole device, so queue 0 reports them all.
    KernelQueueFull,
    /// Read but not handed to the pipeline: malformed virtio-net header, possibly truncated,
    /// no room to prepend, or (AF_XDP) too short for Ethernet + IP.
    Discarded,
    /// AF_XDP: the TX ring was full.
    TxFull,
    /// AF_XDP: the next hop's MAC was not resolved in time.
    NoNeighbour,
    /// AF_XDP: no route through ringvs's interfaces.
    NoRoute,
    /// AF_XDP: the ring handing a frame to the queue owning its flow was full.
    HandoffFull,
    /// AF_XDP, counted by the kernel: the RX ring was full.
    RxRingFull,
    /// AF_XDP, counted by the kernel: dropped for other reasons.
    KernelRxDropped,
    /// AF_XDP, counted by the kernel: the fill ring was empty when a frame came.
    FillRingEmpty,
    /// AF_XDP, counted by the kernel: invalid RX or TX descriptors.
    InvalidDesc,
}

impl IoDrop {
    /// Every reason, in index order.
    pub const ALL: [IoDrop; 12] = [
        IoDrop::WriteError,
        IoDrop::Enobufs,
        IoDrop::KernelQueueFull,
        IoDrop::Discarded,
        IoDrop::TxFull,
        IoDrop::NoNeighbour,
        IoDrop::NoRoute,
        IoDrop::HandoffFull,
        IoDrop::RxRingFull,
        IoDrop::KernelRxDropped,
        IoDrop::FillRingEmpty,
        IoDrop::InvalidDesc,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            IoDrop::WriteError => "write_error",
            IoDrop::Enobufs => "enobufs",
            IoDrop::KernelQueueFull => "kernel_queue_full",
            IoDrop::Discarded => "discarded",
            IoDrop::TxFull => "tx_full",
            IoDrop::NoNeighbour => "no_neighbour",
            IoDrop::NoRoute => "no_route",
            IoDrop::HandoffFull => "handoff_full",
            IoDrop::RxRingFull => "rx_ring_full",
            IoDrop::KernelRxDropped => "kernel_rx_dropped",
            IoDrop::FillRingEmpty => "fill_ring_empty",
            IoDrop::InvalidDesc => "invalid_desc",
        }
    }

    /// Whether `backend` ("tun" or "af_xdp") can count this reason.
    pub fn applies_to(self, backend: &str) -> bool {
        match self {
            IoDrop::WriteError | IoDrop::Enobufs | IoDrop::KernelQueueFull => backend == "tun",
            IoDrop::Discarded => true,
            _ => backend == "af_xdp",
        }
    }
}

/// One queue's published I/O counters.
#[derive(Debug, Default)]
pub struct IoCounters {
    packets: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    drops: [AtomicU64; IoDrop::ALL.len()],
}

/// A copy of [`IoCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoSnapshot {
    /// Packets by [`IoDir`].
    pub packets: [u64; 2],
    /// Bytes (IP packets, without virtio-net or Ethernet headers) by [`IoDir`].
    pub bytes: [u64; 2],
    /// Packets lost by [`IoDrop`].
    pub drops: [u64; IoDrop::ALL.len()],
}

impl IoCounters {
    /// Publishes `s` (the queue's thread only).
    pub fn store(&self, s: &IoSnapshot) {
        for (a, v) in self.packets.iter().zip(s.packets) {
            a.store(v, Relaxed);
        }
        for (a, v) in self.bytes.iter().zip(s.bytes) {
            a.store(v, Relaxed);
        }
        for (a, v) in self.drops.iter().zip(s.drops) {
            a.store(v, Relaxed);
        }
    }

    /// The last published values.
    pub fn load(&self) -> IoSnapshot {
        IoSnapshot {
            packets: self.packets.each_ref().map(|a| a.load(Relaxed)),
            bytes: self.bytes.each_ref().map(|a| a.load(Relaxed)),
            drops: self.drops.each_ref().map(|a| a.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_indexed_in_order() {
        for (i, r) in IoDrop::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut labels: Vec<_> = IoDrop::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), IoDrop::ALL.len());
        assert!(IoDrop::ALL
            .iter()
            .all(|r| r.applies_to("tun") || r.applies_to("af_xdp")));
    }

    #[test]
    fn store_then_load_round_trips() {
        let c = IoCounters::default();
        let mut s = IoSnapshot::default();
        s.packets[IoDir::Rx as usize] = 7;
        s.bytes[IoDir::Tx as usize] = 1500;
        s.drops[IoDrop::Enobufs as usize] = 3;
        c.store(&s);
        assert_eq!(c.load(), s);
    }
}
