//! The packet fuzz corpus: `tests/corpus/*.bin`, one raw IPv4 (or not quite) packet per file.
//!
//! - `corpus_files_meet_expectations`: each file through a fresh queue, after the packets its
//!   context needs (a handshake for a reply, a full table for `table_full` …), must end with
//!   the verdict of [`cases`]: a drop reason, or a forward of a given kind.
//! - `mutations_keep_invariants`: a deterministic mutation fuzzer (`testkit::Rng`, seeded per file) runs
//!   [`MUTATIONS`] variants of every file through one long-lived queue and checks that nothing
//!   panics, that forwarded packets are well-formed IPv4 whose checksums stay valid when they
//!   were valid, and that the table and the realservers' counts stay consistent.
//! - `corpus_matches_generator`: the files are exactly what [`cases`] generates.
//! - Differential: every packet the data plane forwards, in all of the above, is parsed again
//!   by an independent parser (etherparse) whose checksum verdicts must match ours
//!   ([`sums_etherparse`]).
//!
//! Regenerate the files after changing [`cases`]:
//! `cargo test -p ringvs --test corpus -- --ignored regenerate`.

#[path = "common/check.rs"]
mod check;

use check::{check_accounting, check_forwarded, fix_checksums, sums_etherparse, Sums};
use ringvs::conn::{ConnTable, HashKey};
use ringvs::control::registry::Registry;
use ringvs::dataplane::stats::DropReason;
use ringvs::dataplane::testkit::{
    icmp_echo, icmp_error, tcp, tcp6, udp, udp6, with_ext6, Rng, TWO_SERVICES,
};
use ringvs::dataplane::{Packet, Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use ringvs::wire::icmpv4::{msg_type, unreach_code};
use ringvs::wire::ipv6::ext;
use ringvs::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN, URG};
use ringvs::wire::{ip_proto, Icmpv4Packet, Ipv4Packet, Ipv4Repr, TcpPacket};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::sync::Arc;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 100);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const RS2: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Neither a virtual address nor a realserver: traffic to it passes through.
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 50);

const WEB: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const DNS: SocketAddrV4 = SocketAddrV4::new(VIP, 53);
const WEB1: SocketAddrV4 = SocketAddrV4::new(RS1, 8080);
const DNS1: SocketAddrV4 = SocketAddrV4::new(RS1, 5353);
const C: SocketAddrV4 = SocketAddrV4::new(CLIENT, 40000);
const CU: SocketAddrV4 = SocketAddrV4::new(CLIENT, 5300);

/// Mutations per corpus file in the fuzzer (override with `RINGVS_FUZZ_MUTATIONS`).
const MUTATIONS: usize = 20_000;

/// The corpus's IPv6 service beside [`TWO_SERVICES`] (NAT66).
const WEB6_SERVICE: &str = r#"
[[service]]
name = "web6"
vip = "[fd77:100::100]:80"
[[service.server]]
addr = "[fd77:1::1]:8080"
"#;

fn a6(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

/// The state a queue is in before the corpus packet arrives.
enum Ctx {
    /// A fresh queue.
    Fresh,
    /// A fresh queue that has forwarded these packets.
    After(Vec<Vec<u8>>),
    /// Every realserver quiesced (weight 0).
    NoServer,
    /// The table full of other clients' embryonic connections.
    TableFull,
    /// `expire_nodest_conn` on; these packets forwarded, then 10.77.1.1:8080 removed.
    DestRemoved(Vec<Vec<u8>>),
}

/// What the queue must do with the corpus packet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Client → service, rewritten to this realserver.
    ToServer(SocketAddrV4),
    /// Realserver → client, rewritten to come from this virtual service.
    ToClient(SocketAddrV4),
    /// Client → IPv6 service (NAT66), rewritten to this realserver.
    ToServer6(SocketAddrV6),
    /// Realserver → IPv6 client, rewritten to come from this virtual service.
    ToClient6(SocketAddrV6),
    /// Passed through unchanged.
    Pass,
    /// An ICMP error translated, its outer destination now this address.
    IcmpTo(Ipv4Addr),
    /// An ICMP error translated, its outer source now this address.
    IcmpFrom(Ipv4Addr),
    /// An echo request answered from the virtual address.
    EchoReply,
    /// Dropped for this reason.
    Drop(DropReason),
    /// Kept for reassembly (a fragment of a service's traffic): nothing sent, no drop.
    Held,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    ctx: Ctx,
    expect: Expect,
}

fn case(name: &'static str, bytes: Vec<u8>, ctx: Ctx, expect: Expect) -> Case {
    Case {
        name,
        bytes,
        ctx,
        expect,
    }
}

/// An IPv4 packet `src → dst` of `proto` carrying `payload` verbatim.
fn raw_ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: proto,
        ttl: 63,
        payload_len: payload.len(),
        ident: 0x4242,
        dont_frag: false,
        dscp_ecn: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
    buf[20..].copy_from_slice(payload);
    buf
}

/// Edits the IPv4 header of `p` and recomputes its checksum.
fn with_ip(mut p: Vec<u8>, edit: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) -> Vec<u8> {
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    edit(&mut ip);
    ip.fill_checksum();
    p
}

/// A SYN with the options a Linux client sends (MSS, SACK permitted, timestamps, window
/// scale).
fn syn_with_options(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let opts = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let mut p = tcp(src, dst, SYN, &opts);
    p[20 + 12] = (((20 + opts.len()) / 4) << 4) as u8;
    let mut t = TcpPacket::new_unchecked(&mut p[20..]);
    t.fill_checksum(*src.ip(), *dst.ip());
    p
}

/// A TCP segment with its data-offset byte replaced (checksums recomputed).
fn with_data_offset(mut p: Vec<u8>, words: u8) -> Vec<u8> {
    p[20 + 12] = words << 4;
    let (src, dst) = {
        let ip = Ipv4Packet::new_unchecked(&p[..]);
        (ip.src_addr(), ip.dst_addr())
    };
    TcpPacket::new_unchecked(&mut p[20..]).fill_checksum(src, dst);
    p
}

/// A tiny DNS query for `example.`.
fn dns_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x07example\x00\x00\x01\x00\x01");
    q
}

fn syn() -> Vec<u8> {
    tcp(C, WEB, SYN, &[])
}

fn handshake() -> Vec<Vec<u8>> {
    vec![syn(), tcp(WEB1, C, SYN | ACK, &[]), tcp(C, WEB, ACK, &[])]
}

fn query() -> Vec<u8> {
    udp(CU, DNS, &dns_query())
}

