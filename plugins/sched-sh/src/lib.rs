//! Source hashing (IPVS `ip_vs_sh.c`): a static map from the client's address (and, with
//! `port = true`, its port: IPVS's `sh-port`) to a realserver, so a client keeps reaching the
//! same one.
//!
//! The table has 256 buckets (IPVS's default `CONFIG_IP_VS_SH_TAB_BITS` = 8), dealt in
//! configuration order, each realserver taking as many consecutive buckets as its weight:
//! weights 1, 2, 3 repeat `A B B C C C` from bucket 0 (43, 86 and 127 buckets). Keep the
//! weights' sum within 256, as in IPVS, or the last realservers get no bucket.
//!
//! The bucket of a client is IPVS's Fibonacci hash of `key = addr + port` (`port` = 0 without
//! the option; an IPv6 address folded to the XOR of its four 32-bit words):
//! `bucket(key, offset) = (offset + ((key × 0x61C88647 mod 2³²) >> 24)) mod 256`, offset 0.
//! If that bucket's realserver cannot take the flow (weight 0 in `pick`), there is no pick,
//! unless `fallback = true` (IPVS's `sh-fallback`): then the buckets `bucket(key, (h + k) mod
//! 256)` for `k` = 0, 1, … 255 with `h = bucket(key, 0)` are tried in turn and the first
//! realserver that can take the flow wins; the same client always falls back to the same one.
//!
//! The table is dealt with each realserver's *last positive* weight: a realserver whose
//! weight drops to 0 (quiesced, down, over its threshold: ringvs does not tell them apart)
//! keeps its buckets, so no other client moves while it is away, as with IPVS's overload
//! flag. (IPVS deals a weight-0 realserver one bucket; here one that never had a positive
//! weight gets none.) The table is dealt again in `servers_changed`, and when a positive
//! weight in `pick`'s view differs from the one it was dealt with.

#![no_std]

use ringvs_sdk::prelude::*;

/// Buckets in the table (IPVS `IP_VS_SH_TAB_SIZE`).
pub const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_BITS: u32 = 8;
/// An empty bucket (no realserver has a positive weight).
const NONE: u32 = u32::MAX;

/// The bucket table and what it was dealt from.
#[derive(Default)]
pub struct Sh {
    /// Hash the client's port too (`sh-port`).
    port: bool,
    /// Try other buckets when the client's realserver cannot take it (`sh-fallback`).
    fallback: bool,
    /// The realservers' identities, from `servers_changed`.
    ids: Vec<(IpAddr, u16)>,
    /// Each realserver's last positive weight (0: none yet): what the table was dealt with.
    weights: Vec<u32>,
    /// Bucket → realserver index; empty before the first `servers_changed`.
    table: Vec<u32>,
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

/// IPVS `ip_vs_sh_hashkey`: `(offset + hash_32(key, 8)) mod 256`.
fn bucket(key: u32, offset: u32) -> usize {
    let h = key.wrapping_mul(0x61C8_8647) >> (32 - TAB_BITS);
    (offset.wrapping_add(h) as usize) % TAB_SIZE
}

impl Sh {
    /// IPVS `ip_vs_sh_reassign`: each realserver with a weight takes that many buckets in turn.
    fn deal(&mut self) {
        self.table.clear();
        let dealt: Vec<usize> = (0..self.weights.len())
            .filter(|&i| self.weights[i] > 0)
            .collect();
        if dealt.is_empty() {
            self.table.resize(TAB_SIZE, NONE);
            return;
        }
        let (mut k, mut count) = (0, 0);
        for _ in 0..TAB_SIZE {
            let i = dealt[k];
            self.table.push(i as u32);
            count += 1;
            if count >= self.weights[i] {
                k = (k + 1) % dealt.len();
                count = 0;
            }
        }
    }
}

impl Scheduler for Sh {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["port", "fallback"])?;
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
        self.deal();
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
            self.deal();
        }
        let port = if self.port { flow.client_port } else { 0 };
        let key = fold(flow.client).wrapping_add(port as u32);
        let can_take = |i: u32| servers.get(i as usize).is_some_and(|s| s.weight > 0);
        let h = bucket(key, 0);
        let first = *self.table.get(h)?;
        if first == NONE {
            return None;
        }
        if can_take(first) {
            return Some(first as usize);
        }
        if !self.fallback {
            return None;
        }
        (0..TAB_SIZE as u32)
            .map(|k| self.table[bucket(key, (h as u32 + k) % TAB_SIZE as u32)])
            .find(|&i| can_take(i))
            .map(|i| i as usize)
    }
}

