use super::*;

const T: Tick = 100; // timeout: 10 s in ticks

fn store() -> TemplateStore {
    TemplateStore::new(1 << 20, HashKey([7, 9])).unwrap()
}

fn dest() -> Arc<DestState> {
    DestState::new(1)
}

fn bound(b: Bind) -> TemplateId {
    match b {
        Bind::Bound { id, .. } => id,
        other => panic!("expected a bound template, got {other:?}"),
    }
}

#[test]
fn a_template_sends_its_network_to_one_server_and_is_refreshed() {
    let s = store();
    let (a, b) = (dest(), dest());
    assert_eq!(s.find(1, 42, 0, T), Bind::Missing);
    let id = bound(s.create(1, 42, 7, &a, 0, T).unwrap());
    assert_eq!(a.counters.persistent(), 1, "counted as PersistConn");
    assert_eq!(
        (a.counters.active(), a.counters.inactive()),
        (0, 0),
        "not as a connection"
    );
    // Another queue scheduled the same key to another server meanwhile: the template wins.
    let again = s.create(1, 42, 8, &b, 5, T).unwrap();
    assert!(matches!(again, Bind::Bound { dest: 7, .. }), "{again:?}");
    assert_eq!(b.counters.persistent(), 0);
    // Other services and keys are other templates.
    assert_eq!(s.find(2, 42, 5, T), Bind::Missing);
    assert_eq!(s.find(1, 43, 5, T), Bind::Missing);
    s.release(id);
    s.release(bound(again));
    // Refreshed to 50 + T by a flow at 50, though it controls nothing now.
    let id = bound(s.find(1, 42, 50, T));
    s.release(id);
    assert_eq!(
        s.sweep(50 + T - 1, 0, 1),
        0,
        "not expired before its refreshed timeout"
    );
    assert!(matches!(
        s.find(1, 42, 50 + T - 1, T),
        Bind::Bound { dest: 7, .. }
    ));
    s.release(id);
    assert_eq!(s.sweep(50 + 2 * T, 0, 1), 1);
    assert_eq!(a.counters.persistent(), 0);
    assert_eq!(s.stats().entries, 0);
    assert_eq!(s.find(1, 42, 50 + 2 * T, T), Bind::Missing);
}

#[test]
fn a_template_lives_while_it_controls_connections() {
    let s = store();
    let a = dest();
    let id = bound(s.create(3, 1, 1, &a, 0, T).unwrap());
    // Its timeout passes, but a connection it controls is still there (n_control = 1).
    assert_eq!(s.sweep(10 * T, 0, 1), 0);
    assert_eq!(s.stats().entries, 1);
    let id2 = bound(s.find(3, 1, 10 * T, T));
    assert_eq!(id, id2, "the same template, still valid");
    s.release(id);
    assert_eq!(s.sweep(11 * T, 0, 1), 0, "one connection left");
    s.release(id2);
    // Refreshed at 10 T by the second flow: expires at 11 T, swept now.
    assert_eq!(s.sweep(11 * T, 0, 1), 1);
    assert_eq!(a.counters.persistent(), 0);
    // An expired template is also dropped by the lookup itself, before any sweep.
    let id = bound(s.create(3, 2, 1, &a, 0, T).unwrap());
    s.release(id);
    assert_eq!(s.find(3, 2, T, T), Bind::Missing);
    assert_eq!(a.counters.persistent(), 0);
    assert_eq!(s.stats().entries, 0);
}

#[test]
fn removed_and_down_servers_invalidate_templates() {
    let removed: fn(&DestState) = DestState::remove;
    let down: fn(&DestState) = |d| d.health_down(false);
    for (flag, set) in [(DEST_F_REMOVED, removed), (DEST_F_DOWN, down)] {
        let s = store();
        let a = dest();
        let id = bound(s.create(1, 9, 1, &a, 0, T).unwrap());
        set(&a);
        assert_eq!(a.flags(), flag);
        assert_eq!(s.find(1, 9, 1, T), Bind::Missing, "flag {flag}");
        // Unfindable, but alive while its connection lasts, and still counted on `a`.
        assert_eq!(s.stats().entries, 1);
        assert_eq!(a.counters.persistent(), 1);
        let b = dest();
        let nid = bound(s.create(1, 9, 2, &b, 1, T).unwrap());
        assert_ne!(nid, id);
        s.release(id);
        assert_eq!(a.counters.persistent(), 0, "freed with its last connection");
        assert_eq!(s.stats().entries, 1);
        assert!(matches!(s.find(1, 9, 2, T), Bind::Bound { dest: 2, .. }));
    }
}

#[test]
fn quiesced_servers_keep_their_clients_unless_expire_quiescent_template() {
    let s = store();
    let a = dest();
    let id = bound(s.create(1, 5, 1, &a, 0, T).unwrap());
    s.release(id);
    a.set_weight(0);
    let id = bound(s.find(1, 5, 1, T));
    s.release(id);
    s.set_expire_quiescent(true);
    assert_eq!(s.find(1, 5, 2, T), Bind::Missing);
    assert_eq!(a.counters.persistent(), 0, "no connection: freed at once");
    // A template of a server with a weight stays valid with the option on.
    let b = dest();
    let id = bound(s.create(1, 6, 2, &b, 2, T).unwrap());
    assert!(matches!(s.find(1, 6, 3, T), Bind::Bound { dest: 2, .. }));
    s.release(id);
}

