//! Packet I/O backends. Filled in by the io work.