export_scheduler!(Sh);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, SchedulerHarness};

    fn h(config: &[(&str, &str)], weights: &[u32]) -> SchedulerHarness<Sh> {
        let servers: Vec<(String, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("10.77.1.{}:80", i + 1), *w))
            .collect();
        let list: Vec<(&str, u32)> = servers.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        SchedulerHarness::<Sh>::new(config).unwrap().servers(&list)
    }

    fn pick(s: &mut SchedulerHarness<Sh>, client: &str) -> Option<usize> {
        s.pick(&flow(client, "10.77.100.100:80"))
    }

    // The buckets of three clients, worked out by hand. Only the low byte of 0x61C88647
    // (0x47) reaches the top byte from 0x0A000000: 0x0A × 0x47 = 0x2C6, so 0x0A000000 ×
    // 0x61C88647 ≡ 0xC6000000, and
    // 10.0.0.1: 0x61C88647 + 0xC6000000 ≡ 0x27C88647 → 0x27 = 39
    // 10.0.0.2: 0xC3910C8E + 0xC6000000 ≡ 0x89910C8E → 0x89 = 137
    // 10.0.0.3: 0x255992D5 + 0xC6000000 ≡ 0xEB5992D5 → 0xEB = 235
    const CLIENTS: [&str; 3] = ["10.0.0.1:5000", "10.0.0.2:5000", "10.0.0.3:5000"];

    #[test]
    fn ipvs_buckets_and_table() {
        assert_eq!(
            [0x0A00_0001, 0x0A00_0002, 0x0A00_0003].map(|k| bucket(k, 0)),
            [39, 137, 235]
        );
        let mut s = h(&[], &[1, 2, 3]);
        let t = &s.instance().table;
        assert_eq!(t[..7], [0, 1, 1, 2, 2, 2, 0]);
        let count = |i| t.iter().filter(|&&x| x == i).count();
        assert_eq!([count(0), count(1), count(2)], [43, 86, 127]);
    }

    #[test]
    fn ipvs_fixtures() {
        // (weights, expected picks of the three clients): bucket b holds, for weights
        // 1,1,1: b mod 3 (39 → A, 137 → C, 235 → B); for 1,2,3: A B B C C C [b mod 6]
        // (39 mod 6 = 3 → C, 137 mod 6 = 5 → C, 235 mod 6 = 1 → B); for 3,1,1: A A A B C
        // [b mod 5] (4 → C, 2 → A, 0 → A); for 0,1,1 (A never weighted): B C [b mod 2], and
        // all three buckets are odd → C.
        type Case<'a> = (&'a [u32], [Option<usize>; 3]);
        let cases: &[Case] = &[
            (&[1, 1, 1], [Some(0), Some(2), Some(1)]),
            (&[1, 2, 3], [Some(2), Some(2), Some(1)]),
            (&[3, 1, 1], [Some(2), Some(0), Some(0)]),
            (&[0, 1, 1], [Some(2), Some(2), Some(2)]),
            (&[0, 0], [None, None, None]),
            (&[], [None, None, None]),
        ];
        for (w, want) in cases {
            let mut s = h(&[], w);
            assert_eq!(CLIENTS.map(|c| pick(&mut s, c)), *want, "weights {w:?}");
            // The same answer every time.
            assert_eq!(
                CLIENTS.map(|c| pick(&mut s, c)),
                *want,
                "weights {w:?}, again"
            );
        }
    }

    #[test]
    fn port_option() {
        // With `port`, 10.0.0.1:1 hashes as 0x0A000002 (bucket 137 → C) and 10.0.0.1:2 as
        // 0x0A000003 (235 → B); without it both are 10.0.0.1 (39 → A).
        let mut with = h(&[("port", "true")], &[1, 1, 1]);
        assert_eq!(pick(&mut with, "10.0.0.1:1"), Some(2));
        assert_eq!(pick(&mut with, "10.0.0.1:2"), Some(1));
        let mut without = h(&[("port", "false")], &[1, 1, 1]);
        assert_eq!(pick(&mut without, "10.0.0.1:1"), Some(0));
        assert_eq!(pick(&mut without, "10.0.0.1:2"), Some(0));
    }

    #[test]
    fn fallback_option() {
        // Weights 1,1,1 and A quiesced. 10.0.0.1 hashes to A (bucket 39): without fallback,
        // no pick; with it, bucket(key, 39 + k) = 78 + k: 78 mod 3 = 0 (A, out), 79 → B.
        // 10.0.0.2 and 10.0.0.3 keep C and B.
        for (fallback, want) in [("false", None), ("true", Some(1))] {
            let mut s = h(&[("fallback", fallback)], &[1, 1, 1]);
            s.set_weight(0, 0);
            assert_eq!(CLIENTS.map(|c| pick(&mut s, c)), [want, Some(2), Some(1)]);
            // A is back: its clients return to it (its buckets were kept).
            s.set_weight(0, 1);
            assert_eq!(
                CLIENTS.map(|c| pick(&mut s, c)),
                [Some(0), Some(2), Some(1)]
            );
            for i in 0..3 {
                s.set_weight(i, 0);
            }
            assert_eq!(CLIENTS.map(|c| pick(&mut s, c)), [None; 3]);
        }
    }

    #[test]
    fn fallback_probes_from_twice_the_hash() {
        // Weights 1,1,1,1 (b mod 4): 10.0.0.1 is in bucket 39 → D. D quiesced: the probes
        // are bucket(key, 39 + k) = 78 + k, so 78 → C (not 40 → A, the next bucket). C and D
        // quiesced: 78 (C), 79 (D), 80 → A.
        let mut s = h(&[("fallback", "true")], &[1, 1, 1, 1]);
        assert_eq!(pick(&mut s, CLIENTS[0]), Some(3));
        s.set_weight(3, 0);
        assert_eq!(pick(&mut s, CLIENTS[0]), Some(2));
        s.set_weight(2, 0);
        assert_eq!(pick(&mut s, CLIENTS[0]), Some(0));
    }

    #[test]
    fn weights_changed_at_runtime_deal_again() {
        // 1,1,1 → A C B; A set to 3 → 3,1,1: C A A (see `ipvs_fixtures`).
        let mut s = h(&[], &[1, 1, 1]);
        assert_eq!(
            CLIENTS.map(|c| pick(&mut s, c)),
            [Some(0), Some(2), Some(1)]
        );
        s.set_weight(0, 3);
        assert_eq!(
            CLIENTS.map(|c| pick(&mut s, c)),
            [Some(2), Some(0), Some(0)]
        );
    }

    #[test]
    fn a_quiesced_server_keeps_its_buckets_across_servers_changed() {
        // 1,1,1 then A set to 3; a new list says A 0 (quiesced), B 1, C 1, D 1: A keeps 3,
        // so A A A B C D [b mod 6]: 39 → 3 B, 137 → 5 D, 235 → 1 A (quiesced: no pick).
        let mut s = h(&[], &[1, 1, 1]);
        s.set_weight(0, 3);
        assert_eq!(pick(&mut s, CLIENTS[0]), Some(2));
        let mut s = s.servers(&[
            ("10.77.1.1:80", 0),
            ("10.77.1.2:80", 1),
            ("10.77.1.3:80", 1),
            ("10.77.1.4:80", 1),
        ]);
        assert_eq!(CLIENTS.map(|c| pick(&mut s, c)), [Some(1), Some(3), None]);
    }

    #[test]
    fn spreads_clients_by_weight() {
        // 60 000 distinct clients over weights 1, 2, 3: within a point of the buckets'
        // shares (43, 86, 127 of 256), themselves within a point of 1/6, 2/6, 3/6.
        let mut s = h(&[], &[1, 2, 3]);
        let mut n = [0u32; 3];
        for k in 0..60_000u32 {
            let c = format!("10.1.{}.{}:5000", k / 256, k % 256);
            n[pick(&mut s, &c).unwrap()] += 1;
        }
        for (i, share) in [43.0 / 256.0, 86.0 / 256.0, 127.0 / 256.0]
            .iter()
            .enumerate()
        {
            let f = n[i] as f64 / 60_000.0;
            assert!((f - share).abs() < 0.01, "server {i}: {f} of the clients");
            assert!((f - (i + 1) as f64 / 6.0).abs() < 0.01, "server {i}: {f}");
        }
    }

    #[test]
    fn ipv6_clients_fold_to_32_bits() {
        // 2001:db8::x folds to 0x20010db8 ^ 0 ^ 0 ^ x: 2001:db8::1 is 32.1.13.185.
        assert_eq!(fold("2001:db8::1".parse().unwrap()), 0x2001_0db9);
        // 0x20010db8 ^ 0x00010002 ^ 0x00030004 ^ 0x00050006.
        assert_eq!(fold("2001:db8:1:2:3:4:5:6".parse().unwrap()), 0x2006_0db8);
        let mut s = h(&[], &[1, 2, 3, 4]);
        for x in 0..1000u32 {
            let v4 = format!("{}:80", Ipv4Addr::from(0x2001_0db8 ^ x));
            let v6 = format!("[2001:db8::{x:x}]:80");
            assert_eq!(pick(&mut s, &v4), pick(&mut s, &v6), "2001:db8::{x:x}");
        }
    }

    #[test]
    fn checks_its_config() {
        assert!(SchedulerHarness::<Sh>::new(&[("port", "true"), ("fallback", "true")]).is_ok());
        assert!(SchedulerHarness::<Sh>::new(&[("port", "yes")]).is_err());
        assert!(SchedulerHarness::<Sh>::new(&[("sh-port", "true")]).is_err());
    }
}
