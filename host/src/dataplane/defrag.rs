//! IPv4 reassembly of the fragments ringvs must rewrite: those to a virtual address and those
//! from a realserver (a UDP answer over the path's MTU arrives as fragments, only the first
//! showing the ports). IPVS gets whole datagrams from `nf_defrag_ipv4`; ringvs reassembles
//! them itself, bounded, then rewrites the whole datagram, which the kernel fragments again
//! on the way out.
//!
//! Bounds (a fragment flood must not take memory from the connection table or hold buffers):
//! - memory: [`memory`] of the queue's share of `conn_memory_limit` (1/64, at most 512 KiB),
//!   taken out of the table's budget; a fragment that would pass it is refused and the
//!   oldest datagrams in progress make room for the newest;
//! - datagrams in progress: at most [`MAX_DATAGRAMS`];
//! - time: a datagram not complete [`TIMEOUT_TICKS`] after its first fragment is discarded
//!   (Linux's `ipfrag_time` is 30 s; a realserver's fragments come within milliseconds);
//! - shape: a fragment that overlaps another of its datagram with different bytes, passes
//!   65,535 bytes, or (not the last) is not a multiple of 8 bytes discards its datagram
//!   (overlaps are how the old reassembly attacks hid headers, RFC 1858 and RFC 3128).
//!
//! Every discarded fragment counts as `reason="fragment"`.
//!
//! With several queues, the steering program (and the AF_XDP backend) sends every fragment to
//! queue 0: later fragments carry no ports to key on. Queue 0 reassembles, and hands a
//! datagram whose flow another queue owns (the same keyed hash of the client endpoint:
//! [`crate::io::steer::queue_of_packet`]) to that queue through a bounded [`Handoff`]; the
//! owner runs it through its pipeline at its next poll and sends it
//! ([`crate::dataplane::Pipeline::drain`]).

use crate::conn::{HashKey, Tick, TICKS_PER_SEC};
use crate::wire::Ipv4Packet;
use crossbeam_channel::{Receiver, Sender};
use std::net::Ipv4Addr;

/// Datagrams in progress at once, per queue.
pub const MAX_DATAGRAMS: usize = 64;
/// Ticks a datagram may take to complete, from its first fragment (3 s).
pub const TIMEOUT_TICKS: Tick = 3 * TICKS_PER_SEC;
/// The largest IPv4 datagram.
const MAX_DATAGRAM: usize = 65_535;

/// The reassembly memory of a queue with `budget` bytes (taken out of its table's).
pub fn memory(budget: usize) -> usize {
    (budget / 64).min(512 << 10)
}

/// A datagram's identity (RFC 791: source, destination, protocol, identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
}

/// One datagram in progress.
#[derive(Debug)]
struct Datagram {
    key: Key,
    /// When it is discarded if not complete.
    deadline: Tick,
    /// Fragments taken.
    frags: u64,
    /// The first fragment's header (offset 0), once it came.
    header: Vec<u8>,
    /// The payload bytes received so far, at their offsets.
    data: Vec<u8>,
    /// The byte ranges of `data` received, sorted, adjacent ones merged.
    have: Vec<(usize, usize)>,
    /// The payload's length, once the last fragment came.
    total: Option<usize>,
}

impl Datagram {
    fn bytes(&self) -> usize {
        self.data.capacity() + self.header.capacity()
    }

    fn complete(&self) -> bool {
        !self.header.is_empty() && self.total.is_some_and(|t| self.have == [(0, t)])
    }
}

/// What became of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Kept: its datagram is not complete yet.
    Held,
    /// Its datagram is complete, [`Defrag::take`] writes it (this many bytes).
    Complete(usize),
    /// Discarded (and, if it broke its datagram's shape, the datagram with it).
    Refused,
}

/// A queue's reassembly: datagrams in progress, oldest first.
#[derive(Debug)]
pub struct Defrag {
    pending: Vec<Datagram>,
    ready: Option<Datagram>,
    bytes: usize,
    budget: usize,
    lost: u64,
}

