//! Rate limits per source and per prefix, beyond IPVS (after HAProxy's stick tables): refuse a
//! new flow when its source opens flows too fast or holds too many, or when its prefix opens
//! flows too fast; optionally block the offenders for a while.
//!
//! - `admit`: the host's director-wide estimates for the flow's address (`source.new-flows`
//!   in the last second, `source.concurrent` now) are compared to `new_flows_per_sec` and
//!   `max_concurrent`: a flow is refused when its source already has that many. Prefixes
//!   (`prefix_len` for IPv4, `prefix_len_v6` for IPv6) get a token bucket each in the
//!   instance, refilled at `prefix_new_flows_per_sec / queues` per second (each instance sees
//!   about 1/`queues` of the flows; `queues` of the last tick, 1 before the first), holding
//!   one second's worth. A bucket that has refilled is forgotten at the next tick (it says
//!   nothing a fresh one would not), and at most `max_prefixes` are kept: beyond that, new
//!   prefixes are not limited until some expire.
//! - `tick`, with `action = "block"`: `top-sources` (the director's heaviest sources by new
//!   flows) are summed by prefix; a prefix over `prefix_new_flows_per_sec` and a source over
//!   `new_flows_per_sec` is blocked for `block_secs` in `block_mode`. A block is remembered
//!   until it expires so it is not sent again, and none is sent for an address a remembered
//!   block already covers.
//!
//! The IPVS modes apply as for the other defenses, default 3 (always on): in modes 1 and 2
//! the limits hold only while memory is short.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use ringvs_sdk::prelude::*;
use ringvs_sdk::pressure::Pressure;
use ringvs_sdk::{BlockMode, Prefix, Table};

/// Default block time, seconds.
pub const BLOCK_SECS: u32 = 60;
/// The longest block the host accepts, seconds (the host's own bound, from the ABI).
pub use ringvs_sdk::MAX_BLOCK_SECS;
/// Default bound on the prefixes with a token bucket.
pub const MAX_PREFIXES: u32 = 16_384;
/// Bound on the blocks remembered (the soonest to expire is forgotten first).
pub const MAX_BLOCKS: usize = 4096;

/// An address prefix as a map key: family, address bits masked to `len` (IPv4 in the low
/// 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    v6: bool,
    bits: u128,
    len: u8,
}

impl Key {
    /// The prefix of `addr` of length `len` (at most the family's width).
    fn of(addr: IpAddr, len: u8) -> Key {
        let (v6, width, bits) = match addr {
            IpAddr::V4(a) => (false, 32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, 128, u128::from(a)),
        };
        let len = len.min(width);
        Key {
            v6,
            bits: bits & mask(width, len),
            len,
        }
    }

    /// Whether this prefix contains `other`.
    fn covers(&self, other: &Key) -> bool {
        let width = if self.v6 { 128 } else { 32 };
        self.v6 == other.v6
            && self.len <= other.len
            && other.bits & mask(width, self.len) == self.bits
    }

    fn prefix(&self) -> Prefix {
        let addr = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.bits as u32))
        };
        Prefix {
            addr,
            len: self.len,
        }
    }
}

/// The top `len` of `width` bits.
fn mask(width: u8, len: u8) -> u128 {
    let ones = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    ones & !(ones.checked_shr(u32::from(len)).unwrap_or(0))
}

/// A prefix's token bucket, in units of 1/`queues` flow: a flow costs `queues`, a second adds
/// `prefix_new_flows_per_sec`, the bucket holds one second's worth (and at least one flow).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    stamp: u64,
}

impl Bucket {
    fn refill(&mut self, now: u64, rate: u64, cap: u64) {
        let dt = now.saturating_sub(self.stamp);
        self.tokens = cap.min(self.tokens.saturating_add(dt.saturating_mul(rate)));
        self.stamp = now;
    }
}

/// What to do with the excess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Excess {
    /// Refuse the excess flows only.
    Drop,
    /// Also block offending sources and prefixes.
    Block,
}

