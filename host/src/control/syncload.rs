//! Connection sync under load on this machine (`ringvs ha bench`, and `cargo bench --bench
//! sync_load`): two detached directors — their queues driven here, no device, no privileges —
//! syncing over UDP on loopback with the defaults (`threshold` 3, `max_rate` 10,000 messages
//! a second). What sizes `sync.max_rate` and shows what a failover keeps.
//!
//! - [`steady`]: the master opens `rate` connections a second (SYN, SYN-ACK, ACK and a data
//!   segment each: synced at the third client packet) for `secs`, while the backup's queue
//!   is polled every millisecond on its own thread. Reported: the rate reached, entries and
//!   messages sent, the bandwidth, the sync lag (the longest an entry waited to be sent, the
//!   worst second), entries not queued, and how many the backup holds at the end against
//!   the master's table.
//! - [`bulk`]: the master holds `n` established connections; a backup starts and gets them
//!   in a bulk transfer. Reported: how long until the backup has them all.

use crate::control::daemon::Daemon;
use crate::control::protocol::HaResult;
use crate::dataplane::testkit::{free_udp_port, tcp};
use crate::dataplane::{Packet, Pipeline, Shard, Verdict, HEADROOM};
use crate::wire::tcp::flags::{ACK, PSH, SYN};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A throwaway key: both directors are in this process.
const KEY: &str = "8d1f0c5b7a3e92d4c6b8a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e9d1";
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 100), 80);

/// A detached director syncing on 127.0.0.1:`port` with the peer on `peer`.
fn daemon(id: u32, port: u16, peer: u16, role: &str) -> Result<(Daemon, Shard), String> {
    let text = format!(
        "[director]\nadmin_socket = \"/nonexistent/sync-bench-{id}.sock\"\nmetrics_listen = \"off\"\n\
         conn_memory_limit = \"192MiB\"\n\
         [director.sync]\nid = {id}\nkey = \"{KEY}\"\nlisten = \"127.0.0.1:{port}\"\n\
         peers = [\"127.0.0.1:{peer}\"]\nrole = \"{role}\"\n\
         [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nscheduler = \"rr\"\nsyn_proxy = \"off\"\n\
         [[service.server]]\naddr = \"10.77.1.1:8080\"\n[[service.server]]\naddr = \"10.77.1.2:8080\"\n\
         [[service.server]]\naddr = \"10.77.1.3:8080\"\n"
    );
    let cfg = crate::config::from_str(&text, "sync-bench.toml").map_err(|e| e.to_string())?;
    let (d, mut shards) = Daemon::detached(cfg).map_err(|e| e.to_string())?;
    Ok((d, shards.remove(0)))
}

fn client(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(0x0a4e_0000 | (i >> 14)),
        1024 + (i & 0x3fff) as u16,
    )
}

/// Runs `pkt` through `s`; where it was forwarded to.
fn one(s: &mut Shard, pkt: &[u8], buf: &mut [u8]) -> Option<SocketAddrV4> {
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let mut p = Packet::new(buf, HEADROOM, pkt.len())?;
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
    d.ha_status().unwrap_or_default()
}

/// What [`steady`] measured.
#[derive(Debug, Clone, Default)]
pub struct Steady {
    /// Connections the master opened, and over how long (s).
    pub opened: u32,
    pub secs: f64,
    /// The master's sync counters at the end.
    pub master: HaResult,
    /// The backup's.
    pub backup: HaResult,
    /// The worst second's sync lag, ms.
    pub lag_ms: f64,
    /// Upper bound of the sync bandwidth, Mbit/s (full messages with their headers).
    pub mbit: f64,
    /// Connections in each table at the end.
    pub master_conns: usize,
    pub backup_conns: usize,
}

impl Steady {
    /// The backup holds every connection the master has.
    pub fn complete(&self) -> bool {
        self.opened > 0 && self.backup_conns >= self.master_conns
    }
}

