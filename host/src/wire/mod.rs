//! Borrowed, zero-copy packet views.
//!
//! Filled in by the wire work; `vnet` is here first because the I/O seam needs it.

pub mod vnet;

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
