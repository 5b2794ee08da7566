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
pub mod vnet;

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

#[cfg(test)]
mod test_util;
