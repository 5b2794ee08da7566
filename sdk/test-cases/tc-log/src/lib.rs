//! A chatty scheduler: round robin over the available servers that writes a message to the
//! director's log at every pick (info) and one at init (warn), for the host's log tests
//! (rate limit, counters, the plugin's name in the output).

#![no_std]

use ringvs_sdk::log;
use ringvs_sdk::prelude::*;

/// Round robin with a cursor, logging.
#[derive(Default)]
pub struct Chatty {
    next: usize,
}

impl Scheduler for Chatty {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        log::warn(&format!("configured with {} key(s)", config.keys().count()));
        config.check_keys(&[])
    }

    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        let n = servers.len();
        let chosen = (0..n)
            .map(|i| (self.next + i) % n)
            .find(|&i| servers.get(i).is_some_and(|s| s.is_available()))?;
        self.next = chosen + 1;
        log::info(&format!("picked server {chosen}"));
        Some(chosen)
    }
}

export_scheduler!(Chatty);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, take_logs, SchedulerHarness};

    #[test]
    fn logs_each_pick() {
        let mut h = SchedulerHarness::<Chatty>::new(&[])
            .unwrap()
            .servers(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]);
        let f = flow("10.1.0.1:1", "10.2.0.1:80");
        assert_eq!(h.pick(&f), Some(0));
        assert_eq!(h.pick(&f), Some(1));
        let logs = take_logs();
        assert_eq!(
            logs,
            vec![
                (log::Level::Warn, "configured with 0 key(s)".to_string()),
                (log::Level::Info, "picked server 0".to_string()),
                (log::Level::Info, "picked server 1".to_string()),
            ]
        );
        assert!(take_logs().is_empty());
    }
}
