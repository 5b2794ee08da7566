//! `ringvs replay`: a realistic capture replayed with exact figures, expiry driven by the
//! capture's timestamps, bad inputs, the binary itself, and the config's plugins deciding.

mod common;

use ringvs::config::{self, Config};
use ringvs::control::replay::{self, ReplayError, ReplayReport};
use ringvs::dataplane::testkit::{icmp_echo, icmp_error, tcp, udp, TWO_SERVICES};
use ringvs::io::pcap::{PcapError, PcapReader, PcapWriter};
use ringvs::wire::icmpv4::{msg_type, unreach_code};
use ringvs::wire::tcp::flags::{ACK, FIN, PSH, SYN};
use ringvs::wire::{Ipv4Packet, TcpPacket};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The two test services, in a table small enough to fill.
fn config_text() -> String {
    format!("[director]\nconn_memory_limit = \"16MiB\"\n{TWO_SERVICES}")
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 100);
const WEB: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const DNS: SocketAddrV4 = SocketAddrV4::new(VIP, 53);
const RS1: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1), 8080);
const RS2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 2), 8080);
const DNS1: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1), 5353);
const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 10), 40001);
const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 11), 40002);
const D: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 12), 5300);

/// Capture start: 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;
/// SYNs in the flood.
const FLOOD: u32 = 40;

fn config() -> Config {
    config::from_str(&config_text(), "replay-test.toml").unwrap()
}

fn at(ms: u64) -> Duration {
    Duration::from_secs(T0) + Duration::from_millis(ms)
}

/// A capture as (timestamp, packet), and which records are cut short by the snaplen.
struct Capture {
    recs: Vec<(Duration, Vec<u8>)>,
    truncated: Vec<usize>,
}

impl Capture {
    fn new() -> Capture {
        Capture {
            recs: Vec::new(),
            truncated: Vec::new(),
        }
    }

    fn add(&mut self, ms: u64, pkt: Vec<u8>) {
        self.recs.push((at(ms), pkt));
    }

    /// The pcap file.
    fn bytes(&self) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for (ts, p) in &self.recs {
            w.write(*ts, p).unwrap();
        }
        let mut b = w.into_inner().unwrap();
        // Claim a longer original length for the truncated records.
        let mut off = 24;
        for (i, (_, p)) in self.recs.iter().enumerate() {
            if self.truncated.contains(&i) {
                let len = p.len() as u32 + 1000;
                b[off + 12..off + 16].copy_from_slice(&len.to_le_bytes());
            }
            off += 16 + p.len();
        }
        b
    }
}

