//! The load view a scheduler picks from: per realserver its current weight and connection
//! counts, packed as the WIT's `scheduler.pick` hands them over ([`LOAD_STRIDE`] numbers per
//! server: weight, active, inactive), and the maths of IPVS's least-connection family.
//!
//! The built-in schedulers of the director and the SDK's `Servers` both read this view, so
//! wlc is computed once, the same way, in a native fallback and in a plugin.

use crate::LOAD_STRIDE;

/// One realserver as a pick sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    /// Its index: what a pick returns to choose it.
    pub index: usize,
    /// Its current weight; 0 means it must not get new flows.
    pub weight: u32,
    /// Connections in ESTABLISHED (IPVS `activeconns`).
    pub active: u32,
    /// Connections in other states and UDP flows (IPVS `inactconns`).
    pub inactive: u32,
}

impl Server {
    /// IPVS's load estimate (`ip_vs_dest_conn_overhead`): active × 256 + inactive.
    #[inline]
    pub fn overhead(&self) -> u64 {
        ((self.active as u64) << 8) + self.inactive as u64
    }

    /// True if it may get new flows (weight above 0).
    #[inline]
    pub fn is_available(&self) -> bool {
        self.weight > 0
    }
}

/// The packed load of a service's realservers (`LOAD_STRIDE` numbers each).
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    packed: &'a [u32],
}

impl<'a> Load<'a> {
    /// A view over a packed list; a trailing partial server is ignored.
    #[inline]
    pub fn new(packed: &'a [u32]) -> Load<'a> {
        Load { packed }
    }

    /// Number of realservers.
    #[inline]
    pub fn len(&self) -> usize {
        self.packed.len() / LOAD_STRIDE
    }

    /// True if there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Realserver `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Server> {
        let w = self
            .packed
            .get(i * LOAD_STRIDE..i * LOAD_STRIDE + LOAD_STRIDE)?;
        Some(Server {
            index: i,
            weight: w[0],
            active: w[1],
            inactive: w[2],
        })
    }

    /// Every realserver, in configuration order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = Server> + 'a {
        self.packed
            .chunks_exact(LOAD_STRIDE)
            .enumerate()
            .map(|(index, w)| Server {
                index,
                weight: w[0],
                active: w[1],
                inactive: w[2],
            })
    }

    /// The realservers that may get new flows (weight above 0).
    #[inline]
    pub fn available(&self) -> impl Iterator<Item = Server> + 'a {
        self.iter().filter(Server::is_available)
    }

    /// The index of the available realserver with the least `cost`; the first in
    /// configuration order on a tie (IPVS takes a later one only if strictly less). `None`
    /// when none is available. IPVS's lc: `least(Server::overhead)`.
    #[inline]
    pub fn least(&self, cost: impl Fn(&Server) -> u64) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for s in self.available() {
            let c = cost(&s);
            if best.is_none_or(|(b, _)| c < b) {
                best = Some((c, s.index));
            }
        }
        best.map(|(_, i)| i)
    }

    /// The index of the available realserver with the least `cost / weight`, compared as
    /// IPVS does without dividing (`c1 × w2 > c2 × w1` ⇔ `c1 / w1 > c2 / w2`, weights being
    /// positive), here in 128 bits so that no weight or cost overflows; the first in
    /// configuration order on a tie. IPVS's wlc: `least_per_weight(Server::overhead)`; sed
    /// and nq: `|s| s.active as u64 + 1`.
    #[inline]
    pub fn least_per_weight(&self, cost: impl Fn(&Server) -> u64) -> Option<usize> {
        let mut best: Option<(u128, u128, usize)> = None;
        for s in self.available() {
            let (c, w) = (u128::from(cost(&s)), u128::from(s.weight));
            if best.is_none_or(|(bc, bw, _)| bc * w > c * bw) {
                best = Some((c, w, s.index));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// IPVS's wlc (`ip_vs_wlc.c`): the least overhead per weight.
    #[inline]
    pub fn wlc(&self) -> Option<usize> {
        self.least_per_weight(Server::overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wlc_prefers_least_overhead_per_weight_first_on_tie() {
        // weight, active, inactive
        let l = [1, 2, 0, 2, 3, 0, 1, 0, 0];
        assert_eq!(Load::new(&l).wlc(), Some(2));
        let l = [1, 1, 0, 2, 2, 0];
        assert_eq!(Load::new(&l).wlc(), Some(0), "tie: the first");
        let l = [0, 0, 0, 1, 9, 9];
        assert_eq!(Load::new(&l).wlc(), Some(1), "weight 0 is never picked");
        assert_eq!(Load::new(&[0, 0, 0]).wlc(), None);
    }

    #[test]
    fn no_overflow_at_the_extremes() {
        let l = [65_535, u32::MAX, u32::MAX, 1, u32::MAX, 0];
        assert_eq!(Load::new(&l).wlc(), Some(0));
    }

    #[test]
    fn partial_trailing_server_is_ignored() {
        let l = [1, 0, 0, 5];
        assert_eq!(Load::new(&l).len(), 1);
        assert!(Load::new(&l).get(1).is_none());
    }
}
