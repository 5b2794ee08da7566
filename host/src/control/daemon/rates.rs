//! What `list` shows beside the queues' counters: rates from successive one-second samples,
//! and the counters as they were at the last `zero`.

use super::super::protocol::Rates;
use crate::dataplane::stats::{ShardReport, Traffic};
use std::time::Instant;

/// Rates from successive one-second samples.
#[derive(Default)]
pub(super) struct RateTracker {
    prev: Option<(Instant, ShardReport)>,
    pub(super) services: Vec<Rates>,
    pub(super) dests: Vec<Rates>,
}

fn rate_of(now: &Traffic, before: &Traffic, secs: f64) -> Rates {
    let d = now.since(before);
    Rates {
        cps: d.conns as f64 / secs,
        in_pps: d.in_pkts as f64 / secs,
        out_pps: d.out_pkts as f64 / secs,
        in_bps: d.in_bytes as f64 / secs,
        out_bps: d.out_bytes as f64 / secs,
    }
}

impl RateTracker {
    pub(super) fn sample(&mut self, r: &ShardReport) {
        let now = Instant::now();
        if let Some((t, prev)) = &self.prev {
            let secs = now.duration_since(*t).as_secs_f64().max(0.001);
            let empty = Traffic::default();
            self.services = r
                .services
                .iter()
                .enumerate()
                .map(|(i, x)| rate_of(x, prev.services.get(i).unwrap_or(&empty), secs))
                .collect();
            self.dests = r
                .dests
                .iter()
                .enumerate()
                .map(|(i, x)| rate_of(x, prev.dests.get(i).unwrap_or(&empty), secs))
                .collect();
        }
        self.prev = Some((now, r.clone()));
    }
}

/// The statistics the control plane keeps: rates, the last zero, what the top-talker metrics
/// showed.
#[derive(Default)]
pub(super) struct Stats {
    /// The counters at the last `zero` (`list` shows counts since).
    pub(super) zero: ShardReport,
    pub(super) rates: RateTracker,
    /// The sources the top-talker metrics showed at the last update.
    pub(super) top_shown: crate::metrics::TopShown,
    /// What removed services and realservers counted, for monotonic per-label counters.
    pub(super) totals: crate::metrics::traffic::Totals,
}

impl Stats {
    /// Service slot `sid`'s counters since the last zero.
    pub(super) fn service_since_zero(&self, r: &ShardReport, sid: usize) -> Traffic {
        let empty = Traffic::default();
        r.services
            .get(sid)
            .unwrap_or(&empty)
            .since(self.zero.services.get(sid).unwrap_or(&empty))
    }

    /// Realserver slot `did`'s counters since the last zero.
    pub(super) fn dest_since_zero(&self, r: &ShardReport, did: usize) -> Traffic {
        let empty = Traffic::default();
        r.dests
            .get(did)
            .unwrap_or(&empty)
            .since(self.zero.dests.get(did).unwrap_or(&empty))
    }

    /// Zeroes everything at `r`.
    pub(super) fn zero_all(&mut self, r: ShardReport) {
        self.zero = r;
    }

    /// Zeroes realserver slots `dests` at `r` (ids freed for reuse).
    pub(super) fn zero_dests(&mut self, r: &ShardReport, dests: &[usize]) {
        let z = &mut self.zero;
        if z.dests.len() < r.dests.len() {
            z.dests.resize(r.dests.len(), Traffic::default());
        }
        for &i in dests {
            if let Some(t) = r.dests.get(i) {
                z.dests[i] = *t;
            }
        }
    }

    /// Zeroes service slot `sid` and realserver slots `dests` at `r`.
    pub(super) fn zero_service(&mut self, r: &ShardReport, sid: usize, dests: &[usize]) {
        let z = &mut self.zero;
        if z.services.len() < r.services.len() {
            z.services.resize(r.services.len(), Traffic::default());
        }
        if z.dests.len() < r.dests.len() {
            z.dests.resize(r.dests.len(), Traffic::default());
        }
        if let Some(t) = r.services.get(sid) {
            z.services[sid] = *t;
        }
        for &i in dests {
            if let Some(t) = r.dests.get(i) {
                z.dests[i] = *t;
            }
        }
    }
}
