//! Round robin (IPVS `ip_vs_rr.c`): the next realserver after the last one picked,
//! skipping those of weight 0.
//!
//! The cursor is the plugin's private state: a new version of the plugin swapped in at
//! runtime inherits it (`export_state` / `import_state`) and the rotation goes on where it
//! was instead of starting over at the first server.

#![no_std]

use ringvs_sdk::prelude::*;

/// The index of the last pick (`None` before the first).
#[derive(Default)]
pub struct RoundRobin {
    last: Option<usize>,
}

impl Scheduler for RoundRobin {
    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        let n = servers.len();
        let start = self.last.map_or(0, |l| l + 1);
        let s = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| servers.get(i).is_some_and(|s| s.weight > 0))?;
        self.last = Some(s);
        Some(s)
    }

    fn export_state(&self) -> Vec<u8> {
        // Version 1: the cursor as 4 little-endian bytes (u32::MAX: none yet).
        let c = self.last.map_or(u32::MAX, |l| l as u32);
        let mut v = vec![1u8];
        v.extend_from_slice(&c.to_le_bytes());
        v
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        match state {
            [] => Ok(()),
            [1, a, b, c, d] => {
                let v = u32::from_le_bytes([*a, *b, *c, *d]);
                self.last = (v != u32::MAX).then_some(v as usize);
                Ok(())
            }
            _ => Err(format!("unknown round-robin state ({} bytes)", state.len())),
        }
    }
}

export_scheduler!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, SchedulerHarness};

    const SERVERS: &[(&str, u32)] = &[
        ("10.77.1.1:80", 1),
        ("10.77.1.2:80", 0),
        ("10.77.1.3:80", 1),
        ("10.77.1.4:80", 1),
    ];

    #[test]
    fn cycles_and_skips_quiesced() {
        let mut s = SchedulerHarness::<RoundRobin>::new(&[])
            .unwrap()
            .servers(SERVERS);
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        let picks: Vec<_> = (0..6).map(|_| s.pick(&f).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 3, 0, 2, 3]);
        s.set_weight(3, 0);
        let picks: Vec<_> = (0..3).map(|_| s.pick(&f).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0]);
        for i in 0..4 {
            s.set_weight(i, 0);
        }
        assert_eq!(s.pick(&f), None);
    }

    #[test]
    fn a_swapped_in_version_continues_the_rotation() {
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        let mut s = SchedulerHarness::<RoundRobin>::new(&[])
            .unwrap()
            .servers(SERVERS);
        assert_eq!((s.pick(&f), s.pick(&f)), (Some(0), Some(2)));
        let mut next = s.swap_to::<RoundRobin>(&[]).unwrap();
        assert_eq!(next.pick(&f), Some(3), "continues after server 2, not at 0");
        assert!(next.instance().import_state(&[9, 9]).is_err());
    }
}
