//! Table-driven data-plane fixtures (Katran style): each step feeds one packet to a queue and
//! states the expected output packet, or the drop reason, or an unchanged pass.

use super::stats::DropReason;
use super::testkit::{self, icmp_echo, icmp_error, partial, tcp, udp};
use super::tests6::{through, Show};
use super::*;
use crate::conn::State;
use crate::control::registry::Registry;
use crate::wire::icmpv4::{msg_type, unreach_code};
use crate::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

/// The two test services, with a second DNS realserver (rr spreads over both).
fn config() -> String {
    format!(
        "{}[[service.server]]\naddr = \"10.77.1.2:5353\"\n",
        testkit::TWO_SERVICES
    )
}

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

struct Lab {
    shard: Shard,
    registry: Registry,
}

fn lab_with(config: &str, memory: usize) -> Lab {
    lab_opts(config, memory, false)
}

/// A lab whose director has `expire_nodest_conn` as given.
fn lab_opts(config: &str, memory: usize, expire_nodest_conn: bool) -> Lab {
    let cfg = crate::config::from_str(config, "fixture.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let snap = Arc::new(registry.snapshot());
    let start = Instant::now();
    let shard = Shard::new(
        ShardConfig {
            start,
            expire_nodest_conn,
            ..ShardConfig::test(memory)
        },
        snap,
        None,
    )
    .unwrap();
    Lab { shard, registry }
}

fn lab() -> Lab {
    lab_with(&config(), 1 << 20)
}

/// Runs one packet; returns the verdict and the bytes that would be written.
fn run(shard: &mut Shard, input: &[u8], vnet: Option<VnetHdr>) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + input.len() + 64];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
    p.vnet = vnet;
    let v = shard.process(&mut p);
    let out = p.data().to_vec();
    (v, out)
}

enum Expect {
    Forward(Vec<u8>),
    Drop(DropReason),
    Pass,
    /// Held for reassembly: nothing sent, nothing counted as a drop.
    Held,
}

struct Fixture {
    desc: &'static str,
    input: Vec<u8>,
    vnet: Option<VnetHdr>,
    expect: Expect,
}

fn fx(desc: &'static str, input: Vec<u8>, expect: Expect) -> Fixture {
    Fixture {
        desc,
        input,
        vnet: None,
        expect,
    }
}

