//! What an established flow's packets wait while defenses tick: one queue forwarding without
//! pause, every pass timed.
//!
//! `cargo bench -p ringvs --bench tick_latency` (`RINGVS_TICK_LATENCY_SECS`, default 8 s a
//! row; plugins built first: `bash scripts/build-plugins.sh`)
//!
//! The queue (pinned to CPU 0, as the daemon pins each of several queues; its tick thread
//! runs on the others) goes round its loop for the whole row, its clock the real one so that
//! its defenses tick once a second: a `poll` (where it serves its tick thread: hands a tick
//! over, answers one scan, applies the actions that came back) and one batch of 32 packets,
//! 28 data packets of 20 000 established flows and 4 SYNs, each from a new source (a flood
//! of about a million SYNs a second: the table, 64 MiB, fills within seconds, the SYN proxy
//! being off, and early drop makes room). A pass is what a packet of the batch waits at
//! most; its time is recorded in a histogram.
//!
//! Rows (the same traffic in each):
//! - `no_defense`: the floor, the queue's own work and the machine's noise;
//! - `tame_ticks`: the same two defenses as `hostile`, their ticks asking only for what the
//!   host applies (256 blocks a tick, no scan, no drop): the cost of asking two WebAssembly
//!   defenses to admit each new flow (4 SYNs a pass) and of checking the same number of
//!   blocks for every packet;
//! - `hostile`: two defenses on the service: `tc`, whose every tick asks for 100 000 blocks
//!   (`MAX_TICK_ACTIONS` applied, the rest refused) and drops 4096 embryonic entries
//!   (the host visits up to `MAX_TICK_SCAN` slots for them), and drop_entry always on
//!   (`mode = 3`: scans 1/32 of the table a second, 4096 slots a call, and drops up to
//!   `MAX_TICK_DROPS` entries it found).
//!
//! Printed per row: passes, ticks back, the percentiles and the longest pass in µs. Flat
//! means the `hostile` row's tail is the `tame_ticks` row's.

mod common;

use common::*;
use ringvs::dataplane::testkit::tcp;
use ringvs::dataplane::Pipeline;
use ringvs::wire::tcp::flags::{ACK, PSH, SYN};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Established flows whose packets are timed.
const FLOWS: u32 = 20_000;
/// Packets a pass: data of established flows, then SYNs of the flood.
const DATA: usize = 28;
const SYNS: usize = 4;
/// Histogram buckets: 1 µs each up to this, then one overflow bucket per ms.
const FINE_US: usize = 1000;

fn main() {
    // `cargo bench` passes `--bench`; a filter word, if any, picks rows by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let secs: u64 = std::env::var("RINGVS_TICK_LATENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let de = |mode: &str| {
        format!(
            "[plugins.de]\npath = \"{}\"\nconfig = {{ mode = \"{mode}\" }}",
            plugin("defense_drop_entry").display()
        )
    };
    // The same two defenses, their ticks asking for only what the host applies.
    let tame = hostile("", &de("0"), ", \"de\"").replace("flood = 100000", "flood = 256");
    let hostile = hostile("embryonic:4096", &de("3"), ", \"de\"");
    pin_to_cpu0();
    println!("row          passes   ticks   p50   p99  p99.9 p99.99    max  (µs, a pass = poll + 32 packets)");
    for (name, text) in [
        ("no_defense", CONFIG.to_string()),
        ("tame_ticks", tame),
        ("hostile", hostile),
    ] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let h = run(&text, Duration::from_secs(secs));
        println!(
            "{name:<12} {:>7} {:>6} {:>5} {:>5} {:>6} {:>6} {:>6}",
            h.passes,
            h.ticks,
            h.quantile(0.5),
            h.quantile(0.99),
            h.quantile(0.999),
            h.quantile(0.9999),
            h.max_us
        );
        print!("{}", h.work);
    }
}