/// Limits, buckets and remembered blocks of one instance.
#[derive(Debug)]
pub struct RateLimit {
    pressure: Pressure,
    new_flows_per_sec: Option<u32>,
    max_concurrent: Option<u32>,
    prefix_len: u8,
    prefix_len_v6: u8,
    prefix_new_flows_per_sec: Option<u32>,
    excess: Excess,
    block_secs: u32,
    block_mode: BlockMode,
    max_prefixes: u32,
    /// Whether the limits hold (the mode's verdict at the last tick).
    active: bool,
    /// `now` and `queues` of the last tick.
    now: u64,
    queues: u32,
    buckets: BTreeMap<Key, Bucket>,
    /// Blocks sent, until when.
    blocked: BTreeMap<Key, u64>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            pressure: Pressure::new(3),
            new_flows_per_sec: None,
            max_concurrent: None,
            prefix_len: 32,
            prefix_len_v6: 128,
            prefix_new_flows_per_sec: None,
            excess: Excess::Drop,
            block_secs: BLOCK_SECS,
            block_mode: BlockMode::Tarpit,
            max_prefixes: MAX_PREFIXES,
            active: true,
            now: 0,
            queues: 1,
            buckets: BTreeMap::new(),
            blocked: BTreeMap::new(),
        }
    }
}

/// `key` as a limit: absent, or at least 1.
fn limit(config: &Config, key: &str) -> Result<Option<u32>, String> {
    match config.parse::<u32>(key)? {
        Some(0) => Err(format!(
            "config key `{key}`: cannot use 0 (expected 1 or more; leave it out for no limit)"
        )),
        v => Ok(v),
    }
}

/// `key` as a prefix length in `1..=max`.
fn prefix_len(config: &Config, key: &str, max: u8) -> Result<u8, String> {
    let v = config.parse_or::<u8>(key, max)?;
    if v == 0 || v > max {
        return Err(format!(
            "config key `{key}`: cannot use {v} (expected a prefix length from 1 to {max})"
        ));
    }
    Ok(v)
}

impl RateLimit {
    /// Prefixes with a token bucket now.
    pub fn tracked_prefixes(&self) -> usize {
        self.buckets.len()
    }

    /// Blocks remembered now.
    pub fn remembered_blocks(&self) -> usize {
        self.blocked.len()
    }

    fn prefix_of(&self, addr: IpAddr) -> Key {
        let len = match addr {
            IpAddr::V4(_) => self.prefix_len,
            IpAddr::V6(_) => self.prefix_len_v6,
        };
        Key::of(addr, len)
    }

    /// The bucket's capacity and a flow's cost, in 1/`queues` flow.
    fn bucket_units(&self, rate: u32) -> (u64, u64) {
        let q = u64::from(self.queues);
        (u64::from(rate).max(q), q)
    }

    /// Takes a flow's token from `addr`'s prefix; false if there is none.
    fn take(&mut self, addr: IpAddr, rate: u32) -> bool {
        let key = self.prefix_of(addr);
        let (cap, cost) = self.bucket_units(rate);
        if let Some(b) = self.buckets.get_mut(&key) {
            b.refill(self.now, u64::from(rate), cap);
            if b.tokens < cost {
                return false;
            }
            b.tokens -= cost;
        } else if self.buckets.len() < self.max_prefixes as usize {
            let b = Bucket {
                tokens: cap - cost,
                stamp: self.now,
            };
            self.buckets.insert(key, b);
        }
        true
    }

    /// Remembers a block of `key` until `until`, forgetting the soonest to expire if full.
    fn remember(&mut self, key: Key, until: u64) {
        if self.blocked.len() >= MAX_BLOCKS {
            if let Some(k) = self
                .blocked
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(k, _)| *k)
            {
                self.blocked.remove(&k);
            }
        }
        self.blocked.insert(key, until);
    }

    /// Offenders among the top sources: prefixes over their rate, then sources over theirs.
    fn offenders(&self, stats: &TickStats) -> Vec<Key> {
        let mut out = Vec::new();
        if let Some(rate) = self.prefix_new_flows_per_sec {
            let mut sums: Vec<(Key, u64)> = Vec::new();
            for s in &stats.top_sources {
                let k = self.prefix_of(s.addr);
                match sums.iter_mut().find(|(p, _)| *p == k) {
                    Some((_, n)) => *n += u64::from(s.new_flows),
                    None => sums.push((k, u64::from(s.new_flows))),
                }
            }
            out.extend(
                sums.into_iter()
                    .filter(|(_, n)| *n > u64::from(rate))
                    .map(|(k, _)| k),
            );
        }
        if let Some(l) = self.new_flows_per_sec {
            out.extend(
                stats
                    .top_sources
                    .iter()
                    .filter(|s| s.new_flows > l)
                    .map(|s| Key::of(s.addr, 128)),
            );
        }
        out
    }
}

