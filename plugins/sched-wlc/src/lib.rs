//! Weighted least-connection (IPVS `ip_vs_wlc.c`), the director's default scheduler.
//!
//! The load of a realserver is its overhead `h = active × 256 + inactive`: an ESTABLISHED
//! connection weighs far more than a half-open or closing one. Pick the least `h / w`. To
//! stay in integers compare `h1 × w2 > h2 × w1` ⇔ `h1 / w1 > h2 / w2` (weights are positive
//! here). Weight 0 means quiesced: never picked. Ties go to the first in configuration order.

#![no_std]

use ringvs_sdk::prelude::*;

/// WLC keeps no state: the director keeps the counts.
#[derive(Default)]
pub struct Wlc;

impl Scheduler for Wlc {
    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        servers.least_per_weight(Server::overhead)
    }
}

export_scheduler!(Wlc);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{check_picks, flow, PickCase, SchedulerHarness};

    fn h(weights: &[u32]) -> SchedulerHarness<Wlc> {
        SchedulerHarness::<Wlc>::new(&[]).unwrap().weights(weights)
    }

    #[test]
    fn ipvs_fixtures() {
        // (weights, (active, inactive) per server, expected pick), worked out by hand.
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
        check_picks(h, cases);
    }

    #[test]
    fn balances_by_weight() {
        let mut s = h(&[1, 2, 3]);
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        for _ in 0..600 {
            s.pick_and_count(&f, true).unwrap();
        }
        assert_eq!([s.conns(0).0, s.conns(1).0, s.conns(2).0], [100, 200, 300]);
    }

    #[test]
    fn refuses_unknown_config() {
        assert!(SchedulerHarness::<Wlc>::new(&[("weight", "2")]).is_err());
    }
}
