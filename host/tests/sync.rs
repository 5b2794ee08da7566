//! Connection sync between two real daemons (detached: their queues driven by the test),
//! over UDP on loopback, authenticated with the shared key (docs/HA.md):
//!
//! - a master's connections reach its backup, held there (forwarding, but not counted for
//!   scheduling) until `ringvs ha master`, and a flow the master had continues through the
//!   backup mid-stream, to the same realserver, where an unknown flow is refused;
//! - a persistent client's template reaches the backup (and a late starter, in bulk): its next
//!   connection after the takeover goes to the same realserver, even a quiesced one;
//! - two active directors (active-active behind ECMP, NAT) each take up the other's flows,
//!   both ways: client packets to the same realserver, replies un-NATed to the VIP;
//! - a backup sends nothing;
//! - a director that starts late gets the master's table in a bulk transfer;
//! - IPv6 connections (NAT66) do all of this too: held by the backup, continued through it
//!   both ways, promoted, and sent in bulk;
//! - forged, replayed, truncated and foreign messages are counted by reason and change
//!   nothing.

mod common;

use common::director::Director;
use ringvs::control::client;
use ringvs::control::protocol::{HaResult, Request};
use ringvs::dataplane::testkit::{tcp, tcp6, TWO_SERVICES};
use ringvs::wire::tcp::flags::{ACK, PSH, SYN};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

const KEY: &str = "8d1f0c5b7a3e92d4c6b8a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e9d1";
const VIP: &str = "10.77.100.100:80";

use ringvs::dataplane::testkit::free_udp_port as free_port;

/// An established connection of client `i` to the web service's first realserver, as a
/// stand-in master sends it.
fn web_entry(i: u32) -> ringvs::sync::Entry {
    ringvs::sync::Entry {
        proto: 6,
        state: ringvs::conn::State::Established,
        template: None,
        client: client(i).into(),
        vip: VIP.parse().unwrap(),
        server: "10.77.1.1:8080".parse().unwrap(),
        expires_in: 900,
    }
}

/// A `[director.sync]` table: this director `id` on loopback `port`, its `peers` there.
fn sync_table(id: u32, port: u16, peers: &[u16], role: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "[director.sync]\nid = {id}\nkey = \"{KEY}\"\nlisten = \"127.0.0.1:{port}\"\n\
         peers = [{}]\nrole = \"{role}\"\n",
        peers.join(", ")
    )
}

fn sync_section(id: u32, port: u16, peer: u16, role: &str) -> String {
    format!("{}{TWO_SERVICES}", sync_table(id, port, &[peer], role))
}

fn ha(d: &Director) -> HaResult {
    serde_json::from_value(client::call(&d.socket, &Request::Ha { role: None }).unwrap()).unwrap()
}

fn client(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(10, 77, 0, 10 + (i / 200) as u8),
        30_000 + (i % 200) as u16,
    )
}

/// The realserver a forwarded packet went to.
fn dest(pkt: &Option<Vec<u8>>) -> SocketAddrV4 {
    let p = pkt.as_ref().expect("forwarded");
    let ip = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    SocketAddrV4::new(ip, u16::from_be_bytes([p[22], p[23]]))
}

