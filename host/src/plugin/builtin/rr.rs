//! Round robin (IPVS `ip_vs_rr.c`): the next available realserver after the last one
//! picked, skipping weight 0.

use ringvs_abi::Load;

/// Round-robin state: where the last pick was.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    /// Index of the last pick.
    pub cursor: usize,
}

impl RoundRobin {
    /// Picks the next available realserver.
    #[inline]
    pub fn pick(&mut self, load: Load<'_>) -> Option<usize> {
        let n = load.len();
        for step in 1..=n {
            let i = (self.cursor + step) % n;
            if load.get(i).is_some_and(|s| s.is_available()) {
                self.cursor = i;
                return Some(i);
            }
        }
        None
    }
}
