//! Services' traffic in fragments through the data plane (`dataplane::defrag`): a realserver's
//! DNS answer over the MTU reaches the client rewritten and whole, a fragmented query reaches
//! the realserver whole, and with two queues the queue that reassembles (0, where steering
//! sends every fragment) hands the datagram to the queue that owns its flow.

#[path = "common/check.rs"]
mod check;

use check::check_emitted;
use ringvs::conn::HashKey;
use ringvs::control::registry::Registry;
use ringvs::dataplane::defrag::Handoff;
use ringvs::dataplane::stats::DropReason;
use ringvs::dataplane::testkit::{fragments, udp, TWO_SERVICES};
use ringvs::dataplane::{Packet, Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use ringvs::wire::{Ipv4Packet, UdpPacket};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

const DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 100), 53);
const RS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1), 5353);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

/// `queues` queues over [`TWO_SERVICES`], sharing a hand-off when there are several.
fn queues(n: usize, key: HashKey) -> Vec<Shard> {
    let cfg = ringvs::config::from_str(TWO_SERVICES, "t.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let snap = Arc::new(registry.snapshot());
    let handoff = (n > 1).then(|| Arc::new(Handoff::new(key, n)));
    let base = ShardConfig::test(4 << 20);
    (0..n)
        .map(|id| {
            Shard::new(
                ShardConfig {
                    id,
                    queues: n,
                    handoff: handoff.clone(),
                    sources: base.sources.clone(),
                    templates: base.templates.clone(),
                    cookies: base.cookies.clone(),
                    ..ShardConfig::test(4 << 20)
                },
                snap.clone(),
                None,
            )
            .unwrap()
        })
        .collect()
}

/// One packet through `shard` in a buffer as large as the TUN backend's with offload.
fn run(shard: &mut Shard, input: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 17 * 4096];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
    let v = shard.process(&mut p);
    (v, p.data().to_vec())
}

/// A datagram `src → dst` of `len` bytes of payload, in fragments of at most 1,500 bytes.
fn fragmented(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    len: usize,
    ident: u16,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut d = udp(src, dst, &payload);
    let mut ip = Ipv4Packet::new_unchecked(&mut d[..]);
    ip.set_ident(ident);
    ip.set_flags_and_frag_offset(false, false, 0);
    ip.fill_checksum();
    let f = fragments(&d, 1500);
    (payload, f)
}

/// `out` is the UDP datagram `from → to` carrying `payload`, whole, checksums valid.
fn assert_whole(out: &[u8], from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
    let sums = check_emitted("reassembled", out);
    assert!(sums.ip && sums.l4 == Some(true), "checksums {sums:?}");
    let ip = Ipv4Packet::new_checked(out).unwrap();
    assert!(!ip.is_fragment(), "sent whole");
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (
            SocketAddrV4::new(ip.src_addr(), u.src_port()),
            SocketAddrV4::new(ip.dst_addr(), u.dst_port())
        ),
        (from, to)
    );
    assert_eq!(u.payload(), payload, "payload intact");
}

#[test]
fn a_4k_answer_in_fragments_reaches_the_client_whole_and_rewritten() {
    let mut q = queues(1, HashKey([1, 2]));
    let client = SocketAddrV4::new(CLIENT, 5300);
    let (v, out) = run(&mut q[0], &udp(client, DNS, b"query"));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        Ipv4Packet::new_checked(&out[..]).unwrap().dst_addr(),
        *RS.ip()
    );
    let (payload, frags) = fragmented(RS, client, 4000, 0x4242);
    assert_eq!(frags.len(), 3);
    // In any order: the last one in completes the datagram.
    for (i, f) in [&frags[1], &frags[0]].into_iter().enumerate() {
        let (v, _) = run(&mut q[0], f);
        assert_eq!(v, Verdict::Consumed, "fragment {i} held");
    }
    let (v, out) = run(&mut q[0], &frags[2]);
    assert_eq!(v, Verdict::Forward);
    assert_whole(&out, DNS, client, &payload);
    let c = q[0].counters();
    assert_eq!(c.reassembled, 1);
    assert_eq!(c.drops[DropReason::Fragment as usize], 0);
    assert_eq!(c.total.out_pkts, 1, "counted once, as the datagram");
}

