//! The ports at the start of a TCP or UDP header.
//!
//! An ICMP error is only guaranteed to quote 8 bytes of the offending packet's payload, so a
//! quoted TCP header is usually cut short; its first 4 bytes, the ports, are what connection
//! lookup and LVS-NAT translation need.

use super::{be, Error, Result};

/// Offsets of the port fields, the same in TCP and UDP.
pub mod field {
    use core::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
}

/// Length of the view.
pub const LEN: usize = field::DST_PORT.end;

/// A read/write view of the source and destination ports of a TCP or UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Ports<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> L4Ports<T> {
    /// Wraps a buffer without checking it. Accessors may panic unless [`Self::check_len`]
    /// succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> L4Ports<T> {
        L4Ports { buffer }
    }

    /// Wraps a buffer: [`Self::new_unchecked`] then [`Self::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<L4Ports<T>> {
        let ports = Self::new_unchecked(buffer);
        ports.check_len()?;
        Ok(ports)
    }

    /// Checks that the buffer holds at least [`LEN`] bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < LEN {
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
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> L4Ports<T> {
    /// Sets the source port; no checksum is touched.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    /// Sets the destination port; no checksum is touched.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        be::set16(self.buffer.as_mut(), field::DST_PORT, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::packets;

    #[test]
    fn read_and_write() {
        let quoted_tcp = &packets::FRAG_NEEDED[48..];
        let p = L4Ports::new_checked(quoted_tcp).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (80, 54321));
        let mut b = [0u8; 8];
        b.copy_from_slice(quoted_tcp);
        let mut p = L4Ports::new_checked(&mut b[..]).unwrap();
        p.set_src_port(0x1234);
        p.set_dst_port(0xabcd);
        assert_eq!(b[..4], [0x12, 0x34, 0xab, 0xcd]);
        assert_eq!(b[4..], quoted_tcp[4..]);
    }

    #[test]
    fn truncation() {
        let b = &packets::DNS[20..];
        for n in 0..=b.len() {
            match L4Ports::new_checked(&b[..n]) {
                Ok(p) => {
                    assert!(n >= 4);
                    assert_eq!((p.src_port(), p.dst_port()), (53535, 53));
                }
                Err(Error) => assert!(n < 4),
            }
        }
    }
}
