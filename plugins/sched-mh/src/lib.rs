//! Maglev hashing (IPVS `ip_vs_mh.c`; Eisenbud et al., "Maglev", NSDI 2016, §3.4): a lookup
//! table of `M` entries (a prime, `table_size`, 65 537 by default) maps a hash of the client
//! to a realserver, so that a change of realservers moves few clients: about `1/N` of them
//! when one of `N` comes or goes (measured in the tests and in `docs/SCHEDULERS.md`).
//!
//! Each realserver `i` has a permutation of the entries, from two hashes of its address and
//! port: `offset = h₁ mod M`, `skip = h₂ mod (M − 1) + 1`, `perm_i(j) = (offset + j × skip) mod
//! M` (a permutation because `M` is prime). In rounds, in configuration order, each realserver
//! claims its `turns` next preferred entries still free, until all `M` are claimed. `turns`
//! is IPVS's: `w / g` with `g` the gcd of the weights, shifted right until the largest fits
//! in 6 bits, and at least 1 for a positive weight; 0 claims nothing. So each realserver
//! holds about `M × turns / Σ turns` entries.
//!
//! A client is looked up at entry `h₁(client) mod M`; its address (and, with `port = true`,
//! its port: IPVS's `mh-port`) alone decide. If that entry's realserver cannot take the flow
//! (weight 0 in `pick`) there is no pick, unless `fallback = true` (IPVS's `mh-fallback`):
//! then the entries `h₁(client, (e + k) mod M) mod M` for `k` = 0, 1, … with `e` the first
//! entry are tried in turn, and the first realserver that can take the flow wins.
//!
//! The hashes are IPVS's: `hᵢ(addr, port, offset) = hsiphash_keyᵢ(offset + port + addr)`
//! over the 32-bit sum's 4 little-endian bytes (an IPv6 address folded to the XOR of its four
//! 32-bit words), where hsiphash is SipHash-1-3 truncated to 32 bits (as on 64-bit kernels)
//! with IPVS's fixed keys `(2654435761, 2654435761)` and `(2654446892, 2654446892)`.
//!
//! As in IPVS (its `last_weight`), the table is built with each realserver's *last positive*
//! weight: one whose weight drops to 0 (quiesced, down, over its threshold) keeps its entries,
//! so nobody else moves while it is away. The table is built again in `servers_changed`, and
//! when a positive weight in `pick`'s view differs from the one it was built with. A whole
//! build of 65 537 entries tries some 480 000 (2–3 ms as wasm, over `pick`'s 2 ms deadline),
//! so a build started by `pick` is spread over the following picks, about 65 536 tries
//! each, the old table serving until the new one is complete (7 picks for 10 realservers).
//! The table and its weights are the plugin's state: a version swapped in keeps them.

#![no_std]

use ringvs_sdk::prelude::*;

/// `table_size` when the config does not set it (the Maglev paper's; IPVS's kernel default
/// is 4093).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// The largest `table_size` (IPVS's largest, `CONFIG_IP_VS_MH_TAB_INDEX` = 17).
pub const MAX_TABLE_SIZE: u32 = 131_071;
/// Bits of the largest `turns` (IPVS `IP_VS_MH_TAB_BITS`, with IPVS's default table).
const TURN_BITS: u32 = 6;
/// IPVS's keys for `h₁` (offsets and lookups) and `h₂` (skips).
const KEY1: [u64; 2] = [2_654_435_761; 2];
const KEY2: [u64; 2] = [2_654_446_892; 2];
/// An unclaimed entry.
const NONE: u32 = u32::MAX;

/// The lookup table and what it was built from.
pub struct Mh {
    /// `M`.
    size: u32,
    /// Hash the client's port too (`mh-port`).
    port: bool,
    /// Try other entries when the client's realserver cannot take it (`mh-fallback`).
    fallback: bool,
    /// The realservers' identities, from `servers_changed`.
    ids: Vec<(IpAddr, u16)>,
    /// Each realserver's last positive weight (0: none yet): what the table is built with.
    weights: Vec<u32>,
    /// Entry → realserver index (all `NONE` if no realserver has a weight); empty before the
    /// first `servers_changed`.
    table: Vec<u32>,
    /// The weights `table` was built with.
    built: Vec<u32>,
    /// A table being built over some `pick`s, after a change of weights.
    next: Option<Build>,
}

