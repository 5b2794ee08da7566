//! The per-packet pipeline.
//!
//! [`Packet`] and [`Pipeline`] are the seam between packet I/O ([`crate::io`]) and the data
//! plane: a backend reads a packet into a buffer with [`HEADROOM`] free bytes in front of it,
//! hands it to [`Pipeline::process`], and writes it back if the verdict is [`Verdict::Forward`].
//!
//! [`Shard`] is the pipeline of one queue: parse → service lookup → connection lookup → (new
//! flow: admit, persist, schedule) → state transition → NAT rewrite with incremental checksums → emit.
//!
//! # Rules for packets that are not plain tracked traffic
//!
//! | packet | rule | counted as |
//! |---|---|---|
//! | not IPv4, truncated, bad lengths | drop | `malformed` |
//! | wrong IPv4 header checksum; wrong ICMP checksum on an echo or error ringvs handles | drop | `bad_checksum` |
//! | IPv4 with options | drop | `ip_options` |
//! | fragment to a virtual address or from a NAT realserver | held, reassembled ([`defrag`]), the datagram goes through the pipeline | `reassembled`; `fragment` when refused or lost |
//! | other fragment with a realserver's port (first) | drop | `fragment` |
//! | to a virtual address, protocol not TCP/UDP/ICMP | drop | `unknown_proto` |
//! | to a virtual address, no service on that port | drop | `no_service` |
//! | TCP with SYN+FIN, SYN+RST, FIN+RST, FIN without ACK, or none of SYN/FIN/RST/ACK | drop | `tcp_flags` |
//! | TCP non-SYN for an unknown connection | drop | `no_conn` |
//! | new flow, no realserver available | drop | `no_server` |
//! | new flow, connection table at its memory limit | drop | `table_full` |
//! | new flow of a persistent service, template store at its memory limit | drop | `template_full` |
//! | from a realserver port, unknown connection | drop | `stale_reply` |
//! | ICMP error about an unknown flow of a service | drop | `icmp_no_conn` |
//! | other ICMP to a virtual address (replies, redirects, parameter problems, errors whose quote lacks ports) | drop | `icmp_other` |
//! | ICMP echo request to a virtual address | answered | `echo_replies` |
//! | anything else (not for a service, not from one) | passed unchanged | `passthrough` |

pub mod blocks;
pub mod defense;
pub mod defrag;
pub mod nat;
mod packet;
pub mod persist;
pub mod policy;
pub mod sched;
pub mod service;
pub mod shard;
pub mod sources;
pub mod stats;
pub mod synproxy;
pub mod templates;
pub mod testkit;
pub mod tunnel;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;

pub use packet::{Packet, Verdict, HEADROOM};
pub use policy::PluginEvent;
pub use shard::{Control, Shard, ShardConfig, ShardShared};

use std::time::Instant;

/// A data-plane stage driven by an I/O backend, one instance per queue (thread).
pub trait Pipeline {
    /// Optional first look at a batch: called with every packet of an I/O batch before any
    /// of them is processed, so that the pipeline can start loading what they will need
    /// (the connection table's buckets and entries) and the cache misses of a batch overlap
    /// instead of queueing one after the other. May keep what it computed for `process` to
    /// reuse on the same packets, but must never change what `process` does with any packet
    /// (the backend may process others in between, or not all of the batch). The default
    /// does nothing.
    #[inline]
    fn prefetch(&mut self, _batch: &[&[u8]]) {}

    /// Decides the fate of one packet, rewriting it in place when it is forwarded.
    fn process(&mut self, pkt: &mut Packet<'_>) -> Verdict;

    /// Packets the pipeline sends on its own (not an answer to a packet in hand: the SYN
    /// proxy's resets for clients whose realserver never answered), each handed to `f`
    /// once, starting at the IP header. Called after [`Pipeline::poll`]. The default has
    /// none.
    fn drain(&mut self, _f: &mut dyn FnMut(&[u8])) {}

    /// The backend is behind after an I/O batch: packets wait in the device, more than the
    /// queue's buffers hold (TUN: a read found every buffer taken). Past the device's own
    /// queue the kernel drops them, at random. Called at most once per batch. The default
    /// does nothing; the data plane sheds the SYN proxy's answers to unknown sources
    /// (`shard::shed`).
    #[inline]
    fn behind(&mut self) {}

    /// The kernel dropped packets for this queue's device because it was full (TUN: the
    /// device's `tx_dropped` grew; AF_XDP: the RX ring was full), read at most every
    /// 100 ms. The default does nothing; the data plane sheds as for [`Pipeline::behind`].
    #[inline]
    fn lost(&mut self) {}

    /// Called after every I/O batch and at least every few milliseconds when idle: expire
    /// timers, publish counters, apply control messages. Returns `false` when the queue must
    /// stop.
    fn poll(&mut self, now: Instant) -> bool;
}
