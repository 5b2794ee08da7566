//! Connection sync under load, between two real daemons (detached: their queues driven here)
//! over UDP on loopback, with the defaults (`threshold` 3, `max_rate` 10,000 messages a
//! second).
//!
//! `cargo bench -p ringvs --bench sync_load` (`RINGVS_SYNC_RATE` new connections a second,
//! default 100,000; `RINGVS_SYNC_SECS`, default 5; `RINGVS_SYNC_BULK` entries, default
//! 1,000,000)
//!
//! - `steady`: the master opens `RATE` connections a second (SYN, SYN-ACK, ACK and a data
//!   segment each: synced at the third client packet) for `SECS`, while the backup's queue
//!   is polled every millisecond on its own thread. Printed: the rate reached, entries and
//!   messages sent, the bandwidth, the sync lag (the longest an entry waited to be sent, the
//!   worst second), entries not queued, and how many the backup holds at the end against
//!   the master's table.
//! - `bulk`: the master holds `BULK` established connections; a backup starts and gets them
//!   in a bulk transfer. Printed: how long until the backup has them all, and the rate.

use ringvs::control::daemon::Daemon;
use ringvs::control::protocol::HaResult;
use ringvs::dataplane::testkit::tcp;
use ringvs::dataplane::{Packet, Pipeline, Shard, Verdict, HEADROOM};
use ringvs::wire::tcp::flags::{ACK, PSH, SYN};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "8d1f0c5b7a3e92d4c6b8a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e9d1";
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 100), 80);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

use ringvs::dataplane::testkit::free_udp_port as free_port;

/// A detached daemon syncing on 127.0.0.1:`port` with the peer on `peer`.
fn daemon(id: u32, port: u16, peer: u16, role: &str) -> (Daemon, Shard) {
    let text = format!(
        "[director]\nadmin_socket = \"/nonexistent/sync-bench-{id}.sock\"\nmetrics_listen = \"off\"\n\
         conn_memory_limit = \"192MiB\"\n\
         [director.sync]\nid = {id}\nkey = \"{KEY}\"\nlisten = \"127.0.0.1:{port}\"\n\
         peers = [\"127.0.0.1:{peer}\"]\nrole = \"{role}\"\n\
         [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nscheduler = \"rr\"\nsyn_proxy = \"off\"\n\
         [[service.server]]\naddr = \"10.77.1.1:8080\"\n[[service.server]]\naddr = \"10.77.1.2:8080\"\n\
         [[service.server]]\naddr = \"10.77.1.3:8080\"\n"
    );
    let cfg = ringvs::config::from_str(&text, "bench.toml").unwrap();
    let (d, mut shards) = Daemon::detached(cfg).unwrap();
    (d, shards.remove(0))
}

fn client(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(0x0a4e_0000 | (i >> 14)),
        1024 + (i & 0x3fff) as u16,
    )
}

/// Runs `pkt` through `s`; the forwarded bytes.
fn one(s: &mut Shard, pkt: &[u8], buf: &mut [u8]) -> Option<SocketAddrV4> {
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let mut p = Packet::new(buf, HEADROOM, pkt.len()).unwrap();
    if s.process(&mut p) != Verdict::Forward {
        return None;
    }
    let d = p.data();
    Some(SocketAddrV4::new(
        Ipv4Addr::new(d[16], d[17], d[18], d[19]),
        u16::from_be_bytes([d[22], d[23]]),
    ))
}

/// Opens connections `from..to` through `s`, past the sync threshold.
fn open(s: &mut Shard, from: u32, to: u32, buf: &mut [u8]) -> u32 {
    let mut n = 0;
    for i in from..to {
        let c = client(i);
        let Some(rs) = one(s, &tcp(c, VIP, SYN, b""), buf) else {
            continue;
        };
        one(s, &tcp(rs, c, SYN | ACK, b""), buf);
        one(s, &tcp(c, VIP, ACK, b""), buf);
        n += u32::from(one(s, &tcp(c, VIP, ACK | PSH, b"GET /"), buf).is_some());
    }
    n
}

/// Polls `shard` every millisecond on a thread until `stop`.
fn poller(mut shard: Shard, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Shard> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            shard.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(1));
        }
        shard
    })
}

fn ha(d: &Daemon) -> HaResult {
    d.ha_status().expect("sync is on")
}

