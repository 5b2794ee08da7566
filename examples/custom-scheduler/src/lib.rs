//! Weighted least-connection with slow start: IPVS's `wlc`, except that a realserver that
//! comes back gets its weight back gradually instead of taking every new flow until its
//! connection count has caught up with the others' (HAProxy's `slowstart`).
//!
//! wlc: the load of a realserver is its overhead `h = active × 256 + inactive`; pick the least
//! `h / w`. Weight 0 means quiesced (never picked); ties go to the first in configuration order.
//!
//! Slow start: a realserver *ramps* from the pick at which its weight is positive again after
//! being 0 (quiesced, down, over its threshold), or after it appeared in a later
//! `servers_changed`. After `k` picks of this instance since then its effective weight is
//! `w × p / N`, with `p = min(k + 1, N)` and `N = slow_start_picks`; at `p = N` the ramp ends.
//! The realservers of the first `servers_changed` do not ramp: the service starts balanced.
//!
//! In integers, multiply every weight by `N`: `W = w × p` for a ramping realserver, `W = w × N`
//! for the others, and compare as wlc does: `h1 × W2 > h2 × W1` ⇔ `h1 / W1 > h2 / W2`. In
//! `u128` nothing overflows (`h < 2^41`, `w < 2^32`, `p ≤ 2^32`: each product `< 2^105`). With
//! no realserver ramping every `W` is `w × N`, and the picks are exactly wlc's.
//!
//! Why it works: wlc drives every realserver to the same `h / W`, so a ramping one is held at
//! about `p / N` of the load its weight gives it under wlc, and that bound grows over `N` picks.
//! Its first pick is immediate (an idle realserver has `h = 0`). The bound grows by about
//! `h / N` per pick (`h` of the others), and one established connection adds 256: the ramp
//! holds a realserver back only if `N` is well above `h / 256`, the others' active connections
//! plus their inactive ones / 256. `slow_start_picks = 1` turns slow start off. Picks are
//! counted per instance, and the director runs one instance per queue: with `Q` queues a ramp
//! spans about `N × Q` new flows of the service.

#![no_std]

use ringvs_sdk::prelude::*;

/// `slow_start_picks` when the config does not set it.
pub const DEFAULT_PICKS: u32 = 100;

/// What the scheduler remembers of one realserver (same index as in `servers_changed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Track {
    addr: IpAddr,
    port: u16,
    /// Its weight at the last pick (0: it could not take flows).
    seen: u32,
    /// Picks since it started ramping, while it ramps.
    ramp: Option<u32>,
}

/// Weighted least-connection with slow start.
#[derive(Debug)]
pub struct SlowStart {
    /// `N`: picks a ramp lasts.
    picks: u32,
    servers: Vec<Track>,
    /// A first `servers_changed` has been seen.
    known: bool,
}

impl Default for SlowStart {
    fn default() -> Self {
        SlowStart {
            picks: DEFAULT_PICKS,
            servers: Vec::new(),
            known: false,
        }
    }
}

impl SlowStart {
    /// `p` of realserver `i`: how far up its ramp it is, out of `N`.
    fn progress(&self, i: usize) -> u32 {
        match self.servers.get(i).and_then(|t| t.ramp) {
            Some(k) => k.saturating_add(1).min(self.picks),
            None => self.picks,
        }
    }
}

