//! The daemon: startup in a safe order, one thread per queue, the control loop (signals,
//! admin socket, metrics, reload), and an orderly shutdown.
//!
//! Startup checks everything that can fail before touching the network (config, admin
//! socket, metrics listener), then creates the device, starts the queues and waits until
//! each runs, then installs routes if asked. Any failure undoes what was done.
//!
//! - `state`: the [`Daemon`] (its parts: the queues, the plugins, the sources, the
//!   statistics) and what every change ends with (a snapshot to the queues, health checks,
//!   routes), plus the once-a-second tick and the shutdown;
//! - `queues`: the queue threads and how to reach them, the packet I/O's control (the TUN
//!   steering program, or the AF_XDP plane);
//! - `rates`: rates and the zeroed statistics;
//! - `requests`: the admin protocol, one function per request ([`super::admin::Handler`]);
//! - `views`: the read-only answers (`status`, `list`, `connections`, `plugins`, `top`);
//! - `reload`: re-reading the config file and swapping schedulers;
//! - `start`: [`run`], [`Daemon::detached`] and [`check_io`] (what `ringvs check` asks of
//!   the packet I/O).
//!
//! `queues` and `rates` use no sibling, `state` uses them, and the others use `state` (and
//! `start` also `queues`); nothing uses `requests`, `views`, `reload` or `start` but through
//! `Daemon`'s methods.

mod queues;
mod rates;
mod reload;
mod requests;
mod start;
mod state;
mod views;

pub use start::{check_io, run};
pub use state::{Daemon, DaemonError};
