//! Borrowed, zero-copy packet views.
//!
//! Each header type is a struct wrapping a buffer (`T: AsRef<[u8]>`), in the manner of
//! smoltcp's `wire`: [`Ipv4Packet::new_checked`] (and its siblings) validate the lengths once,
//! after which no accessor can panic, whatever the bytes and whatever the setters wrote since.
//! Field offsets are public constants in each module's `field` submodule. Setters exist when
//! the buffer is also `AsMut<[u8]>`. A separate plain `Repr` type describes a header for
//! building packets (`parse` / `emit`).
//!
//! Checksums follow RFC 1071 (full computation) and RFC 1624 (incremental update), see
//! [`checksum`]. The rewriters used by LVS-NAT (`rewrite_*`) update checksums incrementally,
//! including transport checksums that are *partial* (virtio-net `NEEDS_CSUM`: the field holds
//! the pseudo-header sum only).
//!
//! This layer never allocates, never panics on input that passed a checked constructor, and
//! knows nothing of connections.

#![deny(missing_docs)]

pub mod checksum;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ports;
pub mod tcp;
pub mod tcpopt;
pub mod udp;
pub mod vnet;

pub use checksum::PseudoAddr;
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use ports::L4Ports;
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// IP protocol numbers (the IPv4 `protocol` field, the IPv6 `next header`).
pub mod ip_proto {
    /// Internet Control Message Protocol.
    pub const ICMP: u8 = 1;
    /// IP in IP encapsulation (LVS-TUN).
    pub const IPIP: u8 = 4;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// IPv6 in IP (IPv6-in-IPv6 for LVS-TUN over IPv6).
    pub const IPV6: u8 = 41;
    /// Internet Control Message Protocol for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// The unit error of the wire layer: the bytes are not a well-formed header of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed packet")
    }
}

impl std::error::Error for Error {}

/// Result of the wire layer.
pub type Result<T> = core::result::Result<T, Error>;

/// Which endpoint of a packet (address and port) a translation rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source (replies: RIP:rport → VIP:vport).
    Src,
    /// The destination (requests: VIP:vport → RIP:rport).
    Dst,
}

/// Big-endian reads and writes at the fixed offsets of the `field` modules.
///
/// The slices are indexed with bounds checks; callers guarantee (through `check_len`) that
/// the offsets are in range.
mod be {
    use core::ops::Range;

    #[inline]
    pub(super) fn get16(b: &[u8], f: Range<usize>) -> u16 {
        u16::from_be_bytes([b[f.start], b[f.start + 1]])
    }

    #[inline]
    pub(super) fn get32(b: &[u8], f: Range<usize>) -> u32 {
        let i = f.start;
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    #[inline]
    pub(super) fn get_array4(b: &[u8], f: Range<usize>) -> [u8; 4] {
        let i = f.start;
        [b[i], b[i + 1], b[i + 2], b[i + 3]]
    }

    #[inline]
    pub(super) fn set16(b: &mut [u8], f: Range<usize>, v: u16) {
        let [x, y] = v.to_be_bytes();
        b[f.start] = x;
        b[f.start + 1] = y;
    }

    #[inline]
    pub(super) fn set32(b: &mut [u8], f: Range<usize>, v: u32) {
        set_array4(b, f, v.to_be_bytes());
    }

    #[inline]
    pub(super) fn set_array4(b: &mut [u8], f: Range<usize>, v: [u8; 4]) {
        let i = f.start;
        b[i] = v[0];
        b[i + 1] = v[1];
        b[i + 2] = v[2];
        b[i + 3] = v[3];
    }
}

#[cfg(test)]
mod test_util;

#[cfg(test)]
mod tests {
    //! A no-panic sweep: random byte strings through every checked constructor, then every
    //! accessor, then every setter (with random values) followed by every accessor again.

    use super::test_util::Rng;
    use super::*;
    use core::hint::black_box;
    use core::net::{Ipv4Addr, Ipv6Addr};

