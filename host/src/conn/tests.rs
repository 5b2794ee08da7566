use super::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;

fn key() -> HashKey {
    HashKey([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210])
}

fn conn(i: u32) -> NewConn<Ipv4Addr> {
    NewConn {
        proto: 6,
        caddr: Ipv4Addr::from(0x0a4d_0000 + (i >> 16)),
        cport: i as u16,
        svc: 1,
        dest: i % 3,
        state: State::SynRecv,
        flags: F_INACTIVE,
    }
}

fn table(limit: usize) -> ConnTable<Ipv4Addr> {
    ConnTable::new(limit, key(), 0).unwrap()
}

fn find(t: &ConnTable<Ipv4Addr>, c: &NewConn<Ipv4Addr>) -> Option<ConnId> {
    let h = t.hash(c.proto, c.caddr, c.cport);
    t.lookup(h, c.proto, c.caddr, c.cport, |e| e.svc == c.svc)
}

fn add(t: &mut ConnTable<Ipv4Addr>, c: NewConn<Ipv4Addr>, exp: Tick) -> Result<ConnId, Full> {
    let h = t.hash(c.proto, c.caddr, c.cport);
    t.insert(h, c, exp)
}

#[test]
fn entry_is_small() {
    // The goal is at most 64 bytes per entry; IPVS uses about 128.
    let per_entry = ConnTable::<Ipv4Addr>::ENTRY_BYTES;
    assert!(per_entry <= 48, "entry grew to {per_entry} bytes");
    let t = table(64 << 20);
    let total = t.memory_limit_bytes() as f64 / t.capacity() as f64;
    println!(
        "entry {per_entry} B; 64 MiB budget: {} entries, {total:.1} B per entry with buckets and wheel",
        t.capacity()
    );
    assert!(total <= 64.0, "{total} bytes per entry with buckets");
}

#[test]
fn budget_is_a_hard_cap() {
    let limit = 1 << 20;
    let mut t = table(limit);
    assert!(t.memory_limit_bytes() <= limit);
    let cap = t.capacity() as u32;
    for i in 0..cap {
        add(&mut t, conn(i), 100).unwrap();
    }
    assert_eq!(add(&mut t, conn(cap), 100), Err(Full));
    assert!(t.memory_bytes() <= limit);
    // Existing entries are all still there.
    for i in (0..cap).step_by(97) {
        assert!(find(&t, &conn(i)).is_some(), "lost {i}");
    }
    // Freeing one makes room for exactly one.
    let id = find(&t, &conn(5)).unwrap();
    t.remove(id);
    add(&mut t, conn(cap), 100).unwrap();
    assert_eq!(add(&mut t, conn(cap + 1), 100), Err(Full));
}

#[test]
fn too_small_budget_is_an_error() {
    let e = ConnTable::<Ipv4Addr>::new(1000, key(), 0).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn lookup_distinguishes_by_predicate_and_key() {
    let mut t = table(1 << 20);
    let a = conn(1);
    let mut b = a;
    b.svc = 2;
    let ia = add(&mut t, a, 10).unwrap();
    let ib = add(&mut t, b, 10).unwrap();
    assert_ne!(ia, ib);
    assert_eq!(find(&t, &a), Some(ia));
    assert_eq!(find(&t, &b), Some(ib));
    let mut udp = a;
    udp.proto = 17;
    assert_eq!(find(&t, &udp), None);
    t.remove(ia);
    assert_eq!(find(&t, &a), None);
    assert_eq!(find(&t, &b), Some(ib));
}

#[test]
fn matches_a_model_under_random_operations() {
    let mut t = table(1 << 20);
    let mut model: HashMap<u32, ConnId> = HashMap::new();
    let mut x = 0x9e37_79b9u32;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let i = x % 5000;
        match model.get(&i).copied() {
            Some(id) => {
                assert_eq!(find(&t, &conn(i)), Some(id));
                if x & 1 == 0 {
                    t.remove(id);
                    model.remove(&i);
                } else {
                    t.set_expiry(id, x % 1000);
                }
            }
            None => {
                assert_eq!(find(&t, &conn(i)), None);
                let id = add(&mut t, conn(i), x % 1000).unwrap();
                model.insert(i, id);
            }
        }
        assert_eq!(t.len(), model.len());
    }
    assert_eq!(t.by_state()[State::SynRecv as usize] as usize, model.len());
}

