//! ICMPv4 header (RFC 792).
//!
//! An error message (destination unreachable, time exceeded, …) quotes the IP header of the
//! packet that caused it and at least 8 bytes of its payload; read that with
//! [`crate::wire::Ipv4Packet::new_checked_quoted`] and [`crate::wire::L4Ports`].

use super::{be, checksum, Error, Result};

/// Offsets of the ICMPv4 header fields.
pub mod field {
    use core::ops::Range;

    /// Message type (see [`super::msg_type`]).
    pub const TYPE: usize = 0;
    /// Code, whose meaning depends on the type (e.g. [`super::unreach_code`]).
    pub const CODE: usize = 1;
    /// Checksum over the whole message.
    pub const CHECKSUM: Range<usize> = 2..4;
    /// The type-specific rest of the header.
    pub const REST: Range<usize> = 4..8;
    /// Echo request/reply identifier.
    pub const ECHO_IDENT: Range<usize> = 4..6;
    /// Echo request/reply sequence number.
    pub const ECHO_SEQ: Range<usize> = 6..8;
    /// Next-hop MTU of a fragmentation-needed message (RFC 1191).
    pub const MTU: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::REST.end;

/// Message types.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (an error; codes in [`super::unreach_code`]).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (an error; deprecated by RFC 6633).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect (an error).
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (an error).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (an error).
    pub const PARAM_PROBLEM: u8 = 12;
}