fn steady(rate: u64, secs: u64) {
    let (pa, pb) = (free_port(), free_port());
    let (da, mut a) = daemon(1, pa, pb, "master");
    let (db, b) = daemon(2, pb, pa, "backup");
    let stop = Arc::new(AtomicBool::new(false));
    let bt = poller(b, stop.clone());
    let mut buf = vec![0u8; HEADROOM + 2048];
    let start = Instant::now();
    let (mut opened, mut lag_max, mut next) = (0u32, 0f64, 0u32);
    let mut second = Instant::now();
    let per_ms = (rate / 1000).max(1) as u32;
    while start.elapsed() < Duration::from_secs(secs) {
        let due = (start.elapsed().as_millis() as u32 + 1) * per_ms;
        if next < due {
            opened += open(&mut a, next, due, &mut buf);
            next = due;
        }
        a.poll(Instant::now());
        if second.elapsed() >= Duration::from_secs(1) {
            lag_max = lag_max.max(ha(&da).lag_ms);
            second = Instant::now();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = start.elapsed().as_secs_f64();
    let ha_a0 = ha(&da);
    // Let the last batch leave (20 ms) and arrive: until the backup has taken all that was
    // sent and nothing more came for 200 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        a.poll(Instant::now());
        let taken = ha(&db).applied;
        if taken != last.0 {
            last = (taken, Instant::now());
        } else if taken >= ha(&da).sent_entries && last.1.elapsed() > Duration::from_millis(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    lag_max = lag_max.max(ha(&da).lag_ms);
    stop.store(true, Ordering::Relaxed);
    let b = bt.join().unwrap();
    let (ha_a, ha_b) = (ha(&da), ha(&db));
    let msg_bytes = 28 + 50 * 28 + 32 + 28; // a full message with its IPv4 and UDP headers
    let mbit = ha_a0.sent_messages as f64 * msg_bytes as f64 * 8.0 / took / 1e6;
    println!(
        "steady: {opened} connections in {took:.1} s ({:.0}/s); sent {} entries in {} messages \
         (~{mbit:.1} Mbit/s at most), not queued {}, send errors {}; sync lag (worst second) \
         {lag_max:.1} ms; backup: received {} entries, took {}, ignored {}, holds {} of the master's {} connections",
        f64::from(opened) / took,
        ha_a.sent_entries,
        ha_a.sent_messages,
        ha_a.queue_full,
        ha_a.send_errors,
        ha_b.received_entries,
        ha_b.applied,
        ha_b.ignored,
        b.table().len(),
        a.table().len()
    );
}

fn bulk(n: u32) {
    let (pa, pb) = (free_port(), free_port());
    let (da, mut a) = daemon(1, pa, pb, "master");
    let mut buf = vec![0u8; HEADROOM + 2048];
    let t = Instant::now();
    let opened = open(&mut a, 0, n, &mut buf);
    println!(
        "bulk: the master opened {opened} connections in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Their entries went to a peer that is not there; drain them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ha(&da).sent_entries < u64::from(opened) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let (db, b) = daemon(2, pb, pa, "backup");
    let stop = Arc::new(AtomicBool::new(false));
    let bt = poller(b, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let took = loop {
        a.poll(Instant::now());
        let h = ha(&db);
        if h.bulk_received >= 1 && h.applied >= u64::from(opened) {
            break start.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            println!("bulk: NOT DONE after 120 s: {h:#?}");
            break f64::NAN;
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    stop.store(true, Ordering::Relaxed);
    let b = bt.join().unwrap();
    let h = ha(&db);
    println!(
        "bulk: {} entries to a starting backup in {took:.2} s ({:.0} entries/s); it holds {} \
         (bulk transfers received {}, rejected {:?})",
        h.applied,
        h.applied as f64 / took,
        b.table().len(),
        h.bulk_received,
        h.rejected.values().sum::<u64>()
    );
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |row: &str| filter.as_deref().is_none_or(|f| row.contains(f));
    if want("steady") {
        steady(env("RINGVS_SYNC_RATE", 100_000), env("RINGVS_SYNC_SECS", 5));
    }
    if want("bulk") {
        bulk(env("RINGVS_SYNC_BULK", 1_000_000) as u32);
    }
}