impl Defrag {
    pub fn new(budget: usize) -> Defrag {
        Defrag {
            pending: Vec::new(),
            ready: None,
            bytes: 0,
            budget,
            lost: 0,
        }
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// No datagram in progress.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Memory held, bytes (at most the budget).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Fragments taken earlier and lost since the last call: their datagram was discarded
    /// (time up, a bad fragment, room for others).
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Takes the fragment `data` (an IPv4 packet that passed [`Ipv4Packet::new_checked`], a
    /// fragment) at `now`.
    pub fn add(&mut self, data: &[u8], now: Tick) -> Outcome {
        let ip = Ipv4Packet::new_unchecked(data);
        let key = Key {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            proto: ip.protocol(),
            ident: ip.ident(),
        };
        let header_len = ip.header_len();
        let payload = &data[header_len..usize::from(ip.total_len())];
        let (start, more) = (usize::from(ip.frag_offset()), ip.more_frags());
        let end = start + payload.len();
        let mut i = self.pending.iter().position(|d| d.key == key);
        if end + header_len > MAX_DATAGRAM
            || (more && !payload.len().is_multiple_of(8))
            || payload.is_empty()
        {
            if let Some(i) = i {
                self.remove(i, true);
            }
            return Outcome::Refused;
        }
        if let Some(j) = i {
            let d = &self.pending[j];
            // The shape: one last fragment and nothing past it; no overlap but a copy.
            let shape_ok = match (more, d.total) {
                (false, Some(t)) => t == end,
                (false, None) => d.have.last().is_none_or(|&(_, e)| e <= end),
                (true, Some(t)) => end <= t,
                (true, None) => true,
            };
            let over = d.have.iter().find(|&&(s, e)| s < end && start < e);
            let copy = over.is_some_and(|&(s, e)| s <= start && end <= e)
                && d.data[start..end] == *payload;
            if shape_ok && copy {
                return Outcome::Held;
            }
            if !shape_ok || over.is_some() {
                self.remove(j, true);
                return Outcome::Refused;
            }
        }
        // Room: the oldest other datagrams make way, then a new one may start.
        let grow = end.saturating_sub(i.map_or(0, |j| self.pending[j].data.len()))
            + if start == 0 { header_len } else { 0 };
        while self.bytes + grow > self.budget
            || (i.is_none() && self.pending.len() >= MAX_DATAGRAMS)
        {
            let Some(oldest) = (0..self.pending.len()).find(|&k| Some(k) != i) else {
                break;
            };
            self.remove(oldest, true);
            i = i.map(|j| if oldest < j { j - 1 } else { j });
        }
        if self.bytes + grow > self.budget {
            if let Some(j) = i {
                self.remove(j, true);
            }
            return Outcome::Refused;
        }
        let j = i.unwrap_or_else(|| {
            self.pending.push(Datagram {
                key,
                deadline: now.wrapping_add(TIMEOUT_TICKS),
                frags: 0,
                header: Vec::new(),
                data: Vec::new(),
                have: Vec::new(),
                total: None,
            });
            self.pending.len() - 1
        });
        let d = &mut self.pending[j];
        let before = d.bytes();
        if d.data.len() < end {
            d.data.reserve_exact(end - d.data.len());
            d.data.resize(end, 0);
        }
        d.data[start..end].copy_from_slice(payload);
        let at = d.have.partition_point(|&(s, _)| s < start);
        d.have.insert(at, (start, end));
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(d.have.len());
        for &(s, e) in &d.have {
            match merged.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        d.have = merged;
        d.frags += 1;
        if !more {
            d.total = Some(end);
        }
        if start == 0 {
            d.header = data[..header_len].to_vec();
        }
        let after = d.bytes();
        self.bytes = self.bytes - before + after;
        if !self.pending[j].complete() {
            return Outcome::Held;
        }
        let d = self.remove(j, false);
        let len = d.header.len() + d.data.len();
        self.ready = Some(d);
        Outcome::Complete(len)
    }

    /// Writes the datagram the last [`Self::add`] completed to the front of `out`: its first
    /// fragment's header (no longer a fragment, its length and checksum set) and the whole
    /// payload. `None` if none is ready or `out` is too short (then it is lost).
    pub fn take(&mut self, out: &mut [u8]) -> Option<usize> {
        let d = self.ready.take()?;
        let len = d.header.len() + d.data.len();
        if len > out.len() {
            self.lost += d.frags;
            return None;
        }
        out[..d.header.len()].copy_from_slice(&d.header);
        out[d.header.len()..len].copy_from_slice(&d.data);
        let mut whole = Ipv4Packet::new_unchecked(&mut out[..len]);
        whole.set_total_len(len as u16);
        let df = whole.dont_frag();
        whole.set_flags_and_frag_offset(df, false, 0);
        whole.fill_checksum();
        Some(len)
    }

    /// Forgets the datagram the last [`Self::add`] completed, unwritten (the caller counts it).
    pub fn discard_ready(&mut self) {
        self.ready = None;
    }

    /// Discards the datagrams whose time is up at `now` (their fragments count as lost).
    pub fn expire(&mut self, now: Tick) {
        let mut i = 0;
        while i < self.pending.len() {
            if now.wrapping_sub(self.pending[i].deadline) as i32 >= 0 {
                self.remove(i, true);
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, i: usize, lost: bool) -> Datagram {
        let d = self.pending.remove(i);
        self.bytes -= d.bytes();
        if lost {
            self.lost += d.frags;
        }
        d
    }
}

/// Datagrams waiting in one queue's hand-off inbox, at most.
pub const HANDOFF_DEPTH: usize = 64;

/// One queue's hand-off inbox: both ends.
type Inbox = (Sender<Vec<u8>>, Receiver<Vec<u8>>);

/// Reassembled datagrams on their way to the queue that owns their flow.
pub struct Handoff {
    /// The steering secret (the TUN program's and the AF_XDP backend's).
    key: HashKey,
    inboxes: Vec<Inbox>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key: it is the steering secret.
        f.debug_struct("Handoff")
            .field("queues", &self.inboxes.len())
            .finish_non_exhaustive()
    }
}

impl Handoff {
    /// Inboxes for `queues` queues steered with `key`.
    pub fn new(key: HashKey, queues: usize) -> Handoff {
        Handoff {
            key,
            inboxes: (0..queues)
                .map(|_| crossbeam_channel::bounded(HANDOFF_DEPTH))
                .collect(),
        }
    }

    /// The queue that owns `datagram`'s flow (`services`: [`crate::dataplane::service::Snapshot::steered`]).
    pub fn owner(&self, datagram: &[u8], services: &[(u8, Ipv4Addr, u16)]) -> usize {
        crate::io::steer::queue_of_packet(
            datagram,
            services,
            &[],
            &self.key,
            self.inboxes.len() as u32,
        ) as usize
    }

    /// Puts `datagram` in queue `q`'s inbox; `false` if it is full (the datagram is lost).
    pub fn send(&self, q: usize, datagram: Vec<u8>) -> bool {
        self.inboxes[q].0.try_send(datagram).is_ok()
    }

    /// The next datagram in queue `q`'s inbox.
    pub fn recv(&self, q: usize) -> Option<Vec<u8>> {
        self.inboxes[q].1.try_recv().ok()
    }
}

#[cfg(test)]
mod tests;
