//! LVS-TUN (`forward = "tun"`): the client's packet goes to the realserver unchanged,
//! inside an IPv4 header (IPIP, RFC 2003), or inside IPv4 + UDP + a GUE header
//! (draft-ietf-intarea-gue, `tunnel = "gue"`), as IPVS's `ip_vs_tunnel_xmit` sends it. The
//! realserver decapsulates it on an `ipip` device holding the virtual address and answers
//! the client directly, so the director sees only the client's half of the connection.
//!
//! - Outer header: from the director's tunnel source to the realserver, protocol 4 (IPIP)
//!   or 17 (GUE), TTL 64, the inner packet's DS field and DF bit, an identification of the
//!   queue's own.
//! - GUE: UDP to the realservers' GUE port from a source port in 49152–65535 taken from the
//!   flow's hash (flow entropy, so that a realserver's RSS spreads flows, as
//!   `udp_flow_src_port` does for IPVS), no UDP checksum (0: allowed over IPv4, as fou's
//!   default), then GUE version 0 with no options and protocol 4 (IPv4 inside).
//! - Too big: when the inner packet plus 20 bytes exceeds the tunnel's MTU and the inner
//!   packet forbids fragmentation (DF), the client gets ICMP fragmentation-needed with the
//!   MTU less 20 (its path MTU discovery then sends smaller segments), as `ip_vs_xmit.c`
//!   does; without DF the outer header leaves DF clear and the kernel fragments it.
//! - Offload: a partial checksum moves with the packet (its start shifts by 20). A
//!   segmentation-offload (GSO) super-packet cannot be tunnelled through TUN (virtio-net
//!   has no IPIP segmentation type): the director turns segmentation offload off on its
//!   device when it starts with tunnelled realservers, and such a packet is otherwise
//!   dropped (`reason="tunnel_gso"`).

use super::packet::Packet;
use crate::config::Tunnel;
use crate::wire::checksum;
use crate::wire::ipv4::{field, Ipv4Packet};
use crate::wire::vnet::VnetHdr;
use std::net::Ipv4Addr;

/// Bytes the outer IPv4 header adds (IPIP's whole overhead).
pub const OUTER: usize = 20;

/// Bytes GUE adds in all: IPv4, UDP, the GUE header.
pub const GUE_OUTER: usize = OUTER + 8 + 4;

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// Bytes `tunnel` adds in front of a packet.
pub fn overhead(tunnel: Tunnel) -> usize {
    match tunnel {
        Tunnel::Ipip => OUTER,
        Tunnel::Gue { .. } => GUE_OUTER,
    }
}

/// IP protocol number of IPv4-in-IPv4.
pub const IPPROTO_IPIP: u8 = 4;

/// The MTU of the path to the realservers when the kernel does not tell (Ethernet).
pub const DEFAULT_MTU: u16 = 1500;

/// Why a packet was not tunnelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// Too big with the outer header and DF set: `pkt` is now the ICMP
    /// fragmentation-needed for the client (forward it).
    TooBig,
    /// A segmentation-offload super-packet (see the module docs).
    Gso,
    /// No room in front of the packet, or not a complete IPv4 header.
    NoRoom,
}

/// What an encapsulation needs besides the packet.
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    /// How.
    pub tunnel: Tunnel,
    /// The director's tunnel source.
    pub src: Ipv4Addr,
    /// The realserver.
    pub rip: Ipv4Addr,
    /// The path's MTU.
    pub mtu: u16,
    /// The outer IP identification.
    pub ident: u16,
    /// The flow's hash (GUE's source port).
    pub entropy: u32,
}

/// Puts `pkt` (an IPv4 packet from a client) inside the tunnel's headers `src → rip`, or —
/// too big for `mtu` with DF set — turns it into the ICMP error the client needs.
pub fn encapsulate(pkt: &mut Packet<'_>, o: &Outer) -> Result<(), NotSent> {
    let Outer {
        tunnel,
        src,
        rip,
        mtu,
        ident,
        entropy,
    } = *o;
    let extra = overhead(tunnel);
    if pkt.vnet.as_ref().is_some_and(VnetHdr::is_gso) {
        return Err(NotSent::Gso);
    }
    // A partial checksum's start moves `extra` bytes in: it must still be a 16-bit offset
    // (the kernel never hands over one that is not; found by the shard fuzz target).
    let csum_start = match pkt.vnet.as_ref().filter(|v| v.needs_csum()) {
        Some(v) => Some(
            v.csum_start
                .checked_add(extra as u16)
                .ok_or(NotSent::NoRoom)?,
        ),
        None => None,
    };
    let len = pkt.len();
    let (tos, df) = {
        let inner = Ipv4Packet::new_checked(pkt.data()).map_err(|_| NotSent::NoRoom)?;
        (inner.dscp_ecn(), inner.dont_frag())
    };
    if len + extra > usize::from(mtu) && df {
        frag_needed(pkt, mtu - extra as u16)?;
        return Err(NotSent::TooBig);
    }
    let total = u16::try_from(len + extra).map_err(|_| NotSent::NoRoom)?;
    let data = pkt.prepend(extra).ok_or(NotSent::NoRoom)?;
    if let Tunnel::Gue { port } = tunnel {
        let u = &mut data[OUTER..GUE_OUTER];
        let sport = 0xc000 | (entropy as u16 & 0x3fff);
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&port.to_be_bytes());
        u[4..6].copy_from_slice(&((total as usize - OUTER) as u16).to_be_bytes());
        u[6..8].fill(0); // no checksum
        u[8] = 0; // version 0, no control, no options
        u[9] = IPPROTO_IPIP;
        u[10..12].fill(0);
    }
    let h = &mut data[..OUTER];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    h[8] = 64;
    h[9] = match tunnel {
        Tunnel::Ipip => IPPROTO_IPIP,
        Tunnel::Gue { .. } => IPPROTO_UDP,
    };
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&rip.octets());
    let c = !checksum::fold(checksum::sum(h));
    h[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    // A partial checksum starts where it did, the headers further in.
    if let (Some(v), Some(start)) = (pkt.vnet.as_mut(), csum_start) {
        v.csum_start = start;
    }
    Ok(())
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

#[cfg(test)]
mod tests;
