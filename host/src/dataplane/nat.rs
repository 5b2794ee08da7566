//! LVS-NAT rewrites with incremental checksums (RFC 1624).
//!
//! A transport checksum is either complete, or *partial* when the packet came with the
//! virtio-net `NEEDS_CSUM` flag (the kernel's `CHECKSUM_PARTIAL`): then the field holds only
//! the folded pseudo-header sum, so an address change adjusts it without complementing, and a
//! port change leaves it alone (the port is summed when the checksum is completed).
//!
//! Checksums are not verified: an incremental update keeps a wrong checksum wrong, and the
//! endpoint drops the packet as it would have without the director.

use crate::wire::checksum;
use crate::wire::checksum::PseudoAddr;
use crate::wire::ip_proto;
use crate::wire::{
    Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, L4Ports, TcpPacket, UdpPacket,
};
use std::net::{SocketAddrV4, SocketAddrV6};

/// State of the transport checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Csum {
    /// A complete checksum.
    Full,
    /// A partial (pseudo-header only) sum to be completed on transmit.
    Partial,
}

pub use crate::wire::Side;

/// Rewrites one endpoint (address and port) of a TCP or UDP packet in place. `pkt` is the
/// whole IPv4 packet (already validated), `ihl` its header length.
#[inline]
pub fn rewrite(pkt: &mut [u8], ihl: usize, proto: u8, side: Side, to: SocketAddrV4, csum: Csum) {
    let (head, l4) = pkt.split_at_mut(ihl);
    let mut ip = Ipv4Packet::new_unchecked(head);
    let old = match side {
        Side::Src => ip.rewrite_src_addr(*to.ip()),
        Side::Dst => ip.rewrite_dst_addr(*to.ip()),
    };
    rewrite_l4(l4, proto, side, (old, *to.ip()), to.port(), csum);
}

/// NAT66: [`rewrite`] for an IPv6 packet whose transport header starts at `l4` (after any
/// extension headers; IPv6 has no header checksum, only the transport's changes).
#[inline]
pub fn rewrite6(pkt: &mut [u8], l4: usize, proto: u8, side: Side, to: SocketAddrV6, csum: Csum) {
    let (head, rest) = pkt.split_at_mut(l4);
    let mut ip = Ipv6Packet::new_unchecked(head);
    let old = match side {
        Side::Src => ip.rewrite_src_addr(*to.ip()),
        Side::Dst => ip.rewrite_dst_addr(*to.ip()),
    };
    rewrite_l4(rest, proto, side, (old, *to.ip()), to.port(), csum);
}

/// The transport half of a rewrite: the checksum follows the pseudo-header's address change
/// `addr` (old, new), and the port on `side` becomes `port`.
#[inline]
fn rewrite_l4<A: PseudoAddr>(
    l4: &mut [u8],
    proto: u8,
    side: Side,
    addr: (A, A),
    port: u16,
    csum: Csum,
) {
    let partial = csum == Csum::Partial;
    match proto {
        ip_proto::TCP => {
            TcpPacket::new_unchecked(l4).translate(side, addr, port, partial);
        }
        ip_proto::UDP => {
            UdpPacket::new_unchecked(l4).translate(side, addr, port, partial);
        }
        _ => {}
    }
}

/// A complete checksum adjusted for an address and a port change (quoted headers).
#[inline]
fn adjust<A: PseudoAddr>(c: u16, old: A, new: A, old_port: u16, new_port: u16) -> u16 {
    let c = checksum::update_addr(c, old, new);
    checksum::update16(c, old_port, new_port)
}

/// The quoted transport header of an ICMP error (`il4`, as much as is quoted): the port on
/// `side` becomes `port`, and the quoted checksum, if the quote reaches it, follows the
/// address change `addr` (old, new) and the port's (an absent UDP checksum stays absent).
fn quoted_l4<A: PseudoAddr>(il4: &mut [u8], proto: u8, side: Side, addr: (A, A), port: u16) {
    let mut ports = L4Ports::new_unchecked(&mut il4[..]);
    let old_port = match side {
        Side::Src => {
            let p = ports.src_port();
            ports.set_src_port(port);
            p
        }
        Side::Dst => {
            let p = ports.dst_port();
            ports.set_dst_port(port);
            p
        }
    };
    let field = match proto {
        ip_proto::TCP => crate::wire::tcp::field::CHECKSUM,
        _ => crate::wire::udp::field::CHECKSUM,
    };
    if il4.len() >= field.end {
        let c = u16::from_be_bytes([il4[field.start], il4[field.start + 1]]);
        if !(proto == ip_proto::UDP && c == 0) {
            let n = adjust(c, addr.0, addr.1, old_port, port);
            il4[field].copy_from_slice(&n.to_be_bytes());
        }
    }
}

