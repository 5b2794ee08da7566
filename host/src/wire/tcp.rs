//! TCP header (RFC 9293).

use super::checksum::{self, PseudoAddr};
use super::{be, ip_proto, Error, Result, Side};

/// Offsets of the TCP header fields.
pub mod field {
    use core::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset, the header length in 32-bit words (high nibble); reserved bits (low).
    pub const DATA_OFF: usize = 12;
    /// Flags (see [`super::flags`]).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WIN_SIZE: Range<usize> = 14..16;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// Urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
}

/// The flag bits of [`field::FLAGS`].
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// A read/write view of a TCP segment (header and payload; the buffer is the segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps a buffer: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds at least [`HEADER_LEN`] bytes and that the data offset
    /// is at least 5 words and within the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > len {
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

    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// The acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// The SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// The RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// The PSH flag.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// The ACK flag.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// The URG flag.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// The ECE flag.
    #[inline]
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }

    /// The CWR flag.
    #[inline]
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }

    /// The window field (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::URGENT)
    }

    /// End of the header, kept within `HEADER_LEN..=buffer length` so that no later setter
    /// can make an accessor panic.
    #[inline]
    fn header_end(&self) -> usize {
        let len = self.buffer.as_ref().len();
        self.header_len().max(HEADER_LEN).min(len)
    }

    /// The options: the header bytes after the first [`HEADER_LEN`].
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_end()]
    }

    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_end()..]
    }

    /// True if the checksum is correct for a segment sent from `src` to `dst`. The whole
    /// buffer is the segment.
    #[inline]
    pub fn verify_checksum<A: PseudoAddr>(&self, src: A, dst: A) -> bool {
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_for(src, dst, ip_proto::TCP, b.len() as u32);
        checksum::combine(&[pseudo, checksum::data(b)]) == 0xFFFF
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The payload, borrowed for as long as the buffer (see [`TcpPacket::payload`]).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let start = self.header_end();
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        be::set32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        be::set32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the data offset from a header length in bytes (rounded down to 32-bit words);
    /// the reserved bits are kept.
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0F) | (((value / 4) as u8) << 4);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the window field.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::WIN_SIZE, value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_end();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes the checksum of a segment sent from `src` to `dst` and stores it. The whole
    /// buffer is the segment.
    #[inline]
    pub fn fill_checksum<A: PseudoAddr>(&mut self, src: A, dst: A) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_for(src, dst, ip_proto::TCP, b.len() as u32);
        let c = !checksum::combine(&[pseudo, checksum::data(b)]);
        self.set_checksum(c);
    }

    /// Sets the source port and returns the old one. A complete checksum is updated
    /// incrementally; a `partial` one (pseudo-header sum only, virtio-net `NEEDS_CSUM`) does
    /// not cover ports and is left alone.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16, partial: bool) -> u16 {
        let old = self.src_port();
        if !partial {
            self.set_checksum(checksum::update16(self.checksum(), old, port));
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
            self.set_checksum(checksum::update16(self.checksum(), old, port));
        }
        self.set_dst_port(port);
        old
    }

    /// NAT in one checksum update: the port on `side` becomes `port` and the pseudo-header
    /// address changed from `addr.0` to `addr.1` (the IP header was rewritten); returns the
    /// old port. The same result as [`Self::update_checksum_for_addr`] then
    /// `rewrite_*_port`, with the field read and written once.
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
        } else {
            d.bytes2(old, new).apply(c)
        };
        b[f..f + 2].copy_from_slice(&c);
        u16::from_be_bytes(old)
    }

    /// Updates the checksum for a pseudo-header address changed from `old` to `new` (the IP
    /// header was rewritten). A `partial` field is a non-complemented pseudo-header sum and
    /// is updated as such ([`checksum::update_partial_addr`]).
    #[inline]
    pub fn update_checksum_for_addr<A: PseudoAddr>(&mut self, old: A, new: A, partial: bool) {
        let c = if partial {
            checksum::update_partial_addr(self.checksum(), old, new)
        } else {
            checksum::update_addr(self.checksum(), old, new)
        };
        self.set_checksum(c);
    }
}

/// A high-level description of a TCP header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flags (see [`flags`]).
    pub flags: u8,
    /// Window field (unscaled).
    pub window_len: u16,
    /// Length of the payload in bytes.
    pub payload_len: usize,
}

