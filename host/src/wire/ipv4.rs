//! IPv4 header (RFC 791).

use super::{be, checksum, Error, Result};
use core::net::Ipv4Addr;

/// Offsets of the IPv4 header fields.
pub mod field {
    use core::ops::Range;

    /// Version (high nibble) and IHL, the header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    /// DSCP (high 6 bits) and ECN (low 2 bits).
    pub const DSCP_ECN: usize = 1;
    /// Total length of the datagram, header included.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (reserved, DF, MF) and the fragment offset in 8-byte units.
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload (see [`crate::wire::ip_proto`]).
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// (or [`Self::check_len_quoted`]) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer holding a whole packet: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Wraps the IP header quoted in an ICMP error, whose datagram may be cut short:
    /// [`Self::new_unchecked`] then [`Self::check_len_quoted`].
    #[inline]
    pub fn new_checked_quoted(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len_quoted()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole IPv4 packet: at least [`HEADER_LEN`] bytes,
    /// version 4, an IHL of at least 5 whose header fits in the buffer, and a total length
    /// that covers the header and fits in the buffer (trailing bytes beyond it are allowed).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_len_quoted()?;
        if usize::from(self.total_len()) > self.buffer.as_ref().len() {
            return Err(Error);
        }
        Ok(())
    }

    /// Like [`Self::check_len`], but the total length may exceed the buffer: the header
    /// quoted in an ICMP error is complete, the rest of its datagram usually is not.
    #[inline]
    pub fn check_len_quoted(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || self.version() != 4 {
            return Err(Error);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > len {
            return Err(Error);
        }
        if usize::from(self.total_len()) < header_len {
            return Err(Error);
        }
        Ok(())
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The IP version (4 after a check).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// The DSCP and ECN byte (the former TOS).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length field: header and payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::IDENT)
    }

    /// The don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be::get16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// The more-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be::get16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// The fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be::get16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// True if the packet is a fragment: more fragments follow or the offset is not zero.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be::get16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (see [`crate::wire::ip_proto`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::get_array4(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::get_array4(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// True if the header carries options (IHL > 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > HEADER_LEN
    }

    /// End of the header, kept within `HEADER_LEN..=buffer length` so that no later setter
    /// can make an accessor panic.
    #[inline]
    fn header_end(&self) -> usize {
        let len = self.buffer.as_ref().len();
        self.header_len().max(HEADER_LEN).min(len)
    }