/// Two TCP connections (handshake, data, close from each side), a DNS query and answer, an
/// ICMP error about a reply, a SYN flood, some garbage and pings, over 70 seconds.
fn exchange() -> Capture {
    let mut c = Capture::new();
    // Connection A (to 10.77.1.1): handshake and a request, an ICMP error about the reply.
    c.add(0, tcp(A, WEB, SYN, &[]));
    c.add(1, tcp(RS1, A, SYN | ACK, &[]));
    c.add(2, tcp(A, WEB, ACK, &[]));
    c.add(
        3,
        tcp(A, WEB, PSH | ACK, b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"),
    );
    c.add(
        50,
        tcp(
            RS1,
            A,
            PSH | ACK,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    );
    c.add(51, tcp(A, WEB, ACK, &[]));
    let reply = tcp(WEB, A, PSH | ACK, b"HTTP/1.1 200 OK\r\n");
    c.add(
        60,
        icmp_error(
            Ipv4Addr::new(10, 77, 0, 1),
            VIP,
            msg_type::DEST_UNREACHABLE,
            unreach_code::FRAG_NEEDED,
            1400,
            &reply,
            28,
        ),
    );
    // Connection B (to 10.77.1.2).
    c.add(1500, tcp(B, WEB, SYN, &[]));
    c.add(1501, tcp(RS2, B, SYN | ACK, &[]));
    c.add(1502, tcp(B, WEB, ACK, &[]));
    c.add(1503, tcp(B, WEB, PSH | ACK, b"GET /b HTTP/1.1\r\n\r\n"));
    c.add(
        1600,
        tcp(RS2, B, PSH | ACK, b"HTTP/1.1 404 Not Found\r\n\r\n"),
    );
    // A DNS query and its answer.
    c.add(
        3000,
        udp(D, DNS, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"),
    );
    c.add(
        3001,
        udp(DNS1, D, b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"),
    );
    // A SYN flood from scattered sources (x ↦ x·2654435761 is a bijection of 16-bit values).
    for i in 0..FLOOD {
        let x = i.wrapping_mul(2_654_435_761) as u16;
        let src = SocketAddrV4::new(
            Ipv4Addr::new(198, 18, (x >> 8) as u8, x as u8),
            1024 + x % 60_000,
        );
        c.add(5000 + u64::from(i), tcp(src, WEB, SYN, &[]));
    }
    // Garbage and strays.
    c.add(8000, vec![0x45, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe]);
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    v6[6] = 59;
    c.add(8100, v6);
    let mut gre = tcp(A, WEB, ACK, &[]);
    gre[9] = 47;
    let mut ip = Ipv4Packet::new_unchecked(&mut gre[..]);
    ip.fill_checksum();
    c.add(8200, gre);
    let stray = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 99), 55555);
    c.add(8300, tcp(stray, WEB, ACK, b"late"));
    c.add(8400, tcp(stray, WEB, SYN | FIN, &[]));
    c.add(8500, icmp_echo(*A.ip(), VIP, true, 1, 1));
    c.truncated.push(c.recs.len());
    let cut = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 13), 40013);
    c.add(8600, tcp(cut, WEB, SYN, &[]));
    c.add(
        8700,
        icmp_echo(*A.ip(), Ipv4Addr::new(10, 77, 2, 50), true, 1, 2),
    );
    // A closes first.
    c.add(10_000, tcp(A, WEB, FIN | ACK, &[]));
    c.add(10_001, tcp(RS1, A, ACK, &[]));
    c.add(10_002, tcp(RS1, A, FIN | ACK, &[]));
    c.add(10_003, tcp(A, WEB, ACK, &[]));
    // B's server closes first.
    c.add(12_000, tcp(RS2, B, FIN | ACK, &[]));
    c.add(12_001, tcp(B, WEB, ACK, &[]));
    c.add(12_002, tcp(B, WEB, FIN | ACK, &[]));
    c.add(12_003, tcp(RS2, B, ACK, &[]));
    // A minute later: the flood's half-open entries (60 s in SYN_RECV) are gone.
    c.add(70_000, icmp_echo(*A.ip(), VIP, true, 1, 3));
    c
}

fn run(cap: &Capture) -> (ReplayReport, Vec<u8>) {
    let bytes = cap.bytes();
    let mut reader = PcapReader::from_reader(&bytes[..]).unwrap();
    let mut out = PcapWriter::new(Vec::new()).unwrap();
    let report = replay::replay(&config(), reader.by_ref(), Some(&mut out)).unwrap();
    (report, out.into_inner().unwrap())
}

fn pairs<'a>(v: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<(String, u64)> {
    v.into_iter().map(|(s, n)| (s.to_string(), n)).collect()
}

fn endpoints(p: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let ip = Ipv4Packet::new_checked(p).unwrap();
    let l4 = &p[ip.header_len()..];
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    (
        SocketAddrV4::new(ip.src_addr(), port(0)),
        SocketAddrV4::new(ip.dst_addr(), port(2)),
    )
}

