//! NAT66 fixtures: each packet in, the exact packet out (built independently by the
//! testkit, so addresses, ports and checksums are all checked), or the drop reason.

use super::stats::DropReason;
use super::testkit::{icmp6, tcp6, udp6, with_ext6};
use super::*;
use crate::conn::State;
use crate::control::registry::Registry;
use crate::wire::icmpv6::msg_type;
use crate::wire::ipv6::ext;
use crate::wire::tcp::flags::{ACK, FIN, SYN};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;

const CONFIG: &str = r#"
[[service]]
name = "web6"
vip = "[fd77:100::100]:80"
scheduler = "wlc"
[[service.server]]
addr = "[fd77:1::1]:8080"
[[service.server]]
addr = "[fd77:1::2]:8080"
[[service.server]]
addr = "fd77:1::3"

[[service]]
name = "dns6"
vip = "[fd77:100::100]:53"
proto = "udp"
scheduler = "rr"
[[service.server]]
addr = "[fd77:1::1]:5353"

[[service]]
name = "web4"
vip = "10.77.100.100:80"
[[service.server]]
addr = "10.77.1.1:8080"
"#;

fn a(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn shard() -> Shard {
    let cfg = crate::config::from_str(CONFIG, "fixture6.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let snap = Arc::new(registry.snapshot());
    Shard::new(ShardConfig::test(1 << 20), snap, None).unwrap()
}

enum Out {
    Forward(Vec<u8>),
    Drop(DropReason),
    Pass,
}

/// Feeds `input`; checks the verdict, the bytes out and the drop counter.
#[track_caller]
fn step(s: &mut Shard, input: &[u8], want: Out) {
    let mut buf = vec![0u8; HEADROOM + input.len() + 64];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
    let before = s.counters().clone();
    let v = s.process(&mut p);
    match want {
        Out::Forward(w) => {
            assert_eq!(v, Verdict::Forward);
            assert_eq!(p.data(), &w[..], "forwarded bytes");
        }
        Out::Pass => {
            assert_eq!(v, Verdict::Forward);
            assert_eq!(p.data(), input, "passed unchanged");
            assert_eq!(s.counters().passthrough, before.passthrough + 1);
        }
        Out::Drop(r) => {
            assert_eq!(v, Verdict::Drop);
            let n = |c: &crate::dataplane::stats::Counters| c.drops[r as usize];
            assert_eq!(n(s.counters()), n(&before) + 1, "drop counted as {r:?}");
        }
    }
}

/// A TCP handshake `client → vip` that the director sends to `rs`, its last ACK carrying
/// `data`: every packet out exactly as built.
#[track_caller]
fn handshake(
    s: &mut Shard,
    client: SocketAddrV6,
    vip: SocketAddrV6,
    rs: SocketAddrV6,
    data: &[u8],
) {
    let syn = tcp6(client, vip, SYN, b"");
    step(s, &syn, Out::Forward(tcp6(client, rs, SYN, b"")));
    let synack = tcp6(rs, client, SYN | ACK, b"");
    step(s, &synack, Out::Forward(tcp6(vip, client, SYN | ACK, b"")));
    let ack = tcp6(client, vip, ACK, data);
    step(s, &ack, Out::Forward(tcp6(client, rs, ACK, data)));
}

fn entries(s: &mut Shard) -> (u64, [u32; crate::conn::state::STATES]) {
    s.publish();
    let r = s.shared();
    let r = r.report.lock().unwrap();
    (r.entries, r.by_state)
}

#[test]
fn nat66_tcp_connection_round_trips_with_exact_checksums() {
    let mut s = shard();
    let (vip, client) = (a("[fd77:100::100]:80"), a("[fd77::2]:40000"));
    let rs1 = a("[fd77:1::1]:8080");
    handshake(&mut s, client, vip, rs1, b"GET /");
    let (n, by_state) = entries(&mut s);
    assert_eq!(n, 1);
    assert_eq!(by_state[State::Established as usize], 1);
    assert_eq!(s.counters().attempts, 1, "one new-flow attempt");
    step(
        &mut s,
        &tcp6(rs1, client, ACK, b"200 OK"),
        Out::Forward(tcp6(vip, client, ACK, b"200 OK")),
    );
    step(
        &mut s,
        &tcp6(client, vip, FIN | ACK, b""),
        Out::Forward(tcp6(client, rs1, FIN | ACK, b"")),
    );
    let (_, by_state) = entries(&mut s);
    assert_eq!(
        by_state[State::CloseWait as usize],
        1,
        "the client closed first: {by_state:?}"
    );
    // The connection is listed with its IPv6 client.
    let listed = s.list(10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client, std::net::SocketAddr::V6(client));
}

#[test]
fn wlc_spreads_ipv6_clients_over_three_realservers_and_a_bare_address_takes_the_port() {
    let mut s = shard();
    let vip = a("[fd77:100::100]:80");
    let servers = ["[fd77:1::1]:8080", "[fd77:1::2]:8080", "[fd77:1::3]:80"];
    for i in 0..6u16 {
        let client = a(&format!("[fd77::{}]:{}", 2 + i, 41000 + i));
        let rs = a(servers[i as usize % 3]);
        step(
            &mut s,
            &tcp6(client, vip, SYN, b""),
            Out::Forward(tcp6(client, rs, SYN, b"")),
        );
    }
    assert_eq!(entries(&mut s).0, 6);
    // The IPv4 service beside them is untouched by the IPv6 table.
    let c4: std::net::SocketAddrV4 = "10.77.0.2:40000".parse().unwrap();
    let v4: std::net::SocketAddrV4 = "10.77.100.100:80".parse().unwrap();
    let r4: std::net::SocketAddrV4 = "10.77.1.1:8080".parse().unwrap();
    let mut buf = vec![0u8; HEADROOM + 128];
    let pkt = super::testkit::tcp(c4, v4, SYN, b"");
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
    let mut p = Packet::new(&mut buf, HEADROOM, pkt.len()).unwrap();
    assert_eq!(s.process(&mut p), Verdict::Forward);
    assert_eq!(p.data(), &super::testkit::tcp(c4, r4, SYN, b"")[..]);
    assert_eq!(s.table().len(), 1, "one IPv4 entry");
    assert_eq!(entries(&mut s).0, 7, "both tables counted");
}

#[test]
fn nat66_udp_round_trips_and_expires() {
    let mut s = shard();
    let (vip, client, rs) = (
        a("[fd77:100::100]:53"),
        a("[fd77::2]:5000"),
        a("[fd77:1::1]:5353"),
    );
    step(
        &mut s,
        &udp6(client, vip, b"q"),
        Out::Forward(udp6(client, rs, b"q")),
    );
    step(
        &mut s,
        &udp6(rs, client, b"answer"),
        Out::Forward(udp6(vip, client, b"answer")),
    );
    assert_eq!(entries(&mut s).0, 1);
    // The UDP timeout (IPVS: 300 s) passes: the entry is gone, and so is its count.
    let now = s.now();
    s.set_now(now.wrapping_add(301 * crate::conn::TICKS_PER_SEC));
    assert_eq!(entries(&mut s).0, 0);
    // A reply now belongs to nothing: a stale reply of a realserver.
    step(
        &mut s,
        &udp6(rs, client, b"late"),
        Out::Drop(DropReason::StaleReply),
    );
}

/// IPv6 sources count as IPv4 ones (`dataplane::tests`' spoof-proof accounting): SYNs that
/// never complete add nothing, a completed handshake adds a new flow and a live connection
/// until the entry ends, a UDP source counts at once; the top talkers name them.
#[test]
fn an_ipv6_source_counts_once_its_handshake_completes_and_leaves_when_it_ends() {
    let sources: Arc<crate::dataplane::sources::SourceSketch> = Default::default();
    let cfg = crate::config::from_str(CONFIG, "fixture6.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let cfg = ShardConfig {
        sources: sources.clone(),
        ..ShardConfig::test(1 << 20)
    };
    let mut s = Shard::new(cfg, Arc::new(registry.snapshot()), None).unwrap();
    let vip = a("[fd77:100::100]:80");
    let victim = ip("fd77::2");
    for port in 0..300u16 {
        let c = SocketAddrV6::new(victim, 20_000 + port, 0, 0);
        assert_eq!(verdict(&mut s, &tcp6(c, vip, SYN, b"")), Verdict::Forward);
    }
    assert_eq!(
        sources.estimate(victim),
        (0, 0),
        "spoofed SYNs count for nothing"
    );
    let c = a("[fd77::2]:30000");
    // wlc over three idle realservers: the first (the fixture's order).
    handshake(&mut s, c, vip, a("[fd77:1::1]:8080"), b"GET /");
    assert_eq!(
        sources.estimate(victim),
        (1, 1),
        "a completed handshake counts"
    );
    let dns = a("[fd77:100::100]:53");
    let resolver = ip("fd77::53");
    assert_eq!(
        verdict(&mut s, &udp6(a("[fd77::53]:5000"), dns, b"q")),
        Verdict::Forward
    );
    assert_eq!(
        sources.estimate(resolver),
        (1, 1),
        "a UDP source counts at once"
    );
    s.publish();
    let top = s.shared().report.lock().unwrap().top.clone();
    assert!(top.is_empty(), "handed over once a second, not before");
    // The queue's second: its top talkers handed over.
    Pipeline::poll(
        &mut s,
        std::time::Instant::now() + std::time::Duration::from_millis(1500),
    );
    let top = s.shared().report.lock().unwrap().top.clone();
    let flows = |a: Ipv6Addr| top.iter().find(|t| t.addr == a).map(|t| t.new_flows);
    assert_eq!(
        (flows(victim), flows(resolver)),
        (Some(1), Some(1)),
        "{top:?}"
    );
    // Every entry ends (the half-open ones never counted): the live counts go with them.
    s.set_now(s.now() + 2000 * crate::conn::TICKS_PER_SEC);
    assert_eq!(entries(&mut s).0, 0);
    assert_eq!(
        (sources.estimate(victim).1, sources.estimate(resolver).1),
        (0, 0)
    );
}

#[test]
fn icmpv6_errors_about_tracked_flows_are_translated() {
    let mut s = shard();
    let (vip, client, rs) = (
        a("[fd77:100::100]:80"),
        a("[fd77::2]:40000"),
        a("[fd77:1::1]:8080"),
    );
    step(
        &mut s,
        &tcp6(client, vip, SYN, b""),
        Out::Forward(tcp6(client, rs, SYN, b"")),
    );
    // A router on the realserver side: the packet the director sent (client → RIP) was too
    // big. The client gets it from the virtual address, quoting client → VIP.
    let router = ip("fd77:1::fe");
    let sent = tcp6(client, rs, ACK, &[7; 64]);
    let want_quote = tcp6(client, vip, ACK, &[7; 64]);
    step(
        &mut s,
        &icmp6(
            router,
            *client.ip(),
            msg_type::PACKET_TOO_BIG,
            0,
            1280,
            &sent,
        ),
        Out::Forward(icmp6(
            *vip.ip(),
            *client.ip(),
            msg_type::PACKET_TOO_BIG,
            0,
            1280,
            &want_quote,
        )),
    );
    // The client side complains about a reply (VIP → client): to the realserver, quoting
    // RIP → client.
    let reply = tcp6(vip, client, ACK, b"x");
    let want_quote = tcp6(rs, client, ACK, b"x");
    step(
        &mut s,
        &icmp6(
            *client.ip(),
            *vip.ip(),
            msg_type::DEST_UNREACHABLE,
            4,
            0,
            &reply,
        ),
        Out::Forward(icmp6(
            *client.ip(),
            *rs.ip(),
            msg_type::DEST_UNREACHABLE,
            4,
            0,
            &want_quote,
        )),
    );
    // About a flow nobody tracks, to the virtual address: dropped.
    let other = tcp6(vip, a("[fd77::9]:1"), ACK, b"");
    step(
        &mut s,
        &icmp6(
            *client.ip(),
            *vip.ip(),
            msg_type::DEST_UNREACHABLE,
            4,
            0,
            &other,
        ),
        Out::Drop(DropReason::IcmpNoConn),
    );
    // A bad checksum is never translated.
    let mut bad = icmp6(
        router,
        *client.ip(),
        msg_type::PACKET_TOO_BIG,
        0,
        1280,
        &sent,
    );
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    step(&mut s, &bad, Out::Drop(DropReason::BadChecksum));
    // Echo to the virtual address is answered; neighbour discovery passes.
    let ping = icmp6(
        *client.ip(),
        *vip.ip(),
        msg_type::ECHO_REQUEST,
        0,
        0x0001_0001,
        b"ping",
    );
    let pong = {
        let mut p = icmp6(
            *vip.ip(),
            *client.ip(),
            msg_type::ECHO_REPLY,
            0,
            0x0001_0001,
            b"ping",
        );
        p[crate::wire::ipv6::field::HOP_LIMIT] = 64;
        p
    };
    step(&mut s, &ping, Out::Forward(pong));
    let ns = icmp6(
        *client.ip(),
        ip("ff02::1:ff00:1"),
        msg_type::NEIGHBOR_SOLICIT,
        0,
        0,
        &[0; 16],
    );
    step(&mut s, &ns, Out::Pass);
}

#[test]
fn extension_headers_are_walked_by_rule() {
    let mut s = shard();
    let (vip, client, rs) = (
        a("[fd77:100::100]:80"),
        a("[fd77::2]:40000"),
        a("[fd77:1::1]:8080"),
    );
    // Destination options (8 bytes: next, length 0, PadN of 4): kept, the transport header
    // after them rewritten.
    let opts = [0, 0, 1, 4, 0, 0, 0, 0];
    step(
        &mut s,
        &with_ext6(&tcp6(client, vip, SYN, b""), ext::DEST_OPTS, &opts),
        Out::Forward(with_ext6(
            &tcp6(client, rs, SYN, b""),
            ext::DEST_OPTS,
            &opts,
        )),
    );
    // A chain that runs past the packet: malformed.
    let mut cut = with_ext6(
        &tcp6(client, vip, SYN, b""),
        ext::DEST_OPTS,
        &[0, 9, 1, 4, 0, 0, 0, 0],
    );
    cut.truncate(crate::wire::ipv6::HEADER_LEN + 8 + 20);
    let mut p = crate::wire::Ipv6Packet::new_unchecked(&mut cut[..]);
    p.set_payload_len(28);
    step(&mut s, &cut, Out::Drop(DropReason::Malformed));
    // A Jumbo Payload option (RFC 2675) in a Hop-by-Hop header: ip_options.
    let jumbo = [0, 0, 0xC2, 4, 0, 1, 0, 0];
    step(
        &mut s,
        &with_ext6(&tcp6(client, vip, SYN, b""), ext::HOP_BY_HOP, &jumbo),
        Out::Drop(DropReason::IpOptions),
    );
    // A fragment to a virtual address: no IPv6 reassembly yet, dropped as a fragment.
    let frag = [0, 0, 0, 1, 0, 0, 0, 42];
    step(
        &mut s,
        &with_ext6(
            &udp6(client, a("[fd77:100::100]:53"), b"q"),
            ext::FRAGMENT,
            &frag,
        ),
        Out::Drop(DropReason::Fragment),
    );
    // Anybody else's IPv6 passes as the kernel would route it; with a broken chain it is
    // dropped, whoever it is for.
    let other = tcp6(a("[fd77::5]:1"), a("[fd77:9::9]:2"), SYN, b"");
    step(&mut s, &other, Out::Pass);
    step(
        &mut s,
        &with_ext6(&other, ext::HOP_BY_HOP, &jumbo),
        Out::Drop(DropReason::IpOptions),
    );
    // A truncated fixed header is malformed; another port of the VIP has no service.
    step(
        &mut s,
        &tcp6(client, vip, SYN, b"")[..30],
        Out::Drop(DropReason::Malformed),
    );
    step(
        &mut s,
        &tcp6(client, a("[fd77:100::100]:81"), SYN, b""),
        Out::Drop(DropReason::NoService),
    );
    // A segment of a connection nobody opened: no connection.
    step(
        &mut s,
        &tcp6(a("[fd77::3]:1"), vip, ACK, b""),
        Out::Drop(DropReason::NoConn),
    );
}

#[test]
fn a_full_ipv6_table_evicts_unreplied_entries_first() {
    let mut s = shard();
    s.publish();
    let cap = {
        let r = s.shared();
        let r = r.report.lock().unwrap();
        r.capacity - s.table().capacity() as u64
    };
    assert!(cap > 0);
    let vip = a("[fd77:100::100]:80");
    // One established connection that talks, then SYNs beyond the table's capacity.
    let (good, rs) = (a("[fd77::2]:40000"), a("[fd77:1::1]:8080"));
    handshake(&mut s, good, vip, rs, b"");
    for i in 0..cap + 100 {
        let c = SocketAddrV6::new(
            ip(&format!("fd77:2::{:x}", i / 60_000 + 1)),
            (i % 60_000) as u16 + 1024,
            0,
            0,
        );
        assert_eq!(
            verdict(&mut s, &tcp6(c, vip, SYN, b"")),
            Verdict::Forward,
            "SYN {i} admitted by early drop"
        );
    }
    let (n, _) = entries(&mut s);
    assert!(n <= cap + 1, "{n} entries within the tables");
    // The established connection survived the flood.
    step(
        &mut s,
        &tcp6(good, vip, ACK, b"more"),
        Out::Forward(tcp6(good, rs, ACK, b"more")),
    );
}

/// `input` through `s`: its verdict.
fn verdict(s: &mut Shard, input: &[u8]) -> Verdict {
    let mut buf = vec![0u8; HEADROOM + input.len() + 64];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
    s.process(&mut p)
}

/// Spoofed SYNs to `vip` from `n` IPv6 sources from `base` on: how many were forwarded
/// (the others dropped for `overload`).
fn spoofed6(s: &mut Shard, vip: SocketAddrV6, base: u32, n: u32) -> u32 {
    let shed = |s: &Shard| s.counters().drops[DropReason::Overload as usize];
    let (mut forwarded, before) = (0, shed(s));
    for i in base..base + n {
        let src = SocketAddrV6::new(
            ip(&format!("fd77:dead::{:x}:{:x}", i >> 16, i & 0xffff)),
            1024,
            0,
            0,
        );
        if verdict(s, &tcp6(src, vip, SYN, b"")) == Verdict::Forward {
            forwarded += 1;
        } else {
            assert_eq!(shed(s) - before, u64::from(i - base + 1 - forwarded));
        }
    }
    forwarded
}

#[test]
fn a_queue_that_falls_behind_sheds_syns_of_unknown_ipv6_sources_not_known_ones() {
    // The proxy does not answer IPv6: with `syn_proxy` left at "auto" the queue's shedding
    // stands in for it (drop unknown sources' SYNs before any work, keep known ones).
    let mut s = shard();
    let (vip, rs1) = (a("[fd77:100::100]:80"), a("[fd77:1::1]:8080"));
    // A client completes a handshake: known from then on.
    let client = a("[fd77::2]:40000");
    handshake(&mut s, client, vip, rs1, b"");
    // Not behind: every SYN is forwarded (1001 in this tick, the client's included).
    assert_eq!(spoofed6(&mut s, vip, 0, 1000), 1000);
    // Behind: unknown sources get a share that is not grown (a forwarded SYN costs a
    // realserver's answer and more: see `shed::FORWARDED_PER_TICK`), the rest is shed.
    let share = super::shard::shed::FORWARDED_PER_TICK;
    s.behind();
    s.behind();
    s.set_now(1);
    assert_eq!(spoofed6(&mut s, vip, 10_000, 2000), share);
    assert_eq!(
        s.counters().drops[DropReason::Overload as usize],
        u64::from(2000 - share)
    );
    // The known client's new connections go on, on any port, however many came before.
    for port in 50_000..50_010 {
        let c = SocketAddrV6::new(*client.ip(), port, 0, 0);
        assert_eq!(
            verdict(&mut s, &tcp6(c, vip, SYN, b"")),
            Verdict::Forward,
            "known client, port {port}"
        );
    }
    // UDP is the flood guard's, not shed; an established flow is never shed.
    step(
        &mut s,
        &udp6(a("[fd77:dead::1:1]:5000"), a("[fd77:100::100]:53"), b"q"),
        Out::Forward(udp6(
            a("[fd77:dead::1:1]:5000"),
            a("[fd77:1::1]:5353"),
            b"q",
        )),
    );
    step(
        &mut s,
        &tcp6(client, vip, ACK, b"more"),
        Out::Forward(tcp6(client, rs1, ACK, b"more")),
    );
    // Each tick, the share again: never closed.
    for t in 2..20 {
        s.behind();
        s.behind();
        s.set_now(t);
        assert_eq!(spoofed6(&mut s, vip, 20_000 + t * 1000, 1000), share);
    }
    // Calm for 2 s: every SYN is forwarded again.
    s.set_now(40);
    assert_eq!(spoofed6(&mut s, vip, 40_000, 3000), 3000);

    // `syn_proxy = "off"`: nothing is shed (IPVS's behaviour, early drop only).
    let off = CONFIG.replacen(
        "scheduler = \"wlc\"\n",
        "scheduler = \"wlc\"\nsyn_proxy = \"off\"\n",
        1,
    );
    let cfg = crate::config::from_str(&off, "fixture6.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let snap = Arc::new(registry.snapshot());
    let mut s = Shard::new(ShardConfig::test(1 << 20), snap, None).unwrap();
    assert_eq!(spoofed6(&mut s, vip, 0, 1000), 1000);
    s.behind();
    s.behind();
    s.set_now(1);
    assert_eq!(spoofed6(&mut s, vip, 10_000, 2000), 2000);
}

/// What a test shows `prefetch` for a batch.
pub(super) type Show = dyn Fn(&[Vec<u8>]) -> Vec<Vec<u8>>;

/// The packets of `batch` through `s`, each one's verdict and bytes after; with `show`, the
/// batch `show` gives is shown to `prefetch` first (the hinted path).
pub(super) fn through(
    s: &mut Shard,
    batch: &[Vec<u8>],
    show: Option<&Show>,
) -> Vec<(Verdict, Vec<u8>)> {
    if let Some(show) = show {
        let shown = show(batch);
        let views: Vec<&[u8]> = shown.iter().map(|p| &p[..]).collect();
        s.prefetch(&views);
    }
    batch
        .iter()
        .map(|input| {
            let mut buf = vec![0u8; HEADROOM + input.len() + 64];
            buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
            let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
            let v = s.process(&mut p);
            (v, p.data().to_vec())
        })
        .collect()
}

/// Batches of both families, both directions, new and established flows: for each client,
/// a TCP handshake and data to `web4` and a UDP query and answer to `dns6`, interleaved.
fn mixed_batches(clients: u16) -> Vec<Vec<Vec<u8>>> {
    let (vip4, rs4) = (
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 100, 100), 80),
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 1, 1), 8080),
    );
    let (vip6, rs6) = (a("[fd77:100::100]:53"), a("[fd77:1::1]:5353"));
    let c4 = |i: u16| std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 9, 1), 20000 + i);
    let c6 = |i: u16| SocketAddrV6::new(ip("fd77:9::1"), 20000 + i, 0, 0);
    use super::testkit::tcp;
    let rounds: [&dyn Fn(u16) -> Vec<Vec<u8>>; 4] = [
        &|i| vec![tcp(c4(i), vip4, SYN, b""), udp6(c6(i), vip6, b"query")],
        &|i| vec![tcp(rs4, c4(i), SYN | ACK, b""), udp6(rs6, c6(i), b"answer")],
        &|i| vec![tcp(c4(i), vip4, ACK, b"get"), udp6(c6(i), vip6, b"again")],
        &|i| {
            vec![
                tcp(rs4, c4(i), ACK, b"page"),
                tcp(c4(i), vip4, FIN | ACK, b""),
            ]
        },
    ];
    rounds
        .iter()
        .map(|r| (0..clients).flat_map(r).collect())
        .collect()
}