impl Default for Mh {
    fn default() -> Self {
        Mh {
            size: DEFAULT_TABLE_SIZE,
            port: false,
            fallback: false,
            ids: Vec::new(),
            weights: Vec::new(),
            table: Vec::new(),
            built: Vec::new(),
            next: None,
        }
    }
}

/// SipHash-1-3 with a 32-bit result, the kernel's `hsiphash` on 64-bit machines.
fn hsiphash(key: [u64; 2], data: &[u8]) -> u32 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let m = b.iter().rev().fold(0u64, |m, &x| (m << 8) | x as u64);
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    let tail = blocks
        .remainder()
        .iter()
        .rev()
        .fold(0u64, |m, &x| (m << 8) | x as u64);
    let b = ((data.len() as u64) << 56) | tail;
    v[3] ^= b;
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..3 {
        round(&mut v);
    }
    (v[0] ^ v[1] ^ v[2] ^ v[3]) as u32
}

/// An address as one 32-bit number (IPv6: the XOR of its four words).
fn fold(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let w = u128::from(a);
            (w >> 96) as u32 ^ (w >> 64) as u32 ^ (w >> 32) as u32 ^ w as u32
        }
    }
}

/// IPVS `ip_vs_mh_hashkey`.
fn hash(key: [u64; 2], addr: IpAddr, port: u16, offset: u32) -> u32 {
    let v = offset.wrapping_add(port as u32).wrapping_add(fold(addr));
    hsiphash(key, &v.to_le_bytes())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// IPVS's turns: `w / gcd`, shifted so the largest fits in 6 bits, at least 1 if `w > 0`.
fn turns(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &w| gcd(w, g));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mw = weights.iter().max().map_or(0, |&w| w / g);
    let shift = (32 - mw.leading_zeros()).saturating_sub(TURN_BITS);
    weights
        .iter()
        .map(|&w| ((w / g) >> shift).max((w > 0) as u32))
        .collect()
}

/// Maglev's population, resumable: in rounds, each realserver claims its `turns` next
/// preferred entries still free.
struct Build {
    /// `(offset, skip, turns)` per realserver.
    setup: Vec<(u32, u32, u32)>,
    /// The entry each realserver tries next.
    next: Vec<u32>,
    table: Vec<u32>,
    claimed: usize,
    /// Whose turn it is, and how many entries it claimed in this round.
    at: (usize, u32),
    /// The weights it is built with.
    weights: Vec<u32>,
}

impl Build {
    /// A table of `size` entries (a prime) for `setup`.
    fn new(size: u32, setup: Vec<(u32, u32, u32)>, weights: Vec<u32>) -> Build {
        Build {
            next: setup.iter().map(|&(offset, _, _)| offset).collect(),
            setup,
            table: vec![NONE; size as usize],
            claimed: 0,
            at: (0, 0),
            weights,
        }
    }

    /// Claims entries until the table is full (true) or about `budget` entries were tried.
    fn run(&mut self, mut budget: usize) -> bool {
        let size = self.table.len() as u32;
        if self.setup.iter().all(|&(_, _, t)| t == 0) {
            return true;
        }
        while self.claimed < self.table.len() {
            let (i, turn) = self.at;
            let (_, skip, turns) = self.setup[i];
            if turn >= turns {
                self.at = ((i + 1) % self.setup.len(), 0);
                continue;
            }
            if budget == 0 {
                return false;
            }
            let mut c = self.next[i];
            while self.table[c as usize] != NONE {
                c += skip;
                if c >= size {
                    c -= size;
                }
                budget = budget.saturating_sub(1);
            }
            self.next[i] = c;
            self.table[c as usize] = i as u32;
            self.claimed += 1;
            self.at.1 += 1;
            budget = budget.saturating_sub(1);
        }
        true
    }
}

/// Entries a `pick` may try while building a table (about 0.3 ms as wasm).
const PICK_BUDGET: usize = 1 << 16;

