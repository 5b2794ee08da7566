//! ringvs: a userspace Linux Virtual Server.
//!
//! The crate is layered like smoltcp; each layer only uses the ones above it in this list.
//!
//! - [`wire`]: borrowed, zero-copy views of IPv4, TCP, UDP and ICMP headers and the virtio-net
//!   header, plus RFC 1071/1624 checksum arithmetic. Never allocates, never sees the table.
//! - [`conn`]: the connection table (keyed hash, fixed-size entries, a memory budget), the TCP
//!   state tables as data, the timer wheel, and per-server connection counts.
//! - [`dataplane`]: the per-packet pipeline: parse → lookup → (new flow: admit, persist,
//!   schedule) → state transition → rewrite with incremental checksums → emit.
//! - [`io`]: packet I/O. The io_uring TUN backend (one ring and one thread per queue), and the
//!   in-memory and pcap backends used by tests and `ringvs replay`.
//!
//! Beside them: [`config`] (figment schema and validation with provenance), [`control`] (the
//! daemon, the admin socket and the CLI client), [`health`] (realserver health checks on the
//! control plane's runtime, acting on the servers' shared flags) and [`metrics`] (Prometheus
//! names).
//!
//! The established-flow path never allocates and never calls out of the host: schedulers run
//! only when a flow is created.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod conn;
pub mod control;
pub mod dataplane;
pub mod health;
pub mod io;
pub mod metrics;
pub mod plugin;
pub mod wire;