#[test]
fn a_realistic_exchange_gives_exact_figures() {
    let cap = exchange();
    let (r, out) = run(&cap);

    let p = &r.packets;
    assert_eq!(
        (p.read, p.processed, p.truncated, p.ipv6, p.out_of_order),
        (71, 70, 1, 1, 0)
    );
    let f = &r.forwarded;
    assert_eq!(
        (
            f.total,
            f.to_realservers,
            f.to_clients,
            f.passthrough,
            f.icmp_translated,
            f.echo_replies
        ),
        (66, 52, 9, 2, 1, 2)
    );
    assert_eq!(r.dropped.total, 4);
    let drops: Vec<_> = r
        .dropped
        .by_reason
        .iter()
        .map(|d| (d.reason, d.packets))
        .collect();
    assert_eq!(
        pairs(drops),
        pairs([
            ("malformed", 1),
            ("unknown_proto", 1),
            ("tcp_flags", 1),
            ("no_conn", 1)
        ])
    );
    assert_eq!(f.total + r.dropped.total, p.processed);

    // wlc: A to the first server, B to the other (A is active), then the flood alternates.
    let conns: Vec<_> = r
        .services
        .iter()
        .flat_map(|s| {
            s.servers
                .iter()
                .map(move |d| (s.name.as_str(), d.addr, d.conns, d.active, d.inactive))
        })
        .collect();
    assert_eq!(
        conns,
        vec![
            ("web", RS1.into(), 21, 0, 1),
            ("web", RS2.into(), 21, 0, 1),
            ("dns", DNS1.into(), 1, 0, 1)
        ]
    );
    let svc: Vec<_> = r
        .services
        .iter()
        .map(|s| (s.conns, s.in_pkts, s.out_pkts))
        .collect();
    assert_eq!(svc, vec![(42, 51, 8), (1, 1, 1)]);
    let first: Vec<_> = r.flows[..3]
        .iter()
        .map(|d| (d.at_secs, d.proto, d.client, d.vip, d.server))
        .collect();
    assert_eq!(
        first,
        vec![
            (0.0, "tcp", A, WEB, RS1),
            (1.5, "tcp", B, WEB, RS2),
            (3.0, "udp", D, DNS, DNS1)
        ]
    );
    assert_eq!((r.flows.len(), r.flows_omitted), (43, 0));

    // At 70 s: both closed connections in TIME_WAIT (120 s), the DNS entry (300 s); the
    // flood's 40 SYN_RECV entries expired at 65 s.
    let t = &r.table;
    let states: Vec<_> = t.by_state.iter().map(|s| (s.state, s.entries)).collect();
    assert_eq!(pairs(states), pairs([("TIME_WAIT", 2), ("UDP", 1)]));
    assert_eq!((t.entries, t.expired), (3, u64::from(FLOOD)));
    assert_eq!(t.memory_limit, 16 << 20);
    assert!(t.capacity > 100_000 && t.memory_bytes < t.memory_limit);
    assert_eq!(r.time.first.as_deref(), Some("2023-11-14T22:13:20.000000Z"));
    assert_eq!(r.time.last.as_deref(), Some("2023-11-14T22:14:30.000000Z"));
    assert_eq!(r.time.span_secs, 70.0);
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    // --out: every forwarded packet, rewritten, at its original time.
    let recs: Vec<_> = PcapReader::from_reader(&out[..])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(recs.len() as u64, f.total);
    assert_eq!(recs[0].ts, at(0));
    assert_eq!(endpoints(&recs[0].data), (A, RS1), "client SYN: VIP → RIP");
    assert_eq!(
        endpoints(&recs[1].data),
        (WEB, A),
        "server SYN-ACK: RIP → VIP"
    );
    for rec in &recs {
        if rec.data[0] >> 4 == 6 {
            // The stray IPv6 packet (no IPv6 service), passed on unchanged.
            assert_eq!(rec.data.len(), 40);
            continue;
        }
        let ip = Ipv4Packet::new_checked(&rec.data[..]).unwrap();
        assert!(ip.verify_checksum());
        if ip.protocol() == 6 {
            let (src, dst) = endpoints(&rec.data);
            assert_ne!(dst, WEB, "a client packet left unrewritten");
            assert!(src != RS1 && src != RS2, "a server packet left unrewritten");
            let t = TcpPacket::new_checked(&rec.data[20..]).unwrap();
            assert!(t.verify_checksum(ip.src_addr(), ip.dst_addr()));
        }
    }
    let dns = recs
        .iter()
        .find(|r| r.ts == at(3000))
        .expect("the DNS query");
    assert_eq!(endpoints(&dns.data), (D, DNS1));

    // Deterministic: the same capture gives the same report.
    assert_eq!(run(&cap).0, r);
}

