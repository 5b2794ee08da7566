//! Memory pressure and IPVS's defense modes, as `update_defense_level` in `ip_vs_ctl.c` runs
//! them once a second for each strategy, but per instance (no statics).
//!
//! IPVS compares `availmem` to `amemthresh` and, for each strategy, keeps a mode:
//!
//! | mode | memory short (`availmem < amemthresh`) | memory fine |
//! |------|----------------------------------------|-------------|
//! | 0    | off                                    | off         |
//! | 1    | on, and the mode becomes 2             | off         |
//! | 2    | on                                     | off, and the mode becomes 1 |
//! | 3    | on                                     | on          |
//!
//! `memory = "table"` (default) measures the connection table's budget: availmem is
//! `memory-limit − memory`. Those figures are the calling queue's share, so they are scaled
//! by `queues` to director-wide estimates, in which `amemthresh` is given (default: 1/8 of the
//! director's table budget). `memory = "system"` uses `system-available` as it is, with
//! `amemthresh` defaulting to 4 MiB (IPVS's 1024 pages).

use crate::{Config, TickStats};
use alloc::format;
use alloc::string::String;

/// IPVS's default `amemthresh`: 1024 pages of 4 KiB.
pub const SYSTEM_AMEMTHRESH: u64 = 1024 * 4096;

/// Which memory `availmem` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// The connection table's budget (`memory-limit − memory`), director-wide.
    Table,
    /// The system's available memory (`system-available`).
    System,
}

/// One tick's measurement, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Whether the strategy is on for this tick.
    pub on: bool,
    /// Available memory.
    pub availmem: u64,
    /// The threshold it was compared to.
    pub amemthresh: u64,
}

/// The memory source, threshold and current mode of one strategy in one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pressure {
    source: MemorySource,
    amemthresh: Option<u64>,
    mode: u8,
}

impl Pressure {
    /// The config keys this reads.
    pub const KEYS: [&'static str; 3] = ["memory", "amemthresh", "mode"];

    /// Table memory, the default threshold, and `mode`.
    pub fn new(mode: u8) -> Pressure {
        Pressure {
            source: MemorySource::Table,
            amemthresh: None,
            mode,
        }
    }

    /// Reads `memory`, `amemthresh` and `mode` (absent: `default_mode`).
    pub fn from_config(config: &Config, default_mode: u8) -> Result<Pressure, String> {
        let source = match config.get("memory") {
            None | Some("table") => MemorySource::Table,
            Some("system") => MemorySource::System,
            Some(v) => {
                return Err(format!(
                    "config key `memory`: cannot use {v:?} (expected \"table\" or \"system\")"
                ))
            }
        };
        let amemthresh = config.parse::<u64>("amemthresh")?;
        let mode = config.parse_or::<u8>("mode", default_mode)?;
        if mode > 3 {
            return Err(format!(
                "config key `mode`: cannot use {mode} (expected 0 off, 1 automatic, \
                 2 on while memory is short, 3 always on)"
            ));
        }
        Ok(Pressure {
            source,
            amemthresh,
            mode,
        })
    }

    /// The current mode (1 and 2 alternate in the automatic modes).
    pub fn mode(&self) -> u8 {
        self.mode
    }

    /// Director-wide `(availmem, amemthresh)` for this tick's statistics.
    pub fn measure(&self, stats: &TickStats) -> (u64, u64) {
        match self.source {
            MemorySource::Table => {
                let q = u64::from(stats.queues.max(1));
                let limit = stats.memory_limit.saturating_mul(q);
                let avail = stats
                    .memory_limit
                    .saturating_sub(stats.memory)
                    .saturating_mul(q);
                (avail, self.amemthresh.unwrap_or(limit / 8))
            }
            MemorySource::System => (
                stats.system_available,
                self.amemthresh.unwrap_or(SYSTEM_AMEMTHRESH),
            ),
        }
    }

    /// One step of IPVS's automaton: whether the strategy is on this tick.
    pub fn update(&mut self, stats: &TickStats) -> Reading {
        let (availmem, amemthresh) = self.measure(stats);
        let nomem = availmem < amemthresh;
        let on = match (self.mode, nomem) {
            (0, _) => false,
            (1, true) => {
                self.mode = 2;
                true
            }
            (2, false) => {
                self.mode = 1;
                false
            }
            (3, _) => true,
            (_, nomem) => nomem,
        };
        Reading {
            on,
            availmem,
            amemthresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Pressure, String> {
        Pressure::from_config(&Config::from_pairs(pairs), 1)
    }

    fn table(queues: u32, memory: u64, limit: u64) -> TickStats {
        TickStats {
            queues,
            memory,
            memory_limit: limit,
            ..TickStats::default()
        }
    }

    #[test]
    fn table_memory_is_scaled_to_the_director() {
        let p = cfg(&[]).unwrap();
        // A queue's share: 1000 of 8000 bytes used, 4 queues.
        assert_eq!(p.measure(&table(4, 1000, 8000)), (28_000, 4_000));
        // Over the budget: nothing available, never an underflow.
        assert_eq!(p.measure(&table(1, 9000, 8000)), (0, 1_000));
        let p = cfg(&[("amemthresh", "5000")]).unwrap();
        assert_eq!(p.measure(&table(2, 0, 8000)), (16_000, 5_000));
    }

    #[test]
    fn system_memory_is_taken_as_is() {
        let p = cfg(&[("memory", "system")]).unwrap();
        let st = TickStats {
            queues: 4,
            system_available: 3 << 20,
            ..TickStats::default()
        };
        assert_eq!(p.measure(&st), (3 << 20, SYSTEM_AMEMTHRESH));
    }

    #[test]
    fn ipvs_automaton() {
        let short = table(1, 7500, 8000); // 500 available < 1000
        let fine = table(1, 1000, 8000);
        let mut p = cfg(&[]).unwrap();
        let mut seen = Vec::new();
        for st in [&fine, &short, &short, &fine, &fine] {
            let on = p.update(st).on;
            seen.push((on, p.mode()));
        }
        assert_eq!(
            seen,
            [(false, 1), (true, 2), (true, 2), (false, 1), (false, 1)]
        );
        let mut p = cfg(&[("mode", "2")]).unwrap();
        assert!(!p.update(&fine).on);
        assert_eq!(p.mode(), 1);
        for (mode, on_short, on_fine) in [("0", false, false), ("3", true, true)] {
            let mut p = cfg(&[("mode", mode)]).unwrap();
            assert_eq!(p.update(&short).on, on_short, "mode {mode}");
            assert_eq!(p.update(&fine).on, on_fine, "mode {mode}");
        }
    }

    #[test]
    fn refuses_bad_values() {
        for (k, v, want) in [
            ("memory", "swap", "`memory`"),
            ("mode", "4", "`mode`"),
            ("mode", "-1", "`mode`"),
            ("amemthresh", "4MiB", "`amemthresh`"),
        ] {
            let err = cfg(&[(k, v)]).unwrap_err();
            assert!(err.contains(want), "{k}={v}: {err}");
        }
    }
}