impl TcpRepr {
    /// Describes the header of a segment that passes [`TcpPacket::check_len`]. Options and
    /// the urgent pointer are skipped; the checksum is not verified (it may be partial, and
    /// verifying needs the addresses: [`TcpPacket::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Result<TcpRepr> {
        packet.check_len()?;
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            payload_len: packet.payload().len(),
        })
    }

    /// The length of the emitted header.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole segment: header and payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header (no options, urgent pointer 0) into the front of the packet
    /// and fills the checksum over the whole buffer, which must be the segment: the header
    /// and the payload already in place ([`Self::buffer_len`] bytes, at least
    /// [`HEADER_LEN`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>, A: PseudoAddr>(
        &self,
        packet: &mut TcpPacket<T>,
        src: A,
        dst: A,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.buffer.as_mut()[field::DATA_OFF] = ((HEADER_LEN / 4) as u8) << 4;
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(0);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{packets, Rng};
    use crate::wire::vnet::{self, VnetHdr};
    use crate::wire::Ipv4Packet;
    use core::net::Ipv4Addr;

    const A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const A1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn parse_linux_syn() {
        let ip = Ipv4Packet::new_checked(&packets::SYN[..]).unwrap();
        let t = TcpPacket::new_checked(ip.into_payload()).unwrap();
        assert_eq!(t.src_port(), 45434);
        assert_eq!(t.dst_port(), 80);
        assert_eq!(t.seq_number(), 0x2e60_ec03);
        assert_eq!(t.ack_number(), 0);
        assert_eq!(t.header_len(), 40);
        assert_eq!(t.flags(), flags::SYN);
        assert!(t.syn() && !t.ack() && !t.fin() && !t.rst() && !t.psh() && !t.urg());
        assert!(!t.ece() && !t.cwr());
        assert_eq!(t.window_len(), 64240);
        assert_eq!(t.checksum(), 0x203b);
        assert_eq!(t.urgent_at(), 0);
        assert_eq!(t.options(), &packets::SYN[40..60]);
        assert_eq!(t.payload(), &[] as &[u8]);
        assert!(t.verify_checksum(A2, A1));
        assert!(!t.verify_checksum(A1, Ipv4Addr::new(10, 0, 0, 3)));
        let mut copy = packets::SYN;
        let mut t = TcpPacket::new_checked(&mut copy[20..]).unwrap();
        t.set_checksum(0xdead);
        t.fill_checksum(A2, A1);
        assert_eq!(copy, packets::SYN);
    }

    #[test]
    fn parse_and_emit_linux_rst() {
        let t = TcpPacket::new_checked(&packets::RST_ACK[20..]).unwrap();
        let repr = TcpRepr::parse(&t).unwrap();
        assert_eq!(
            repr,
            TcpRepr {
                src_port: 8080,
                dst_port: 40000,
                seq_number: 0,
                ack_number: 0x1122_3345,
                flags: flags::RST | flags::ACK,
                window_len: 0,
                payload_len: 0,
            }
        );
        assert_eq!(repr.buffer_len(), 20);
        let mut buf = [0x5Au8; 20];
        repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), A2, A1);
        assert_eq!(buf, packets::RST_ACK[20..]);
    }

    #[test]
    fn emit_with_payload() {
        let repr = TcpRepr {
            src_port: 80,
            dst_port: 1234,
            seq_number: 1,
            ack_number: 2,
            flags: flags::PSH | flags::ACK,
            window_len: 512,
            payload_len: 5,
        };
        let mut buf = [0u8; 25];
        buf[20..].copy_from_slice(b"hello");
        let mut t = TcpPacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut t, A1, A2);
        let t = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(t.verify_checksum(A1, A2));
        assert_eq!(t.payload(), b"hello");
        assert_eq!(TcpRepr::parse(&t), Ok(repr));
    }

    #[test]
    fn truncation() {
        let seg = &packets::SYN[20..];
        for n in 0..=seg.len() {
            match TcpPacket::new_checked(&seg[..n]) {
                Ok(t) => {
                    assert_eq!(n, 40, "the header is 40 bytes with options");
                    assert_eq!(t.header_len(), 40);
                    assert_eq!(t.options().len(), 20);
                    assert!(t.verify_checksum(A2, A1));
                }
                Err(Error) => assert!(n < 40),
            }
        }
        // Without options: any prefix of at least 20 bytes is a segment.
        let mut b = [0xEEu8; 30];
        b[..20].copy_from_slice(&packets::RST_ACK[20..]);
        for n in 0..=30 {
            match TcpPacket::new_checked(&b[..n]) {
                Ok(t) => {
                    assert!(n >= 20);
                    assert_eq!(t.payload(), &b[20..n]);
                    assert_eq!(t.src_port(), 8080);
                    assert_eq!(t.ack_number(), 0x1122_3345);
                }
                Err(Error) => assert!(n < 20),
            }
        }
    }

    #[test]
    fn malformed() {
        let mut b = [0u8; 40];
        b.copy_from_slice(&packets::SYN[20..]);
        for (off, ok) in [(0u8, false), (4, false), (5, true), (10, true), (11, false)] {
            b[12] = off << 4;
            assert_eq!(TcpPacket::new_checked(&b[..]).is_ok(), ok, "offset {off}");
        }
        assert_eq!(TcpPacket::new_checked(&b[..19]), Err(Error));
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 24];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(1);
        t.set_dst_port(2);
        t.set_seq_number(0x0304_0506);
        t.set_ack_number(0x0708_090a);
        t.set_header_len(24);
        t.set_flags(flags::FIN | flags::CWR);
        t.set_window_len(0x0b0c);
        t.set_checksum(0x0d0e);
        t.set_urgent_at(0x0f10);
        t.payload_mut().fill(0); // nothing: the header is the whole buffer
        assert!(t.fin() && t.cwr());
        assert_eq!(t.options(), &[0, 0, 0, 0]);
        assert_eq!(
            b,
            [0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x60, 0x81, 11, 12, 13, 14, 15, 16, 0, 0, 0, 0]
        );
    }

    /// Random segments: rewriting an address and a port incrementally gives exactly the
    /// checksum a full computation gives.
    #[test]
    fn nat_rewrite_equals_fill() {
        let mut rng = Rng::new(0x6_6_6);
        let mut buf = [0u8; 120];
        for round in 0..10_000 {
            let len = 20 + rng.below(101) as usize;
            let b = &mut buf[..len];
            rng.fill(b);
            b[12] = 0x50;
            let (src, dst) = (
                Ipv4Addr::from(rng.next_u64() as u32),
                Ipv4Addr::from(rng.next_u64() as u32),
            );
            let mut t = TcpPacket::new_checked(&mut *b).unwrap();
            t.fill_checksum(src, dst);
            // Inbound: dst VIP:port → RIP:port. Outbound: src RIP:port → VIP:port.
            let addr = Ipv4Addr::from(rng.next_u64() as u32);
            let port = rng.next_u64() as u16;
            let (src2, dst2) = if round % 2 == 0 {
                t.rewrite_dst_port(port, false);
                t.update_checksum_for_addr(dst, addr, false);
                (src, addr)
            } else {
                t.rewrite_src_port(port, false);
                t.update_checksum_for_addr(src, addr, false);
                (addr, dst)
            };
            assert!(t.verify_checksum(src2, dst2), "round {round}");
            let incremental = t.checksum();
            t.fill_checksum(src2, dst2);
            assert_eq!(incremental, t.checksum(), "round {round}");
        }
    }

    /// The same with a partial checksum: the field holds the pseudo-header sum; after the
    /// rewrite it must equal the new pseudo-header sum, and completing it (what the kernel
    /// or NIC does on transmit) gives the full checksum.
    #[test]
    fn nat_rewrite_partial() {
        let mut rng = Rng::new(0xC5);
        let mut buf = [0u8; 120];
        for round in 0..10_000 {
            let len = 20 + rng.below(101) as usize;
            let b = &mut buf[..len];
            rng.fill(b);
            b[12] = 0x50;
            let (src, dst) = (
                Ipv4Addr::from(rng.next_u64() as u32),
                Ipv4Addr::from(rng.next_u64() as u32),
            );
            let mut t = TcpPacket::new_checked(&mut *b).unwrap();
            t.set_checksum(checksum::pseudo_header_v4(
                src,
                dst,
                ip_proto::TCP,
                len as u32,
            ));
            let addr = Ipv4Addr::from(rng.next_u64() as u32);
            let port = rng.next_u64() as u16;
            let before = t.checksum();
            let (src2, dst2) = if round % 2 == 0 {
                t.rewrite_dst_port(port, true);
                assert_eq!(t.checksum(), before, "ports are not in a partial sum");
                t.update_checksum_for_addr(dst, addr, true);
                (src, addr)
            } else {
                t.rewrite_src_port(port, true);
                t.update_checksum_for_addr(src, addr, true);
                (addr, dst)
            };
            let expect = checksum::pseudo_header_v4(src2, dst2, ip_proto::TCP, len as u32);
            assert_eq!(t.checksum(), expect, "round {round}");
            let completed = !checksum::data(t.buffer);
            t.fill_checksum(src2, dst2);
            assert_eq!(completed, t.checksum(), "round {round}");
        }
    }

    /// A real partial checksum from Linux (TUN with `IFF_VNET_HDR` and checksum offload),
    /// rewritten as LVS-NAT does inbound.
    #[test]
    fn linux_partial_syn() {
        let mut buf = packets::VNET_SYN_PARTIAL;
        let hdr = VnetHdr::parse(&buf).unwrap();
        assert!(hdr.needs_csum());
        assert_eq!((hdr.csum_start, hdr.csum_offset), (20, 16));
        assert_eq!(field::CHECKSUM.start, usize::from(hdr.csum_offset));
        let rip = Ipv4Addr::new(192, 168, 10, 5);
        let mut ip = Ipv4Packet::new_checked(&mut buf[vnet::LEN..]).unwrap();
        let (mut ip, l4) = ip.split_mut();
        let mut t = TcpPacket::new_checked(l4).unwrap();
        assert_eq!(t.checksum(), 0x1433);
        let vip = ip.rewrite_dst_addr(rip);
        assert_eq!(vip, Ipv4Addr::new(10, 1, 0, 1));
        t.update_checksum_for_addr(vip, rip, true);
        assert_eq!(t.rewrite_dst_port(8080, true), 80);
        let src = ip.src_addr();
        assert_eq!(
            t.checksum(),
            checksum::pseudo_header_v4(src, rip, ip_proto::TCP, 40)
        );
        assert!(ip.verify_checksum());
        // Complete it as the transmitter would, and compare with a fresh computation.
        let completed = !checksum::data(t.buffer);
        t.set_checksum(completed);
        assert!(t.verify_checksum(src, rip));
    }
}