#[test]
fn capture_time_drives_expiry() {
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 20), 41000);
    let ping = icmp_echo(*client.ip(), VIP, true, 9, 9);
    for (later_ms, entries, expired) in [(59_900, 1, 0), (61_000, 0, 1)] {
        let mut c = Capture::new();
        c.add(0, tcp(client, WEB, SYN, &[]));
        c.add(later_ms, ping.clone());
        let (r, _) = run(&c);
        assert_eq!(
            (r.table.entries, r.table.expired),
            (entries, expired),
            "a SYN_RECV entry {later_ms} ms later"
        );
        if entries == 1 {
            assert_eq!(r.table.by_state[0].state, "SYN_RECV");
        }
    }

    // Gaps within and beyond the timer wheel's span (409.6 s): an ESTABLISHED entry (900 s) is
    // kept after 800 s and gone after 1000 s; a UDP entry (300 s) is kept after 200 s only.
    for (later_ms, entries) in [
        (200_000, 1),
        (800_000, 1),
        (899_000, 1),
        (1_000_000, 0),
        (3_600_000, 0),
    ] {
        let mut c = Capture::new();
        c.add(0, tcp(client, WEB, SYN, &[]));
        c.add(1, tcp(RS1, client, SYN | ACK, &[]));
        c.add(2, tcp(client, WEB, ACK, &[]));
        c.add(later_ms, ping.clone());
        let (r, _) = run(&c);
        assert_eq!(r.table.entries, entries, "ESTABLISHED, {later_ms} ms later");
        let mut c = Capture::new();
        c.add(0, udp(D, DNS, b"q"));
        c.add(1, udp(DNS1, D, b"a"));
        c.add(later_ms, ping.clone());
        let (r, _) = run(&c);
        assert_eq!(
            r.table.entries,
            u64::from(later_ms < 300_000),
            "UDP with a reply, {later_ms} ms later"
        );
    }
    // A UDP entry that never saw a reply lives `udp_unreplied` (30 s).
    for (later_ms, entries) in [(29_000, 1), (31_000, 0)] {
        let mut c = Capture::new();
        c.add(0, udp(D, DNS, b"q"));
        c.add(later_ms, ping.clone());
        let (r, _) = run(&c);
        assert_eq!(
            r.table.entries, entries,
            "UDP without a reply, {later_ms} ms later"
        );
    }

    // A timestamp from the past does not move the clock back.
    let mut c = Capture::new();
    c.add(0, tcp(client, WEB, SYN, &[]));
    c.add(61_000, ping.clone());
    c.add(30_000, tcp(client, WEB, ACK, &[]));
    let (r, _) = run(&c);
    assert_eq!(r.packets.out_of_order, 1);
    assert_eq!(r.table.expired, 1);
    assert_eq!(r.dropped.by_reason[0].reason, "no_conn");
    assert_eq!(r.time.span_secs, 61.0);
}

/// Two UDP datagrams 429,496,700 s apart (the audit's crash in issue 11: the clock reaches
/// 2^32 ticks), then two more from other clients 40 s apart after that.
fn thirteen_years() -> Capture {
    const GAP_MS: u64 = 429_496_700_000;
    let client = |i: u8| SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 30 + i), 5300);
    let mut c = Capture::new();
    c.add(0, udp(client(0), DNS, b"q"));
    c.add(GAP_MS, udp(client(1), DNS, b"q"));
    c.add(GAP_MS + 40_000, udp(client(2), DNS, b"q"));
    c.add(GAP_MS + 80_000, udp(client(3), DNS, b"q"));
    c
}

