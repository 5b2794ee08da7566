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
//! Beside them: [`config`] (figment schema and validation with provenance; a runtime service
//! edit is one type, [`config::ServiceEdit`], from the command line through the admin
//! protocol to the registry), [`plugin`] (the built-in schedulers and the WebAssembly
//! runtime), [`control`] (the daemon, the admin socket, which knows the daemon only as a
//! [`control::admin::Handler`], and the CLI client), [`health`] (realserver health checks on
//! the control plane's runtime) and [`metrics`] (Prometheus names).
//!
//! A realserver's state shared by the queues and the control plane
//! ([`dataplane::service::DestState`]) has three writers, each with its own methods and bits:
//! the registry (operator: weight, removal, expiry), the health checkers (down, removed by a
//! check) and the queues (the overload flag of the connection thresholds).
//!
//! The established-flow path never allocates and never calls out of the host: schedulers run
//! only when a flow is created.

#![deny(unsafe_op_in_unsafe_fn)]

/// The git revision this build is from (`host/build.rs`: `RINGVS_REVISION` at build time,
/// else `git rev-parse --short=12 HEAD`), or `unknown`.
pub const REVISION: &str = env!("RINGVS_REVISION");

/// What `ringvs --version` says: the version, the git revision and the version of the WIT
/// package plugins are built against (`ringvs_abi::WIT_VERSION`).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("RINGVS_REVISION"),
    ", WIT ringvs:plugin@",
    ringvs_abi::wit_version!(),
    ")"
);

pub mod config;
pub mod conn;
pub mod control;
pub mod dataplane;
pub mod health;
pub mod io;
pub mod metrics;
pub mod plugin;
pub mod sync;
pub mod wire;