fn is_prime(n: u32) -> bool {
    let n = n as u64;
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

impl Mh {
    /// IPVS `ip_vs_mh_reassign`: the permutations, for a population.
    fn start(&self) -> Build {
        let m = self.size;
        let setup = self
            .ids
            .iter()
            .zip(turns(&self.weights))
            .map(|(&(addr, port), t)| {
                let offset = hash(KEY1, addr, port, 0) % m;
                let skip = hash(KEY2, addr, port, 0) % (m - 1) + 1;
                (offset, skip, t)
            })
            .collect();
        Build::new(m, setup, self.weights.clone())
    }

    /// Puts a finished table in use.
    fn install(&mut self, b: Build) {
        self.table = b.table;
        self.built = b.weights;
    }

    /// The entry of a client (with `offset`, for the fallback probes).
    fn entry(&self, flow: &Flow, offset: u32) -> usize {
        let port = if self.port { flow.client_port } else { 0 };
        (hash(KEY1, flow.client, port, offset) % self.size) as usize
    }
}

impl Scheduler for Mh {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["table_size", "port", "fallback"])?;
        let m: u32 = config.parse_or("table_size", DEFAULT_TABLE_SIZE)?;
        if m > MAX_TABLE_SIZE || !is_prime(m) {
            return Err(format!(
                "config key `table_size`: {m} is not a prime from 2 to {MAX_TABLE_SIZE} \
                 (IPVS uses 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521 or 131071; \
                 the Maglev paper 65537)"
            ));
        }
        self.size = m;
        self.port = config.parse_or("port", false)?;
        self.fallback = config.parse_or("fallback", false)?;
        Ok(())
    }

    fn servers_changed(&mut self, servers: &[ServerInfo]) {
        let weights = servers
            .iter()
            .map(|s| match s.weight {
                // Quiesced now: keep the weight it had, if it was here before.
                0 => self
                    .ids
                    .iter()
                    .position(|id| *id == (s.addr, s.port))
                    .map_or(0, |i| self.weights[i]),
                w => w,
            })
            .collect();
        self.weights = weights;
        self.ids = servers.iter().map(|s| (s.addr, s.port)).collect();
        // Indices changed: build now (setup calls have 200 ms).
        let mut b = self.start();
        b.run(usize::MAX);
        self.install(b);
        self.next = None;
    }

    fn pick(&mut self, flow: &Flow, servers: &Servers) -> Option<usize> {
        let mut changed = false;
        for s in servers.available() {
            if let Some(w) = self.weights.get_mut(s.index) {
                if *w != s.weight {
                    *w = s.weight;
                    changed = true;
                }
            }
        }
        if changed {
            self.next = Some(self.start());
        }
        if let Some(mut b) = self.next.take() {
            if b.run(PICK_BUDGET) {
                self.install(b);
            } else {
                self.next = Some(b);
            }
        }
        let can_take = |i: u32| servers.get(i as usize).is_some_and(|s| s.weight > 0);
        let e = self.entry(flow, 0);
        let first = *self.table.get(e)?;
        if first == NONE {
            return None;
        }
        if can_take(first) {
            return Some(first as usize);
        }
        // Probe only if some realserver that can take the flow holds entries (else the
        // probes would hash M times for nothing).
        let held = |s: &Server| self.built.get(s.index).is_some_and(|&w| w > 0);
        if !self.fallback || !servers.available().any(|s| held(&s)) {
            return None;
        }
        (0..self.size)
            .map(|k| self.table[self.entry(flow, (e as u32 + k) % self.size)])
            .find(|&i| can_take(i))
            .map(|i| i as usize)
    }

    fn export_state(&self) -> Vec<u8> {
        // Version 1, little-endian: M (u32), the count of realservers (u32), each one's
        // endpoint (4 and 4 address bytes, or 6 and 16; then the port, u16) and last positive
        // weight (u32), then the M entries (u32 indices into that list). Empty: no table yet.
        if self.table.is_empty() {
            return Vec::new();
        }
        let mut v = vec![1u8];
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for (&(addr, port), w) in self.ids.iter().zip(&self.built) {
            match addr {
                IpAddr::V4(a) => {
                    v.push(4);
                    v.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    v.push(6);
                    v.extend_from_slice(&a.octets());
                }
            }
            v.extend_from_slice(&port.to_le_bytes());
            v.extend_from_slice(&w.to_le_bytes());
        }
        for e in &self.table {
            v.extend_from_slice(&e.to_le_bytes());
        }
        v
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let bad = || format!("unknown Maglev state ({} bytes)", state.len());
        let mut r = Reader(state);
        if r.take(1) != Some(&[1]) {
            return Err(bad());
        }
        let m = r.u32().ok_or_else(bad)?;
        if m != self.size {
            return Err(format!(
                "Maglev state for a table of {m} entries, this one has {}",
                self.size
            ));
        }
        let n = r.u32().ok_or_else(bad)? as usize;
        // Exported realserver → (its index here, its weight).
        let mut map = Vec::new();
        for _ in 0..n.min(state.len()) {
            let id = r.endpoint().ok_or_else(bad)?;
            let w = r.u32().ok_or_else(bad)?;
            let Some(i) = self.ids.iter().position(|x| *x == id) else {
                return Err("Maglev state for other realservers".into());
            };
            map.push((i as u32, w));
        }
        if map.len() != n || n != self.ids.len() {
            return Err("Maglev state for other realservers".into());
        }
        let mut table = Vec::with_capacity(m as usize);
        for _ in 0..m {
            table.push(match r.u32().ok_or_else(bad)? {
                NONE => NONE,
                e => map.get(e as usize).ok_or_else(bad)?.0,
            });
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        for (i, w) in map {
            self.weights[i as usize] = w;
        }
        self.built = self.weights.clone();
        self.table = table;
        self.next = None;
        Ok(())
    }
}