/// `n` connections through `d` to the web service, each past its handshake with one data
/// segment (three client packets: IPVS's `sync_threshold`). Returns each one's realserver.
fn connect(d: &mut Director, from: u32, n: u32) -> Vec<SocketAddrV4> {
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    (from..from + n)
        .map(|i| {
            let c = client(i);
            let syn = d.packets(&[tcp(c, vip, SYN, b"")]);
            let rs = dest(&syn[0]);
            let synack = d.packets(&[tcp(rs, c, SYN | ACK, b"")]);
            assert!(synack[0].is_some(), "SYN-ACK of {c} not forwarded");
            let rest = d.packets(&[
                tcp(c, vip, ACK, b""),
                tcp(c, vip, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n"),
            ]);
            assert!(rest.iter().all(Option::is_some), "{c}: {rest:?}");
            rs
        })
        .collect()
}

/// Polls `d`'s queue (it applies what the sync thread handed it) until `done` holds of its
/// `ha` status, or panics after 10 s.
fn wait(d: &mut Director, what: &str, done: impl Fn(&HaResult) -> bool) -> HaResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        d.packets(&[]);
        let h = ha(d);
        if done(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what}: {h:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn active(d: &Director) -> u32 {
    d.list().services[0].servers.iter().map(|s| s.active).sum()
}

#[test]
fn a_masters_connections_are_held_by_the_backup_and_go_live_on_takeover() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = Director::start(&sync_section(1, pa, pb, "master"));
    let mut b = Director::start(&sync_section(2, pb, pa, "backup"));
    let servers = connect(&mut a, 0, 40);
    assert_eq!(active(&a), 40);
    let h = wait(&mut b, "40 entries held by the backup", |h| h.held == 40);
    assert_eq!(h.role, "backup");
    assert!(h.applied >= 40, "{h:#?}");
    assert!(h.rejected.values().all(|n| *n == 0), "{h:#?}");
    // Held: not counted for scheduling.
    assert_eq!(active(&b), 0);
    // The master fails over: the flows continue through the backup, mid-stream, to the
    // same realservers, before and after `ringvs ha master`.
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    for i in 0..20 {
        let out = b.packets(&[tcp(client(i), vip, ACK | PSH, b"more")]);
        assert_eq!(dest(&out[0]), servers[i as usize], "flow {i}");
    }
    assert_eq!(active(&b), 20, "the 20 flows that sent a packet are live");
    let unknown = b.packets(&[tcp(client(999), vip, ACK | PSH, b"x")]);
    assert!(unknown[0].is_none(), "a flow nobody synced is refused");
    let out = b.ok(&["ha", "master"]);
    assert!(out.contains("role: master"), "{out}");
    let h = wait(&mut b, "held entries promoted", |h| h.held == 0);
    assert_eq!(h.role, "master");
    assert_eq!(active(&b), 40);
    for i in 20..40 {
        let out = b.packets(&[tcp(client(i), vip, ACK | PSH, b"more")]);
        assert_eq!(dest(&out[0]), servers[i as usize], "flow {i}");
    }
    assert_eq!(active(&b), 40, "nothing counted twice");
    let ha_a = ha(&a);
    assert!(ha_a.sent_entries >= 40, "{ha_a:#?}");
    assert_eq!(ha_a.queue_full, 0);
    let text = b.ok(&["ha", "status"]);
    assert!(text.contains("role master  id 2"), "{text}");
    assert!(text.contains("rejected: none"), "{text}");
}

/// Sync, and a persistent web service: persist-netmask /24 (every test client is in
/// 10.77.0.0/24), rr over three realservers.
fn persistent_section(id: u32, port: u16, peers: &[u16], role: &str) -> String {
    format!(
        "{}[plugins.pn]\npath = \"{}\"\n\
         [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nscheduler = \"rr\"\n\
         persistence = {{ plugin = \"pn\", timeout = \"300s\", config = {{ netmask = \"255.255.255.0\" }} }}\n\
         [[service.server]]\naddr = \"10.77.1.1:8080\"\n\
         [[service.server]]\naddr = \"10.77.1.2:8080\"\n\
         [[service.server]]\naddr = \"10.77.1.3:8080\"\n",
        sync_table(id, port, peers, role),
        common::plugins::plugin("persist-netmask").display()
    )
}

/// Realserver `addr`'s persistence templates (PersistConn) on `d`.
fn persist_conns(d: &Director, addr: &str) -> u32 {
    let l = d.list();
    l.services[0]
        .servers
        .iter()
        .find(|s| s.addr == addr)
        .map_or(0, |s| s.persistent)
}

#[test]
fn a_persistent_clients_template_follows_it_to_the_backup() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let mut a = Director::start(&persistent_section(1, pa, &[pb], "master"));
    let mut b = Director::start(&persistent_section(2, pb, &[pa], "backup"));
    // The client's network is pinned to one realserver on the master.
    let servers = connect(&mut a, 0, 3);
    assert!(servers.iter().all(|s| *s == servers[0]), "{servers:?}");
    let pinned = servers[0].to_string();
    assert_eq!(persist_conns(&a, &pinned), 1, "one template on the master");
    // (Connections and templates come in messages of their own: wait for both.)
    let h = wait(&mut b, "the template and connections taken", |h| {
        h.held == 3 && h.applied >= 4
    });
    assert_eq!(h.ignored, 0, "{h:#?}");
    assert_eq!(persist_conns(&b, &pinned), 1, "the template on the backup");
    // The pinned realserver is quiesced everywhere (weight 0: no new clients); its
    // persistent clients still go to it (IPVS: a template outlives a weight of 0 unless
    // expire_quiescent_template). Without the template, rr would pick another.
    b.ok(&["server", "weight", "web", &pinned, "0"]);
    b.ok(&["ha", "master"]);
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    for i in 100..103 {
        let out = b.packets(&[tcp(client(i), vip, SYN, b"")]);
        assert_eq!(
            dest(&out[0]).to_string(),
            pinned,
            "new connection {i} after the takeover"
        );
    }
    // A director that starts late gets the template in the bulk transfer.
    let mut c = Director::start(&persistent_section(3, pc, &[pa], "backup"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        a.packets(&[]);
        c.packets(&[]);
        if ha(&c).bulk_received == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "bulk transfer: {:#?}", ha(&c));
        std::thread::sleep(Duration::from_millis(20));
    }
    c.packets(&[]); // applies what came just before the bulk's end
    assert_eq!(persist_conns(&c, &pinned), 1, "the template came in bulk");
    c.ok(&["server", "weight", "web", &pinned, "0"]);
    c.packets(&[]);
    let out = c.packets(&[tcp(client(200), vip, SYN, b"")]);
    assert_eq!(dest(&out[0]).to_string(), pinned);
}