impl Scheduler for SlowStart {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["slow_start_picks"])?;
        let n: u32 = config.parse_or("slow_start_picks", DEFAULT_PICKS)?;
        if n == 0 {
            return Err(
                "config key `slow_start_picks`: must be at least 1 (1 turns slow start off)".into(),
            );
        }
        self.picks = n;
        Ok(())
    }

    fn servers_changed(&mut self, list: &[ServerInfo]) {
        let old = core::mem::take(&mut self.servers);
        let first = !self.known;
        self.known = true;
        self.servers = list
            .iter()
            .map(|s| {
                let prev = old.iter().find(|t| t.addr == s.addr && t.port == s.port);
                match prev {
                    // A weight of 0 now: it ramps when it gets a weight again.
                    Some(t) if s.weight == 0 => Track {
                        seen: 0,
                        ramp: None,
                        ..*t
                    },
                    Some(t) => *t,
                    // The first list is the baseline; a newcomer ramps from its first pick.
                    None => Track {
                        addr: s.addr,
                        port: s.port,
                        seen: if first { s.weight } else { 0 },
                        ramp: None,
                    },
                }
            })
            .collect();
    }

    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        // Weights back from 0 start a ramp; weights gone to 0 end it.
        for s in servers.iter() {
            if let Some(t) = self.servers.get_mut(s.index) {
                if s.weight == 0 {
                    t.ramp = None;
                } else if t.seen == 0 {
                    t.ramp = Some(0);
                }
                t.seen = s.weight;
            }
        }
        // wlc over W = w × p (see the module documentation).
        let mut best: Option<(Server, u128)> = None;
        for s in servers.available() {
            let w = s.weight as u128 * self.progress(s.index) as u128;
            match best {
                Some((b, bw)) if b.overhead() as u128 * w <= s.overhead() as u128 * bw => {}
                _ => best = Some((s, w)),
            }
        }
        let chosen = best?.0.index;
        // Every pick moves every ramp one step; a ramp ends when p reaches N.
        let n = self.picks;
        for t in &mut self.servers {
            t.ramp = t.ramp.map(|k| k + 1).filter(|k| k.saturating_add(1) < n);
        }
        Some(chosen)
    }

    fn export_state(&self) -> Vec<u8> {
        // Version 1: the byte 1, then for each realserver that ramps or had weight 0 at the
        // last pick: its family (4 or 6), address (4 or 16 bytes), port (2 bytes, big-endian)
        // and picks since its ramp began (4 bytes, little-endian; u32::MAX: weight 0).
        let mut v = vec![1u8];
        for t in &self.servers {
            let k = match (t.seen, t.ramp) {
                (0, _) => u32::MAX,
                (_, Some(k)) => k,
                (_, None) => continue,
            };
            match t.addr {
                IpAddr::V4(a) => {
                    v.push(4);
                    v.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    v.push(6);
                    v.extend_from_slice(&a.octets());
                }
            }
            v.extend_from_slice(&t.port.to_be_bytes());
            v.extend_from_slice(&k.to_le_bytes());
        }
        v
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        let bad = || format!("unknown slow-start state ({} bytes)", state.len());
        let mut rest = match state {
            [] => return Ok(()),
            [1, rest @ ..] => rest,
            _ => return Err(bad()),
        };
        // Parse everything first: a bad record changes nothing.
        let mut records = Vec::new();
        while !rest.is_empty() {
            let (addr, tail) = match rest.split_first() {
                Some((4, a)) => {
                    let (o, t) = a.split_first_chunk::<4>().ok_or_else(bad)?;
                    (IpAddr::from(*o), t)
                }
                Some((6, a)) => {
                    let (o, t) = a.split_first_chunk::<16>().ok_or_else(bad)?;
                    (IpAddr::from(*o), t)
                }
                _ => return Err(bad()),
            };
            let (port, tail) = tail.split_first_chunk::<2>().ok_or_else(bad)?;
            let (k, tail) = tail.split_first_chunk::<4>().ok_or_else(bad)?;
            records.push((addr, u16::from_be_bytes(*port), u32::from_le_bytes(*k)));
            rest = tail;
        }
        // Realservers the predecessor knew and this instance does not are gone: skipped.
        let n = self.picks;
        for (addr, port, k) in records {
            if let Some(t) = self
                .servers
                .iter_mut()
                .find(|t| t.addr == addr && t.port == port)
            {
                if k == u32::MAX {
                    (t.seen, t.ramp) = (0, None);
                } else {
                    t.ramp = Some(k).filter(|k| k.saturating_add(1) < n);
                }
            }
        }
        Ok(())
    }
}