#[test]
fn timers_expire_on_time_and_refresh_defers() {
    let mut t = table(1 << 20);
    let a = add(&mut t, conn(1), 50).unwrap();
    let b = add(&mut t, conn(2), 30).unwrap();
    let c = add(&mut t, conn(3), 6000).unwrap(); // beyond the wheel's span
    let mut gone = vec![];
    t.advance(29, usize::MAX, |id, _| gone.push(id));
    assert!(gone.is_empty());
    t.advance(30, usize::MAX, |id, _| gone.push(id));
    assert_eq!(gone, vec![b]);
    // Refresh a later: it must survive its old deadline.
    t.set_expiry(a, 80);
    t.advance(79, usize::MAX, |id, _| gone.push(id));
    assert_eq!(gone, vec![b]);
    // Move a earlier than its slot: it must go at the new deadline.
    t.set_expiry(a, 85);
    t.set_expiry(a, 81);
    t.advance(81, usize::MAX, |id, _| gone.push(id));
    assert_eq!(gone, vec![b, a]);
    t.advance(5999, usize::MAX, |id, _| gone.push(id));
    assert_eq!(gone.len(), 2);
    t.advance(6000, usize::MAX, |id, _| gone.push(id));
    assert_eq!(gone, vec![b, a, c]);
    assert!(t.is_empty());
}

#[test]
fn expiry_budget_spreads_work() {
    let mut t = table(1 << 20);
    for i in 0..1000 {
        add(&mut t, conn(i), 10).unwrap();
    }
    let mut n = 0;
    assert_eq!(t.advance(10, 300, |_, _| n += 1), 300);
    assert_eq!(t.advance(10, 300, |_, _| n += 1), 300);
    assert_eq!(t.advance(10, usize::MAX, |_, _| n += 1), 400);
    assert_eq!(n, 1000);
    assert!(t.is_empty());
}

#[test]
fn a_long_pause_expires_everything_due() {
    let mut t = table(1 << 20);
    for i in 0..100 {
        add(&mut t, conn(i), 10 + i * 50).unwrap();
    }
    let keep = add(&mut t, conn(500), 100_000).unwrap();
    let n = t.advance(50_000, usize::MAX, |_, _| {});
    assert_eq!(n, 100);
    assert_eq!(t.len(), 1);
    assert!(t.get(keep).expires() == 100_000);
}

#[test]
fn one_client_cannot_fill_one_bucket() {
    // LVS HOWTO 33.15: with the old IPVS hash, (addr, port) pairs that a client can choose
    // land in one bucket. Here one client uses every port.
    let mut t = table(16 << 20);
    let client = Ipv4Addr::new(10, 77, 0, 2);
    for port in 1..=60_000u16 {
        let c = NewConn {
            caddr: client,
            cport: port,
            ..conn(0)
        };
        add(&mut t, c, 100).unwrap();
    }
    // 60,000 entries in about 2^17..2^18 buckets: a keyed hash keeps chains tiny.
    assert!(
        t.longest_chain() <= 8,
        "longest chain {}",
        t.longest_chain()
    );
}

#[test]
fn different_keys_hash_differently() {
    let a = ConnTable::<Ipv4Addr>::new(1 << 20, HashKey([1, 2]), 0).unwrap();
    let b = ConnTable::<Ipv4Addr>::new(1 << 20, HashKey([3, 4]), 0).unwrap();
    let ip = Ipv4Addr::new(192, 0, 2, 1);
    let same = (0..64)
        .filter(|p| a.hash(6, ip, *p) == b.hash(6, ip, *p))
        .count();
    assert!(same < 4);
    assert_ne!(HashKey::random(), HashKey::random());
}