/// The client-side view of a NAT reply: (source, destination).
fn reply_addrs(pkt: &Option<Vec<u8>>) -> (SocketAddrV4, SocketAddrV4) {
    let p = pkt.as_ref().expect("reply forwarded");
    let at = |i: usize| {
        SocketAddrV4::new(
            Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]),
            u16::from_be_bytes([p[20 + (i - 12) / 2], p[21 + (i - 12) / 2]]),
        )
    };
    (at(12), at(16))
}

#[test]
fn active_directors_take_up_each_others_nat_flows() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = Director::start(&sync_section(1, pa, pb, "active"));
    let mut b = Director::start(&sync_section(2, pb, pa, "active"));
    let on_a = connect(&mut a, 0, 20);
    let on_b = connect(&mut b, 100, 20);
    wait(&mut b, "a's connections on b", |h| h.held >= 20);
    wait(&mut a, "b's connections on a", |h| h.held >= 20);
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    // The router rehashed the flows (a director died, or joined): each director carries the
    // other's mid-stream, the client's packets to the same realserver and the realserver's
    // replies back from the VIP (NAT: the reply path needs the entry too).
    for (d, from, servers) in [(&mut b, 0, &on_a), (&mut a, 100, &on_b)] {
        for (k, rs) in servers.iter().enumerate() {
            let c = client(from + k as u32);
            let out = d.packets(&[tcp(c, vip, ACK | PSH, b"more")]);
            assert_eq!(dest(&out[0]), *rs, "{c}'s packet");
            let back = d.packets(&[tcp(*rs, c, ACK | PSH, b"reply")]);
            assert_eq!(reply_addrs(&back[0]), (vip, c), "{c}'s reply");
        }
    }
    let unknown = a.packets(&[tcp(client(999), vip, ACK | PSH, b"x")]);
    assert!(unknown[0].is_none(), "a flow nobody had is still refused");
    // Both sent (active sends and takes), and each kept its own live flows as they were.
    let (ha_a, ha_b) = (ha(&a), ha(&b));
    assert!(
        ha_a.sent_entries >= 20 && ha_b.sent_entries >= 20,
        "{ha_a:#?} {ha_b:#?}"
    );
    assert_eq!(
        (ha_a.role.as_str(), ha_b.role.as_str()),
        ("active", "active")
    );
    for (k, rs) in on_a.iter().enumerate() {
        let out = a.packets(&[tcp(client(k as u32), vip, ACK | PSH, b"again")]);
        assert_eq!(dest(&out[0]), *rs);
    }
}