/// Every packet of `batches`, in chunks of 24, through `s` (see [`through`]).
fn run_batches(
    s: &mut Shard,
    batches: &[Vec<Vec<u8>>],
    show: Option<&Show>,
) -> Vec<(Verdict, Vec<u8>)> {
    let mut out = Vec::new();
    for b in batches {
        for c in b.chunks(24) {
            out.extend(through(s, c, show));
        }
    }
    out
}

#[test]
fn prefetch_hints_change_no_packet_even_shown_out_of_turn() {
    let batches = mixed_batches(40);
    let mut plain = shard();
    let reference = run_batches(&mut plain, &batches, None);
    assert!(
        reference
            .iter()
            .filter(|(v, _)| *v == Verdict::Forward)
            .count()
            > 300,
        "the flows are forwarded both ways"
    );
    // Each batch shown as it comes; then reversed, shifted by one, or another batch.
    let as_is = |b: &[Vec<u8>]| b.to_vec();
    let reversed = |b: &[Vec<u8>]| b.iter().rev().cloned().collect();
    let shifted = |b: &[Vec<u8>]| b.iter().skip(1).cloned().collect();
    let other = |b: &[Vec<u8>]| {
        b.iter()
            .map(|p| tcp6(a("[fd77::9]:1"), a("[fd77:100::100]:80"), ACK, p))
            .collect()
    };
    let shows: [&Show; 4] = [&as_is, &reversed, &shifted, &other];
    for (n, show) in shows.iter().enumerate() {
        let mut hinted = shard();
        let before = hinted.hints_taken();
        let got = run_batches(&mut hinted, &batches, Some(*show));
        assert_eq!(
            got, reference,
            "show {n}: every verdict and byte as without hints"
        );
        assert_eq!(hinted.counters(), plain.counters(), "show {n}: counters");
        let taken = hinted.hints_taken() - before;
        if n == 0 {
            // Every TCP/UDP packet took its hint (both families).
            assert_eq!(taken as usize, batches.iter().map(Vec::len).sum::<usize>());
        } else if n == 3 {
            assert_eq!(taken, 0, "no packet was shown");
        }
    }
}