#[test]
fn counters_follow_ipvs_rules() {
    let c = DestCounters::default();
    c.bind(false);
    c.bind(false);
    c.flip(true);
    assert_eq!((c.active(), c.inactive()), (1, 1));
    assert_eq!(c.overhead(), 257);
    c.unbind(true);
    c.unbind(false);
    c.unbind(false); // extra: never wraps
    assert_eq!((c.active(), c.inactive()), (0, 0));
}

#[test]
fn specialised_siphash_matches_the_reference() {
    use core::hash::Hasher;
    use siphasher::sip::SipHasher13;
    let key = HashKey([0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908]);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (a, p, pr) = (Ipv4Addr::from((x >> 32) as u32), (x >> 16) as u16, x as u8);
        let mut h = SipHasher13::new_with_keys(key.0[0], key.0[1]);
        a.hash_into(&mut h, p, pr);
        assert_eq!(a.keyed_hash(&key, p, pr), h.finish());
    }
}

#[test]
fn evict_takes_the_least_valuable_sampled_entry() {
    let mut t = table(64 * 1024);
    let cap = t.capacity() as u32;
    for i in 0..cap {
        add(&mut t, conn(i), 100 + i).unwrap();
    }
    assert_eq!(add(&mut t, conn(cap), 100), Err(Full));
    // Class: 1 for even ports, 2 for odd: the first even one within the sample goes.
    let mut gone = Vec::new();
    let c = t.evict(
        5,
        2,
        |e| Some(1 + (e.cport() % 2) as u8),
        |id, e| gone.push((id, e.cport())),
    );
    assert_eq!(c, Some(1));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1 % 2, 0);
    assert_eq!(t.len() as u32, cap - 1);
    assert!(add(&mut t, conn(cap), 100).is_ok(), "room made");
    // Nothing at or below the worst class allowed: nothing goes.
    assert_eq!(t.evict(0, 0, |_| Some(3), |_, _| panic!("evicted")), None);
    assert_eq!(t.evict(0, 3, |_| None, |_, _| panic!("evicted")), None);
    // Ties go to the entry closest to its expiry.
    let mut gone = None;
    t.evict(10, 3, |_| Some(2), |_, e| gone = Some(e.expires()));
    assert_eq!(gone, Some(100 + 10));
}

#[test]
fn wrapping_comparisons() {
    assert!(reached(5, 5) && reached(6, 5) && !reached(4, 5));
    assert!(reached(3, u32::MAX - 2) && !reached(u32::MAX - 2, 3));
    assert_eq!(ticks_left(3, u32::MAX - 2), 6);
    assert_eq!(ticks_left(u32::MAX - 2, 3), 0);
}

