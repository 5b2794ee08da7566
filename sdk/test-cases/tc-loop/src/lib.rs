//! Hostile: `pick` spins forever; the director's epoch deadline must stop it.
//!
//! It behaves (round robin) until a flow comes from client port 666 (`trigger_port`), or
//! on every call with `always = true`: the first proves the director contains a fault at
//! run time, the second that a load-time self-test refuses the plugin.
#![no_std]
use ringvs_sdk::prelude::*;

/// The hostile scheduler.
pub struct Spin {
    always: bool,
    trigger: u16,
    next: usize,
}

impl Default for Spin {
    fn default() -> Self {
        Spin {
            always: false,
            trigger: 666,
            next: 0,
        }
    }
}

impl Scheduler for Spin {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["always", "trigger_port"])?;
        self.always = config.parse_or("always", false)?;
        self.trigger = config.parse_or("trigger_port", 666u16)?;
        Ok(())
    }

    fn pick(&mut self, flow: &Flow, servers: &Servers) -> Option<usize> {
        if self.always || flow.client_port == self.trigger {
            let mut x = 0u64;
            loop {
                x = core::hint::black_box(x.wrapping_add(1));
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

export_scheduler!(Spin);
