//! Borrowed, zero-copy packet views.
//!
//! Each header type is a struct wrapping a buffer (`T: AsRef<[u8]>`), in the manner of
//! smoltcp's `wire`: [`Ipv4Packet::new_checked`] (and its siblings) validate the lengths once,
//! after which no accessor can panic, whatever the bytes and whatever the setters wrote since.
//! Field offsets are public constants in each module's `field` submodule. Setters exist when
//! the buffer is also `AsMut<[u8]>`. A separate plain `Repr` type describes a header for
//! building packets (`parse` / `emit`).
//!
//! Checksums follow RFC 1071 (full computation) and RFC 1624 (incremental update), see
//! [`checksum`]. The rewriters used by LVS-NAT (`rewrite_*`) update checksums incrementally,
//! including transport checksums that are *partial* (virtio-net `NEEDS_CSUM`: the field holds
//! the pseudo-header sum only).
//!
//! This layer never allocates, never panics on input that passed a checked constructor, and
//! knows nothing of connections.

#![deny(missing_docs)]

pub mod checksum;
pub mod icmpv4;
pub mod ipv4;
pub mod ports;
pub mod tcp;
pub mod udp;
pub mod vnet;

pub use icmpv4::Icmpv4Packet;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ports::L4Ports;
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// IP protocol numbers (the IPv4 `protocol` field, the IPv6 `next header`).
pub mod ip_proto {
    /// Internet Control Message Protocol.
    pub const ICMP: u8 = 1;
    /// IP in IP encapsulation (LVS-TUN).
    pub const IPIP: u8 = 4;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
}

/// The unit error of the wire layer: the bytes are not a well-formed header of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed packet")
    }
}

impl std::error::Error for Error {}

/// Result of the wire layer.
pub type Result<T> = core::result::Result<T, Error>;

/// Big-endian reads and writes at the fixed offsets of the `field` modules.
///
/// The slices are indexed with bounds checks; callers guarantee (through `check_len`) that
/// the offsets are in range.
mod be {
    use core::ops::Range;

    #[inline]
    pub(super) fn get16(b: &[u8], f: Range<usize>) -> u16 {
        u16::from_be_bytes([b[f.start], b[f.start + 1]])
    }

    #[inline]
    pub(super) fn get32(b: &[u8], f: Range<usize>) -> u32 {
        let i = f.start;
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    #[inline]
    pub(super) fn get_array4(b: &[u8], f: Range<usize>) -> [u8; 4] {
        let i = f.start;
        [b[i], b[i + 1], b[i + 2], b[i + 3]]
    }

    #[inline]
    pub(super) fn set16(b: &mut [u8], f: Range<usize>, v: u16) {
        let [x, y] = v.to_be_bytes();
        b[f.start] = x;
        b[f.start + 1] = y;
    }

    #[inline]
    pub(super) fn set32(b: &mut [u8], f: Range<usize>, v: u32) {
        set_array4(b, f, v.to_be_bytes());
    }

    #[inline]
    pub(super) fn set_array4(b: &mut [u8], f: Range<usize>, v: [u8; 4]) {
        let i = f.start;
        b[i] = v[0];
        b[i + 1] = v[1];
        b[i + 2] = v[2];
        b[i + 3] = v[3];
    }
}

#[cfg(test)]
mod test_util;