/// An IPv6/UDP datagram.
fn ipv6_udp() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = ip_proto::UDP;
    p[7] = 64;
    p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p[40..48].copy_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
    p
}

/// Every corpus file: its bytes, the context it is replayed in, and the verdict.
fn cases() -> Vec<Case> {
    use Ctx::*;
    use DropReason as D;
    use Expect::*;
    let (web6, web6_1, c6) = (
        a6("[fd77:100::100]:80"),
        a6("[fd77:1::1]:8080"),
        a6("[fd77::10]:40000"),
    );
    let syn6 = || tcp6(c6, web6, SYN, b"");
    let reply = tcp(WEB, C, SYN | ACK, &[]);
    let frag_needed = |quoted: &[u8], to: Ipv4Addr| {
        icmp_error(
            ROUTER,
            to,
            msg_type::DEST_UNREACHABLE,
            unreach_code::FRAG_NEEDED,
            1400,
            quoted,
            28,
        )
    };
    vec![
        // TCP to the virtual service.
        case("tcp-syn-to-vip", syn(), Fresh, ToServer(WEB1)),
        case(
            "tcp-syn-with-options-to-vip",
            syn_with_options(C, WEB),
            Fresh,
            ToServer(WEB1),
        ),
        case(
            "tcp-syn-with-link-padding",
            [syn(), vec![0; 6]].concat(),
            Fresh,
            ToServer(WEB1),
        ),
        case(
            "tcp-ack-after-syn",
            tcp(C, WEB, ACK, &[]),
            After(vec![syn()]),
            ToServer(WEB1),
        ),
        case(
            "tcp-data-from-client",
            tcp(C, WEB, PSH | ACK, b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"),
            After(handshake()),
            ToServer(WEB1),
        ),
        case(
            "tcp-fin-ack-from-client",
            tcp(C, WEB, FIN | ACK, &[]),
            After(handshake()),
            ToServer(WEB1),
        ),
        case(
            "tcp-rst-from-client",
            tcp(C, WEB, RST, &[]),
            After(vec![syn()]),
            ToServer(WEB1),
        ),
        case(
            "tcp-syn-reusing-closed-conn",
            syn_with_options(C, WEB),
            After([handshake(), vec![tcp(C, WEB, RST, &[])]].concat()),
            ToServer(WEB1),
        ),
        case(
            "tcp-ipv4-bad-header-checksum-to-vip",
            {
                let mut p = syn();
                p[10] ^= 0x5a;
                p
            },
            Fresh,
            Drop(D::BadChecksum),
        ),
        case(
            "tcp-synack-to-vip-unknown-conn",
            tcp(C, WEB, SYN | ACK, &[]),
            Fresh,
            Drop(D::NoConn),
        ),
        case(
            "tcp-ack-to-vip-unknown-conn",
            tcp(C, WEB, ACK, b"late"),
            Fresh,
            Drop(D::NoConn),
        ),
        case(
            "tcp-syn-to-vip-port-without-service",
            tcp(C, SocketAddrV4::new(VIP, 443), SYN, &[]),
            Fresh,
            Drop(D::NoService),
        ),
        case(
            "syn-fin",
            tcp(C, WEB, SYN | FIN, &[]),
            Fresh,
            Drop(D::TcpFlags),
        ),
        case(
            "syn-rst",
            tcp(C, WEB, SYN | RST, &[]),
            Fresh,
            Drop(D::TcpFlags),
        ),
        case(
            "fin-rst",
            tcp(C, WEB, FIN | RST | ACK, &[]),
            After(handshake()),
            Drop(D::TcpFlags),
        ),
        case(
            "fin-without-ack",
            tcp(C, WEB, FIN, &[]),
            After(handshake()),
            Drop(D::TcpFlags),
        ),
        case(
            "tcp-null-flags",
            tcp(C, WEB, 0, &[]),
            Fresh,
            Drop(D::TcpFlags),
        ),
        case(
            "tcp-xmas-flags",
            tcp(C, WEB, FIN | PSH | URG, &[]),
            Fresh,
            Drop(D::TcpFlags),
        ),
        case(
            "tcp-syn-table-full",
            tcp(SocketAddrV4::new(CLIENT, 40001), WEB, SYN, &[]),
            TableFull,
            Drop(D::TableFull),
        ),
        case(
            "tcp-syn-no-server",
            tcp(SocketAddrV4::new(CLIENT, 40002), WEB, SYN, &[]),
            NoServer,
            Drop(D::NoServer),
        ),
        case(
            "tcp-ack-to-removed-server",
            tcp(C, WEB, ACK, b"more"),
            DestRemoved(handshake()),
            Drop(D::DestRemoved),
        ),
        // Realserver replies.
        case(
            "tcp-synack-from-realserver",
            tcp(WEB1, C, SYN | ACK, &[]),
            After(vec![syn()]),
            ToClient(WEB),
        ),
        case(
            "tcp-data-from-realserver",
            tcp(WEB1, C, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n"),
            After(handshake()),
            ToClient(WEB),
        ),
        case(
            "tcp-rst-from-realserver",
            tcp(WEB1, C, RST | ACK, &[]),
            After(vec![syn()]),
            ToClient(WEB),
        ),
        case(
            "tcp-synack-from-realserver-unknown-conn",
            tcp(WEB1, C, SYN | ACK, &[]),
            Fresh,
            Drop(D::StaleReply),
        ),
        case(
            "udp-answer-from-realserver-unknown-conn",
            udp(DNS1, CU, b"stale"),
            Fresh,
            Drop(D::StaleReply),
        ),
        // UDP.
        case("udp-dns-query-to-vip", query(), Fresh, ToServer(DNS1)),
        case(
            "udp-zero-checksum",
            {
                let mut p = query();
                p[26..28].copy_from_slice(&[0, 0]);
                p
            },
            Fresh,
            ToServer(DNS1),
        ),
        case(
            "udp-dns-answer-from-realserver",
            udp(
                DNS1,
                CU,
                &[dns_query(), vec![0xc0, 0x0c, 0, 1, 0, 1]].concat(),
            ),
            After(vec![query()]),
            ToClient(DNS),
        ),
        case(
            "udp-to-vip-port-without-service",
            udp(CU, SocketAddrV4::new(VIP, 123), &[0x23; 48]),
            Fresh,
            Drop(D::NoService),
        ),
        case(
            "udp-length-field-beyond-packet",
            {
                let mut p = query();
                p[24..26].copy_from_slice(&200u16.to_be_bytes());
                p
            },
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "udp-truncated-header",
            raw_ip(CLIENT, VIP, ip_proto::UDP, &[0x14, 0xb4, 0, 53]),
            Fresh,
            Drop(D::Malformed),
        ),
        // ICMP.
        case(
            "icmp-echo-request-to-vip",
            icmp_echo(CLIENT, VIP, true, 7, 1),
            Fresh,
            EchoReply,
        ),
        // Identifier, sequence and data all 0: the reply's checksum must be 0xffff (an
        // incremental update gave 0x0000; found by the shard fuzz target).
        case(
            "icmp-echo-request-all-zero",
            {
                let mut p = icmp_echo(CLIENT, VIP, true, 0, 0);
                p[28..].fill(0);
                let mut m = Icmpv4Packet::new_unchecked(&mut p[20..]);
                m.fill_checksum();
                p
            },
            Fresh,
            EchoReply,
        ),
        case(
            "icmp-echo-request-to-other-host",
            icmp_echo(CLIENT, OTHER, true, 7, 1),
            Fresh,
            Pass,
        ),
        case(
            "icmp-echo-reply-to-vip",
            icmp_echo(CLIENT, VIP, false, 7, 1),
            Fresh,
            Drop(D::IcmpOther),
        ),
        case(
            "icmp-frag-needed-quoting-reply",
            frag_needed(&reply, VIP),
            After(handshake()),
            IcmpTo(RS1),
        ),
        case(
            "icmp-frag-needed-quoting-reply-bad-checksum",
            {
                let mut p = frag_needed(&reply, VIP);
                p[22] ^= 0xff;
                p
            },
            After(handshake()),
            // IPVS drops an error whose checksum fails ("Incoming ICMP: failed checksum").
            Drop(D::BadChecksum),
        ),
        case(
            "icmp-redirect-quoting-reply",
            icmp_error(ROUTER, VIP, msg_type::REDIRECT, 1, 0x0a4d_0001, &reply, 28),
            After(handshake()),
            // IPVS relates only destination-unreachable, source-quench and time-exceeded
            // errors to its connections; a redirect to the VIP is not forwarded.
            Drop(D::IcmpOther),
        ),
        case(
            "icmp-param-problem-quoting-reply",
            icmp_error(
                ROUTER,
                VIP,
                msg_type::PARAM_PROBLEM,
                0,
                20 << 24,
                &reply,
                28,
            ),
            After(handshake()),
            Drop(D::IcmpOther),
        ),
        case(
            "icmp-port-unreach-quoting-udp-reply",
            icmp_error(
                CLIENT,
                VIP,
                msg_type::DEST_UNREACHABLE,
                unreach_code::PORT_UNREACHABLE,
                0,
                &udp(DNS, CU, b"answer"),
                36,
            ),
            After(vec![query()]),
            IcmpTo(RS1),
        ),
        case(
            "icmp-host-unreach-quoting-request-to-realserver",
            icmp_error(
                RS1,
                CLIENT,
                msg_type::DEST_UNREACHABLE,
                unreach_code::HOST_UNREACHABLE,
                0,
                &tcp(C, WEB1, SYN, &[]),
                40,
            ),
            After(vec![syn()]),
            IcmpFrom(VIP),
        ),
        case(
            "icmp-port-unreach-quoting-udp-request-to-realserver",
            icmp_error(
                RS1,
                CLIENT,
                msg_type::DEST_UNREACHABLE,
                unreach_code::PORT_UNREACHABLE,
                0,
                &udp(CU, DNS1, &dns_query()),
                64,
            ),
            After(vec![query()]),
            IcmpFrom(VIP),
        ),
        case(
            "icmp-time-exceeded-quoting-later-fragment",
            {
                // A non-first fragment has no ports; its first payload bytes happen to read
                // as 80 → 40000, a tracked flow.
                let frag = with_ip(tcp(WEB, C, ACK, &[]), |ip| {
                    ip.set_flags_and_frag_offset(false, false, 1480)
                });
                icmp_error(ROUTER, VIP, msg_type::TIME_EXCEEDED, 1, 0, &frag, 28)
            },
            After(handshake()),
            // The quoted "ports" are payload bytes. IPVS reads them as ports too (its TCP and
            // UDP handlers do not set dont_defrag), so this is kept as IPVS does.
            IcmpTo(RS1),
        ),
        case(
            "icmp-frag-needed-unknown-flow",
            frag_needed(
                &tcp(WEB, SocketAddrV4::new(CLIENT, 40009), SYN | ACK, &[]),
                VIP,
            ),
            Fresh,
            Drop(D::IcmpNoConn),
        ),
        case(
            "icmp-host-unreach-unknown-request-to-realserver",
            icmp_error(
                RS1,
                CLIENT,
                msg_type::DEST_UNREACHABLE,
                unreach_code::HOST_UNREACHABLE,
                0,
                &tcp(C, WEB1, SYN, &[]),
                28,
            ),
            Fresh,
            Drop(D::IcmpNoConn),
        ),
        case(
            "icmp-error-about-other-flow",
            frag_needed(
                &tcp(
                    SocketAddrV4::new(OTHER, 443),
                    SocketAddrV4::new(CLIENT, 50000),
                    ACK,
                    &[],
                ),
                OTHER,
            ),
            Fresh,
            Pass,
        ),
        case(
            "icmp-error-quote-without-ports-to-vip",
            icmp_error(
                ROUTER,
                VIP,
                msg_type::DEST_UNREACHABLE,
                unreach_code::FRAG_NEEDED,
                1400,
                &reply,
                20,
            ),
            Fresh,
            Drop(D::IcmpOther),
        ),
        case(
            "icmp-truncated-header-to-vip",
            raw_ip(CLIENT, VIP, ip_proto::ICMP, &[8, 0, 0xf7]),
            Fresh,
            Drop(D::Malformed),
        ),
        // IP level.
        case(
            "gre-to-vip",
            raw_ip(CLIENT, VIP, 47, &[0, 0, 0x08, 0x00, 0x45, 0, 0, 20]),
            Fresh,
            Drop(D::UnknownProto),
        ),
        case(
            "gre-to-other-host",
            raw_ip(CLIENT, OTHER, 47, &[0, 0, 0x08, 0x00, 0x45, 0, 0, 20]),
            Fresh,
            Pass,
        ),
        case(
            "tcp-to-other-host",
            tcp(C, SocketAddrV4::new(OTHER, 22), SYN, &[]),
            Fresh,
            Pass,
        ),
        case(
            "udp-to-other-host",
            udp(CU, SocketAddrV4::new(OTHER, 53), &dns_query()),
            Fresh,
            Pass,
        ),
        case(
            "tcp-syn-direct-to-realserver",
            tcp(C, WEB1, SYN, &[]),
            Fresh,
            Pass,
        ),
        case(
            "ipv4-options",
            {
                // Router alert (RFC 2113) in front of a SYN to the service.
                let mut p = syn();
                p.splice(20..20, [0x94, 0x04, 0x00, 0x00]);
                with_ip(p, |ip| {
                    ip.set_header_len(24);
                    ip.set_total_len(44);
                })
            },
            Fresh,
            Drop(D::IpOptions),
        ),
        // Fragments of services' traffic are held until their datagram is whole
        // (dataplane::defrag; tests/reassembly.rs follows datagrams through).
        case(
            "fragment-first",
            with_ip(udp(C, DNS, &[1; 32]), |ip| {
                ip.set_flags_and_frag_offset(false, true, 0)
            }),
            Fresh,
            Held,
        ),
        case(
            "fragment-later",
            with_ip(query(), |ip| {
                ip.set_flags_and_frag_offset(false, false, 1480)
            }),
            Fresh,
            Held,
        ),
        // A fragment that is not the last must carry a multiple of 8 bytes.
        case(
            "fragment-first-odd-length",
            with_ip(query(), |ip| ip.set_flags_and_frag_offset(false, true, 0)),
            Fresh,
            Drop(D::Fragment),
        ),
        // Fragments and options the director has nothing to rewrite in pass as they are: a
        // datagram routed through. (A NAT realserver's fragments are held: its replies come
        // in fragments too.)
        case(
            "fragment-first-passing-through",
            with_ip(udp(C, SocketAddrV4::new(OTHER, 53), &[7; 64]), |ip| {
                ip.set_flags_and_frag_offset(false, true, 0)
            }),
            Fresh,
            Pass,
        ),
        case(
            "fragment-later-from-a-realserver",
            with_ip(raw_ip(RS1, OTHER, ip_proto::UDP, &[9; 64]), |ip| {
                ip.set_flags_and_frag_offset(false, false, 1480)
            }),
            Fresh,
            Held,
        ),
        case(
            "ipv4-options-passing-through",
            {
                let mut p = udp(C, SocketAddrV4::new(OTHER, 53), b"opts");
                p.splice(20..20, [0x94, 0x04, 0x00, 0x00]);
                let len = p.len() as u16;
                with_ip(p, |ip| {
                    ip.set_header_len(24);
                    ip.set_total_len(len);
                })
            },
            Fresh,
            Pass,
        ),
        // A service's reply in fragments is held until whole.
        case(
            "fragment-first-of-a-reply",
            with_ip(udp(DNS1, CU, &[5; 64]), |ip| {
                ip.set_flags_and_frag_offset(false, true, 0)
            }),
            After(vec![query()]),
            Held,
        ),
        case(
            "truncated-tcp-header",
            with_ip(syn()[..30].to_vec(), |ip| ip.set_total_len(30)),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "tcp-data-offset-beyond-segment",
            with_data_offset(syn(), 15),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "tcp-data-offset-below-minimum",
            with_data_offset(syn(), 4),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ip-total-length-beyond-packet",
            with_ip(syn(), |ip| ip.set_total_len(1500)),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ip-total-length-below-header",
            with_ip(syn(), |ip| ip.set_total_len(12)),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ip-header-length-below-minimum",
            with_ip(syn(), |ip| ip.set_header_len(16)),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ip-header-length-beyond-packet",
            with_ip(syn()[..24].to_vec(), |ip| {
                ip.set_header_len(60);
                ip.set_total_len(24);
            }),
            Fresh,
            Drop(D::Malformed),
        ),
        // Nobody's IPv6 (2001:db8::2 is no service): routed on unchanged, as IPv4 to
        // another host.
        case("ipv6-udp", ipv6_udp(), Fresh, Pass),
        // NAT66 (docs/FORWARDING.md), and IPv6's bad input, each by its rule.
        case("ipv6-tcp-syn-to-vip", syn6(), Fresh, ToServer6(web6_1)),
        case(
            "ipv6-tcp-synack-from-realserver",
            tcp6(web6_1, c6, SYN | ACK, b""),
            After(vec![syn6()]),
            ToClient6(web6),
        ),
        case(
            "ipv6-dest-opts-to-vip",
            with_ext6(&syn6(), ext::DEST_OPTS, &[0, 0, 1, 4, 0, 0, 0, 0]),
            Fresh,
            ToServer6(web6_1),
        ),
        case(
            "ipv6-truncated-header",
            syn6()[..30].to_vec(),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ipv6-payload-length-beyond-packet",
            {
                let mut p = syn6();
                p[4..6].copy_from_slice(&100u16.to_be_bytes());
                p
            },
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ipv6-ext-chain-past-packet",
            with_ext6(&syn6(), ext::DEST_OPTS, &[0, 9, 1, 4, 0, 0, 0, 0])[..68].to_vec(),
            Fresh,
            Drop(D::Malformed),
        ),
        case(
            "ipv6-ext-chain-too-long",
            (0..9).fold(syn6(), |p, _| {
                with_ext6(&p, ext::DEST_OPTS, &[0, 0, 1, 4, 0, 0, 0, 0])
            }),
            Fresh,
            Drop(D::IpOptions),
        ),
        case(
            "ipv6-hop-by-hop-jumbo",
            with_ext6(&syn6(), ext::HOP_BY_HOP, &[0, 0, 0xC2, 4, 0, 1, 0, 0]),
            Fresh,
            Drop(D::IpOptions),
        ),
        case(
            "ipv6-fragment-to-vip",
            with_ext6(&syn6(), ext::FRAGMENT, &[0, 0, 0, 1, 0, 0, 0, 7]),
            Fresh,
            Drop(D::Fragment),
        ),
        case(
            "ipv6-fragment-passing-through",
            with_ext6(
                &udp6(c6, a6("[fd77:9::9]:53"), b"q"),
                ext::FRAGMENT,
                &[0, 0, 0, 1, 0, 0, 0, 7],
            ),
            Fresh,
            Pass,
        ),
        case(
            "garbage-7-bytes",
            vec![0x45, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe],
            Fresh,
            Drop(D::Malformed),
        ),
        case("empty", Vec::new(), Fresh, Drop(D::Malformed)),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The corpus files on disk, by name without `.bin`.
fn corpus_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(corpus_dir()).expect("tests/corpus exists") {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "bin") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
    files
}

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// A queue over [`TWO_SERVICES`] and [`WEB6_SERVICE`], and its registry.
fn queue(memory: usize, expire_nodest_conn: bool) -> (Shard, Registry) {
    let text = format!("{TWO_SERVICES}{WEB6_SERVICE}");
    let cfg = ringvs::config::from_str(&text, "corpus.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let shard = Shard::new(
        ShardConfig {
            hash_key: HashKey([0x636f_7270, 0x7573]),
            expire_nodest_conn,
            ..ShardConfig::test(memory)
        },
        Arc::new(registry.snapshot()),
        None,
    )
    .unwrap();
    (shard, registry)
}

/// Runs one packet through `shard` in `buf`; returns the verdict and the bytes as left.
fn run<'a>(shard: &mut Shard, buf: &'a mut Vec<u8>, input: &[u8]) -> (Verdict, &'a [u8]) {
    buf.clear();
    buf.resize(HEADROOM + input.len() + 64, 0);
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(buf, HEADROOM, input.len()).unwrap();
    let v = shard.process(&mut p);
    // The packet as the pipeline left it: the SYN proxy may have made it another length.
    let (start, len) = (p.start(), p.len());
    (v, &buf[start..start + len])
}

/// Puts `shard` into the context `ctx`.
fn set_up(name: &str, ctx: &Ctx) -> (Shard, Registry) {
    let mut buf = Vec::new();
    let forward_all = |shard: &mut Shard, buf: &mut Vec<u8>, pkts: &[Vec<u8>]| {
        for (i, p) in pkts.iter().enumerate() {
            let (v, _) = run(shard, buf, p);
            assert_eq!(
                v,
                Verdict::Forward,
                "{name}: context packet {i} not forwarded"
            );
        }
    };
    match ctx {
        Ctx::Fresh => queue(1 << 20, false),
        Ctx::After(pkts) => {
            let (mut s, r) = queue(1 << 20, false);
            forward_all(&mut s, &mut buf, pkts);
            (s, r)
        }
        Ctx::NoServer => {
            let (s, mut r) = queue(1 << 20, false);
            for (svc, a) in [
                ("web", "10.77.1.1:8080"),
                ("web", "10.77.1.2:8080"),
                ("dns", "10.77.1.1:5353"),
            ] {
                r.set_weight(svc, addr(a).into(), 0).unwrap();
            }
            (s, r)
        }
        Ctx::TableFull => {
            // The smallest table a queue accepts (and the SYN proxy's smallest stash), full
            // of connections that talk both ways: early drop may evict none of them.
            let e = ConnTable::<Ipv4Addr>::ENTRY_BYTES;
            let stash = 4 * ringvs::dataplane::synproxy::STASH_BYTES;
            // Reassembly takes 1/64 of the whole.
            let need = 64 * (e + 4) + 4096 * 4 + stash;
            let (mut s, r) = queue((need * 64).div_ceil(63) + 64, false);
            let cap = s.table().capacity();
            for i in 0..cap {
                let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8), 1024);
                let (v, out) = run(&mut s, &mut buf, &tcp(src, WEB, SYN, &[]));
                assert_eq!(v, Verdict::Forward, "{name}: filling the table");
                let rs = SocketAddrV4::new(Ipv4Packet::new_checked(out).unwrap().dst_addr(), 8080);
                let (v, _) = run(&mut s, &mut buf, &tcp(rs, src, SYN | ACK, &[]));
                assert_eq!(v, Verdict::Forward, "{name}: the realserver answers");
                let (v, _) = run(&mut s, &mut buf, &tcp(src, WEB, ACK, b"hi"));
                assert_eq!(v, Verdict::Forward, "{name}: the client talks");
            }
            assert_eq!(s.table().len(), cap);
            (s, r)
        }
        Ctx::DestRemoved(pkts) => {
            let (mut s, mut r) = queue(1 << 20, true);
            forward_all(&mut s, &mut buf, pkts);
            r.remove_server("web", WEB1.into()).unwrap();
            s.apply_snapshot(Arc::new(r.snapshot()));
            (s, r)
        }
    }
}

