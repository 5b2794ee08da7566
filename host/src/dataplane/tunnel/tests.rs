//! LVS-TUN through a whole queue: the outer header byte for byte, the input-only states,
//! too-big packets, offload.

use super::*;
use crate::conn::State;
use crate::control::registry::Registry;
use crate::dataplane::stats::DropReason;
use crate::dataplane::testkit::{tcp, tcp6, udp};
use crate::dataplane::{Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use crate::wire::ipv4::Ipv4Repr;
use crate::wire::tcp::flags::{ACK, FIN, SYN};
use crate::wire::vnet::{F_NEEDS_CSUM, GSO_TCPV4};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

/// web: two realservers, the first tunnelled (the service's method), the second by NAT
/// (its own); dns: tunnelled UDP.
const CONFIG: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
forward = "tun"
scheduler = "rr"
[[service.server]]
addr = "10.77.1.1"
[[service.server]]
addr = "10.77.1.2:8080"
forward = "nat"

[[service]]
name = "dns"
vip = "10.77.100.100:53"
proto = "udp"
forward = "tun"
[[service.server]]
addr = "10.77.1.3"
"#;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 254);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 0xfe);

fn shard(mtu: u16) -> Shard {
    shard_of(CONFIG, mtu)
}

/// A queue with `config`'s services, tunnel sources `SRC` and `SRC6`, both tunnels' MTU `mtu`.
fn shard_of(config: &str, mtu: u16) -> Shard {
    let cfg = crate::config::from_str(config, "tun.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    registry.set_tunnel_source(Some(SRC));
    registry.set_tunnel_mtu(mtu);
    registry.set_tunnel_source6(Some(SRC6));
    registry.set_tunnel_mtu6(mtu);
    Shard::new(
        ShardConfig::test(1 << 20),
        Arc::new(registry.snapshot()),
        None,
    )
    .unwrap()
}

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn run(s: &mut Shard, input: &[u8], vnet: Option<VnetHdr>) -> (Verdict, Vec<u8>, Option<VnetHdr>) {
    let mut buf = vec![0u8; HEADROOM + input.len() + 64];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
    p.vnet = vnet;
    let v = s.process(&mut p);
    (v, p.data().to_vec(), p.vnet)
}

/// What the director must write: `inner` behind an IPv4 header `SRC → rip`, protocol 4,
/// TTL 64, identification `ident`, DF as given; built with the wire emitter.
fn ipip(rip: Ipv4Addr, inner: &[u8], ident: u16, df: bool) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: SRC,
        dst_addr: rip,
        protocol: IPPROTO_IPIP,
        ttl: 64,
        payload_len: inner.len(),
        ident,
        dont_frag: df,
        dscp_ecn: inner[1],
    };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
    out[20..].copy_from_slice(inner);
    out
}

const CLIENT: &str = "10.77.0.2:40000";
const VIP: &str = "10.77.100.100:80";