    /// The payload bounds: from the end of the header to the total length, cut at the end
    /// of the buffer.
    #[inline]
    fn payload_bounds(&self) -> (usize, usize) {
        let start = self.header_end();
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len).max(start);
        (start, end)
    }

    /// The options: the header bytes after the first [`HEADER_LEN`].
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_end()]
    }

    /// True if the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        // The usual header, without options: a sum of known length, unrolled.
        if let (HEADER_LEN, Some(h)) = (self.header_len(), b.first_chunk::<HEADER_LEN>()) {
            return checksum::data(h) == 0xFFFF;
        }
        checksum::data(&b[..self.header_end()]) == 0xFFFF
    }

    /// The payload: from the end of the header to the total length, or to the end of the
    /// buffer if that comes first (a quoted packet). Bytes beyond the total length, such
    /// as link-layer padding, are not part of it.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.payload_bounds();
        &self.buffer.as_ref()[start..end]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload, borrowed for as long as the buffer (see [`Ipv4Packet::payload`]).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let (start, end) = self.payload_bounds();
        &self.buffer.as_ref()[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0F) | (value << 4);
    }

    /// Sets the IHL from a header length in bytes (rounded down to 32-bit words).
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xF0) | ((value / 4) as u8 & 0x0F);
    }

    /// Sets the DSCP and ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length field.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Sets the flags and fragment offset at once: DF, MF, and an offset in bytes (rounded
    /// down to 8-byte units). The reserved flag is cleared.
    #[inline]
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        be::set16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets or clears the don't-fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Sets or clears the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, value: bool) {
        let b = self.buffer.as_mut();
        let old = be::get16(b, field::FLG_OFF);
        let new = if value { old | flag } else { old & !flag };
        be::set16(b, field::FLG_OFF, new);
    }

    /// Sets the fragment offset, in bytes (rounded down to 8-byte units); flags unchanged.
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        let b = self.buffer.as_mut();
        let old = be::get16(b, field::FLG_OFF);
        be::set16(b, field::FLG_OFF, (old & !OFFSET_MASK) | (value >> 3));
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address; the checksum is left alone (see [`Self::rewrite_src_addr`]).
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        be::set_array4(self.buffer.as_mut(), field::SRC_ADDR, value.octets());
    }

    /// Sets the destination address; the checksum is left alone (see
    /// [`Self::rewrite_dst_addr`]).
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        be::set_array4(self.buffer.as_mut(), field::DST_ADDR, value.octets());
    }

    /// Computes the header checksum over the header (options included) and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let end = self.header_end();
        let c = !checksum::data(&self.buffer.as_ref()[..end]);
        self.set_checksum(c);
    }

    /// Applies the changes `d` (of words the header checksum covers) to the header checksum.
    #[inline]
    pub fn update_checksum(&mut self, d: checksum::Delta) {
        let b = self.buffer.as_mut();
        let f = field::CHECKSUM.start;
        let c = d.apply([b[f], b[f + 1]]);
        b[f..f + 2].copy_from_slice(&c);
    }

    /// Sets the source address, updates the header checksum incrementally, and returns the
    /// old address. A transport checksum covering it must be updated by the caller (see
    /// `TcpPacket::translate`).
    #[inline]
    pub fn rewrite_src_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        self.set_src_addr(addr);
        self.update_checksum(checksum::Delta::default().bytes4(old.octets(), addr.octets()));
        old
    }

    /// Sets the destination address, updates the header checksum incrementally, and returns
    /// the old address.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        self.set_dst_addr(addr);
        self.update_checksum(checksum::Delta::default().bytes4(old.octets(), addr.octets()));
        old
    }

    /// The payload, mutable (same bounds as [`Ipv4Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.payload_bounds();
        &mut self.buffer.as_mut()[start..end]
    }

    /// Splits the packet into a view of its header alone and its payload, both mutable, so
    /// that the IP header and the transport header can be rewritten together.
    ///
    /// The header view keeps the packet's total length field; its own payload is empty.
    #[inline]
    pub fn split_mut(&mut self) -> (Ipv4Packet<&mut [u8]>, &mut [u8]) {
        let (start, end) = self.payload_bounds();
        let (header, rest) = self.buffer.as_mut()[..end].split_at_mut(start);
        (Ipv4Packet::new_unchecked(header), rest)
    }
}

/// A high-level description of an IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload (see [`crate::wire::ip_proto`]).
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Length of the payload in bytes (at most 65,515).
    pub payload_len: usize,
    /// Identification.
    pub ident: u16,
    /// The don't-fragment flag.
    pub dont_frag: bool,
    /// DSCP and ECN.
    pub dscp_ecn: u8,
}

