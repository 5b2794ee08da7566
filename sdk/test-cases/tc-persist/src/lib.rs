//! Hostile persistence: the key is the client's /24 (as persist-netmask with
//! 255.255.255.0), except for flows from client port `trap_port` (default 666), where
//! `affinity` panics (a trap), and from `spin_port` (default 667), where it loops until the
//! host's deadline stops it. It proves that a faulty persistence plugin costs those flows
//! their persistence, never their forwarding.
#![no_std]
use ringvs_sdk::prelude::*;

/// The hostile persistence plugin.
pub struct Hostile {
    trap: u16,
    spin: u16,
}

impl Default for Hostile {
    fn default() -> Self {
        Hostile {
            trap: 666,
            spin: 667,
        }
    }
}

impl Persistence for Hostile {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["trap_port", "spin_port"])?;
        self.trap = config.parse_or("trap_port", 666u16)?;
        self.spin = config.parse_or("spin_port", 667u16)?;
        Ok(())
    }

    fn affinity(&mut self, flow: &Flow) -> Option<u64> {
        if flow.client_port == self.trap {
            panic!("tripwire");
        }
        if flow.client_port == self.spin {
            let mut x = 1u64;
            // Never ends; `black_box` keeps the loop from being optimised away.
            loop {
                x = core::hint::black_box(x.wrapping_mul(3));
            }
        }
        match flow.client {
            IpAddr::V4(a) => Some((u32::from(a) & 0xffff_ff00) as u64),
            IpAddr::V6(_) => None,
        }
    }
}

export_persistence!(Hostile);