impl Defense for RateLimit {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let [a, b, c] = Pressure::KEYS;
        config.check_keys(&[
            a,
            b,
            c,
            "new_flows_per_sec",
            "max_concurrent",
            "prefix_len",
            "prefix_len_v6",
            "prefix_new_flows_per_sec",
            "action",
            "block_secs",
            "block_mode",
            "max_prefixes",
        ])?;
        self.pressure = Pressure::from_config(config, 3)?;
        self.active = self.pressure.mode() == 3;
        self.new_flows_per_sec = limit(config, "new_flows_per_sec")?;
        self.max_concurrent = limit(config, "max_concurrent")?;
        self.prefix_new_flows_per_sec = limit(config, "prefix_new_flows_per_sec")?;
        if self.new_flows_per_sec.is_none()
            && self.max_concurrent.is_none()
            && self.prefix_new_flows_per_sec.is_none()
        {
            return Err(
                "no limit configured (expected one or more of `new_flows_per_sec`, \
                        `max_concurrent`, `prefix_new_flows_per_sec`)"
                    .into(),
            );
        }
        self.prefix_len = prefix_len(config, "prefix_len", 32)?;
        self.prefix_len_v6 = prefix_len(config, "prefix_len_v6", 128)?;
        self.max_prefixes = config.parse_or("max_prefixes", MAX_PREFIXES)?;
        if self.max_prefixes == 0 {
            return Err("config key `max_prefixes`: cannot use 0 (expected 1 or more)".into());
        }
        if self.prefix_new_flows_per_sec.is_none() {
            for k in ["prefix_len", "prefix_len_v6", "max_prefixes"] {
                if config.get(k).is_some() {
                    return Err(format!(
                        "config key `{k}`: only used with `prefix_new_flows_per_sec` \
                         (not set)"
                    ));
                }
            }
        }
        self.excess = match config.get("action") {
            None | Some("drop") => Excess::Drop,
            Some("block") => Excess::Block,
            Some(v) => {
                return Err(format!(
                    "config key `action`: cannot use {v:?} (expected \"drop\" or \"block\")"
                ))
            }
        };
        self.block_secs = config.parse_or("block_secs", BLOCK_SECS)?;
        if !(1..=MAX_BLOCK_SECS).contains(&self.block_secs) {
            return Err(format!(
                "config key `block_secs`: cannot use {} (expected 1 to {MAX_BLOCK_SECS})",
                self.block_secs
            ));
        }
        self.block_mode = match config.get("block_mode") {
            None | Some("tarpit") => BlockMode::Tarpit,
            Some("drop") => BlockMode::Drop,
            Some(v) => {
                return Err(format!(
                    "config key `block_mode`: cannot use {v:?} (expected \"tarpit\" or \"drop\")"
                ))
            }
        };
        if self.excess == Excess::Drop {
            for k in ["block_secs", "block_mode"] {
                if config.get(k).is_some() {
                    return Err(format!(
                        "config key `{k}`: only used with action = \"block\""
                    ));
                }
            }
        }
        Ok(())
    }

    fn admit(&mut self, flow: &Flow, source: &SourceStats) -> Verdict {
        if !self.active {
            return Verdict::Accept;
        }
        let over = |limit: Option<u32>, n: u32| limit.is_some_and(|l| n >= l);
        if over(self.new_flows_per_sec, source.new_flows)
            || over(self.max_concurrent, source.concurrent)
        {
            return Verdict::Drop;
        }
        if let Some(rate) = self.prefix_new_flows_per_sec {
            if !self.take(flow.client, rate) {
                return Verdict::Drop;
            }
        }
        Verdict::Accept
    }

    fn tick(&mut self, stats: &TickStats, _table: &dyn Table) -> Vec<Action> {
        self.now = stats.now;
        self.queues = stats.queues.max(1);
        self.active = self.pressure.update(stats).on;
        if let Some(rate) = self.prefix_new_flows_per_sec {
            let (cap, _) = self.bucket_units(rate);
            let now = self.now;
            self.buckets.retain(|_, b| {
                b.refill(now, u64::from(rate), cap);
                b.tokens < cap
            });
        }
        let now = self.now;
        self.blocked.retain(|_, until| *until > now);
        if !self.active || self.excess != Excess::Block {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for key in self.offenders(stats) {
            if self.blocked.keys().any(|b| b.covers(&key)) {
                continue;
            }
            self.remember(key, now + u64::from(self.block_secs));
            actions.push(Action::Block {
                prefix: key.prefix(),
                secs: self.block_secs,
                mode: self.block_mode,
            });
        }
        actions
    }
}