/// The fixture `tests/captures/thirteen-years.pcap`: a capture that spans the wrap of the
/// data plane's 32-bit clock. It replays without a panic, and every entry expires on time
/// on both sides of the wrap (each datagram is unreplied: 30 s).
#[test]
fn a_capture_across_the_clock_wrap_expires_on_time() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/thirteen-years.pcap");
    if std::env::var_os("RINGVS_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, thirteen_years().bytes()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        bytes,
        thirteen_years().bytes(),
        "{} is stale",
        path.display()
    );
    let mut reader = PcapReader::from_reader(&bytes[..]).unwrap();
    let r = replay::replay(&config(), reader.by_ref(), None::<&mut PcapWriter<Vec<u8>>>).unwrap();
    assert_eq!(r.packets.processed, 4);
    assert_eq!(r.forwarded.total, 4);
    assert_eq!((r.table.entries, r.table.expired), (1, 3));
}

/// A directory of its own under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringvs-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_captures_name_the_file() {
    let dir = temp_dir("bad");
    let cfg = dir.join("ringvs.toml");
    std::fs::write(&cfg, config_text()).unwrap();

    let bad = dir.join("not-a-capture.pcap");
    std::fs::write(&bad, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").unwrap();
    let out = dir.join("out.pcap");
    let e = replay::replay_files(&cfg, &bad, Some(&out)).unwrap_err();
    assert!(matches!(e, ReplayError::Pcap(PcapError::BadMagic { .. })));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a pcap or pcapng file: bad magic 0x47455420",
            bad.display()
        )
    );
    assert!(
        !out.exists(),
        "no output file for a capture that cannot be read"
    );

    let missing = dir.join("missing.pcap");
    let e = replay::replay_files(&cfg, &missing, None).unwrap_err();
    assert!(e
        .to_string()
        .starts_with(&format!("{}: ", missing.display())));

    // A capture cut in the middle of a record: the error, not a partial report.
    let bytes = exchange().bytes();
    let cut = &bytes[..bytes.len() - 5];
    let reader = PcapReader::with_name(cut, "cut.pcap".into()).unwrap();
    let e = replay::replay::<Vec<u8>>(&config(), reader, None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cut.pcap: truncated record at byte offset "),
        "{e}"
    );

    let bad_cfg = dir.join("bad.toml");
    std::fs::write(&bad_cfg, "[director]\nqueues = 0\n").unwrap();
    let e = replay::replay_files(&bad_cfg, &bad, None).unwrap_err();
    assert!(matches!(e, ReplayError::Config(_)));
    assert_eq!(
        e.to_string(),
        config::load(&bad_cfg).unwrap_err().to_string()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn ringvs(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringvs"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn the_binary_replays_and_reports() {
    let dir = temp_dir("bin");
    let cfg = dir.join("ringvs.toml");
    std::fs::write(&cfg, config_text()).unwrap();
    let pcap = dir.join("exchange.pcap");
    std::fs::write(&pcap, exchange().bytes()).unwrap();
    let out = dir.join("out.pcap");

    let o = ringvs(&[
        "replay".as_ref(),
        "-c".as_ref(),
        cfg.as_os_str(),
        pcap.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{text}");
    assert!(text.contains("connections created  43"), "{text}");
    for line in [
        "web  tcp 10.77.100.100:80  -> 10.77.1.1:8080  21",
        "web  tcp 10.77.100.100:80  -> 10.77.1.2:8080  21",
        "dns  udp 10.77.100.100:53  -> 10.77.1.1:5353   1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.contains("table at end  3 entries, 40 expired"),
        "{text}"
    );
    let forwarded = PcapReader::open(&out).unwrap().count();
    assert_eq!(forwarded, 66);

    let o = ringvs(&[
        "replay".as_ref(),
        "--json".as_ref(),
        "-c".as_ref(),
        cfg.as_os_str(),
        pcap.as_os_str(),
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["forwarded"]["total"], 66);
    assert_eq!(v["services"][0]["servers"][1]["addr"], "10.77.1.2:8080");
    assert_eq!(v["services"][0]["servers"][1]["conns"], 21);
    assert_eq!(v["dropped"]["by_reason"][0]["reason"], "malformed");
    assert_eq!(v["capture"], pcap.display().to_string());
    assert_eq!(v["config"], cfg.display().to_string());

    let missing = dir.join("missing.pcap");
    let o = ringvs(&[
        "replay".as_ref(),
        "-c".as_ref(),
        cfg.as_os_str(),
        missing.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("ringvs: {}: ", missing.display())),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_configs_plugins_decide() {
    // Built catalogue plugins (found next to the test binary's build directory).
    common::plugins::plugin_dir();
    let persistent = TWO_SERVICES.replacen(
        "scheduler = \"wlc\"",
        "scheduler = \"sched-rr\"\npersistence = { plugin = \"persist-netmask\", timeout = \"300s\", config = { netmask = \"255.255.255.0\" } }",
        1,
    );
    assert_ne!(persistent, TWO_SERVICES);
    // Eight clients of one /24, then eight of another, one SYN each.
    let mut cap = Capture::new();
    for (n, net) in [(0u64, 0u8), (1, 1)] {
        for i in 0..8u8 {
            let c = SocketAddrV4::new(Ipv4Addr::new(10, 77, net, 10 + i), 40_000 + i as u16);
            cap.add(n * 100 + i as u64, tcp(c, WEB, SYN, &[]));
        }
    }
    let bytes = cap.bytes();
    let run_with = |services: &str| {
        let text = format!("[director]\nconn_memory_limit = \"16MiB\"\n{services}");
        let cfg = config::from_str(&text, "replay-plugins.toml").unwrap();
        let mut reader = PcapReader::from_reader(&bytes[..]).unwrap();
        replay::replay::<Vec<u8>>(&cfg, reader.by_ref(), None).unwrap()
    };
    let servers = |r: &ReplayReport, net: u8| -> Vec<SocketAddrV4> {
        r.flows
            .iter()
            .filter(|f| f.client.ip().octets()[2] == net)
            .map(|f| f.server)
            .collect()
    };
    // The built-in wlc spreads each network over both servers.
    let plain = run_with(TWO_SERVICES);
    assert!(servers(&plain, 0).contains(&RS1) && servers(&plain, 0).contains(&RS2));
    // persist-netmask /24 (with sched-rr picking each network's server): one server per
    // network, the two networks on different servers (rr's first two picks).
    let r = run_with(&persistent);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let (n0, n1) = (servers(&r, 0), servers(&r, 1));
    assert_eq!(n0.len(), 8);
    assert!(n0.iter().all(|s| *s == n0[0]), "{n0:?}");
    assert!(n1.iter().all(|s| *s == n1[0]), "{n1:?}");
    assert_ne!(n0[0], n1[0]);

    // The two side by side (`replay --compare`).
    let c = ringvs::control::compare::compare(&plain, &r);
    assert_eq!((c.new_flows, c.common), ([16, 16], 16));
    let moved = plain
        .flows
        .iter()
        .zip(&r.flows)
        .filter(|(x, y)| x.server != y.server)
        .count() as u64;
    assert_eq!(c.different_server, moved);
    assert!(moved > 0);
    for side in 0..2 {
        let total: u64 = c.spread.iter().map(|(_, n)| n[side]).sum();
        assert_eq!(total, 16, "{c}");
    }
    assert_eq!(c.occupancy.last().unwrap().1, [16, 16]);
    assert_eq!(c.defense_drops, [0, 0]);
    // Per network, the first flow makes the template and the other seven hit it.
    assert_eq!(c.persistence_hits, [0, 14]);
    let text = c.to_string();
    assert!(text.contains("flows on a different server in B:"), "{text}");
    assert!(text.contains("web/10.77.1.1:8080"), "{text}");
}
