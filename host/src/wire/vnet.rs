//! The virtio-net header (`struct virtio_net_hdr`) that a TUN device opened with
//! `IFF_VNET_HDR` puts in front of every packet: checksum-offload and GSO metadata.
//!
//! The device is switched to little-endian headers (`TUNSETVNETLE`), so fields are read as
//! little-endian.

use super::{Error, Result};
use core::ops::Range;

mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

/// Length of the header on the wire.
pub const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum field holds only the pseudo-header
/// sum; whoever transmits the packet completes it (the kernel's `CHECKSUM_PARTIAL`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`.
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into the GSO type.
pub const GSO_ECN: u8 = 0x80;

/// A parsed virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID`.
    pub flags: u8,
    /// One of the `GSO_*` constants, possibly or-ed with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers to replicate in each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the packet.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
}

fn le16(b: &[u8], r: Range<usize>) -> u16 {
    u16::from_le_bytes([b[r.start], b[r.start + 1]])
}

impl VnetHdr {
    /// Parses the first [`LEN`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr> {
        if buf.len() < LEN {
            return Err(Error);
        }
        Ok(VnetHdr {
            flags: buf[field::FLAGS],
            gso_type: buf[field::GSO_TYPE],
            hdr_len: le16(buf, field::HDR_LEN),
            gso_size: le16(buf, field::GSO_SIZE),
            csum_start: le16(buf, field::CSUM_START),
            csum_offset: le16(buf, field::CSUM_OFFSET),
        })
    }

    /// Writes the header into the first [`LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < LEN {
            return Err(Error);
        }
        buf[field::FLAGS] = self.flags;
        buf[field::GSO_TYPE] = self.gso_type;
        buf[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        buf[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        buf[field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        buf[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }

    /// True if the transport checksum is partial (pseudo-header sum only).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// True if the packet is a GSO super-packet to be segmented on transmit.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [1u8, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let h = VnetHdr::parse(&bytes).unwrap();
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (54, 1448, 34, 16)
        );
        let mut out = [0u8; LEN];
        h.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn truncated() {
        let bytes = [0u8; LEN];
        for n in 0..LEN {
            assert_eq!(VnetHdr::parse(&bytes[..n]), Err(Error));
            let mut short = [0u8; LEN];
            assert_eq!(VnetHdr::default().emit(&mut short[..n]), Err(Error));
        }
    }
}
