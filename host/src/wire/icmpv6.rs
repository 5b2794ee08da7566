//! ICMPv6 (RFC 4443) and the neighbour-discovery messages a director sends and reads (RFC
//! 4861: neighbour solicitation and advertisement).
//!
//! Unlike ICMPv4, the checksum covers a pseudo-header (RFC 4443 §2.3), so verifying and
//! filling take the addresses. An error message (types below 128) quotes as much of the
//! packet that caused it as fits in the minimum MTU (1280 bytes); read the quote with
//! [`crate::wire::Ipv6Packet::new_checked_quoted`].
//!
//! Neighbour discovery options are walked under RFC 4861 §4.6: an option of length 0, or one
//! that runs past the message, makes the whole message malformed (a node silently discards
//! it); unknown options are skipped.

use super::checksum;
use super::{be, ip_proto, Error, Result};
use core::net::Ipv6Addr;

/// Offsets of the ICMPv6 header fields.
pub mod field {
    use core::ops::Range;

    /// Message type (see [`super::msg_type`]).
    pub const TYPE: usize = 0;
    /// Code, whose meaning depends on the type (e.g. [`super::unreach_code`]).
    pub const CODE: usize = 1;
    /// Checksum over the pseudo-header and the whole message.
    pub const CHECKSUM: Range<usize> = 2..4;
    /// The type-specific rest of the header.
    pub const REST: Range<usize> = 4..8;
    /// The MTU of a packet-too-big message (32 bits).
    pub const MTU: Range<usize> = 4..8;
    /// The pointer of a parameter-problem message: the offset of the offending byte.
    pub const POINTER: Range<usize> = 4..8;
    /// Echo request/reply identifier.
    pub const ECHO_IDENT: Range<usize> = 4..6;
    /// Echo request/reply sequence number.
    pub const ECHO_SEQ: Range<usize> = 6..8;
    /// The flags of a neighbour advertisement (see [`super::nd_flags`]).
    pub const ND_FLAGS: usize = 4;
    /// The target address of a neighbour solicitation or advertisement.
    pub const ND_TARGET: Range<usize> = 8..24;
    /// Where a neighbour solicitation's or advertisement's options start.
    pub const ND_OPTIONS: usize = ND_TARGET.end;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::REST.end;

/// The most an error message may be, its IPv6 header included (RFC 4443 §2.4 (c)): the
/// minimum IPv6 MTU.
pub const MIN_MTU: usize = 1280;

/// Message types.
pub mod msg_type {
    /// Destination unreachable (an error; codes in [`super::unreach_code`]).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (an error; the MTU of the next hop in [`super::field::MTU`]).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (an error).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (an error).
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
}

/// Codes of [`msg_type::DEST_UNREACHABLE`] (RFC 4443 §3.1).
pub mod unreach_code {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond the scope of the source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Source address failed ingress/egress policy.
    pub const SOURCE_POLICY: u8 = 5;
    /// Reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
}

/// Flags of a neighbour advertisement ([`field::ND_FLAGS`]).
pub mod nd_flags {
    /// The sender is a router.
    pub const ROUTER: u8 = 0x80;
    /// Sent in answer to a solicitation.
    pub const SOLICITED: u8 = 0x40;
    /// Override an existing cache entry.
    pub const OVERRIDE: u8 = 0x20;
}

/// Neighbour discovery option types (RFC 4861 §4.6).
pub mod nd_option {
    /// Source link-layer address.
    pub const SOURCE_LL_ADDR: u8 = 1;
    /// Target link-layer address.
    pub const TARGET_LL_ADDR: u8 = 2;
}

/// A read/write view of an ICMPv6 message (the buffer is the whole message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>> {
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