#[test]
fn a_backup_sends_nothing() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = Director::start(&sync_section(1, pa, pb, "backup"));
    let mut b = Director::start(&sync_section(2, pb, pa, "backup"));
    connect(&mut a, 0, 10);
    // Heartbeats flow both ways; entries do not.
    let h = wait(&mut b, "a heartbeat from the other backup", |h| {
        h.received_messages >= 2
    });
    assert_eq!(h.received_entries, 0, "{h:#?}");
    assert_eq!(h.held, 0);
    assert_eq!(ha(&a).queued, 0);
}

#[test]
fn a_director_that_starts_late_gets_the_table_in_bulk() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = Director::start(&sync_section(1, pa, pb, "master"));
    // Its entries go to a peer that is not there yet.
    connect(&mut a, 0, 300);
    std::thread::sleep(Duration::from_millis(100));
    let mut b = Director::start(&sync_section(2, pb, pa, "backup"));
    // `a` answers `b`'s first heartbeat with its table (its queue answers the dump).
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        a.packets(&[]);
        b.packets(&[]);
        let h = ha(&b);
        if h.bulk_received == 1 && h.held == 300 {
            break h;
        }
        assert!(Instant::now() < deadline, "bulk transfer: {h:#?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(h.applied >= 300, "{h:#?}");
    let ha_a = ha(&a);
    assert_eq!(ha_a.bulk_sent, 1, "{ha_a:#?}");
    assert_eq!(ha_a.peers[0].bulk_sent, 1);
    assert_eq!(ha_a.peers[0].id, Some(2));
}

#[test]
fn forged_replayed_and_truncated_messages_are_counted_and_change_nothing() {
    use ringvs::sync::{encode, Header, Key, Kind};
    let (pa, pb) = (free_port(), free_port());
    let mut b = Director::start(&sync_section(2, pb, pa, "backup"));
    // A stand-in master at `pa`, with the key, then with another key.
    let sock = UdpSocket::bind(("127.0.0.1", pa)).unwrap();
    let key = Key::from_hex(KEY).unwrap();
    let other = Key::from_hex(&"ab".repeat(32)).unwrap();
    let entry = web_entry(1);
    let header = |seq| Header {
        kind: Kind::Entries,
        sender: 1,
        epoch: 1_764_000_000,
        seq,
    };
    let msg = |k: &Key, seq| {
        let mut m = Vec::new();
        encode(k, &header(seq), &[entry], &mut m);
        m
    };
    let to = ("127.0.0.1", pb);
    let good = msg(&key, 1);
    sock.send_to(&msg(&other, 1), to).unwrap(); // another key
    sock.send_to(&good[..good.len() - 1], to).unwrap(); // truncated
    let mut forged = good.clone();
    forged[40] ^= 1; // an address changed in flight
    sock.send_to(&forged, to).unwrap();
    sock.send_to(b"GET / HTTP/1.0\r\n\r\n", to).unwrap(); // not sync at all
    let h = wait(&mut b, "four refusals", |h| {
        h.rejected.values().sum::<u64>() == 4
    });
    assert_eq!(h.rejected["mac"], 2, "{h:#?}");
    assert_eq!(h.rejected["length"], 2, "{h:#?}");
    assert_eq!((h.held, h.applied, h.received_messages), (0, 0, 0));
    // The genuine message is taken once; its replay is refused.
    sock.send_to(&good, to).unwrap();
    let h = wait(&mut b, "the genuine entry", |h| h.held == 1);
    sock.send_to(&good, to).unwrap();
    let h2 = wait(&mut b, "the replay refused", |h| h.rejected["replay"] == 1);
    assert_eq!((h2.held, h2.applied), (1, h.applied));
    // An entry for a service this director does not have is ignored.
    let mut e2 = entry;
    e2.vip = "10.77.200.200:80".parse().unwrap();
    let mut m = Vec::new();
    encode(&key, &header(2), &[e2], &mut m);
    sock.send_to(&m, to).unwrap();
    let h3 = wait(&mut b, "the unknown service ignored", |h| h.ignored == 1);
    assert_eq!(h3.held, 1);
    assert_eq!(h3.lost_messages, 0);
    // Sequence numbers 3 to 199 never come: once 200 is taken, those below its window
    // (3 to 136) are lost; 137 to 199 may still arrive late.
    let mut m = Vec::new();
    encode(&key, &header(200), &[], &mut m);
    sock.send_to(&m, to).unwrap();
    let h4 = wait(&mut b, "the lost messages counted", |h| {
        h.received_messages == 3
    });
    assert_eq!(h4.lost_messages, 134, "{h4:#?}");
}

#[test]
fn ha_without_sync_is_a_clear_error() {
    let d = Director::start(TWO_SERVICES);
    let o = d.cli(&["ha", "status"]);
    assert!(!o.status.success());
    let e = common::director::text(&o.stderr);
    assert!(e.contains("connection sync is off"), "{e}");
    let o = d.cli(&["ha", "master"]);
    assert!(!o.status.success());
}

#[test]
fn ringvs_check_names_an_unusable_sync_section() {
    let dir = common::director::tmpdir("sync-check");
    let conf = dir.join("ringvs.toml");
    std::fs::write(
        &conf,
        format!(
            "[director.sync]\nid = 1\nkey = \"{KEY}\"\nlisten = \"10.77.250.1:8848\"\npeers = [\"10.77.250.2:8848\"]\n{TWO_SERVICES}"
        ),
    )
    .unwrap();
    let o = common::director::run(
        std::path::Path::new(common::director::BIN),
        &["check", "-c", conf.to_str().unwrap()],
    );
    let e = common::director::text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("director.sync.listen: 10.77.250.1 is not an address of this machine"),
        "{e}"
    );
    std::fs::write(
        &conf,
        format!("[director.sync]\nid = 1\nlisten = \"127.0.0.1:8848\"\npeers = [\"127.0.0.2:8848\"]\n{TWO_SERVICES}"),
    )
    .unwrap();
    let o = common::director::run(
        std::path::Path::new(common::director::BIN),
        &["check", "-c", conf.to_str().unwrap()],
    );
    let e = common::director::text(&o.stderr);
    assert!(e.contains("key `director.sync.key`: missing"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_queue_that_does_not_poll_gets_a_bounded_backlog() {
    use ringvs::sync::node::MAX_PENDING;
    use ringvs::sync::{encode, Header, Key, Kind};
    let (pa, pb) = (free_port(), free_port());
    let mut b = Director::start(&sync_section(2, pb, pa, "backup"));
    let sock = UdpSocket::bind(("127.0.0.1", pa)).unwrap();
    let key = Key::from_hex(KEY).unwrap();
    let n = MAX_PENDING as u32 + 100;
    for i in 0..n {
        let e = web_entry(i);
        let h = Header {
            kind: Kind::Entries,
            sender: 1,
            epoch: 1_764_000_000,
            seq: u64::from(i) + 1,
        };
        let mut m = Vec::new();
        encode(&key, &h, &[e], &mut m);
        sock.send_to(&m, ("127.0.0.1", pb)).unwrap();
        if i % 256 == 255 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The queue is not polled meanwhile: the sync thread keeps MAX_PENDING messages for it.
    // (A message is counted received before it is handed in: wait for both counts, then
    // look again, so that one ignored too many would show.)
    let over = u64::from(n) - MAX_PENDING as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = ha(&b);
        if h.received_messages == u64::from(n) && h.ignored >= over {
            break;
        }
        assert!(Instant::now() < deadline, "{h:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let h = ha(&b);
    assert_eq!(h.ignored, over, "{h:#?}");
    assert_eq!(h.lost_messages, 0, "in order, none lost");
    let h = wait(&mut b, "the backlog taken", |h| {
        h.held == MAX_PENDING as u64
    });
    assert_eq!(h.applied, MAX_PENDING as u64);
}

/// An IPv6 web service (NAT66) beside the two IPv4 ones, and an IPv6 service tunnelled to an
/// IPv4 realserver (IPv6 in IPv4: the families cross).
const WEB6: &str = "[[service]]\nname = \"web6\"\nvip = \"[fd77:100::100]:80\"\n\
    scheduler = \"wlc\"\n[[service.server]]\naddr = \"[fd77:1::1]:8080\"\n\
    [[service.server]]\naddr = \"[fd77:1::2]:8080\"\n\
    [[service]]\nname = \"tls6\"\nvip = \"[fd77:100::100]:443\"\nforward = \"tun\"\n\
    [[service.server]]\naddr = \"10.77.1.3\"\n";

fn vip6() -> SocketAddrV6 {
    "[fd77:100::100]:80".parse().unwrap()
}

fn client6(i: u32) -> SocketAddrV6 {
    SocketAddrV6::new(
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10 + (i / 200) as u16),
        30_000 + (i % 200) as u16,
        0,
        0,
    )
}

/// The destination of a forwarded IPv6 packet (no extension headers).
fn dest6(pkt: &Option<Vec<u8>>) -> SocketAddrV6 {
    let p = pkt.as_ref().expect("forwarded");
    let ip: [u8; 16] = p[24..40].try_into().unwrap();
    SocketAddrV6::new(ip.into(), u16::from_be_bytes([p[42], p[43]]), 0, 0)
}

/// The source of a forwarded IPv6 packet.
fn source6(pkt: &Option<Vec<u8>>) -> SocketAddrV6 {
    let p = pkt.as_ref().expect("forwarded");
    let ip: [u8; 16] = p[8..24].try_into().unwrap();
    SocketAddrV6::new(ip.into(), u16::from_be_bytes([p[40], p[41]]), 0, 0)
}

/// As [`connect`], over IPv6 to web6.
fn connect6(d: &mut Director, from: u32, n: u32) -> Vec<SocketAddrV6> {
    (from..from + n)
        .map(|i| {
            let c = client6(i);
            let syn = d.packets(&[tcp6(c, vip6(), SYN, b"")]);
            let rs = dest6(&syn[0]);
            let synack = d.packets(&[tcp6(rs, c, SYN | ACK, b"")]);
            assert!(synack[0].is_some(), "SYN-ACK of {c} not forwarded");
            let rest = d.packets(&[
                tcp6(c, vip6(), ACK, b""),
                tcp6(c, vip6(), ACK | PSH, b"GET / HTTP/1.1\r\n\r\n"),
            ]);
            assert!(rest.iter().all(Option::is_some), "{c}: {rest:?}");
            rs
        })
        .collect()
}

fn active6(d: &Director) -> u32 {
    let l = d.list();
    let web6 = l.services.iter().find(|s| s.name == "web6").expect("web6");
    web6.servers.iter().map(|s| s.active).sum()
}

#[test]
fn ipv6_connections_follow_the_master_to_its_backup_and_in_bulk() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let section = |id, port, peers: &[u16], role| {
        let sync = sync_table(id, port, peers, role);
        format!("tunnel_source = \"10.77.1.254\"\n{sync}{TWO_SERVICES}{WEB6}")
    };
    let mut a = Director::start(&section(1, pa, &[pb, pc], "master"));
    let mut b = Director::start(&section(2, pb, &[pa], "backup"));
    let servers6 = connect6(&mut a, 0, 30);
    let servers = connect(&mut a, 0, 10);
    // One flow of tls6, past the sync threshold (a tunnelled flow's states are the client's).
    let tls6: SocketAddrV6 = "[fd77:100::100]:443".parse().unwrap();
    let hello = |flags, data: &[u8]| tcp6(client6(500), tls6, flags, data);
    let sent = a.packets(&[hello(SYN, b""), hello(ACK, b""), hello(ACK | PSH, b"hello")]);
    assert!(
        sent.iter().all(Option::is_some),
        "tls6 through the master: {sent:?}"
    );
    assert_eq!(active6(&a), 30);
    let h = wait(&mut b, "41 entries held by the backup", |h| h.held == 41);
    assert!(h.rejected.values().all(|n| *n == 0), "{h:#?}");
    assert_eq!(active6(&b), 0, "held: not counted for scheduling");
    // The master fails: IPv6 flows continue through the backup to the same realservers,
    // and a realserver's reply is un-NATed to the VIP.
    for i in 0..10 {
        let out = b.packets(&[tcp6(client6(i), vip6(), ACK | PSH, b"more")]);
        assert_eq!(dest6(&out[0]), servers6[i as usize], "flow {i}");
    }
    let reply = b.packets(&[tcp6(servers6[10], client6(10), ACK | PSH, b"HTTP/1.1 200")]);
    assert_eq!(source6(&reply[0]), vip6(), "the reply of a held flow");
    assert_eq!(active6(&b), 11, "the 11 flows that had a packet are live");
    let unknown = b.packets(&[tcp6(client6(999), vip6(), ACK | PSH, b"x")]);
    assert!(unknown[0].is_none(), "a flow nobody synced is refused");
    // The tunnelled flow continues through the backup: IPv6 inside IPv4 to 10.77.1.3.
    let out = b.packets(&[hello(ACK | PSH, b"more")]);
    let p = out[0].as_ref().expect("the tls6 flow through the backup");
    assert_eq!((p[9], &p[16..20]), (41, &[10, 77, 1, 3][..]), "{p:?}");
    b.ok(&["ha", "master"]);
    wait(&mut b, "held entries promoted", |h| h.held == 0);
    assert_eq!(active6(&b), 30);
    assert_eq!(active(&b), 10);
    for i in 0..10 {
        let out = b.packets(&[tcp(client(i), VIP.parse().unwrap(), ACK | PSH, b"more")]);
        assert_eq!(dest(&out[0]), servers[i as usize], "IPv4 flow {i}");
    }
    for i in 11..30 {
        let out = b.packets(&[tcp6(client6(i), vip6(), ACK | PSH, b"more")]);
        assert_eq!(dest6(&out[0]), servers6[i as usize], "flow {i}");
    }
    // A late starter gets both tables in bulk from the master.
    let mut c = Director::start(&section(3, pc, &[pa], "backup"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        a.packets(&[]);
        c.packets(&[]);
        let h = ha(&c);
        if h.bulk_received >= 1 && h.held == 41 {
            break h;
        }
        assert!(Instant::now() < deadline, "bulk transfer: {h:#?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(h.applied >= 41, "{h:#?}");
    let out = c.packets(&[tcp6(client6(29), vip6(), ACK | PSH, b"more")]);
    assert_eq!(dest6(&out[0]), servers6[29], "a flow taken in bulk");
}
