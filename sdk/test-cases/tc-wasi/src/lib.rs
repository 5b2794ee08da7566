//! A scheduler built with std that prints: std's I/O imports `wasi:cli` and `wasi:io`, which
//! the director does not link into plugins. Loading it must be refused with the imports named.
use ringvs_sdk::prelude::*;

/// Chatty.
#[derive(Default)]
pub struct Chatty;

impl Scheduler for Chatty {
    fn pick(&mut self, flow: &Flow, _servers: &Servers) -> Option<usize> {
        std::println!("picking for {}", flow.client);
        Some(0)
    }
}

export_scheduler!(Chatty);