#[test]
fn corpus_files_meet_expectations() {
    let cases: BTreeMap<&str, Case> = cases().into_iter().map(|c| (c.name, c)).collect();
    let files = corpus_files();
    for name in cases.keys() {
        assert!(
            files.contains_key(*name),
            "{name}.bin is missing: run `cargo test -p ringvs --test corpus -- --ignored regenerate`"
        );
    }
    let mut buf = Vec::new();
    for (name, input) in &files {
        let Some(c) = cases.get(name.as_str()) else {
            panic!("tests/corpus/{name}.bin has no entry in cases(): add one with its verdict");
        };
        let (mut shard, _registry) = set_up(name, &c.ctx);
        let before = shard.counters().clone();
        let (v, out) = run(&mut shard, &mut buf, input);
        let after = shard.counters();
        let delta = |f: fn(&ringvs::dataplane::stats::Counters) -> u64| f(after) - f(&before);
        let endpoints = |p: &[u8]| {
            let ip = Ipv4Packet::new_checked(p).unwrap();
            let l4 = &p[ip.header_len()..];
            let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
            (
                SocketAddrV4::new(ip.src_addr(), port(0)),
                SocketAddrV4::new(ip.dst_addr(), port(2)),
            )
        };
        match c.expect {
            Expect::Held => {
                assert_eq!(v, Verdict::Consumed, "{name}: verdict");
                assert_eq!(after.drops, before.drops, "{name}: no drop counted");
                continue;
            }
            Expect::Drop(r) => {
                assert_eq!(v, Verdict::Drop, "{name}: verdict");
                assert_eq!(
                    after.drops[r as usize] - before.drops[r as usize],
                    1,
                    "{name}: expected a drop counted as {}",
                    r.label()
                );
                continue;
            }
            _ => assert_eq!(v, Verdict::Forward, "{name}: verdict"),
        }
        let out = out.to_vec();
        check_forwarded(name, input, &out);
        match c.expect {
            Expect::ToServer(to) => {
                assert_eq!(delta(|c| c.total.in_pkts), 1, "{name}: not counted inbound");
                assert_eq!(endpoints(&out).1, to, "{name}: rewritten destination");
                assert_eq!(endpoints(&out).0, endpoints(input).0, "{name}: source kept");
            }
            Expect::ToServer6(to) | Expect::ToClient6(to) => {
                let ip = ringvs::wire::Ipv6Packet::new_checked(&out[..]).unwrap();
                let ul = ip.upper_layer().unwrap();
                let port =
                    |o: usize| u16::from_be_bytes([out[ul.offset + o], out[ul.offset + o + 1]]);
                let (src, dst) = (
                    SocketAddrV6::new(ip.src_addr(), port(0), 0, 0),
                    SocketAddrV6::new(ip.dst_addr(), port(2), 0, 0),
                );
                if matches!(c.expect, Expect::ToServer6(_)) {
                    assert_eq!(delta(|c| c.total.in_pkts), 1, "{name}: not counted inbound");
                    assert_eq!(dst, to, "{name}: rewritten destination");
                } else {
                    assert_eq!(
                        delta(|c| c.total.out_pkts),
                        1,
                        "{name}: not counted outbound"
                    );
                    assert_eq!(src, to, "{name}: rewritten source");
                }
                assert_eq!(out.len(), input.len(), "{name}: length kept");
            }
            Expect::ToClient(from) => {
                assert_eq!(
                    delta(|c| c.total.out_pkts),
                    1,
                    "{name}: not counted outbound"
                );
                assert_eq!(endpoints(&out).0, from, "{name}: rewritten source");
                assert_eq!(
                    endpoints(&out).1,
                    endpoints(input).1,
                    "{name}: destination kept"
                );
            }
            Expect::Pass => {
                assert_eq!(
                    delta(|c| c.passthrough),
                    1,
                    "{name}: not counted passthrough"
                );
                assert_eq!(&out[..], &input[..], "{name}: passed packets are unchanged");
            }
            Expect::IcmpTo(a) | Expect::IcmpFrom(a) => {
                assert_eq!(delta(|c| c.icmp_translated), 1, "{name}: not translated");
                let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
                let got = match c.expect {
                    Expect::IcmpTo(_) => ip.dst_addr(),
                    _ => ip.src_addr(),
                };
                assert_eq!(got, a, "{name}: outer address");
                assert!(
                    Icmpv4Packet::new_checked(&out[20..])
                        .unwrap()
                        .verify_checksum(),
                    "{name}: ICMP checksum"
                );
            }
            Expect::EchoReply => {
                assert_eq!(delta(|c| c.echo_replies), 1, "{name}: not answered");
                let (i, o) = (
                    Ipv4Packet::new_checked(&input[..]).unwrap(),
                    Ipv4Packet::new_checked(&out[..]).unwrap(),
                );
                assert_eq!((o.src_addr(), o.dst_addr()), (i.dst_addr(), i.src_addr()));
                assert_eq!(out[20], msg_type::ECHO_REPLY, "{name}: ICMP type");
            }
            Expect::Drop(_) | Expect::Held => unreachable!(),
        }
        if name == "udp-zero-checksum" {
            assert_eq!(
                &out[26..28],
                &[0, 0],
                "{name}: an absent checksum stays absent"
            );
        }
    }
}

