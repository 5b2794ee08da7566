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
use crate::wire::ip_proto;
use crate::wire::{Icmpv4Packet, Ipv4Packet, L4Ports, TcpPacket, UdpPacket};
use std::net::{Ipv4Addr, SocketAddrV4};

/// State of the transport checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Csum {
    /// A complete checksum.
    Full,
    /// A partial (pseudo-header only) sum to be completed on transmit.
    Partial,
}

/// Which endpoint of the packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source (replies: RIP:rport → VIP:vport).
    Src,
    /// The destination (requests: VIP:vport → RIP:rport).
    Dst,
}

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
    let partial = csum == Csum::Partial;
    match proto {
        ip_proto::TCP => {
            let mut t = TcpPacket::new_unchecked(l4);
            t.update_checksum_for_addr(old, *to.ip(), partial);
            match side {
                Side::Src => t.rewrite_src_port(to.port(), partial),
                Side::Dst => t.rewrite_dst_port(to.port(), partial),
            };
        }
        ip_proto::UDP => {
            let mut u = UdpPacket::new_unchecked(l4);
            u.update_checksum_for_addr(old, *to.ip(), partial);
            match side {
                Side::Src => u.rewrite_src_port(to.port(), partial),
                Side::Dst => u.rewrite_dst_port(to.port(), partial),
            };
        }
        _ => {}
    }
}

/// A complete checksum adjusted for an address and a port change (quoted headers).
#[inline]
fn adjust(c: u16, old: Ipv4Addr, new: Ipv4Addr, old_port: u16, new_port: u16) -> u16 {
    let c = checksum::update32(c, old.octets(), new.octets());
    checksum::update16(c, old_port, new_port)
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
        let mut ports = L4Ports::new_unchecked(&mut il4[..]);
        let old_port = match side {
            Side::Src => {
                let p = ports.src_port();
                ports.set_src_port(to.port());
                p
            }
            Side::Dst => {
                let p = ports.dst_port();
                ports.set_dst_port(to.port());
                p
            }
        };
        // The quoted transport checksum, if the quote reaches it.
        let field = match proto {
            ip_proto::TCP => crate::wire::tcp::field::CHECKSUM,
            _ => crate::wire::udp::field::CHECKSUM,
        };
        if il4.len() >= field.end {
            let c = u16::from_be_bytes([il4[field.start], il4[field.start + 1]]);
            if !(proto == ip_proto::UDP && c == 0) {
                let n = adjust(c, old_addr, *to.ip(), old_port, to.port());
                il4[field.clone()].copy_from_slice(&n.to_be_bytes());
            }
        }
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
