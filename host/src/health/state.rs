//! The rise/fall state machine of one realserver's checks, as data and a transition
//! function: no clock, no I/O.
//!
//! ```text
//!               check ok                 fall consecutive failures
//!   Pending ───────────────▶ Up ─────────────────────────────────────▶ Down
//!      │                      ▲                                         │
//!      │ check failed         └──────── rise consecutive successes ─────┘
//!      └──────────────────────────────────────────────────────────────▶ Down
//! ```
//!
//! `Pending` is a server never checked yet: it receives no new flows, and one passed check
//! brings it up (keepalived's `alpha` mode), so a director starting with healthy servers
//! serves within one check's round trip while a dead one never gets a flow.

use std::fmt;

/// A realserver's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: no new flows until a check passes.
    Pending,
    /// Healthy: scheduled normally.
    Up,
    /// Failing: quiesced or removed, as configured.
    Down,
}

impl Health {
    /// True unless the health check holds the server out of scheduling.
    pub fn serving(self) -> bool {
        self == Health::Up
    }

    /// `pending`, `up` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts consecutive results and says when the health changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    state: Health,
    rise: u32,
    fall: u32,
    /// Consecutive passed checks while `Down` (towards `rise`).
    successes: u32,
    /// Consecutive failed checks while `Up` (towards `fall`).
    failures: u32,
}

impl Machine {
    /// A machine in `state` with empty streaks. `rise` and `fall` of 0 count as 1.
    pub fn new(state: Health, rise: u32, fall: u32) -> Machine {
        Machine {
            state,
            rise: rise.max(1),
            fall: fall.max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// The current health.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Consecutive passed checks counted towards `rise` (while down).
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failed checks counted towards `fall` (while up).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one check; returns the new health if it changed.
    pub fn record(&mut self, passed: bool) -> Option<Health> {
        let next = match (self.state, passed) {
            (Health::Pending, true) => Health::Up,
            (Health::Pending, false) => Health::Down,
            (Health::Up, true) => {
                self.failures = 0;
                Health::Up
            }
            (Health::Up, false) => {
                self.failures += 1;
                if self.failures >= self.fall {
                    Health::Down
                } else {
                    Health::Up
                }
            }
            (Health::Down, false) => {
                self.successes = 0;
                Health::Down
            }
            (Health::Down, true) => {
                self.successes += 1;
                if self.successes >= self.rise {
                    Health::Up
                } else {
                    Health::Down
                }
            }
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        self.successes = 0;
        self.failures = 0;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    /// Feeds `results` ("+" passed, "-" failed) and returns the state after each.
    fn run(m: &mut Machine, results: &str) -> Vec<Health> {
        results
            .chars()
            .map(|c| {
                m.record(c == '+');
                m.state()
            })
            .collect()
    }

    #[test]
    fn up_needs_fall_consecutive_failures_to_go_down() {
        let mut m = Machine::new(Up, 2, 3);
        assert_eq!(run(&mut m, "--"), [Up, Up]);
        assert_eq!(m.failures(), 2);
        // A success in between starts the count again.
        assert_eq!(run(&mut m, "+--"), [Up, Up, Up]);
        assert_eq!(m.record(false), Some(Down));
        assert_eq!(m.failures(), 0);
    }

    #[test]
    fn down_needs_rise_consecutive_successes_to_come_up() {
        let mut m = Machine::new(Down, 3, 1);
        assert_eq!(run(&mut m, "++-++"), [Down, Down, Down, Down, Down]);
        assert_eq!(m.successes(), 2);
        assert_eq!(m.record(true), Some(Up));
        // fall = 1: one failure is enough.
        assert_eq!(m.record(false), Some(Down));
    }

    #[test]
    fn pending_decides_on_the_first_check() {
        let mut m = Machine::new(Pending, 5, 5);
        assert_eq!(
            m.record(true),
            Some(Up),
            "one success brings a new server up"
        );
        let mut m = Machine::new(Pending, 2, 5);
        assert_eq!(m.record(false), Some(Down), "one failure keeps it out");
        // From then on it is an ordinary down server: rise successes.
        assert_eq!(run(&mut m, "+"), [Down]);
        assert_eq!(m.record(true), Some(Up));
    }

    #[test]
    fn transitions_are_reported_once() {
        let mut m = Machine::new(Up, 1, 1);
        let changes: Vec<_> = "--++-+"
            .chars()
            .filter_map(|c| m.record(c == '+'))
            .collect();
        assert_eq!(changes, [Down, Up, Down, Up]);
    }

    #[test]
    fn zero_counts_are_one() {
        let mut m = Machine::new(Up, 0, 0);
        assert_eq!(m.record(false), Some(Down));
        assert_eq!(m.record(true), Some(Up));
    }

    #[test]
    fn only_up_serves() {
        assert!(Up.serving());
        assert!(!Down.serving());
        assert!(!Pending.serving());
    }
}
