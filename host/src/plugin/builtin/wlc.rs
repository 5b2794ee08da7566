//! Weighted least-connection (IPVS `ip_vs_wlc.c`, the default scheduler).
//!
//! The load of a realserver is its overhead `h = active × 256 + inactive` (ESTABLISHED
//! connections weigh much more than half-open or closing ones). Pick the one with the least
//! `h / w`, compared as `h1 × w2 > h2 × w1` ([`ringvs_abi::Load::wlc`], the maths the SDK's
//! wlc plugin uses too). Weight 0 means quiesced: never picked. Ties go to the first in
//! configuration order.

use ringvs_abi::Load;

/// WLC has no state of its own: the host keeps the counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedLeastConn;

impl WeightedLeastConn {
    /// Picks the least loaded realserver relative to its weight.
    #[inline]
    pub fn pick(&self, load: Load<'_>) -> Option<usize> {
        load.wlc()
    }
}
