//! The per-packet pipeline.
//!
//! [`Packet`] and [`Pipeline`] are the seam between packet I/O ([`crate::io`]) and the data
//! plane: a backend reads a packet into a buffer with [`HEADROOM`] free bytes in front of it,
//! hands it to [`Pipeline::process`], and writes it back if the verdict is [`Verdict::Forward`].

mod packet;

pub use packet::{Packet, Verdict, HEADROOM};

use std::time::Instant;

/// A data-plane stage driven by an I/O backend, one instance per queue (thread).
pub trait Pipeline {
    /// Decides the fate of one packet, rewriting it in place when it is forwarded.
    fn process(&mut self, pkt: &mut Packet<'_>) -> Verdict;

    /// Called after every I/O batch and at least every few milliseconds when idle: expire
    /// timers, publish counters, apply control messages. Returns `false` when the queue must
    /// stop.
    fn poll(&mut self, now: Instant) -> bool;
}