impl Ipv4Repr {
    /// Describes the header of a packet. The header must pass
    /// [`Ipv4Packet::check_len_quoted`] (so a quoted header parses too); `payload_len` comes
    /// from the total length field. Options are skipped and the checksum is not verified.
    /// Fragments are rejected: the representation has no fragment fields, and emitting one
    /// would describe a different datagram.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr> {
        packet.check_len_quoted()?;
        if packet.is_fragment() {
            return Err(Error);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            dscp_ecn: packet.dscp_ecn(),
        })
    }

    /// The length of the emitted header.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet: header and payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header (no options) with its checksum into the front of the packet.
    /// The buffer must be at least [`HEADER_LEN`] bytes long, which a checked packet is.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(self.buffer_len() as u16);
        packet.set_ident(self.ident);
        packet.set_flags_and_frag_offset(self.dont_frag, false, 0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip_proto;
    use crate::wire::test_util::{packets, Rng};

    fn dns_repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 2),
            dst_addr: Ipv4Addr::new(8, 8, 8, 8),
            protocol: ip_proto::UDP,
            ttl: 64,
            payload_len: 37,
            ident: 0x62ce,
            dont_frag: true,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn parse_dns() {
        let p = Ipv4Packet::new_checked(&packets::DNS[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 57);
        assert_eq!(p.ident(), 0x62ce);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), ip_proto::UDP);
        assert_eq!(p.checksum(), 0xbdd4);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(8, 8, 8, 8));
        assert!(!p.has_options());
        assert_eq!(p.options(), &[] as &[u8]);
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &packets::DNS[20..]);
        assert_eq!(p.into_payload(), &packets::DNS[20..]);
        assert_eq!(Ipv4Repr::parse(&p), Ok(dns_repr()));
    }

    #[test]
    fn emit_dns_header() {
        let repr = dns_repr();
        assert_eq!(repr.buffer_len(), packets::DNS.len());
        let mut buf = [0xAAu8; 57];
        buf[20..].copy_from_slice(&packets::DNS[20..]);
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, packets::DNS);
    }

    #[test]
    fn parse_and_emit_port_unreachable_header() {
        // TOS 0xc0, no DF, ident 0xc736: every Repr field differs from the DNS packet's.
        let p = Ipv4Packet::new_checked(&packets::PORT_UNREACHABLE[..]).unwrap();
        let repr = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(repr.dscp_ecn, 0xc0);
        assert!(!repr.dont_frag);
        assert_eq!(repr.protocol, ip_proto::ICMP);
        assert_eq!(repr.payload_len, 65);
        let mut buf = packets::PORT_UNREACHABLE;
        buf[..20].fill(0);
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, packets::PORT_UNREACHABLE);
    }

    #[test]
    fn wikipedia_header_quoted() {
        // The header from Wikipedia's "IPv4 header checksum" example: checksum 0xb861,
        // total length 115 with no payload present. A whole packet it is not; a quoted
        // header it is.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(Ipv4Packet::new_checked(&h[..]), Err(Error));
        let p = Ipv4Packet::new_checked_quoted(&h[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.total_len(), 115);
        assert_eq!(p.payload(), &[] as &[u8]);
        let mut copy = h;
        let mut q = Ipv4Packet::new_checked_quoted(&mut copy[..]).unwrap();
        q.fill_checksum();
        assert_eq!(q.checksum(), 0xb861);
        assert_eq!(Ipv4Repr::parse(&q).unwrap().payload_len, 95);
    }

    #[test]
    fn quoted_header_in_frag_needed() {
        let inner = &packets::FRAG_NEEDED[28..];
        assert_eq!(Ipv4Packet::new_checked(inner), Err(Error));
        let p = Ipv4Packet::new_checked_quoted(inner).unwrap();
        assert_eq!(p.total_len(), 1500);
        assert_eq!(p.protocol(), ip_proto::TCP);
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &inner[20..28]);
    }

    #[test]
    fn options_and_trailing_bytes() {
        // A header with a 4-byte option (NOP NOP NOP EOL) and 3 bytes of link padding after
        // a 6-byte payload.
        let mut buf = [0u8; 33];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        dns_repr().emit(&mut p);
        p.set_header_len(24);
        p.set_total_len(30);
        p.payload_mut().copy_from_slice(b"abcdef");
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        Ipv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.has_options());
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), b"abcdef");
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, 6);
    }

    #[test]
    fn flags_and_fragments() {
        let mut buf = packets::DNS;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_flags_and_frag_offset(false, true, 1480);
        assert!(!p.dont_frag() && p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(be::get16(&buf, field::FLG_OFF), 0x2000 | 185);
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_more_frags(false);
        assert!(p.is_fragment(), "offset alone makes a fragment");
        assert_eq!(Ipv4Repr::parse(&p), Err(Error));
        p.set_frag_offset(0);
        p.set_dont_frag(true);
        assert!(!p.is_fragment() && p.dont_frag());
        assert_eq!(be::get16(&buf, field::FLG_OFF), 0x4000);
    }

    #[test]
    fn malformed() {
        let bad = |f: &dyn Fn(&mut [u8; 57])| {
            let mut b = packets::DNS;
            f(&mut b);
            Ipv4Packet::new_checked(&b[..]).err()
        };
        assert_eq!(bad(&|_| {}), None);
        assert_eq!(bad(&|b| b[0] = 0x65), Some(Error), "version 6");
        assert_eq!(bad(&|b| b[0] = 0x05), Some(Error), "version 0");
        assert_eq!(bad(&|b| b[0] = 0x44), Some(Error), "IHL 4");
        assert_eq!(bad(&|b| b[0] = 0x40), Some(Error), "IHL 0");
        assert_eq!(bad(&|b| b[0] = 0x4f), Some(Error), "IHL 15 > total length");
        assert_eq!(bad(&|b| b[2..4].copy_from_slice(&[0, 19])), Some(Error));
        assert_eq!(bad(&|b| b[2..4].copy_from_slice(&[0, 58])), Some(Error));
        assert_eq!(
            bad(&|b| b[2..4].copy_from_slice(&[0, 56])),
            None,
            "padding ok"
        );
        // IHL 15 (60 bytes) beyond a 57-byte buffer is wrong even for a quoted header.
        let mut b = packets::DNS;
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&[0, 60]);
        assert_eq!(Ipv4Packet::new_checked_quoted(&b[..]), Err(Error));
        b[0] = 0x4e; // 56 bytes fit
        assert!(Ipv4Packet::new_checked_quoted(&b[..]).is_ok());
        b[2..4].copy_from_slice(&[0, 55]);
        assert_eq!(Ipv4Packet::new_checked_quoted(&b[..]), Err(Error));
    }

    #[test]
    fn truncation() {
        let full = &packets::SYN[..];
        for n in 0..=full.len() {
            let b = &full[..n];
            match Ipv4Packet::new_checked(b) {
                Ok(p) => {
                    assert_eq!(n, 60, "only the whole packet is whole");
                    assert_eq!(p.payload().len(), 40);
                }
                Err(Error) => assert!(n < 60),
            }
            match Ipv4Packet::new_checked_quoted(b) {
                Ok(p) => {
                    assert!(n >= 20);
                    assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
                    assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
                    assert_eq!(p.payload(), &full[20..n]);
                    assert!(p.verify_checksum());
                    assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, 40);
                }
                Err(Error) => assert!(n < 20),
            }
        }
    }

    #[test]
    fn split_mut_rewrites_both_headers() {
        let mut buf = packets::SYN;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        let (mut ip, l4) = p.split_mut();
        assert_eq!(ip.payload(), &[] as &[u8]);
        assert_eq!(l4.len(), 40);
        let old = ip.rewrite_dst_addr(Ipv4Addr::new(192, 168, 7, 9));
        assert_eq!(old, Ipv4Addr::new(10, 0, 0, 1));
        l4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 7, 9));
        assert_eq!(be::get16(p.payload(), 2..4), 8080);
    }

    /// Incremental address rewrites agree exactly with a full recomputation, for random
    /// headers with and without options.
    #[test]
    fn rewrite_equals_fill() {
        let mut rng = Rng::new(0x0004);
        let mut buf = [0u8; 60];
        for round in 0..10_000 {
            let header_len = 20 + 4 * rng.below(11) as usize;
            let b = &mut buf[..header_len];
            rng.fill(b);
            b[0] = 0x40 | (header_len / 4) as u8;
            b[2..4].copy_from_slice(&(header_len as u16).to_be_bytes());
            let mut p = Ipv4Packet::new_checked(&mut *b).unwrap();
            p.fill_checksum();
            assert!(p.verify_checksum());
            let addr = Ipv4Addr::from(rng.next_u64() as u32);
            let (src, dst) = (p.src_addr(), p.dst_addr());
            if round % 2 == 0 {
                assert_eq!(p.rewrite_src_addr(addr), src);
                assert_eq!((p.src_addr(), p.dst_addr()), (addr, dst));
            } else {
                assert_eq!(p.rewrite_dst_addr(addr), dst);
                assert_eq!((p.src_addr(), p.dst_addr()), (src, addr));
            }
            assert!(p.verify_checksum(), "round {round}");
            let incremental = p.checksum();
            p.fill_checksum();
            assert_eq!(incremental, p.checksum(), "round {round}");
        }
    }
}