#[test]
fn an_overloaded_server_takes_no_persistent_flow_but_keeps_its_template() {
    let s = store();
    let a = dest();
    let id = bound(s.create(1, 5, 1, &a, 0, T).unwrap());
    // One connection at an upper threshold of one: overloaded.
    a.set_thresholds(1, 0);
    a.bind(false);
    assert_eq!(a.flags(), DEST_F_OVERLOAD);
    assert_eq!(s.find(1, 5, 1, T), Bind::Busy);
    assert_eq!(s.create(1, 5, 2, &dest(), 1, T), Ok(Bind::Busy));
    a.unbind(false);
    assert_eq!(a.flags(), 0);
    assert_eq!(bound(s.find(1, 5, 2, T)), id);
}

#[test]
fn the_budget_is_a_hard_bound_and_refusals_are_counted() {
    let s = TemplateStore::new(64 << 10, HashKey([1, 2])).unwrap();
    let cap = s.capacity();
    assert!(cap >= 64 * 4, "{cap}");
    let st = s.stats();
    assert!(st.memory_limit <= 64 << 10, "{st:?}");
    let a = dest();
    let (mut ok, mut refused) = (Vec::new(), 0u64);
    for key in 0..(cap as u64 * 2) {
        match s.create(1, key, 1, &a, 0, T) {
            Ok(b) => ok.push(bound(b)),
            Err(Full) => refused += 1,
        }
    }
    assert!(ok.len() <= cap, "{} > {cap}", ok.len());
    assert!(
        ok.len() > cap / 2,
        "stripes fill evenly: {} of {cap}",
        ok.len()
    );
    assert_eq!(refused, cap as u64 * 2 - ok.len() as u64);
    assert_eq!(s.refused(), refused);
    assert_eq!(s.stats().entries, ok.len() as u64);
    assert_eq!(a.counters.persistent() as usize, ok.len());
    assert!(s.stats().memory_bytes <= st.memory_limit);
    // Once they expire, a full stripe frees them by itself when it needs room.
    for id in ok {
        s.release(id);
    }
    for key in 0..(cap as u64 * 2) {
        // Each one created after the ones before expired.
        let now = (key as Tick + 2) * T;
        let id = bound(
            s.create(2, key, 1, &a, now, T)
                .expect("expired room reclaimed"),
        );
        s.release(id);
    }
    assert_eq!(s.refused(), refused, "no more refusals");
}

#[test]
fn every_queue_sweeps_its_share_of_the_stripes() {
    let s = store();
    let a = dest();
    for key in 0..500 {
        let id = bound(s.create(1, key, 1, &a, 0, T).unwrap());
        s.release(id);
    }
    let first = s.sweep(T, 0, 3);
    let second = s.sweep(T, 1, 3);
    let third = s.sweep(T, 2, 3);
    assert!(
        first > 0 && second > 0 && third > 0,
        "{first} {second} {third}"
    );
    assert_eq!(first + second + third, 500);
    assert_eq!(a.counters.persistent(), 0);
    let l = s.list(10);
    assert!(l.is_empty(), "{l:?}");
}

#[test]
fn listing_shows_findable_templates() {
    let s = store();
    let a = dest();
    let id = bound(s.create(4, 0x0a4d_0000, 11, &a, 0, T).unwrap());
    let l = s.list(10);
    assert_eq!(
        l,
        vec![TemplateInfo {
            svc: 4,
            key: 0x0a4d_0000,
            dest: 11,
            expires: T,
            controls: 1
        }]
    );
    a.remove();
    assert_eq!(s.find(4, 0x0a4d_0000, 1, T), Bind::Missing);
    assert!(
        s.list(10).is_empty(),
        "an invalidated template is not listed"
    );
    s.release(id);
}

#[test]
fn a_template_from_a_peer_is_found_repointed_and_kept_while_live_here() {
    let s = store();
    let (a, b) = (dest(), dest());
    // New here: findable at once, for the peer's time left, controlling nothing.
    assert_eq!(s.adopt(1, 42, 7, &a, (0, 30), true), Ok(true));
    assert_eq!(a.counters.persistent(), 1);
    let id = bound(s.find(1, 42, 10, T));
    assert!(matches!(s.find(1, 42, 10, T), Bind::Bound { dest: 7, .. }));
    s.release(id);
    let info = s.info(id).unwrap();
    assert_eq!(
        (info.svc, info.key, info.dest, info.controls),
        (1, 42, 7, 1)
    );
    // Live here (it controls a connection) and this director decides: the peer's word is
    // not taken.
    assert_eq!(s.adopt(1, 42, 8, &b, (10, 30), true), Ok(false));
    assert!(matches!(s.find(1, 42, 10, T), Bind::Bound { dest: 7, .. }));
    s.release(id);
    s.release(id);
    // A backup takes it: repointed, recounted, the peer's expiry.
    assert_eq!(s.adopt(1, 42, 8, &b, (20, 5), false), Ok(true));
    assert_eq!((a.counters.persistent(), b.counters.persistent()), (0, 1));
    assert_eq!(s.stats().entries, 1, "the same template");
    assert_eq!(s.sweep(24, 0, 1), 0);
    assert_eq!(s.sweep(25, 0, 1), 1, "expired at the peer's time");
    assert_eq!(b.counters.persistent(), 0);
    assert_eq!(s.info(id), None, "freed");
    // At the budget: refused and counted, as a new flow's template is.
    let small = TemplateStore::new(
        STRIPES * MIN_PER_STRIPE * (TemplateStore::ENTRY_BYTES + 4),
        HashKey([1, 2]),
    )
    .unwrap();
    let taken = (0..10_000u64)
        .filter(|&k| small.adopt(1, k, 7, &a, (0, T), false).is_ok())
        .count();
    assert_eq!(taken, small.capacity());
    assert_eq!(small.refused(), 10_000 - small.capacity() as u64);
}
