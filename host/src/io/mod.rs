//! Packet I/O backends.
//!
//! - [`mem`]: the pipeline contract over byte slices, for tests and replay.
//! - [`pcap`]: classic pcap reading (IP packets out of the usual link types) and writing.

pub mod mem;
pub mod pcap;

pub use mem::{process_packets, process_packets_vnet};
pub use pcap::{PcapError, PcapReader, PcapRecord, PcapWriter};
