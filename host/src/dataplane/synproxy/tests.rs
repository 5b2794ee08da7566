//! The SYN proxy through a whole queue: every packet it writes is parsed back and its
//! checksums verified; sequence numbers, timestamps and windows are followed across both
//! halves of the connection.

use super::cookie::ROTATE_SECS;
use super::*;
use crate::conn::{HashKey, State, TICKS_PER_SEC};
use crate::control::registry::Registry;
use crate::dataplane::stats::DropReason;
use crate::dataplane::testkit::{icmp_error, tcp_full};
use crate::dataplane::{Packet, Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use crate::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use crate::wire::vnet::{VnetHdr, F_NEEDS_CSUM};
use std::net::Ipv4Addr;

const PROXIED: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
scheduler = "rr"
syn_proxy = "on"
[[service.server]]
addr = "10.77.1.1:8080"
"#;

fn shard(config: &str) -> Shard {
    let cfg = crate::config::from_str(config, "proxy.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let snap = Arc::new(registry.snapshot());
    Shard::new(
        ShardConfig {
            cookies: Arc::new(CookieKeys::with(
                HashKey([1, 2]),
                [HashKey([3, 4]), HashKey([5, 6])],
            )),
            ..ShardConfig::test(4 << 20)
        },
        snap,
        None,
    )
    .unwrap()
}

fn run(s: &mut Shard, input: &[u8], vnet: Option<VnetHdr>) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut p = Packet::new(&mut buf, HEADROOM, input.len()).unwrap();
    p.vnet = vnet;
    let v = s.process(&mut p);
    (v, p.data().to_vec())
}

/// A parsed packet the proxy (or the NAT path) wrote, checksums verified.
#[derive(Debug)]
struct Out {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: tcpopt::Located,
    payload: Vec<u8>,
}

fn parse(p: &[u8]) -> Out {
    let ip = Ipv4Packet::new_checked(p).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    assert_eq!(ip.total_len() as usize, p.len());
    let t = TcpPacket::new_checked(&p[20..]).unwrap();
    assert!(
        t.verify_checksum(ip.src_addr(), ip.dst_addr()),
        "TCP checksum of {p:02x?}"
    );
    Out {
        src: SocketAddrV4::new(ip.src_addr(), t.src_port()),
        dst: SocketAddrV4::new(ip.dst_addr(), t.dst_port()),
        seq: t.seq_number(),
        ack: t.ack_number(),
        flags: t.flags(),
        window: t.window_len(),
        opts: tcpopt::parse(t.options()).unwrap(),
        payload: t.payload().to_vec(),
    }
}

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

const VIP: &str = "10.77.100.100:80";
const CLIENT: &str = "10.77.0.2:40000";
const RS: &str = "10.77.1.1:8080";
const ISN: u32 = 0x1111_0000;
const TSC: u32 = 500_000; // the client's clock
const SISN: u32 = 0x7777_0000; // the realserver's ISN
const TSS: u32 = 9_000_000; // the realserver's clock

/// Linux's SYN options: MSS, SACK-permitted, timestamps, NOP, window scale.
fn syn_opts(mss: u16, ts: Option<(u32, u32)>, ws: Option<u8>) -> Vec<u8> {
    let mut b = [0u8; 20];
    let n = tcpopt::emit_syn(&mut b, mss, true, ts, ws);
    b[..n].to_vec()
}

fn ts_opts(v: u32, e: u32) -> Vec<u8> {
    tcpopt::emit_ts(v, e).to_vec()
}

/// Client SYN → the proxy's SYN-ACK.
fn handshake_syn(s: &mut Shard) -> Out {
    let syn = tcp_full(
        a(CLIENT),
        a(VIP),
        ISN,
        0,
        SYN,
        64240,
        &syn_opts(1460, Some((TSC, 0)), Some(7)),
        b"",
    );
    let (v, out) = run(s, &syn, None);
    assert_eq!(v, Verdict::Forward);
    parse(&out)
}

/// The client's segment `seq` with `flags` and `data` acknowledging the proxy's cookie
/// SYN-ACK `synack` (echoing its timestamp).
fn client_ack(synack: &Out, seq: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let (tsval, _) = synack.opts.ts.unwrap();
    tcp_full(
        a(CLIENT),
        a(VIP),
        seq,
        synack.seq + 1,
        flags,
        502,
        &ts_opts(TSC + 1, tsval),
        data,
    )
}

/// The client's bare ACK of the proxy's cookie SYN-ACK `synack`.
fn cookie_ack(synack: &Out) -> Vec<u8> {
    client_ack(synack, ISN + 1, ACK, b"")
}

/// The whole opening: SYN, ACK with data, the realserver's SYN-ACK. Returns the SYN-ACK the
/// client saw, the SYN the realserver saw, and what the realserver got after its SYN-ACK.
fn open(s: &mut Shard, data: &[u8]) -> (Out, Out, Out) {
    let synack = handshake_syn(s);
    let flags = ACK | if data.is_empty() { 0 } else { PSH };
    let ack = client_ack(&synack, ISN + 1, flags, data);
    let (v, out) = run(s, &ack, None);
    assert_eq!(v, Verdict::Forward);
    let syn = parse(&out);
    let server_synack = tcp_full(
        a(RS),
        a(CLIENT),
        SISN,
        ISN + 1,
        SYN | ACK,
        65160,
        &syn_opts(1460, Some((TSS, TSC + 1)), Some(9)),
        b"",
    );
    let (v, out) = run(s, &server_synack, None);
    assert_eq!(v, Verdict::Forward);
    (synack, syn, parse(&out))
}

#[test]
fn a_syn_gets_a_cookie_and_leaves_no_state() {
    let mut s = shard(PROXIED);
    let o = handshake_syn(&mut s);
    assert_eq!((o.src, o.dst), (a(VIP), a(CLIENT)), "answered from the VIP");
    assert_eq!(o.flags, SYN | ACK);
    assert_eq!(o.ack, ISN + 1);
    assert_eq!(o.opts.mss, Some(1460));
    assert_eq!(o.opts.wscale, Some(WS_PROXY));
    assert!(o.opts.sack_perm);
    let (tsval, tsecr) = o.opts.ts.unwrap();
    assert_eq!(tsecr, TSC, "the client's timestamp echoed");
    assert_eq!(
        cookie::ts_decode(o.seq, tsval),
        Some(cookie::TsOptions {
            wscale: Some(7),
            sack: true
        })
    );
    assert_eq!(s.table().len(), 0, "no entry for a SYN");
    assert_eq!(s.syn_proxy().events[Event::CookieSent as usize], 1);
}

#[test]
fn without_timestamps_neither_window_scale_nor_sack_is_offered() {
    let mut s = shard(PROXIED);
    let mut b = [0u8; 20];
    let n = tcpopt::emit_syn(&mut b, 9000, true, None, Some(7));
    let syn = tcp_full(a(CLIENT), a(VIP), ISN, 0, SYN, 64240, &b[..n], b"");
    let (_, out) = run(&mut s, &syn, None);
    let o = parse(&out);
    assert_eq!(
        o.opts.mss,
        Some(1460),
        "a jumbo MSS is promised as the table's largest"
    );
    assert_eq!(
        (o.opts.wscale, o.opts.sack_perm, o.opts.ts),
        (None, false, None)
    );
}

#[test]
fn a_partial_checksum_syn_gets_a_complete_checksum_syn_ack() {
    let mut s = shard(PROXIED);
    let syn = crate::dataplane::testkit::partial(tcp_full(
        a(CLIENT),
        a(VIP),
        ISN,
        0,
        SYN,
        64240,
        &syn_opts(1460, Some((TSC, 0)), Some(7)),
        b"",
    ));
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let mut buf = vec![0u8; 2048];
    buf[HEADROOM..HEADROOM + syn.len()].copy_from_slice(&syn);
    let mut p = Packet::new(&mut buf, HEADROOM, syn.len()).unwrap();
    p.vnet = Some(vnet);
    assert_eq!(s.process(&mut p), Verdict::Forward);
    assert!(p.vnet.is_none(), "the offload request is cleared");
    parse(p.data());
}

#[test]
fn the_whole_connection_through_the_proxy() {
    let mut s = shard(PROXIED);
    let (synack, syn, third) = open(&mut s, b"GET / HTTP/1.1\r\n\r\n");
    let cookie = synack.seq;
    let (p0, _) = synack.opts.ts.unwrap();
    // The proxy's SYN to the realserver: the client's ISN and options.
    assert_eq!((syn.src, syn.dst), (a(CLIENT), a(RS)));
    assert_eq!((syn.flags, syn.seq), (SYN, ISN));
    assert!(syn.payload.is_empty());
    assert_eq!(syn.opts.mss, Some(1460));
    assert_eq!(syn.opts.wscale, Some(7), "the client's own window scale");
    assert!(syn.opts.sack_perm);
    assert_eq!(syn.opts.ts, Some((TSC + 1, 0)));
    // The realserver's SYN-ACK became the client's ACK, with the data kept from its ACK.
    assert_eq!((third.src, third.dst), (a(CLIENT), a(RS)));
    assert_eq!(third.flags, ACK | PSH);
    assert_eq!((third.seq, third.ack), (ISN + 1, SISN + 1));
    assert_eq!(third.payload, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(third.opts.ts, Some((TSC + 1, TSS)));
    assert_eq!(s.table().by_state()[State::Established as usize], 1);
    let ev = s.syn_proxy().events;
    assert_eq!(
        [
            ev[Event::CookieOk as usize],
            ev[Event::DataStashed as usize],
            ev[Event::ServerOpened as usize]
        ],
        [1, 1, 1]
    );

    // Realserver → client: sequence into the cookie's space, timestamp into the proxy's
    // clock, window from its scale (9) to the proxy's (7).
    let resp = tcp_full(
        a(RS),
        a(CLIENT),
        SISN + 1,
        ISN + 1 + 18,
        ACK | PSH,
        100,
        &ts_opts(TSS + 40, TSC + 1),
        b"HTTP/1.1 200 OK\r\n",
    );
    let (v, out) = run(&mut s, &resp, None);
    assert_eq!(v, Verdict::Forward);
    let o = parse(&out);
    assert_eq!((o.src, o.dst), (a(VIP), a(CLIENT)));
    assert_eq!(o.seq, cookie + 1);
    assert_eq!(
        o.ack,
        ISN + 1 + 18,
        "the client's own sequence space is untouched"
    );
    assert_eq!(o.opts.ts, Some((p0 + 40, TSC + 1)));
    assert_eq!(o.window, 100 << 2, "100 × 2^9 bytes in units of 2^7");
    assert_eq!(o.payload, b"HTTP/1.1 200 OK\r\n");

    // Client → realserver: the acknowledgment, the echoed timestamp and SACK blocks into
    // the realserver's spaces.
    let mut opts = ts_opts(TSC + 2, p0 + 40);
    opts.extend_from_slice(&[1, 1, 5, 10]);
    opts.extend_from_slice(&(cookie + 100).to_be_bytes());
    opts.extend_from_slice(&(cookie + 200).to_be_bytes());
    opts.extend_from_slice(&[0, 0]);
    let opts = &opts[..24];
    let ack = tcp_full(
        a(CLIENT),
        a(VIP),
        ISN + 19,
        cookie + 1 + 17,
        ACK,
        500,
        opts,
        b"",
    );
    let (v, out) = run(&mut s, &ack, None);
    assert_eq!(v, Verdict::Forward);
    let o = parse(&out);
    assert_eq!((o.src, o.dst), (a(CLIENT), a(RS)));
    assert_eq!((o.seq, o.ack), (ISN + 19, SISN + 1 + 17));
    assert_eq!(o.opts.ts, Some((TSC + 2, TSS + 40)));
    let (at, n) = o.opts.sack_at.unwrap();
    assert_eq!(n, 1);
    let seg = &out[20..];
    let block = |k: usize| {
        let p = 20 + at + 4 * k;
        u32::from_be_bytes([seg[p], seg[p + 1], seg[p + 2], seg[p + 3]])
    };
    assert_eq!((block(0), block(1)), (SISN + 100, SISN + 200));

    // A FIN closes it as any connection.
    let fin = tcp_full(
        a(CLIENT),
        a(VIP),
        ISN + 19,
        cookie + 18,
        FIN | ACK,
        500,
        &ts_opts(TSC + 3, p0 + 40),
        b"",
    );
    assert_eq!(run(&mut s, &fin, None).0, Verdict::Forward);
    assert_eq!(s.table().by_state()[State::CloseWait as usize], 1);
}

/// The quoted segment of an ICMP error the shard wrote: (outer src, outer dst, quoted src,
/// quoted dst, seq, ack if quoted, quoted TCP checksum valid if all of it is quoted), the
/// outer checksums verified.
type Quote = (
    Ipv4Addr,
    Ipv4Addr,
    SocketAddrV4,
    SocketAddrV4,
    u32,
    Option<u32>,
    bool,
);

fn quoted_of(p: &[u8]) -> Quote {
    let ip = Ipv4Packet::new_checked(p).unwrap();
    assert!(ip.verify_checksum(), "outer IPv4 checksum");
    let msg = crate::wire::Icmpv4Packet::new_checked(&p[20..]).unwrap();
    assert!(msg.verify_checksum(), "ICMP checksum");
    let inner = &p[28..];
    let iip = Ipv4Packet::new_checked_quoted(inner).unwrap();
    assert!(iip.verify_checksum(), "quoted IPv4 checksum");
    let l4 = &inner[20..];
    let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
    let whole = inner.len() == usize::from(iip.total_len());
    (
        ip.src_addr(),
        ip.dst_addr(),
        SocketAddrV4::new(iip.src_addr(), u16::from_be_bytes([l4[0], l4[1]])),
        SocketAddrV4::new(iip.dst_addr(), u16::from_be_bytes([l4[2], l4[3]])),
        word(4),
        (l4.len() >= 12).then(|| word(8)),
        whole
            && TcpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(iip.src_addr(), iip.dst_addr()),
    )
}

#[test]
fn icmp_errors_quoting_a_proxied_connection_carry_each_sides_sequence_numbers() {
    use crate::wire::icmpv4::msg_type::DEST_UNREACHABLE;
    let mut s = shard(PROXIED);
    let (synack, _, _) = open(&mut s, b"");
    let cookie = synack.seq;
    let router = Ipv4Addr::new(10, 77, 0, 254);

    // Realserver → client, 1400 bytes: too big on the client's path. The router's
    // fragmentation-needed quotes the segment as the client would have seen it (the cookie's
    // sequence space); the realserver checks the quoted sequence number against what it
    // sent, so it must get its own back.
    let resp = tcp_full(
        a(RS),
        a(CLIENT),
        SISN + 1,
        ISN + 1,
        ACK,
        100,
        &[],
        &[0x55; 1400],
    );
    let (v, out) = run(&mut s, &resp, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(parse(&out).seq, cookie + 1);
    for quote in [28, out.len()] {
        let err = icmp_error(router, *a(VIP).ip(), DEST_UNREACHABLE, 4, 1300, &out, quote);
        let (v, e) = run(&mut s, &err, None);
        assert_eq!(v, Verdict::Forward, "quoting {quote} bytes");
        let (osrc, odst, qsrc, qdst, seq, _, sum_ok) = quoted_of(&e);
        assert_eq!((osrc, odst), (router, *a(RS).ip()));
        assert_eq!((qsrc, qdst), (a(RS), a(CLIENT)));
        assert_eq!(
            seq,
            SISN + 1,
            "the realserver's own sequence number (quoting {quote})"
        );
        if quote == out.len() {
            assert!(sum_ok, "the quoted TCP checksum follows");
        }
    }

    // Client → realserver: the quoted acknowledgment goes back into the client's space.
    let req = tcp_full(
        a(CLIENT),
        a(VIP),
        ISN + 1,
        cookie + 1,
        ACK | PSH,
        500,
        &[],
        b"GET /",
    );
    let (v, out) = run(&mut s, &req, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(parse(&out).ack, SISN + 1);
    let err = icmp_error(
        router,
        *a(CLIENT).ip(),
        DEST_UNREACHABLE,
        1,
        0,
        &out,
        out.len(),
    );
    let (v, e) = run(&mut s, &err, None);
    assert_eq!(v, Verdict::Forward);
    let (osrc, _, qsrc, qdst, seq, ack, sum_ok) = quoted_of(&e);
    assert_eq!(osrc, *a(VIP).ip());
    assert_eq!((qsrc, qdst), (a(CLIENT), a(VIP)));
    assert_eq!(
        (seq, ack),
        (ISN + 1, Some(cookie + 1)),
        "what the client sent"
    );
    assert!(sum_ok);
    assert_eq!(s.counters().icmp_translated, 3);
}

#[test]
fn translation_keeps_partial_checksums_partial() {
    let mut s = shard(PROXIED);
    let (synack, _, _) = open(&mut s, b"");
    let resp = crate::dataplane::testkit::partial(tcp_full(
        a(RS),
        a(CLIENT),
        SISN + 1,
        ISN + 1,
        ACK,
        100,
        &ts_opts(TSS + 1, TSC + 1),
        b"data",
    ));
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let (v, out) = run(&mut s, &resp, Some(vnet));
    assert_eq!(v, Verdict::Forward);
    // Completing the partial sum gives a valid checksum over the translated header.
    let mut done = out.clone();
    let start = 20;
    let c = !crate::wire::checksum::combine(&[
        u16::from_be_bytes([done[start + 16], done[start + 17]]),
        crate::wire::checksum::data(&{
            let mut t = done[start..].to_vec();
            t[16] = 0;
            t[17] = 0;
            t
        }),
    ]);
    done[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());
    let o = parse(&done);
    assert_eq!(o.seq, synack.seq + 1);
}

#[test]
fn data_in_the_ack_too_long_to_keep_is_dropped_not_forwarded_half() {
    let mut s = shard(PROXIED);
    let big = vec![b'x'; STASH_BYTES + 1];
    let (_, syn, third) = open(&mut s, &big);
    assert!(syn.payload.is_empty());
    assert_eq!(third.flags, ACK, "no data: the client sends it again");
    assert!(third.payload.is_empty());
    assert_eq!(s.syn_proxy().events[Event::DataDropped as usize], 1);
}

#[test]
fn a_request_sent_after_the_bare_ack_goes_with_the_proxys_ack() {
    // What curl and wrk do: the bare ACK, then the request in its own segment, before the
    // realserver has answered the proxy.
    let mut s = shard(PROXIED);
    let synack = handshake_syn(&mut s);
    let ack = |seq, data: &[u8]| client_ack(&synack, seq, ACK | PSH, data);
    assert_eq!(run(&mut s, &ack(ISN + 1, b""), None).0, Verdict::Forward);
    assert_eq!(
        run(&mut s, &ack(ISN + 1, b"GET / HTTP/1.1\r\n"), None).0,
        Verdict::Consumed
    );
    assert_eq!(
        run(&mut s, &ack(ISN + 17, b"Host: x\r\n\r\n"), None).0,
        Verdict::Consumed
    );
    // A gap is not kept.
    assert_eq!(
        run(&mut s, &ack(ISN + 100, b"later"), None).0,
        Verdict::Drop
    );
    assert_eq!(s.counters().drops[DropReason::ProxyOpening as usize], 1);
    let server_synack = tcp_full(
        a(RS),
        a(CLIENT),
        SISN,
        ISN + 1,
        SYN | ACK,
        65160,
        &syn_opts(1460, Some((TSS, TSC + 1)), Some(9)),
        b"",
    );
    let (_, out) = run(&mut s, &server_synack, None);
    let o = parse(&out);
    assert_eq!(o.payload, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(o.seq, ISN + 1);
    let ev = s.syn_proxy().events;
    assert_eq!(
        (
            ev[Event::DataStashed as usize],
            ev[Event::EarlyPacket as usize]
        ),
        (2, 1)
    );
}

#[test]
fn forged_and_stale_cookies_are_refused_and_counted() {
    let mut s = shard(PROXIED);
    let synack = handshake_syn(&mut s);
    let (tsval, _) = synack.opts.ts.unwrap();
    let forged = tcp_full(
        a(CLIENT),
        a(VIP),
        ISN + 1,
        synack.seq + 1 + 12345,
        ACK,
        502,
        &ts_opts(TSC + 1, tsval),
        b"",
    );
    let (v, _) = run(&mut s, &forged, None);
    assert_eq!(v, Verdict::Drop);
    assert_eq!(s.counters().drops[DropReason::NoConn as usize], 1);
    assert_eq!(s.syn_proxy().events[Event::CookieInvalid as usize], 1);
    // A timestamp that is not the one sent: refused too.
    let wrong_ts = tcp_full(
        a(CLIENT),
        a(VIP),
        ISN + 1,
        synack.seq + 1,
        ACK,
        502,
        &ts_opts(TSC + 1, tsval ^ 0x40),
        b"",
    );
    assert_eq!(run(&mut s, &wrong_ts, None).0, Verdict::Drop);
    assert_eq!(s.table().len(), 0);
    // The right ACK after one rotation is good; after two it is stale.
    let good = cookie_ack(&synack);
    let period = ROTATE_SECS * TICKS_PER_SEC;
    s.set_now(2 * period + 1);
    assert_eq!(
        run(&mut s, &good, None).0,
        Verdict::Drop,
        "two rotations later"
    );
    assert_eq!(s.syn_proxy().events[Event::CookieInvalid as usize], 3);
    assert_eq!(s.table().len(), 0);
}

#[test]
fn an_ack_one_rotation_later_still_opens() {
    let mut s = shard(PROXIED);
    let synack = handshake_syn(&mut s);
    s.set_now(ROTATE_SECS * TICKS_PER_SEC);
    let ack = cookie_ack(&synack);
    assert_eq!(run(&mut s, &ack, None).0, Verdict::Forward);
    assert_eq!(s.table().len(), 1);
}

#[test]
fn rst_or_fin_before_the_handshake_completes() {
    let mut s = shard(PROXIED);
    // No entry: a lone RST or FIN is dropped.
    let rst = tcp_full(a(CLIENT), a(VIP), ISN + 1, 0, RST, 0, &[], b"");
    assert_eq!(run(&mut s, &rst, None).0, Verdict::Drop);
    let fin = tcp_full(a(CLIENT), a(VIP), ISN + 1, 5, FIN | ACK, 0, &[], b"");
    assert_eq!(run(&mut s, &fin, None).0, Verdict::Drop);
    assert_eq!(s.table().len(), 0);
    // Opening (the realserver has not answered): a client RST ends it, its stash freed.
    let synack = handshake_syn(&mut s);
    let ack = client_ack(&synack, ISN + 1, ACK | PSH, b"hello");
    assert_eq!(run(&mut s, &ack, None).0, Verdict::Forward);
    assert_eq!(s.table().len(), 1);
    let rst = tcp_full(a(CLIENT), a(VIP), ISN + 6, 0, RST, 0, &[], b"");
    assert_eq!(run(&mut s, &rst, None).0, Verdict::Drop);
    assert_eq!(s.table().len(), 0);
    assert_eq!(s.syn_proxy().events[Event::ClientGaveUp as usize], 1);
    assert_eq!(s.syn_proxy().stash_in_use(), 0, "stash freed");
}

#[test]
fn a_realserver_that_never_answers_gets_the_syn_again_then_the_client_reset() {
    let mut s = shard(PROXIED);
    let synack = handshake_syn(&mut s);
    let ack = cookie_ack(&synack);
    let now = s.now();
    run(&mut s, &ack, None);
    let mut sent = Vec::new();
    // Nothing before a second; then the SYN again, and again two seconds later.
    s.set_now(now + TICKS_PER_SEC - 1);
    s.drain(&mut |p| sent.push(p.to_vec()));
    assert!(sent.is_empty());
    for at in [SYN_RETRIES_SECS[0], SYN_RETRIES_SECS[1]] {
        s.set_now(now + at * TICKS_PER_SEC);
        s.drain(&mut |p| sent.push(p.to_vec()));
        assert_eq!(sent.len(), 1, "one SYN at {at} s");
        let o = parse(&sent.pop().unwrap());
        assert_eq!((o.src, o.dst, o.flags, o.seq), (a(CLIENT), a(RS), SYN, ISN));
        assert_eq!(o.opts.mss, Some(1460), "the MSS the cookie promised");
        assert_eq!(o.opts.wscale, Some(7));
    }
    assert_eq!(s.syn_proxy().events[Event::SynRetry as usize], 2);
    // Past the open timeout: the entry goes and the client gets a RST from the VIP.
    s.set_now(now + SynProxy::open_timeout() + 1);
    assert_eq!(s.table().len(), 0);
    s.drain(&mut |p| sent.push(p.to_vec()));
    assert_eq!(sent.len(), 1);
    let r = parse(&sent[0]);
    assert_eq!((r.src, r.dst, r.flags), (a(VIP), a(CLIENT), RST));
    assert_eq!(r.seq, synack.seq + 1);
    assert_eq!(s.syn_proxy().events[Event::ServerTimeout as usize], 1);
    s.drain(&mut |_| panic!("sent twice"));
}

#[test]
fn a_realserver_in_time_wait_is_reset_and_gets_the_syn_again() {
    let mut s = shard(PROXIED);
    let synack = handshake_syn(&mut s);
    let ack = cookie_ack(&synack);
    run(&mut s, &ack, None);
    // The realserver answers the SYN for its old connection: an ACK of an old sequence.
    let old = tcp_full(a(RS), a(CLIENT), 4242, 0x5555, ACK, 500, &[], b"");
    let (v, out) = run(&mut s, &old, None);
    assert_eq!(v, Verdict::Forward);
    let r = parse(&out);
    assert_eq!(
        (r.src, r.dst, r.flags, r.seq),
        (a(CLIENT), a(RS), RST, 0x5555)
    );
    assert_eq!(s.syn_proxy().events[Event::ServerStale as usize], 1);
    // The SYN goes again at the next tick.
    let now = s.now();
    s.set_now(now + 1);
    let mut sent = Vec::new();
    s.drain(&mut |p| sent.push(p.to_vec()));
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0]).flags, SYN);
}

#[test]
fn a_realserver_that_refuses_resets_the_client() {
    let mut s = shard(PROXIED);
    let synack = handshake_syn(&mut s);
    let ack = cookie_ack(&synack);
    run(&mut s, &ack, None);
    let rst = tcp_full(a(RS), a(CLIENT), 0, ISN + 1, RST | ACK, 0, &[], b"");
    let (v, out) = run(&mut s, &rst, None);
    assert_eq!(v, Verdict::Forward);
    let r = parse(&out);
    assert_eq!(
        (r.src, r.dst, r.flags, r.seq),
        (a(VIP), a(CLIENT), RST, synack.seq + 1)
    );
    assert_eq!(s.table().len(), 0);
    assert_eq!(s.syn_proxy().events[Event::ServerRefused as usize], 1);
}

#[test]
fn a_lost_ack_is_sent_again_when_the_realserver_repeats_its_syn_ack() {
    let mut s = shard(PROXIED);
    open(&mut s, b"");
    let again = tcp_full(
        a(RS),
        a(CLIENT),
        SISN,
        ISN + 1,
        SYN | ACK,
        65160,
        &syn_opts(1460, Some((TSS + 5, TSC + 1)), Some(9)),
        b"",
    );
    let (v, out) = run(&mut s, &again, None);
    assert_eq!(v, Verdict::Forward);
    let o = parse(&out);
    assert_eq!((o.src, o.dst, o.flags), (a(CLIENT), a(RS), ACK));
    assert_eq!((o.seq, o.ack), (ISN + 1, SISN + 1));
}

#[test]
fn off_means_off_and_auto_waits_for_pressure() {
    let off = PROXIED.replace("syn_proxy = \"on\"", "syn_proxy = \"off\"");
    let mut s = shard(&off);
    let syn = tcp_full(a(CLIENT), a(VIP), ISN, 0, SYN, 64240, &[], b"");
    let (v, out) = run(&mut s, &syn, None);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(parse(&out).dst, a(RS), "scheduled, not proxied");
    let auto = PROXIED.replace("syn_proxy = \"on\"", "");
    let mut s = shard(&auto);
    let (_, out) = run(&mut s, &syn, None);
    assert_eq!(parse(&out).dst, a(RS), "no pressure: not proxied");
}

#[test]
fn auto_turns_on_under_a_flood_and_the_flood_leaves_no_state() {
    let auto = PROXIED.replace("syn_proxy = \"on\"", "");
    let mut s = shard(&auto);
    // Spoofed SYNs: half-open entries pile up to 1024, then the proxy takes over at once.
    for i in 0..2000u32 {
        let src = SocketAddrV4::new(Ipv4Addr::from(0x0b00_0000 + i), 1024 + i as u16);
        run(
            &mut s,
            &tcp_full(src, a(VIP), i, 0, SYN, 1000, &[], b""),
            None,
        );
    }
    assert_eq!(s.table().len(), 1024);
    assert_eq!(
        s.syn_proxy().events[Event::CookieSent as usize],
        2000 - 1024
    );
    s.set_now(1);
    for i in 0..2000u32 {
        let src = SocketAddrV4::new(Ipv4Addr::from(0x0c00_0000 + i), 1024 + i as u16);
        let (v, out) = run(
            &mut s,
            &tcp_full(src, a(VIP), i, 0, SYN, 1000, &[], b""),
            None,
        );
        assert_eq!(v, Verdict::Forward);
        assert_eq!(parse(&out).flags, SYN | ACK, "answered by the proxy");
    }
    assert_eq!(s.table().len(), 1024, "the second wave left nothing");
    // A real client still gets through.
    let synack = handshake_syn(&mut s);
    let ack = cookie_ack(&synack);
    assert_eq!(run(&mut s, &ack, None).0, Verdict::Forward);
    assert_eq!(s.table().len(), 1025);
}

/// Spoofed SYNs from `n` sources from `base` on: how many the proxy answered (the others
/// dropped for `overload`).
fn spoofed(s: &mut Shard, base: u32, n: u32) -> u32 {
    let mut answered = 0;
    for i in 0..n {
        let src = SocketAddrV4::new(Ipv4Addr::from(0x0b00_0000 + base + i), 1024);
        let (v, out) = run(s, &tcp_full(src, a(VIP), i, 0, SYN, 1000, &[], b""), None);
        if v == Verdict::Forward {
            assert_eq!(parse(&out).flags, SYN | ACK);
            answered += 1;
        }
    }
    answered
}

#[test]
fn a_queue_that_falls_behind_sheds_unknown_sources_and_answers_known_ones() {
    let mut s = shard(PROXIED);
    // A client completes a handshake with a cookie: it is known from then on.
    let synack = handshake_syn(&mut s);
    assert_eq!(run(&mut s, &cookie_ack(&synack), None).0, Verdict::Forward);
    // Not behind: every SYN is answered (1001 in this tick, the client's included).
    assert_eq!(spoofed(&mut s, 0, 1000), 1000);
    // Behind: unknown sources get half of what was answered, the rest is shed.
    s.behind();
    s.behind();
    s.set_now(1);
    assert_eq!(spoofed(&mut s, 10_000, 2000), 500);
    assert_eq!(s.counters().drops[DropReason::Overload as usize], 1500);
    // The known client is answered, on any port, however many unknown SYNs came before it.
    for port in 50_000..50_010 {
        let src = SocketAddrV4::new(*a(CLIENT).ip(), port);
        let (v, out) = run(
            &mut s,
            &tcp_full(src, a(VIP), ISN, 0, SYN, 1000, &[], b""),
            None,
        );
        assert_eq!(v, Verdict::Forward);
        assert_eq!(parse(&out).flags, SYN | ACK);
    }
    // Still behind: halved again, but never closed.
    for t in 2..20 {
        s.behind();
        s.behind();
        s.set_now(t);
    }
    assert_eq!(spoofed(&mut s, 20_000, 1000), 64);
    // Calm: the budget grows back, and after 2 s every SYN is answered again.
    s.set_now(20);
    assert!(spoofed(&mut s, 30_000, 1000) > 64);
    s.set_now(40);
    assert_eq!(spoofed(&mut s, 40_000, 5000), 5000);
}
