//! Weighted round robin (IPVS `ip_vs_wrr.c`): interleaved, so that a heavy realserver's
//! turns are spread over the cycle instead of coming in one burst.
//!
//! With `di` the greatest common divisor of the positive weights and `mw = max − (di − 1)`,
//! the cursor walks the realservers in configuration order and takes the next one whose
//! weight is `≥ cw` (the current weight). At the end of the list `cw` drops by `di`; below 1
//! it starts again at `mw`. So pass `k` (from 0) serves every realserver with
//! `w ≥ mw − k·di`, the last pass (`cw` = 1) serves all of them, and over one cycle of
//! `mw/di` passes realserver `i` is picked `w_i/di` times. Weights 4, 3, 2 give
//! `A A B A B C A B C`: `cw` = 4 → A; 3 → A B; 2 → A B C; 1 → A B C.
//!
//! Lowering `mw` by `di − 1` is IPVS's guard for a weight lowered below `di` while a cycle
//! runs: the last pass is always at `cw` = 1, so such a realserver is still served. Weight 0
//! (quiesced, down, over its threshold) is never `≥ cw`, so it is never picked; with every
//! weight 0, `mw` = 0 and there is no pick.
//!
//! When the weights in `pick`'s view differ from those `di` and `mw` were computed from, they
//! are recomputed as IPVS does when a realserver changes: the cursor goes back to the head
//! of the list and `cw` is kept but brought into range (`mw` if above it or unset, else
//! rounded down to a multiple of `di`, plus 1).
//!
//! The cursor, `cw` and the weights they were computed from are the plugin's state: a
//! version swapped in continues the sequence (`export_state` / `import_state`, keyed by
//! address).

#![no_std]

use ringvs_sdk::prelude::*;

/// IPVS's `struct ip_vs_wrr_mark`, plus the weights it was computed from.
#[derive(Default)]
pub struct Wrr {
    /// The realservers' identities (for the exported state).
    ids: Vec<(IpAddr, u16)>,
    /// The weights `di` and `mw` were computed from.
    weights: Vec<u32>,
    /// The last realserver picked; `None` is the head of the list.
    cl: Option<usize>,
    /// Current weight.
    cw: i64,
    /// Maximum weight, lowered by `di − 1`.
    mw: i64,
    /// Step: gcd of the positive weights (1 if none).
    di: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Wrr {
    /// IPVS `ip_vs_wrr_dest_changed`.
    fn recompute(&mut self) {
        let positive = self.weights.iter().filter(|&&w| w > 0).map(|&w| w as i64);
        self.di = positive.fold(0, gcd).max(1);
        let max = self.weights.iter().copied().max().unwrap_or(0) as i64;
        self.mw = max - (self.di - 1);
        self.cl = None;
        if self.cw > self.mw || self.cw <= 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }
}

impl Scheduler for Wrr {
    fn servers_changed(&mut self, servers: &[ServerInfo]) {
        self.ids = servers.iter().map(|s| (s.addr, s.port)).collect();
        self.weights = servers.iter().map(|s| s.weight).collect();
        self.recompute();
    }

    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        let n = servers.len();
        if n != self.weights.len() || servers.iter().any(|s| s.weight != self.weights[s.index]) {
            self.weights = servers.iter().map(|s| s.weight).collect();
            self.recompute();
        }
        if self.mw <= 0 {
            return None;
        }
        let w = |i: usize| self.weights[i] as i64;
        // IPVS `ip_vs_wrr_schedule`: stop only after every realserver was checked at cw = 1.
        let last = self.cl;
        let (mut stop, mut last_pass, mut restarted) = (None, false, false);
        let mut i = last.map_or(0, |c| c + 1);
        loop {
            while i < n {
                if w(i) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
                i += 1;
            }
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
            i = 0;
        }
    }

