//! Packet builders for tests, benchmarks, fixtures and replay: well-formed IPv4 and IPv6
//! packets with correct checksums, built with the wire layer's `Repr`s.

use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::{ip_proto, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

fn ip(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize) -> (Vec<u8>, Ipv4Repr) {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        ttl: 63,
        payload_len,
        ident: 0x1234,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
    (buf, repr)
}

/// The TCP header of the builders: ports, `flags`, seq 1000, ack 2000 with ACK.
fn tcp_repr(ports: (u16, u16), flags: u8, payload_len: usize) -> TcpRepr {
    TcpRepr {
        src_port: ports.0,
        dst_port: ports.1,
        seq_number: 1000,
        ack_number: if flags & crate::wire::tcp::flags::ACK != 0 {
            2000
        } else {
            0
        },
        flags,
        window_len: 64240,
        payload_len,
    }
}

/// A TCP segment `src → dst` with `flags` and `payload`.
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
    let t = tcp_repr((src.port(), dst.port()), flags, payload.len());
    let (mut buf, _) = ip(*src.ip(), *dst.ip(), ip_proto::TCP, t.buffer_len());
    let l4 = &mut buf[20..];
    l4[t.header_len()..].copy_from_slice(payload);
    t.emit(&mut TcpPacket::new_unchecked(l4), *src.ip(), *dst.ip());
    buf
}

/// A TCP segment with every header field chosen and `opts` (a whole number of 4-byte
/// words) between the header and the payload; complete checksums.
#[allow(clippy::too_many_arguments)]
pub fn tcp_full(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert!(
        opts.len().is_multiple_of(4) && opts.len() <= 40,
        "options: whole words, at most 40 bytes"
    );
    let hl = crate::wire::tcp::HEADER_LEN + opts.len();
    let (mut buf, _) = ip(*src.ip(), *dst.ip(), ip_proto::TCP, hl + payload.len());
    let l4 = &mut buf[20..];
    l4[crate::wire::tcp::HEADER_LEN..hl].copy_from_slice(opts);
    l4[hl..].copy_from_slice(payload);
    l4[crate::wire::tcp::field::DATA_OFF] = ((hl / 4) as u8) << 4;
    let mut t = TcpPacket::new_unchecked(l4);
    t.set_src_port(src.port());
    t.set_dst_port(dst.port());
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_flags(flags);
    t.set_window_len(window);
    t.set_urgent_at(0);
    t.fill_checksum(*src.ip(), *dst.ip());
    buf
}

/// A UDP datagram `src → dst`.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let u = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: payload.len(),
    };
    let (mut buf, _) = ip(*src.ip(), *dst.ip(), ip_proto::UDP, u.buffer_len());
    let l4 = &mut buf[20..];
    l4[8..].copy_from_slice(payload);
    u.emit(&mut UdpPacket::new_unchecked(l4), *src.ip(), *dst.ip());
    buf
}

/// An ICMP error `src → dst` of `msg_type`/`code` quoting the first `quote_len` bytes of
/// `quoted` (as routers do: the IP header and at least 8 bytes).
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest: u32,
    quoted: &[u8],
    quote_len: usize,
) -> Vec<u8> {
    let q = &quoted[..quote_len.min(quoted.len())];
    let (mut buf, _) = ip(src, dst, ip_proto::ICMP, icmpv4::HEADER_LEN + q.len());
    let l4 = &mut buf[20..];
    l4[icmpv4::HEADER_LEN..].copy_from_slice(q);
    let mut m = Icmpv4Packet::new_unchecked(l4);
    m.set_msg_type(msg_type);
    m.set_code(code);
    m.set_rest_of_header(rest);
    m.fill_checksum();
    buf
}

/// An ICMP echo request or reply.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, ident: u16, seq: u16) -> Vec<u8> {
    let data = b"ringvs-ping";
    let (mut buf, _) = ip(src, dst, ip_proto::ICMP, icmpv4::HEADER_LEN + data.len());
    let l4 = &mut buf[20..];
    l4[icmpv4::HEADER_LEN..].copy_from_slice(data);
    let mut m = Icmpv4Packet::new_unchecked(l4);
    m.set_msg_type(if request {
        icmpv4::msg_type::ECHO_REQUEST
    } else {
        icmpv4::msg_type::ECHO_REPLY
    });
    m.set_code(0);
    m.set_echo_ident(ident);
    m.set_echo_seq(seq);
    m.fill_checksum();
    buf
}

/// Sets the TTL and fixes the header checksum (to match a packet the kernel forwarded).
pub fn with_ttl(mut pkt: Vec<u8>, ttl: u8) -> Vec<u8> {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    ip.set_ttl(ttl);
    ip.fill_checksum();
    pkt
}