/// Drop reasons only a plugin causes: a defense's (reached in
/// `tests/defense_dataplane.rs`) and a full template store, which needs a
/// persistence plugin (reached in `tests/persist_dataplane.rs`). The corpus
/// loads no plugin: they must stay unreached here.
const PLUGIN_ONLY: [DropReason; 4] = [
    DropReason::Defense,
    DropReason::Blocked,
    DropReason::Tarpit,
    DropReason::TemplateFull,
];

/// Drop reasons that need a service configured for them (`max_conns`, the SYN proxy on, a
/// tunnelled realserver) or a backend that falls behind (`overload`), reached in the data
/// plane's fixtures (`dataplane::tests::max_conns_*`, `dataplane::synproxy::tests`,
/// `dataplane::tunnel::tests`).
const CONFIG_ONLY: [DropReason; 5] = [
    DropReason::MaxConns,
    DropReason::ProxyOpening,
    DropReason::FloodLimit,
    DropReason::TunnelGso,
    DropReason::Overload,
];

/// Every drop reason the corpus can reach: all but [`PLUGIN_ONLY`] and [`CONFIG_ONLY`].
fn without_defense() -> impl Iterator<Item = DropReason> {
    DropReason::ALL
        .into_iter()
        .filter(|r| !PLUGIN_ONLY.contains(r) && !CONFIG_ONLY.contains(r))
}