    /// The rest of the header, whole.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::REST)
    }

    /// The MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::MTU)
    }

    /// The pointer of a parameter-problem message.
    #[inline]
    pub fn pointer(&self) -> u32 {
        be::get32(self.buffer.as_ref(), field::POINTER)
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

    /// True for the error messages (types 0–127, RFC 4443 §2.1), which quote the packet that
    /// caused them.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }

    /// The payload: everything after the header (for an error, the quoted packet).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The folded sum over the pseudo-header and the whole message.
    #[inline]
    fn full_sum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_for(src, dst, ip_proto::ICMPV6, b.len() as u32);
        checksum::combine(&[pseudo, checksum::data(b)])
    }

    /// True if the checksum is correct for a message sent from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.full_sum(src, dst) == 0xFFFF
    }

    /// The target address of a neighbour solicitation or advertisement; `None` for other
    /// types or a message too short to hold one.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        let b = self.buffer.as_ref();
        let nd = matches!(
            self.msg_type(),
            msg_type::NEIGHBOR_SOLICIT | msg_type::NEIGHBOR_ADVERT
        );
        if !nd || b.len() < field::ND_OPTIONS {
            return None;
        }
        let mut a = [0; 16];
        a.copy_from_slice(&b[field::ND_TARGET]);
        Some(Ipv6Addr::from(a))
    }

    /// The flags of a neighbour advertisement (see [`nd_flags`]).
    #[inline]
    pub fn nd_flags(&self) -> u8 {
        self.buffer.as_ref()[field::ND_FLAGS]
    }

    /// The Ethernet address in the first option of type `kind` (see [`nd_option`]) of a
    /// neighbour solicitation or advertisement: `Ok(None)` when there is none (or it is not
    /// 6 bytes long: another link layer's), `Err` when the options are malformed (a length of
    /// 0, or one past the message) or the message has no target.
    pub fn nd_link_addr(&self, kind: u8) -> Result<Option<[u8; 6]>> {
        self.nd_target().ok_or(Error)?;
        let mut rest = &self.buffer.as_ref()[field::ND_OPTIONS..];
        let mut found = None;
        while !rest.is_empty() {
            let len = usize::from(*rest.get(1).ok_or(Error)?) * 8;
            if len == 0 || len > rest.len() {
                return Err(Error);
            }
            // An Ethernet link-layer address option is 8 bytes: type, length, the address.
            if rest[0] == kind && len == 8 && found.is_none() {
                let mut mac = [0; 6];
                mac.copy_from_slice(&rest[2..8]);
                found = Some(mac);
            }
            rest = &rest[len..];
        }
        Ok(found)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv6Packet<&'a T> {
    /// The payload, borrowed for as long as the buffer (see [`Icmpv6Packet::payload`]).
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
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

    /// Sets the rest of the header, whole (the MTU, the pointer, the ND flags and reserved
    /// bytes, or an echo's identifier and sequence number).
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        be::set32(self.buffer.as_mut(), field::REST, value);
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

    /// Computes the checksum of a message sent from `src` to `dst` and stores it.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = !self.full_sum(src, dst);
        self.set_checksum(c);
    }

    /// Updates the checksum for a pseudo-header address changed from `old` to `new` (the IPv6
    /// header was rewritten; an ICMPv6 checksum is never partial here).
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        let c = checksum::update_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

/// A neighbour solicitation or advertisement with at most one Ethernet link-layer address
/// option, as a director sends them (RFC 4861 §4.3, §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdRepr {
    /// "Who has `target`?", with the sender's Ethernet address (none from an unspecified
    /// source, as in duplicate address detection).
    Solicit {
        /// The address asked for.
        target: Ipv6Addr,
        /// The sender's Ethernet address (a source link-layer address option).
        source_mac: Option<[u8; 6]>,
    },
    /// "`target` is at `target_mac`."
    Advert {
        /// [`nd_flags`].
        flags: u8,
        /// The address answered for.
        target: Ipv6Addr,
        /// Its Ethernet address (a target link-layer address option).
        target_mac: Option<[u8; 6]>,
    },
}

impl NdRepr {
    /// Describes a neighbour solicitation or advertisement; `Err` for other types or
    /// malformed options ([`Icmpv6Packet::nd_link_addr`]). The checksum is not verified.
    pub fn parse<T: AsRef<[u8]>>(p: &Icmpv6Packet<T>) -> Result<NdRepr> {
        let target = p.nd_target().ok_or(Error)?;
        if p.code() != 0 {
            return Err(Error);
        }
        Ok(match p.msg_type() {
            msg_type::NEIGHBOR_SOLICIT => NdRepr::Solicit {
                target,
                source_mac: p.nd_link_addr(nd_option::SOURCE_LL_ADDR)?,
            },
            msg_type::NEIGHBOR_ADVERT => NdRepr::Advert {
                flags: p.nd_flags() & (nd_flags::ROUTER | nd_flags::SOLICITED | nd_flags::OVERRIDE),
                target,
                target_mac: p.nd_link_addr(nd_option::TARGET_LL_ADDR)?,
            },
            _ => return Err(Error),
        })
    }

    fn mac(&self) -> Option<[u8; 6]> {
        match *self {
            NdRepr::Solicit { source_mac, .. } => source_mac,
            NdRepr::Advert { target_mac, .. } => target_mac,
        }
    }

    /// The length of the emitted message.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        field::ND_OPTIONS + if self.mac().is_some() { 8 } else { 0 }
    }

    /// Writes the message into a buffer of at least [`Self::buffer_len`] bytes (bytes beyond
    /// are not touched, and not covered by the checksum) and fills the checksum for `src` →
    /// `dst`. Returns the length written.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize> {
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error)?;
        buf.fill(0);
        let (kind, option, target) = match *self {
            NdRepr::Solicit { target, .. } => (
                msg_type::NEIGHBOR_SOLICIT,
                nd_option::SOURCE_LL_ADDR,
                target,
            ),
            NdRepr::Advert { flags, target, .. } => {
                buf[field::ND_FLAGS] = flags;
                (msg_type::NEIGHBOR_ADVERT, nd_option::TARGET_LL_ADDR, target)
            }
        };
        buf[field::TYPE] = kind;
        buf[field::ND_TARGET].copy_from_slice(&target.octets());
        if let Some(mac) = self.mac() {
            let o = field::ND_OPTIONS;
            buf[o] = option;
            buf[o + 1] = 1;
            buf[o + 2..o + 8].copy_from_slice(&mac);
        }
        Icmpv6Packet::new_unchecked(buf).fill_checksum(src, dst);
        Ok(len)
    }
}

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1), where a neighbour
/// solicitation for it is sent: `ff02::1:ff` and its low 24 bits.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from(
        0xff02_0000_0000_0000_0000_0001_ff00_0000
            | u128::from_be_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, o[13], o[14], o[15]]),
    )
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7): `33:33` and the group's low
/// 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests;
