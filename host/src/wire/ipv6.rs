//! IPv6 header (RFC 8200) and its extension-header chain.
//!
//! [`Ipv6Packet`] is the fixed 40-byte header and its payload, checked like
//! [`Ipv4Packet`](super::Ipv4Packet). [`Ipv6Packet::upper_layer`] walks the extension headers
//! to the upper-layer header under these rules (each refusal an [`ExtError`], never a panic,
//! whatever the bytes):
//!
//! | header | rule |
//! |---|---|
//! | Hop-by-Hop options (0) | only first (RFC 8200 §4.1), else `Misplaced`; its options are walked: one that runs past the header is `Truncated`; a Jumbo Payload option (RFC 2675) is `Jumbo` (a director's buffers hold 64 KiB: jumbograms are never forwarded) |
//! | Destination options (60) | its options walked as Hop-by-Hop's; anywhere |
//! | Routing (43) | skipped when its segments left is 0; with segments left the packet asks to be source-routed through this node: `SourceRouted` |
//! | Fragment (44) | 8 bytes; noted ([`Fragment`]). A later fragment (offset > 0) has no upper-layer header: the walk stops there |
//! | Authentication (51) | skipped (`(len + 2) × 4` bytes); one shorter than its 12 fixed bytes (RFC 4302 §2: `len` 0) is `Truncated` |
//! | ESP (50), No Next Header (59), anything else | the upper layer: the walk stops |
//!
//! A header whose length runs past the payload is `Truncated`; more than
//! [`MAX_EXT_HEADERS`] extension headers are `TooMany` (a long chain is only ever an attack
//! on the parser and on middleboxes: RFC 9098).

use super::{be, Error, Result};
use core::net::Ipv6Addr;

/// Offsets of the IPv6 header fields.
pub mod field {
    use core::ops::Range;

    /// Version (4 bits), traffic class (8) and flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Length of the payload, extension headers included.
    pub const LENGTH: Range<usize> = 4..6;
    /// The first extension header's or the upper layer's protocol number.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Most extension headers [`Ipv6Packet::upper_layer`] walks.
pub const MAX_EXT_HEADERS: usize = 8;

/// Extension header numbers (the `next header` values that are not upper layers).
pub mod ext {
    /// Hop-by-Hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing.
    pub const ROUTING: u8 = 43;
    /// Fragment.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload (opaque: an upper layer here).
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// No next header.
    pub const NO_NEXT: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// Option type of the Jumbo Payload option (RFC 2675).
const OPT_JUMBO: u8 = 0xC2;
const OPT_PAD1: u8 = 0;

/// What stopped a walk of the extension headers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtError {
    /// A header, or an option in one, runs past the payload.
    Truncated,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    TooMany,
    /// A Hop-by-Hop header after the first position.
    Misplaced,
    /// A Jumbo Payload option.
    Jumbo,
    /// A Routing header with segments left.
    SourceRouted,
}

/// The Fragment header of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of this fragment's data in the original payload, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the walk of the extension headers ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (see [`crate::wire::ip_proto`]), or the `next header` of a
    /// later fragment's Fragment header.
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the packet (for a later fragment:
    /// of its data).
    pub offset: usize,
    /// The Fragment header, if any.
    pub fragment: Option<Fragment>,
    /// Extension headers walked.
    pub ext_headers: usize,
}

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer holding a whole packet: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Wraps the packet an ICMPv6 error quotes: the fixed header must be whole and say
    /// version 6, but the payload may be cut short of the payload length (RFC 4443 §2.4 (c)
    /// quotes only what fits in 1,280 bytes). [`Self::payload`] and
    /// [`Self::upper_layer`] see the bytes present.
    #[inline]
    pub fn new_checked_quoted(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < HEADER_LEN || packet.version() != 6 {
            return Err(Error);
        }
        Ok(packet)
    }

