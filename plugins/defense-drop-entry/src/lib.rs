//! drop_entry (IPVS `ip_vs_random_dropentry` and `todrop_entry` in `ip_vs_conn.c`, run by
//! `defense_work_handler` in `ip_vs_ctl.c`): while memory is short, scan 1/32 of the
//! connection table each second from random points and drop the entries a SYN flood leaves
//! behind, to win memory back for new connections.
//!
//! Of the entries a tick finds:
//! - TCP SYN_RECV and SYNACK entries are all dropped;
//! - TCP ESTABLISHED entries are dropped by `todrop_entry`'s rule: idle for at least 60 s,
//!   with 1 to 8 packets from the client, and of those with `n` packets one in `n` (the first
//!   one, then every `n`-th): the fewer packets, the likelier the drop. The counters live in
//!   the instance — IPVS has them as a function-local `static` shared by every network
//!   namespace (a 2026 patch series moves them into the namespace);
//! - other TCP states are left alone;
//! - UDP entries (and any other protocol) are left alone by default (`udp = "keep"`);
//!   `udp = "todrop"` applies the ESTABLISHED rule above to them, as IPVS does for non-TCP
//!   entries.
//!
//! The scan covers `slots / 32` slots (at least one chunk of `scan_chunk` slots, default 256)
//! in chunks, each chunk-aligned, starting at a pseudo-random chunk (xorshift64 seeded from
//! `seed`), no chunk twice in a tick. At most `max_drops_per_tick` ids (default and most
//! 4096, the host's `MAX_TICK_DROPS`) go out in one `drop-connections`; the scan stops there.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeSet;
use ringvs_sdk::prelude::*;
use ringvs_sdk::pressure::Pressure;
use ringvs_sdk::{Entry, Table};

/// The share of the table scanned per tick: `1 / SCAN_FRACTION`.
pub const SCAN_FRACTION: u32 = 32;
/// Default slots per chunk.
pub const SCAN_CHUNK: u32 = 256;
/// Default (and largest) bound on the ids of one tick: the host refuses a larger
/// `drop-connections` as a whole.
pub const MAX_DROPS_PER_TICK: u32 = ringvs_sdk::MAX_TICK_DROPS as u32;
/// ESTABLISHED (and, if asked, UDP) entries younger than this since their last packet stay.
pub const MIN_IDLE_SECS: u32 = 60;
/// The seed when none is configured.
pub const DEFAULT_SEED: u64 = 0x6472_6f70_656e_7472; // "dropentr"

const TCP: u8 = 6;

/// What to do with UDP (non-TCP) entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Udp {
    /// Never drop them.
    Keep,
    /// Apply `todrop_entry`.
    Todrop,
}

/// xorshift64 (Marsaglia), seeded through one round of splitmix64 so that any seed works.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn seeded(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
}

/// The strategy's mode, the random source and `todrop_entry`'s counters.
#[derive(Debug)]
pub struct DropEntry {
    pressure: Pressure,
    rng: XorShift,
    /// Countdown per packet count 1..=8 (IPVS's `todrop_counter`, here per instance).
    todrop_counter: [i8; 8],
    max_drops: u32,
    chunk: u32,
    udp: Udp,
}

impl Default for DropEntry {
    fn default() -> Self {
        DropEntry {
            pressure: Pressure::new(1),
            rng: XorShift::seeded(DEFAULT_SEED),
            todrop_counter: [0; 8],
            max_drops: MAX_DROPS_PER_TICK,
            chunk: SCAN_CHUNK,
            udp: Udp::Keep,
        }
    }
}

impl DropEntry {
    /// IPVS's `todrop_entry`: idle long enough, 1..=8 packets, one in `packets`.
    fn todrop(&mut self, e: &Entry) -> bool {
        if e.idle < MIN_IDLE_SECS || !(1..=8).contains(&e.packets) {
            return false;
        }
        let n = e.packets as i8; // 1..=8
        let c = &mut self.todrop_counter[n as usize - 1];
        *c -= 1;
        if *c > 0 {
            return false;
        }
        *c = n;
        true
    }

