//! Shortest expected delay (IPVS `ip_vs_sed.c`): the realserver where a new job would wait
//! least, `(active + 1) / weight`.
//!
//! A realserver of weight `w` serves at rate `w`; with `active` jobs queued a new one is done
//! after about `(active + 1) / w` (Weinrib and Shenker, "Greed is not enough", 1988). Only
//! ESTABLISHED connections count, as in IPVS; unlike wlc, the `+ 1` counts the new job, so an
//! idle heavy realserver beats an idle light one.
//!
//! In integers, with `h = active + 1`: `h1 × w2 > h2 × w1` ⇔ `h1 / w1 > h2 / w2` (weights
//! are positive here; `Servers::least_per_weight` multiplies in 128 bits). Weight 0 means quiesced: never
//! picked. Ties go to the first in configuration order.

#![no_std]

use ringvs_sdk::prelude::*;

/// SED keeps no state: the director keeps the counts.
#[derive(Default)]
pub struct Sed;

/// `h`: the active connections and the new one.
fn expected(s: &Server) -> u64 {
    s.active as u64 + 1
}

impl Scheduler for Sed {
    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        servers.least_per_weight(expected)
    }
}

export_scheduler!(Sed);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{check_picks, flow, PickCase, SchedulerHarness};

    fn h(weights: &[u32]) -> SchedulerHarness<Sed> {
        SchedulerHarness::<Sed>::new(&[]).unwrap().weights(weights)
    }

    #[test]
    fn ipvs_fixtures() {
        // (weights, (active, inactive) per server, expected pick), worked out by hand:
        // least (active + 1) / weight among weight > 0, the first on a tie.
        let cases: &[PickCase] = &[
            // All idle, equal weights: 1/1 each, the first.
            (&[1, 1, 1], &[(0, 0), (0, 0), (0, 0)], Some(0)),
            // Idle, weights 1 and 10: 1/1 vs 1/10 (wlc would tie and take A).
            (&[1, 10], &[(0, 0), (0, 0)], Some(1)),
            // 2/1 vs 3/3.
            (&[1, 3], &[(1, 0), (2, 0)], Some(1)),
            // 2/1 vs 6/3: a tie, the first.
            (&[1, 3], &[(1, 0), (5, 0)], Some(0)),
            // 2/1 vs 7/3.
            (&[1, 3], &[(1, 0), (6, 0)], Some(0)),
            // Inactive connections do not count: 1/1 vs 2/1 (wlc: 1000 vs 256, B).
            (&[1, 1], &[(0, 1000), (1, 0)], Some(0)),
            // 5/2 vs 3/1 vs 2/1: the last.
            (&[2, 1, 1], &[(4, 0), (2, 0), (1, 0)], Some(2)),
            // 4/2 vs 3/1 vs 2/1: A and C tie, the first.
            (&[2, 1, 1], &[(3, 0), (2, 0), (1, 0)], Some(0)),
            // Weight 0 is quiesced, however idle.
            (&[0, 1], &[(0, 0), (50, 0)], Some(1)),
            (&[0, 0], &[(0, 0), (0, 0)], None),
            (&[], &[], None),
        ];
        check_picks(h, cases);
    }

    #[test]
    fn sequence_from_idle() {
        // Weights 1 and 3, each pick counted as active. (A, B) expected delays:
        // 1/1 vs 1/3 → B; 1 vs 2/3 → B; 1 vs 3/3 → A (tie); 2 vs 3/3 → B; 2 vs 4/3 → B;
        // 2 vs 5/3 → B; 2 vs 6/3 → A (tie); 3 vs 6/3 → B; … 3 vs 9/3 → A.
        let mut s = h(&[1, 3]);
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        let picks: Vec<_> = (0..11)
            .map(|_| s.pick_and_count(&f, true).unwrap())
            .collect();
        assert_eq!(picks, vec![1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0]);
        // A has 3 active, B 8: 4/1 vs 9/3 → B, whatever its inactive connections.
        s.set_conns(1, 8, 100_000);
        assert_eq!(s.pick(&f), Some(1));
    }

    #[test]
    fn refuses_unknown_config() {
        assert!(SchedulerHarness::<Sed>::new(&[("weight", "2")]).is_err());
    }
}
