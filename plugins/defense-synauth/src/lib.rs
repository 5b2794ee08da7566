//! SYN authentication by retransmission: beyond IPVS, against spoofed SYN floods.
//!
//! A spoofed SYN (`hping3 -S --flood --rand-source`) comes from nobody: its source never
//! sees the SYN-ACK, so it never retransmits. A real TCP client whose SYN goes unanswered
//! sends the same SYN again — same addresses, same ports — after its initial retransmission
//! timeout (1 s on Linux since 2.6.39 (RFC 6298), 3 s on older stacks (RFC 1122)). So while
//! this defense is on, the first SYN of every new flow is dropped and remembered, and a SYN
//! that repeats a remembered one within `window` seconds is admitted:
//!
//! ```text
//! admit(flow):  not TCP, or off                  → accept
//!               (client, client port, vport) remembered ≤ window s ago → forget it, accept
//!               otherwise                        → remember it, drop
//! ```
//!
//! A spoofed flood is then refused before it costs anything: no connection entry, no
//! scheduling, no SYN to a realserver, no SYN-ACK to route back. A legitimate client pays one
//! retransmission timeout on each new connection while the defense is on; its established
//! connections are never touched (admission is asked only for new flows).
//!
//! **When it is on** (`mode`): 0 never; 3 always; 1 (default) automatically, as soon as the
//! service's new TCP flows reaching this defense exceed `on_new_flows` a second (director-wide:
//! each queue's instance takes its share, `on_new_flows / queues`) — checked on every flow, so
//! the defense turns on within the second the flood starts — and off again after `off_secs`
//! consecutive seconds below half that rate.
//!
//! **What it remembers**: at most `slots` first SYNs per instance (8 bytes each, allocated
//! when the instance starts, unless `mode = 0`: never on the per-flow path), in buckets of 4 found by a seeded hash of the flow; a
//! new one takes an empty or expired slot, else the oldest. Size it for the flood's rate per
//! queue × `window` to keep a legitimate first SYN until its retransmission.
//!
//! **Limits** (documented in docs/DEFENSE.md): an attacker that sends every SYN twice, or
//! owns its source addresses, passes; SYN cookies at the director (a SYN proxy) would stop
//! the first, nothing stateless stops the second (defense-ratelimit does). Clients that never
//! retransmit the same SYN (rare) cannot connect while the defense is on.

#![no_std]

use ringvs_sdk::prelude::*;

/// Default director-wide new TCP flows per second that turn the defense on (mode 1).
pub const ON_NEW_FLOWS: u32 = 5000;
/// Default seconds below half that rate before it turns off.
pub const OFF_SECS: u32 = 10;
/// Default seconds a first SYN is remembered.
pub const WINDOW: u32 = 3;
/// Default slots (first SYNs remembered per instance).
pub const SLOTS: u32 = 1 << 18;

const BUCKET: usize = 4;

/// One remembered first SYN: a fingerprint of the flow (never 0) and the tick it came in.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    fp: u32,
    tick: u32,
}

/// The defense's configuration and this instance's memory of first SYNs.
#[derive(Debug)]
pub struct SynAuth {
    mode: u8,
    on_new_flows: u32,
    off_secs: u32,
    window: u32,
    nslots: u32,
    seed: u64,
    slots: Vec<Slot>,
    on: bool,
    /// Instances of this plugin on this service (from the last tick; 1 before it).
    queues: u32,
    /// Ticks seen, from 1: the clock of `Slot::tick`.
    now: u32,
    /// TCP flows asked about since the last tick.
    attempts: u32,
    /// Consecutive ticks below half the threshold.
    quiet: u32,
    /// Flows whose first SYN was dropped.
    pub first_syns_dropped: u64,
    /// Flows admitted on their retransmission.
    pub authenticated: u64,
}

