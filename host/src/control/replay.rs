//! `ringvs replay`: runs a capture through the data plane offline, with no privileges, no
//! network and no device, and reports what the director would have decided.
//!
//! One [`Shard`] (one queue holding all of `director.conn_memory_limit`) processes every
//! record of the capture in order. Time comes from the capture: the first record is tick 0,
//! and before each packet the queue's clock moves to the record's offset from the first, so
//! timeouts and expiry behave as they would live. A gap longer than the wrapping clock can
//! take in one move ([`MAX_STEP`], 3.4 years) is crossed in several. The connection hash uses a fixed key
//! ([`REPLAY_HASH_KEY`]), so two runs over the same capture give the same report.
//!
//! The config's plugins run as in the daemon: schedulers, persistence and defenses are
//! loaded, self-tested and instantiated for the one queue, with the capture's time as the
//! queue's clock (defense ticks, template expiry). A plugin that cannot load stops the replay
//! with the same error as `ringvs check`.
//!
//! Records are handled as the daemon would handle packets read from its device, with two
//! exceptions that only a capture can produce: a record cut short by the capture's snaplen
//! (captured length below the original length) is counted and skipped, because its headers'
//! lengths no longer match its bytes; and a timestamp earlier than the one before it is
//! counted and treated as "no time passed", because the data plane's clock never goes back.

use crate::config::{self, Config, ConfigError};
use crate::conn::{HashKey, State, Tick, MAX_STEP, TICKS_PER_SEC};
use crate::control::plugins::PluginManager;
use crate::control::registry::{EditError, Registry};
use crate::dataplane::stats::DropReason;
use crate::dataplane::{Packet, Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use crate::io::pcap::{PcapError, PcapReader, PcapRecord, PcapWriter};
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection-hash key of every replay (the daemon draws a random one at start).
pub const REPLAY_HASH_KEY: HashKey = HashKey([0x7269_6e67_7673_2d72, 0x6570_6c61_792d_6b31]);

/// Most new-flow decisions kept in a report; the rest are only counted.
pub const MAX_FLOWS: usize = 1000;

/// Most timeline samples a report keeps.
pub const MAX_SAMPLES: usize = 3600;

/// The table and the defenses at one moment of the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Whole seconds since the first record.
    pub at_secs: u64,
    /// Live entries in the table.
    pub entries: u64,
    /// Packets dropped by defenses so far (`defense` drops).
    pub defense_drops: u64,
}

/// Most new-flow decisions the text report prints.
const TEXT_FLOWS: usize = 10;

/// Free bytes kept after each packet in the replay buffer, as a real I/O buffer has.
const TAILROOM: usize = 256;

/// Why a replay could not run. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The config file is missing or invalid (the same errors as `ringvs check`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The capture cannot be read, or the output capture cannot be written.
    #[error(transparent)]
    Pcap(#[from] PcapError),
    /// The services of the config cannot be set up.
    #[error("{file}: {source}")]
    Services {
        /// The config file.
        file: String,
        /// What is wrong.
        #[source]
        source: EditError,
    },
    /// A plugin of the config cannot be loaded or instantiated (as `ringvs check` says).
    #[error("{file}: {message}")]
    Plugins {
        /// The config file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The connection table does not fit in `director.conn_memory_limit`.
    #[error("{file}: key `director.conn_memory_limit`: {source}")]
    Table {
        /// The config file.
        file: String,
        /// What is wrong.
        #[source]
        source: crate::conn::BudgetTooSmall,
    },
}

/// Everything a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The config file.
    pub config: String,
    /// The capture file, when replayed from a file.
    pub capture: Option<String>,
    /// What was read.
    pub packets: Packets,
    /// The time the capture spans.
    pub time: TimeSpan,
    /// Packets the director would have sent on.
    pub forwarded: Forwarded,
    /// Packets the director would have dropped.
    pub dropped: Dropped,
    /// Connections created per service and realserver.
    pub services: Vec<ServiceReport>,
    /// The first [`MAX_FLOWS`] new flows and where they went.
    pub flows: Vec<FlowDecision>,
    /// New flows beyond [`MAX_FLOWS`], counted only.
    pub flows_omitted: u64,
    /// New flows a persistence template sent to its realserver (template hits).
    pub persistence_hits: u64,
    /// The connection table after the last packet.
    pub table: TableReport,
    /// Table occupancy and defense refusals over the capture's time: a sample at the first
    /// record of each new second (at most [`MAX_SAMPLES`]), and one at the end.
    pub timeline: Vec<Sample>,
    /// Every new-flow decision, in order (for `--compare`; not in the report).
    #[serde(skip)]
    pub decisions: Vec<FlowDecision>,
    /// How the replay differs from what the daemon would do with this config.
    pub notes: Vec<String>,
}