#[test]
fn the_clients_packets_go_unchanged_inside_ipip_and_states_are_input_only() {
    let mut s = shard(1500);
    // rr's first pick is the NAT server: rewritten, not tunnelled.
    let syn2 = tcp(a("10.77.0.3:40000"), a(VIP), SYN, b"");
    let (v, out, _) = run(&mut s, &syn2, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out.len(), syn2.len());
    assert_eq!(&out[16..20], &[10, 77, 1, 2]);

    let rs1 = Ipv4Addr::new(10, 77, 1, 1);
    let syn = tcp(a(CLIENT), a(VIP), SYN, b"");
    let (v, out, _) = run(&mut s, &syn, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, ipip(rs1, &syn, 1, true), "the tunnelled server");
    let conn = |s: &Shard| {
        *s.table()
            .iter()
            .map(|(_, c)| c)
            .find(|c| c.cport() == 40000 && c.caddr() == *a(CLIENT).ip())
            .unwrap()
    };
    let c = conn(&s);
    assert_eq!(c.state, State::SynRecv);
    assert_ne!(c.flags & crate::conn::F_NOOUTPUT, 0, "input-only for good");

    // IPVS's input-only rows: the client's ACK establishes it, its FIN closes it.
    for (flags, payload, want) in [
        (ACK, &b""[..], State::Established),
        (ACK, &b"GET / HTTP/1.1\r\n\r\n"[..], State::Established),
        (FIN | ACK, &b""[..], State::FinWait),
    ] {
        let p = tcp(a(CLIENT), a(VIP), flags, payload);
        let (v, out, _) = run(&mut s, &p, None);
        assert_eq!(v, Verdict::Forward);
        assert_eq!(&out[20..], &p[..], "the inner packet is the client's");
        assert_eq!(conn(&s).state, want);
    }

    // UDP too, and without DF the outer header has none either.
    let mut dgram = udp(a("10.77.0.2:5000"), a("10.77.100.100:53"), b"query");
    dgram[6] = 0; // clear DF (the IPv4 checksum is fixed below)
    dgram[10..12].fill(0);
    let c = !crate::wire::checksum::fold(crate::wire::checksum::sum(&dgram[..20]));
    dgram[10..12].copy_from_slice(&c.to_be_bytes());
    let (v, out, _) = run(&mut s, &dgram, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, ipip(Ipv4Addr::new(10, 77, 1, 3), &dgram, 5, false));
    let r = &s.counters().total;
    assert_eq!((r.conns, r.in_pkts, r.out_pkts), (3, 6, 0));
}

#[test]
fn too_big_for_the_tunnel_with_df_tells_the_client_the_mtu() {
    let mut s = shard(1400);
    run(&mut s, &tcp(a("10.77.0.3:40000"), a(VIP), SYN, b""), None); // rr: the NAT server
    let big = tcp(a(CLIENT), a(VIP), SYN, &[0u8; 1341]); // 1381 bytes: 1401 tunnelled
    let (v, out, _) = run(&mut s, &big, None);
    assert_eq!(v, Verdict::Forward);
    let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.protocol()),
        (*a(VIP).ip(), *a(CLIENT).ip(), 1)
    );
    let icmp = crate::wire::Icmpv4Packet::new_checked(&out[20..]).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    assert_eq!(
        u16::from_be_bytes([out[26], out[27]]),
        1380,
        "next-hop MTU: 1400 - 20"
    );
    assert_eq!(&out[28..], &big[..28], "the client's header and 8 bytes");
    assert_eq!(s.counters().tunnel_too_big, 1);
    // One byte less fits.
    let fits = tcp(a(CLIENT), a(VIP), SYN, &[0u8; 1340]);
    let (v, out, _) = run(&mut s, &fits, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out.len(), 1400);
}

#[test]
fn offload_a_partial_checksum_moves_a_gso_packet_is_dropped() {
    let mut s = shard(1500);
    run(&mut s, &tcp(a("10.77.0.3:40000"), a(VIP), SYN, b""), None); // rr: the NAT server
    let syn = tcp(a(CLIENT), a(VIP), SYN, b"");
    run(&mut s, &syn, None);
    let csum = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let ack = tcp(a(CLIENT), a(VIP), ACK, b"x");
    let (v, _, vnet) = run(&mut s, &ack, Some(csum));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        vnet.unwrap().csum_start,
        40,
        "the inner TCP header is 20 bytes further"
    );
    let gso = VnetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1448,
        hdr_len: 40,
        ..csum
    };
    let (v, _, _) = run(&mut s, &ack, Some(gso));
    assert_eq!(v, Verdict::Drop);
    assert_eq!(s.counters().drops[DropReason::TunnelGso as usize], 1);
    // A checksum start that would pass 16 bits once moved is refused, not overflowed (the
    // kernel never sends one; the shard fuzz target did).
    let far = VnetHdr {
        csum_start: u16::MAX - 10,
        ..csum
    };
    let (v, _, _) = run(&mut s, &ack, Some(far));
    assert_eq!(v, Verdict::Drop);
}