#[test]
fn expectations_cover_every_drop_reason_and_path() {
    let cases = cases();
    for r in without_defense() {
        assert!(
            cases.iter().any(|c| c.expect == Expect::Drop(r)),
            "no corpus file is dropped as {}",
            r.label()
        );
    }
    let kinds: [fn(&Expect) -> bool; 8] = [
        |e: &Expect| matches!(e, Expect::ToServer(a) if a.port() == 8080),
        |e: &Expect| matches!(e, Expect::ToServer(a) if a.port() == 5353),
        |e: &Expect| matches!(e, Expect::ToClient(a) if a.port() == 80),
        |e: &Expect| matches!(e, Expect::ToClient(a) if a.port() == 53),
        |e: &Expect| matches!(e, Expect::Pass),
        |e: &Expect| matches!(e, Expect::IcmpTo(_)),
        |e: &Expect| matches!(e, Expect::IcmpFrom(_)),
        |e: &Expect| matches!(e, Expect::EchoReply),
    ];
    for (i, k) in kinds.iter().enumerate() {
        assert!(cases.iter().any(|c| k(&c.expect)), "path {i} not covered");
    }
    assert!(cases.len() >= 30);
}

#[test]
fn corpus_matches_generator() {
    let files = corpus_files();
    for c in cases() {
        assert_eq!(
            files.get(c.name),
            Some(&c.bytes),
            "tests/corpus/{}.bin differs from cases(): run \
             `cargo test -p ringvs --test corpus -- --ignored regenerate`",
            c.name
        );
    }
}

