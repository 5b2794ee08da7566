//! Least connection (IPVS `ip_vs_lc.c`): the realserver with the least overhead
//! `h = active × 256 + inactive`, whatever its weight.
//!
//! An ESTABLISHED connection counts for 256 half-open or closing ones (IPVS
//! `ip_vs_dest_conn_overhead`). The weight only matters as 0: quiesced, never picked. Ties go
//! to the first in configuration order (IPVS takes a later realserver only if `h` is strictly
//! less).

#![no_std]

use ringvs_sdk::prelude::*;

/// LC keeps no state: the director keeps the counts.
#[derive(Default)]
pub struct Lc;

impl Scheduler for Lc {
    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        servers.least(Server::overhead)
    }
}

export_scheduler!(Lc);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{check_picks, flow, PickCase, SchedulerHarness};

    fn h(weights: &[u32]) -> SchedulerHarness<Lc> {
        SchedulerHarness::<Lc>::new(&[]).unwrap().weights(weights)
    }

    #[test]
    fn ipvs_fixtures() {
        // (weights, (active, inactive) per server, expected pick), worked out by hand:
        // h = 256·active + inactive, least h among weight > 0, the first on a tie.
        let cases: &[PickCase] = &[
            // All idle: a tie, the first.
            (&[1, 1, 1], &[(0, 0), (0, 0), (0, 0)], Some(0)),
            // h = 256, 5, 0.
            (&[1, 1, 1], &[(1, 0), (0, 5), (0, 0)], Some(2)),
            // h = 256 vs 255: one active weighs more than 255 inactive…
            (&[1, 1], &[(1, 0), (0, 255)], Some(1)),
            // …and as much as 256: a tie, the first.
            (&[1, 1], &[(1, 0), (0, 256)], Some(0)),
            // Weights do not count: h = 256 vs 512 with weights 1 and 3 (wlc would take B).
            (&[1, 3], &[(1, 0), (2, 0)], Some(0)),
            // h = 3·256 + 1 = 769 vs 3·256 = 768.
            (&[9, 1], &[(3, 1), (3, 0)], Some(1)),
            // A tie in the middle: h = 300, 10, 10 → the first of the two.
            (&[1, 1, 1], &[(1, 44), (0, 10), (0, 10)], Some(1)),
            // Weight 0 is quiesced, however idle.
            (&[0, 1], &[(0, 0), (50, 0)], Some(1)),
            (&[0, 0], &[(0, 0), (0, 0)], None),
            (&[], &[], None),
        ];
        check_picks(h, cases);
    }

    #[test]
    fn balances_connections_not_weights() {
        // 600 established connections over weights 1, 2, 3: 200 each (wlc would give
        // 100, 200, 300).
        let mut s = h(&[1, 2, 3]);
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        for _ in 0..600 {
            s.pick_and_count(&f, true).unwrap();
        }
        assert_eq!([s.conns(0).0, s.conns(1).0, s.conns(2).0], [200, 200, 200]);
        // Quiesced at runtime: the others take everything.
        s.set_weight(0, 0);
        for _ in 0..100 {
            assert_ne!(s.pick_and_count(&f, true), Some(0));
        }
        assert_eq!([s.conns(1).0, s.conns(2).0], [250, 250]);
    }

    #[test]
    fn refuses_unknown_config() {
        assert!(SchedulerHarness::<Lc>::new(&[("weight", "2")]).is_err());
    }
}
