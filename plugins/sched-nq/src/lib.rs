//! Never queue (IPVS `ip_vs_nq.c`): an idle realserver if there is one, else the shortest
//! expected delay.
//!
//! Two speeds: a job sent to an idle realserver (no ESTABLISHED connection) starts at once,
//! however slow that realserver, so the first idle one in configuration order is taken.
//! With none idle, as sed: the least `(active + 1) / weight`, compared in integers as
//! `h1 × w2 > h2 × w1` ⇔ `h1 / w1 > h2 / w2` with `h = active + 1` (weights positive, `u64`
//! products). Only active connections count, as in IPVS. Weight 0 means quiesced: never
//! picked, idle or not. Ties go to the first in configuration order.

#![no_std]

use ringvs_sdk::prelude::*;

/// NQ keeps no state: the director keeps the counts.
#[derive(Default)]
pub struct Nq;

/// `h`: the active connections and the new one.
fn expected(s: &Server) -> u64 {
    s.active as u64 + 1
}

impl Scheduler for Nq {
    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        // The first idle one (no ESTABLISHED connection), else as sed.
        match servers.available().find(|s| s.active == 0) {
            Some(s) => Some(s.index),
            None => servers.least_per_weight(expected),
        }
    }
}

export_scheduler!(Nq);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{check_picks, flow, PickCase, SchedulerHarness};

    fn h(weights: &[u32]) -> SchedulerHarness<Nq> {
        SchedulerHarness::<Nq>::new(&[]).unwrap().weights(weights)
    }

    #[test]
    fn ipvs_fixtures() {
        // (weights, (active, inactive) per server, expected pick), worked out by hand: the
        // first with weight > 0 and no active connection, else least (active + 1) / weight,
        // the first on a tie.
        let cases: &[PickCase] = &[
            // Idle, weights 1 and 10: the first idle one (sed would take B, 1/10).
            (&[1, 10], &[(0, 0), (0, 0)], Some(0)),
            // A busy: B is idle.
            (&[1, 10], &[(1, 0), (0, 0)], Some(1)),
            // Idle means no active connection; inactive ones do not count.
            (&[1, 1], &[(0, 500), (0, 0)], Some(0)),
            // An idle server later in the list beats a lighter expected delay before it:
            // 2/10 vs idle.
            (&[10, 1], &[(1, 0), (0, 0)], Some(1)),
            // None idle: as sed, 2/1 vs 3/3.
            (&[1, 3], &[(1, 0), (2, 0)], Some(1)),
            // None idle: 2/1 vs 6/3, a tie, the first.
            (&[1, 3], &[(1, 0), (5, 0)], Some(0)),
            // None idle: 5/2 vs 3/1 vs 2/1: the last.
            (&[2, 1, 1], &[(4, 0), (2, 0), (1, 0)], Some(2)),
            // None idle: 4/2 vs 3/1 vs 2/1: A and C tie, the first.
            (&[2, 1, 1], &[(3, 0), (2, 0), (1, 0)], Some(0)),
            // Weight 0 is quiesced, idle or not.
            (&[0, 1], &[(0, 0), (50, 0)], Some(1)),
            (&[0, 0], &[(0, 0), (0, 0)], None),
            (&[], &[], None),
        ];
        check_picks(h, cases);
    }

    #[test]
    fn sequence_from_idle() {
        // Weights 1 and 3, each pick counted as active: A idle → A; B idle → B; then as sed,
        // (A, B): 2/1 vs 2/3 → B; 2 vs 3/3 → B; 2 vs 4/3 → B; 2 vs 5/3 → B; 2 vs 6/3 → A
        // (tie). Sed would start B B A.
        let mut s = h(&[1, 3]);
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        let picks: Vec<_> = (0..7)
            .map(|_| s.pick_and_count(&f, true).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn refuses_unknown_config() {
        assert!(SchedulerHarness::<Nq>::new(&[("weight", "2")]).is_err());
    }
}
