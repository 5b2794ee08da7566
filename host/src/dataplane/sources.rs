//! What the director knows about traffic sources, without a per-source table a flood could
//! fill.
//!
//! - [`SourceSketch`]: a count-min sketch shared by all queues (relaxed atomics, touched
//!   once per new flow and once per ended connection) estimating each address's new flows
//!   in the last second (with conservative update) and its live connections, IPv4 and IPv6
//!   sources in the same cells (an IPv6 address is hashed whole: a flood from one /64 is as
//!   many sources as it has addresses, which is what prefix limits are for). Keyed with a
//!   secret, so an attacker cannot aim collisions at a victim's counters; estimates never
//!   fall below the truth. The data plane counts a source only once it is proven real (a
//!   completed handshake, a valid SYN-proxy cookie), so spoofed SYNs count for nothing.
//! - [`TopTalkers`]: a bounded heavy-hitter summary (Space-Saving) per queue of sources by
//!   new flows and packets, merged once a second by the control plane for `ringvs top`,
//!   the metrics and the defenses' ticks.

use crate::conn::{FlowAddr, HashKey};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

const ROWS: usize = 4;
const WIDTH_BITS: u32 = 14;
const WIDTH: usize = 1 << WIDTH_BITS;

/// Director-wide per-source estimates (count-min, `ROWS` × `WIDTH`).
pub struct SourceSketch {
    key: HashKey,
    /// New flows in the current second.
    cur: Box<[AtomicU32]>,
    /// New flows in the previous second.
    prev: Box<[AtomicU32]>,
    /// Live connections.
    live: Box<[AtomicU32]>,
}

impl std::fmt::Debug for SourceSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceSketch({ROWS}x{WIDTH})")
    }
}

fn zeroed(n: usize) -> Box<[AtomicU32]> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

impl SourceSketch {
    /// An empty sketch under a random key.
    pub fn new() -> SourceSketch {
        SourceSketch {
            key: HashKey::random(),
            cur: zeroed(ROWS * WIDTH),
            prev: zeroed(ROWS * WIDTH),
            live: zeroed(ROWS * WIDTH),
        }
    }

    #[inline]
    fn cells<A: FlowAddr>(&self, a: A) -> [usize; ROWS] {
        let h = a.keyed_hash(&self.key, 0, 0);
        let mut out = [0; ROWS];
        for (r, o) in out.iter_mut().enumerate() {
            *o = r * WIDTH + ((h >> (r as u32 * WIDTH_BITS)) as usize & (WIDTH - 1));
        }
        out
    }

    /// A new flow from `a` (counted once the source is proven real; see the data plane).
    ///
    /// Conservative update (Estan and Varghese): only the cells at the address's current
    /// minimum grow, to one above it. An estimate still never falls below the truth, but a
    /// random-source flood that fills the other cells no longer lifts every address's
    /// estimate with it.
    #[inline]
    pub fn attempt<A: FlowAddr>(&self, a: A) {
        let cells = self.cells(a);
        let min = cells
            .iter()
            .map(|&c| self.cur[c].load(Relaxed))
            .min()
            .unwrap_or(0);
        for c in cells {
            self.cur[c].fetch_max(min.saturating_add(1), Relaxed);
        }
    }

    /// A connection from `a` entered the table.
    #[inline]
    pub fn created<A: FlowAddr>(&self, a: A) {
        for c in self.cells(a) {
            self.live[c].fetch_add(1, Relaxed);
        }
    }

    /// A connection from `a` ended.
    #[inline]
    pub fn ended<A: FlowAddr>(&self, a: A) {
        for c in self.cells(a) {
            let _ = self.live[c].fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
        }
    }

    /// (new flows in about the last second, live connections) from `a`.
    #[inline]
    pub fn estimate<A: FlowAddr>(&self, a: A) -> (u32, u32) {
        let cells = self.cells(a);
        let min = |arr: &[AtomicU32]| {
            cells
                .iter()
                .map(|&c| arr[c].load(Relaxed))
                .min()
                .unwrap_or(0)
        };
        (min(&self.cur).max(min(&self.prev)), min(&self.live))
    }

    /// Once a second (control plane): the current second becomes the previous one.
    pub fn rotate(&self) {
        for (c, p) in self.cur.iter().zip(self.prev.iter()) {
            p.store(c.swap(0, Relaxed), Relaxed);
        }
    }
}

impl Default for SourceSketch {
    fn default() -> Self {
        SourceSketch::new()
    }
}

