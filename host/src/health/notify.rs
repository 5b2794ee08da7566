//! Notify hooks: a service's `notify.up` / `notify.down` command, run when one of its
//! realservers changes state (keepalived's `notify_up` / `notify_down`), rate-limited per
//! service and killed at its timeout ([`super::script`]). Every run, and every one dropped by
//! the limit, is counted in `ringvs_notify_total{service,event,result}`.

use super::script;
use crate::config::NotifyConfig;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{info, warn};

/// What happened to a realserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It came up (a down server passed `rise` checks).
    Up,
    /// It went down (`fall` checks failed, or its first check did).
    Down,
}

impl Event {
    /// `up` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Up => "up",
            Event::Down => "down",
        }
    }
}

/// A token bucket: `per_minute` runs a minute, as a burst too.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    per_minute: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            per_minute: f64::from(per_minute),
            last: now,
        }
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + secs * self.per_minute / 60.0).min(self.per_minute);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One service's hooks and their limit, shared by the checkers of its realservers.
#[derive(Debug)]
pub struct Notifier {
    service: String,
    /// The hooks.
    pub cfg: NotifyConfig,
    bucket: Mutex<Bucket>,
}

impl Notifier {
    /// The hooks of `service`.
    pub fn new(service: &str, cfg: NotifyConfig) -> Arc<Notifier> {
        Arc::new(Notifier {
            service: service.to_string(),
            bucket: Mutex::new(Bucket::new(cfg.max_per_minute, Instant::now())),
            cfg,
        })
    }

    /// Runs the hook for `event` of `server` (with the reason of a failure) on the current
    /// Tokio runtime, unless the service's limit is spent; never waits for it.
    pub fn fire(self: &Arc<Self>, event: Event, server: SocketAddr, reason: Option<String>) {
        let cmd = match event {
            Event::Up => self.cfg.up.clone(),
            Event::Down => self.cfg.down.clone(),
        };
        let Some(cmd) = cmd else { return };
        let allowed = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now());
        if !allowed {
            crate::metrics::traffic::notified(&self.service, event.name(), "dropped");
            warn!(service = %self.service, server = %server, event = event.name(),
                "notify hook not run: more than {} a minute for this service", self.cfg.max_per_minute);
            return;
        }
        let me = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let env = [
                ("RINGVS_EVENT", event.name().to_string()),
                ("RINGVS_SERVICE", me.service.clone()),
                ("RINGVS_SERVER", server.to_string()),
                ("RINGVS_SERVER_IP", server.ip().to_string()),
                ("RINGVS_SERVER_PORT", server.port().to_string()),
                ("RINGVS_REASON", reason.unwrap_or_default()),
            ];
            let r = script::run(&cmd, &env, &me.cfg.user, me.cfg.timeout, false).await;
            let result = r.as_ref().err().map_or("ok", script::ScriptError::label);
            crate::metrics::traffic::notified(&me.service, event.name(), result);
            match r {
                Ok(_) => info!(service = %me.service, server = %server, event = event.name(), "notify hook ran"),
                Err(e) => warn!(service = %me.service, server = %server, event = event.name(), "notify hook: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(6, t0);
        let burst = (0..10).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 6, "a full minute's worth at once");
        assert!(!b.take(t0 + Duration::from_secs(5)), "one every 10 s after");
        assert!(b.take(t0 + Duration::from_secs(11)));
        assert!(!b.take(t0 + Duration::from_secs(12)));
        // Idle for long: full again, not more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 6);
    }
}