/// Codes of [`msg_type::DEST_UNREACHABLE`] (RFC 792, RFC 1812).
pub mod unreach_code {
    /// Network unreachable.
    pub const NET_UNREACHABLE: u8 = 0;
    /// Host unreachable.
    pub const HOST_UNREACHABLE: u8 = 1;
    /// Protocol unreachable.
    pub const PROTO_UNREACHABLE: u8 = 2;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Fragmentation needed and DF set; the next-hop MTU is in the header (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
    /// Source route failed.
    pub const SOURCE_ROUTE_FAILED: u8 = 5;
    /// Destination network unknown.
    pub const NET_UNKNOWN: u8 = 6;
    /// Destination host unknown.
    pub const HOST_UNKNOWN: u8 = 7;
    /// Source host isolated.
    pub const HOST_ISOLATED: u8 = 8;
    /// Communication with the destination network administratively prohibited.
    pub const NET_PROHIBITED: u8 = 9;
    /// Communication with the destination host administratively prohibited.
    pub const HOST_PROHIBITED: u8 = 10;
    /// Network unreachable for the type of service.
    pub const NET_UNREACHABLE_TOS: u8 = 11;
    /// Host unreachable for the type of service.
    pub const HOST_UNREACHABLE_TOS: u8 = 12;
    /// Communication administratively prohibited (by filtering).
    pub const ADMIN_PROHIBITED: u8 = 13;
    /// Host precedence violation.
    pub const HOST_PRECEDENCE_VIOLATION: u8 = 14;
    /// Precedence cutoff in effect.
    pub const PRECEDENCE_CUTOFF: u8 = 15;
}

/// A read/write view of an ICMPv4 message (the buffer is the whole message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error);
        }
        Ok(())
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type (see [`msg_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The type-specific rest of the header, as one big-endian word.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::REST)
    }

    /// The next-hop MTU of a fragmentation-needed message.
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::MTU)
    }

    /// The identifier of an echo request or reply.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// The sequence number of an echo request or reply.
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be::get16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// True for the error messages, which quote the packet that caused them: destination
    /// unreachable, source quench, redirect, time exceeded, parameter problem.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            msg_type::DEST_UNREACHABLE
                | msg_type::SOURCE_QUENCH
                | msg_type::REDIRECT
                | msg_type::TIME_EXCEEDED
                | msg_type::PARAM_PROBLEM
        )
    }

    /// The payload: everything after the header (for an error, the quoted packet).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True if the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xFFFF
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// The payload, borrowed for as long as the buffer (see [`Icmpv4Packet::payload`]).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the rest of the header.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        be::set32(self.buffer.as_mut(), field::REST, value);
    }

    /// Sets the next-hop MTU of a fragmentation-needed message.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::MTU, value);
    }

    /// Sets the identifier of an echo request or reply.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the sequence number of an echo request or reply.
    #[inline]
    pub fn set_echo_seq(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::ECHO_SEQ, value);
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes the checksum over the whole message and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::data(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::packets;
    use crate::wire::{ip_proto, Ipv4Packet, L4Ports, TcpPacket, UdpPacket};
    use core::net::Ipv4Addr;

    #[test]
    fn linux_port_unreachable() {
        let ip = Ipv4Packet::new_checked(&packets::PORT_UNREACHABLE[..]).unwrap();
        assert_eq!(ip.protocol(), ip_proto::ICMP);
        let icmp = Icmpv4Packet::new_checked(ip.into_payload()).unwrap();
        assert_eq!(icmp.msg_type(), msg_type::DEST_UNREACHABLE);
        assert_eq!(icmp.code(), unreach_code::PORT_UNREACHABLE);
        assert_eq!(icmp.checksum(), 0x1136);
        assert_eq!(icmp.rest_of_header(), 0);
        assert!(icmp.is_error());
        assert!(icmp.verify_checksum());
        // Linux quotes the whole datagram: it parses as a whole packet.
        let inner = Ipv4Packet::new_checked(icmp.into_payload()).unwrap();
        assert_eq!(inner.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(inner.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(inner.ident(), 0x1234);
        let udp = UdpPacket::new_checked(inner.into_payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (53000, 53));
        assert!(udp.verify_checksum(inner.src_addr(), inner.dst_addr()));
        let ports = L4Ports::new_checked(inner.into_payload()).unwrap();
        assert_eq!((ports.src_port(), ports.dst_port()), (53000, 53));
    }

    #[test]
    fn frag_needed_with_truncated_tcp() {
        let ip = Ipv4Packet::new_checked(&packets::FRAG_NEEDED[..]).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.into_payload()).unwrap();
        assert_eq!(icmp.msg_type(), msg_type::DEST_UNREACHABLE);
        assert_eq!(icmp.code(), unreach_code::FRAG_NEEDED);
        assert_eq!(icmp.next_hop_mtu(), 1400);
        assert_eq!(icmp.rest_of_header(), 1400);
        assert!(icmp.verify_checksum());
        let quoted = icmp.into_payload();
        assert_eq!(Ipv4Packet::new_checked(quoted), Err(Error));
        let inner = Ipv4Packet::new_checked_quoted(quoted).unwrap();
        assert_eq!(inner.total_len(), 1500);
        assert_eq!(inner.payload().len(), 8);
        assert_eq!(TcpPacket::new_checked(inner.payload()), Err(Error));
        let ports = L4Ports::new_checked(inner.payload()).unwrap();
        assert_eq!((ports.src_port(), ports.dst_port()), (80, 54321));
    }

    /// LVS-NAT translation of an ICMP error from a real server (outbound): the quoted
    /// packet is client → RIP:port and becomes client → VIP:vport; the ICMP checksum is
    /// recomputed.
    #[test]
    fn translate_quoted_packet() {
        let mut buf = packets::FRAG_NEEDED;
        let vip = Ipv4Addr::new(203, 0, 113, 7);
        let mut ip = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        let mut icmp = Icmpv4Packet::new_checked(ip.payload_mut()).unwrap();
        let mut inner = Ipv4Packet::new_checked_quoted(icmp.payload_mut()).unwrap();
        let (mut inner_ip, inner_l4) = inner.split_mut();
        // The quoted packet went RIP → client; rewrite its source.
        assert_eq!(inner_ip.rewrite_src_addr(vip), Ipv4Addr::new(10, 0, 0, 1));
        let mut ports = L4Ports::new_checked(inner_l4).unwrap();
        ports.set_src_port(443);
        assert!(inner_ip.verify_checksum());
        icmp.fill_checksum();
        assert!(icmp.verify_checksum());
        // Worked out independently (Python): inner checksum 0x92d4, ICMP checksum 0x0732.
        let expect = [
            0x03, 0x04, 0x07, 0x32, 0x00, 0x00, 0x05, 0x78, // ICMP
            0x45, 0x00, 0x05, 0xdc, 0x5d, 0x3e, 0x40, 0x00, 0x3f, 0x06, 0x92, 0xd4, 0xcb, 0x00,
            0x71, 0x07, 0x0a, 0x00, 0x00, 0x02, // quoted IPv4
            0x01, 0xbb, 0xd4, 0x31, 0x2e, 0x60, 0xec, 0x04, // quoted TCP
        ];
        assert_eq!(buf[20..], expect);
        assert_eq!(buf[..20], packets::FRAG_NEEDED[..20]);
    }

    #[test]
    fn build_echo_request() {
        // Ident 0x1f2e, seq 1, 8 payload bytes; checksum 0x606b worked out independently.
        let mut buf = [0u8; 16];
        buf[8..].copy_from_slice(b"ringvs!!");
        let mut icmp = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        icmp.set_msg_type(msg_type::ECHO_REQUEST);
        icmp.set_code(0);
        icmp.set_echo_ident(0x1f2e);
        icmp.set_echo_seq(1);
        icmp.fill_checksum();
        assert!(!icmp.is_error());
        assert_eq!(icmp.echo_ident(), 0x1f2e);
        assert_eq!(icmp.echo_seq(), 1);
        assert_eq!(icmp.rest_of_header(), 0x1f2e_0001);
        assert_eq!(&buf[..8], &[8, 0, 0x60, 0x6b, 0x1f, 0x2e, 0, 1]);
        let mut icmp = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        icmp.set_rest_of_header(0x0000_0578);
        icmp.set_next_hop_mtu(576);
        assert_eq!(icmp.rest_of_header(), 576);
    }

    #[test]
    fn truncation() {
        let msg = &packets::FRAG_NEEDED[20..];
        for n in 0..=msg.len() {
            match Icmpv4Packet::new_checked(&msg[..n]) {
                Ok(icmp) => {
                    assert!(n >= 8);
                    assert_eq!(icmp.next_hop_mtu(), 1400);
                    assert!(icmp.is_error());
                    assert_eq!(icmp.payload(), &msg[8..n]);
                    assert_eq!(icmp.verify_checksum(), n == msg.len());
                }
                Err(Error) => assert!(n < 8),
            }
        }
    }
}