/// Records read from the capture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Packets {
    /// IP records read (IPv4, IPv6 and anything with a 4 or 6 in its version nibble).
    pub read: u64,
    /// Records handed to the data plane (`read` minus `truncated`).
    pub processed: u64,
    /// Records cut short by the capture's snaplen: counted and skipped.
    pub truncated: u64,
    /// Frames the capture reader skipped because they are not IP (ARP, LLDP …).
    pub not_ip: u64,
    /// Of `processed`, IPv6 packets (the data plane's IPv6 path takes them).
    pub ipv6: u64,
    /// Records whose timestamp is earlier than the one before (replayed as no time passing).
    pub out_of_order: u64,
}

/// The time a capture spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeSpan {
    /// Timestamp of the first record (RFC 3339, UTC), if any.
    pub first: Option<String>,
    /// The latest timestamp of any record, if any.
    pub last: Option<String>,
    /// Seconds from the first record to the latest timestamp.
    pub span_secs: f64,
}

/// Forwarded packets by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Forwarded {
    /// All forwarded packets.
    pub total: u64,
    /// Client → virtual service, rewritten to a realserver.
    pub to_realservers: u64,
    /// Realserver → client, rewritten to come from the virtual service.
    pub to_clients: u64,
    /// Passed through unchanged (not for a service, not from one).
    pub passthrough: u64,
    /// ICMP errors about a tracked flow, translated.
    pub icmp_translated: u64,
    /// Echo requests to a virtual address, answered.
    pub echo_replies: u64,
}

/// Dropped packets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// All dropped packets.
    pub total: u64,
    /// Every reason with a nonzero count, in [`DropReason::ALL`] order.
    pub by_reason: Vec<ReasonCount>,
}

/// Drops of one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The `reason` label of `ringvs_dropped_packets_total`.
    pub reason: &'static str,
    /// Packets.
    pub packets: u64,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceReport {
    /// Name.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Virtual address.
    pub vip: SocketAddr,
    /// Configured scheduler.
    pub scheduler: String,
    /// Connections created.
    pub conns: u64,
    /// Packets client → server.
    pub in_pkts: u64,
    /// Packets server → client.
    pub out_pkts: u64,
    /// Its realservers.
    pub servers: Vec<ServerReport>,
}

/// One realserver of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerReport {
    /// Address.
    pub addr: SocketAddr,
    /// Configured weight.
    pub weight: u32,
    /// Connections created.
    pub conns: u64,
    /// Active connections (ESTABLISHED) after the last packet.
    pub active: u32,
    /// Inactive connections (every other state) after the last packet.
    pub inactive: u32,
}

/// Where a new flow went: the scheduler's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowDecision {
    /// Seconds since the first record.
    pub at_secs: f64,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The client.
    pub client: SocketAddrV4,
    /// The virtual service it addressed.
    pub vip: SocketAddrV4,
    /// The realserver it was sent to.
    pub server: SocketAddrV4,
}

/// The connection table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// Live entries.
    pub entries: u64,
    /// Live entries of every state that has any, in [`State::ALL`] order.
    pub by_state: Vec<StateCount>,
    /// Connections removed by their timers during the replay.
    pub expired: u64,
    /// Bytes accounted to the table.
    pub memory_bytes: u64,
    /// The table's budget (`director.conn_memory_limit`).
    pub memory_limit: u64,
    /// Entries the budget allows.
    pub capacity: u64,
}

/// Entries in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// The state as `ipvsadm -Lnc` names it.
    pub state: &'static str,
    /// Entries.
    pub entries: u64,
}

/// Loads and validates `config_path` as `ringvs check` does, replays `pcap_path`, and writes
/// every forwarded packet to `out_path` if given. The output file is created only once the
/// config and the capture have been opened.
pub fn replay_files(
    config_path: &Path,
    pcap_path: &Path,
    out_path: Option<&Path>,
) -> Result<ReplayReport, ReplayError> {
    let config = config::load(config_path)?;
    let mut reader = PcapReader::open(pcap_path)?;
    let mut writer = out_path.map(PcapWriter::create).transpose()?;
    let mut report = replay(&config, reader.by_ref(), writer.as_mut())?;
    if let Some(w) = writer.as_mut() {
        w.flush()?;
    }
    report.config = config_path.display().to_string();
    report.capture = Some(pcap_path.display().to_string());
    report.packets.not_ip = reader.skipped();
    Ok(report)
}

