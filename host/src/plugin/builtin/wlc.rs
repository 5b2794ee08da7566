//! Weighted least-connection (IPVS `ip_vs_wlc.c`, the default scheduler).
//!
//! The load of a realserver is its overhead `h = active × 256 + inactive` (ESTABLISHED
//! connections weigh much more than half-open or closing ones). Pick the one with the least
//! `h / w`. To stay in integers, compare `h1 × w2 > h2 × w1` ⇔ `h1 / w1 > h2 / w2`
//! (weights are positive). Weight 0 means quiesced: never picked. Ties go to the first in
//! configuration order.

use crate::dataplane::service::Dest;

/// WLC has no state of its own: the host keeps the counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedLeastConn;

impl WeightedLeastConn {
    /// Picks the least loaded realserver relative to its weight.
    #[inline]
    pub fn pick(&self, dests: &[Dest]) -> Option<usize> {
        let mut best: Option<(usize, u64, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.state.schedulable() {
                continue;
            }
            let (h, w) = (d.state.counters.overhead(), d.state.weight() as u64);
            match best {
                Some((_, bh, bw)) if bh * w <= h * bw => {}
                _ => best = Some((i, h, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }
}