    /// `translate` (one checksum update) leaves exactly the bytes the per-field rewrites
    /// leave (address update, then port rewrite), for TCP and UDP, both families, both
    /// sides, complete and partial checksums, and the checksum values 0 and `0xFFFF`.
    #[test]
    fn translate_equals_the_rewrites_one_by_one() {
        fn both<A: PseudoAddr>(rng: &mut Rng, round: u32, addr: (A, A)) {
            let mut a = [0u8; 20];
            rng.fill(&mut a);
            match round % 4 {
                0 => a[16..18].copy_from_slice(&[0, 0]),
                1 => a[16..18].copy_from_slice(&[0xFF, 0xFF]),
                _ => {}
            }
            let (side, partial) = (
                if round & 4 == 0 { Side::Src } else { Side::Dst },
                round & 8 != 0,
            );
            let port = rng.next_u64() as u16;
            // TCP: the checksum at 16..18.
            let (mut x, mut y) = (a, a);
            let mut t = TcpPacket::new_unchecked(&mut x[..]);
            t.update_checksum_for_addr(addr.0, addr.1, partial);
            let old = match side {
                Side::Src => t.rewrite_src_port(port, partial),
                Side::Dst => t.rewrite_dst_port(port, partial),
            };
            let got = TcpPacket::new_unchecked(&mut y[..]).translate(side, addr, port, partial);
            assert_eq!((got, y), (old, x), "TCP round {round}");
            // UDP: the checksum at 6..8, where 0 means none (and stays so).
            let mut u8s = [0u8; 8];
            u8s.copy_from_slice(&a[10..18]);
            match round % 4 {
                0 => u8s[6..8].copy_from_slice(&[0, 0]),
                1 => u8s[6..8].copy_from_slice(&[0xFF, 0xFF]),
                _ => {}
            }
            let (mut x, mut y) = (u8s, u8s);
            let mut u = UdpPacket::new_unchecked(&mut x[..]);
            u.update_checksum_for_addr(addr.0, addr.1, partial);
            let old = match side {
                Side::Src => u.rewrite_src_port(port, partial),
                Side::Dst => u.rewrite_dst_port(port, partial),
            };
            let got = UdpPacket::new_unchecked(&mut y[..]).translate(side, addr, port, partial);
            assert_eq!((got, y), (old, x), "UDP round {round}");
        }
        // Every checksum value once, for one header of each: some new sums are zero (UDP
        // then sends 0xFFFF) and some fields are the two zeros.
        let addr = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 1, 2));
        for c in 0..=u16::MAX {
            let mut h = [0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 0];
            h[6..8].copy_from_slice(&c.to_be_bytes());
            let (mut x, mut y) = (h, h);
            let mut u = UdpPacket::new_unchecked(&mut x[..]);
            u.update_checksum_for_addr(addr.0, addr.1, false);
            u.rewrite_dst_port(8080, false);
            UdpPacket::new_unchecked(&mut y[..]).translate(Side::Dst, addr, 8080, false);
            assert_eq!(y, x, "UDP checksum {c:04x}");
        }
        let mut rng = Rng::new(0x7a7);
        for round in 0..20_000 {
            let (p, q) = (rng.next_u64(), rng.next_u64());
            let v4 = (Ipv4Addr::from(p as u32), Ipv4Addr::from(q as u32));
            both(&mut rng, round, v4);
            let v6 = (
                Ipv6Addr::from(u128::from(p) << 64 | u128::from(q)),
                Ipv6Addr::from(u128::from(q.rotate_left(9)) << 64 | u128::from(p)),
            );
            both(&mut rng, round, v6);
        }
    }

    fn read_ipv4<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) {
        black_box((
            p.version(),
            p.header_len(),
            p.dscp_ecn(),
            p.total_len(),
            p.ident(),
        ));
        black_box((
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
        ));
        black_box((
            p.ttl(),
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
        ));
        black_box((
            p.has_options(),
            p.options(),
            p.verify_checksum(),
            p.payload(),
        ));
        let _ = black_box(Ipv4Repr::parse(p));
    }

    fn write_ipv4(p: &mut Ipv4Packet<&mut [u8]>, rng: &mut Rng) {
        let r = rng.next_u64();
        let a = Ipv4Addr::from(r as u32);
        match r % 22 {
            0 => p.set_version((r >> 32) as u8),
            1 => p.set_header_len((r >> 32) as usize % 128),
            2 => p.set_dscp_ecn((r >> 32) as u8),
            3 => p.set_total_len((r >> 32) as u16),
            4 => p.set_ident((r >> 32) as u16),
            5 => p.set_flags_and_frag_offset(r & 1 << 40 != 0, r & 1 << 41 != 0, r as u16),
            6 => p.set_dont_frag(r & 1 << 40 != 0),
            7 => p.set_more_frags(r & 1 << 40 != 0),
            8 => p.set_frag_offset((r >> 32) as u16),
            9 => p.set_ttl((r >> 32) as u8),
            10 => p.set_protocol((r >> 32) as u8),
            11 => p.set_checksum((r >> 32) as u16),
            12 => p.set_src_addr(a),
            13 => p.set_dst_addr(a),
            14 => p.fill_checksum(),
            15 => drop(p.rewrite_src_addr(a)),
            16 => drop(p.rewrite_dst_addr(a)),
            17 => p.payload_mut().fill(0xA5),
            18 => {
                let (mut h, l4) = p.split_mut();
                h.set_ttl(1);
                read_ipv4(&h);
                l4.fill(0x5A);
            }
            _ => {
                let repr = Ipv4Repr {
                    src_addr: a,
                    dst_addr: a,
                    protocol: r as u8,
                    ttl: 64,
                    payload_len: (r >> 40) as usize % 100,
                    ident: 7,
                    dont_frag: r & 1 != 0,
                    dscp_ecn: 0,
                };
                repr.emit(p);
            }
        }
    }

    fn read_tcp<T: AsRef<[u8]>>(p: &TcpPacket<T>, a: Ipv4Addr, b: Ipv4Addr) {
        black_box((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()));
        black_box((
            p.header_len(),
            p.flags(),
            p.fin(),
            p.syn(),
            p.rst(),
            p.psh(),
            p.ack(),
        ));
        black_box((
            p.urg(),
            p.ece(),
            p.cwr(),
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
        ));
        black_box((p.options(), p.payload(), p.verify_checksum(a, b)));
        let _ = black_box(TcpRepr::parse(p));
    }

    fn write_tcp(p: &mut TcpPacket<&mut [u8]>, rng: &mut Rng) {
        let r = rng.next_u64();
        let (v16, v32, a) = ((r >> 32) as u16, (r >> 16) as u32, Ipv4Addr::from(r as u32));
        let partial = r & 1 << 63 != 0;
        match r % 16 {
            0 => p.set_src_port(v16),
            1 => p.set_dst_port(v16),
            2 => p.set_seq_number(v32),
            3 => p.set_ack_number(v32),
            4 => p.set_header_len(usize::from(v16) % 128),
            5 => p.set_flags(r as u8),
            6 => p.set_window_len(v16),
            7 => p.set_checksum(v16),
            8 => p.set_urgent_at(v16),
            9 => p.payload_mut().fill(0xA5),
            10 => p.fill_checksum(a, a),
            11 => drop(p.rewrite_src_port(v16, partial)),
            12 => drop(p.rewrite_dst_port(v16, partial)),
            13 => p.update_checksum_for_addr(a, Ipv4Addr::BROADCAST, partial),
            _ => {
                let repr = TcpRepr {
                    src_port: v16,
                    dst_port: 1,
                    seq_number: v32,
                    ack_number: 0,
                    flags: r as u8,
                    window_len: 0,
                    payload_len: 3,
                };
                repr.emit(p, a, a);
            }
        }
    }

    fn read_udp<T: AsRef<[u8]>>(p: &UdpPacket<T>, a: Ipv4Addr, b: Ipv4Addr) {
        black_box((
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.is_empty(),
            p.checksum(),
        ));
        black_box((p.payload(), p.verify_checksum(a, b)));
        let _ = black_box(UdpRepr::parse(p));
    }

    fn write_udp(p: &mut UdpPacket<&mut [u8]>, rng: &mut Rng) {
        let r = rng.next_u64();
        let (v16, a) = ((r >> 32) as u16, Ipv4Addr::from(r as u32));
        let partial = r & 1 << 63 != 0;
        match r % 10 {
            0 => p.set_src_port(v16),
            1 => p.set_dst_port(v16),
            2 => p.set_len(v16),
            3 => p.set_checksum(v16),
            4 => p.payload_mut().fill(0xA5),
            5 => p.fill_checksum(a, a),
            6 => drop(p.rewrite_src_port(v16, partial)),
            7 => drop(p.rewrite_dst_port(v16, partial)),
            8 => p.update_checksum_for_addr(a, Ipv4Addr::LOCALHOST, partial),
            _ => {
                let repr = UdpRepr {
                    src_port: v16,
                    dst_port: 53,
                    payload_len: usize::from(v16) % 100,
                };
                repr.emit(p, a, a);
            }
        }
    }

    fn read_icmp<T: AsRef<[u8]>>(p: &Icmpv4Packet<T>) {
        black_box((p.msg_type(), p.code(), p.checksum(), p.rest_of_header()));
        black_box((p.next_hop_mtu(), p.echo_ident(), p.echo_seq(), p.is_error()));
        black_box((p.payload(), p.verify_checksum()));
    }

    fn write_icmp(p: &mut Icmpv4Packet<&mut [u8]>, rng: &mut Rng) {
        let r = rng.next_u64();
        let v16 = (r >> 32) as u16;
        match r % 9 {
            0 => p.set_msg_type(r as u8),
            1 => p.set_code(r as u8),
            2 => p.set_checksum(v16),
            3 => p.set_rest_of_header(r as u32),
            4 => p.set_next_hop_mtu(v16),
            5 => p.set_echo_ident(v16),
            6 => p.set_echo_seq(v16),
            7 => p.payload_mut().fill(0xA5),
            _ => p.fill_checksum(),
        }
    }

    fn read_icmp6<T: AsRef<[u8]>>(p: &Icmpv6Packet<T>, a: Ipv6Addr, b: Ipv6Addr) {
        black_box((p.msg_type(), p.code(), p.checksum(), p.rest_of_header()));
        black_box((
            p.mtu(),
            p.pointer(),
            p.echo_ident(),
            p.echo_seq(),
            p.is_error(),
        ));
        black_box((
            p.payload(),
            p.verify_checksum(a, b),
            p.nd_target(),
            p.nd_flags(),
        ));
        let _ = black_box((
            p.nd_link_addr(1),
            p.nd_link_addr(2),
            icmpv6::NdRepr::parse(p),
        ));
    }

    fn write_icmp6(p: &mut Icmpv6Packet<&mut [u8]>, rng: &mut Rng, a: Ipv6Addr) {
        let r = rng.next_u64();
        let v16 = (r >> 32) as u16;
        match r % 10 {
            0 => p.set_msg_type(if r & 1 << 40 != 0 { 135 } else { 136 }),
            1 => p.set_code(r as u8),
            2 => p.set_checksum(v16),
            3 => p.set_rest_of_header(r as u32),
            4 => p.set_echo_ident(v16),
            5 => p.set_echo_seq(v16),
            6 => p.payload_mut().fill(r as u8),
            7 => p.update_checksum_for_addr(a, Ipv6Addr::LOCALHOST),
            8 => {
                let target = Ipv6Addr::from(u128::from(r));
                let nd = if r & 1 << 41 != 0 {
                    icmpv6::NdRepr::Solicit {
                        target,
                        source_mac: (r & 1 << 42 != 0).then_some([1; 6]),
                    }
                } else {
                    icmpv6::NdRepr::Advert {
                        flags: r as u8,
                        target,
                        target_mac: (r & 1 << 42 != 0).then_some([2; 6]),
                    }
                };
                let _ = black_box(nd.emit(p.payload_mut(), a, a));
            }
            _ => p.fill_checksum(a, a),
        }
    }

    /// Makes a random string more likely to pass the IPv4 checks: version 4, an IHL and a
    /// total length near the buffer length.
    fn bias_ipv4(b: &mut [u8], rng: &mut Rng) {
        if b.len() >= 4 && rng.below(2) == 0 {
            b[0] = 0x40 | (5 + rng.below(11) as u8);
            let total = (b.len() as u64 + 4).saturating_sub(rng.below(12)) as u16;
            b[2..4].copy_from_slice(&total.to_be_bytes());
        }
    }

    /// Makes a random string more likely to pass the UDP check: a length field near the
    /// buffer length.
    fn bias_udp(b: &mut [u8], rng: &mut Rng) {
        if b.len() >= 6 && rng.below(4) == 0 {
            let len = (b.len() as u64 + 2).saturating_sub(rng.below(12)) as u16;
            b[4..6].copy_from_slice(&len.to_be_bytes());
        }
    }

    #[test]
    fn no_panic_sweep() {
        let mut rng = Rng::new(0xF022);
        let mut buf = [0u8; 80];
        let mut copy = [0u8; 80];
        let mut accepted = [0u32; 8];
        for _ in 0..300_000 {
            let len = rng.below(81) as usize;
            let b = &mut buf[..len];
            rng.fill(b);
            bias_ipv4(b, &mut rng);
            bias_udp(b, &mut rng);
            let b = &*b;
            let (x, y) = (
                Ipv4Addr::from(rng.next_u64() as u32),
                Ipv4Addr::new(10, 0, 0, 1),
            );
            let c = &mut copy[..len];

            for quoted in [false, true] {
                let checked = if quoted {
                    Ipv4Packet::new_checked_quoted(b)
                } else {
                    Ipv4Packet::new_checked(b)
                };
                if let Ok(p) = checked {
                    accepted[usize::from(quoted)] += 1;
                    read_ipv4(&p);
                    c.copy_from_slice(b);
                    let mut p = Ipv4Packet::new_unchecked(&mut *c);
                    for _ in 0..4 {
                        write_ipv4(&mut p, &mut rng);
                        read_ipv4(&p);
                    }
                }
            }
            if let Ok(p) = TcpPacket::new_checked(b) {
                accepted[2] += 1;
                read_tcp(&p, x, y);
                c.copy_from_slice(b);
                let mut p = TcpPacket::new_unchecked(&mut *c);
                for _ in 0..4 {
                    write_tcp(&mut p, &mut rng);
                    read_tcp(&p, x, y);
                }
            }
            if let Ok(p) = UdpPacket::new_checked(b) {
                accepted[3] += 1;
                read_udp(&p, x, y);
                c.copy_from_slice(b);
                let mut p = UdpPacket::new_unchecked(&mut *c);
                for _ in 0..4 {
                    write_udp(&mut p, &mut rng);
                    read_udp(&p, x, y);
                }
            }
            if let Ok(p) = Icmpv4Packet::new_checked(b) {
                accepted[4] += 1;
                read_icmp(&p);
                c.copy_from_slice(b);
                let mut p = Icmpv4Packet::new_unchecked(&mut *c);
                for _ in 0..4 {
                    write_icmp(&mut p, &mut rng);
                    read_icmp(&p);
                }
            }
            if let Ok(p) = L4Ports::new_checked(b) {
                accepted[5] += 1;
                black_box((p.src_port(), p.dst_port()));
                c.copy_from_slice(b);
                let mut p = L4Ports::new_unchecked(&mut *c);
                p.set_src_port(x.octets()[0].into());
                p.set_dst_port(1);
                black_box((p.src_port(), p.dst_port()));
            }
            if let Ok(p) = Icmpv6Packet::new_checked(b) {
                accepted[7] += 1;
                let a = Ipv6Addr::from(u128::from(rng.next_u64()) << 20);
                read_icmp6(&p, a, Ipv6Addr::LOCALHOST);
                c.copy_from_slice(b);
                let mut p = Icmpv6Packet::new_unchecked(&mut *c);
                for _ in 0..4 {
                    write_icmp6(&mut p, &mut rng, a);
                    read_icmp6(&p, a, Ipv6Addr::LOCALHOST);
                }
            }
            if let Ok(h) = vnet::VnetHdr::parse(b) {
                accepted[6] += 1;
                black_box((h.needs_csum(), h.is_gso()));
                let _ = black_box(h.emit(&mut copy[..len]));
            }
            black_box(checksum::data(b));
        }
        // Every constructor both accepted and refused a fair share (the bias works).
        for (i, n) in accepted.iter().enumerate() {
            assert!(*n > 1_000 && *n < 300_000, "constructor {i} accepted {n}");
        }
    }
}