/// Runs `records` through one queue's data plane built from `config`, writing every
/// forwarded packet (as rewritten) with its original timestamp to `out`. Stops at the first
/// record that is an error and returns it.
pub fn replay<W: Write>(
    config: &Config,
    records: impl Iterator<Item = Result<PcapRecord, PcapError>>,
    mut out: Option<&mut PcapWriter<W>>,
) -> Result<ReplayReport, ReplayError> {
    let file = config.path.display().to_string();
    let mut registry = Registry::new(&config.services).map_err(|source| ReplayError::Services {
        file: file.clone(),
        source,
    })?;
    // Offline: the configured tunnel source, or none (tunnelled packets then show 0.0.0.0 as
    // their outer source).
    registry.set_tunnel_source(config.director.tunnel_source);
    registry.set_tunnel_source6(config.director.tunnel_source6);
    // The config's plugins, loaded, self-tested and instantiated as the daemon does (one
    // queue): schedulers, persistence and defenses decide here as they would live.
    let mut plugins = PluginManager::default();
    let failed = |message: String| ReplayError::Plugins {
        file: file.clone(),
        message,
    };
    let loaded = plugins.load_config(config).map_err(failed)?;
    let prepared = plugins.prepare(&registry, 1, &loaded).map_err(failed)?;
    plugins.commit(loaded);
    let snap = Arc::new(plugins.snapshot(&mut registry, prepared));
    let mut shard = Shard::new(
        ShardConfig {
            id: 0,
            memory_limit: crate::dataplane::shard::queue_share(
                config.director.conn_memory_limit,
                1,
            ),
            hash_key: REPLAY_HASH_KEY,
            start: Instant::now(),
            expire_nodest_conn: config.director.expire_nodest_conn,
            events: None,
            sources: Default::default(),
            queues: 1,
            templates: Default::default(),
            // Fixed secrets: a replay writes the same cookies every time.
            cookies: Arc::new(crate::dataplane::synproxy::cookie::CookieKeys::with(
                REPLAY_HASH_KEY,
                [REPLAY_HASH_KEY, REPLAY_HASH_KEY],
            )),
            // Ticks at the second's boundary: a replay is the same every time.
            tick_thread: false,
            handoff: None,
            sync: None,
        },
        snap,
        None,
    )
    .map_err(|source| ReplayError::Table {
        file: file.clone(),
        source,
    })?;

    let mut packets = Packets::default();
    let mut forwarded = 0u64;
    let mut flows = Vec::new();
    let mut flows_omitted = 0u64;
    let mut decisions = Vec::new();
    let mut timeline: Vec<Sample> = Vec::new();
    let (mut first, mut last): (Option<Duration>, Option<Duration>) = (None, None);
    // The shard's clock wraps (see `crate::conn::Tick`); the capture's is counted here in
    // full, and moved on in steps the wrapping clock can take.
    let start: Tick = shard.now();
    let mut elapsed: u64 = 0;
    let mut buf = Vec::new();

    for rec in records {
        let rec = rec?;
        packets.read += 1;
        let t0 = *first.get_or_insert(rec.ts);
        if last.is_some_and(|l| rec.ts < l) {
            packets.out_of_order += 1;
        }
        last = Some(last.map_or(rec.ts, |l| l.max(rec.ts)));
        let at = rec.ts.saturating_sub(t0);
        if timeline.len() < MAX_SAMPLES
            && timeline
                .last()
                .is_none_or(|s: &Sample| at.as_secs() > s.at_secs)
        {
            timeline.push(sample(&shard, at.as_secs()));
        }
        while ticks(at) > elapsed {
            elapsed += (ticks(at) - elapsed).min(u64::from(MAX_STEP));
            shard.set_now(start.wrapping_add(elapsed as Tick));
        }
        if rec.truncated {
            packets.truncated += 1;
            continue;
        }
        packets.processed += 1;
        if rec.data.first().is_some_and(|b| b >> 4 == 6) {
            packets.ipv6 += 1;
        }

        let len = rec.data.len();
        buf.clear();
        buf.resize(HEADROOM + len + TAILROOM, 0);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&rec.data);
        let mut pkt = Packet::new(&mut buf, HEADROOM, len).expect("the buffer was sized for it");
        let conns_before = shard.counters().total.conns;
        if shard.process(&mut pkt) == Verdict::Drop {
            continue;
        }
        forwarded += 1;
        if shard.counters().total.conns != conns_before {
            let f = new_flow(&rec.data, pkt.data(), at);
            if let Some(f) = &f {
                decisions.push(f.clone());
            }
            match f {
                Some(f) if flows.len() < MAX_FLOWS => flows.push(f),
                _ => flows_omitted += 1,
            }
        }
        if let Some(w) = out.as_deref_mut() {
            w.write(rec.ts, pkt.data())?;
        }
    }
    // Finish expirations the per-call budget left for later (only a huge burst does).
    loop {
        let before = shard.counters().expired;
        shard.set_now(start.wrapping_add(elapsed as Tick));
        if shard.counters().expired == before {
            break;
        }
    }

    let end = last
        .zip(first)
        .map_or(0, |(l, f)| l.saturating_sub(f).as_secs());
    timeline.push(sample(&shard, end));
    shard.publish();
    let shared = shard.shared();
    let published = shared
        .report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let c = shard.counters();
    let fwd = Forwarded {
        total: forwarded,
        to_realservers: c.total.in_pkts,
        to_clients: c.total.out_pkts,
        passthrough: c.passthrough,
        icmp_translated: c.icmp_translated,
        echo_replies: c.echo_replies,
    };
    let by_reason: Vec<ReasonCount> = DropReason::ALL
        .iter()
        .filter(|r| c.drops[**r as usize] != 0)
        .map(|r| ReasonCount {
            reason: r.label(),
            packets: c.drops[*r as usize],
        })
        .collect();
    let dropped = Dropped {
        total: c.drops.iter().sum(),
        by_reason,
    };
    let empty = Default::default();
    let services = registry
        .all_services()
        .iter()
        .map(|e| {
            let t = published.services.get(e.id as usize).unwrap_or(&empty);
            ServiceReport {
                name: e.cfg.name.clone(),
                proto: e.cfg.proto.name(),
                vip: e.cfg.vip,
                scheduler: e.cfg.scheduler.clone(),
                conns: t.conns,
                in_pkts: t.in_pkts,
                out_pkts: t.out_pkts,
                servers: e
                    .dests
                    .iter()
                    .map(|d| ServerReport {
                        addr: d.addr,
                        weight: d.weight,
                        conns: published.dests.get(d.id as usize).unwrap_or(&empty).conns,
                        active: d.state.counters.active(),
                        inactive: d.state.counters.inactive(),
                    })
                    .collect(),
            }
        })
        .collect();
    let table = shard.table();
    let table = TableReport {
        entries: table.len() as u64,
        by_state: State::ALL
            .iter()
            .filter(|s| table.by_state()[**s as usize] != 0)
            .map(|s| StateCount {
                state: s.name(),
                entries: u64::from(table.by_state()[*s as usize]),
            })
            .collect(),
        expired: c.expired,
        memory_bytes: table.memory_bytes() as u64,
        memory_limit: config.director.conn_memory_limit as u64,
        capacity: table.capacity() as u64,
    };
    let span = match (first, last) {
        (Some(f), Some(l)) => l.saturating_sub(f).as_secs_f64(),
        _ => 0.0,
    };
    Ok(ReplayReport {
        config: file,
        capture: None,
        packets,
        time: TimeSpan {
            first: first.map(rfc3339),
            last: last.map(rfc3339),
            span_secs: span,
        },
        forwarded: fwd,
        dropped,
        services,
        flows,
        flows_omitted,
        persistence_hits: c.persist_hits,
        table,
        timeline,
        decisions,
        notes: notes(config),
    })
}