impl Default for SynAuth {
    fn default() -> Self {
        SynAuth {
            mode: 1,
            on_new_flows: ON_NEW_FLOWS,
            off_secs: OFF_SECS,
            window: WINDOW,
            nslots: SLOTS,
            seed: 0x5eed_5a17_0f1e_57ab,
            slots: Vec::new(),
            on: false,
            queues: 1,
            now: 1,
            attempts: 0,
            quiet: 0,
            first_syns_dropped: 0,
            authenticated: 0,
        }
    }
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SynAuth {
    /// True while first SYNs are dropped.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// This instance's share of `on_new_flows`.
    fn threshold(&self) -> u32 {
        self.on_new_flows.div_ceil(self.queues).max(1)
    }

    fn turn_on(&mut self) {
        self.on = true;
        self.quiet = 0;
    }

    fn hash(&self, flow: &Flow) -> u64 {
        let ports = (u64::from(flow.client_port) << 16) | u64::from(flow.vport);
        match flow.client {
            IpAddr::V4(a) => mix(((u64::from(u32::from(a))) << 32 | ports) ^ self.seed),
            IpAddr::V6(a) => {
                let a = u128::from(a);
                mix(mix((a >> 64) as u64 ^ self.seed) ^ a as u64 ^ ports.rotate_left(32))
            }
        }
    }

    fn live(&self, s: Slot) -> bool {
        s.fp != 0 && self.now.wrapping_sub(s.tick) <= self.window
    }

    /// True if `flow` repeats a remembered first SYN (which is then forgotten); else it is
    /// remembered.
    fn retransmitted(&mut self, flow: &Flow) -> bool {
        let h = self.hash(flow);
        let fp = (h >> 32) as u32 | 1;
        let buckets = self.slots.len() / BUCKET;
        let b = (h as usize & (buckets - 1)) * BUCKET;
        for i in b..b + BUCKET {
            let s = self.slots[i];
            if s.fp == fp && self.live(s) {
                self.slots[i] = Slot::default();
                return true;
            }
        }
        // An empty or expired slot, else the one remembered longest ago; among equals, one
        // that rotates with the flows seen (so no slot is always the first to go).
        let start = self.attempts as usize % BUCKET;
        let mut victim = b + start;
        for k in 0..BUCKET {
            let i = b + (start + k) % BUCKET;
            let s = self.slots[i];
            if !self.live(s) {
                victim = i;
                break;
            }
            if self.now.wrapping_sub(s.tick) > self.now.wrapping_sub(self.slots[victim].tick) {
                victim = i;
            }
        }
        self.slots[victim] = Slot { fp, tick: self.now };
        false
    }
}

impl Defense for SynAuth {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&[
            "mode",
            "on_new_flows",
            "off_secs",
            "window",
            "slots",
            "seed",
        ])?;
        self.mode = config.parse_or("mode", 1u8)?;
        if !matches!(self.mode, 0 | 1 | 3) {
            return Err(format!(
                "config key `mode`: cannot use {} (expected 0 off, 1 automatic by the rate of \
                 new flows, 3 always on)",
                self.mode
            ));
        }
        self.on_new_flows = config.parse_or("on_new_flows", ON_NEW_FLOWS)?;
        if self.on_new_flows == 0 {
            return Err(
                "config key `on_new_flows`: cannot use 0 (expected new TCP flows a \
                        second, director-wide; mode = 3 keeps the defense on)"
                    .into(),
            );
        }
        self.off_secs = config.parse_or("off_secs", OFF_SECS)?;
        if self.off_secs == 0 || self.off_secs > 3600 {
            return Err(format!(
                "config key `off_secs`: cannot use {} (expected 1 to 3600 seconds)",
                self.off_secs
            ));
        }
        self.window = config.parse_or("window", WINDOW)?;
        if !(1..=60).contains(&self.window) {
            return Err(format!(
                "config key `window`: cannot use {} (expected 1 to 60 seconds; clients \
                 retransmit a SYN after 1 s, older stacks after 3 s)",
                self.window
            ));
        }
        self.nslots = config.parse_or("slots", SLOTS)?;
        if !self.nslots.is_power_of_two() || !(1024..=1 << 20).contains(&self.nslots) {
            return Err(format!(
                "config key `slots`: cannot use {} (expected a power of two from 1024 to \
                 1048576; each takes 8 bytes of the plugin's memory)",
                self.nslots
            ));
        }
        self.seed = config.parse_or("seed", self.seed)?;
        // The memory is taken here, at the instance's start (200 ms deadline), never on the
        // per-flow path: zeroing 4 MiB inside `admit` ran past its 2 ms deadline in the lab.
        self.slots = if self.mode == 0 {
            Vec::new()
        } else {
            vec![Slot::default(); self.nslots as usize]
        };
        if self.mode == 3 {
            self.turn_on();
        }
        Ok(())
    }

    fn admit(&mut self, flow: &Flow, _source: &SourceStats) -> Verdict {
        // No memory (never configured): fail open rather than refuse every new flow.
        if flow.proto != Proto::Tcp || self.mode == 0 || self.slots.is_empty() {
            return Verdict::Accept;
        }
        self.attempts = self.attempts.saturating_add(1);
        if !self.on {
            if self.mode == 1 && self.attempts > self.threshold() {
                self.turn_on();
            } else {
                return Verdict::Accept;
            }
        }
        if self.retransmitted(flow) {
            self.authenticated += 1;
            Verdict::Accept
        } else {
            self.first_syns_dropped += 1;
            Verdict::Drop
        }
    }

    fn tick(&mut self, stats: &TickStats, _table: &dyn ringvs_sdk::Table) -> Vec<Action> {
        self.queues = stats.queues.max(1);
        self.now = self.now.wrapping_add(1);
        let attempts = core::mem::take(&mut self.attempts);
        if self.mode == 1 {
            let t = self.threshold();
            if attempts > t {
                self.turn_on();
            } else if self.on && attempts.saturating_mul(2) < t {
                self.quiet += 1;
                if self.quiet >= self.off_secs {
                    self.on = false;
                    self.quiet = 0;
                }
            } else {
                self.quiet = 0;
            }
        }
        Vec::new()
    }
}