/// Writes every case of [`cases`] to `tests/corpus/NAME.bin`.
#[test]
#[ignore = "writes tests/corpus; run on purpose after changing cases()"]
fn regenerate() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let cases = cases();
    for c in &cases {
        std::fs::write(dir.join(format!("{}.bin", c.name)), &c.bytes).unwrap();
    }
    for name in corpus_files().keys() {
        if !cases.iter().any(|c| c.name == name) {
            eprintln!(
                "tests/corpus/{name}.bin is not generated by cases(): keep it only with an entry"
            );
        }
    }
    eprintln!("wrote {} files to {}", cases.len(), dir.display());
}

#[test]
fn the_checker_catches_broken_checksums() {
    let input = syn();
    check_forwarded("unchanged", &input, &input);
    for (what, at) in [("IPv4 header", 10), ("TCP", 20 + 16)] {
        let mut out = input.clone();
        out[at] ^= 0x10;
        let caught = std::panic::catch_unwind(|| check_forwarded(what, &input, &out));
        assert!(caught.is_err(), "a broken {what} checksum went unnoticed");
    }
    // The independent parser sees the same breakage on its own, in every kind of checksum.
    let valid = Sums {
        ip: true,
        l4: Some(true),
        quoted_ip: None,
    };
    assert_eq!(sums_etherparse(&input), Some(valid));
    let mut ip_broken = input.clone();
    ip_broken[10] ^= 0x10;
    assert!(!sums_etherparse(&ip_broken).unwrap().ip);
    for pkt in [syn(), query()] {
        let mut l4_broken = pkt.clone();
        let last = l4_broken.len() - 1;
        l4_broken[last] ^= 0x01; // payload or header: the transport checksum covers both
        assert_eq!(
            sums_etherparse(&l4_broken).unwrap().l4,
            Some(false),
            "{pkt:02x?}"
        );
    }
    let err = icmp_error(
        ROUTER,
        CLIENT,
        msg_type::DEST_UNREACHABLE,
        unreach_code::PORT_UNREACHABLE,
        0,
        &syn(),
        28,
    );
    assert_eq!(sums_etherparse(&err).unwrap().quoted_ip, Some(true));
    let mut quoted_broken = err.clone();
    quoted_broken[28 + 10] ^= 0x10;
    let s = sums_etherparse(&quoted_broken).unwrap();
    assert_eq!((s.l4, s.quoted_ip), (Some(false), Some(false)));
}

