//! drop_packet (IPVS `update_defense_level` in `ip_vs_ctl.c`, `ip_vs_todrop` in `ip_vs.h`):
//! refuse one new flow in `rate` before it reaches a realserver, `rate` shrinking — more
//! drops — as memory runs out.
//!
//! In the automatic modes (1, 2), while `availmem < amemthresh`:
//!
//! ```text
//! rate = amemthresh / (amemthresh − availmem)      (integer division, as IPVS)
//! ```
//!
//! so half the threshold left drops 1 in 2, a quarter left 3 in 4… and nothing left drops
//! every new flow (rate 1). In mode 3 the rate is `am_droprate` (default 10) regardless of
//! memory. The host counts the flows; this plugin only emits `drop-rate(rate)` when the rate
//! changes, and `drop-rate(0)` (refuse none) when the strategy turns off.
//!
//! Edge cases of IPVS's arithmetic, and what happens here:
//! - availmem of 0 (the table at or over its budget) gives rate 1: refuse every new flow.
//!   IPVS's signed `int` arithmetic could see a negative availmem and compute a rate of 0 —
//!   no drops at all — under the worst shortage; here availmem saturates at 0.
//! - `amemthresh = 0` is never short, so modes 1 and 2 never turn on (IPVS clamps a negative
//!   threshold to 0 for the same effect).
//! - A rate over `u32::MAX` (a threshold above 4 GiB with a few bytes short) is clamped.
//! - `am_droprate = 0` would mean "drop none" in mode 3; it is refused (use `mode = 0`).

#![no_std]

use ringvs_sdk::prelude::*;
use ringvs_sdk::pressure::Pressure;

/// IPVS's default `am_droprate`.
pub const AM_DROPRATE: u32 = 10;

/// The strategy's mode and the rate this instance last asked for.
#[derive(Debug)]
pub struct DropPacket {
    pressure: Pressure,
    am_droprate: u32,
    /// The rate last emitted (the host starts at 0: refuse none).
    rate: u32,
}

impl Default for DropPacket {
    fn default() -> Self {
        DropPacket {
            pressure: Pressure::new(1),
            am_droprate: AM_DROPRATE,
            rate: 0,
        }
    }
}

/// IPVS's automatic rate: `amemthresh / (amemthresh − availmem)`, at least 1.
pub fn ipvs_rate(availmem: u64, amemthresh: u64) -> u32 {
    let short = amemthresh.saturating_sub(availmem).max(1);
    let rate = (amemthresh / short).max(1);
    u32::try_from(rate).unwrap_or(u32::MAX)
}

impl Defense for DropPacket {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let [a, b, c] = Pressure::KEYS;
        config.check_keys(&[a, b, c, "am_droprate"])?;
        self.pressure = Pressure::from_config(config, 1)?;
        self.am_droprate = config.parse_or("am_droprate", AM_DROPRATE)?;
        if self.am_droprate == 0 {
            return Err(
                "config key `am_droprate`: cannot use 0 (expected 1 or more: refuse 1 new flow \
                 in that many; mode = 0 turns the strategy off)"
                    .into(),
            );
        }
        Ok(())
    }

    fn tick(&mut self, stats: &TickStats, _table: &dyn ringvs_sdk::Table) -> Vec<Action> {
        let r = self.pressure.update(stats);
        let rate = match (r.on, self.pressure.mode()) {
            (false, _) => 0,
            (true, 3) => self.am_droprate,
            (true, _) => ipvs_rate(r.availmem, r.amemthresh),
        };
        if rate == self.rate {
            return Vec::new();
        }
        self.rate = rate;
        vec![Action::DropRate(rate)]
    }
}