#[test]
fn the_clock_wraps_without_losing_expiry() {
    // Ticks are u32 and wrap after 13.6 years, as the daemon's clock does (`as Tick`). The
    // table must keep expiring on time across the wrap, and nothing may panic there.
    let t0 = u32::MAX - 100;
    let mut t = ConnTable::<Ipv4Addr>::new(1 << 20, key(), t0).unwrap();
    add(&mut t, conn(1), t0.wrapping_add(50)).unwrap(); // before the wrap
    add(&mut t, conn(2), t0.wrapping_add(300)).unwrap(); // after it
    let moved = add(&mut t, conn(3), t0.wrapping_add(4000)).unwrap();
    t.set_expiry(moved, t0.wrapping_add(150)); // earlier, across the wrap
    let mut gone = Vec::new();
    for step in 1..=600u32 {
        let now = t0.wrapping_add(step);
        t.advance(now, usize::MAX, |_, c| gone.push((c.cport(), step)));
        if step == 400 {
            // Inserted after the wrap: expires 100 ticks later, not before.
            add(&mut t, conn(4), now.wrapping_add(100)).unwrap();
        }
    }
    gone.sort();
    let port = |i: u32| conn(i).cport;
    assert_eq!(
        gone,
        vec![
            (port(1), 50),
            (port(2), 300),
            (port(3), 150),
            (port(4), 500)
        ]
    );
    assert!(t.is_empty());
    // A jump across the wrap longer than the wheel's span.
    add(&mut t, conn(5), t0.wrapping_add(700)).unwrap();
    assert_eq!(t.advance(t0.wrapping_add(699), usize::MAX, |_, _| {}), 0);
    let id = add(&mut t, conn(6), t0.wrapping_add(9000)).unwrap();
    assert_eq!(t.advance(t0.wrapping_add(8999), usize::MAX, |_, _| {}), 1);
    assert_eq!(t.get_mut(id).expires(), t0.wrapping_add(9000));
    assert_eq!(t.advance(t0.wrapping_add(9000), usize::MAX, |_, _| {}), 1);
    // The deadline at u32::MAX itself (the value that marks "off the wheel"), set from one
    // and from two ticks before it.
    for from in [u32::MAX - 1, u32::MAX - 2] {
        let mut t = ConnTable::<Ipv4Addr>::new(1 << 20, key(), from).unwrap();
        add(&mut t, conn(7), u32::MAX).unwrap();
        assert_eq!(t.advance(u32::MAX - 1, usize::MAX, |_, _| {}), 0);
        let late = t.advance(u32::MAX, usize::MAX, |_, _| {}) + t.advance(0, usize::MAX, |_, _| {});
        assert_eq!(late, 1);
    }
}

/// What `Pipeline::prefetch` hashes a batch with, against each table's own hash of the
/// same endpoint (itself the `siphasher` crate's for IPv6, checked above for IPv4), for
/// batches of every length up to 40 (the vector path in groups, the rest one by one).
#[test]
fn batch_hashes_match_each_tables_hash() {
    use std::net::Ipv6Addr;
    let key = HashKey([0x2545_f491_4f6c_dd1d, 0x9e37_79b9_7f4a_7c15]);
    let t4 = ConnTable::<Ipv4Addr>::new(1 << 20, key, 0).unwrap();
    let t6 = ConnTable::<Ipv6Addr>::new(1 << 20, key, 0).unwrap();
    let mut x = 0x0123_4567_89ab_cdefu64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for n in 0..=40 {
        let ends: Vec<(u8, u64, u64, u16)> = (0..n)
            .map(|_| (next() as u8, next(), next(), next() as u16))
            .collect();
        let b4: Vec<[u64; 2]> = ends
            .iter()
            .map(|&(p, a, _, port)| {
                ConnTable::<Ipv4Addr>::flow_blocks(p, Ipv4Addr::from(a as u32), port)
            })
            .collect();
        let b6: Vec<[u64; 3]> = ends
            .iter()
            .map(|&(p, a, b, port)| {
                let addr = Ipv6Addr::from(u128::from(a) << 64 | u128::from(b));
                ConnTable::<Ipv6Addr>::flow_blocks(p, addr, port)
            })
            .collect();
        let (mut h4, mut h6) = (vec![0u64; n], vec![0u64; n]);
        t4.hash_many(&b4, &mut h4);
        t6.hash_many(&b6, &mut h6);
        for (i, &(p, a, b, port)) in ends.iter().enumerate() {
            let addr6 = Ipv6Addr::from(u128::from(a) << 64 | u128::from(b));
            assert_eq!(
                h4[i] as u32,
                t4.hash(p, Ipv4Addr::from(a as u32), port),
                "IPv4 {n}: {i}"
            );
            assert_eq!(h6[i] as u32, t6.hash(p, addr6, port), "IPv6 {n}: {i}");
        }
    }
}
