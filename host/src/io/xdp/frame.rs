//! Ethernet framing around the data plane, shared by the AF_XDP queues and the in-memory
//! backend that mirrors them for tests ([`crate::io::mem::process_frame`]): the IP packet of
//! a received frame goes to the pipeline without its Ethernet header; a forwarded packet gets
//! the header of its next hop in front of it, in the same buffer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dataplane::{Packet, Pipeline, Verdict};

/// Ethernet header length (no VLAN tag: the XDP program passes tagged frames to the kernel).
pub const ETH: usize = 14;

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// Too short for Ethernet + IPv4, not inside the buffer, or forwarded with no room left
    /// in front for the Ethernet header: not sent.
    Discarded,
    /// The pipeline dropped it.
    Dropped,
    /// The pipeline kept what it needed of it ([`Verdict::Consumed`]): nothing to send,
    /// not a drop.
    Consumed,
    /// Forward the IP packet at `start..start + len` of the buffer to `dst`.
    Forward {
        /// Where the IP packet starts in the buffer.
        start: usize,
        /// Its length.
        len: usize,
        /// Its destination address, or the pipeline's next hop for it (whose next hop
        /// frames it).
        dst: IpAddr,
    },
}

/// The destination address of the IP packet `d` (at least 20 bytes: an IPv6 one shorter
/// than its fixed header has none).
#[inline]
pub fn destination(d: &[u8]) -> Option<IpAddr> {
    match d.first()? >> 4 {
        4 if d.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19]))),
        6 if d.len() >= 40 => {
            let b: [u8; 16] = d[24..40].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Runs the IP packet of the frame at `off..off + len` of `buf` through `pipeline`.
#[inline]
pub fn run<P: Pipeline>(pipeline: &mut P, buf: &mut [u8], off: usize, len: usize) -> Framed {
    if len < ETH + 20 || off.saturating_add(len) > buf.len() {
        return Framed::Discarded;
    }
    let Some(mut pkt) = Packet::new(buf, off + ETH, len - ETH) else {
        return Framed::Discarded;
    };
    match pipeline.process(&mut pkt) {
        Verdict::Drop => Framed::Dropped,
        Verdict::Consumed => Framed::Consumed,
        Verdict::Forward if pkt.start() < ETH => Framed::Discarded,
        // LVS-DR: the realserver's MAC on an unchanged packet.
        Verdict::Forward => match pkt.next_hop.or_else(|| destination(pkt.data())) {
            Some(dst) => Framed::Forward {
                start: pkt.start(),
                len: pkt.len(),
                dst,
            },
            None => Framed::Discarded,
        },
    }
}

/// Writes `hdr` in front of the IP packet at `start` (which [`run`] guarantees room for);
/// returns where the frame starts.
#[inline]
pub fn put_header(buf: &mut [u8], start: usize, hdr: &[u8; ETH]) -> usize {
    buf[start - ETH..start].copy_from_slice(hdr);
    start - ETH
}
