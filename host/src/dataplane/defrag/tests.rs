use super::*;
use crate::dataplane::testkit::{fragments, udp};
use std::net::SocketAddrV4;

/// A 4,000-byte DNS-like answer from a realserver, and its fragments at MTU 1500.
fn answer(ident_byte: u8) -> (Vec<u8>, Vec<Vec<u8>>) {
    let rs: SocketAddrV4 = "10.77.1.1:5353".parse().unwrap();
    let client: SocketAddrV4 = "10.77.0.10:5300".parse().unwrap();
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut d = udp(rs, client, &payload);
    d[4] = ident_byte;
    let mut ip = Ipv4Packet::new_unchecked(&mut d[..]);
    ip.set_flags_and_frag_offset(false, false, 0);
    ip.fill_checksum();
    let f = fragments(&d, 1500);
    assert_eq!(f.len(), 3);
    (d, f)
}

fn whole(defrag: &mut Defrag) -> Vec<u8> {
    let mut out = vec![0u8; 70_000];
    let n = defrag.take(&mut out).expect("a datagram is ready");
    out.truncate(n);
    out
}

#[test]
fn fragments_in_any_order_make_the_datagram_again() {
    let (d, f) = answer(1);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let mut r = Defrag::new(1 << 20);
        for (k, &i) in order.iter().enumerate() {
            let o = r.add(&f[i], 0);
            if k < 2 {
                assert_eq!(o, Outcome::Held, "order {order:?}: fragment {i}");
            } else {
                assert_eq!(o, Outcome::Complete(d.len()), "order {order:?}");
            }
        }
        let w = whole(&mut r);
        assert_eq!(w, d, "order {order:?}: the datagram as sent");
        assert!(Ipv4Packet::new_checked(&w[..]).unwrap().verify_checksum());
        assert!(r.is_empty() && r.bytes() == 0 && r.take_lost() == 0);
    }
}

#[test]
fn a_copy_is_taken_once_and_a_different_overlap_discards_the_datagram() {
    let (d, f) = answer(2);
    let mut r = Defrag::new(1 << 20);
    assert_eq!(r.add(&f[0], 0), Outcome::Held);
    assert_eq!(r.add(&f[0], 0), Outcome::Held, "a copy");
    assert_eq!(r.add(&f[1], 0), Outcome::Held);
    assert_eq!(r.add(&f[2], 0), Outcome::Complete(d.len()));
    assert_eq!(whole(&mut r), d);
    // The second fragment again, its bytes changed: the attack RFC 1858 describes.
    let mut evil = f[1].clone();
    let n = evil.len();
    evil[n - 1] ^= 0xff;
    assert_eq!(r.add(&f[0], 0), Outcome::Held);
    assert_eq!(r.add(&f[1], 0), Outcome::Held);
    assert_eq!(r.add(&evil, 0), Outcome::Refused);
    assert!(r.is_empty(), "the datagram is gone");
    assert_eq!(r.take_lost(), 2);
    assert_eq!(
        r.add(&f[2], 0),
        Outcome::Held,
        "a new datagram, never complete"
    );
}

#[test]
fn malformed_shapes_are_refused() {
    let (_, f) = answer(3);
    // Not the last, not a multiple of 8 bytes.
    let mut odd = f[0].clone();
    odd.pop();
    let mut ip = Ipv4Packet::new_unchecked(&mut odd[..]);
    ip.set_total_len(ip.total_len() - 1);
    ip.fill_checksum();
    let mut r = Defrag::new(1 << 20);
    assert_eq!(r.add(&odd, 0), Outcome::Refused);
    // Past 65,535 bytes.
    let mut far = f[2].clone();
    let mut ip = Ipv4Packet::new_unchecked(&mut far[..]);
    ip.set_flags_and_frag_offset(false, false, 65_000);
    ip.fill_checksum();
    assert_eq!(r.add(&far, 0), Outcome::Refused);
    // A second, different last fragment.
    assert_eq!(r.add(&f[2], 0), Outcome::Held);
    let mut short = f[2].clone();
    let mut ip = Ipv4Packet::new_unchecked(&mut short[..]);
    ip.set_total_len(ip.total_len() - 8);
    ip.fill_checksum();
    assert_eq!(r.add(&short[..short.len() - 8], 0), Outcome::Refused);
    assert!(r.is_empty());
}

#[test]
fn memory_and_datagrams_stay_within_their_bounds_under_a_flood() {
    let budget = 64 << 10;
    let mut r = Defrag::new(budget);
    let mut complete = 0;
    for n in 0..2000u32 {
        let (_, f) = answer((n % 251) as u8);
        // Each flood datagram from another source: its first two fragments only.
        for frag in &f[..2] {
            let mut g = frag.clone();
            g[12..16].copy_from_slice(&n.to_be_bytes());
            let mut ip = Ipv4Packet::new_unchecked(&mut g[..]);
            ip.fill_checksum();
            let _ = r.add(&g, n);
            assert!(r.bytes() <= budget, "{} bytes held", r.bytes());
            assert!(r.len() <= MAX_DATAGRAMS);
        }
        // Now and then a legitimate answer, whole and in order, gets through.
        if n % 100 == 0 {
            let (d, f) = answer(252);
            let outs: Vec<_> = f.iter().map(|x| r.add(x, n)).collect();
            if outs[2] == Outcome::Complete(d.len()) {
                assert_eq!(whole(&mut r), d);
                complete += 1;
            }
        }
    }
    assert_eq!(complete, 20, "every answer sent whole got through");
    assert!(r.take_lost() > 3000, "the flood's fragments were discarded");
}

#[test]
fn a_datagram_not_complete_in_time_is_discarded() {
    let (_, f) = answer(4);
    let mut r = Defrag::new(1 << 20);
    assert_eq!(r.add(&f[0], 100), Outcome::Held);
    r.expire(100 + TIMEOUT_TICKS - 1);
    assert_eq!(r.len(), 1);
    r.expire(100 + TIMEOUT_TICKS);
    assert!(r.is_empty() && r.bytes() == 0);
    assert_eq!(r.take_lost(), 1);
    // Its later fragments start over, and never complete it.
    assert_eq!(r.add(&f[1], 200), Outcome::Held);
    assert_eq!(r.add(&f[2], 200), Outcome::Held);
}

#[test]
fn a_datagram_larger_than_the_buffer_is_lost_not_cut() {
    let (d, f) = answer(5);
    let mut r = Defrag::new(1 << 20);
    r.add(&f[0], 0);
    r.add(&f[1], 0);
    assert_eq!(r.add(&f[2], 0), Outcome::Complete(d.len()));
    let mut small = vec![0u8; 2048];
    assert_eq!(r.take(&mut small), None);
    assert_eq!(r.take_lost(), 3);
}
