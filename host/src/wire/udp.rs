//! UDP header (RFC 768).

use super::checksum::{self, PseudoAddr};
use super::{be, ip_proto, Error, Result, Side};

/// Offsets of the UDP header fields.
pub mod field {
    use core::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length of the datagram, header included.
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum; 0 means "none" over IPv4 and is invalid over IPv6.
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps a buffer: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds at least [`HEADER_LEN`] bytes and that the length field
    /// is at least [`HEADER_LEN`] and within the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN || field_len > len {
            return Err(Error);
        }
        Ok(())
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header and payload, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True if the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field (0: no checksum).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// End of the datagram: the length field, kept within `HEADER_LEN..=buffer length` so
    /// that no later setter can make an accessor panic.
    #[inline]
    fn end(&self) -> usize {
        let len = self.buffer.as_ref().len();
        usize::from(self.len()).max(HEADER_LEN).min(len)
    }

    /// The payload: from the end of the header to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.end()]
    }

    /// The sum over the datagram (first `len()` bytes) and its pseudo-header.
    #[inline]
    fn full_sum<A: PseudoAddr>(&self, src: A, dst: A) -> u16 {
        let end = self.end();
        let pseudo = checksum::pseudo_header_for(src, dst, ip_proto::UDP, end as u32);
        checksum::combine(&[pseudo, checksum::data(&self.buffer.as_ref()[..end])])
    }

    /// True if the checksum is correct for a datagram sent from `src` to `dst`, or absent
    /// (0) where the family allows that: IPv4 does, IPv6 does not (RFC 8200 §8.1: a zero
    /// checksum is discarded; a computed 0 is sent as `0xFFFF`).
    #[inline]
    pub fn verify_checksum<A: PseudoAddr>(&self, src: A, dst: A) -> bool {
        match self.checksum() {
            0 => A::UDP_CHECKSUM_OPTIONAL,
            _ => self.full_sum(src, dst) == 0xFFFF,
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, borrowed for as long as the buffer (see [`UdpPacket::payload`]).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let end = self.end();
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port; the checksum is left alone (see [`Self::rewrite_src_port`]).
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    /// Sets the destination port; the checksum is left alone.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the checksum of a datagram sent from `src` to `dst` over its first `len()`
    /// bytes and stores it; a computed 0 is sent as `0xFFFF` (0 means "no checksum").
    #[inline]
    pub fn fill_checksum<A: PseudoAddr>(&mut self, src: A, dst: A) {
        self.set_checksum(0);
        let c = !self.full_sum(src, dst);
        self.set_checksum(if c == 0 { 0xFFFF } else { c });
    }

    /// Applies an incremental update to a complete checksum field: an absent checksum (0)
    /// stays absent, and a result of 0 is sent as `0xFFFF`.
    #[inline]
    fn update_complete(&mut self, update: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c != 0 {
            let c = update(c);
            self.set_checksum(if c == 0 { 0xFFFF } else { c });
        }
    }

    /// Sets the source port and returns the old one. A complete checksum is updated
    /// incrementally (an absent one stays absent); a `partial` one (pseudo-header sum only,
    /// virtio-net `NEEDS_CSUM`) does not cover ports and is left alone.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16, partial: bool) -> u16 {
        let old = self.src_port();
        if !partial {
            self.update_complete(|c| checksum::update16(c, old, port));
        }
        self.set_src_port(port);
        old
    }

    /// Sets the destination port and returns the old one; the checksum as in
    /// [`Self::rewrite_src_port`].
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16, partial: bool) -> u16 {
        let old = self.dst_port();
        if !partial {
            self.update_complete(|c| checksum::update16(c, old, port));
        }
        self.set_dst_port(port);
        old
    }

    /// NAT in one checksum update, as [`crate::wire::TcpPacket::translate`]: the port on
    /// `side` becomes `port` and the pseudo-header address changed from `addr.0` to `addr.1`;
    /// returns the old port. A complete checksum as in [`Self::rewrite_src_port`] (an absent
    /// one stays absent, a result of 0 is sent as `0xFFFF`).
    #[inline]
    pub fn translate<A: PseudoAddr>(
        &mut self,
        side: Side,
        addr: (A, A),
        port: u16,
        partial: bool,
    ) -> u16 {
        let at = match side {
            Side::Src => field::SRC_PORT,
            Side::Dst => field::DST_PORT,
        };
        let b = self.buffer.as_mut();
        let old = [b[at.start], b[at.start + 1]];
        let new = port.to_be_bytes();
        b[at].copy_from_slice(&new);
        let d = checksum::Delta::default().addr(addr.0, addr.1);
        let f = field::CHECKSUM.start;
        let c = [b[f], b[f + 1]];
        let c = if partial {
            d.apply_partial(c)
        } else if c == [0, 0] {
            c
        } else {
            match d.bytes2(old, new).apply(c) {
                [0, 0] => [0xFF, 0xFF],
                c => c,
            }
        };
        b[f..f + 2].copy_from_slice(&c);
        u16::from_be_bytes(old)
    }

    /// Updates the checksum for a pseudo-header address changed from `old` to `new` (the IP
    /// header was rewritten). A complete checksum as in [`Self::rewrite_src_port`]; a
    /// `partial` field is a non-complemented pseudo-header sum and is updated as such.
    #[inline]
    pub fn update_checksum_for_addr<A: PseudoAddr>(&mut self, old: A, new: A, partial: bool) {
        if partial {
            let c = checksum::update_partial_addr(self.checksum(), old, new);
            self.set_checksum(c);
        } else {
            self.update_complete(|c| checksum::update_addr(c, old, new));
        }
    }
}

