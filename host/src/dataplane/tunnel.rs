//! LVS-TUN (`forward = "tun"`): the client's packet goes to the realserver unchanged,
//! inside an IP header of the realserver's family (IPIP, RFC 2003; IPv6-in-IPv6, RFC 2473),
//! or inside IP + UDP + a GUE header (draft-ietf-intarea-gue, `tunnel = "gue"`), as IPVS's
//! `ip_vs_tunnel_xmit`/`ip_vs_tunnel_xmit_v6` send it. The realserver decapsulates it on a
//! device holding the virtual address (`tunl0`, `ip6tnl0`, fou) and answers the client
//! directly, so the director sees only the client's half of the connection.
//!
//! - Outer IPv4 header: from the director's tunnel source to the realserver, protocol 4
//!   (IPIP) or 17 (GUE), TTL 64, the inner packet's DS field and DF bit, an identification
//!   of the queue's own.
//! - Outer IPv6 header: from the director's IPv6 tunnel source, next header 41 (IPv6
//!   inside) or 17 (GUE), hop limit 64, the inner packet's traffic class, and the flow's
//!   hash as flow label (flow entropy for the realservers' and routers' ECMP and RSS).
//! - GUE: UDP to the realservers' GUE port from a source port in 49152–65535 taken from the
//!   flow's hash (flow entropy, so that a realserver's RSS spreads flows, as
//!   `udp_flow_src_port` does for IPVS), then GUE version 0 with no options and the inner
//!   protocol (4 or 41). Over IPv4 no UDP checksum (0: allowed, as fou's default); over
//!   IPv6 a complete one (RFC 8200 §8.1), summed over the inner packet as it will leave —
//!   a partial inner checksum counted as filled in (Linux's local checksum offload), so
//!   offload goes on working inside the tunnel.
//! - Too big: when the inner packet plus the tunnel's headers exceeds the tunnel's MTU, an
//!   IPv4 packet with DF gets ICMP fragmentation-needed with the MTU less the headers (its
//!   path MTU discovery then sends smaller segments), as `ip_vs_xmit.c` does; without DF the
//!   outer header leaves DF clear and the kernel fragments it. An IPv6 packet gets ICMPv6
//!   packet-too-big (never below 1280: a packet up to that size is sent and the outer one
//!   fragmented, RFC 8200 §5).
//! - Offload: a partial checksum moves with the packet (its start shifts by the headers).
//!   A segmentation-offload (GSO) super-packet cannot be tunnelled through TUN (virtio-net
//!   has no IPIP segmentation type): the director turns segmentation offload off on its
//!   device when it starts with tunnelled realservers, and such a packet is otherwise
//!   dropped (`reason="tunnel_gso"`).

use super::packet::Packet;
use crate::config::Tunnel;
use crate::wire::checksum;
use crate::wire::icmpv6::Icmpv6Packet;
use crate::wire::ipv4::{field, Ipv4Packet};
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::vnet::VnetHdr;
use std::net::IpAddr;

/// Bytes the outer IPv4 header adds (IPIP's whole overhead).
pub const OUTER: usize = 20;

/// Bytes the outer IPv6 header adds (IPv6-in-IPv6's whole overhead).
pub const OUTER6: usize = 40;

/// Bytes GUE adds after the outer IP header: UDP and the GUE header.
const GUE_LEN: usize = 8 + 4;

/// Bytes GUE adds in all over IPv4: IPv4, UDP, the GUE header.
pub const GUE_OUTER: usize = OUTER + GUE_LEN;

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// Bytes `tunnel` adds in front of a packet, over IPv6 (`v6`) or IPv4.
pub fn overhead(tunnel: Tunnel, v6: bool) -> usize {
    let ip = if v6 { OUTER6 } else { OUTER };
    match tunnel {
        Tunnel::Ipip => ip,
        Tunnel::Gue { .. } => ip + GUE_LEN,
    }
}

/// IP protocol number of IPv4-in-IP.
pub const IPPROTO_IPIP: u8 = 4;

/// IP protocol number of IPv6-in-IP.
pub const IPPROTO_IPV6: u8 = 41;

/// The smallest MTU of an IPv6 link (RFC 8200 §5): a packet-too-big never says less.
pub const IPV6_MIN_MTU: u16 = 1280;

/// The MTU of the path to the realservers when the kernel does not tell (Ethernet).
pub const DEFAULT_MTU: u16 = 1500;

/// Why a packet was not tunnelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// Too big with the outer header (an IPv4 packet with DF set, any IPv6 packet): `pkt`
    /// is now the ICMP fragmentation-needed or ICMPv6 packet-too-big for the client
    /// (forward it).
    TooBig,
    /// A segmentation-offload super-packet (see the module docs).
    Gso,
    /// No room in front of the packet, or not a complete IP header.
    NoRoom,
}