/// A source and its counts over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceCount {
    /// The address.
    pub addr: IpAddr,
    /// New flows.
    pub new_flows: u32,
    /// Packets (estimated from a 1-in-[`PACKET_SAMPLE`] sample).
    pub packets: u32,
}

/// One packet in this many is counted in the packet summary (and weighs that many).
pub const PACKET_SAMPLE: u32 = 16;
/// Counters per summary.
const SLOTS: usize = 64;

/// Space-Saving: at most [`SLOTS`] counters; a new source takes the smallest counter over
/// (inheriting its count as an upper-bound error), so heavy hitters are never lost. The
/// addresses are kept apart from the counts as 128-bit keys (an IPv4 address IPv4-mapped):
/// a sampled packet of a source the summary does not hold — most of them, with many
/// flows — scans both arrays, and flat integers keep that scan a few nanoseconds.
#[derive(Debug, Default, Clone)]
struct SpaceSaving {
    keys: Vec<u128>,
    counts: Vec<u32>,
}

/// An address as a summary's key (IPv4 as `::ffff:a.b.c.d`, which no IPv6 packet on the
/// wire carries as its source).
#[inline]
fn key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a summary's key.
fn addr(k: u128) -> IpAddr {
    let a = std::net::Ipv6Addr::from(k);
    a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)
}

impl SpaceSaving {
    #[inline]
    fn add(&mut self, a: IpAddr, n: u32) {
        let k = key(a);
        if let Some(i) = self.keys.iter().position(|&x| x == k) {
            self.counts[i] = self.counts[i].saturating_add(n);
        } else if self.keys.len() < SLOTS {
            self.keys.push(k);
            self.counts.push(n);
        } else if let Some((i, &min)) = self.counts.iter().enumerate().min_by_key(|e| *e.1) {
            self.keys[i] = k;
            self.counts[i] = min.saturating_add(n);
        }
    }

    /// The counts, cleared.
    fn drain(&mut self) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        self.keys.drain(..).map(addr).zip(self.counts.drain(..))
    }
}

/// Per-queue heavy hitters over the current second.
#[derive(Debug, Default, Clone)]
pub struct TopTalkers {
    flows: SpaceSaving,
    packets: SpaceSaving,
    seq: u32,
}

impl TopTalkers {
    /// A new flow from `a`.
    #[inline]
    pub fn new_flow(&mut self, a: impl Into<IpAddr>) {
        self.flows.add(a.into(), 1);
    }

    /// A packet from `a` (sampled).
    #[inline]
    pub fn packet(&mut self, a: impl Into<IpAddr>) {
        self.seq = self.seq.wrapping_add(1);
        if self.seq.is_multiple_of(PACKET_SAMPLE) {
            self.packets.add(a.into(), PACKET_SAMPLE);
        }
    }

    /// The second's counts, cleared for the next one.
    pub fn take(&mut self) -> Vec<SourceCount> {
        let mut out: Vec<SourceCount> = Vec::new();
        for (a, n) in self.flows.drain() {
            out.push(SourceCount {
                addr: a,
                new_flows: n,
                packets: 0,
            });
        }
        for (a, n) in self.packets.drain() {
            match out.iter_mut().find(|s| s.addr == a) {
                Some(s) => s.packets = n,
                None => out.push(SourceCount {
                    addr: a,
                    new_flows: 0,
                    packets: n,
                }),
            }
        }
        out
    }
}

