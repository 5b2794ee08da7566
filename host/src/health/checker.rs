//! One realserver's checker: a tokio task that probes every `interval`, feeds the rise/fall
//! machine and, on a change, sets or clears the health flags of the server's shared
//! [`DestState`] — the same atomics the queues read when they schedule a new flow.

use super::notify::{Event, Notifier};
use super::probe::{check, Failure};
use super::state::{Health, Machine};
use crate::config::{HealthConfig, OnFail};
use crate::dataplane::service::DestState;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

/// What the control plane shows about one checked realserver.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Current health.
    pub health: Health,
    /// Why it is not up: the last failure (or "not checked yet"); None while up.
    pub reason: Option<String>,
    /// When the health last changed (or checking started).
    pub since: Instant,
    /// Consecutive results counted towards the next change: passed checks while down,
    /// failed checks while up.
    pub streak: u32,
    /// Checks run so far.
    pub checks: u64,
    /// The weight the last passed dynamic script check gave (exit status − 2), if any.
    pub dynamic_weight: Option<u32>,
}

/// State shared by the task and the control plane. The flags of `dest` are written only
/// with this lock held and `active` true, so a stopped checker can never write them again.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) active: bool,
    pub(super) machine: Machine,
    pub(super) status: Status,
}

/// Sets `dest`'s health flags for `health` under `on_fail`.
pub fn apply_flags(dest: &DestState, health: Health, on_fail: OnFail) {
    match (health, on_fail) {
        (Health::Up, _) => dest.health_up(),
        (Health::Down, OnFail::Remove) => dest.health_down(true),
        // A pending server has no flows to drain: held out of scheduling, nothing else.
        (Health::Pending, _) | (Health::Down, OnFail::Quiesce) => dest.health_down(false),
    }
}

/// Clears the health flags (the server is no longer checked).
pub fn clear_flags(dest: &DestState) {
    dest.health_up();
}

/// A running checker.
#[derive(Debug)]
pub struct Checker {
    pub(super) cfg: HealthConfig,
    pub(super) dest: Arc<DestState>,
    pub(super) shared: Arc<Mutex<Shared>>,
    /// The service's notify hooks, if any.
    pub(super) notify: Option<Arc<Notifier>>,
    task: JoinHandle<()>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere cannot leave `Shared` half-written in a way that matters: recover.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Checker {
    /// Starts checking `server` of `service` with `cfg` from `from` (its health, reason and
    /// time of the last change), writing `dest`'s flags for that health at once.
    pub(super) fn start(
        rt: &tokio::runtime::Handle,
        service: &str,
        server: SocketAddr,
        cfg: HealthConfig,
        dest: Arc<DestState>,
        notify: Option<Arc<Notifier>>,
        from: (Health, Option<String>, Instant, u64),
    ) -> Checker {
        let (health, reason, since, checks) = from;
        apply_flags(&dest, health, cfg.on_fail);
        let shared = Arc::new(Mutex::new(Shared {
            active: true,
            machine: Machine::new(health, cfg.rise, cfg.fall),
            status: Status {
                health,
                reason,
                since,
                streak: 0,
                checks,
                dynamic_weight: None,
            },
        }));
        let task = rt.spawn(run(
            Labels {
                service: service.to_string(),
                server: server.to_string(),
            },
            server,
            cfg.clone(),
            dest.clone(),
            shared.clone(),
            notify.clone(),
        ));
        Checker {
            cfg,
            dest,
            shared,
            notify,
            task,
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        lock(&self.shared).status.clone()
    }

    /// Stops the task. With `clear`, the health flags are cleared (the server is no longer
    /// checked); without, they stay as they are (a successor takes over). Returns the
    /// status at the moment it stopped.
    pub(super) fn stop(self, clear: bool) -> Status {
        let status = {
            let mut s = lock(&self.shared);
            s.active = false;
            if clear {
                clear_flags(&self.dest);
            }
            s.status.clone()
        };
        self.task.abort();
        status
    }
}

struct Labels {
    service: String,
    server: String,
}

async fn run(
    labels: Labels,
    server: SocketAddr,
    cfg: HealthConfig,
    dest: Arc<DestState>,
    shared: Arc<Mutex<Shared>>,
    notify: Option<Arc<Notifier>>,
) {
    let target = cfg.target(server);
    let mut ticker = tokio::time::interval(cfg.interval);
    // A late check (a busy runtime) shifts the schedule instead of bursting to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = check(&labels.service, server, &cfg).await;
        let label = result.as_ref().err().map_or("ok", Failure::label);
        crate::metrics::health_checked(&labels.service, &labels.server, label);
        let mut s = lock(&shared);
        if !s.active {
            return;
        }
        s.status.checks += 1;
        if let Ok(Some(w)) = &result {
            s.status.dynamic_weight = Some(*w);
        }
        let changed = s.machine.record(result.is_ok());
        if let Err(f) = &result {
            s.status.reason = Some(f.to_string());
        }
        s.status.streak = match s.machine.state() {
            Health::Down => s.machine.successes(),
            _ => s.machine.failures(),
        };
        let Some(to) = changed else {
            if let Err(f) = &result {
                if s.status.health == Health::Up {
                    debug!(service = %labels.service, server = %labels.server, target = %target,
                        "check failed ({}/{}): {f}", s.machine.failures(), cfg.fall);
                }
            }
            continue;
        };
        let from = s.status.health;
        apply_flags(&dest, to, cfg.on_fail);
        s.status.health = to;
        s.status.since = Instant::now();
        if to == Health::Up {
            s.status.reason = None;
        }
        drop(s);
        crate::metrics::health_changed(&labels.service, &labels.server, to.name());
        if let Some(n) = &notify {
            match (from, to, &result) {
                (Health::Down, Health::Up, _) => n.fire(Event::Up, server, None),
                (_, Health::Down, Err(f)) => n.fire(Event::Down, server, Some(f.to_string())),
                _ => {}
            }
        }
        let check = cfg.kind.name();
        match (from, &result) {
            (Health::Pending, Ok(_)) => info!(
                service = %labels.service, server = %labels.server, check, target = %target,
                "realserver UP: first check passed"
            ),
            (_, Ok(_)) => info!(
                service = %labels.service, server = %labels.server, check, target = %target,
                "realserver UP: {} consecutive checks passed", cfg.rise
            ),
            (Health::Pending, Err(f)) => warn!(
                service = %labels.service, server = %labels.server, check, target = %target,
                reason = %f, on_fail = cfg.on_fail.name(),
                "realserver DOWN: first check failed: {f}"
            ),
            (_, Err(f)) => warn!(
                service = %labels.service, server = %labels.server, check, target = %target,
                reason = %f, on_fail = cfg.on_fail.name(),
                "realserver DOWN: {} consecutive checks failed, last: {f}", cfg.fall
            ),
        }
    }
}
