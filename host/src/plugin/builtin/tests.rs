use super::*;
use crate::dataplane::service::{DestState, DEST_F_REMOVED};
use std::sync::atomic::Ordering::Relaxed;

fn dests(weights: &[u32]) -> Vec<Dest> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Dest {
            id: i as u32,
            svc: 0,
            addr: format!("10.77.1.{}:80", i + 1).parse().unwrap(),
            state: DestState::new(*w),
        })
        .collect()
}

/// Binds `n` connections (active or not) to dest `i`.
fn load(d: &[Dest], i: usize, active: u32, inactive: u32) {
    for _ in 0..active {
        d[i].state.counters.bind(true);
    }
    for _ in 0..inactive {
        d[i].state.counters.bind(false);
    }
}

#[test]
fn rr_cycles_and_skips_quiesced() {
    let d = dests(&[1, 0, 1, 1]);
    let mut rr = Builtin::by_name("rr").unwrap();
    let picks: Vec<_> = (0..6).map(|_| rr.pick(&d).unwrap()).collect();
    assert_eq!(picks, vec![2, 3, 0, 2, 3, 0]);
    d[3].state.flags.store(DEST_F_REMOVED, Relaxed);
    let picks: Vec<_> = (0..3).map(|_| rr.pick(&d).unwrap()).collect();
    assert_eq!(picks, vec![2, 0, 2]);
}

#[test]
fn none_available() {
    let d = dests(&[0, 0]);
    assert_eq!(Builtin::by_name("rr").unwrap().pick(&d), None);
    assert_eq!(Builtin::by_name("wlc").unwrap().pick(&d), None);
    assert_eq!(Builtin::by_name("rr").unwrap().pick(&[]), None);
}

#[test]
fn wlc_fixtures() {
    // (weights, (active, inactive) per server, expected pick) — worked out by hand from
    // overhead = active*256 + inactive, least overhead/weight wins, ties to the first.
    type Case<'a> = (&'a [u32], &'a [(u32, u32)], Option<usize>);
    let cases: &[Case] = &[
        (&[1, 1, 1], &[(0, 0), (0, 0), (0, 0)], Some(0)),
        (&[1, 1, 1], &[(1, 0), (0, 5), (0, 0)], Some(2)),
        (&[1, 1], &[(1, 0), (0, 255)], Some(1)), // 256 vs 255
        (&[1, 1], &[(1, 0), (0, 256)], Some(0)), // tie: first
        (&[1, 3], &[(1, 0), (2, 0)], Some(1)),   // 256/1 > 512/3
        (&[1, 3], &[(1, 0), (4, 0)], Some(0)),   // 256/1 < 1024/3
        (&[0, 1], &[(0, 0), (50, 0)], Some(1)),  // weight 0 never picked
        (&[0, 0], &[(0, 0), (0, 0)], None),
    ];
    for (i, (w, l, want)) in cases.iter().enumerate() {
        let d = dests(w);
        for (j, (a, n)) in l.iter().enumerate() {
            load(&d, j, *a, *n);
        }
        assert_eq!(Builtin::by_name("wlc").unwrap().pick(&d), *want, "case {i}");
    }
}

#[test]
fn wlc_balances_by_weight() {
    let d = dests(&[1, 2, 3]);
    let mut s = Builtin::by_name("wlc").unwrap();
    let mut n = [0; 3];
    for _ in 0..600 {
        let i = s.pick(&d).unwrap();
        d[i].state.counters.bind(true);
        n[i] += 1;
    }
    assert_eq!(n, [100, 200, 300]);
}