export_scheduler!(SlowStart);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{check_picks, flow, PickCase, SchedulerHarness};

    fn harness(weights: &[u32], picks: u32) -> SchedulerHarness<SlowStart> {
        let addrs: Vec<(String, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("10.77.1.{}:8080", i + 1), *w))
            .collect();
        let list: Vec<(&str, u32)> = addrs.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        let n = picks.to_string();
        SchedulerHarness::<SlowStart>::new(&[("slow_start_picks", &n)])
            .unwrap()
            .servers(&list)
    }

    fn f() -> Flow {
        flow("10.77.0.2:40000", "10.77.100.100:80")
    }

    /// Realserver `who` leaves (weight 0 at a pick), comes back, and `k` picks follow.
    fn ramping(weights: &[u32], picks: u32, who: usize, k: u32) -> SchedulerHarness<SlowStart> {
        let mut h = harness(weights, picks);
        h.set_weight(who, 0);
        h.pick(&f());
        h.set_weight(who, weights[who]);
        for _ in 0..k {
            h.pick(&f());
        }
        h
    }

    #[test]
    fn without_a_ramp_it_is_wlc() {
        // The fixtures of sched-wlc: nobody ramps, so W = w × N for all and wlc's order holds.
        let cases: &[PickCase] = &[
            (&[1, 1, 1], &[(0, 0), (0, 0), (0, 0)], Some(0)),
            (&[1, 1, 1], &[(1, 0), (0, 5), (0, 0)], Some(2)),
            (&[1, 1], &[(1, 0), (0, 255)], Some(1)),
            (&[1, 1], &[(1, 0), (0, 256)], Some(0)),
            (&[1, 3], &[(1, 0), (2, 0)], Some(1)),
            (&[1, 3], &[(1, 0), (4, 0)], Some(0)),
            (&[0, 1], &[(0, 0), (50, 0)], Some(1)),
            (&[0, 0], &[(0, 0), (0, 0)], None),
        ];
        check_picks(|w| harness(w, 100), cases);
    }

    #[test]
    fn ramp_fixtures() {
        // (weights, N, ramping server, k picks since it came back, (active, inactive) per
        // server, expected pick), worked out by hand with W = w × p, p = min(k + 1, N):
        type Case<'a> = (&'a [u32], u32, usize, u32, &'a [(u32, u32)], Option<usize>);
        let cases: &[Case] = &[
            // p = 1: server 1 is idle (h = 0) and wins its first pick at once.
            (&[1, 1], 100, 1, 0, &[(4, 0), (0, 0)], Some(1)),
            // p = 1: W = 100 and 1; h/W = 1024/100 = 10.24 < 256/1. wlc would pick 1.
            (&[1, 1], 100, 1, 0, &[(4, 0), (1, 0)], Some(0)),
            // p = 50: 1024/100 = 10.24 > 256/50 = 5.12: server 1.
            (&[1, 1], 100, 1, 49, &[(4, 0), (1, 0)], Some(1)),
            // p = 50: 1024/100 = 10.24 = 512/50: a tie, the first wins.
            (&[1, 1], 100, 1, 49, &[(4, 0), (2, 0)], Some(0)),
            // p = 50: 768/50 = 15.36 > 10.24: server 0.
            (&[1, 1], 100, 1, 49, &[(4, 0), (3, 0)], Some(0)),
            // k = 99: p would be 100 = N, the ramp is over: wlc, 768 < 1024.
            (&[1, 1], 100, 1, 99, &[(4, 0), (3, 0)], Some(1)),
            // Server 0 (w = 3) ramps, N = 10, p = 5: W = 15 and 10; 768/15 = 51.2 > 256/10.
            // (wlc: 768/3 = 256/1, a tie, server 0.)
            (&[3, 1], 10, 0, 4, &[(3, 0), (1, 0)], Some(1)),
            // Inactive connections: N = 4, p = 1: 10/4 = 2.5 < 4/1: server 0 ...
            (&[1, 1], 4, 1, 0, &[(0, 10), (0, 4)], Some(0)),
            // ... p = 2: 10/4 = 2.5 > 4/2 = 2: server 1.
            (&[1, 1], 4, 1, 1, &[(0, 10), (0, 4)], Some(1)),
            // N = 1 turns slow start off: p = N at once, wlc: 256 < 1024.
            (&[1, 1], 1, 1, 0, &[(4, 0), (1, 0)], Some(1)),
        ];
        for (i, (w, n, who, k, conns, want)) in cases.iter().enumerate() {
            let mut h = ramping(w, *n, *who, *k);
            for (j, (a, b)) in conns.iter().enumerate() {
                h.set_conns(j, *a, *b);
            }
            assert_eq!(h.pick(&f()), *want, "case {i}");
        }
    }

    /// Steady traffic: `c` connections open at all times (each new flow replaces the oldest),
    /// four realservers of weight 1; rs4 is down while the others fill up, then comes back.
    /// Returns which server each of the `picks` flows after its return went to, and rs4's
    /// connections after each.
    fn comeback(n: u32, c: usize, picks: usize) -> (Vec<usize>, Vec<u32>) {
        let mut h = harness(&[1, 1, 1, 1], n);
        let mut open: Vec<usize> = Vec::new();
        let mut oldest = 0;
        let mut step = |h: &mut SchedulerHarness<SlowStart>| {
            let i = h.pick_and_count(&f(), true).unwrap();
            open.push(i);
            if open.len() - oldest > c {
                let j = open[oldest];
                oldest += 1;
                let (a, b) = h.conns(j);
                h.set_conns(j, a - 1, b);
            }
            i
        };
        h.set_weight(3, 0);
        for _ in 0..4 * c {
            step(&mut h);
        }
        h.set_weight(3, 1);
        let mut went = Vec::new();
        let mut rs4 = Vec::new();
        for _ in 0..picks {
            went.push(step(&mut h));
            rs4.push(h.conns(3).0);
        }
        (went, rs4)
    }

    #[test]
    fn plain_wlc_floods_a_server_that_comes_back() {
        // N = 1: rs4 (0 connections, the others about 21 each) takes the next 16 flows in a
        // row, its whole quarter of the 64 at once, while the others' oldest close.
        let (went, _) = comeback(1, 64, 40);
        assert_eq!(
            went[..17],
            [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0]
        );
    }

    #[test]
    fn slow_start_ramps_a_server_that_comes_back() {
        // N = 400, 64 connections open. wlc holds h/W equal: rs4 has W = p and the others
        // W = N, so rs4 holds about 64 × p / (3N + p) connections, p / N of the 16 it gets
        // without a ramp (a little more, as the 64 are shared out again).
        let (n, c) = (400, 64);
        let (went, rs4) = comeback(n, c, 1000);
        for (k, &have) in rs4.iter().enumerate().take(n as usize) {
            let p = (k + 1) as f64;
            let want = c as f64 * p / (3.0 * n as f64 + p);
            assert!(
                (have as f64 - want).abs() <= 1.5,
                "after {} picks rs4 has {have} connections, want about {want:.1}",
                k + 1
            );
        }
        // Its share of new flows, per 100: growing through the ramp (7, 14, 18, 25 of 100),
        // where wlc gave it the first 16 in a row; after the ramp, one in four.
        let took = |from: usize| went[from..from + 100].iter().filter(|&&i| i == 3).count();
        let ramp: Vec<usize> = (0..4).map(|j| took(100 * j)).collect();
        assert!(
            ramp[0] <= 10 && ramp.windows(2).all(|w| w[0] < w[1]),
            "{ramp:?}"
        );
        let after: usize = (5..10).map(|j| took(100 * j)).sum();
        assert!(
            (115..=135).contains(&after),
            "{after} of 500 after the ramp"
        );
        assert!((15..=17).contains(&rs4[999]), "rs4 holds {}", rs4[999]);
    }

    #[test]
    fn newcomers_ramp_and_the_first_list_does_not() {
        let mut h = harness(&[1, 1], 100);
        h.set_conns(0, 4, 0);
        // The first list is the baseline: server 1 is idle and not ramping, wlc picks it.
        h.set_conns(1, 1, 0);
        assert_eq!(h.pick(&f()), Some(1));
        // A third server appears: W = 1 against 100, so it holds at most 1 connection.
        let mut h = h.servers(&[
            ("10.77.1.1:8080", 1),
            ("10.77.1.2:8080", 1),
            ("10.77.1.3:8080", 1),
        ]);
        h.set_conns(0, 4, 0);
        h.set_conns(1, 4, 0);
        assert_eq!(
            h.pick_and_count(&f(), true),
            Some(2),
            "idle: its first pick"
        );
        assert_eq!(h.pick(&f()), Some(0), "then 256/2 > 1024/100");
    }

    #[test]
    fn quiesced_servers_are_never_picked() {
        let mut h = ramping(&[1, 1], 100, 1, 10);
        h.set_weight(1, 0);
        assert_eq!(h.pick(&f()), Some(0));
        h.set_weight(0, 0);
        assert_eq!(h.pick(&f()), None);
    }

    #[test]
    fn config_is_checked() {
        assert!(SchedulerHarness::<SlowStart>::new(&[]).is_ok());
        assert!(SchedulerHarness::<SlowStart>::new(&[("slow_start_picks", "1")]).is_ok());
        let err = |cfg: &[(&str, &str)]| SchedulerHarness::<SlowStart>::new(cfg).err().unwrap();
        assert_eq!(
            err(&[("slowstart", "50")]),
            "unknown config key `slowstart` (known: slow_start_picks)"
        );
        assert_eq!(
            err(&[("slow_start_picks", "0")]),
            "config key `slow_start_picks`: must be at least 1 (1 turns slow start off)"
        );
        assert_eq!(
            err(&[("slow_start_picks", "lots")]),
            "config key `slow_start_picks`: cannot use \"lots\" (expected u32)"
        );
    }

    #[test]
    fn a_swapped_in_instance_keeps_the_ramp() {
        // Two identical services, rs4 ramping 50 picks into 400; one of them is swapped to
        // a new instance (state handed over), the other not: they keep picking alike.
        let run = |swap: Option<&[(&str, &str)]>| {
            let mut h = ramping(&[1, 1, 1, 1], 400, 3, 50);
            for i in 0..3 {
                h.set_conns(i, 20, 0);
            }
            let mut h = match swap {
                Some(cfg) => h.swap_to::<SlowStart>(cfg).unwrap(),
                None => h,
            };
            (0..200)
                .map(|_| h.pick_and_count(&f(), true).unwrap())
                .collect::<Vec<_>>()
        };
        let kept = run(None);
        assert_eq!(run(Some(&[("slow_start_picks", "400")])), kept);
        // Without the state, the new instance would not know rs4 ramps: wlc floods it.
        let fresh = {
            let mut h = harness(&[1, 1, 1, 1], 400);
            for i in 0..3 {
                h.set_conns(i, 20, 0);
            }
            (0..200)
                .map(|_| h.pick_and_count(&f(), true).unwrap())
                .collect::<Vec<_>>()
        };
        assert_ne!(fresh, kept);
        assert!(fresh[..20].iter().all(|&i| i == 3));
    }

    #[test]
    fn state_round_trip_and_refusal() {
        let mut h = ramping(&[1, 1, 1], 100, 2, 7);
        h.set_weight(0, 0);
        h.pick(&f());
        let st = h.instance().export_state();
        // Version, then 10.77.1.1:8080 with weight 0, 10.77.1.3:8080 8 picks into its ramp.
        assert_eq!(
            st,
            [
                1, 4, 10, 77, 1, 1, 0x1f, 0x90, 0xff, 0xff, 0xff, 0xff, 4, 10, 77, 1, 3, 0x1f,
                0x90, 8, 0, 0, 0
            ]
        );
        let mut next = harness(&[1, 1, 1], 100);
        next.instance().import_state(&st).unwrap();
        assert_eq!(next.instance().export_state(), st);
        // A shorter N ends the ramps that are past it.
        let mut short = harness(&[1, 1, 1], 5);
        short.instance().import_state(&st).unwrap();
        assert_eq!(short.instance().export_state(), st[..12]);
        // Empty: start fresh; anything else unknown is refused and changes nothing.
        assert!(next.instance().import_state(&[]).is_ok());
        assert!(next.instance().import_state(&[9, 9]).is_err());
        assert!(next.instance().import_state(&st[..15]).is_err());
        assert_eq!(next.instance().export_state(), st);
    }
}