/// Runs one row for `length` of real time after a second's warm-up.
fn run(text: &str, length: Duration) -> Histogram {
    let mut s = shard_in(text, 64 << 20, true).0;
    let mut buf = vec![0u8; 2048];
    for i in 0..FLOWS {
        let c = client(i);
        assert_eq!(
            run_chunk(
                &mut s,
                &[tcp(c, VIP, SYN, b""), tcp(c, VIP, ACK, b"")],
                &mut buf
            ),
            2
        );
    }
    let mut x = 0x1234_5678u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    // A ring of batches of data packets; the SYNs, each from a new source, are built
    // between two passes (outside the timed part).
    let mut batches: Vec<Vec<Vec<u8>>> = (0..4096)
        .map(|_| {
            (0..DATA + SYNS)
                .map(|_| tcp(client(next() % FLOWS), VIP, PSH | ACK, &[0x55; 24]))
                .collect()
        })
        .collect();
    let mut sources = 0u32;
    let mut syns = |batch: &mut Vec<Vec<u8>>| {
        for p in &mut batch[DATA..] {
            sources = sources.wrapping_add(1);
            // Ports from 1024 (the test defense traps on 667).
            let port = 1024 + (sources % 60_000) as u16;
            let addr = Ipv4Addr::from(0xc600_0000 | (sources / 60_000));
            *p = tcp(SocketAddrV4::new(addr, port), VIP, SYN, b"");
        }
    };
    let mut h = Histogram::default();
    let start = Instant::now();
    let warm = start + Duration::from_secs(1);
    let end = warm + length;
    let mut ticks_out = 0;
    for k in 0.. {
        let t = Instant::now();
        if t >= end {
            break;
        }
        s.poll(t);
        let batch = k % batches.len();
        run_chunk(&mut s, &batches[batch], &mut buf);
        let d = t.elapsed();
        syns(&mut batches[batch]);
        let out = s.ticks_in_flight();
        if out < ticks_out {
            h.ticks += (ticks_out - out) as u64;
        }
        ticks_out = out;
        if t >= warm {
            h.record(d);
        }
    }
    assert!(
        h.ticks > 0 || !text.contains("defense ="),
        "no tick came back: were the defenses loaded?"
    );
    h.work = format!(
        "  table at the end: {} entries of {}\n",
        s.table().len(),
        s.table().capacity()
    );
    // What the defenses had the host do (actions applied and refused, by kind).
    s.publish();
    let report = s.shared().report.lock().unwrap().plugins.clone();
    for (name, c) in report {
        h.work.push_str(&format!(
            "  {name}: calls {:?} faults {:?} fallbacks {} busy {}, applied {:?}, refused {:?} (set-level, drop-connections, \
             drop-embryonic, drop-rate, block, unblock, syn-proxy)\n",
            c.calls, c.faults, c.fallbacks, c.busy, c.actions, c.refused
        ));
    }
    h
}

/// Pass times: 1 µs buckets to [`FINE_US`], then 1 ms buckets.
struct Histogram {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    passes: u64,
    max_us: u64,
    ticks: u64,
    /// What the defenses had the host do.
    work: String,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            fine: vec![0; FINE_US],
            coarse: vec![0; 1000],
            passes: 0,
            max_us: 0,
            ticks: 0,
            work: String::new(),
        }
    }
}

impl Histogram {
    fn record(&mut self, d: Duration) {
        let us = d.as_micros() as u64;
        self.passes += 1;
        self.max_us = self.max_us.max(us);
        if (us as usize) < FINE_US {
            self.fine[us as usize] += 1;
        } else {
            let last = self.coarse.len() - 1;
            self.coarse[((us / 1000) as usize).min(last)] += 1;
        }
    }

    /// The pass time (µs, rounded up to its bucket) that a share `q` of passes stay within.
    fn quantile(&self, q: f64) -> u64 {
        let want = (self.passes as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (us, &n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= want {
                return us as u64 + 1;
            }
        }
        for (ms, &n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (ms as u64 + 1) * 1000;
            }
        }
        self.max_us
    }
}