/// Replaces a TCP or UDP checksum with the partial (pseudo-header only) sum a packet
/// carries with virtio-net `NEEDS_CSUM`.
pub fn partial(mut pkt: Vec<u8>) -> Vec<u8> {
    let ip = Ipv4Packet::new_unchecked(&pkt[..]);
    let (src, dst, proto, ihl) = (ip.src_addr(), ip.dst_addr(), ip.protocol(), ip.header_len());
    let len = (pkt.len() - ihl) as u32;
    let sum = crate::wire::checksum::pseudo_header_v4(src, dst, proto, len);
    let off = ihl + if proto == ip_proto::TCP { 16 } else { 6 };
    pkt[off..off + 2].copy_from_slice(&sum.to_be_bytes());
    pkt
}

/// The two services the integration tests address: `web`, TCP 10.77.100.100:80 (wlc) on
/// 10.77.1.1:8080 and 10.77.1.2:8080, and `dns`, UDP 10.77.100.100:53 (rr) on 10.77.1.1:5353.
pub const TWO_SERVICES: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
proto = "tcp"
scheduler = "wlc"
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"

[[service]]
name = "dns"
vip = "10.77.100.100:53"
proto = "udp"
scheduler = "rr"
[[service.server]]
addr = "10.77.1.1:5353"
"#;

/// An IPv6 packet `src → dst` with upper layer `next` and `payload_len` bytes of room
/// after the fixed header (hop limit 63).
fn ip6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload_len: usize) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: next,
        hop_limit: 63,
        payload_len,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
    buf
}

/// A TCP segment over IPv6 `src → dst` with `flags` and `payload`.
pub fn tcp6(src: SocketAddrV6, dst: SocketAddrV6, flags: u8, payload: &[u8]) -> Vec<u8> {
    let t = tcp_repr((src.port(), dst.port()), flags, payload.len());
    let mut buf = ip6(*src.ip(), *dst.ip(), ip_proto::TCP, t.buffer_len());
    let l4 = &mut buf[ipv6::HEADER_LEN..];
    l4[t.header_len()..].copy_from_slice(payload);
    t.emit(&mut TcpPacket::new_unchecked(l4), *src.ip(), *dst.ip());
    buf
}

/// A UDP datagram over IPv6.
pub fn udp6(src: SocketAddrV6, dst: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let u = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: payload.len(),
    };
    let mut buf = ip6(*src.ip(), *dst.ip(), ip_proto::UDP, u.buffer_len());
    let l4 = &mut buf[ipv6::HEADER_LEN..];
    l4[8..].copy_from_slice(payload);
    u.emit(&mut UdpPacket::new_unchecked(l4), *src.ip(), *dst.ip());
    buf
}

/// An ICMPv6 message `src → dst` of `msg_type`/`code` with `rest` (the MTU of a packet too
/// big) and `body` (the quote of an error, the data of an echo).
pub fn icmp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg_type: u8,
    code: u8,
    rest: u32,
    body: &[u8],
) -> Vec<u8> {
    let mut buf = ip6(src, dst, ip_proto::ICMPV6, icmpv6::HEADER_LEN + body.len());
    let l4 = &mut buf[ipv6::HEADER_LEN..];
    l4[icmpv6::HEADER_LEN..].copy_from_slice(body);
    let mut m = Icmpv6Packet::new_unchecked(l4);
    m.set_msg_type(msg_type);
    m.set_code(code);
    m.set_rest_of_header(rest);
    m.fill_checksum(src, dst);
    buf
}

/// `packet` with extension header `ext` (whose first byte, its next header, is filled in)
/// inserted after the fixed header.
pub fn with_ext6(packet: &[u8], kind: u8, ext: &[u8]) -> Vec<u8> {
    let mut out = packet[..ipv6::HEADER_LEN].to_vec();
    let mut e = ext.to_vec();
    e[0] = packet[ipv6::field::NEXT_HEADER];
    out.extend_from_slice(&e);
    out.extend_from_slice(&packet[ipv6::HEADER_LEN..]);
    let mut p = Ipv6Packet::new_unchecked(&mut out[..]);
    p.set_next_header(kind);
    let len = p.payload_len() + ext.len() as u16;
    p.set_payload_len(len);
    out
}

/// xorshift64* (Vigna): deterministic, no dependencies, good enough to spread test and
/// benchmark inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for tests (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index in `0..n` (0 when `n` is 0), for picking from a slice.
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// `datagram` (an IPv4 packet without options) cut into fragments of at most `mtu` bytes, as
/// a router or the sending host would (payload pieces a multiple of 8 bytes, `MF` on all but
/// the last, checksums filled).
pub fn fragments(datagram: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let ip = Ipv4Packet::new_unchecked(datagram);
    let hl = ip.header_len();
    let payload = &datagram[hl..usize::from(ip.total_len())];
    let step = (mtu - hl) / 8 * 8;
    payload
        .chunks(step)
        .enumerate()
        .map(|(i, piece)| {
            let mut f = datagram[..hl].to_vec();
            f.extend_from_slice(piece);
            let last = (i + 1) * step >= payload.len();
            let mut p = Ipv4Packet::new_unchecked(&mut f[..]);
            p.set_total_len((hl + piece.len()) as u16);
            p.set_flags_and_frag_offset(false, !last, (i * step) as u16);
            p.fill_checksum();
            f
        })
        .collect()
}

/// A UDP port free on 127.0.0.1 a moment ago (for tests that start sync peers).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