    /// Whether the scan drops `e`.
    fn reaps(&mut self, e: &Entry) -> bool {
        if e.proto != TCP {
            return self.udp == Udp::Todrop && self.todrop(e);
        }
        match e.state {
            TcpState::SynRecv | TcpState::SynAck => true,
            TcpState::Established => self.todrop(e),
            _ => false,
        }
    }

    /// Scans 1/32 of `table` in chunks from random points; the ids to drop, sorted.
    fn scan(&mut self, table: &dyn Table) -> Vec<u32> {
        let slots = table.slots();
        if slots == 0 {
            return Vec::new();
        }
        let chunk = self.chunk.min(slots);
        let budget = (slots / SCAN_FRACTION).max(chunk);
        let chunks = slots.div_ceil(chunk);
        let mut picked = BTreeSet::new();
        let mut scanned = 0;
        let mut ids = Vec::new();
        'scan: while scanned < budget {
            // Every chunk not yet picked is there while `scanned < budget <= slots`.
            let mut c = self.rng.below(chunks);
            while !picked.insert(c) {
                c = (c + 1) % chunks;
            }
            let start = c * chunk;
            let count = chunk.min(budget - scanned).min(slots - start);
            scanned += count;
            for e in table.scan(start, count) {
                if self.reaps(&e) {
                    ids.push(e.id);
                    if ids.len() >= self.max_drops as usize {
                        break 'scan;
                    }
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Defense for DropEntry {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let [a, b, c] = Pressure::KEYS;
        config.check_keys(&[a, b, c, "seed", "max_drops_per_tick", "scan_chunk", "udp"])?;
        self.pressure = Pressure::from_config(config, 1)?;
        self.rng = XorShift::seeded(config.parse_or("seed", DEFAULT_SEED)?);
        self.max_drops = config.parse_or("max_drops_per_tick", MAX_DROPS_PER_TICK)?;
        self.chunk = config.parse_or("scan_chunk", SCAN_CHUNK)?;
        for (key, v, max) in [
            ("max_drops_per_tick", self.max_drops, MAX_DROPS_PER_TICK),
            ("scan_chunk", self.chunk, ringvs_sdk::MAX_SCAN_SLOTS),
        ] {
            if v == 0 || v > max {
                return Err(format!(
                    "config key `{key}`: cannot use {v} (expected 1 to {max}: the host's bound)"
                ));
            }
        }
        self.udp = match config.get("udp") {
            None | Some("keep") => Udp::Keep,
            Some("todrop") => Udp::Todrop,
            Some(v) => {
                return Err(format!(
                    "config key `udp`: cannot use {v:?} (expected \"keep\" or \"todrop\")"
                ))
            }
        };
        Ok(())
    }

    fn tick(&mut self, stats: &TickStats, table: &dyn Table) -> Vec<Action> {
        if !self.pressure.update(stats).on {
            return Vec::new();
        }
        let ids = self.scan(table);
        if ids.is_empty() {
            return Vec::new();
        }
        vec![Action::DropConnections(ids)]
    }
}

export_defense!(DropEntry);

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use ringvs_sdk::testing::{DefenseHarness, MockTable};

    const UDP: u8 = 17;

    fn tcp(id: u32, state: TcpState, packets: u32, idle: u32) -> Entry {
        Entry {
            id,
            proto: TCP,
            state,
            packets,
            expires_in: 10,
            idle,
        }
    }

    fn udp(id: u32, packets: u32, idle: u32) -> Entry {
        Entry {
            id,
            proto: UDP,
            state: TcpState::None,
            packets,
            expires_in: 10,
            idle,
        }
    }

    /// A queue whose table budget is nearly used up (1 of 8000 bytes left).
    fn short() -> TickStats {
        TickStats {
            queues: 1,
            memory: 7999,
            memory_limit: 8000,
            ..TickStats::default()
        }
    }

    fn fine() -> TickStats {
        TickStats {
            memory: 0,
            ..short()
        }
    }

    fn harness(config: &[(&str, &str)]) -> DefenseHarness<DropEntry> {
        DefenseHarness::<DropEntry>::new(config).unwrap()
    }

    fn dropped(actions: &[Action]) -> Vec<u32> {
        match actions {
            [] => Vec::new(),
            [Action::DropConnections(ids)] => ids.clone(),
            other => panic!("unexpected actions {other:?}"),
        }
    }

    /// A table that records the ranges scanned.
    struct Recording {
        inner: MockTable,
        ranges: RefCell<Vec<(u32, u32)>>,
    }

    impl Table for Recording {
        fn slots(&self) -> u32 {
            self.inner.slots()
        }
        fn scan(&self, start: u32, count: u32) -> Vec<Entry> {
            self.ranges.borrow_mut().push((start, count));
            self.inner.scan(start, count)
        }
    }

    fn ranges(config: &[(&str, &str)], slots: u32, ticks: usize) -> Vec<Vec<(u32, u32)>> {
        let mut h = harness(config);
        let t = Recording {
            inner: MockTable::new(slots, Vec::new()),
            ranges: RefCell::new(Vec::new()),
        };
        (0..ticks)
            .map(|_| {
                h.instance().tick(&short(), &t);
                t.ranges.take()
            })
            .collect()
    }

    #[test]
    fn scans_a_32nd_of_the_table_per_tick() {
        let mut h = harness(&[]);
        let t = MockTable::new(32 * 1024, Vec::new());
        h.tick(&short(), &t);
        assert_eq!(t.scanned.get(), 1024);
        h.tick(&short(), &t);
        assert_eq!(t.scanned.get(), 2048);
        // Not a multiple of the chunk: still exactly slots / 32.
        let t = MockTable::new(32 * 1024 + 3200, Vec::new());
        h.tick(&short(), &t);
        assert_eq!(t.scanned.get(), 1124);
        // A small table: one chunk at least (here the whole table).
        let t = MockTable::new(1000, Vec::new());
        h.tick(&short(), &t);
        assert_eq!(t.scanned.get(), 256);
        let t = MockTable::new(100, Vec::new());
        h.tick(&short(), &t);
        assert_eq!(t.scanned.get(), 100);
        let t = MockTable::new(0, Vec::new());
        assert_eq!(h.tick(&short(), &t), []);
        assert_eq!(t.scanned.get(), 0);
    }

    #[test]
    fn chunks_are_random_disjoint_and_seeded() {
        let a = ranges(&[("seed", "7")], 1 << 16, 3);
        for tick in &a {
            // 65536 / 32 = 2048 slots in 8 chunks of 256, aligned, inside the table.
            assert_eq!(tick.len(), 8);
            let mut starts: Vec<u32> = tick.iter().map(|(s, _)| *s).collect();
            assert!(tick.iter().all(|(s, c)| s % 256 == 0 && *c == 256));
            starts.sort_unstable();
            starts.dedup();
            assert_eq!(starts.len(), 8, "a chunk scanned twice: {tick:?}");
        }
        assert_ne!(a[0], a[1], "the same chunks every tick");
        assert_eq!(a, ranges(&[("seed", "7")], 1 << 16, 3));
        assert_ne!(a, ranges(&[("seed", "8")], 1 << 16, 3));
        // 2048 chunks of one slot out of 65536: random picks would repeat some.
        let one = ranges(&[("scan_chunk", "1")], 1 << 16, 1).remove(0);
        let mut starts: Vec<u32> = one.iter().map(|(s, _)| *s).collect();
        starts.sort_unstable();
        starts.dedup();
        assert_eq!((one.len(), starts.len()), (2048, 2048));
        // Partial last chunk: never wraps into the first one.
        for tick in ranges(&[("scan_chunk", "300")], 1000, 20) {
            assert!(tick.iter().all(|(s, c)| s + c <= 1000), "{tick:?}");
        }
    }

    #[test]
    fn drops_every_embryonic_entry_and_nothing_busy_or_young() {
        use TcpState::*;
        let entries = vec![
            tcp(0, SynRecv, 1, 0),
            tcp(1, Established, 100, 3600), // busy
            tcp(2, SynAck, 1, 5),
            tcp(3, Established, 1, 59), // young
            tcp(4, SynRecv, 3, 70),
            tcp(5, TimeWait, 1, 100),
            tcp(6, FinWait, 1, 100),
            tcp(7, Close, 1, 100),
            tcp(8, SynSent, 1, 100),
            tcp(9, CloseWait, 1, 100),
            tcp(10, LastAck, 1, 100),
            tcp(11, None, 1, 100),
            tcp(12, Established, 0, 3600), // no client packet
            tcp(13, Established, 9, 3600), // 9 packets: busy enough
            tcp(14, SynAck, 50, 0),
        ];
        let t = MockTable::new(64, entries);
        let mut h = harness(&[]);
        assert_eq!(dropped(&h.tick(&short(), &t)), [0, 2, 4, 14]);
    }

    #[test]
    fn one_in_n_by_packet_count() {
        use TcpState::Established as ES;
        // Slots 0..12: three packets each; 20..24: one packet; 30..36: two packets.
        let mut entries: Vec<Entry> = (0..12).map(|i| tcp(i, ES, 3, 60)).collect();
        entries.extend((20..24).map(|i| tcp(i, ES, 1, 600)));
        entries.extend((30..36).map(|i| tcp(i, ES, 2, 600)));
        let t = MockTable::new(64, entries);
        let mut h = harness(&[]);
        let got = dropped(&h.tick(&short(), &t));
        assert_eq!(got, [0, 3, 6, 9, 20, 21, 22, 23, 30, 32, 34]);
    }

    #[test]
    fn counters_live_across_ticks_in_the_instance() {
        use TcpState::Established as ES;
        let t = MockTable::new(8, (0..4).map(|i| tcp(i, ES, 3, 60)).collect());
        let mut h = harness(&[]);
        // Countdown 0 → drop (3), 2, 1, 0 → drop (3) | 2, 1, 0 → drop, 2.
        assert_eq!(dropped(&h.tick(&short(), &t)), [0, 3]);
        assert_eq!(dropped(&h.tick(&short(), &t)), [2]);
        // Another instance has its own counters.
        let mut other = harness(&[]);
        assert_eq!(dropped(&other.tick(&short(), &t)), [0, 3]);
    }

    #[test]
    fn udp_kept_unless_asked() {
        let t = MockTable::new(
            16,
            vec![
                udp(0, 1, 600),
                udp(1, 1, 30),
                udp(2, 40, 600),
                udp(3, 1, 60),
            ],
        );
        assert_eq!(dropped(&harness(&[]).tick(&short(), &t)), Vec::<u32>::new());
        let mut h = harness(&[("udp", "todrop")]);
        assert_eq!(dropped(&h.tick(&short(), &t)), [0, 3]);
    }

    #[test]
    fn nothing_while_inactive() {
        let t = MockTable::new(64, vec![tcp(1, TcpState::SynRecv, 1, 0)]);
        let mut h = harness(&[]);
        assert_eq!(h.tick(&fine(), &t), []);
        assert_eq!(t.scanned.get(), 0, "scanned while inactive");
        assert_eq!(dropped(&h.tick(&short(), &t)), [1]);
        assert_eq!(h.tick(&fine(), &t), []);
        let mut off = harness(&[("mode", "0")]);
        assert_eq!(off.tick(&short(), &t), []);
        let mut always = harness(&[("mode", "3")]);
        assert_eq!(dropped(&always.tick(&fine(), &t)), [1]);
    }

    #[test]
    fn bounded_output() {
        let t = MockTable::new(
            256,
            (0..200).map(|i| tcp(i, TcpState::SynRecv, 1, 0)).collect(),
        );
        let mut h = harness(&[("max_drops_per_tick", "7")]);
        assert_eq!(dropped(&h.tick(&short(), &t)).len(), 7);
        assert_eq!(dropped(&harness(&[]).tick(&short(), &t)).len(), 200);
        assert_eq!(DropEntry::default().max_drops, 4096);
    }

    #[test]
    fn refuses_bad_config() {
        for (k, v) in [
            ("udp", "all"),
            ("max_drops_per_tick", "0"),
            ("scan_chunk", "0"),
            ("scan_chunk", "4097"),
            ("max_drops_per_tick", "4097"),
            ("seed", "-1"),
            ("drop_entry", "1"),
            ("mode", "9"),
        ] {
            let r = DefenseHarness::<DropEntry>::new(&[(k, v)]);
            assert!(r.is_err(), "{k} = {v} accepted");
        }
    }
}