fn sample(shard: &Shard, at_secs: u64) -> Sample {
    Sample {
        at_secs,
        entries: shard.table().len() as u64,
        defense_drops: shard.counters().drops[DropReason::Defense as usize],
    }
}

/// Ticks of the data-plane clock in `d`, unwrapped (saturating at 58 billion years).
fn ticks(d: Duration) -> u64 {
    let t = d.as_millis() / u128::from(1000 / TICKS_PER_SEC);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The decision for a packet that created a flow: the client and virtual service from the
/// packet as read, the realserver from the packet as rewritten.
fn new_flow(input: &[u8], output: &[u8], at: Duration) -> Option<FlowDecision> {
    let endpoints = |p: &[u8]| -> Option<(u8, SocketAddrV4, SocketAddrV4)> {
        // Only plain 20-byte headers reach a new flow (options are dropped).
        let h: &[u8; 24] = p.get(..24)?.try_into().ok()?;
        let ip = |o: usize| Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]);
        let port = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
        Some((
            h[9],
            SocketAddrV4::new(ip(12), port(20)),
            SocketAddrV4::new(ip(16), port(22)),
        ))
    };
    let (proto, client, vip) = endpoints(input)?;
    let (_, _, server) = endpoints(output)?;
    Some(FlowDecision {
        at_secs: at.as_secs_f64(),
        proto: match proto {
            crate::wire::ip_proto::TCP => "tcp",
            _ => "udp",
        },
        client,
        vip,
        server,
    })
}