export_defense!(DropPacket);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, DefenseHarness, MockTable};

    fn sys(avail: u64) -> TickStats {
        TickStats {
            queues: 1,
            system_available: avail,
            ..TickStats::default()
        }
    }

    fn run(config: &[(&str, &str)], ticks: &[TickStats]) -> Vec<Vec<Action>> {
        let mut h = DefenseHarness::<DropPacket>::new(config).unwrap();
        let t = MockTable::new(0, Vec::new());
        ticks.iter().map(|st| h.tick(st, &t)).collect()
    }

    #[test]
    fn ipvs_arithmetic() {
        // (availmem, amemthresh, rate), worked out by hand.
        for (avail, thresh, want) in [
            (0, 1024, 1),
            (512, 1024, 2),
            (768, 1024, 4),
            (1000, 1024, 42),
            (1023, 1024, 1024),
            (3 << 20, 4 << 20, 4),
            (0, 1, 1),
            ((1 << 40) - 1, 1 << 40, u32::MAX),
        ] {
            assert_eq!(ipvs_rate(avail, thresh), want, "{avail} of {thresh}");
        }
    }

    #[test]
    fn rate_follows_memory_and_is_sent_on_changes_only() {
        let cfg = [("memory", "system"), ("amemthresh", "1024")];
        let ticks: Vec<TickStats> = [2048, 1000, 1000, 768, 512, 0, 1023, 1024, 5000]
            .into_iter()
            .map(sys)
            .collect();
        let want: Vec<Vec<Action>> = vec![
            vec![],
            vec![Action::DropRate(42)],
            vec![],
            vec![Action::DropRate(4)],
            vec![Action::DropRate(2)],
            vec![Action::DropRate(1)],
            vec![Action::DropRate(1024)],
            vec![Action::DropRate(0)],
            vec![],
        ];
        assert_eq!(run(&cfg, &ticks), want);
    }

    #[test]
    fn table_memory_with_queues() {
        // 4 queues, each with 8000 bytes of budget: 32000 director-wide, threshold 4000.
        // 500 left in this queue ≈ 2000 director-wide: rate 4000 / 2000 = 2.
        let st = |used: u64| TickStats {
            queues: 4,
            memory: used,
            memory_limit: 8000,
            ..TickStats::default()
        };
        assert_eq!(
            run(&[], &[st(7000), st(7500), st(8000), st(9000), st(6000)]),
            [
                vec![],
                vec![Action::DropRate(2)],
                vec![Action::DropRate(1)],
                vec![],
                vec![Action::DropRate(0)],
            ]
        );
    }

    #[test]
    fn mode_moves_between_1_and_2() {
        let mut h =
            DefenseHarness::<DropPacket>::new(&[("memory", "system"), ("amemthresh", "100")])
                .unwrap();
        let t = MockTable::new(0, Vec::new());
        let mut modes = Vec::new();
        for a in [200, 50, 10, 200] {
            h.tick(&sys(a), &t);
            modes.push(h.instance().pressure.mode());
        }
        assert_eq!(modes, [1, 2, 2, 1]);
    }

    #[test]
    fn mode_3_uses_am_droprate_and_mode_0_nothing() {
        let ticks = [sys(0), sys(1 << 30), sys(0)];
        assert_eq!(
            run(&[("mode", "3"), ("memory", "system")], &ticks),
            [vec![Action::DropRate(10)], vec![], vec![]]
        );
        assert_eq!(
            run(&[("mode", "3"), ("am_droprate", "3")], &ticks),
            [vec![Action::DropRate(3)], vec![], vec![]]
        );
        assert!(run(&[("mode", "0"), ("memory", "system")], &ticks)
            .iter()
            .all(Vec::is_empty));
    }

    #[test]
    fn zero_threshold_never_turns_on() {
        let ticks = [sys(0), sys(0)];
        assert!(run(&[("memory", "system"), ("amemthresh", "0")], &ticks)
            .iter()
            .all(Vec::is_empty));
    }

    #[test]
    fn admits_everything_the_host_counts() {
        let mut h = DefenseHarness::<DropPacket>::new(&[("mode", "3")]).unwrap();
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        assert_eq!(h.admit(&f, SourceStats::default()), Verdict::Accept);
    }

    #[test]
    fn refuses_bad_config() {
        for (k, v) in [
            ("am_droprate", "0"),
            ("am_droprate", "ten"),
            ("drop_rate", "10"),
            ("memory", "disk"),
        ] {
            let r = DefenseHarness::<DropPacket>::new(&[(k, v)]);
            assert!(r.is_err(), "{k} = {v} accepted");
        }
        let err = DefenseHarness::<DropPacket>::new(&[("am_droprate", "0")])
            .err()
            .unwrap();
        assert!(err.contains("`am_droprate`"), "{err}");
    }
}