export_defense!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, DefenseHarness, MockTable};
    use ringvs_sdk::SourceRate;

    const VIP: &str = "10.77.100.100:80";

    fn h(config: &[(&str, &str)]) -> DefenseHarness<RateLimit> {
        DefenseHarness::<RateLimit>::new(config).unwrap()
    }

    fn src(new_flows: u32, concurrent: u32) -> SourceStats {
        SourceStats {
            new_flows,
            concurrent,
        }
    }

    fn admit(h: &mut DefenseHarness<RateLimit>, client: &str) -> Verdict {
        h.admit(&flow(client, VIP), src(0, 0))
    }

    fn tick(h: &mut DefenseHarness<RateLimit>, now: u64, queues: u32) -> Vec<Action> {
        tick_top(h, now, queues, &[])
    }

    fn tick_top(
        h: &mut DefenseHarness<RateLimit>,
        now: u64,
        queues: u32,
        top: &[(&str, u32)],
    ) -> Vec<Action> {
        let st = TickStats {
            now,
            queues,
            memory_limit: 8000,
            top_sources: top
                .iter()
                .map(|(a, n)| SourceRate {
                    addr: a.parse().unwrap(),
                    new_flows: *n,
                    packets: *n,
                })
                .collect(),
            ..TickStats::default()
        };
        h.tick(&st, &MockTable::new(0, Vec::new()))
    }

    fn block(addr: &str, len: u8, secs: u32, mode: BlockMode) -> Action {
        Action::Block {
            prefix: Prefix {
                addr: addr.parse().unwrap(),
                len,
            },
            secs,
            mode,
        }
    }

    #[test]
    fn per_source_limits() {
        let mut r = h(&[("new_flows_per_sec", "10"), ("max_concurrent", "5")]);
        let f = flow("10.1.2.3:40000", VIP);
        for (s, want) in [
            (src(9, 4), Verdict::Accept),
            (src(10, 0), Verdict::Drop),
            (src(500, 0), Verdict::Drop),
            (src(0, 5), Verdict::Drop),
            (src(0, 4), Verdict::Accept),
        ] {
            assert_eq!(r.admit(&f, s), want, "{s:?}");
        }
        // Only what is configured limits.
        let mut r = h(&[("max_concurrent", "5")]);
        assert_eq!(r.admit(&f, src(1_000_000, 0)), Verdict::Accept);
    }

    #[test]
    fn prefix_bucket_shares_the_rate_among_queues() {
        let mut r = h(&[("prefix_len", "24"), ("prefix_new_flows_per_sec", "8")]);
        // Before the first tick: one queue assumed, the whole rate.
        let got: Vec<Verdict> = (0..9)
            .map(|i| admit(&mut r, &format!("10.1.2.{i}:1")))
            .collect();
        assert_eq!(got[..8], [Verdict::Accept; 8]);
        assert_eq!(got[8], Verdict::Drop);
        // Four queues: 2 flows a second for this instance, per /24.
        tick(&mut r, 1, 4);
        let mut got = Vec::new();
        for c in ["10.1.2.3:1", "10.1.2.200:2", "10.1.2.9:3", "10.1.3.1:1"] {
            got.push(admit(&mut r, c));
        }
        assert_eq!(
            got,
            [
                Verdict::Accept,
                Verdict::Accept,
                Verdict::Drop,   // same /24, over
                Verdict::Accept, // another /24
            ]
        );
        tick(&mut r, 2, 4);
        assert_eq!(admit(&mut r, "10.1.2.77:1"), Verdict::Accept);
    }

    #[test]
    fn prefix_rate_below_one_flow_per_queue() {
        // 2 flows/s over 4 queues: half a flow per second here, so one flow every 2 s.
        let mut r = h(&[("prefix_len", "16"), ("prefix_new_flows_per_sec", "2")]);
        tick(&mut r, 1, 4);
        assert_eq!(admit(&mut r, "10.9.0.1:1"), Verdict::Accept);
        assert_eq!(admit(&mut r, "10.9.0.2:1"), Verdict::Drop);
        tick(&mut r, 2, 4);
        assert_eq!(admit(&mut r, "10.9.0.3:1"), Verdict::Drop);
        tick(&mut r, 3, 4);
        assert_eq!(admit(&mut r, "10.9.0.4:1"), Verdict::Accept);
    }

    #[test]
    fn buckets_expire_and_are_bounded() {
        let mut r = h(&[("prefix_new_flows_per_sec", "3"), ("max_prefixes", "2")]);
        tick(&mut r, 10, 1);
        for _ in 0..3 {
            assert_eq!(admit(&mut r, "192.0.2.1:1"), Verdict::Accept);
        }
        assert_eq!(admit(&mut r, "192.0.2.1:1"), Verdict::Drop);
        assert_eq!(admit(&mut r, "192.0.2.2:1"), Verdict::Accept);
        // Full: a third address is not tracked (not limited).
        for _ in 0..10 {
            assert_eq!(admit(&mut r, "192.0.2.3:1"), Verdict::Accept);
        }
        assert_eq!(r.instance().tracked_prefixes(), 2);
        // A second later every bucket has refilled: forgotten.
        tick(&mut r, 11, 1);
        assert_eq!(r.instance().tracked_prefixes(), 0);
        // One still short is kept.
        for _ in 0..3 {
            admit(&mut r, "192.0.2.1:1");
        }
        tick(&mut r, 11, 1);
        assert_eq!(r.instance().tracked_prefixes(), 1);
    }

    #[test]
    fn blocks_offending_prefixes_and_sources_from_top_sources() {
        let mut r = h(&[
            ("action", "block"),
            ("prefix_len", "24"),
            ("prefix_new_flows_per_sec", "100"),
            ("new_flows_per_sec", "80"),
        ]);
        let top = [
            ("192.0.2.7", 90), // alone: under the prefix rate, over the source rate
            ("10.0.0.1", 60),  // 60 + 50 in 10.0.0.0/24: over the prefix rate
            ("10.0.0.2", 50),
            ("10.0.0.3", 85), // over the source rate, inside the blocked /24
            ("198.51.100.1", 80),
        ];
        let t = BlockMode::Tarpit;
        assert_eq!(
            tick_top(&mut r, 1, 2, &top),
            [block("10.0.0.0", 24, 60, t), block("192.0.2.7", 32, 60, t)]
        );
    }

    #[test]
    fn blocks_are_not_repeated_until_they_expire() {
        let mut r = h(&[
            ("action", "block"),
            ("new_flows_per_sec", "10"),
            ("block_secs", "5"),
            ("block_mode", "drop"),
        ]);
        let top = [("2001:db8::1", 50)];
        let b = [block("2001:db8::1", 128, 5, BlockMode::Drop)];
        assert_eq!(tick_top(&mut r, 100, 1, &top), b);
        for now in 101..105 {
            assert_eq!(tick_top(&mut r, now, 1, &top), [], "at {now}");
        }
        assert_eq!(r.instance().remembered_blocks(), 1);
        // The host lifted it at 105: still offending, blocked again.
        assert_eq!(tick_top(&mut r, 105, 1, &top), b);
    }

    #[test]
    fn remembered_blocks_are_bounded() {
        let mut r = h(&[
            ("action", "block"),
            ("new_flows_per_sec", "10"),
            ("block_secs", "86400"),
        ]);
        let mut sent = 0;
        for now in 0..300u32 {
            let addrs: Vec<String> = (0..16u32)
                .map(|i| format!("10.{}.{}.{}", now / 256, now % 256, i))
                .collect();
            let top: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 20)).collect();
            sent += tick_top(&mut r, u64::from(now), 1, &top).len();
        }
        assert_eq!(sent, 300 * 16);
        assert_eq!(r.instance().remembered_blocks(), MAX_BLOCKS);
    }

    #[test]
    fn ipv6_prefixes() {
        let mut r = h(&[
            ("action", "block"),
            ("prefix_len_v6", "48"),
            ("prefix_new_flows_per_sec", "10"),
        ]);
        let top = [
            ("2001:db8:1:2::1", 6),
            ("2001:db8:1:ffff::9", 6),
            ("2001:db8:2::1", 9),
        ];
        assert_eq!(
            tick_top(&mut r, 1, 1, &top),
            [block("2001:db8:1::", 48, 60, BlockMode::Tarpit)]
        );
        // IPv4 keeps its own length (32 by default).
        assert_eq!(
            Key::of("10.1.2.3".parse().unwrap(), 24).prefix().addr,
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn action_drop_sends_no_blocks() {
        let mut r = h(&[
            ("new_flows_per_sec", "10"),
            ("prefix_new_flows_per_sec", "10"),
        ]);
        assert_eq!(tick_top(&mut r, 1, 1, &[("10.0.0.1", 1000)]), []);
    }

    #[test]
    fn modes_gate_the_limits() {
        let short = |r: &mut DefenseHarness<RateLimit>| {
            let st = TickStats {
                queues: 1,
                memory: 7900,
                memory_limit: 8000,
                top_sources: vec![SourceRate {
                    addr: "10.0.0.1".parse().unwrap(),
                    new_flows: 100,
                    packets: 100,
                }],
                ..TickStats::default()
            };
            r.tick(&st, &MockTable::new(0, Vec::new()))
        };
        let cfg = [
            ("mode", "1"),
            ("action", "block"),
            ("new_flows_per_sec", "10"),
        ];
        let mut r = h(&cfg);
        let f = flow("10.0.0.1:1", VIP);
        // Before any tick, and while memory is fine: no limit.
        assert_eq!(r.admit(&f, src(50, 0)), Verdict::Accept);
        assert_eq!(tick_top(&mut r, 1, 1, &[("10.0.0.1", 100)]), []);
        assert_eq!(r.admit(&f, src(50, 0)), Verdict::Accept);
        assert_eq!(short(&mut r).len(), 1);
        assert_eq!(r.admit(&f, src(50, 0)), Verdict::Drop);
        let mut off = h(&[("mode", "0"), ("new_flows_per_sec", "10")]);
        assert_eq!(short(&mut off), []);
        assert_eq!(off.admit(&f, src(50, 0)), Verdict::Accept);
    }

    #[test]
    fn prefix_keys() {
        let k = |a: &str, l| Key::of(a.parse().unwrap(), l);
        assert!(k("10.1.0.0", 16).covers(&k("10.1.200.3", 32)));
        assert!(!k("10.1.0.0", 16).covers(&k("10.2.0.3", 32)));
        assert!(!k("10.1.2.3", 32).covers(&k("10.1.0.0", 16)));
        assert!(!k("::a01:203", 128).covers(&k("10.1.2.3", 32)));
        assert_eq!(k("10.1.2.3", 32).prefix().len, 32);
        assert_eq!(k("2001:db8::1", 200).len, 128);
    }

    #[test]
    fn refuses_bad_config() {
        let nfps = ("new_flows_per_sec", "10");
        for cfg in [
            &[][..],
            &[("new_flows_per_sec", "0")],
            &[("max_concurrent", "many")],
            &[("prefix_new_flows_per_sec", "5"), ("prefix_len", "33")],
            &[("prefix_new_flows_per_sec", "5"), ("prefix_len", "0")],
            &[("prefix_new_flows_per_sec", "5"), ("prefix_len_v6", "129")],
            &[nfps, ("prefix_len", "24")],
            &[("prefix_new_flows_per_sec", "5"), ("max_prefixes", "0")],
            &[nfps, ("action", "reject")],
            &[nfps, ("action", "block"), ("block_secs", "0")],
            &[nfps, ("action", "block"), ("block_secs", "86401")],
            &[nfps, ("action", "block"), ("block_mode", "slow")],
            &[nfps, ("block_secs", "30")],
            &[nfps, ("rate", "1")],
            &[nfps, ("mode", "4")],
        ] {
            assert!(
                DefenseHarness::<RateLimit>::new(cfg).is_err(),
                "{cfg:?} accepted"
            );
        }
        let err = DefenseHarness::<RateLimit>::new(&[]).err().unwrap();
        assert!(err.contains("no limit"), "{err}");
    }
}