/// What the replay does differently from the daemon with this config.
fn notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if config.director.queues > 1 {
        notes.push(format!(
            "one queue holds the whole conn_memory_limit; the daemon spreads flows over {} queues",
            config.director.queues
        ));
    }
    notes
}

/// `2023-11-14T22:13:20.123456Z` for a time since the Unix epoch.
fn rfc3339(t: Duration) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t.subsec_micros()
    )
}

/// `1.5 MiB`-style sizes for the text report.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.packets;
        writeln!(
            f,
            "replay of {} with {} (one queue, fixed hash key)",
            self.capture.as_deref().unwrap_or("<records>"),
            self.config
        )?;
        writeln!(
            f,
            "packets    {} read: {} processed, {} truncated by the capture (skipped), \
             {} not IP (skipped)",
            p.read, p.processed, p.truncated, p.not_ip
        )?;
        if p.ipv6 != 0 {
            writeln!(
                f,
                "           {} of them IPv6 (NAT66 for the config's IPv6 services, else as the daemon: passed or dropped)",
                p.ipv6
            )?;
        }
        if p.out_of_order != 0 {
            writeln!(
                f,
                "           {} timestamps out of order (replayed as no time passing)",
                p.out_of_order
            )?;
        }
        match (&self.time.first, &self.time.last) {
            (Some(a), Some(b)) => {
                writeln!(f, "time       {a} to {b} ({:.3} s)", self.time.span_secs)?
            }
            _ => writeln!(f, "time       (empty capture)")?,
        }

        let w = &self.forwarded;
        writeln!(f, "forwarded  {}", w.total)?;
        for (what, n) in [
            ("to realservers (rewritten)", w.to_realservers),
            ("to clients (rewritten)", w.to_clients),
            ("passed through unchanged", w.passthrough),
            ("ICMP errors translated", w.icmp_translated),
            ("echo requests answered", w.echo_replies),
        ] {
            writeln!(f, "  {what:<28} {n:>8}")?;
        }
        writeln!(f, "dropped    {}", self.dropped.total)?;
        for r in &self.dropped.by_reason {
            writeln!(f, "  {:<28} {:>8}", r.reason, r.packets)?;
        }

        let total: u64 = self.services.iter().map(|s| s.conns).sum();
        writeln!(f, "connections created  {total}")?;
        let rows: Vec<[String; 4]> = self
            .services
            .iter()
            .flat_map(|s| {
                s.servers.iter().map(move |d| {
                    [
                        s.name.clone(),
                        format!("{} {}", s.proto, s.vip),
                        d.addr.to_string(),
                        d.conns.to_string(),
                    ]
                })
            })
            .collect();
        let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
        let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
        for r in &rows {
            writeln!(
                f,
                "  {:<w0$}  {:<w1$}  -> {:<w2$}  {:>w3$}",
                r[0], r[1], r[2], r[3]
            )?;
        }
        let shown = self.flows.len().min(TEXT_FLOWS);
        if shown != 0 {
            let all = self.flows.len() as u64 + self.flows_omitted;
            writeln!(f, "new flows  (first {shown} of {all})")?;
            for d in &self.flows[..shown] {
                writeln!(
                    f,
                    "  +{:.3}s  {} {} -> {} -> {}",
                    d.at_secs, d.proto, d.client, d.vip, d.server
                )?;
            }
        }

        let t = &self.table;
        writeln!(
            f,
            "table at end  {} entries, {} expired during the replay; {} in use of {} \
             (room for {} entries)",
            t.entries,
            t.expired,
            human_size(t.memory_bytes),
            human_size(t.memory_limit),
            t.capacity
        )?;
        for s in &t.by_state {
            writeln!(f, "  {:<28} {:>8}", s.state, s.entries)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(Duration::new(1_700_000_000, 123_456_789)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn sizes_and_ticks() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(256 << 20), "256.0 MiB");
        assert_eq!(ticks(Duration::from_millis(61_050)), 610);
        assert_eq!(ticks(Duration::from_secs(u64::MAX / 2)), u64::MAX);
    }
}