fn check(shard: &mut Shard, fixtures: Vec<Fixture>) {
    for f in fixtures {
        let before = shard.counters().clone();
        let (v, out) = run(shard, &f.input, f.vnet);
        match f.expect {
            Expect::Forward(want) => {
                assert_eq!(v, Verdict::Forward, "{}: verdict", f.desc);
                assert_eq!(hex(&out), hex(&want), "{}: output packet", f.desc);
            }
            Expect::Pass => {
                assert_eq!(v, Verdict::Forward, "{}: verdict", f.desc);
                assert_eq!(out, f.input, "{}: passed packets are unchanged", f.desc);
                assert_eq!(
                    shard.counters().passthrough,
                    before.passthrough + 1,
                    "{}",
                    f.desc
                );
            }
            Expect::Held => {
                assert_eq!(v, Verdict::Consumed, "{}: verdict", f.desc);
                assert_eq!(shard.counters().drops, before.drops, "{}: no drop", f.desc);
            }
            Expect::Drop(r) => {
                assert_eq!(v, Verdict::Drop, "{}: verdict", f.desc);
                let n = shard.counters().drops[r as usize];
                assert_eq!(
                    n,
                    before.drops[r as usize] + 1,
                    "{}: counted as {}",
                    f.desc,
                    r.label()
                );
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn nat_tcp_connection_both_ways() {
    let mut l = lab();
    let client = a("10.77.0.2:40000");
    let vip = a("10.77.100.100:80");
    let rs1 = a("10.77.1.1:8080");
    check(
        &mut l.shard,
        vec![
            fx(
                "client SYN goes to the first server (wlc, all idle)",
                tcp(client, vip, SYN, b""),
                Expect::Forward(tcp(client, rs1, SYN, b"")),
            ),
            fx(
                "server SYN-ACK comes back from the VIP",
                tcp(rs1, client, SYN | ACK, b""),
                Expect::Forward(tcp(vip, client, SYN | ACK, b"")),
            ),
            fx(
                "client ACK",
                tcp(client, vip, ACK, b""),
                Expect::Forward(tcp(client, rs1, ACK, b"")),
            ),
            fx(
                "client data",
                tcp(client, vip, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n"),
                Expect::Forward(tcp(client, rs1, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")),
            ),
            fx(
                "server data",
                tcp(rs1, client, PSH | ACK, &[0xab; 1400]),
                Expect::Forward(tcp(vip, client, PSH | ACK, &[0xab; 1400])),
            ),
        ],
    );
    let dests = &l.registry.service("web").unwrap().dests;
    assert_eq!(
        (
            dests[0].state.counters.active(),
            dests[0].state.counters.inactive()
        ),
        (1, 0)
    );
    let (_, c) = l.shard.table().iter().next().unwrap();
    assert_eq!(c.state, State::Established);
    // A second client now goes to the other server: wlc sees one active connection on rs1.
    let c2 = a("10.77.0.3:50000");
    check(
        &mut l.shard,
        vec![fx(
            "second client SYN to rs2",
            tcp(c2, vip, SYN, b""),
            Expect::Forward(tcp(c2, a("10.77.1.2:8080"), SYN, b"")),
        )],
    );
    // Closing: client FIN, server FIN.
    check(
        &mut l.shard,
        vec![
            fx(
                "client FIN",
                tcp(client, vip, FIN | ACK, b""),
                Expect::Forward(tcp(client, rs1, FIN | ACK, b"")),
            ),
            fx(
                "server FIN",
                tcp(rs1, client, FIN | ACK, b""),
                Expect::Forward(tcp(vip, client, FIN | ACK, b"")),
            ),
        ],
    );
    let st: Vec<State> = l.shard.table().iter().map(|(_, c)| c.state).collect();
    assert!(st.contains(&State::TimeWait), "{st:?}");
    assert_eq!(
        (
            dests[0].state.counters.active(),
            dests[0].state.counters.inactive()
        ),
        (0, 1)
    );
}

#[test]
fn udp_both_ways_and_zero_checksum() {
    let mut l = lab();
    let client = a("10.77.0.2:33000");
    let vip = a("10.77.100.100:53");
    // rr starts after the last pick: the first pick is the second server.
    let rs = a("10.77.1.2:5353");
    let mut q = udp(client, vip, b"query");
    let mut want = udp(client, rs, b"query");
    check(
        &mut l.shard,
        vec![fx(
            "datagram to a server",
            q.clone(),
            Expect::Forward(want.clone()),
        )],
    );
    check(
        &mut l.shard,
        vec![fx(
            "answer from the VIP",
            udp(rs, client, b"answer"),
            Expect::Forward(udp(vip, client, b"answer")),
        )],
    );
    // No checksum (0) stays none.
    q[26] = 0;
    q[27] = 0;
    want[26] = 0;
    want[27] = 0;
    check(
        &mut l.shard,
        vec![fx("zero UDP checksum is kept", q, Expect::Forward(want))],
    );
    let d = l.registry.service("dns").unwrap().dests[1].state.clone();
    assert_eq!(
        (d.counters.active(), d.counters.inactive()),
        (0, 1),
        "UDP flows count as InActConn"
    );
}

#[test]
fn partial_checksums_from_offload() {
    let mut l = lab();
    let client = a("10.77.0.2:40001");
    let vip = a("10.77.100.100:80");
    let rs1 = a("10.77.1.1:8080");
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..Default::default()
    };
    let mut f = fx(
        "SYN with a partial checksum",
        partial(tcp(client, vip, SYN, b"")),
        Expect::Forward(partial(tcp(client, rs1, SYN, b""))),
    );
    f.vnet = Some(vnet);
    let mut g = fx(
        "reply with a partial checksum",
        partial(tcp(rs1, client, SYN | ACK, b"")),
        Expect::Forward(partial(tcp(vip, client, SYN | ACK, b""))),
    );
    g.vnet = Some(vnet);
    check(&mut l.shard, vec![f, g]);
}

#[test]
fn icmp_errors_are_translated() {
    let mut l = lab();
    let client = a("10.77.0.2:40002");
    let vip = a("10.77.100.100:80");
    let rs1 = a("10.77.1.1:8080");
    run(&mut l.shard, &tcp(client, vip, SYN, b""), None);
    // The client's path says "fragmentation needed" about a packet VIP → client.
    let big_reply = tcp(vip, client, ACK, &[0u8; 1400]);
    let on_rs_side = tcp(rs1, client, ACK, &[0u8; 1400]);
    let frag = icmp_error(
        ip("10.77.0.254"),
        *vip.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::FRAG_NEEDED,
        1300,
        &big_reply,
        28,
    );
    let want = icmp_error(
        ip("10.77.0.254"),
        *rs1.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::FRAG_NEEDED,
        1300,
        &on_rs_side,
        28,
    );
    // A quote long enough to include the TCP checksum is translated too.
    let frag_long = icmp_error(
        ip("10.77.0.254"),
        *vip.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::FRAG_NEEDED,
        1300,
        &big_reply,
        576,
    );
    let want_long = icmp_error(
        ip("10.77.0.254"),
        *rs1.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::FRAG_NEEDED,
        1300,
        &on_rs_side,
        576,
    );
    // The server side says "port unreachable" about client → RIP: the client hears it from
    // the VIP about client → VIP.
    let sent = tcp(client, rs1, ACK, b"x");
    let seen = tcp(client, vip, ACK, b"x");
    let unreach = icmp_error(
        *rs1.ip(),
        *client.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::PORT_UNREACHABLE,
        0,
        &sent,
        48,
    );
    let want_unreach = icmp_error(
        *vip.ip(),
        *client.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::PORT_UNREACHABLE,
        0,
        &seen,
        48,
    );
    let stranger = a("10.77.0.9:1234");
    let unknown = icmp_error(
        ip("10.77.0.254"),
        *vip.ip(),
        msg_type::DEST_UNREACHABLE,
        unreach_code::FRAG_NEEDED,
        1300,
        &tcp(vip, stranger, ACK, b""),
        28,
    );
    check(
        &mut l.shard,
        vec![
            fx(
                "frag needed toward the VIP reaches the server",
                frag,
                Expect::Forward(want),
            ),
            fx(
                "long quote: inner checksum fixed too",
                frag_long,
                Expect::Forward(want_long),
            ),
            fx(
                "port unreachable from the server reaches the client from the VIP",
                unreach,
                Expect::Forward(want_unreach),
            ),
            fx(
                "ICMP about an unknown flow of a service",
                unknown,
                Expect::Drop(DropReason::IcmpNoConn),
            ),
        ],
    );
    assert_eq!(l.shard.counters().icmp_translated, 3);
}

#[test]
fn ping_to_the_vip_is_answered() {
    let mut l = lab();
    let req = icmp_echo(ip("10.77.0.2"), ip("10.77.100.100"), true, 7, 1);
    let want = testkit::with_ttl(
        icmp_echo(ip("10.77.100.100"), ip("10.77.0.2"), false, 7, 1),
        64,
    );
    check(
        &mut l.shard,
        vec![fx("echo request to the VIP", req, Expect::Forward(want))],
    );
    let other = icmp_echo(ip("10.77.0.2"), ip("10.77.1.1"), true, 7, 1);
    check(
        &mut l.shard,
        vec![fx("ping to a realserver passes", other, Expect::Pass)],
    );
}

#[test]
fn bad_and_foreign_input() {
    let mut l = lab();
    let client = a("10.77.0.2:40003");
    let vip = a("10.77.100.100:80");
    let syn = tcp(client, vip, SYN, b"");
    // Header edits below keep a valid header checksum, so each case reaches its own check.
    let fixed = |mut v: Vec<u8>| {
        let ihl = ((v[0] & 0x0f) as usize) * 4;
        crate::wire::Ipv4Packet::new_unchecked(&mut v[..ihl]).fill_checksum();
        v
    };
    let mut opts = vec![0x46u8];
    opts.extend_from_slice(&syn[1..20]);
    opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opts.extend_from_slice(&syn[20..]);
    let total = opts.len() as u16;
    opts[2..4].copy_from_slice(&total.to_be_bytes());
    let opts = fixed(opts);
    let mut frag = syn.clone();
    frag[6] = 0x20; // MF
    let frag = fixed(frag);
    let mut later = syn.clone();
    later[6] = 0x00;
    later[7] = 0x10; // offset 128
    let later = fixed(later);
    let mut gre = syn.clone();
    gre[9] = 47;
    let gre = fixed(gre);
    let mut short_len = syn.clone();
    short_len[3] = 30; // total_len 30 < 40: TCP header truncated
    let short_len = fixed(short_len);
    let mut bad_sum = syn.clone();
    bad_sum[10] ^= 0x5a;
    check(
        &mut l.shard,
        vec![
            fx(
                "ten bytes",
                syn[..10].to_vec(),
                Expect::Drop(DropReason::Malformed),
            ),
            fx(
                "wrong header checksum",
                bad_sum,
                Expect::Drop(DropReason::BadChecksum),
            ),
            fx(
                "IPv6",
                {
                    let mut v = syn.clone();
                    v[0] = 0x60;
                    v
                },
                Expect::Drop(DropReason::Malformed),
            ),
            fx(
                "total length cuts the TCP header",
                short_len,
                Expect::Drop(DropReason::Malformed),
            ),
            fx("IP options", opts, Expect::Drop(DropReason::IpOptions)),
            // 20 bytes of TCP header: not a multiple of 8, refused.
            fx("first fragment", frag, Expect::Drop(DropReason::Fragment)),
            fx("later fragment", later, Expect::Held),
            fx(
                "GRE to the VIP",
                gre,
                Expect::Drop(DropReason::UnknownProto),
            ),
            fx(
                "TCP to a VIP port with no service",
                tcp(client, a("10.77.100.100:81"), SYN, b""),
                Expect::Drop(DropReason::NoService),
            ),
            fx(
                "SYN+FIN",
                tcp(client, vip, SYN | FIN, b""),
                Expect::Drop(DropReason::TcpFlags),
            ),
            fx(
                "SYN+RST",
                tcp(client, vip, SYN | RST, b""),
                Expect::Drop(DropReason::TcpFlags),
            ),
            fx(
                "no flags",
                tcp(client, vip, 0, b""),
                Expect::Drop(DropReason::TcpFlags),
            ),
            fx(
                "FIN without ACK",
                tcp(client, vip, FIN | PSH, b""),
                Expect::Drop(DropReason::TcpFlags),
            ),
            fx(
                "ACK of an unknown connection",
                tcp(client, vip, ACK, b""),
                Expect::Drop(DropReason::NoConn),
            ),
            fx(
                "SYN-ACK to the VIP for no connection",
                tcp(client, vip, SYN | ACK, b""),
                Expect::Drop(DropReason::NoConn),
            ),
            fx(
                "reply from a server port, no connection",
                tcp(a("10.77.1.1:8080"), client, ACK, b""),
                Expect::Drop(DropReason::StaleReply),
            ),
            fx(
                "server's own traffic passes",
                udp(a("10.77.1.1:40000"), a("10.77.50.1:53"), b"q"),
                Expect::Pass,
            ),
        ],
    );
    assert!(
        l.shard.table().is_empty(),
        "no bad packet created a connection"
    );
}

#[test]
fn quiesced_server_keeps_its_flows() {
    let mut l = lab();
    let vip = a("10.77.100.100:80");
    let rs1 = a("10.77.1.1:8080");
    let c1 = a("10.77.0.2:41000");
    run(&mut l.shard, &tcp(c1, vip, SYN, b""), None);
    l.registry.set_weight("web", rs1.into(), 0).unwrap();
    let c2 = a("10.77.0.2:41001");
    check(
        &mut l.shard,
        vec![
            fx(
                "existing flow stays on the quiesced server",
                tcp(c1, vip, ACK, b""),
                Expect::Forward(tcp(c1, rs1, ACK, b"")),
            ),
            fx(
                "new flow avoids it",
                tcp(c2, vip, SYN, b""),
                Expect::Forward(tcp(c2, a("10.77.1.2:8080"), SYN, b"")),
            ),
        ],
    );
    l.registry
        .set_weight("web", a("10.77.1.2:8080").into(), 0)
        .unwrap();
    check(
        &mut l.shard,
        vec![fx(
            "nobody left",
            tcp(a("10.77.0.2:41002"), vip, SYN, b""),
            Expect::Drop(DropReason::NoServer),
        )],
    );
}

#[test]
fn removed_server_drains_and_reload_keeps_connections() {
    let mut l = lab();
    let vip = a("10.77.100.100:80");
    let rs1 = a("10.77.1.1:8080");
    let c1 = a("10.77.0.2:42000");
    run(&mut l.shard, &tcp(c1, vip, SYN, b""), None);
    l.registry.remove_server("web", rs1.into()).unwrap();
    l.shard.apply_snapshot(Arc::new(l.registry.snapshot()));
    let c2 = a("10.77.0.2:42001");
    check(
        &mut l.shard,
        vec![
            fx(
                "draining server still serves its flow",
                tcp(c1, vip, ACK, b""),
                Expect::Forward(tcp(c1, rs1, ACK, b"")),
            ),
            fx(
                "reply still translated",
                tcp(rs1, c1, ACK, b""),
                Expect::Forward(tcp(vip, c1, ACK, b"")),
            ),
            fx(
                "new flow goes elsewhere",
                tcp(c2, vip, SYN, b""),
                Expect::Forward(tcp(c2, a("10.77.1.2:8080"), SYN, b"")),
            ),
        ],
    );
}

#[test]
fn expire_nodest_conn_ends_flows_of_removed_servers() {
    let Lab {
        mut shard,
        mut registry,
    } = lab_opts(&config(), 1 << 20, true);
    let vip = a("10.77.100.100:80");
    let c1 = a("10.77.0.2:43000");
    run(&mut shard, &tcp(c1, vip, SYN, b""), None);
    registry
        .remove_server("web", a("10.77.1.1:8080").into())
        .unwrap();
    shard.apply_snapshot(Arc::new(registry.snapshot()));
    check(
        &mut shard,
        vec![fx(
            "packet of a removed server's flow",
            tcp(c1, vip, ACK, b""),
            Expect::Drop(DropReason::DestRemoved),
        )],
    );
    assert!(shard.table().is_empty());
}

#[test]
fn health_down_quiesces_and_health_removed_drains_like_a_removal() {
    use crate::dataplane::service::{DEST_F_DOWN, DEST_F_HEALTH_REMOVED};
    let Lab {
        mut shard,
        registry,
    } = lab_opts(&config(), 1 << 20, true);
    let vip = a("10.77.100.100:80");
    let (rs1, rs2) = (a("10.77.1.1:8080"), a("10.77.1.2:8080"));
    let (c1, c2, c3) = (
        a("10.77.0.2:45000"),
        a("10.77.0.2:45001"),
        a("10.77.0.2:45002"),
    );
    run(&mut shard, &tcp(c1, vip, SYN, b""), None);
    run(&mut shard, &tcp(c2, vip, SYN, b""), None);
    let dests = &registry.service("web").unwrap().dests;
    // rs1 fails its check under on_fail = "quiesce": the flags change, no snapshot.
    dests[0].state.health_down(false);
    assert_eq!(dests[0].state.flags(), DEST_F_DOWN);
    check(
        &mut shard,
        vec![
            fx(
                "a quiesced server keeps its flow, even with expire_nodest_conn",
                tcp(c1, vip, ACK, b""),
                Expect::Forward(tcp(c1, rs1, ACK, b"")),
            ),
            fx(
                "no new flow to it",
                tcp(c3, vip, SYN, b""),
                Expect::Forward(tcp(c3, rs2, SYN, b"")),
            ),
        ],
    );
    // rs2 fails under on_fail = "remove": its flows are a removed server's.
    dests[1].state.health_down(true);
    assert_eq!(dests[1].state.flags(), DEST_F_DOWN | DEST_F_HEALTH_REMOVED);
    check(
        &mut shard,
        vec![fx(
            "a health-removed server's flow ends on its next packet",
            tcp(c2, vip, ACK, b""),
            Expect::Drop(DropReason::DestRemoved),
        )],
    );
}

#[test]
fn expire_on_removal_ends_only_the_flows_it_names() {
    // expire_nodest_conn is off: the removal itself asks (`ringvs server remove --expire`).
    let mut l = lab();
    let vip = a("10.77.100.100:80");
    let (rs1, rs2) = (a("10.77.1.1:8080"), a("10.77.1.2:8080"));
    let (c1, c2) = (a("10.77.0.2:45000"), a("10.77.0.3:45000"));
    check(
        &mut l.shard,
        vec![
            fx(
                "c1 to rs1",
                tcp(c1, vip, SYN, b""),
                Expect::Forward(tcp(c1, rs1, SYN, b"")),
            ),
            fx(
                "c2 to rs2 (wlc)",
                tcp(c2, vip, SYN, b""),
                Expect::Forward(tcp(c2, rs2, SYN, b"")),
            ),
        ],
    );
    l.registry.remove_server("web", rs1.into()).unwrap();
    l.registry.remove_server("web", rs2.into()).unwrap();
    assert_eq!(l.registry.expire_removed("web", Some(rs2.into())), 1);
    l.shard.apply_snapshot(Arc::new(l.registry.snapshot()));
    check(
        &mut l.shard,
        vec![
            fx(
                "plain removal: the flow drains",
                tcp(c1, vip, ACK, b""),
                Expect::Forward(tcp(c1, rs1, ACK, b"")),
            ),
            fx(
                "removal with expire: the flow ends on its next packet",
                tcp(c2, vip, ACK, b""),
                Expect::Drop(DropReason::DestRemoved),
            ),
        ],
    );
    assert_eq!(l.shard.table().len(), 1, "only c1's connection is left");
    // A server added back is a normal server again: its flows are kept.
    l.registry
        .add_server("web", crate::config::ServerConfig::new(rs2, 1))
        .unwrap();
    l.shard.apply_snapshot(Arc::new(l.registry.snapshot()));
    check(
        &mut l.shard,
        vec![fx(
            "re-added server takes new flows",
            tcp(c2, vip, SYN, b""),
            Expect::Forward(tcp(c2, rs2, SYN, b"")),
        )],
    );
    l.registry.remove_server("web", rs2.into()).unwrap();
    l.shard.apply_snapshot(Arc::new(l.registry.snapshot()));
    check(
        &mut l.shard,
        vec![fx(
            "a later plain removal drains again",
            tcp(c2, vip, ACK, b""),
            Expect::Forward(tcp(c2, rs2, ACK, b"")),
        )],
    );
}

#[test]
fn removed_service_with_expire_ends_its_flows() {
    let mut l = lab();
    let vip = a("10.77.100.100:80");
    let c1 = a("10.77.0.2:46000");
    let c2 = a("10.77.0.2:46001");
    run(&mut l.shard, &tcp(c1, vip, SYN, b""), None);
    run(&mut l.shard, &tcp(c2, vip, SYN, b""), None);
    l.registry.remove_service("web").unwrap();
    l.shard.apply_snapshot(Arc::new(l.registry.snapshot()));
    check(
        &mut l.shard,
        vec![fx(
            "a removed service's flow drains",
            tcp(c1, vip, ACK, b""),
            Expect::Forward(tcp(c1, a("10.77.1.1:8080"), ACK, b"")),
        )],
    );
    assert_eq!(l.registry.expire_removed("web", None), 2);
    check(
        &mut l.shard,
        vec![
            fx(
                "once expired, the next packet ends it",
                tcp(c1, vip, ACK, b""),
                Expect::Drop(DropReason::DestRemoved),
            ),
            fx(
                "and the other flow's",
                tcp(c2, vip, ACK, b""),
                Expect::Drop(DropReason::DestRemoved),
            ),
        ],
    );
    assert!(l.shard.table().is_empty());
}

#[test]
fn syn_on_time_wait_is_rescheduled() {
    let mut l = lab();
    let vip = a("10.77.100.100:80");
    let (rs1, rs2) = (a("10.77.1.1:8080"), a("10.77.1.2:8080"));
    let c = a("10.77.0.2:44000");
    for (p, dir_in) in [
        (SYN, true),
        (SYN | ACK, false),
        (ACK, true),
        (FIN | ACK, true),
        (FIN | ACK, false),
        (ACK, true),
    ] {
        let pkt = if dir_in {
            tcp(c, vip, p, b"")
        } else {
            tcp(rs1, c, p, b"")
        };
        assert_eq!(run(&mut l.shard, &pkt, None).0, Verdict::Forward);
    }
    assert_eq!(
        l.shard.table().iter().next().unwrap().1.state,
        State::TimeWait
    );
    // Load rs1 so that wlc prefers rs2 for the reused port.
    l.registry.service("web").unwrap().dests[0]
        .state
        .counters
        .bind(true);
    check(
        &mut l.shard,
        vec![fx(
            "SYN reusing the port of a TIME_WAIT entry",
            tcp(c, vip, SYN, b""),
            Expect::Forward(tcp(c, rs2, SYN, b"")),
        )],
    );
    assert_eq!(l.shard.table().len(), 1);
    let _ = rs1;
}

#[test]
fn full_table_of_half_open_entries_makes_room_for_a_new_flow() {
    // Early drop: a table full of SYN_RECV entries (a flood's leftovers) does not refuse a
    // new flow; one sampled half-open entry goes, and is counted.
    let mut l = lab_with(&config(), 64 << 10);
    let vip = a("10.77.100.100:80");
    let cap = l.shard.table().capacity();
    for i in 0..cap {
        let c = SocketAddrV4::new(ip("10.77.0.2"), 10_000 + i as u16);
        assert_eq!(
            run(&mut l.shard, &tcp(c, vip, SYN, b""), None).0,
            Verdict::Forward,
            "flow {i}"
        );
    }
    assert_eq!(l.shard.table().len(), cap);
    let extra = SocketAddrV4::new(ip("10.77.0.3"), 9999);
    let (v, out) = run(&mut l.shard, &tcp(extra, vip, SYN, b""), None);
    assert_eq!(v, Verdict::Forward, "the new flow is scheduled");
    assert_eq!(
        crate::wire::Ipv4Packet::new_checked(&out[..])
            .unwrap()
            .src_addr(),
        ip("10.77.0.3")
    );
    assert_eq!(l.shard.table().len(), cap, "one entry went, one came");
    assert_eq!(l.shard.counters().evictions, [1, 0, 0]);
    assert_eq!(l.shard.counters().drops[DropReason::TableFull as usize], 0);
    let d = l.registry.service("web").unwrap().dests.clone();
    let inactive: u32 = d.iter().map(|d| d.state.counters.inactive()).sum();
    assert_eq!(
        inactive as usize, cap,
        "the evicted entry's server count went with it"
    );
}

#[test]
fn full_table_of_talking_flows_refuses_new_ones_and_keeps_old_ones() {
    // Established connections that talk are never evicted for a new flow: the new flow is
    // refused as table_full.
    let mut l = lab_with(&config(), 64 << 10);
    let vip = a("10.77.100.100:80");
    let cap = l.shard.table().capacity();
    for i in 0..cap {
        let c = SocketAddrV4::new(ip("10.77.0.2"), 10_000 + i as u16);
        let (_, out) = run(&mut l.shard, &tcp(c, vip, SYN, b""), None);
        let rs = SocketAddrV4::new(
            crate::wire::Ipv4Packet::new_checked(&out[..])
                .unwrap()
                .dst_addr(),
            8080,
        );
        run(&mut l.shard, &tcp(rs, c, SYN | ACK, b""), None);
        run(&mut l.shard, &tcp(c, vip, ACK, b"GET /"), None);
    }
    assert_eq!(
        l.shard.table().by_state()[State::Established as usize] as usize,
        cap
    );
    let extra = SocketAddrV4::new(ip("10.77.0.3"), 9999);
    check(
        &mut l.shard,
        vec![fx(
            "one flow too many",
            tcp(extra, vip, SYN, b""),
            Expect::Drop(DropReason::TableFull),
        )],
    );
    assert_eq!(l.shard.counters().evictions, [0, 0, 0]);
    let first = SocketAddrV4::new(ip("10.77.0.2"), 10_000);
    assert_eq!(
        run(&mut l.shard, &tcp(first, vip, ACK, b""), None).0,
        Verdict::Forward,
        "existing flows keep working"
    );
}

#[test]
fn timers_expire_connections_and_fix_counts() {
    let mut l = lab();
    let vip = a("10.77.100.100:80");
    let c = a("10.77.0.2:45000");
    run(&mut l.shard, &tcp(c, vip, SYN, b""), None);
    let d = l.registry.service("web").unwrap().dests[0].state.clone();
    assert_eq!(d.counters.inactive(), 1);
    let now = l.shard.now();
    // SYN_RECV lasts 60 s by default.
    l.shard.set_now(now + 59 * crate::conn::TICKS_PER_SEC);
    assert_eq!(l.shard.table().len(), 1);
    l.shard.set_now(now + 61 * crate::conn::TICKS_PER_SEC);
    assert!(l.shard.table().is_empty());
    assert_eq!(d.counters.inactive(), 0);
    assert_eq!(l.shard.counters().expired, 1);
}

#[test]
fn service_timeouts_override_the_defaults() {
    let cfg = config().replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\ntimeouts = { syn_recv = \"5s\" }",
    );
    let mut l = lab_with(&cfg, 1 << 20);
    run(
        &mut l.shard,
        &tcp(a("10.77.0.2:46000"), a("10.77.100.100:80"), SYN, b""),
        None,
    );
    let now = l.shard.now();
    l.shard.set_now(now + 6 * crate::conn::TICKS_PER_SEC);
    assert!(l.shard.table().is_empty());
}

#[test]
fn an_overloaded_server_gets_no_new_flows_until_below_its_lower_threshold() {
    // rs1: upper 3, lower 2 (ipvsadm -x 3 -y 2). Built-in rr alternates while both can.
    let text = config().replacen(
        "addr = \"10.77.1.1:8080\"",
        "addr = \"10.77.1.1:8080\"\nupper = 3\nlower = 2",
        1,
    );
    let mut l = lab_with(&text, 1 << 20);
    let vip = a("10.77.100.100:80");
    let (rs1, rs2) = (a("10.77.1.1:8080"), a("10.77.1.2:8080"));
    let rs1_state = l.registry.service("web").unwrap().dests[0].state.clone();
    let overloaded = || rs1_state.flags() & super::service::DEST_F_OVERLOAD != 0;
    let dest_of = |shard: &mut Shard, port: u16| {
        let (v, out) = run(
            shard,
            &tcp(a(&format!("10.77.0.2:{port}")), vip, SYN, b""),
            None,
        );
        assert_eq!(v, Verdict::Forward);
        SocketAddrV4::new(
            Ipv4Addr::new(out[16], out[17], out[18], out[19]),
            u16::from_be_bytes([out[22], out[23]]),
        )
    };
    // Until rs1 holds 3 connections it takes its share.
    let mut on_rs1 = Vec::new();
    let mut port = 50_000;
    while on_rs1.len() < 3 {
        if dest_of(&mut l.shard, port) == rs1 {
            on_rs1.push(port);
        }
        port += 1;
        assert!(port < 50_010, "rs1 never reached its upper threshold");
    }
    assert!(overloaded(), "3 connections reach upper 3");
    // Overloaded: every new flow goes to rs2.
    for _ in 0..10 {
        assert_eq!(dest_of(&mut l.shard, port), rs2, "port {port}");
        port += 1;
    }
    // One of rs1's connections ends (reset, then its CLOSE state times out): 2 left, not
    // below lower 2 yet.
    // (Established first: IPVS's state table ignores a client's RST in SYN_RECV.)
    let end = |shard: &mut Shard, p: u16| {
        let c = a(&format!("10.77.0.2:{p}"));
        run(shard, &tcp(rs1, c, SYN | ACK, b""), None);
        run(shard, &tcp(c, vip, ACK, b""), None);
        run(shard, &tcp(c, vip, RST | ACK, b""), None);
    };
    end(&mut l.shard, on_rs1[0]);
    let t = l.shard.now() + 11 * crate::conn::TICKS_PER_SEC;
    l.shard.set_now(t);
    assert_eq!(rs1_state.counters.inactive(), 2);
    assert!(overloaded(), "2 connections are not below lower 2");
    assert_eq!(dest_of(&mut l.shard, port), rs2);
    port += 1;
    end(&mut l.shard, on_rs1[1]);
    l.shard.set_now(t + 11 * crate::conn::TICKS_PER_SEC);
    assert_eq!(rs1_state.counters.inactive(), 1);
    assert!(!overloaded(), "1 connection is below lower 2");
    // rs1 takes new flows again.
    let back = (0..4).any(|i| dest_of(&mut l.shard, port + i) == rs1);
    assert!(back, "rs1 gets new flows again");
}

/// TWO_SERVICES with `max_conns` on the DNS service.
fn config_max_conns(n: u32) -> String {
    config().replace(
        "proto = \"udp\"\nscheduler = \"rr\"",
        &format!("proto = \"udp\"\nscheduler = \"rr\"\nmax_conns = {n}"),
    )
}

#[test]
fn max_conns_caps_a_service_and_leaves_the_others_room() {
    let mut l = lab_with(&config_max_conns(10), 1 << 20);
    let dns = a("10.77.100.100:53");
    let web = a("10.77.100.100:80");
    // A spoofed UDP flood: ten entries, then each new source evicts an unreplied one of the
    // same service; the table never holds more than ten of them.
    for i in 0..1000u32 {
        let src = SocketAddrV4::new(Ipv4Addr::from(0x0b00_0000 + i), 5000);
        assert_eq!(
            run(&mut l.shard, &udp(src, dns, b"q"), None).0,
            Verdict::Forward
        );
    }
    assert_eq!(l.shard.table().len(), 10);
    assert_eq!(l.shard.counters().evictions[0], 990);
    // The web service is served as ever.
    let c = a("10.77.0.2:41000");
    assert_eq!(
        run(&mut l.shard, &tcp(c, web, SYN, b""), None).0,
        Verdict::Forward
    );
    assert_eq!(l.shard.table().len(), 11);
    // Ten DNS flows that got replies and keep talking cannot be evicted: the eleventh
    // is refused as max_conns.
    let mut l = lab_with(&config_max_conns(10), 1 << 20);
    for i in 0..10u32 {
        let src = SocketAddrV4::new(ip("10.77.0.2"), 6000 + i as u16);
        let (_, out) = run(&mut l.shard, &udp(src, dns, b"q"), None);
        let rs = SocketAddrV4::new(
            crate::wire::Ipv4Packet::new_checked(&out[..])
                .unwrap()
                .dst_addr(),
            5353,
        );
        assert_eq!(
            run(&mut l.shard, &udp(rs, src, b"a"), None).0,
            Verdict::Forward
        );
        assert_eq!(
            run(&mut l.shard, &udp(src, dns, b"q2"), None).0,
            Verdict::Forward
        );
    }
    check(
        &mut l.shard,
        vec![fx(
            "the eleventh flow of a service at max_conns",
            udp(a("10.77.0.2:7000"), dns, b"q"),
            Expect::Drop(DropReason::MaxConns),
        )],
    );
}

#[test]
fn max_conns_is_shared_out_between_queues() {
    // Each of 4 queues enforces a quarter of it (rounded up).
    let cfg = crate::config::from_str(&config_max_conns(10), "fixture.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let mut shard = Shard::new(
        ShardConfig {
            id: 1,
            queues: 4,
            ..ShardConfig::test(1 << 20)
        },
        Arc::new(registry.snapshot()),
        None,
    )
    .unwrap();
    let dns = a("10.77.100.100:53");
    for i in 0..100u32 {
        let src = SocketAddrV4::new(Ipv4Addr::from(0x0b00_0000 + i), 5000);
        run(&mut shard, &udp(src, dns, b"q"), None);
    }
    assert_eq!(shard.table().len(), 3, "ceil(10 / 4)");
}

#[test]
fn unreplied_udp_entries_live_short_replied_ones_the_udp_timeout() {
    let mut l = lab();
    let dns = a("10.77.100.100:53");
    let c = a("10.77.0.2:5555");
    let (_, out) = run(&mut l.shard, &udp(c, dns, b"q"), None);
    let now = l.shard.now();
    let id = |l: &Lab| l.shard.table().iter().next().map(|(_, e)| e.expires());
    assert_eq!(
        id(&l),
        Some(now + 30 * crate::conn::TICKS_PER_SEC),
        "udp_unreplied: 30 s"
    );
    let rs = SocketAddrV4::new(
        crate::wire::Ipv4Packet::new_checked(&out[..])
            .unwrap()
            .dst_addr(),
        5353,
    );
    run(&mut l.shard, &udp(rs, c, b"a"), None);
    assert_eq!(
        id(&l),
        Some(now + 300 * crate::conn::TICKS_PER_SEC),
        "replied: udp, 300 s"
    );
    // An unreplied one is gone after its 30 s.
    let c2 = a("10.77.0.2:5556");
    run(&mut l.shard, &udp(c2, dns, b"q"), None);
    l.shard.set_now(now + 31 * crate::conn::TICKS_PER_SEC);
    assert_eq!(l.shard.table().len(), 1);
    // Configurable, and never above the udp timeout.
    let short = config().replace(
        "proto = \"udp\"\nscheduler = \"rr\"",
        "proto = \"udp\"\nscheduler = \"rr\"\ntimeouts = { udp = \"20s\", udp_unreplied = \"5s\" }",
    );
    let mut l = lab_with(&short, 1 << 20);
    run(&mut l.shard, &udp(c, dns, b"q"), None);
    let now = l.shard.now();
    assert_eq!(id(&l), Some(now + 5 * crate::conn::TICKS_PER_SEC));
}

#[test]
fn a_source_counts_only_once_its_handshake_completes() {
    // Spoof-proof accounting: SYNs that never complete (a flood spoofing the client's
    // address) add nothing to the client's count; a completed handshake does.
    let sources: Arc<crate::dataplane::sources::SourceSketch> = Default::default();
    let cfg = crate::config::from_str(&config(), "fixture.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let mut shard = Shard::new(
        ShardConfig {
            sources: sources.clone(),
            ..ShardConfig::test(1 << 20)
        },
        Arc::new(registry.snapshot()),
        None,
    )
    .unwrap();
    let web = a("10.77.100.100:80");
    let victim = ip("10.77.0.2");
    for port in 0..500u16 {
        let c = SocketAddrV4::new(victim, 20_000 + port);
        run(&mut shard, &tcp(c, web, SYN, b""), None);
    }
    assert_eq!(
        sources.estimate(victim),
        (0, 0),
        "spoofed SYNs count for nothing"
    );
    let c = SocketAddrV4::new(victim, 30_000);
    let (_, out) = run(&mut shard, &tcp(c, web, SYN, b""), None);
    let rs = SocketAddrV4::new(
        crate::wire::Ipv4Packet::new_checked(&out[..])
            .unwrap()
            .dst_addr(),
        8080,
    );
    run(&mut shard, &tcp(rs, c, SYN | ACK, b""), None);
    assert_eq!(
        sources.estimate(victim),
        (0, 0),
        "not before the client's ACK"
    );
    run(&mut shard, &tcp(c, web, ACK, b""), None);
    assert_eq!(
        sources.estimate(victim),
        (1, 1),
        "a completed handshake counts"
    );
    // The entry ending takes its live count with it; the half-open ones never had one.
    let before = shard.table().len();
    shard.set_now(shard.now() + 2000 * crate::conn::TICKS_PER_SEC);
    assert!(shard.table().len() < before);
    assert_eq!(sources.estimate(victim).1, 0);
}

/// Bytes of a usual IPv4 TCP packet's headers (20 of IP, 20 of TCP).
const HEAD: usize = 40;

/// `batch` with byte `at` of each packet (that has one) XORed with `x`.
fn changed(batch: &[Vec<u8>], at: usize, x: u8) -> Vec<Vec<u8>> {
    batch
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(b) = p.get_mut(at) {
                *b ^= x;
            }
            p
        })
        .collect()
}

/// The IPv4 header checksum of `p` made right again after a change.
fn fixed(mut p: Vec<u8>) -> Vec<u8> {
    crate::wire::Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

/// Handshakes, data and replies of both services, and every kind of packet the IPv4 path
/// turns away or takes another way (malformed, bad checksum, bad flags, options, fragments,
/// ICMP, another protocol, padding, another destination), for `clients` clients.
fn hostile_batch(clients: u16) -> Vec<Vec<u8>> {
    let (web, dns) = (a("10.77.100.100:80"), a("10.77.100.100:53"));
    let mut out = Vec::new();
    for i in 0..clients {
        let c = SocketAddrV4::new(ip("10.77.0.2"), 30000 + i);
        let data = tcp(c, web, ACK, b"0123456789abcdef");
        let mut v = vec![
            tcp(c, web, SYN, b""),
            data.clone(),
            udp(c, dns, b"a query for a name"),
            // Shorter than a TCP packet's two headers.
            udp(c, dns, b"q"),
            tcp(c, a("10.77.9.9:80"), ACK, b"elsewhere"),
            tcp(a("10.77.1.1:8080"), c, ACK, b"reply?"),
            udp(a("10.77.1.1:5353"), c, b"an answer, to nobody"),
            icmp_echo(*c.ip(), *web.ip(), true, 7, i),
        ];
        let mut bad = |f: &dyn Fn(&mut Vec<u8>), fix: bool| {
            let mut p = data.clone();
            f(&mut p);
            v.push(if fix { fixed(p) } else { p });
        };
        bad(&|p| p[10] ^= 1, false); // IP checksum
        bad(&|p| p.truncate(30), false);
        bad(&|p| p[3] = p[3].wrapping_add(1), true); // total length past the end
        bad(&|p| p[3] = 12, true); // total length inside the header
        bad(&|p| p.extend_from_slice(&[0; 6]), false); // link padding
        bad(&|p| p[32] = 0x40, false); // TCP data offset 4
        bad(&|p| p[32] = 0xf0, false); // TCP data offset past the end
        bad(&|p| p[33] = SYN | FIN, false);
        bad(&|p| p[33] = 0, false);
        bad(&|p| p[6] = 0x20, true); // more fragments
        bad(&|p| p[7] = 0x10, true); // a fragment offset
        bad(&|p| p[9] = 47, true); // GRE
        bad(&|p| p[0] = 0x55, false); // version 5
        bad(
            &|p| {
                // One option word (end of list), in front of the TCP header.
                p[0] = 0x46;
                p.splice(20..20, [0u8; 4]);
                let total = (p.len() as u16).to_be_bytes();
                p[2..4].copy_from_slice(&total);
            },
            true,
        );
        let mut u = udp(c, dns, b"query");
        u[25] = 200; // UDP length past the end
        v.push(u);
        let mut u = udp(c, dns, b"query");
        u[25] = 4; // UDP length under its header
        v.push(u);
        out.extend(v);
    }
    out
}

/// Hints from `prefetch` change nothing, for well-formed and hostile IPv4 packets alike:
/// every verdict, byte and counter is what a queue that never prefetched gives, whether
/// each batch is shown as it comes, with a byte changed in any of the first 40 (the IP
/// header and the first 20 bytes of TCP) or after them, or one byte longer; and a snapshot
/// applied between `prefetch` and `process` is the one `process` goes by.
#[test]
fn prefetch_hints_change_no_ipv4_packet_hostile_ones_included() {
    let packets = hostile_batch(3);
    let chunks: Vec<&[Vec<u8>]> = packets.chunks(20).collect();
    let mut plain = lab();
    let want: Vec<_> = chunks
        .iter()
        .flat_map(|c| through(&mut plain.shard, c, None))
        .collect();
    assert!(want.iter().filter(|(v, _)| *v == Verdict::Forward).count() >= 12);
    let drops = &plain.shard.counters().drops;
    for r in [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::TcpFlags,
        DropReason::Fragment,
        DropReason::IpOptions,
        DropReason::UnknownProto,
    ] {
        assert!(
            drops[r as usize] > 0,
            "the batch has packets dropped for {r:?}"
        );
    }
    let check = |name: &str, show: &Show, taken: bool| {
        let mut l = lab();
        let got: Vec<_> = chunks
            .iter()
            .flat_map(|c| through(&mut l.shard, c, Some(show)))
            .collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g, w,
                "{name}: packet {i}: verdict and bytes as without prefetch"
            );
        }
        assert_eq!(
            l.shard.counters(),
            plain.shard.counters(),
            "{name}: counters"
        );
        if taken {
            assert!(l.shard.hints_taken() > 0, "{name}: hints taken");
        }
    };
    check("as is", &|b| b.to_vec(), true);
    check(
        "another byte after the head",
        &|b| changed(b, HEAD, 0xa5),
        true,
    );
    check(
        "one byte longer",
        &|b| b.iter().map(|p| [&p[..], &[0u8][..]].concat()).collect(),
        true,
    );
    for k in 0..HEAD {
        let name = format!("byte {k} of the head changed");
        check(&name, &move |b| changed(b, k, 0x01), false);
    }
    // A snapshot applied between `prefetch` and `process`: the service is the new one's.
    let mut l = lab();
    let (c, vip) = (a("10.77.0.3:40000"), a("10.77.100.100:8443"));
    let syn = [tcp(c, vip, SYN, b"")];
    let views: Vec<&[u8]> = syn.iter().map(|p| &p[..]).collect();
    l.shard.prefetch(&views);
    let more = format!(
        "{}[[service]]\nname = \"tls\"\nvip = \"{vip}\"\nproto = \"tcp\"\n\
         [[service.server]]\naddr = \"10.77.1.1:8443\"\n",
        config()
    );
    let cfg = crate::config::from_str(&more, "fixture.toml").unwrap();
    l.registry.apply(&cfg.services).unwrap();
    l.shard.apply_snapshot(Arc::new(l.registry.snapshot()));
    let (v, out) = run(&mut l.shard, &syn[0], None);
    assert_eq!(v, Verdict::Forward, "to the service added since");
    assert_eq!(out, tcp(c, a("10.77.1.1:8443"), SYN, b""));
}