/// A high-level description of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length of the payload in bytes (at most 65,527).
    pub payload_len: usize,
}

impl UdpRepr {
    /// Describes the header of a datagram that passes [`UdpPacket::check_len`]. The checksum
    /// is not verified (it may be partial, and verifying needs the addresses:
    /// [`UdpPacket::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<UdpRepr> {
        packet.check_len()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// The length of the emitted header.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole datagram: header and payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into the front of the packet and fills the checksum over the
    /// header and the payload already in place. The buffer must hold [`Self::buffer_len`]
    /// bytes (at least [`HEADER_LEN`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>, A: PseudoAddr>(
        &self,
        packet: &mut UdpPacket<T>,
        src: A,
        dst: A,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(self.buffer_len() as u16);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{packets, Rng};
    use crate::wire::Ipv4Packet;
    use core::net::Ipv4Addr;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    #[test]
    fn parse_and_emit_linux_dns() {
        let ip = Ipv4Packet::new_checked(&packets::DNS[..]).unwrap();
        let u = UdpPacket::new_checked(ip.into_payload()).unwrap();
        assert_eq!(u.src_port(), 53535);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.len(), 37);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0x9902);
        assert_eq!(u.payload(), &packets::DNS[28..]);
        assert_eq!(u.into_payload()[12], 7, "the qname label length");
        assert!(u.verify_checksum(CLIENT, DNS_SERVER));
        assert!(!u.verify_checksum(CLIENT, Ipv4Addr::new(8, 8, 4, 4)));
        let repr = UdpRepr::parse(&u).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 53535,
                dst_port: 53,
                payload_len: 29
            }
        );
        let mut buf = [0u8; 37];
        buf[8..].copy_from_slice(&packets::DNS[28..]);
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut buf[..]),
            CLIENT,
            DNS_SERVER,
        );
        assert_eq!(buf, packets::DNS[20..]);
    }

    #[test]
    fn zero_checksum() {
        let mut buf = [0u8; 37];
        buf.copy_from_slice(&packets::DNS[20..]);
        let mut u = UdpPacket::new_checked(&mut buf[..]).unwrap();
        u.set_checksum(0);
        assert!(
            u.verify_checksum(CLIENT, Ipv4Addr::new(1, 2, 3, 4)),
            "absent"
        );
        // Absent stays absent through NAT.
        u.rewrite_dst_port(5353, false);
        u.update_checksum_for_addr(DNS_SERVER, Ipv4Addr::new(1, 2, 3, 4), false);
        assert_eq!(u.checksum(), 0);
        // A datagram whose checksum computes to 0 is sent with 0xFFFF: choose the last two
        // payload bytes so that the full sum is 0xFFFF.
        let mut buf = [0u8; 12];
        buf[..8].copy_from_slice(&[0, 1, 0, 2, 0, 12, 0, 0]);
        let pseudo = checksum::pseudo_header_v4(CLIENT, DNS_SERVER, ip_proto::UDP, 12);
        let others = checksum::combine(&[pseudo, checksum::data(&buf)]);
        buf[10..12].copy_from_slice(&(!others).to_be_bytes());
        let mut u = UdpPacket::new_checked(&mut buf[..]).unwrap();
        u.fill_checksum(CLIENT, DNS_SERVER);
        assert_eq!(u.checksum(), 0xFFFF);
        assert!(u.verify_checksum(CLIENT, DNS_SERVER));
        // Changing a port there and back keeps 0xFFFF, never 0.
        u.rewrite_src_port(7, false);
        u.rewrite_src_port(1, false);
        assert_eq!(u.checksum(), 0xFFFF);
    }

    #[test]
    fn truncation() {
        let d = &packets::DNS[20..];
        for n in 0..=d.len() {
            match UdpPacket::new_checked(&d[..n]) {
                Ok(u) => {
                    assert_eq!(n, 37);
                    assert_eq!(u.payload().len(), 29);
                }
                Err(Error) => assert!(n < 37),
            }
        }
        // Trailing bytes beyond the length field are not payload.
        let mut b = [0u8; 40];
        b[..37].copy_from_slice(d);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(u.payload(), &d[8..]);
        assert!(u.verify_checksum(CLIENT, DNS_SERVER));
    }

    #[test]
    fn malformed() {
        let mut b = [0u8; 37];
        b.copy_from_slice(&packets::DNS[20..]);
        for (len, ok) in [
            (0u16, false),
            (7, false),
            (8, true),
            (37, true),
            (38, false),
        ] {
            b[4..6].copy_from_slice(&len.to_be_bytes());
            assert_eq!(UdpPacket::new_checked(&b[..]).is_ok(), ok, "length {len}");
        }
        assert_eq!(UdpPacket::new_checked(&b[..7]), Err(Error));
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(u.is_empty());
        assert_eq!(u.payload(), &[] as &[u8]);
    }

    /// Random datagrams: NAT rewrites agree exactly with a full recomputation, for complete
    /// checksums (including those that hit 0 → 0xFFFF) and for partial ones.
    #[test]
    fn nat_rewrite_equals_fill() {
        let mut rng = Rng::new(0x17);
        let mut buf = [0u8; 80];
        for round in 0..20_000 {
            let len = 8 + rng.below(73) as usize;
            let b = &mut buf[..len];
            rng.fill(b);
            b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            let (src, dst) = (
                Ipv4Addr::from(rng.next_u64() as u32),
                Ipv4Addr::from(rng.next_u64() as u32),
            );
            let partial = round % 3 == 2;
            let mut u = UdpPacket::new_checked(&mut *b).unwrap();
            if partial {
                u.set_checksum(checksum::pseudo_header_v4(
                    src,
                    dst,
                    ip_proto::UDP,
                    len as u32,
                ));
            } else {
                u.fill_checksum(src, dst);
            }
            let addr = Ipv4Addr::from(rng.next_u64() as u32);
            let port = if round % 7 == 0 {
                0
            } else {
                rng.next_u64() as u16
            };
            let (src2, dst2) = if round % 2 == 0 {
                u.rewrite_dst_port(port, partial);
                u.update_checksum_for_addr(dst, addr, partial);
                (src, addr)
            } else {
                u.rewrite_src_port(port, partial);
                u.update_checksum_for_addr(src, addr, partial);
                (addr, dst)
            };
            let incremental = u.checksum();
            if partial {
                let expect = checksum::pseudo_header_v4(src2, dst2, ip_proto::UDP, len as u32);
                assert_eq!(incremental, expect, "round {round}");
                let completed = !checksum::data(u.buffer);
                u.fill_checksum(src2, dst2);
                // The transmitter sends a computed 0 as 0xFFFF too; fill_checksum already has.
                let fresh = u.checksum();
                assert!(
                    completed == fresh || (completed == 0 && fresh == 0xFFFF),
                    "round {round}"
                );
            } else {
                assert!(u.verify_checksum(src2, dst2), "round {round}");
                u.fill_checksum(src2, dst2);
                assert_eq!(incremental, u.checksum(), "round {round}");
            }
        }
    }
}