/// What an ICMP error quotes: the inner packet's protocol and endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Inner protocol (TCP or UDP).
    pub proto: u8,
    /// Inner source.
    pub src: SocketAddrV4,
    /// Inner destination.
    pub dst: SocketAddrV4,
}

/// Parses the packet an ICMP error quotes. `icmp` is the ICMP message (outer payload).
/// `None` unless it is an error quoting a complete IPv4 header and at least the ports of a
/// TCP or UDP header.
pub fn quoted(icmp: &[u8]) -> Option<Quoted> {
    let msg = Icmpv4Packet::new_checked(icmp).ok()?;
    if !msg.is_error() {
        return None;
    }
    let inner = Ipv4Packet::new_checked_quoted(msg.payload()).ok()?;
    let proto = inner.protocol();
    if proto != ip_proto::TCP && proto != ip_proto::UDP {
        return None;
    }
    let ports = L4Ports::new_checked(inner.payload()).ok()?;
    Some(Quoted {
        proto,
        src: SocketAddrV4::new(inner.src_addr(), ports.src_port()),
        dst: SocketAddrV4::new(inner.dst_addr(), ports.dst_port()),
    })
}

/// The transport bytes an ICMP error quotes (as many as it quotes), mutable. `icmp` is the
/// ICMP message; `None` if it quotes no complete IPv4 header.
pub fn quoted_l4_mut(icmp: &mut [u8]) -> Option<&mut [u8]> {
    let inner = icmp.get_mut(crate::wire::icmpv4::HEADER_LEN..)?;
    let ihl = Ipv4Packet::new_checked_quoted(&inner[..])
        .ok()?
        .header_len();
    inner.get_mut(ihl..)
}

/// Translates an ICMP error about a tracked flow. `side` names the endpoint of the *quoted*
/// packet to rewrite to `to`; the outer address on the opposite side of the outer header
/// (outer destination for a quoted source, outer source for a quoted destination) becomes
/// `to`'s address too, as IPVS does. The inner IP checksum and, when quoted, the inner
/// transport checksum are updated incrementally; the ICMP checksum is recomputed.
pub fn translate_icmp(pkt: &mut [u8], ihl: usize, side: Side, to: SocketAddrV4) {
    let (head, icmp) = pkt.split_at_mut(ihl);
    let mut outer = Ipv4Packet::new_unchecked(head);
    match side {
        Side::Src => {
            outer.rewrite_dst_addr(*to.ip());
        }
        Side::Dst => {
            outer.rewrite_src_addr(*to.ip());
        }
    }
    {
        let inner_bytes = &mut icmp[crate::wire::icmpv4::HEADER_LEN..];
        let inner_len = Ipv4Packet::new_unchecked(&inner_bytes[..]).header_len();
        let (ih, il4) = inner_bytes.split_at_mut(inner_len);
        let mut inner = Ipv4Packet::new_unchecked(ih);
        let proto = inner.protocol();
        let old_addr = match side {
            Side::Src => inner.rewrite_src_addr(*to.ip()),
            Side::Dst => inner.rewrite_dst_addr(*to.ip()),
        };
        quoted_l4(il4, proto, side, (old_addr, *to.ip()), to.port());
    }
    let mut msg = Icmpv4Packet::new_unchecked(icmp);
    msg.fill_checksum();
}