/// FNV-1a, to seed each file's sequence from its name.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Byte values that sit on boundaries of the fields they land in.
const INTERESTING: [u8; 10] = [0x00, 0x01, 0x02, 0x04, 0x05, 0x0f, 0x40, 0x45, 0x7f, 0xff];

/// Applies one to three random mutations to `p`.
fn mutate(rng: &mut Rng, p: &mut Vec<u8>) {
    for _ in 0..1 + rng.index(3) {
        match rng.index(6) {
            0 if !p.is_empty() => {
                let i = rng.index(p.len() * 8);
                p[i / 8] ^= 1 << (i % 8);
            }
            1 if !p.is_empty() => {
                let i = rng.index(p.len());
                p[i] = if rng.index(2) == 0 {
                    INTERESTING[rng.index(INTERESTING.len())]
                } else {
                    rng.next_u64() as u8
                };
            }
            // Header fields mostly: the first 64 bytes.
            2 if p.len() >= 2 => {
                let i = rng.index(p.len().min(64) - 1);
                let v: u16 = [0, 1, 0x7fff, 0x8000, 0xffff, p.len() as u16][rng.index(6)];
                p[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            3 => {
                let n = rng.index(p.len() + 1);
                p.truncate(n);
            }
            4 => {
                for _ in 0..1 + rng.index(64) {
                    p.push(rng.next_u64() as u8);
                }
            }
            _ => {
                // Swap in an address the queue knows, to reach deeper paths.
                if p.len() >= 20 {
                    let a = [VIP, RS1, RS2, CLIENT, OTHER][rng.index(5)].octets();
                    let at = if rng.index(2) == 0 { 12 } else { 16 };
                    p[at..at + 4].copy_from_slice(&a);
                }
            }
        }
    }
}

#[test]
fn mutations_keep_invariants() {
    let mutations = std::env::var("RINGVS_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MUTATIONS);
    let files = corpus_files();
    assert!(files.len() >= 30, "the corpus is missing");
    // The packets each file's context starts with, re-sent unmutated now and then so that
    // mutated replies and ICMP errors find their flows.
    let preludes: BTreeMap<&str, Vec<Vec<u8>>> = cases()
        .into_iter()
        .filter_map(|c| match c.ctx {
            Ctx::After(p) | Ctx::DestRemoved(p) => Some((c.name, p)),
            _ => None,
        })
        .collect();
    // A small table (160 entries), so that it fills and empties again as the clock moves.
    let stash = 4 * ringvs::dataplane::synproxy::STASH_BYTES;
    let (mut shard, mut registry) = queue((24 << 10) + stash, true);
    let mut buf = Vec::new();
    let mut input = Vec::new();
    let mut tick = shard.now();
    let (mut forwarded, mut dropped) = (0u64, 0u64);
    for (n, (name, base)) in files.iter().enumerate() {
        if n == files.len() / 2 {
            // Halfway: a realserver leaves; its connections end on their next packet. A few
            // fresh ones first (wlc puts some on it), whose next packets come right after.
            let clients: Vec<SocketAddrV4> = (0..4)
                .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 77, 9, 1 + i), 45000))
                .collect();
            for c in &clients {
                run(&mut shard, &mut buf, &tcp(*c, WEB, SYN, b""));
            }
            registry
                .remove_server("web", addr("10.77.1.2:8080").into())
                .unwrap();
            shard.apply_snapshot(Arc::new(registry.snapshot()));
            for c in &clients {
                run(&mut shard, &mut buf, &tcp(*c, WEB, ACK, b""));
            }
        }
        // Every eighth file with every realserver quiesced.
        let weight = if n % 8 == 7 { 0 } else { 1 };
        for (svc, servers) in registry
            .services()
            .map(|s| (s.cfg.name.clone(), s.cfg.servers.clone()))
            .collect::<Vec<_>>()
        {
            for d in servers {
                registry.set_weight(&svc, d.addr, weight).unwrap();
            }
        }
        let prelude = preludes.get(name.as_str()).map_or(&[][..], |p| &p[..]);
        let mut rng = Rng::new(fnv(name));
        for i in 0..mutations {
            if i % 1000 == 0 {
                for p in prelude {
                    run(&mut shard, &mut buf, p);
                }
            }
            input.clear();
            input.extend_from_slice(base);
            mutate(&mut rng, &mut input);
            match rng.index(8) {
                0 => {}
                1..=3 => fix_checksums(&mut input, false),
                _ => fix_checksums(&mut input, true),
            }
            let what = format!("{name} mutation {i}");
            let (v, out) = run(&mut shard, &mut buf, &input);
            if v == Verdict::Forward {
                forwarded += 1;
                let out = out.to_vec();
                check_forwarded(&what, &input, &out);
            } else {
                dropped += 1;
            }
            let t = shard.table();
            assert!(t.len() <= t.capacity(), "{what}: table over capacity");
            if i % 64 == 63 {
                tick += 1 + rng.index(4) as u32;
                if rng.index(64) == 0 {
                    tick += 700;
                }
                shard.set_now(tick);
            }
        }
        check_accounting(name, &[&shard], &registry);
    }
    let c = shard.counters();
    eprintln!(
        "{} files × {mutations} mutations: {forwarded} forwarded ({} to realservers, {} to \
         clients, {} passed, {} ICMP translated, {} echo replies), {dropped} dropped {:?}, \
         {} conns, {} expired, {:?} evicted, table {} of {}",
        files.len(),
        c.total.in_pkts,
        c.total.out_pkts,
        c.passthrough,
        c.icmp_translated,
        c.echo_replies,
        DropReason::ALL.map(|r| (r.label(), c.drops[r as usize])),
        c.total.conns,
        c.expired,
        c.evictions,
        shard.table().len(),
        shard.table().capacity()
    );
    // Not vacuous: every forwarding path and every drop reason was reached.
    for (what, n) in [
        ("to realservers", c.total.in_pkts),
        ("to clients", c.total.out_pkts),
        ("passed", c.passthrough),
        ("ICMP translated", c.icmp_translated),
        ("echo replies", c.echo_replies),
    ] {
        assert!(n > 0, "the fuzzer never forwarded {what}");
    }
    for r in without_defense() {
        // A full table evicts half-open and idle entries for new flows (early drop); the
        // fuzzer's flows are all of those, so its full table shows as evictions.
        if r == DropReason::TableFull {
            assert!(
                c.drops[r as usize] + c.evictions.iter().sum::<u64>() > 0,
                "the fuzzer's table never filled"
            );
            continue;
        }
        assert!(
            c.drops[r as usize] > 0,
            "the fuzzer never dropped as {}",
            r.label()
        );
    }
    for r in PLUGIN_ONLY {
        assert_eq!(
            c.drops[r as usize],
            0,
            "no plugin is loaded, yet {}",
            r.label()
        );
    }
    assert_eq!(forwarded + dropped, (files.len() * mutations) as u64);
}