    /// Checks that the buffer holds a whole IPv6 packet: at least [`HEADER_LEN`] bytes,
    /// version 6, and a payload length that fits in the buffer (trailing bytes beyond it are
    /// allowed).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || self.version() != 6 {
            return Err(Error);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error);
        }
        Ok(())
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The IP version (6 after a check).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be::get32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// The flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000F_FFFF
    }

    /// The payload length field: extension headers and upper layer, in bytes.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The next header field.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr16(self.buffer.as_ref(), field::SRC_ADDR.start))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr16(self.buffer.as_ref(), field::DST_ADDR.start))
    }

    /// The payload bounds: after the fixed header to the payload length, cut at the end of
    /// the buffer.
    #[inline]
    fn payload_bounds(&self) -> (usize, usize) {
        let len = self.buffer.as_ref().len();
        let start = HEADER_LEN.min(len);
        let end = (HEADER_LEN + usize::from(self.payload_len()))
            .min(len)
            .max(start);
        (start, end)
    }

    /// The payload: extension headers and upper layer, to the payload length (bytes beyond
    /// it, such as link-layer padding, are not part of it).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.payload_bounds();
        &self.buffer.as_ref()[start..end]
    }

    /// Walks the extension headers to the upper layer (see the module docs for the rules).
    pub fn upper_layer(&self) -> core::result::Result<UpperLayer, ExtError> {
        let p = self.payload();
        let mut next = self.next_header();
        let mut at = 0usize;
        let mut fragment = None;
        let mut n = 0;
        loop {
            let len = match next {
                ext::HOP_BY_HOP | ext::DEST_OPTS | ext::ROUTING | ext::AH | ext::FRAGMENT => {
                    if n == MAX_EXT_HEADERS {
                        return Err(ExtError::TooMany);
                    }
                    if next == ext::HOP_BY_HOP && n != 0 {
                        return Err(ExtError::Misplaced);
                    }
                    let h = p.get(at..at + 2).ok_or(ExtError::Truncated)?;
                    match next {
                        ext::FRAGMENT => 8,
                        // Next header, length, reserved, SPI and sequence: 12 bytes at least.
                        ext::AH if h[1] == 0 => return Err(ExtError::Truncated),
                        ext::AH => (usize::from(h[1]) + 2) * 4,
                        _ => (usize::from(h[1]) + 1) * 8,
                    }
                }
                _ => {
                    return Ok(UpperLayer {
                        protocol: next,
                        offset: HEADER_LEN + at,
                        fragment,
                        ext_headers: n,
                    })
                }
            };
            let h = p.get(at..at + len).ok_or(ExtError::Truncated)?;
            match next {
                ext::HOP_BY_HOP | ext::DEST_OPTS => check_options(&h[2..])?,
                ext::ROUTING if h[3] != 0 => return Err(ExtError::SourceRouted),
                ext::FRAGMENT => {
                    let off = u16::from_be_bytes([h[2], h[3]]);
                    let f = Fragment {
                        offset: off & !7,
                        more: off & 1 != 0,
                        ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    };
                    fragment = Some(f);
                    if f.offset != 0 {
                        return Ok(UpperLayer {
                            protocol: h[0],
                            offset: HEADER_LEN + at + len,
                            fragment,
                            ext_headers: n + 1,
                        });
                    }
                }
                _ => {}
            }
            next = h[0];
            at += len;
            n += 1;
        }
    }
}

/// Walks the TLV options of a Hop-by-Hop or Destination options header.
fn check_options(mut o: &[u8]) -> core::result::Result<(), ExtError> {
    while let Some(&kind) = o.first() {
        if kind == OPT_PAD1 {
            o = &o[1..];
            continue;
        }
        let len = usize::from(*o.get(1).ok_or(ExtError::Truncated)?);
        if kind == OPT_JUMBO {
            return Err(ExtError::Jumbo);
        }
        o = o.get(2 + len..).ok_or(ExtError::Truncated)?;
    }
    Ok(())
}

#[inline]
fn addr16(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version, traffic class and flow label at once.
    #[inline]
    pub fn set_version_tc_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let v = u32::from(version & 0x0F) << 28
            | u32::from(traffic_class) << 20
            | (flow_label & 0x000F_FFFF);
        be::set32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Sets the payload length field.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the next header field.
    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address (IPv6 has no header checksum; a transport checksum covering
    /// it is the caller's).
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address (see [`Self::set_src_addr`]).
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the source address and returns the old one (NAT66). IPv6 has no header
    /// checksum; update the transport checksum that covers it through the pseudo-header
    /// (`update_checksum_for_addr` of [`crate::wire::TcpPacket`], [`crate::wire::UdpPacket`],
    /// [`crate::wire::Icmpv6Packet`]).
    #[inline]
    pub fn rewrite_src_addr(&mut self, addr: Ipv6Addr) -> Ipv6Addr {
        let old = self.src_addr();
        self.set_src_addr(addr);
        old
    }

    /// Sets the destination address and returns the old one (see
    /// [`Self::rewrite_src_addr`]).
    #[inline]
    pub fn rewrite_dst_addr(&mut self, addr: Ipv6Addr) -> Ipv6Addr {
        let old = self.dst_addr();
        self.set_dst_addr(addr);
        old
    }

    /// The payload, mutable (same bounds as [`Ipv6Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.payload_bounds();
        &mut self.buffer.as_mut()[start..end]
    }
}

/// A high-level description of an IPv6 header without extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The next header (the upper layer's protocol when there are no extension headers).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Length of the payload in bytes.
    pub payload_len: usize,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads a checked packet's fixed header.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Ipv6Repr> {
        p.check_len()?;
        Ok(Ipv6Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            payload_len: usize::from(p.payload_len()),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Bytes the fixed header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header into the first [`HEADER_LEN`] bytes of `p` (which must hold
    /// them); a payload length over 65,535 is written as 65,535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        p.set_version_tc_flow(6, self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len.min(usize::from(u16::MAX)) as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests;
