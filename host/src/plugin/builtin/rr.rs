//! Round robin (IPVS `ip_vs_rr.c`): the next schedulable realserver after the last one
//! picked, skipping weight 0 and unavailable ones.

use crate::dataplane::service::Dest;

/// Round-robin state: where the last pick was.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    /// Index of the last pick.
    pub cursor: usize,
}

impl RoundRobin {
    /// Picks the next schedulable realserver.
    #[inline]
    pub fn pick(&mut self, dests: &[Dest]) -> Option<usize> {
        let n = dests.len();
        for step in 1..=n {
            let i = (self.cursor + step) % n;
            if dests[i].state.schedulable() {
                self.cursor = i;
                return Some(i);
            }
        }
        None
    }
}