/// What an encapsulation needs besides the packet.
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    /// How.
    pub tunnel: Tunnel,
    /// The director's tunnel source (of the realserver's family).
    pub src: IpAddr,
    /// The realserver.
    pub rip: IpAddr,
    /// The path's MTU.
    pub mtu: u16,
    /// The outer IPv4 identification.
    pub ident: u16,
    /// The flow's hash (GUE's source port, the outer IPv6 flow label).
    pub entropy: u32,
}

/// Puts `pkt` (an IPv4 or IPv6 packet from a client) inside the tunnel's headers `src →
/// rip` (IPv4 or IPv6 outside, as `rip`), or — too big for `mtu` — turns it into the ICMP
/// error the client needs.
pub fn encapsulate(pkt: &mut Packet<'_>, o: &Outer) -> Result<(), NotSent> {
    let v6 = o.rip.is_ipv6();
    let extra = overhead(o.tunnel, v6);
    if pkt.vnet.as_ref().is_some_and(VnetHdr::is_gso) {
        return Err(NotSent::Gso);
    }
    // A partial checksum's start moves `extra` bytes in: it must still be a 16-bit offset
    // (the kernel never hands over one that is not; found by the shard fuzz target).
    let partial = pkt.vnet.filter(VnetHdr::needs_csum);
    if let Some(v) = partial {
        v.csum_start
            .checked_add(extra as u16)
            .ok_or(NotSent::NoRoom)?;
    }
    let len = pkt.len();
    // The inner packet's DS field, whether it may be fragmented, its protocol number.
    let (tos, df, inner_proto) = match pkt.data().first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(pkt.data()).map_err(|_| NotSent::NoRoom)?;
            (ip.dscp_ecn(), ip.dont_frag(), IPPROTO_IPIP)
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(pkt.data()).map_err(|_| NotSent::NoRoom)?;
            (ip.traffic_class(), true, IPPROTO_IPV6)
        }
        _ => return Err(NotSent::NoRoom),
    };
    let room = usize::from(o.mtu).saturating_sub(extra);
    if len > room && df {
        if inner_proto == IPPROTO_IPIP {
            frag_needed(pkt, room as u16)?;
            return Err(NotSent::TooBig);
        }
        // An IPv6 link carries 1280 bytes whatever the tunnel costs (RFC 8200 §5: the
        // kernel fragments the outer packet below that).
        if len > usize::from(IPV6_MIN_MTU) {
            packet_too_big(pkt, (room as u16).max(IPV6_MIN_MTU))?;
            return Err(NotSent::TooBig);
        }
    }
    let total = u16::try_from(len + extra).map_err(|_| NotSent::NoRoom)?;
    let ip = if v6 { OUTER6 } else { OUTER };
    // GUE over IPv6 needs the UDP checksum (RFC 8200 §8.1): the inner packet's sum, its
    // partial transport checksum taken as filled in (Linux's local checksum offload).
    let inner_sum = match (o.tunnel, v6) {
        (Tunnel::Gue { .. }, true) => Some(inner_sum(pkt.data(), partial)),
        _ => None,
    };
    let data = pkt.prepend(extra).ok_or(NotSent::NoRoom)?;
    if let Tunnel::Gue { port } = o.tunnel {
        let u = &mut data[ip..ip + GUE_LEN];
        let sport = 0xc000 | (o.entropy as u16 & 0x3fff);
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&port.to_be_bytes());
        u[4..6].copy_from_slice(&(total - ip as u16).to_be_bytes());
        u[6..8].fill(0); // no checksum over IPv4 (fou's default)
        u[8] = 0; // version 0, no control, no options
        u[9] = inner_proto;
        u[10..12].fill(0);
    }
    let proto = match o.tunnel {
        Tunnel::Ipip => inner_proto,
        Tunnel::Gue { .. } => IPPROTO_UDP,
    };
    match (o.src, o.rip) {
        (IpAddr::V6(src), IpAddr::V6(rip)) => {
            let mut h = Ipv6Packet::new_unchecked(&mut data[..]);
            h.set_version_tc_flow(6, tos, o.entropy & 0xf_ffff);
            h.set_payload_len(total - OUTER6 as u16);
            h.set_next_header(proto);
            h.set_hop_limit(64);
            h.set_src_addr(src);
            h.set_dst_addr(rip);
            if let Some(inner) = inner_sum {
                let udp_len = u32::from(total) - OUTER6 as u32;
                let sum = u32::from(checksum::pseudo_header_for(src, rip, IPPROTO_UDP, udp_len))
                    + checksum::sum(&data[OUTER6..OUTER6 + GUE_LEN])
                    + u32::from(inner);
                let c = match !checksum::fold(sum) {
                    0 => 0xffff,
                    c => c,
                };
                data[OUTER6 + 6..OUTER6 + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        (IpAddr::V4(src), IpAddr::V4(rip)) => {
            let h = &mut data[..OUTER];
            h[0] = 0x45;
            h[1] = tos;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&o.ident.to_be_bytes());
            h[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[10..12].fill(0);
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&rip.octets());
            let c = !checksum::fold(checksum::sum(h));
            h[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        }
        // The control plane sets a source of each tunnelled realserver's family.
        _ => return Err(NotSent::NoRoom),
    }
    // A partial checksum starts where it did, the headers further in.
    if let (Some(v), Some(p)) = (pkt.vnet.as_mut(), partial) {
        v.csum_start = p.csum_start + extra as u16;
    }
    Ok(())
}

/// The folded one's-complement sum of `inner` as it will leave: with a partial transport
/// checksum (`vnet`), the bytes in front of it plus what the transport part sums to once
/// its checksum is filled in — the complement of the pseudo-header sum its field holds.
fn inner_sum(inner: &[u8], vnet: Option<VnetHdr>) -> u16 {
    let Some(v) = vnet else {
        return checksum::fold(checksum::sum(inner));
    };
    let start = usize::from(v.csum_start).min(inner.len());
    let at = start + usize::from(v.csum_offset);
    let field = inner
        .get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    checksum::fold(checksum::sum(&inner[..start]) + u32::from(!field))
}

/// Rewrites `pkt` (an IPv4 packet too big for the tunnel) in place into ICMP destination
/// unreachable / fragmentation needed (RFC 1191) for its sender, from its destination,
/// quoting its IP header and the first 8 bytes after it, with next-hop MTU `mtu`.
pub fn frag_needed(pkt: &mut Packet<'_>, mtu: u16) -> Result<(), NotSent> {
    let (src, dst, ihl) = {
        let ip = Ipv4Packet::new_checked(pkt.data()).map_err(|_| NotSent::NoRoom)?;
        (ip.src_addr(), ip.dst_addr(), ip.header_len())
    };
    let quote = (ihl + 8).min(pkt.len());
    let out = 20 + 8 + quote;
    if pkt.len() < out {
        // Too big for the tunnel is far longer than this; refuse anything else.
        return Err(NotSent::NoRoom);
    }
    let data = pkt.data_mut();
    data.copy_within(..quote, 28);
    let ip = &mut data[..20];
    ip[0] = 0x45;
    ip[1] = 0xc0; // internetwork control, as Linux's ICMP errors
    ip[2..4].copy_from_slice(&(out as u16).to_be_bytes());
    ip[4..8].fill(0);
    ip[8] = 64;
    ip[9] = 1;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&dst.octets());
    ip[16..20].copy_from_slice(&src.octets());
    let c = !checksum::fold(checksum::sum(ip));
    ip[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut data[20..out];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 4; // fragmentation needed and DF set
    icmp[2..4].fill(0);
    icmp[4..6].fill(0);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    let c = !checksum::fold(checksum::sum(icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    pkt.resize(out).ok_or(NotSent::NoRoom)?;
    // A new packet: no offload metadata of the old one applies.
    pkt.vnet = pkt.vnet.map(|_| VnetHdr::default());
    Ok(())
}

/// Rewrites `pkt` (an IPv6 packet too big for the tunnel) in place into ICMPv6 packet too
/// big (RFC 4443 §3.2) for its sender, from its destination, quoting as much of it as fits
/// in the minimum MTU, with MTU `mtu`.
pub fn packet_too_big(pkt: &mut Packet<'_>, mtu: u16) -> Result<(), NotSent> {
    const HEAD: usize = OUTER6 + 8;
    let (src, dst) = {
        let ip = Ipv6Packet::new_checked(pkt.data()).map_err(|_| NotSent::NoRoom)?;
        (ip.src_addr(), ip.dst_addr())
    };
    let quote = pkt
        .len()
        .saturating_sub(HEAD)
        .min(usize::from(IPV6_MIN_MTU) - HEAD);
    let out = HEAD + quote;
    let data = pkt.data_mut();
    data.copy_within(..quote, HEAD);
    let mut ip = Ipv6Packet::new_unchecked(&mut data[..]);
    ip.set_version_tc_flow(6, 0, 0);
    ip.set_payload_len((out - OUTER6) as u16);
    ip.set_next_header(58);
    ip.set_hop_limit(64);
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut data[OUTER6..out]);
    icmp.set_msg_type(crate::wire::icmpv6::msg_type::PACKET_TOO_BIG);
    icmp.set_code(0);
    icmp.set_rest_of_header(u32::from(mtu));
    icmp.fill_checksum(dst, src);
    pkt.resize(out).ok_or(NotSent::NoRoom)?;
    // A new packet: no offload metadata of the old one applies.
    pkt.vnet = pkt.vnet.map(|_| VnetHdr::default());
    Ok(())
}

#[cfg(test)]
mod tests;