#[test]
fn gue_puts_udp_and_a_gue_header_in_front_with_the_flows_entropy() {
    let text = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
forward = "tun"
tunnel = "gue"
tunnel_port = 6080
[[service.server]]
addr = "10.77.1.1"
"#;
    let mut s = shard_of(text, 1500);
    let mut sports = Vec::new();
    for (client, flags) in [(CLIENT, SYN), (CLIENT, ACK), ("10.77.0.4:40001", SYN)] {
        let inner = tcp(a(client), a(VIP), flags, b"");
        let (v, out, _) = run(&mut s, &inner, None);
        assert_eq!(v, Verdict::Forward);
        assert_eq!(out.len(), inner.len() + GUE_OUTER);
        let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src_addr(), ip.protocol(), ip.total_len() as usize),
            (SRC, 17, out.len())
        );
        let u = &out[20..28];
        let sport = u16::from_be_bytes([u[0], u[1]]);
        assert!(sport >= 49152, "{sport}");
        assert_eq!(u16::from_be_bytes([u[2], u[3]]), 6080);
        assert_eq!(
            usize::from(u16::from_be_bytes([u[4], u[5]])),
            out.len() - 20
        );
        assert_eq!(&u[6..8], &[0, 0], "no UDP checksum");
        assert_eq!(
            &out[28..32],
            &[0, IPPROTO_IPIP, 0, 0],
            "GUE v0, IPv4 inside"
        );
        assert_eq!(&out[32..], &inner[..]);
        sports.push(sport);
    }
    assert_eq!(sports[0], sports[1], "one flow, one source port");
    // rr alternates: the third flow went to the NAT server, so send one more to compare.
    let other = tcp(a("10.77.0.5:40002"), a(VIP), SYN, b"");
    let (_, out, _) = run(&mut s, &other, None);
    let sport = u16::from_be_bytes([out[20], out[21]]);
    assert_ne!(
        sport, sports[0],
        "another flow, another source port (keyed hash)"
    );
    // Too big: the MTU less all 32 bytes.
    let mut s = shard_of(text, 1400);
    run(&mut s, &tcp(a("10.77.0.3:40000"), a(VIP), SYN, b""), None);
    let big = tcp(a(CLIENT), a(VIP), SYN, &[0u8; 1329]); // 1369 + 32 > 1400
    let (_, out, _) = run(&mut s, &big, None);
    assert_eq!((out[20], out[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1368);
}

/// LVS-DR through the AF_XDP framing: each packet of the flow, unchanged at L3, in a frame
/// to the realserver's MAC (the neighbour table knows only the realserver: a frame towards
/// the packet's own destination, the VIP, would find no next hop), under input-only rows.
/// `inner` builds the client's packet with the given flags.
fn direct_routing_case(
    vip: &str,
    rip: std::net::IpAddr,
    inner: impl Fn(u8) -> Vec<u8>,
) -> crate::dataplane::stats::Traffic {
    use crate::io::mem::{process_frame, FrameOutcome};
    let text = format!(
        r#"
[director]
io = "af_xdp"
interfaces = ["lo"]
[[service]]
name = "web"
vip = "{vip}"
forward = "dr"
[[service.server]]
addr = "{}"
"#,
        match rip {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    );
    let mut s = shard_of(&text, 1500);
    let rs_mac = [2, 0, 0, 0, 0, 7];
    let ethertype: u16 = if rip.is_ipv6() { 0x86dd } else { 0x0800 };
    let eth = |dst: std::net::IpAddr| -> Option<[u8; 14]> {
        (dst == rip).then(|| {
            let mut h = [0u8; 14];
            h[..6].copy_from_slice(&rs_mac);
            h[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
            h[12..14].copy_from_slice(&ethertype.to_be_bytes());
            h
        })
    };
    for (flags, want) in [(SYN, State::SynRecv), (ACK, State::Established)] {
        let inner = inner(flags);
        let mut frame = vec![2, 0, 0, 0, 0, 0xfe, 2, 0, 0, 0, 0, 1];
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&inner);
        match process_frame(&mut s, &frame, |_| true, eth) {
            FrameOutcome::Sent(out) => {
                assert_eq!(&out[..6], &rs_mac, "to the realserver's MAC");
                assert_eq!(&out[12..14], &ethertype.to_be_bytes());
                assert_eq!(&out[14..], &inner[..], "the packet itself unchanged");
            }
            other => panic!("{vip}: {other:?}"),
        }
        let (state, flags) = match rip {
            std::net::IpAddr::V4(_) => {
                let c = s.table().iter().next().unwrap().1;
                (c.state, c.flags)
            }
            std::net::IpAddr::V6(_) => {
                let c = s.table6().unwrap().iter().next().unwrap().1;
                (c.state, c.flags)
            }
        };
        assert_eq!(state, want, "{vip}: input-only rows");
        assert_ne!(
            flags & crate::conn::F_NOOUTPUT,
            0,
            "{vip}: input-only for good"
        );
    }
    s.counters().total
}

#[test]
fn direct_routing_sends_the_unchanged_packet_to_the_realservers_mac() {
    let rip = std::net::IpAddr::from([10, 77, 1, 7]);
    let r = direct_routing_case(VIP, rip, |f| tcp(a(CLIENT), a(VIP), f, b""));
    assert_eq!((r.conns, r.in_pkts, r.out_pkts), (1, 2, 0));
}

#[test]
fn direct_routing_over_ipv6_frames_for_the_realservers_mac() {
    let rip = std::net::IpAddr::V6(RS6);
    let r = direct_routing_case(VIP6, rip, |f| tcp6(a6(CLIENT6), a6(VIP6), f, b""));
    assert_eq!((r.conns, r.in_pkts, r.out_pkts), (1, 2, 0));
}

/// Two tunnelled realservers, with or without `sloppy`.
fn sloppy_config(sloppy: bool) -> String {
    format!(
        r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
forward = "tun"
scheduler = "rr"
sloppy = {sloppy}
[[service.server]]
addr = "10.77.1.1"
[[service.server]]
addr = "10.77.1.2"
"#
    )
}

#[test]
fn sloppy_takes_up_a_connection_another_director_started() {
    // Director A saw the SYN; ECMP then moves the connection to B (sloppy) or C (not).
    let mut a_dir = shard_of(&sloppy_config(true), 1500);
    let mut b_dir = shard_of(&sloppy_config(true), 1500);
    let mut c_dir = shard_of(&sloppy_config(false), 1500);
    // Both start their scheduler alike, as a consistent hash would pick alike.
    let syn = tcp(a(CLIENT), a(VIP), SYN, b"");
    let (v, out, _) = run(&mut a_dir, &syn, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(a_dir.counters().sloppy, 0, "a SYN is no sloppy entry");
    let rip = Ipv4Addr::new(out[16], out[17], out[18], out[19]);

    let data = tcp(a(CLIENT), a(VIP), ACK, b"GET / HTTP/1.1\r\n\r\n");
    let (v, out, _) = run(&mut b_dir, &data, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out, ipip(rip, &data, 1, true), "to A's realserver");
    let c = *b_dir.table().iter().next().unwrap().1;
    assert_eq!(c.state, State::Established, "an ACK opens it established");
    assert_eq!(b_dir.counters().sloppy, 1);
    // The next segment finds the entry: no second one.
    assert_eq!(run(&mut b_dir, &data, None).0, Verdict::Forward);
    assert_eq!((b_dir.counters().sloppy, b_dir.table().len()), (1, 1));

    // Without sloppy: dropped as before; a RST opens nothing even with it.
    assert_eq!(run(&mut c_dir, &data, None).0, Verdict::Drop);
    assert_eq!(c_dir.counters().drops[DropReason::NoConn as usize], 1);
    assert_eq!(c_dir.table().len(), 0);
    let rst = tcp(
        a("10.77.0.9:1234"),
        a(VIP),
        crate::wire::tcp::flags::RST,
        b"",
    );
    assert_eq!(run(&mut b_dir, &rst, None).0, Verdict::Drop);
    assert_eq!(b_dir.counters().drops[DropReason::NoConn as usize], 1);
    assert_eq!((b_dir.counters().sloppy, b_dir.table().len()), (1, 1));
}

#[test]
fn sloppy_is_refused_with_a_nat_realserver() {
    let text = format!(
        "{}\n[[service.server]]\naddr = \"10.77.1.3:8080\"\nforward = \"nat\"\n",
        sloppy_config(true)
    );
    let e = crate::config::from_str(&text, "s.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("service.0.sloppy") || e.contains("sloppy"),
        "{e}"
    );
    assert!(
        e.contains("10.77.1.3:8080") && e.contains("director.sync"),
        "{e}"
    );
    let c = crate::config::from_str(&sloppy_config(true), "s.toml").unwrap();
    let saved = crate::config::save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    assert!(saved.contains("sloppy = true"), "{saved}");
    let again = crate::config::from_str(&saved, "saved.toml").unwrap();
    assert!(again.services[0].sloppy);
}

const CONFIG6: &str = r#"
[[service]]
name = "web6"
vip = "[fd77:100::100]:80"
forward = "tun"
scheduler = "rr"
[[service.server]]
addr = "fd77:1::1"
"#;

const RS6: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1);
const CLIENT6: &str = "[fd77::2]:40000";
const VIP6: &str = "[fd77:100::100]:80";

fn a6(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

/// True if the UDP datagram `u` (header and payload) from `src` to `dst` sums right.
fn udp6_sums(src: Ipv6Addr, dst: Ipv6Addr, u: &[u8]) -> bool {
    use crate::wire::checksum;
    let p = checksum::pseudo_header_for(src, dst, 17, u.len() as u32);
    checksum::fold(u32::from(p) + checksum::sum(u)) == 0xffff
}

#[test]
fn ipv6_in_ipv6_carries_the_clients_packet_unchanged_with_the_flows_label() {
    let mut s = shard_of(CONFIG6, 1500);
    let mut labels = Vec::new();
    for (client, flags) in [(CLIENT6, SYN), (CLIENT6, ACK), ("[fd77::3]:40001", SYN)] {
        let inner = tcp6(a6(client), a6(VIP6), flags, b"");
        let (v, out, _) = run(&mut s, &inner, None);
        assert_eq!(v, Verdict::Forward);
        let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(
            (ip.version(), ip.next_header(), ip.hop_limit()),
            (6, IPPROTO_IPV6, 64)
        );
        assert_eq!((ip.src_addr(), ip.dst_addr()), (SRC6, RS6));
        assert_eq!(usize::from(ip.payload_len()), inner.len());
        assert_eq!(&out[OUTER6..], &inner[..], "the client's packet, unchanged");
        labels.push(ip.flow_label());
    }
    assert_eq!(labels[0], labels[1], "one flow, one label");
    assert_ne!(labels[0], labels[2], "another flow, another label");
    let c = *s.table6().unwrap().iter().next().unwrap().1;
    assert_ne!(c.flags & crate::conn::F_NOOUTPUT, 0, "input-only for good");
    assert_eq!(
        c.state,
        State::Established,
        "the client's ACK established it"
    );
    let r = &s.counters().total;
    assert_eq!((r.conns, r.in_pkts, r.out_pkts), (2, 3, 0));
}

#[test]
fn too_big_for_an_ipv6_tunnel_tells_the_client_packet_too_big() {
    let mut s = shard_of(CONFIG6, 1400);
    // 1361 bytes + 40 > 1400.
    let big = tcp6(a6(CLIENT6), a6(VIP6), SYN, &[7u8; 1301]);
    assert_eq!(big.len(), 1361);
    let (v, out, _) = run(&mut s, &big, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(out.len(), 1280, "as much as fits the minimum MTU");
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.next_header()),
        (*a6(VIP6).ip(), *a6(CLIENT6).ip(), 58)
    );
    let icmp = crate::wire::icmpv6::Icmpv6Packet::new_checked(&out[OUTER6..]).unwrap();
    assert!(icmp.verify_checksum(ip.src_addr(), ip.dst_addr()));
    assert_eq!((icmp.msg_type(), icmp.code(), icmp.mtu()), (2, 0, 1360));
    assert_eq!(&out[48..], &big[..1232], "the client's packet, quoted");
    assert_eq!(s.counters().tunnel_too_big, 1);
    // One byte less fits.
    let fits = tcp6(a6(CLIENT6), a6(VIP6), SYN, &[7u8; 1300]);
    let (_, out, _) = run(&mut s, &fits, None);
    assert_eq!(out.len(), 1400);
    // A tunnel narrower than IPv6's minimum still takes 1280 bytes (the kernel fragments
    // the outer packet) and never asks for less.
    let mut s = shard_of(CONFIG6, 1300);
    let (_, out, _) = run(
        &mut s,
        &tcp6(a6(CLIENT6), a6(VIP6), SYN, &[7u8; 1220]),
        None,
    );
    assert_eq!((out.len(), out[6]), (1320, IPPROTO_IPV6));
    let (_, out, _) = run(&mut s, &big, None);
    let icmp = crate::wire::icmpv6::Icmpv6Packet::new_checked(&out[OUTER6..]).unwrap();
    assert_eq!((icmp.msg_type(), icmp.mtu()), (2, 1280));
}

#[test]
fn gue_over_ipv6_sums_its_udp_even_with_a_partial_inner_checksum() {
    let text = CONFIG6.replace(
        "forward = \"tun\"",
        "forward = \"tun\"\ntunnel = \"gue\"\ntunnel_port = 6080",
    );
    let mut s = shard_of(&text, 1500);
    let inner = tcp6(a6(CLIENT6), a6(VIP6), SYN, b"");
    let (v, out, _) = run(&mut s, &inner, None);
    assert_eq!(v, Verdict::Forward);
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(
        (ip.next_header(), ip.src_addr(), ip.dst_addr()),
        (17, SRC6, RS6)
    );
    let u = &out[OUTER6..];
    assert_eq!(u16::from_be_bytes([u[2], u[3]]), 6080);
    assert_eq!(usize::from(u16::from_be_bytes([u[4], u[5]])), u.len());
    assert_ne!(&u[6..8], &[0, 0], "IPv6 needs the UDP checksum");
    assert!(udp6_sums(SRC6, RS6, u));
    assert_eq!(&u[8..12], &[0, IPPROTO_IPV6, 0, 0], "GUE v0, IPv6 inside");
    assert_eq!(&u[12..], &inner[..]);

    // A partial inner checksum (the field holds the pseudo-header's sum): once the kernel
    // fills it in, the outer checksum is right.
    let mut ack = tcp6(a6(CLIENT6), a6(VIP6), ACK, b"hello");
    let tcp_len = ack.len() - 40;
    let pseudo = crate::wire::checksum::pseudo_header_for(
        *a6(CLIENT6).ip(),
        *a6(VIP6).ip(),
        6,
        tcp_len as u32,
    );
    ack[56..58].copy_from_slice(&pseudo.to_be_bytes());
    let partial = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 40,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let (v, mut out, vnet) = run(&mut s, &ack, Some(partial));
    assert_eq!(v, Verdict::Forward);
    let start = usize::from(vnet.unwrap().csum_start);
    assert_eq!(start, 40 + 52, "the inner TCP header moved by 52");
    // Fill it in as the kernel would.
    let field = start + 16;
    out[field..field + 2].fill(0);
    let sum = crate::wire::checksum::sum(&out[start..]) + u32::from(pseudo);
    let c = !crate::wire::checksum::fold(sum);
    out[field..field + 2].copy_from_slice(&c.to_be_bytes());
    assert_eq!(&out[52..], &tcp6(a6(CLIENT6), a6(VIP6), ACK, b"hello")[..]);
    assert!(udp6_sums(SRC6, RS6, &out[OUTER6..]));
}

#[test]
fn ipv6_tunnels_are_configured() {
    let c = crate::config::from_str(CONFIG6, "t.toml").unwrap();
    assert_eq!(
        c.services[0].servers[0].addr,
        "[fd77:1::1]:80".parse().unwrap()
    );
    let text = format!("[director]\ntunnel_source6 = \"fd77:1::fe\"\n{CONFIG6}");
    let c = crate::config::from_str(&text, "t.toml").unwrap();
    assert_eq!(c.director.tunnel_source6, Some(SRC6));
    let saved = crate::config::save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    let again = crate::config::from_str(&saved, "saved.toml").unwrap();
    assert_eq!(again.director.tunnel_source6, Some(SRC6));
    for bad in ["10.77.1.254", "::", "ff02::1", "::ffff:10.0.0.1", "::1"] {
        let text = format!("[director]\ntunnel_source6 = \"{bad}\"\n{CONFIG6}");
        let e = crate::config::from_str(&text, "t.toml").unwrap_err();
        assert_eq!(e.key, "director.tunnel_source6", "{bad}: {e}");
    }
    let e = crate::config::from_str(&CONFIG6.replace("\"tun\"", "\"dr\""), "t.toml").unwrap_err();
    assert!(e.to_string().contains(crate::config::DR_NEEDS_L2), "{e}");
    // The realserver takes the packet unchanged: its port is the service's.
    let e = crate::config::from_str(&CONFIG6.replace("fd77:1::1", "[fd77:1::1]:8080"), "t.toml")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("its port must be the virtual service's"),
        "{e}"
    );
}

#[test]
fn a_tunnel_crosses_families_as_ipvs_allows_since_linux_5_3() {
    // IPv4 clients to an IPv6 realserver: IPv4 inside IPv6 (next header 4).
    let text = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
forward = "tun"
[[service.server]]
addr = "fd77:1::1"
"#;
    let mut s = shard_of(text, 1500);
    let syn = tcp(a(CLIENT), a(VIP), SYN, b"");
    let (v, out, _) = run(&mut s, &syn, None);
    assert_eq!(v, Verdict::Forward);
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(
        (ip.next_header(), ip.src_addr(), ip.dst_addr()),
        (IPPROTO_IPIP, SRC6, RS6)
    );
    assert_eq!(&out[OUTER6..], &syn[..]);
    // Too big: an IPv4 packet with DF learns the IPv6 tunnel's MTU less 40.
    let big = tcp(a(CLIENT), a(VIP), ACK, &[0u8; 1441]); // 1481 + 40 > 1500
    let (_, out, _) = run(&mut s, &big, None);
    assert_eq!((out[9], out[20], out[21]), (1, 3, 4));
    assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1460);

    // IPv6 clients to an IPv4 realserver: IPv6 inside IPv4 (protocol 41), DF set.
    let text = r#"
[[service]]
name = "web6"
vip = "[fd77:100::100]:80"
forward = "tun"
[[service.server]]
addr = "10.77.1.1"
"#;
    let mut s = shard_of(text, 1500);
    let syn6 = tcp6(a6(CLIENT6), a6(VIP6), SYN, b"");
    let (v, out, _) = run(&mut s, &syn6, None);
    assert_eq!(v, Verdict::Forward);
    let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.protocol(), ip.src_addr(), ip.dst_addr(), ip.dont_frag()),
        (IPPROTO_IPV6, SRC, Ipv4Addr::new(10, 77, 1, 1), true)
    );
    assert_eq!(&out[OUTER..], &syn6[..]);
    // NAT across families stays refused, naming both addresses.
    let e = crate::config::from_str(
        &text.replace("forward = \"tun\"", "forward = \"nat\""),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("10.77.1.1:80") && e.contains("share one address family"),
        "{e}"
    );
}