/// The same corpus through the AF_XDP backend's packet handling where it differs from TUN's
/// (`io::mem::process_frame`: the XDP program's decision, Ethernet off, the same pipeline,
/// the next hop's header on). A frame the program takes must come out exactly as the TUN
/// path's packet, framed for its destination; a frame it leaves to the kernel must be one the
/// data plane would have passed through unchanged, or one the kernel discards itself (neither
/// IPv4 nor IPv6, a header shorter than its fixed part). IPv6 packets go in IPv6 frames, and
/// the program knows the corpus's IPv6 service and realserver: some of them must be taken.
#[test]
fn corpus_through_the_af_xdp_framing() {
    use ringvs::io::mem::{process_frame, FrameOutcome};
    use ringvs::io::xdp::prog::Endpoint;
    let director = [2, 0, 0, 0, 0, 1];
    let peer = [2, 0, 0, 0, 0, 2];
    let endpoints = [
        Endpoint::vip(VIP),
        Endpoint::local(Ipv4Addr::new(10, 77, 9, 1)),
        Endpoint::real(ip_proto::TCP, RS1, 8080),
        Endpoint::real(ip_proto::TCP, RS2, 8080),
        Endpoint::real(ip_proto::UDP, RS1, 5353),
        Endpoint::vip(a6("[fd77:100::100]:80").ip().to_owned()),
        Endpoint::real(ip_proto::TCP, a6("[fd77:1::1]:8080").ip().to_owned(), 8080),
    ];
    let hop = |dst: std::net::IpAddr| {
        let mut h = [0u8; 14];
        let (mac, ethertype) = match dst {
            std::net::IpAddr::V4(a) => (a.octets(), [0x08, 0x00]),
            std::net::IpAddr::V6(a) => {
                let o = a.octets();
                ([o[12], o[13], o[14], o[15]], [0x86, 0xdd])
            }
        };
        h[..4].copy_from_slice(&mac); // a MAC per destination
        h[6..12].copy_from_slice(&director);
        h[12..].copy_from_slice(&ethertype);
        Some(h)
    };
    let cases: BTreeMap<&str, Case> = cases().into_iter().map(|c| (c.name, c)).collect();
    let (mut taken, mut left, mut taken6) = (0, 0, 0);
    let mut buf = Vec::new();
    for (name, input) in &corpus_files() {
        let c = &cases[name.as_str()];
        let (mut tun, _r1) = set_up(name, &c.ctx);
        let (mut xdp, _r2) = set_up(name, &c.ctx);
        let (v, out) = run(&mut tun, &mut buf, input);
        let mut frame = director.to_vec();
        frame.extend_from_slice(&peer);
        // The EtherType the sender gives the packet's version (IPv4's for anything else).
        let v6 = input.first().is_some_and(|b| b >> 4 == 6);
        frame.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        frame.extend_from_slice(input);
        let outcome = process_frame(&mut xdp, &frame, |e| endpoints.contains(e), hop);
        if v6 && outcome != FrameOutcome::Kernel {
            taken6 += 1;
        }
        match outcome {
            FrameOutcome::Kernel => {
                left += 1;
                // What the kernel's own ip_rcv() discards: neither IPv4 nor IPv6, an IPv4
                // header shorter than 20 bytes, an IPv6 one shorter than 40 (ipv6_rcv()).
                let kernel_drops = if v6 {
                    input.len() < 40
                } else {
                    input.len() < 20 || input[0] >> 4 != 4 || input[0] & 0x0f < 5
                };
                // The XDP program takes a realserver's first fragments only (later ones show
                // no ports): with AF_XDP, its later fragments pass through the kernel.
                let later_fragment = matches!(c.expect, Expect::Held)
                    && Ipv4Packet::new_checked(&input[..]).is_ok_and(|ip| ip.frag_offset() > 0);
                assert!(
                    matches!(c.expect, Expect::Pass) || kernel_drops || later_fragment,
                    "{name}: left to the kernel, but the data plane would not pass it through"
                );
            }
            FrameOutcome::Dropped => {
                taken += 1;
                assert_eq!(v, Verdict::Drop, "{name}: dropped only through AF_XDP");
            }
            FrameOutcome::Consumed => {
                taken += 1;
                assert_eq!(v, Verdict::Consumed, "{name}: held only through AF_XDP");
            }
            FrameOutcome::Sent(f) => {
                taken += 1;
                assert_eq!(v, Verdict::Forward, "{name}: forwarded only through AF_XDP");
                let dst = ringvs::io::xdp::frame::destination(&f[14..]).unwrap();
                assert_eq!(f[..14], hop(dst).unwrap(), "{name}: Ethernet header");
                assert_eq!(&f[14..14 + out.len()], out, "{name}: same packet as TUN");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(
        taken > 40 && left > 0 && taken6 > 5,
        "taken {taken} (IPv6 {taken6}), left to the kernel {left}"
    );
    println!("taken {taken} (IPv6 {taken6}), left to the kernel {left}");
}
