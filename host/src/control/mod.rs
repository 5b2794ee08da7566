//! The control plane: the daemon, the admin socket and its protocol, the CLI client, route
//! management and logging. It talks to the data plane only through snapshots and messages
//! ([`crate::dataplane::Control`]) and the queues' published reports.

pub mod admin;
pub mod client;
pub mod daemon;
pub mod logging;
pub mod notify;
pub mod plugins;
pub mod protocol;
pub mod registry;
pub mod replay;
pub mod routes;
