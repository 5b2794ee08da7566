use super::*;

/// The packed load of servers with these weights and (active, inactive) counts.
fn packed(weights: &[u32], conns: &[(u32, u32)]) -> Vec<u32> {
    weights
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            let (a, n) = conns.get(i).copied().unwrap_or((0, 0));
            [*w, a, n]
        })
        .collect()
}

#[test]
fn rr_cycles_and_skips_quiesced() {
    let mut l = packed(&[1, 0, 1, 1], &[]);
    let mut rr = Builtin::by_name("rr").unwrap();
    let picks: Vec<_> = (0..6).map(|_| rr.pick(Load::new(&l)).unwrap()).collect();
    assert_eq!(picks, vec![2, 3, 0, 2, 3, 0]);
    // Server 3 removed: the data plane hands it over with weight 0.
    l[3 * ringvs_abi::LOAD_STRIDE] = 0;
    let picks: Vec<_> = (0..3).map(|_| rr.pick(Load::new(&l)).unwrap()).collect();
    assert_eq!(picks, vec![2, 0, 2]);
}

#[test]
fn none_available() {
    let l = packed(&[0, 0], &[]);
    assert_eq!(Builtin::by_name("rr").unwrap().pick(Load::new(&l)), None);
    assert_eq!(Builtin::by_name("wlc").unwrap().pick(Load::new(&l)), None);
    assert_eq!(Builtin::by_name("rr").unwrap().pick(Load::new(&[])), None);
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
        let l = packed(w, l);
        assert_eq!(
            Builtin::by_name("wlc").unwrap().pick(Load::new(&l)),
            *want,
            "case {i}"
        );
    }
}

#[test]
fn wlc_balances_by_weight() {
    let mut l = packed(&[1, 2, 3], &[]);
    let mut s = Builtin::by_name("wlc").unwrap();
    let mut n = [0; 3];
    for _ in 0..600 {
        let i = s.pick(Load::new(&l)).unwrap();
        l[i * ringvs_abi::LOAD_STRIDE + 1] += 1;
        n[i] += 1;
    }
    assert_eq!(n, [100, 200, 300]);
}

#[test]
fn names_are_the_built_ins() {
    for n in NAMES {
        assert_eq!(Builtin::by_name(n).map(|b| b.name()), Some(*n));
    }
    assert!(Builtin::by_name("sh").is_none());
}
