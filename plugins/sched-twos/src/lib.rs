//! Power of two choices (IPVS `ip_vs_twos.c`; Mitzenmacher, "The power of two choices in
//! randomized load balancing", 2001): draw two realservers at random, by weight, and take
//! the less loaded of the two.
//!
//! With `T` the sum of the positive weights, draw `r₁` and `r₂` uniformly in `[0, T)`; each
//! picks the realserver whose share of the weights holds it (the first `i` with `r < w₀ + … +
//! wᵢ`), so realserver `i` is drawn with probability `wᵢ / T`. The load is the overhead `h =
//! active × 256 + inactive`; the second draw wins only if strictly less loaded for its
//! weight: `h₁ / w₁ > h₂ / w₂` ⇔ `h₁ × w₂ > h₂ × w₁` (in `u128`). The two draws may be the
//! same realserver. Weight 0 means quiesced: never drawn.
//!
//! IPVS draws `r` in `[0, T]` and takes the first realserver with `r ≤ w₀ + … + wᵢ`, which
//! gives the first available realserver one chance in `T + 1` more than its weight; here the
//! draws are exactly by weight.
//!
//! The random numbers come from the instance's own xorshift64 generator (Marsaglia 2003:
//! shifts 13, 7, 17), seeded with SplitMix64 of the config's `seed` (a fixed default), so a
//! run is reproducible; `r = ⌊x × T / 2⁶⁴⌋` for a 64-bit `x`.

#![no_std]

use ringvs_sdk::prelude::*;

/// `seed` when the config does not set it.
pub const DEFAULT_SEED: u64 = 0x7f4a_7c15_2c40_1ce5;

/// The generator's state.
pub struct Twos {
    state: u64,
}

impl Default for Twos {
    fn default() -> Self {
        Twos::seeded(DEFAULT_SEED)
    }
}

impl Twos {
    /// A generator seeded with SplitMix64's first output for `seed` (never 0, which
    /// xorshift cannot leave).
    fn seeded(seed: u64) -> Twos {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Twos {
            state: (z ^ (z >> 31)).max(1),
        }
    }

    /// xorshift64.
    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

/// `⌊x × n / 2⁶⁴⌋`: a uniform `x` scaled to `[0, n)`.
fn scale(x: u64, n: u64) -> u64 {
    ((x as u128 * n as u128) >> 64) as u64
}

/// The realserver whose share of the positive weights holds `r`.
fn by_weight<'a>(servers: &Servers<'a>, mut r: u64) -> Option<Server<'a>> {
    servers.available().find(|s| {
        let w = s.weight as u64;
        let hit = r < w;
        r = r.saturating_sub(w);
        hit
    })
}

/// IPVS's choice between two draws: the second if strictly less loaded for its weight.
fn choose<'a>(c1: Server<'a>, c2: Server<'a>) -> Server<'a> {
    if c1.overhead() as u128 * c2.weight as u128 > c2.overhead() as u128 * c1.weight as u128 {
        c2
    } else {
        c1
    }
}

impl Scheduler for Twos {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["seed"])?;
        *self = Twos::seeded(config.parse_or("seed", DEFAULT_SEED)?);
        Ok(())
    }

    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        let total: u64 = servers.available().map(|s| s.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let (r1, r2) = (scale(self.next(), total), scale(self.next(), total));
        let c1 = by_weight(servers, r1)?;
        let c2 = by_weight(servers, r2)?;
        Some(choose(c1, c2).index)
    }
}