#[test]
fn a_fragmented_query_reaches_the_realserver_whole() {
    let mut q = queues(1, HashKey([1, 2]));
    let client = SocketAddrV4::new(CLIENT, 5301);
    let (payload, frags) = fragmented(client, DNS, 2000, 7);
    assert_eq!(frags.len(), 2);
    assert_eq!(run(&mut q[0], &frags[0]).0, Verdict::Consumed);
    let (v, out) = run(&mut q[0], &frags[1]);
    assert_eq!(v, Verdict::Forward);
    assert_whole(&out, client, RS, &payload);
    // The answer, in one piece, goes back as usual.
    let (v, out) = run(&mut q[0], &udp(RS, client, b"answer"));
    assert_eq!(v, Verdict::Forward);
    assert_whole(&out, DNS, client, b"answer");
}

#[test]
fn lost_fragments_are_counted_when_their_datagram_times_out() {
    let mut q = queues(1, HashKey([1, 2]));
    let client = SocketAddrV4::new(CLIENT, 5302);
    run(&mut q[0], &udp(client, DNS, b"query"));
    let (_, frags) = fragmented(RS, client, 4000, 9);
    assert_eq!(run(&mut q[0], &frags[0]).0, Verdict::Consumed);
    assert_eq!(run(&mut q[0], &frags[1]).0, Verdict::Consumed);
    let now = q[0].now();
    q[0].set_now(now + ringvs::dataplane::defrag::TIMEOUT_TICKS + 1);
    assert_eq!(q[0].counters().drops[DropReason::Fragment as usize], 2);
    // The last fragment alone now starts a datagram that never completes.
    assert_eq!(run(&mut q[0], &frags[2]).0, Verdict::Consumed);
    assert_eq!(q[0].counters().reassembled, 0);
}

#[test]
fn with_two_queues_queue_0_hands_the_datagram_to_the_queue_owning_the_flow() {
    let key = HashKey([0x1234, 0x5678]);
    let mut q = queues(2, key);
    // One client port whose flow queue 1 owns, one that queue 0 owns (steering's hash).
    let port_of = |want: u32| {
        (5300u16..)
            .find(|&p| ringvs::io::steer::queue_of(&key, CLIENT, p, 2) == want)
            .unwrap()
    };
    for (owner, ident) in [(1usize, 100u16), (0, 101)] {
        let client = SocketAddrV4::new(CLIENT, port_of(owner as u32));
        let (v, _) = run(&mut q[owner], &udp(client, DNS, b"query"));
        assert_eq!(v, Verdict::Forward);
        // Steering sends every fragment to queue 0.
        let (payload, frags) = fragmented(RS, client, 4000, ident);
        for f in &frags[..2] {
            assert_eq!(run(&mut q[0], f).0, Verdict::Consumed);
        }
        let (v, out) = run(&mut q[0], &frags[2]);
        let mut drained = Vec::new();
        q[1].drain(&mut |p| drained.push(p.to_vec()));
        if owner == 0 {
            assert_eq!(v, Verdict::Forward, "queue 0's own flow, sent at once");
            assert_whole(&out, DNS, client, &payload);
            assert!(drained.is_empty());
        } else {
            assert_eq!(v, Verdict::Consumed, "handed over");
            assert_eq!(drained.len(), 1, "queue 1 sends it at its next drain");
            assert_whole(&drained[0], DNS, client, &payload);
            assert_eq!(q[1].counters().total.out_pkts, 1, "counted by the owner");
        }
    }
    assert_eq!(q[0].counters().reassembled, 2);
    assert_eq!(q[1].counters().drops[DropReason::StaleReply as usize], 0);
}