/// Turns an ICMP echo request into its reply in place (for pings to a virtual address).
pub fn echo_reply(pkt: &mut [u8], ihl: usize) {
    let (head, icmp) = pkt.split_at_mut(ihl);
    let mut ip = Ipv4Packet::new_unchecked(head);
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    // Swapping the addresses leaves the header sum unchanged.
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    let old_ttl = u16::from_be_bytes([ip.ttl(), ip.protocol()]);
    ip.set_ttl(64);
    let new_ttl = u16::from_be_bytes([64, ip.protocol()]);
    let c = ip.checksum();
    ip.set_checksum(checksum::update16(c, old_ttl, new_ttl));
    let mut msg = Icmpv4Packet::new_unchecked(icmp);
    msg.set_msg_type(crate::wire::icmpv4::msg_type::ECHO_REPLY);
    // Summed again, not updated: an echo whose other words are all 0 (identifier, sequence
    // and data) must answer 0xffff, and the incremental update gives 0x0000 there, which
    // receivers refuse (found by the shard fuzz target). Echoes are rare; the sum is cheap.
    msg.fill_checksum();
}
/// What an ICMPv6 error quotes (see [`quoted6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted6 {
    /// Inner protocol (TCP or UDP).
    pub proto: u8,
    /// Inner source.
    pub src: SocketAddrV6,
    /// Inner destination.
    pub dst: SocketAddrV6,
    /// Offset of the quoted transport header in the ICMPv6 message.
    pub l4: usize,
}

/// Parses the packet an ICMPv6 error quotes (`icmp`: the ICMPv6 message). `None` unless it
/// is an error quoting a whole IPv6 header, its extension headers (walked by the wire
/// layer's rules) and at least the ports of a TCP or UDP header of a first fragment.
pub fn quoted6(icmp: &[u8]) -> Option<Quoted6> {
    let msg = Icmpv6Packet::new_checked(icmp).ok()?;
    if !msg.is_error() {
        return None;
    }
    let inner = Ipv6Packet::new_checked_quoted(msg.payload()).ok()?;
    let ul = inner.upper_layer().ok()?;
    if ul.fragment.is_some_and(|f| f.offset != 0)
        || (ul.protocol != ip_proto::TCP && ul.protocol != ip_proto::UDP)
    {
        return None;
    }
    let ports = L4Ports::new_checked(msg.payload().get(ul.offset..)?).ok()?;
    Some(Quoted6 {
        proto: ul.protocol,
        src: SocketAddrV6::new(inner.src_addr(), ports.src_port(), 0, 0),
        dst: SocketAddrV6::new(inner.dst_addr(), ports.dst_port(), 0, 0),
        l4: crate::wire::icmpv6::HEADER_LEN + ul.offset,
    })
}

/// [`translate_icmp`] for ICMPv6: `pkt` is the whole IPv6 packet, `at` the offset of its
/// ICMPv6 message, `q` what [`quoted6`] read of it. The quoted endpoint on `side` becomes
/// `to`, the outer address opposite becomes `to`'s address, the quoted transport checksum
/// (when quoted) follows, and the ICMPv6 checksum is computed anew over the new
/// pseudo-header.
pub fn translate_icmp6(pkt: &mut [u8], at: usize, q: &Quoted6, side: Side, to: SocketAddrV6) {
    let (head, icmp) = pkt.split_at_mut(at);
    let mut outer = Ipv6Packet::new_unchecked(&mut head[..]);
    match side {
        Side::Src => outer.rewrite_dst_addr(*to.ip()),
        Side::Dst => outer.rewrite_src_addr(*to.ip()),
    };
    let (src, dst) = (outer.src_addr(), outer.dst_addr());
    {
        let inner_bytes = &mut icmp[crate::wire::icmpv6::HEADER_LEN..];
        let mut inner = Ipv6Packet::new_unchecked(&mut inner_bytes[..]);
        let old_addr = match side {
            Side::Src => inner.rewrite_src_addr(*to.ip()),
            Side::Dst => inner.rewrite_dst_addr(*to.ip()),
        };
        quoted_l4(
            &mut icmp[q.l4..],
            q.proto,
            side,
            (old_addr, *to.ip()),
            to.port(),
        );
    }
    Icmpv6Packet::new_unchecked(icmp).fill_checksum(src, dst);
}

/// Turns an ICMPv6 echo request (at offset `at` of `pkt`) into its reply in place (for
/// pings to a virtual address).
pub fn echo_reply6(pkt: &mut [u8], at: usize) {
    let (head, icmp) = pkt.split_at_mut(at);
    let mut ip = Ipv6Packet::new_unchecked(&mut head[..]);
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_hop_limit(64);
    let mut msg = Icmpv6Packet::new_unchecked(icmp);
    msg.set_msg_type(crate::wire::icmpv6::msg_type::ECHO_REPLY);
    msg.fill_checksum(dst, src);
}