export_scheduler!(Twos);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, SchedulerHarness};

    fn h(config: &[(&str, &str)], weights: &[u32]) -> SchedulerHarness<Twos> {
        let servers: Vec<(String, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("10.77.1.{}:80", i + 1), *w))
            .collect();
        let list: Vec<(&str, u32)> = servers.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        SchedulerHarness::<Twos>::new(config)
            .unwrap()
            .servers(&list)
    }

    fn f() -> Flow {
        flow("10.77.0.2:40000", "10.77.100.100:80")
    }

    fn server(index: usize, weight: u32, active: u32, inactive: u32) -> Server<'static> {
        Server {
            index,
            weight,
            active,
            inactive,
            info: None,
        }
    }

    #[test]
    fn the_generator() {
        // xorshift64 from state 1, by hand: 1 ^ 1 << 13 = 8193; ^ 8193 >> 7 (64) = 8257;
        // ^ 8257 << 17 (1 082 261 504, no common bit) = 1 082 269 761.
        let mut g = Twos { state: 1 };
        assert_eq!(g.next(), 1_082_269_761);
        // SplitMix64's first output for seed 0 (its reference implementation's).
        assert_eq!(Twos::seeded(0).state, 0xe220_a839_7b1d_cdaf);
        // Scaling: 2⁶³ is half-way, 2⁶⁴ − 1 the top.
        assert_eq!(
            [scale(0, 10), scale(1 << 63, 10), scale(u64::MAX, 10)],
            [0, 5, 9]
        );
    }

    #[test]
    fn draws_by_weight() {
        // Weights 2, 0, 3, 5 (T = 10): r 0–1 → 0, 2–4 → 2 (1 is quiesced), 5–9 → 3.
        let load = [2, 0, 0, 0, 0, 0, 3, 0, 0, 5, 0, 0];
        let servers = Servers::new(&load, &[]);
        let got: Vec<usize> = (0..10)
            .map(|r| by_weight(&servers, r).unwrap().index)
            .collect();
        assert_eq!(got, [0, 0, 2, 2, 2, 3, 3, 3, 3, 3]);
        assert!(by_weight(&servers, 10).is_none());
    }

    #[test]
    fn ipvs_choice() {
        // ((w₁, active₁, inactive₁), (w₂, active₂, inactive₂), the second wins), by hand
        // with h = 256 active + inactive: the second only if h₁ w₂ > h₂ w₁.
        type Case = ((u32, u32, u32), (u32, u32, u32), bool);
        let cases: &[Case] = &[
            ((1, 1, 0), (1, 0, 255), true),   // 256 > 255
            ((1, 1, 0), (1, 0, 256), false),  // a tie: the first
            ((1, 2, 0), (2, 4, 0), false),    // 512 × 2 = 1024 × 1
            ((1, 2, 0), (2, 3, 255), true),   // 1024 > 1023
            ((3, 0, 0), (1, 0, 0), false),    // idle both: the first
            ((1, 0, 1), (100, 0, 99), true),  // 100 > 99
            ((100, 0, 99), (1, 0, 1), false), // 99 < 100
        ];
        for (i, (a, b, second)) in cases.iter().enumerate() {
            let (c1, c2) = (server(0, a.0, a.1, a.2), server(1, b.0, b.1, b.2));
            assert_eq!(choose(c1, c2).index == 1, *second, "case {i}");
        }
    }

    #[test]
    fn quiesced_never_and_none_without_servers() {
        let mut s = h(&[], &[1, 0, 1]);
        for _ in 0..1000 {
            assert_ne!(s.pick(&f()), Some(1));
        }
        s.set_weight(0, 0);
        for _ in 0..100 {
            assert_eq!(s.pick(&f()), Some(2));
        }
        s.set_weight(2, 0);
        assert_eq!(s.pick(&f()), None);
        assert_eq!(h(&[], &[]).pick(&f()), None);
    }

    #[test]
    fn idle_servers_get_flows_by_weight() {
        // Both draws idle: a tie, the first draw, so picks follow the weights 1, 2, 7.
        let mut s = h(&[], &[1, 2, 7]);
        let mut n = [0u32; 3];
        for _ in 0..100_000 {
            n[s.pick(&f()).unwrap()] += 1;
        }
        for (i, share) in [0.1, 0.2, 0.7].iter().enumerate() {
            let got = n[i] as f64 / 100_000.0;
            assert!((got - share).abs() < 0.01, "server {i}: {got}");
        }
    }

    #[test]
    fn the_loaded_one_only_when_drawn_twice() {
        // Weights 1, 1; A has 100 connections, B none: A wins only when both draws are A,
        // 1/4 of the picks.
        let mut s = h(&[], &[1, 1]);
        s.set_conns(0, 100, 0);
        let a = (0..20_000).filter(|_| s.pick(&f()) == Some(0)).count();
        assert!((a as f64 / 20_000.0 - 0.25).abs() < 0.02, "{a} of 20 000");
    }

    #[test]
    fn two_choices_balance() {
        // 10 000 connections over four realservers of weight 1: with two choices the most
        // and least loaded stay within a few connections (one random choice: about ±50).
        let mut s = h(&[], &[1, 1, 1, 1]);
        for _ in 0..10_000 {
            s.pick_and_count(&f(), true).unwrap();
        }
        let n: Vec<u32> = (0..4).map(|i| s.conns(i).0).collect();
        let spread = n.iter().max().unwrap() - n.iter().min().unwrap();
        assert!(spread <= 5, "{n:?}");
    }

    #[test]
    fn reproducible_by_seed() {
        let run = |seed: &str| {
            let mut s = h(&[("seed", seed)], &[1; 10]);
            (0..100).map(|_| s.pick(&f()).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run("42"), run("42"));
        assert_ne!(run("42"), run("43"));
        let mut default = h(&[], &[1; 10]);
        let d: Vec<_> = (0..100).map(|_| default.pick(&f()).unwrap()).collect();
        assert_eq!(d, run(&DEFAULT_SEED.to_string()));
    }

    #[test]
    fn checks_its_config() {
        assert!(SchedulerHarness::<Twos>::new(&[("seed", "0")]).is_ok());
        assert!(SchedulerHarness::<Twos>::new(&[("seed", "-1")]).is_err());
        assert!(SchedulerHarness::<Twos>::new(&[("seed", "x")]).is_err());
        assert!(SchedulerHarness::<Twos>::new(&[("sed", "1")]).is_err());
    }
}
