//! Hostile: `pick` allocates 8 MiB at a time, forever; the memory limit must stop it.
//!
//! It behaves (round robin) until a flow comes from client port 666 (`trigger_port`), or
//! on every call with `always = true`: the first proves the director contains a fault at
//! run time, the second that a load-time self-test refuses the plugin.
#![no_std]
use ringvs_sdk::prelude::*;

/// The hostile scheduler.
pub struct Bomb {
    always: bool,
    trigger: u16,
    next: usize,
    hoard: Vec<Vec<u8>>,
}

impl Default for Bomb {
    fn default() -> Self {
        Bomb {
            always: false,
            trigger: 666,
            next: 0,
            hoard: Vec::new(),
        }
    }
}

impl Scheduler for Bomb {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["always", "trigger_port"])?;
        self.always = config.parse_or("always", false)?;
        self.trigger = config.parse_or("trigger_port", 666u16)?;
        Ok(())
    }

    fn pick(&mut self, flow: &Flow, servers: &Servers) -> Option<usize> {
        if self.always || flow.client_port == self.trigger {
            // Reserve 8 MiB at a time without touching it: each reservation grows the
            // linear memory, so the limit is reached in a few steps.
            loop {
                self.hoard.push(Vec::with_capacity(8 << 20));
            }
        }
        let n = servers.len();
        let i = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| servers.get(i).is_some_and(|s| s.weight > 0))?;
        self.next = i + 1;
        Some(i)
    }
}

export_scheduler!(Bomb);