impl std::fmt::Display for Steady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (&self.master, &self.backup);
        write!(
            f,
            "steady: {} connections in {:.1} s ({:.0}/s); sent {} entries in {} messages \
             (~{:.1} Mbit/s at most), not queued {}, send errors {}; sync lag (worst second) \
             {:.1} ms; backup: received {} entries, took {}, ignored {}, holds {} of the master's {} connections",
            self.opened,
            self.secs,
            f64::from(self.opened) / self.secs.max(1e-9),
            a.sent_entries,
            a.sent_messages,
            self.mbit,
            a.queue_full,
            a.send_errors,
            self.lag_ms,
            b.received_entries,
            b.applied,
            b.ignored,
            self.backup_conns,
            self.master_conns
        )
    }
}

/// `rate` new connections a second on the master for `secs` (see the module docs).
pub fn steady(rate: u64, secs: u64) -> Result<Steady, String> {
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (da, mut a) = daemon(1, pa, pb, "master")?;
    let (db, b) = daemon(2, pb, pa, "backup")?;
    let stop = Arc::new(AtomicBool::new(false));
    let bt = poller(b, stop.clone());
    let mut buf = vec![0u8; HEADROOM + 2048];
    let start = Instant::now();
    let (mut opened, mut lag_ms, mut next) = (0u32, 0f64, 0u32);
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
            lag_ms = lag_ms.max(ha(&da).lag_ms);
            second = Instant::now();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = start.elapsed().as_secs_f64();
    let sent_messages = ha(&da).sent_messages;
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
    lag_ms = lag_ms.max(ha(&da).lag_ms);
    stop.store(true, Ordering::Relaxed);
    let b = bt.join().map_err(|_| "the backup's queue panicked")?;
    let msg_bytes = 28 + 50 * 28 + 32 + 28; // a full message with its IPv4 and UDP headers
    Ok(Steady {
        opened,
        secs: took,
        master: ha(&da),
        backup: ha(&db),
        lag_ms,
        mbit: sent_messages as f64 * msg_bytes as f64 * 8.0 / took / 1e6,
        master_conns: a.table().len(),
        backup_conns: b.table().len(),
    })
}

/// What [`bulk`] measured.
#[derive(Debug, Clone, Default)]
pub struct Bulk {
    /// Connections the master opened, and how long that took (s).
    pub opened: u32,
    pub open_secs: f64,
    /// From the backup's start until it held them all (s); `None`: not within 120 s.
    pub secs: Option<f64>,
    /// The backup's counters and table at the end.
    pub backup: HaResult,
    pub backup_conns: usize,
}

impl Bulk {
    /// The backup got every connection in one bulk transfer.
    pub fn complete(&self) -> bool {
        self.secs.is_some() && self.backup_conns >= self.opened as usize
    }
}

impl std::fmt::Display for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.backup;
        write!(
            f,
            "bulk: the master opened {} connections in {:.1} s; ",
            self.opened, self.open_secs
        )?;
        match self.secs {
            Some(s) => write!(
                f,
                "a starting backup got them in {s:.2} s ({:.0} entries/s)",
                h.applied as f64 / s.max(1e-9)
            )?,
            None => write!(f, "NOT DONE after 120 s")?,
        }
        write!(
            f,
            "; it holds {} (bulk transfers received {}, rejected {})",
            self.backup_conns,
            h.bulk_received,
            h.rejected.values().sum::<u64>()
        )
    }
}

/// A backup that starts while the master holds `n` connections (see the module docs).
pub fn bulk(n: u32) -> Result<Bulk, String> {
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let (da, mut a) = daemon(1, pa, pb, "master")?;
    let mut buf = vec![0u8; HEADROOM + 2048];
    let t = Instant::now();
    let opened = open(&mut a, 0, n, &mut buf);
    let open_secs = t.elapsed().as_secs_f64();
    // Their entries went to a peer that is not there; drain them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ha(&da).sent_entries < u64::from(opened) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let (db, b) = daemon(2, pb, pa, "backup")?;
    let stop = Arc::new(AtomicBool::new(false));
    let bt = poller(b, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let secs = loop {
        a.poll(Instant::now());
        let h = ha(&db);
        if h.bulk_received >= 1 && h.applied >= u64::from(opened) {
            break Some(start.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    stop.store(true, Ordering::Relaxed);
    let b = bt.join().map_err(|_| "the backup's queue panicked")?;
    Ok(Bulk {
        opened,
        open_secs,
        secs,
        backup: ha(&db),
        backup_conns: b.table().len(),
    })
}