    fn export_state(&self) -> Vec<u8> {
        // Version 1: cw (i64), the cursor (0, or 1 and an endpoint), the count of
        // realservers (u32) and each one's endpoint and weight (u32); little-endian. An
        // endpoint is 4 and 4 address bytes, or 6 and 16, then the port (u16).
        let mut v = vec![1u8];
        v.extend_from_slice(&self.cw.to_le_bytes());
        match self.cl.and_then(|c| self.ids.get(c)) {
            None => v.push(0),
            Some(id) => {
                v.push(1);
                put_endpoint(&mut v, *id);
            }
        }
        v.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for (id, w) in self.ids.iter().zip(&self.weights) {
            put_endpoint(&mut v, *id);
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let bad = || format!("unknown weighted round-robin state ({} bytes)", state.len());
        let mut r = Reader(state);
        if r.take(1) != Some(&[1]) {
            return Err(bad());
        }
        let cw = r.u64().ok_or_else(bad)? as i64;
        let cl = match r.take(1) {
            Some([0]) => None,
            Some([1]) => Some(r.endpoint().ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        let n = r.u32().ok_or_else(bad)? as usize;
        let mut old = Vec::new();
        for _ in 0..n {
            let id = r.endpoint().ok_or_else(bad)?;
            old.push((id, r.u32().ok_or_else(bad)?));
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        self.cw = cw;
        if old.iter().map(|(id, _)| *id).eq(self.ids.iter().copied()) {
            // The same realservers in the same order: continue exactly where it was.
            self.weights = old.into_iter().map(|(_, w)| w).collect();
            self.recompute();
            self.cw = cw;
            self.cl = cl.and_then(|c| self.ids.iter().position(|id| *id == c));
        } else {
            // Others: as if they had changed in this instance (weights by address, cw kept
            // and brought into range, cursor at the head).
            for (i, id) in self.ids.iter().enumerate() {
                if let Some((_, w)) = old.iter().find(|(o, _)| o == id) {
                    self.weights[i] = *w;
                }
            }
            self.recompute();
        }
        Ok(())
    }
}

fn put_endpoint(v: &mut Vec<u8>, (addr, port): (IpAddr, u16)) {
    match addr {
        IpAddr::V4(a) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
    v.extend_from_slice(&port.to_le_bytes());
}

/// Reads exported state; `None` when it runs short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn endpoint(&mut self) -> Option<(IpAddr, u16)> {
        let addr = match self.take(1)? {
            [4] => IpAddr::from(self.array::<4>()?),
            [6] => IpAddr::from(self.array::<16>()?),
            _ => return None,
        };
        Some((addr, self.array().map(u16::from_le_bytes)?))
    }
}

export_scheduler!(Wrr);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, SchedulerHarness};

    fn h(weights: &[u32]) -> SchedulerHarness<Wrr> {
        SchedulerHarness::<Wrr>::new(&[]).unwrap().weights(weights)
    }

    fn picks<T: Scheduler>(s: &mut SchedulerHarness<T>, n: usize) -> Vec<Option<usize>> {
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        (0..n).map(|_| s.pick(&f)).collect()
    }

    fn some(v: &[usize]) -> Vec<Option<usize>> {
        v.iter().map(|&i| Some(i)).collect()
    }

    #[test]
    fn ipvs_sequences() {
        // (weights, expected picks), worked out by hand from ip_vs_wrr.c (A = 0, B = 1, …):
        // - 4,3,2: di 1, mw 4. cw 4: A; 3: A B; 2: A B C; 1: A B C; then again.
        // - 4,2: di 2, mw 4 − 1 = 3. cw 3: A; 1: A B; −1 → 3: A; …
        // - 3,0,1: di 1, mw 3. cw 3: A; 2: A; 1: A C. B (weight 0) never.
        // - 5,5,5: di 5, mw 1: plain round robin.
        // - 1,2 then 7 picks: cw 2: B; 1: A B; 2: B; 1: A B; 2: B.
        type Case<'a> = (&'a [u32], &'a [usize]);
        let cases: &[Case] = &[
            (&[4, 3, 2], &[0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2]),
            (&[4, 2], &[0, 0, 1, 0, 0, 1]),
            (&[3, 0, 1], &[0, 0, 0, 2, 0, 0, 0, 2]),
            (&[5, 5, 5], &[0, 1, 2, 0, 1, 2]),
            (&[1, 2], &[1, 0, 1, 1, 0, 1, 1]),
        ];
        for (w, want) in cases {
            let mut s = h(w);
            assert_eq!(picks(&mut s, want.len()), some(want), "weights {w:?}");
        }
    }

    #[test]
    fn a_weight_change_restarts_at_the_head_with_cw_kept() {
        // 4,3,2: A A B A leaves cw = 2. A's weight becomes 1 → 1,3,2: di 1, mw 3, cw 2 kept,
        // cursor at the head. cw 2: B C; 1: A B C; 3: B; 2: B C; 1: A B C.
        let mut s = h(&[4, 3, 2]);
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 0]));
        s.set_weight(0, 1);
        assert_eq!(picks(&mut s, 11), some(&[1, 2, 0, 1, 2, 1, 1, 2, 0, 1, 2]));
    }

    #[test]
    fn a_weight_change_rounds_cw_to_the_new_step() {
        // 4,3,2: A A B A leaves cw = 2. B becomes 2 → 4,2,2: di 2, mw 3, and cw = 2/2·2 + 1
        // = 3. cw 3: A; 1: A B C; 3: A; … (without the rounding, cw 2 would give A B C A …).
        let mut s = h(&[4, 3, 2]);
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 0]));
        s.set_weight(1, 2);
        assert_eq!(picks(&mut s, 8), some(&[0, 0, 1, 2, 0, 0, 1, 2]));
    }

    #[test]
    fn quiesced_servers_are_skipped_and_none_when_all_are() {
        let mut s = h(&[2, 1, 1]);
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 2]));
        // A quiesced: 0,1,1 → di 1, mw 1, cw stays 1, from the head: B C B C.
        s.set_weight(0, 0);
        assert_eq!(picks(&mut s, 4), some(&[1, 2, 1, 2]));
        s.set_weight(1, 0);
        s.set_weight(2, 0);
        assert_eq!(picks(&mut s, 2), vec![None, None]);
        // Back: 2,1,1 from the head, cw = mw = 2.
        for (i, w) in [2, 1, 1].into_iter().enumerate() {
            s.set_weight(i, w);
        }
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 2]));
        let mut empty = h(&[]);
        assert_eq!(picks(&mut empty, 1), vec![None]);
    }

    #[test]
    fn a_swapped_in_version_continues_the_sequence() {
        // 4,3,2: A A B A, then (from a fresh instance) A A B A again; swapped: B C A B C.
        let mut s = h(&[4, 3, 2]);
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 0]));
        let mut next = s.swap_to::<Wrr>(&[]).unwrap();
        assert_eq!(picks(&mut next, 5), some(&[1, 2, 0, 1, 2]));
    }

    #[test]
    fn a_swap_keeps_weights_changed_at_runtime() {
        // 4,3,2 with C set to 1 at runtime (the successor's servers_changed still says 2):
        // 4,3,1: A A B A B A B C. After 4 picks (cw 2, at A) the successor continues B A B C;
        // had it taken the configured 4,3,2 it would see a change and restart at the head.
        let mut s = h(&[4, 3, 2]);
        s.set_weight(2, 1);
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 0]));
        let mut next = s.swap_to::<Wrr>(&[]).unwrap();
        assert_eq!(picks(&mut next, 4), some(&[1, 0, 1, 2]));
    }

    #[test]
    fn state_for_other_servers_keeps_cw_only() {
        // Exported with A B C; imported by an instance serving B C A (another order): cw 2
        // is kept (1 step, within mw 4), the cursor restarts at the head: cw 2: B A C.
        let mut s = h(&[4, 3, 2]);
        assert_eq!(picks(&mut s, 4), some(&[0, 0, 1, 0]));
        let state = s.instance().export_state();
        let mut other = SchedulerHarness::<Wrr>::new(&[]).unwrap().servers(&[
            ("10.77.1.2:80", 3),
            ("10.77.1.1:80", 4),
            ("10.77.1.3:80", 2),
        ]);
        other.instance().import_state(&state).unwrap();
        assert_eq!(picks(&mut other, 3), some(&[0, 1, 2]));
    }

    #[test]
    fn refuses_state_it_does_not_understand() {
        let mut s = h(&[1, 1]);
        let good = s.instance().export_state();
        assert!(s.instance().import_state(&[]).is_ok());
        assert!(s.instance().import_state(&[2]).is_err());
        assert!(s.instance().import_state(&good[..good.len() - 1]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(s.instance().import_state(&long).is_err());
        assert!(s.instance().import_state(&good).is_ok());
    }

    #[test]
    fn refuses_unknown_config() {
        assert!(SchedulerHarness::<Wrr>::new(&[("weight", "2")]).is_err());
    }
}