export_defense!(SynAuth);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use ringvs_sdk::testing::{DefenseHarness, MockTable};
    use std::net::Ipv4Addr;

    fn syn(a: u32, port: u16) -> Flow {
        Flow::tcp(
            IpAddr::V4(Ipv4Addr::from(a)),
            port,
            IpAddr::V4(Ipv4Addr::new(10, 77, 100, 100)),
            80,
        )
    }

    fn harness(cfg: &[(&str, &str)]) -> DefenseHarness<SynAuth> {
        DefenseHarness::<SynAuth>::new(cfg).unwrap()
    }

    fn tick(h: &mut DefenseHarness<SynAuth>, queues: u32) {
        let stats = TickStats {
            queues,
            ..TickStats::default()
        };
        let actions = h.tick(&stats, &MockTable::new(0, Vec::new()));
        assert!(actions.is_empty(), "synauth takes no tick actions");
    }

    fn admitted(h: &mut DefenseHarness<SynAuth>, f: &Flow) -> bool {
        h.admit(f, SourceStats::default()) == Verdict::Accept
    }

    #[test]
    fn first_syn_dropped_retransmission_admitted() {
        let mut h = harness(&[("mode", "3")]);
        let client = syn(0x0a4d_0002, 40000);
        assert!(!admitted(&mut h, &client), "a first SYN is dropped");
        assert!(admitted(&mut h, &client), "its retransmission is admitted");
        // Admitted once: the same flow asking again (a new connection reusing the port)
        // starts over.
        assert!(!admitted(&mut h, &client));
        assert!(admitted(&mut h, &client));
        // Another port, another address: each its own first SYN.
        assert!(!admitted(&mut h, &syn(0x0a4d_0002, 40001)));
        assert!(!admitted(&mut h, &syn(0x0a4d_0003, 40000)));
        let s = h.instance();
        assert_eq!((s.first_syns_dropped, s.authenticated), (4, 2));
    }

    #[test]
    fn udp_and_mode_0_always_pass() {
        let mut h = harness(&[("mode", "3")]);
        let mut udp = syn(1, 53);
        udp.proto = Proto::Udp;
        assert!(admitted(&mut h, &udp));
        assert!(admitted(&mut h, &udp));
        let mut h = harness(&[("mode", "0"), ("on_new_flows", "1")]);
        for p in 0..100 {
            assert!(admitted(&mut h, &syn(7, p)));
        }
    }

    #[test]
    fn remembered_for_the_window_only() {
        let mut h = harness(&[("mode", "3"), ("window", "2")]);
        let client = syn(0x0a4d_0002, 40000);
        assert!(!admitted(&mut h, &client));
        tick(&mut h, 1);
        tick(&mut h, 1);
        assert!(
            admitted(&mut h, &client),
            "2 ticks later is within a window of 2"
        );
        assert!(!admitted(&mut h, &client));
        for _ in 0..3 {
            tick(&mut h, 1);
        }
        assert!(
            !admitted(&mut h, &client),
            "3 ticks later is a first SYN again"
        );
        assert!(admitted(&mut h, &client));
    }

    #[test]
    fn turns_on_within_the_second_at_its_share_of_the_rate() {
        // 1000 a second director-wide over 4 queues: this instance's share is 250.
        let mut h = harness(&[("on_new_flows", "1000")]);
        tick(&mut h, 4);
        for p in 0..250 {
            assert!(
                admitted(&mut h, &syn(9, p)),
                "flow {p} is under the threshold"
            );
        }
        assert!(!h.instance().is_on());
        assert!(!admitted(&mut h, &syn(9, 250)), "flow 251 turns it on");
        assert!(h.instance().is_on());
        assert!(
            admitted(&mut h, &syn(9, 250)),
            "and its retransmission passes"
        );
    }

    #[test]
    fn turns_off_after_quiet_seconds_only() {
        let mut h = harness(&[("on_new_flows", "100"), ("off_secs", "3")]);
        tick(&mut h, 1);
        let mut port = 0u16;
        let mut flows = |h: &mut DefenseHarness<SynAuth>, n: u32| {
            for _ in 0..n {
                port = port.wrapping_add(1);
                admitted(h, &syn(5, port));
            }
        };
        flows(&mut h, 101);
        assert!(h.instance().is_on());
        // Quiet below half the threshold (50) for 2 ticks, then 60 flows (not quiet: the
        // count restarts), then 3 quiet ticks turn it off.
        for (n, on_after) in [
            (10, true),
            (49, true),
            (60, true),
            (0, true),
            (10, true),
            (49, false),
        ] {
            flows(&mut h, n);
            tick(&mut h, 1);
            assert_eq!(
                h.instance().is_on(),
                on_after,
                "after a second of {n} flows"
            );
        }
        assert!(admitted(&mut h, &syn(5, 60000)), "off: first SYNs pass");
    }

    #[test]
    fn a_first_syn_survives_a_flood_that_fits_its_memory() {
        // 4096 slots; a legit first SYN, then 2000 spoofed ones in the same second.
        let mut h = harness(&[("mode", "3"), ("slots", "4096")]);
        let legit = syn(0x0a4d_0002, 40000);
        assert!(!admitted(&mut h, &legit));
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            assert!(!admitted(&mut h, &syn(x, (x >> 16) as u16)));
        }
        tick(&mut h, 1);
        assert!(
            admitted(&mut h, &legit),
            "the retransmission a second later passes"
        );
        assert_eq!(h.instance().authenticated, 1);
    }

    #[test]
    fn config_errors_name_the_key() {
        for (cfg, want) in [
            (&[("mode", "2")][..], "config key `mode`"),
            (&[("on_new_flows", "0")][..], "config key `on_new_flows`"),
            (&[("off_secs", "0")][..], "config key `off_secs`"),
            (&[("window", "0")][..], "config key `window`"),
            (&[("window", "61")][..], "config key `window`"),
            (&[("slots", "1000")][..], "config key `slots`"),
            (&[("slots", "2097152")][..], "config key `slots`"),
            (&[("bogus", "1")][..], "bogus"),
        ] {
            let Err(e) = DefenseHarness::<SynAuth>::new(cfg) else {
                panic!("{cfg:?} was accepted");
            };
            assert!(e.contains(want), "{cfg:?}: {e}");
        }
    }
}
