//! The control plane: the daemon, the admin socket and its protocol, the CLI client, route
//! management and logging. It talks to the data plane only through snapshots and messages
//! ([`crate::dataplane::Control`]) and the queues' published reports.
//!
//! The daemon answers the admin socket as an [`admin::Handler`]: [`admin`] frames the
//! protocol and checks peers, and knows nothing of the daemon. A service edit is
//! [`crate::config::ServiceEdit`] all the way: parsed by the CLI, flattened into
//! [`protocol::Request`], validated by `config` and applied by the [`registry`].

pub mod admin;
pub mod announce;
pub mod client;
pub mod compare;
pub mod daemon;
pub mod forwarding;
pub mod logging;
pub mod notify;
pub mod plugins;
pub mod privileges;
pub mod protocol;
pub mod registry;
pub mod replay;
pub mod routes;
pub mod simulate;
pub mod syncload;
pub mod template;
