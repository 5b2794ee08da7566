//! Realserver health checks in the manner of keepalived: a TCP connect or an HTTP GET per
//! realserver every `interval`, a `timeout` per check, `rise` consecutive successes to come
//! up and `fall` consecutive failures to go down. A down server is quiesced (`DEST_F_DOWN`:
//! no new flows, existing flows kept, its configured weight untouched) or removed
//! (`DEST_F_HEALTH_REMOVED` too: its connections drain like those of a server the operator
//! removed), and restored when healthy again.
//!
//! Checks run on the control plane's tokio runtime, one task per checked realserver, with
//! non-blocking sockets. They never take the daemon's lock: a transition is one atomic
//! update of the server's shared [`DestState`] flags, which the queues read when they
//! schedule a new flow. The data plane never waits for a check; the admin socket never
//! waits for one either.
//!
//! [`Monitor::sync`] makes the running checkers match what should be checked (after
//! startup, a reload or a runtime edit): a new server gets a checker, a removed one loses
//! it (its health flags cleared), an unchanged one keeps its checker and its state, and a
//! changed check takes over the state of the one it replaces. Servers new to the director
//! start `Pending` (no flows until one check passes); see docs/HEALTH.md for why.

mod checker;
pub mod notify;
pub mod probe;
pub mod script;
pub mod state;

pub use checker::{apply_flags, clear_flags, Checker, Status};
pub use probe::Failure;
pub use state::{Health, Machine};

use crate::config::{HealthConfig, NotifyConfig};
use crate::dataplane::service::{DestState, DEST_F_DOWN};
use notify::Notifier;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A realserver that should be checked.
#[derive(Debug, Clone)]
pub struct Want {
    /// Its service's name.
    pub service: String,
    /// Its address.
    pub server: SocketAddr,
    /// Its shared state (whose flags the checker writes).
    pub dest: Arc<DestState>,
    /// The check.
    pub cfg: HealthConfig,
    /// Its service's notify hooks (`notify`), if any.
    pub notify: Option<NotifyConfig>,
}

/// Counts of what [`Monitor::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Checkers started for servers not checked before.
    pub started: usize,
    /// Checkers replaced because the check changed (state carried over).
    pub changed: usize,
    /// Checkers stopped (server removed, or its service no longer checks).
    pub stopped: usize,
    /// Checkers left running as they were.
    pub kept: usize,
}

/// Every running checker, by service name and server address.
#[derive(Debug)]
pub struct Monitor {
    /// The runtime the checkers run on: given, or the one `sync` is first called in.
    rt: Option<tokio::runtime::Handle>,
    checkers: HashMap<(String, SocketAddr), Checker>,
    /// Each service's notify hooks, kept across syncs while its `notify` is the same (so is
    /// its rate limit).
    notifiers: HashMap<String, Arc<Notifier>>,
}

impl Monitor {
    /// A monitor whose checkers run on `rt` (it may be called from any thread), or, without
    /// one, on the Tokio runtime its first `sync` is called in.
    pub fn new(rt: Option<tokio::runtime::Handle>) -> Monitor {
        Monitor {
            rt,
            checkers: HashMap::new(),
            notifiers: HashMap::new(),
        }
    }

    /// Makes the running checkers match `want` exactly.
    pub fn sync(&mut self, want: impl IntoIterator<Item = Want>) -> SyncReport {
        let mut report = SyncReport::default();
        if self.rt.is_none() {
            self.rt = tokio::runtime::Handle::try_current().ok();
        }
        let Some(rt) = self.rt.clone() else {
            // Outside any runtime nothing can run a checker; the caller keeps its state.
            tracing::warn!("health checks not started: no Tokio runtime");
            return report;
        };
        let mut next: HashMap<(String, SocketAddr), Checker> = HashMap::new();
        let mut wanted: Vec<Want> = want.into_iter().collect();
        wanted.sort_by(|a, b| (&a.service, a.server).cmp(&(&b.service, b.server)));
        wanted.dedup_by(|a, b| a.service == b.service && a.server == b.server);
        let mut notifiers: HashMap<String, Arc<Notifier>> = HashMap::new();
        for w in &wanted {
            let Some(cfg) = &w.notify else { continue };
            let n = match self.notifiers.get(&w.service) {
                Some(n) if n.cfg == *cfg => n.clone(),
                _ => Notifier::new(&w.service, cfg.clone()),
            };
            notifiers.insert(w.service.clone(), n);
        }
        self.notifiers = notifiers;
        for w in wanted {
            let key = (w.service.clone(), w.server);
            let notify = self.notifiers.get(&w.service).cloned();
            let same_notify = |c: &Checker| match (&c.notify, &notify) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            };
            let from = match self.checkers.remove(&key) {
                Some(c) if Arc::ptr_eq(&c.dest, &w.dest) && c.cfg == w.cfg && same_notify(&c) => {
                    report.kept += 1;
                    next.insert(key, c);
                    continue;
                }
                Some(c) if Arc::ptr_eq(&c.dest, &w.dest) => {
                    // Same server, another check: the new checker carries on from here.
                    report.changed += 1;
                    let s = c.stop(false);
                    (s.health, s.reason, s.since, s.checks)
                }
                other => {
                    if let Some(c) = other {
                        // The same name and address, but another server object (the service
                        // was replaced): the old one is no longer checked.
                        report.stopped += 1;
                        c.stop(true);
                    }
                    report.started += 1;
                    // The registry marks a server new to the director DEST_F_DOWN: it starts
                    // pending. One already serving (its service just got a check) starts up.
                    if w.dest.flags() & DEST_F_DOWN != 0 {
                        (
                            Health::Pending,
                            Some("not checked yet".into()),
                            Instant::now(),
                            0,
                        )
                    } else {
                        (Health::Up, None, Instant::now(), 0)
                    }
                }
            };
            let c = Checker::start(&rt, &w.service, w.server, w.cfg, w.dest, notify, from);
            next.insert(key, c);
        }
        for (_, c) in self.checkers.drain() {
            report.stopped += 1;
            c.stop(true);
        }
        self.checkers = next;
        report
    }

    /// The status of `server` in `service`, if it is checked.
    pub fn status(&self, service: &str, server: SocketAddr) -> Option<Status> {
        self.checkers
            .get(&(service.to_string(), server))
            .map(Checker::status)
    }

    /// The weights dynamic script checks gave their servers (keepalived `misc_dynamic`).
    pub fn dynamic_weights(&self) -> Vec<(String, SocketAddr, u32)> {
        self.checkers
            .iter()
            .filter_map(|((svc, srv), c)| c.status().dynamic_weight.map(|w| (svc.clone(), *srv, w)))
            .collect()
    }

    /// Checked servers, and how many of them are held out of scheduling (down or pending).
    pub fn counts(&self) -> (usize, usize) {
        let down = self
            .checkers
            .values()
            .filter(|c| !c.status().health.serving())
            .count();
        (self.checkers.len(), down)
    }

    /// Number of checked servers.
    pub fn len(&self) -> usize {
        self.checkers.len()
    }

    /// True if nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.checkers.is_empty()
    }

    /// Stops every checker, leaving the flags as they are (shutdown).
    pub fn stop_all(&mut self) {
        for (_, c) in self.checkers.drain() {
            c.stop(false);
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop_all();
    }
}