/// Reads exported state; `None` when it runs short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn endpoint(&mut self) -> Option<(IpAddr, u16)> {
        let addr = match self.take(1)? {
            [4] => IpAddr::from(self.array::<4>()?),
            [6] => IpAddr::from(self.array::<16>()?),
            _ => return None,
        };
        Some((addr, self.array().map(u16::from_le_bytes)?))
    }
}

export_scheduler!(Mh);

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use ringvs_sdk::testing::{flow, SchedulerHarness};
    use std::eprintln;

    fn servers(n: usize) -> Vec<(String, u32)> {
        (0..n)
            .map(|i| (format!("10.77.1.{}:80", i + 1), 1))
            .collect()
    }

    fn h(config: &[(&str, &str)], list: &[(String, u32)]) -> SchedulerHarness<Mh> {
        let list: Vec<(&str, u32)> = list.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        SchedulerHarness::<Mh>::new(config).unwrap().servers(&list)
    }

    /// Client `k` of many distinct ones.
    fn client(k: u32) -> String {
        format!("{}:4000", Ipv4Addr::from(0x0b00_0000 + k))
    }

    /// The realserver (address and port) each of `n` clients gets.
    fn mapping(
        s: &mut SchedulerHarness<Mh>,
        list: &[(String, u32)],
        n: u32,
    ) -> Vec<Option<String>> {
        (0..n)
            .map(|k| {
                s.pick(&flow(&client(k), "10.77.100.100:80"))
                    .map(|i| list[i].0.clone())
            })
            .collect()
    }

    /// Populates in one go.
    fn populate(size: u32, setup: &[(u32, u32, u32)]) -> Vec<u32> {
        let mut b = Build::new(size, setup.to_vec(), Vec::new());
        assert!(b.run(usize::MAX));
        b.table
    }

    /// Picks until no table is being built (at least once); returns how many it took.
    fn settle(s: &mut SchedulerHarness<Mh>) -> usize {
        let f = flow("10.1.1.1:1", "10.77.100.100:80");
        let mut n = 0;
        loop {
            s.pick(&f);
            n += 1;
            if s.instance().next.is_none() {
                return n;
            }
        }
    }

    fn refs(list: &[(String, u32)]) -> Vec<(&str, u32)> {
        list.iter().map(|(a, w)| (a.as_str(), *w)).collect()
    }

    #[test]
    fn hsiphash_matches_the_reference_vectors() {
        // SipHash-1-3 (32-bit result) of the bytes 0, 1, … n − 1 under the key 00 01 … 0f:
        // the reference vectors (github.com/veorq/SipHash), as in the kernel's
        // lib/siphash_kunit.c for 64-bit machines.
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        let want: [u32; 16] = [
            0x050fc4dc, 0x7d57ca93, 0x4dc7d44d, 0xe7ddf7fb, 0x88d38328, 0x49533b67, 0xc59f22a7,
            0x9bb11140, 0x8d299a8e, 0x6c063de4, 0x92ff097f, 0xf94dc352, 0x57b4d9a2, 0x1229ffa7,
            0xc0f95d34, 0x2a519956,
        ];
        let data: Vec<u8> = (0..16).collect();
        for (n, w) in want.iter().enumerate() {
            assert_eq!(hsiphash(key, &data[..n]), *w, "{n} bytes");
        }
    }

    #[test]
    fn population_as_in_the_paper() {
        // Maglev §3.4, table 1: M = 7; B0 offset 3 skip 4 (3 0 4 1 5 2 6), B1 offset 0 skip
        // 2 (0 2 4 6 1 3 5), B2 offset 3 skip 1 (3 4 5 6 0 1 2). Round 1: B0 → 3, B1 → 0,
        // B2 → 4 (3 taken); round 2: B0 → 1, B1 → 2, B2 → 5; round 3: B0 → 6 (5, 2 taken).
        assert_eq!(
            populate(7, &[(3, 4, 1), (0, 2, 1), (3, 1, 1)]),
            [1, 0, 1, 0, 2, 2, 0]
        );
        // Turns 2 and 1: B0 offset 0 skip 3 (0 3 6 2 5 1 4), B1 offset 1 skip 1. Round 1: B0
        // → 0, 3; B1 → 1. Round 2: B0 → 6, 2; B1 → 4 (2, 3 taken). Round 3: B0 → 5, full.
        assert_eq!(populate(7, &[(0, 3, 2), (1, 1, 1)]), [0, 1, 0, 0, 1, 0, 0]);
        // No turns: nothing claimed.
        assert_eq!(populate(5, &[(0, 1, 0)]), [NONE; 5]);
        // Resumed one entry at a time, the same table.
        let mut b = Build::new(7, vec![(3, 4, 1), (0, 2, 1), (3, 1, 1)], Vec::new());
        let mut runs = 1;
        while !b.run(1) {
            runs += 1;
        }
        assert_eq!((b.table, runs), (vec![1, 0, 1, 0, 2, 2, 0], 7));
    }

    /// Fraction of `before`'s clients that moved in `after`, and how many of the movers were
    /// on a realserver in `from` (None: any) or went to one in `to`.
    fn moved(before: &[Option<String>], after: &[Option<String>]) -> Vec<(String, String)> {
        before
            .iter()
            .zip(after)
            .filter(|(b, a)| b != a)
            .map(|(b, a)| (b.clone().unwrap(), a.clone().unwrap()))
            .collect()
    }

    #[test]
    fn minimal_disruption() {
        // N = 10 realservers of weight 1, 100 000 distinct clients. Removing one must move
        // about 1/N of the clients (at most 1.3/N); adding an 11th about 1/11. Maglev is
        // near-minimal, not minimal: a few clients of the other realservers move too (the
        // claims after a change shift a little); at most `stray` of all clients. A naive
        // `hash mod N` moves most clients.
        // `cargo test -p sched-mh minimal_disruption -- --nocapture` prints the figures.
        const N: usize = 10;
        const CLIENTS: u32 = 100_000;
        let c = CLIENTS as f64;
        for (size, stray) in [("65537", 0.005), ("4093", 0.02)] {
            let list = servers(N);
            let mut s = h(&[("table_size", size)], &list);
            let before = mapping(&mut s, &list, CLIENTS);

            let mut fewer = list.clone();
            let gone = fewer.remove(4).0;
            let mut s = s.servers(&refs(&fewer));
            let after = mapping(&mut s, &fewer, CLIENTS);
            let m = moved(&before, &after);
            let own = before
                .iter()
                .filter(|b| b.as_deref() == Some(&gone))
                .count();
            let others = m.iter().filter(|(from, _)| *from != gone).count();
            eprintln!(
                "mh M={size}: remove 1 of {N}: {:.4} of the clients moved ({} of {CLIENTS}); \
                 {own} were on it, {others} others moved ({:.4})",
                m.len() as f64 / c,
                m.len(),
                others as f64 / c
            );
            assert!(m.len() as f64 <= 1.3 / N as f64 * c, "{} moved", m.len());
            assert!(m.len() >= own, "all of its clients moved");
            assert!(
                (others as f64) < stray * c,
                "{others} clients of others moved"
            );

            let mut more = list.clone();
            more.push(("10.77.1.11:80".into(), 1));
            let mut s = s.servers(&refs(&more));
            let after = mapping(&mut s, &more, CLIENTS);
            let m = moved(&before, &after);
            let between = m.iter().filter(|(_, to)| to != "10.77.1.11:80").count();
            eprintln!(
                "mh M={size}: add an 11th: {:.4} of the clients moved ({}); {between} between \
                 the old ones ({:.4})",
                m.len() as f64 / c,
                m.len(),
                between as f64 / c
            );
            assert!(
                m.len() as f64 <= 1.3 / (N + 1) as f64 * c,
                "{} moved",
                m.len()
            );
            assert!(
                (between as f64) < stray * c,
                "{between} moved between old ones"
            );
        }

        // The naive table: realserver `h₁(client) mod N` of the list.
        let naive = |list: &[(String, u32)]| -> Vec<Option<String>> {
            (0..CLIENTS)
                .map(|k| {
                    let h = hash(KEY1, Ipv4Addr::from(0x0b00_0000 + k).into(), 0, 0);
                    Some(list[h as usize % list.len()].0.clone())
                })
                .collect()
        };
        let list = servers(N);
        let mut fewer = list.clone();
        fewer.remove(4);
        let mut more = list.clone();
        more.push(("10.77.1.11:80".into(), 1));
        let (removed, added) = (
            moved(&naive(&list), &naive(&fewer)).len() as f64 / c,
            moved(&naive(&list), &naive(&more)).len() as f64 / c,
        );
        eprintln!("hash mod N: remove 1 of {N}: {removed:.4} moved; add an 11th: {added:.4}");
        assert!(removed > 0.8 && added > 0.8, "{removed} {added}");
    }

    #[test]
    fn ipvs_turns() {
        // (weights, turns), by hand: w / gcd, shifted right by fls(max / gcd) − 6 if positive,
        // at least 1 for w > 0.
        let cases: &[(&[u32], &[u32])] = &[
            (&[100, 50, 25], &[4, 2, 1]), // gcd 25
            (&[0, 3, 6], &[0, 1, 2]),     // gcd 3
            (&[63, 1], &[63, 1]),         // fls(63) = 6: no shift
            (&[64, 1], &[32, 1]),         // fls(64) = 7: >> 1, and 1 >> 1 = 0 → 1
            (&[1, 100], &[1, 50]),        // fls(100) = 7
            (&[65535, 1000], &[51, 1]),   // gcd 5: 13107, 200; fls(13107) = 14: >> 8
            (&[0, 0], &[0, 0]),
        ];
        for (w, t) in cases {
            assert_eq!(turns(w), *t, "weights {w:?}");
        }
    }

    #[test]
    fn same_client_same_server() {
        // Two instances built alike hold the same table; a client keeps its realserver.
        let list = servers(10);
        let (mut a, mut b) = (h(&[], &list), h(&[], &list));
        assert!(a.instance().table == b.instance().table);
        let first = mapping(&mut a, &list, 1000);
        assert_eq!(mapping(&mut a, &list, 1000), first);
        assert_eq!(mapping(&mut b, &list, 1000), first);
        assert!(first.iter().all(Option::is_some));
    }

    #[test]
    fn spreads_clients_by_weight() {
        // Weights 1, 2, 3, 4: turns 1, 2, 3, 4; entries and 100 000 clients within half a
        // point of 1/10, 2/10, 3/10, 4/10.
        let list: Vec<(String, u32)> = (0..4)
            .map(|i| (format!("10.77.1.{}:80", i + 1), i + 1))
            .collect();
        let mut s = h(&[], &list);
        let t = s.instance().table.clone();
        let got = mapping(&mut s, &list, 100_000);
        for (i, (addr, w)) in list.iter().enumerate() {
            let share = *w as f64 / 10.0;
            let entries = t.iter().filter(|&&e| e == i as u32).count() as f64 / t.len() as f64;
            let clients = got.iter().filter(|g| g.as_deref() == Some(addr)).count() as f64;
            eprintln!(
                "weight {w}: {entries:.4} of the entries, {:.4} of the clients",
                clients / 1e5
            );
            assert!(
                (entries - share).abs() < 0.005,
                "weight {w}: {entries} of the entries"
            );
            assert!(
                (clients / 1e5 - share).abs() < 0.005,
                "weight {w}: {clients} clients"
            );
        }
    }

    #[test]
    fn fallback_option() {
        // Realserver 3 of 10 quiesced. Without fallback its clients get no pick; with it
        // each goes where the definition's probes lead (never 3), spread over the nine
        // others, always the same. Nobody else moves, and its clients come back after.
        let list = servers(10);
        let f = |k| flow(&client(k), "10.77.100.100:80");
        for fallback in [false, true] {
            let mut s = h(
                &[("fallback", if fallback { "true" } else { "false" })],
                &list,
            );
            let before = mapping(&mut s, &list, 20_000);
            s.set_weight(3, 0);
            let mut spread = [0u32; 10];
            for k in 0..20_000u32 {
                let got = s.pick(&f(k));
                if before[k as usize].as_deref() != Some("10.77.1.4:80") {
                    assert_eq!(got.map(|i| list[i].0.clone()), before[k as usize]);
                    continue;
                }
                if !fallback {
                    assert_eq!(got, None);
                    continue;
                }
                let mh = s.instance();
                let e = mh.entry(&f(k), 0) as u32;
                let want = (0..mh.size)
                    .map(|j| mh.table[mh.entry(&f(k), (e + j) % mh.size)] as usize)
                    .find(|&i| i != 3);
                assert_eq!(got, want, "client {k}");
                assert_eq!(s.pick(&f(k)), got, "client {k}, again");
                spread[got.unwrap()] += 1;
            }
            if fallback {
                let n: u32 = spread.iter().sum();
                assert!(n > 1500, "{n} clients on realserver 3");
                for (i, c) in spread.iter().enumerate().filter(|&(i, _)| i != 3) {
                    assert!(
                        *c as f64 > 0.05 * n as f64 && (*c as f64) < 0.2 * n as f64,
                        "{i}: {c}"
                    );
                }
            }
            // Back: its entries were kept.
            s.set_weight(3, 1);
            assert!(s.instance().next.is_none());
            assert_eq!(mapping(&mut s, &list, 20_000), before);
            for i in 0..10 {
                s.set_weight(i, 0);
            }
            assert!(mapping(&mut s, &list, 100).iter().all(Option::is_none));
        }
    }

    #[test]
    fn port_option() {
        // 1000 connections from one address: with `port` they spread over all ten (about
        // 100 each), without it they all reach one.
        let list = servers(10);
        for (port, want) in [("true", 10), ("false", 1)] {
            let mut s = h(&[("port", port)], &list);
            let mut n = [0u32; 10];
            for p in 1000..2000 {
                n[s.pick(&flow(&format!("10.9.9.9:{p}"), "10.77.100.100:80"))
                    .unwrap()] += 1;
            }
            assert_eq!(
                n.iter().filter(|&&c| c > 0).count(),
                want,
                "port = {port}: {n:?}"
            );
            assert!(n.iter().all(|&c| c == 0 || c >= 50 || want == 1), "{n:?}");
        }
    }

    #[test]
    fn ipv6_clients_fold_to_32_bits() {
        // 0x20010db8 ^ 0x00010002 ^ 0x00030004 ^ 0x00050006.
        assert_eq!(fold("2001:db8:1:2:3:4:5:6".parse().unwrap()), 0x2006_0db8);
        // 2001:db8::x folds to 0x20010db8 ^ x, as the IPv4 client with that number.
        let list = servers(10);
        let mut s = h(&[], &list);
        for x in 0..1000u32 {
            let v4 = format!("{}:80", Ipv4Addr::from(0x2001_0db8 ^ x));
            let v6 = format!("[2001:db8::{x:x}]:80");
            let f = |c: &str| flow(c, "10.77.100.100:80");
            assert_eq!(s.pick(&f(&v4)), s.pick(&f(&v6)), "2001:db8::{x:x}");
        }
    }

    #[test]
    fn a_weight_change_is_built_over_a_few_picks() {
        // Realserver 3's weight goes from 1 to 4 at runtime: the old table serves while the
        // new one is built, a bounded number of entries per pick; then the table is the one a
        // fresh build with weight 4 gives.
        let list = servers(10);
        let mut s = h(&[], &list);
        let old = s.instance().table.clone();
        s.set_weight(3, 4);
        s.pick(&flow("10.1.1.1:1", "10.77.100.100:80"));
        assert!(s.instance().next.is_some(), "built in one pick");
        assert!(s.instance().table == old);
        let picks = settle(&mut s);
        eprintln!("a table of 65537 built over {} picks", picks + 1);
        assert!((2..=30).contains(&picks), "{picks} more picks");
        let mut heavier = list.clone();
        heavier[3].1 = 4;
        assert!(s.instance().table == h(&[], &heavier).instance().table);
        assert!(s.instance().table != old);
        // Quiesced: its entries stay, nothing is built.
        s.set_weight(3, 0);
        s.pick(&flow("10.1.1.1:1", "10.77.100.100:80"));
        assert!(s.instance().next.is_none());
        assert!(s.instance().table == h(&[], &heavier).instance().table);
    }

    #[test]
    fn a_quiesced_server_keeps_its_entries_across_servers_changed() {
        // Realserver 3 went to weight 4, then a new list (an 11th added) says 0 for it
        // (quiesced): it keeps 4, as if the list had said 4.
        let list = servers(10);
        let mut s = h(&[], &list);
        s.set_weight(3, 4);
        settle(&mut s);
        let mut more = list.clone();
        more.push(("10.77.1.11:80".into(), 1));
        more[3].1 = 0;
        let mut s = s.servers(&refs(&more));
        more[3].1 = 4;
        assert!(s.instance().table == h(&[], &more).instance().table);
        // Its clients (4 of 14 parts) get no pick; the others are served.
        let got = mapping(&mut s, &more, 1000);
        let none = got.iter().filter(|g| g.is_none()).count();
        assert!(
            (200..400).contains(&none),
            "{none} of 1000 clients not served"
        );
    }

    #[test]
    fn a_swapped_in_version_keeps_the_table() {
        // Realserver 2 went to weight 4 at runtime, then was quiesced: the table is built
        // with 4, though `servers_changed` still says 1. A successor keeps that table (a
        // fresh build would use 1 and move clients).
        let list = servers(10);
        let mut s = h(&[], &list);
        s.set_weight(2, 4);
        settle(&mut s);
        s.set_weight(2, 0);
        let before = mapping(&mut s, &list, 5000);
        let table = s.instance().table.clone();
        let mut next = s.swap_to::<Mh>(&[]).unwrap();
        assert!(next.instance().table == table);
        assert_eq!(mapping(&mut next, &list, 5000), before);
        assert!(
            h(&[], &list).instance().table != table,
            "a fresh build differs"
        );
        // Back at 4: no rebuild, the same table.
        next.set_weight(2, 4);
        next.pick(&flow("10.1.1.1:1", "10.77.100.100:80"));
        assert!(next.instance().next.is_none() && next.instance().table == table);
    }

    #[test]
    fn refuses_state_it_cannot_use() {
        let list = servers(10);
        let mut s = h(&[], &list);
        let good = s.instance().export_state();
        assert!(s.instance().import_state(&[]).is_ok());
        assert!(s.instance().import_state(&[2]).is_err());
        assert!(s.instance().import_state(&good[..good.len() - 1]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(s.instance().import_state(&long).is_err());
        // Another table size, other realservers.
        assert!(s.swap_to::<Mh>(&[("table_size", "4093")]).is_err());
        let mut nine = h(&[], &servers(9));
        assert!(nine.instance().import_state(&good).is_err());
        let mut fresh = SchedulerHarness::<Mh>::new(&[]).unwrap();
        assert!(fresh.instance().export_state().is_empty());
    }

    #[test]
    fn no_servers_no_pick() {
        let mut s = h(&[("fallback", "true")], &[]);
        assert_eq!(s.pick(&flow("10.1.1.1:1", "10.77.100.100:80")), None);
        let list = vec![
            ("10.77.1.1:80".to_string(), 0),
            ("10.77.1.2:80".to_string(), 0),
        ];
        let mut s = h(&[("fallback", "true")], &list);
        assert_eq!(s.pick(&flow("10.1.1.1:1", "10.77.100.100:80")), None);
        // Weighted at runtime: built over some picks, then every client is served.
        s.set_weight(1, 1);
        settle(&mut s);
        assert!(mapping(&mut s, &list, 100)
            .iter()
            .all(|m| m.as_deref() == Some("10.77.1.2:80")));
    }

    #[test]
    fn checks_its_config() {
        for ok in ["2", "7", "4093", "65521", "65537", "131071"] {
            assert!(
                SchedulerHarness::<Mh>::new(&[("table_size", ok)]).is_ok(),
                "{ok}"
            );
        }
        for bad in ["0", "1", "65536", "65535", "262147", "-7", "x"] {
            assert!(
                SchedulerHarness::<Mh>::new(&[("table_size", bad)]).is_err(),
                "{bad}"
            );
        }
        assert!(SchedulerHarness::<Mh>::new(&[("port", "true"), ("fallback", "true")]).is_ok());
        assert!(SchedulerHarness::<Mh>::new(&[("fallback", "1")]).is_err());
        assert!(SchedulerHarness::<Mh>::new(&[("mh-port", "true")]).is_err());
    }
}