/// Merges per-queue counts into the director's top `n` by new flows (then packets).
pub fn merge_top(parts: &[Vec<SourceCount>], n: usize) -> Vec<SourceCount> {
    let mut all: Vec<SourceCount> = Vec::new();
    for part in parts {
        for s in part {
            match all.iter_mut().find(|x| x.addr == s.addr) {
                Some(x) => {
                    x.new_flows = x.new_flows.saturating_add(s.new_flows);
                    x.packets = x.packets.saturating_add(s.packets);
                }
                None => all.push(*s),
            }
        }
    }
    all.sort_by(|a, b| {
        b.new_flows
            .cmp(&a.new_flows)
            .then(b.packets.cmp(&a.packets))
    });
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn sketch_counts_and_rotates() {
        let s = SourceSketch::new();
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let b = Ipv4Addr::new(192, 0, 2, 2);
        for _ in 0..100 {
            s.attempt(a);
            s.created(a);
        }
        s.attempt(b);
        s.created(b);
        assert_eq!(s.estimate(a), (100, 100));
        assert_eq!(s.estimate(b), (1, 1));
        s.rotate();
        assert_eq!(s.estimate(a).0, 100, "the last full second still counts");
        s.rotate();
        assert_eq!(s.estimate(a).0, 0);
        for _ in 0..40 {
            s.ended(a);
        }
        assert_eq!(s.estimate(a).1, 60);
        // Estimates never fall below the truth, even among thousands of other sources.
        for i in 0..20_000u32 {
            s.attempt(Ipv4Addr::from(0x0a00_0000 + i));
            s.created(Ipv4Addr::from(0x0a00_0000 + i));
        }
        assert!(s.estimate(a).1 >= 60);
    }

    #[test]
    fn a_random_source_crowd_does_not_lift_a_quiet_source() {
        // 200 000 distinct sources, one new flow each, in one second: with plain count-min
        // every cell of a 16384-wide row sees ~12; with conservative update an address that
        // sent nothing still reads near zero, and a real heavy source reads its count.
        let s = SourceSketch::new();
        for i in 0..200_000u32 {
            s.attempt(Ipv4Addr::from(0x0b00_0000 + i));
        }
        let heavy = Ipv4Addr::new(10, 77, 0, 66);
        for _ in 0..500 {
            s.attempt(heavy);
        }
        let quiet = Ipv4Addr::new(10, 77, 0, 2);
        let (q, _) = s.estimate(quiet);
        assert!(q <= 6, "a quiet source reads {q} new flows");
        let (h, _) = s.estimate(heavy);
        assert!((500..=510).contains(&h), "the heavy source reads {h}");
        // Never below the truth.
        let (one, _) = s.estimate(Ipv4Addr::from(0x0b00_0000 + 7));
        assert!(one >= 1);
    }

    #[test]
    fn heavy_hitters_survive_a_crowd() {
        let mut t = TopTalkers::default();
        let heavy = Ipv4Addr::new(198, 51, 100, 7);
        for i in 0..10_000u32 {
            t.new_flow(Ipv4Addr::from(0x0a00_0000 + i));
            if i % 10 == 0 {
                t.new_flow(heavy);
            }
        }
        let top = merge_top(&[t.take()], 3);
        assert_eq!(top[0].addr, IpAddr::V4(heavy));
        assert!(top[0].new_flows >= 1000);
        assert!(t.take().is_empty(), "cleared for the next second");
    }

    #[test]
    fn ipv6_sources_are_counted_whole_and_apart_from_ipv4() {
        let s = SourceSketch::new();
        let heavy = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66);
        // The same /64, and the IPv4 address in the heavy source's low 32 bits.
        let neighbour = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x67);
        let v4 = Ipv4Addr::from(0x66u32);
        for _ in 0..300 {
            s.attempt(heavy);
            s.created(heavy);
        }
        s.attempt(neighbour);
        s.created(neighbour);
        assert_eq!(s.estimate(heavy), (300, 300));
        assert_eq!(s.estimate(neighbour), (1, 1));
        assert_eq!(s.estimate(v4), (0, 0));
        s.ended(heavy);
        assert_eq!(s.estimate(heavy).1, 299);

        let mut t = TopTalkers::default();
        for i in 0..5_000u32 {
            t.new_flow(Ipv4Addr::from(0x0a00_0000 + i));
            if i % 10 == 0 {
                t.new_flow(heavy);
            }
        }
        for _ in 0..PACKET_SAMPLE * 4 {
            t.packet(heavy);
        }
        let top = merge_top(&[t.take()], 1);
        assert_eq!(top[0].addr, IpAddr::V6(heavy));
        assert!(top[0].new_flows >= 500, "{top:?}");
        assert_eq!(top[0].packets, PACKET_SAMPLE * 4);
    }

    #[test]
    fn merge_sums_queues() {
        let a = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        let b = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        let q0 = vec![SourceCount {
            addr: a,
            new_flows: 5,
            packets: 10,
        }];
        let q1 = vec![
            SourceCount {
                addr: a,
                new_flows: 7,
                packets: 0,
            },
            SourceCount {
                addr: b,
                new_flows: 9,
                packets: 1,
            },
        ];
        let top = merge_top(&[q0, q1], 10);
        assert_eq!(
            top[0],
            SourceCount {
                addr: a,
                new_flows: 12,
                packets: 10
            }
        );
        assert_eq!(top[1].addr, b);
    }
}
