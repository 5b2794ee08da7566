//! One packet in an I/O buffer.

use crate::wire::vnet::VnetHdr;

/// Bytes kept free in front of every packet so that encapsulation (the 20-byte outer IPv4
/// header of LVS-TUN) and the virtio-net header can be written in place.
pub const HEADROOM: usize = 64;

/// What the data plane decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the (possibly rewritten) packet back to the device.
    Forward,
    /// Drop it; the reason has been counted by the pipeline.
    Drop,
    /// Nothing to write: the pipeline kept what it needed of it (the SYN proxy keeps a
    /// client's early data for the realserver). Not a drop.
    Consumed,
}

/// A packet in a buffer owned by the I/O backend: `[headroom | packet | unused]`.
///
/// `vnet` is the virtio-net header that came with the packet when the device runs with
/// `IFF_VNET_HDR` (GSO and checksum-offload metadata); the backend writes it back in front of
/// the packet on the way out.
#[derive(Debug)]
pub struct Packet<'a> {
    buf: &'a mut [u8],
    start: usize,
    len: usize,
    /// Offload metadata read with the packet, if the device uses a virtio-net header.
    pub vnet: Option<VnetHdr>,
    /// Where to send a forwarded packet instead of towards its destination address: the
    /// realserver of an LVS-DR connection, whose MAC the frame gets (an L2 backend only).
    pub next_hop: Option<std::net::IpAddr>,
}

impl<'a> Packet<'a> {
    /// Wraps `buf[start..start + len]`. Returns `None` if the range does not fit in `buf`.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= buf.len()).then_some(Packet {
            buf,
            start,
            len,
            vnet: None,
            next_hop: None,
        })
    }

    /// The packet bytes, starting at the IP header.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The packet bytes, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Offset of the packet in the buffer.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Length of the packet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty packet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the packet's length (shorter, or longer within the buffer; the bytes it gains
    /// are whatever the buffer held) and returns the packet bytes, or `None` if the buffer
    /// is too short.
    pub fn resize(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.start.checked_add(len)? > self.buf.len() {
            return None;
        }
        self.len = len;
        Some(self.data_mut())
    }

    /// Free bytes in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Grows the packet by `n` bytes at the front and returns the new packet bytes, or `None`
    /// if there is not enough headroom.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        self.len += n;
        Some(self.data_mut())
    }

    /// The whole underlying buffer (headroom included), for backends writing headers in front.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        self.buf
    }
}
