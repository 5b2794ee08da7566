//! The `shard` target: packet sequences through one or two queues of a director, with a
//! configuration, plugins, virtio-net headers, partial checksums, a clock and realserver
//! changes all chosen by the input.
//!
//! Input: a set-up byte, then operations until the input ends.
//! - Set-up: bits 0–2 the plugins in the loop ([`SCENARIOS`]: none, a consistent-hash
//!   scheduler, the hostile test plugins, a defense flooding the host with actions, the
//!   catalogue's defenses); bit 3 `expire_nodest_conn`; bit 4 a small table (it fills and
//!   empties as the clock moves); bit 5 two queues; bit 6 a device with virtio-net headers.
//! - Operations (one byte `op`, `op & 7` chooses, the high bits are flags):
//!   - 0, 1: raw bytes (a 16-bit length, then the packet);
//!   - 2, 3: a built packet ([`built`]): a flow of a service, a reply, an ICMP error or
//!     echo, from one of a few clients, with a few bytes changed after;
//!   - 4: the clock moves on (0–255 × 10 ms) and the queues poll (ticks, expiry, defense
//!     ticks every second);
//!   - 5: a realserver's weight changes, or it is removed or added back;
//!   - 6: the clock moves on a whole timeout (0–255 s);
//!   - 7: connection sync (a second byte chooses): entries a peer sent (1–4, each from 3
//!     input bytes: protocol and state, one of the clients, a service's virtual address or
//!     another, one of the realservers or another, the seconds left) taken by a queue; every
//!     held entry promoted; the role switched; a bulk transfer's dump of every queue.
//!     Entries the queues queue for the peers and every dumped one must survive the sync
//!     format (encoded, then decoded to the same entry).
//!
//!   Packet flags: bit 3 fix the IPv4 checksum, bit 4 fix the transport checksum, bit 5
//!   the second queue, bit 6 a virtio-net header follows (10 bytes; with `NEEDS_CSUM` the
//!   transport checksum is made partial, as the kernel hands it over).
//!
//! Checked: every forwarded packet is well-formed IPv4 that etherparse reads with the same
//! checksum verdicts and (unless its checksum is partial) keeps every checksum valid on the
//! way in, the inner packet of a tunnel the same; tables stay within capacity; at the end the
//! tables' entries match the realservers' counts.

use crate::check::{check_accounting, check_emitted, check_forwarded, fix_checksums};
use crate::Input;
use ringvs::conn::HashKey;
use ringvs::control::plugins::PluginManager;
use ringvs::control::registry::Registry;
use ringvs::dataplane::testkit::{icmp6, icmp_echo, icmp_error, partial, tcp, tcp6, udp, udp6};
use ringvs::dataplane::{Packet, Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use ringvs::plugin::Plugin;
use ringvs::wire::icmpv4::{msg_type, unreach_code};
use ringvs::wire::ipv6::Ipv6Packet;
use ringvs::wire::vnet::{self, VnetHdr};
use ringvs::wire::{ip_proto, Ipv4Packet};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Scheduler of `web`, defenses of `web`, persistence of `web`: the plugins in the loop.
struct Scenario {
    sched: &'static str,
    defense: &'static [(&'static str, &'static str)],
    persistence: Option<&'static str>,
}

const SCENARIOS: [Scenario; 8] = [
    Scenario {
        sched: "wlc",
        defense: &[],
        persistence: None,
    },
    Scenario {
        sched: "mh",
        defense: &[],
        persistence: None,
    },
    Scenario {
        sched: "tc_trap",
        defense: &[],
        persistence: None,
    },
    Scenario {
        sched: "tc_bad_return",
        defense: &[],
        persistence: None,
    },
    Scenario {
        sched: "rr",
        defense: &[],
        persistence: Some("tc_persist"),
    },
    Scenario {
        sched: "rr",
        defense: &[(
            "tc_defense",
            "actions = \"level:2,embryonic:64,drop:0,drop:7,block:10.77.0.0/30:3:drop,\
             block:10.77.0.8/29:3:tarpit,unblock:10.77.0.0/30,proxy:on\", repeat = \"true\", \
             flood = \"300\"",
        )],
        persistence: None,
    },
    Scenario {
        sched: "wlc",
        defense: &[("defense_synauth", "")],
        persistence: None,
    },
    Scenario {
        sched: "sh",
        defense: &[
            ("defense_secure_tcp", ""),
            (
                "defense_ratelimit",
                "new_flows_per_sec = 20, action = \"block\", block_secs = 2",
            ),
        ],
        persistence: Some("persist_netmask"),
    },
];

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 100);
/// Realservers: NAT web and dns on the first two; the tunnelled services on the third.
const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 77, 1, 1),
    Ipv4Addr::new(10, 77, 1, 2),
    Ipv4Addr::new(10, 77, 1, 3),
];
/// Clients: a few, so that flows meet again (0.0/30 and 0.8/29 are what the test defense
/// blocks).
const CLIENTS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 77, 0, 2),
    Ipv4Addr::new(10, 77, 0, 10),
    Ipv4Addr::new(10, 77, 0, 77),
    Ipv4Addr::new(198, 18, 3, 4),
];
/// The services' ports: web (NAT TCP), dns (NAT UDP), tls (IPIP), quic (GUE over UDP).
const PORTS: [(u16, u8); 4] = [
    (80, ip_proto::TCP),
    (53, ip_proto::UDP),
    (443, ip_proto::TCP),
    (4433, ip_proto::UDP),
];
/// The realservers' ports of web and dns (tunnelled services keep the VIP's port).
const RS_PORTS: [u16; 2] = [8080, 5353];
const GUE_PORT: u16 = 6080;

fn plugin_dir() -> PathBuf {
    std::env::var_os("RINGVS_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
        })
}

fn config_text(s: &Scenario) -> String {
    let dir = plugin_dir();
    let mut plugins = String::new();
    let mut decl = |name: &str, cfg: &str| {
        let path = dir.join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: run scripts/build-plugins.sh (or set RINGVS_PLUGIN_DIR)",
            path.display()
        );
        plugins += &format!(
            "[plugins.{name}]\npath = \"{}\"\nconfig = {{ {cfg} }}\n",
            path.display()
        );
    };
    if s.sched.contains('_') {
        decl(s.sched, "");
    }
    for (d, cfg) in s.defense {
        decl(d, cfg);
    }
    if let Some(p) = s.persistence {
        decl(p, "");
    }
    let defense = s
        .defense
        .iter()
        .map(|(d, _)| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let persistence = s.persistence.map_or(String::new(), |p| {
        format!("persistence = {{ plugin = \"{p}\", timeout = \"30s\" }}\n")
    });
    format!(
        r#"
[director]
tunnel_source = "10.77.1.254"
tunnel_source6 = "fd77:1::fe"
plugin_dirs = ["{dir}"]

{plugins}
[[service]]
name = "web"
vip = "{VIP}:80"
scheduler = "{sched}"
defense = [{defense}]
{persistence}timeouts = {{ syn_recv = "5s", close = "2s", established = "60s" }}
[[service.server]]
addr = "{rs0}:8080"
[[service.server]]
addr = "{rs1}:8080"
weight = 3

[[service]]
name = "dns"
vip = "{VIP}:53"
proto = "udp"
scheduler = "rr"
[[service.server]]
addr = "{rs0}:5353"

[[service]]
name = "web6"
vip = "[{VIP6}]:80"
scheduler = "{sched}"
defense = [{defense}]
{persistence}[[service.server]]
addr = "[fd77:1::1]:8080"
[[service.server]]
addr = "[fd77:1::2]:8080"

[[service]]
name = "dns6"
vip = "[{VIP6}]:53"
proto = "udp"
[[service.server]]
addr = "[fd77:1::1]:5353"

[[service]]
name = "tls"
vip = "{VIP}:443"
scheduler = "rr"
forward = "tun"
[[service.server]]
addr = "{rs2}"

[[service]]
name = "quic"
vip = "{VIP}:4433"
proto = "udp"
scheduler = "rr"
forward = "tun"
tunnel = "gue"
tunnel_port = {GUE_PORT}
[[service.server]]
addr = "{rs2}"

[[service]]
name = "tls6"
vip = "[{VIP6}]:443"
scheduler = "rr"
forward = "tun"
[[service.server]]
addr = "fd77:1::3"

[[service]]
name = "quic6"
vip = "[{VIP6}]:4433"
proto = "udp"
scheduler = "rr"
forward = "tun"
tunnel = "gue"
tunnel_port = {GUE_PORT}
[[service.server]]
addr = "fd77:1::3"
[[service.server]]
addr = "{rs2}"
"#,
        sched = s.sched,
        dir = dir.display(),
        rs0 = RS[0],
        rs1 = RS[1],
        rs2 = RS[2],
    )
}

/// A scenario's config and its plugins, compiled once per process (compiling is the slow
/// part; instances are made fresh for every input).
struct Ready {
    cfg: ringvs::config::Config,
    loaded: BTreeMap<String, Arc<Plugin>>,
}

fn ready(i: usize) -> Arc<Ready> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Ready>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(i)
        .or_insert_with(|| {
            let text = config_text(&SCENARIOS[i]);
            let cfg = ringvs::config::from_str(&text, "fuzz.toml")
                .unwrap_or_else(|e| panic!("the fuzz config does not load: {e}\n{text}"));
            let mut pm = PluginManager::default();
            let loaded = pm.load_config(&cfg).expect("the fuzz plugins load");
            Arc::new(Ready { cfg, loaded })
        })
        .clone()
}

/// The director: its registry, plugins and queues.
struct Director {
    /// Connection sync's link, and what the queues queued for the peers.
    link: Arc<ringvs::sync::Link>,
    outgoing: crossbeam_channel::Receiver<ringvs::sync::Entry>,
    ready: Arc<Ready>,
    registry: Registry,
    plugins: PluginManager,
    shards: Vec<Shard>,
    start: Instant,
    elapsed: Duration,
    vnet: bool,
}

impl Director {
    fn new(setup: u8) -> Director {
        let ready = ready(usize::from(setup & 7));
        let queues = if setup & 32 != 0 { 2 } else { 1 };
        let memory = if setup & 16 != 0 {
            (24 << 10) + 4 * ringvs::dataplane::synproxy::STASH_BYTES
        } else {
            1 << 20
        };
        let mut registry = Registry::new(&ready.cfg.services).expect("the fuzz registry");
        registry.set_tunnel_source(ready.cfg.director.tunnel_source);
        registry.set_tunnel_source6(ready.cfg.director.tunnel_source6);
        let mut plugins = PluginManager::default();
        let prepared = plugins
            .prepare(&registry, queues, &ready.loaded)
            .expect("the fuzz plugins instantiate");
        let snap = Arc::new(plugins.snapshot(&mut registry, prepared));
        let start = Instant::now();
        let link = Arc::new(ringvs::sync::Link::new(
            ringvs::config::SyncRole::Master,
            3,
            50,
        ));
        let (tx, outgoing) = crossbeam_channel::bounded(64);
        let base = ShardConfig {
            hash_key: HashKey([0x6675_7a7a, 0x7368]),
            expire_nodest_conn: setup & 8 != 0,
            queues,
            start,
            sync: Some(ringvs::sync::QueueSync {
                link: link.clone(),
                tx,
            }),
            ..ShardConfig::test(memory)
        };
        let shards = (0..queues)
            .map(|id| {
                Shard::new(
                    ShardConfig {
                        id,
                        sources: base.sources.clone(),
                        templates: base.templates.clone(),
                        cookies: base.cookies.clone(),
                        ..base.clone()
                    },
                    snap.clone(),
                    None,
                )
                .expect("a fuzz queue")
            })
            .collect();
        Director {
            link,
            outgoing,
            ready,
            registry,
            plugins,
            shards,
            start,
            elapsed: Duration::ZERO,
            vnet: setup & 64 != 0,
        }
    }

    fn publish(&mut self) {
        let prepared = self
            .plugins
            .prepare(&self.registry, self.shards.len(), &self.ready.loaded)
            .expect("the fuzz plugins instantiate");
        let snap = Arc::new(self.plugins.snapshot(&mut self.registry, prepared));
        for s in &mut self.shards {
            s.apply_snapshot(snap.clone());
        }
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
        let now = self.start + self.elapsed;
        for s in &mut self.shards {
            s.poll(now);
        }
    }

    /// Operation 7: connection sync (see the module docs).
    fn sync(&mut self, b: u8, input: &mut Input<'_>) {
        use ringvs::config::SyncRole;
        match b & 3 {
            0 => {
                let n = 1 + usize::from(input.u8() % 4);
                let entries: Vec<ringvs::sync::Entry> = (0..n)
                    .map(|_| sync_entry(input.u8(), input.u8(), input.u8(), input.u32()))
                    .collect();
                let q = usize::from(b >> 2 & 1) % self.shards.len();
                self.shards[q].take_synced(&entries);
            }
            1 => self.shards.iter_mut().for_each(Shard::promote),
            2 => self.link.set_role(match (b >> 2) % 3 {
                0 => SyncRole::Master,
                1 => SyncRole::Backup,
                _ => SyncRole::Active,
            }),
            _ => {
                for s in &self.shards {
                    let mut from = Some(0);
                    while let Some(f) = from {
                        let (entries, next) = s.sync_dump(f);
                        entries.iter().for_each(check_sync_entry);
                        from = next;
                    }
                }
            }
        }
        self.drain_outgoing();
    }

    /// What the queues queued for the peers must be sendable.
    fn drain_outgoing(&mut self) {
        for e in self.outgoing.try_iter() {
            check_sync_entry(&e);
        }
    }

    /// A realserver of web or dns: weight 0–2, removed, or added back.
    fn change(&mut self, a: u8, b: u8) {
        let (svc, port) = if a & 1 == 0 {
            ("web", RS_PORTS[0])
        } else {
            ("dns", RS_PORTS[1])
        };
        let addr = SocketAddrV4::new(RS[usize::from(a >> 1) % 2], port);
        match b % 5 {
            0..=2 => {
                let _ = self.registry.set_weight(svc, addr.into(), u64::from(b % 5));
            }
            3 => {
                let _ = self.registry.remove_server(svc, addr.into());
            }
            _ => {
                let _ = self
                    .registry
                    .add_server(svc, ringvs::config::ServerConfig::new(addr, 1));
            }
        }
        self.publish();
    }

    /// One packet through a queue, as the io_uring backend runs it; checks what comes out.
    fn packet(&mut self, queue: usize, hdr: Option<VnetHdr>, input: &[u8]) {
        let mut buf = vec![0u8; HEADROOM + input.len() + 256];
        buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
        let Some(mut p) = Packet::new(&mut buf, HEADROOM, input.len()) else {
            return;
        };
        p.vnet = hdr;
        let n = self.shards.len();
        let shard = &mut self.shards[queue % n];
        let v = shard.process(&mut p);
        let t = shard.table();
        assert!(t.len() <= t.capacity(), "table over capacity");
        if v != Verdict::Forward || p.start() < vnet::LEN {
            return;
        }
        let partial = hdr.is_some_and(|h| h.needs_csum()) || p.vnet.is_some_and(|h| h.needs_csum());
        let out = p.data().to_vec();
        let what = format!("queue {queue}");
        match inner(&out) {
            Some(inner) if !carries(input) => {
                check_emitted(&what, &out);
                check(&what, partial, input, inner);
            }
            _ => check(&what, partial, input, &out),
        }
    }
}

fn check(what: &str, partial: bool, input: &[u8], output: &[u8]) {
    if partial {
        check_emitted(what, output);
    } else {
        check_forwarded(what, input, output);
    }
}

/// The packet inside a tunnel the director made, IPv4 or IPv6 outside: IP in IP (protocol
/// 4 or 41), or GUE to [`GUE_PORT`].
fn inner(p: &[u8]) -> Option<&[u8]> {
    let (proto, seg) = if p.first()? >> 4 == 6 {
        let ip = Ipv6Packet::new_checked(p).ok()?;
        (ip.next_header(), &p[40..40 + usize::from(ip.payload_len())])
    } else {
        let ip = Ipv4Packet::new_checked(p).ok()?;
        let (ihl, total) = (ip.header_len(), usize::from(ip.total_len()));
        (ip.protocol(), &p[ihl..total])
    };
    match proto {
        ip_proto::IPIP | IPPROTO_IPV6 => Some(seg),
        ip_proto::UDP if seg.len() >= 12 && seg[2..4] == GUE_PORT.to_be_bytes() => Some(&seg[12..]),
        _ => None,
    }
}

/// IPv6 inside IP (RFC 2473, RFC 4213).
const IPPROTO_IPV6: u8 = 41;

/// The input is itself a tunnel packet (passed through, not made by the director).
fn carries(p: &[u8]) -> bool {
    inner(p).is_some()
}

/// The IPv6 virtual address (services web6 and dns6, NAT66; tls6 and quic6, tunnelled: quic6
/// across families too).
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 0x100);

/// A packet of the lab's IPv6 flows (NAT66): as [`built`] for what `kind` chooses.
fn built6(kind: u8, who: u8, flags: u8, len: u8) -> Vec<u8> {
    let (port, proto) = PORTS[usize::from(kind >> 3) % 4];
    let client = SocketAddrV6::new(
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10 + u16::from(who) % 4),
        40000 + u16::from(who >> 2) % 8,
        0,
        0,
    );
    let vip = SocketAddrV6::new(VIP6, port, 0, 0);
    let rs = SocketAddrV6::new(
        Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1 + u16::from(who >> 5) % 2),
        match port {
            80 => RS_PORTS[0],
            53 => RS_PORTS[1],
            p => p,
        },
        0,
        0,
    );
    let payload = vec![0x61; usize::from(len % 64)];
    let seg = |a, b, flags| match proto {
        ip_proto::TCP => tcp6(a, b, flags, &payload),
        _ => udp6(a, b, &payload),
    };
    let cut = |p: Vec<u8>| p[..p.len().min(40 + usize::from(len))].to_vec();
    match kind & 7 {
        0..=2 => seg(client, vip, flags),
        3 | 4 => seg(rs, client, flags),
        5 => icmp6(
            *client.ip(),
            VIP6,
            2,
            0,
            1280,
            &cut(seg(vip, client, flags)),
        ),
        6 => icmp6(
            *rs.ip(),
            *client.ip(),
            1,
            4,
            0,
            &cut(seg(client, rs, flags)),
        ),
        _ => icmp6(
            *client.ip(),
            VIP6,
            128 + (flags & 1),
            0,
            u32::from(who),
            b"ping",
        ),
    }
}

/// A packet of the lab's flows: `kind` chooses what, `who` the client and realserver,
/// `flags` the TCP flags; with `kind`'s top bit, the IPv6 flows ([`built6`]).
fn built(kind: u8, who: u8, flags: u8, len: u8) -> Vec<u8> {
    if kind & 0x80 != 0 {
        return built6(kind, who, flags, len);
    }
    let (port, proto) = PORTS[usize::from(kind >> 3) % 4];
    let client = SocketAddrV4::new(
        CLIENTS[usize::from(who) % 4],
        40000 + u16::from(who >> 2) % 8,
    );
    let vip = SocketAddrV4::new(VIP, port);
    let rs_ip = if port == 443 || port == 4433 {
        RS[2]
    } else {
        RS[usize::from(who >> 5) % 2]
    };
    let rs = SocketAddrV4::new(
        rs_ip,
        match port {
            80 => RS_PORTS[0],
            53 => RS_PORTS[1],
            p => p,
        },
    );
    let payload = vec![0x61; usize::from(len % 64)];
    let to_service = |flags| match proto {
        ip_proto::TCP => tcp(client, vip, flags, &payload),
        _ => udp(client, vip, &payload),
    };
    let reply = |flags| match proto {
        ip_proto::TCP => tcp(rs, client, flags, &payload),
        _ => udp(rs, client, &payload),
    };
    match kind & 7 {
        0..=2 => to_service(flags),
        3 | 4 => reply(flags),
        // The client's ICMP error about a reply, as it saw it (from the service).
        5 => icmp_error(
            *client.ip(),
            VIP,
            msg_type::DEST_UNREACHABLE,
            unreach_code::FRAG_NEEDED,
            1400,
            &match proto {
                ip_proto::TCP => tcp(vip, client, flags, &payload),
                _ => udp(vip, client, &payload),
            },
            usize::from(len),
        ),
        // The realserver's ICMP error about a request, as it got it.
        6 => icmp_error(
            rs_ip,
            *client.ip(),
            msg_type::DEST_UNREACHABLE,
            unreach_code::PORT_UNREACHABLE,
            0,
            &match proto {
                ip_proto::TCP => tcp(client, rs, flags, &payload),
                _ => udp(client, rs, &payload),
            },
            usize::from(len),
        ),
        _ => icmp_echo(
            *client.ip(),
            VIP,
            flags & 1 == 0,
            u16::from(who),
            u16::from(len),
        ),
    }
}

/// A synced entry from input bytes: `a` the protocol (bit 0: UDP) and the client, `b` the
/// TCP state and the virtual port, `c` the realserver and the family (bit 5: IPv6, the
/// realserver IPv4 with bit 7, as quic6's second), `secs` the time left.
fn sync_entry(a: u8, b: u8, c: u8, secs: u32) -> ringvs::sync::Entry {
    use ringvs::conn::State;
    let udp = a & 1 != 0;
    let state = if udp {
        State::Udp
    } else {
        // The TCP states are indices 0 to 10 (the decoder refuses the rest).
        State::from_index(b % 11).unwrap_or(State::Established)
    };
    let (port, _) = PORTS[usize::from(b >> 4) % 4];
    let vip = if b & 0x80 != 0 && a & 0x80 != 0 {
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 200, 200), port)
    } else {
        SocketAddrV4::new(VIP, port)
    };
    let server = SocketAddrV4::new(
        if c & 0x80 != 0 {
            Ipv4Addr::new(10, 77, 9, 9)
        } else {
            RS[usize::from(c) % 3]
        },
        if c & 0x40 != 0 {
            GUE_PORT
        } else {
            RS_PORTS[usize::from(c >> 1) % 2]
        },
    );
    let client = SocketAddrV4::new(
        CLIENTS[usize::from(a >> 1) % 4],
        40000 + u16::from(a >> 3) % 8,
    );
    // A template (bit 6): its key from the client's bits, as persist-netmask's keys are
    // addresses; its state NONE, its client unspecified (what the format carries).
    let template = (a & 0x40 != 0).then(|| u64::from(u32::from(*client.ip())));
    let (client, vip, server): (SocketAddr, SocketAddr, SocketAddr) = if c & 0x20 != 0 {
        let client6 = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10 + u16::from(a >> 1) % 4);
        let server6 = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1 + u16::from(c) % 3);
        (
            SocketAddrV6::new(client6, client.port(), 0, 0).into(),
            SocketAddrV6::new(VIP6, vip.port(), 0, 0).into(),
            if c & 0x80 != 0 {
                server.into()
            } else {
                SocketAddrV6::new(server6, server.port(), 0, 0).into()
            },
        )
    } else {
        (client.into(), vip.into(), server.into())
    };
    ringvs::sync::Entry {
        proto: if udp { ip_proto::UDP } else { ip_proto::TCP },
        state: if template.is_some() {
            State::None
        } else {
            state
        },
        template,
        client: if template.is_some() {
            ringvs::sync::Entry::NO_CLIENT
        } else {
            client
        },
        vip,
        server,
        expires_in: secs,
    }
}

/// An entry a queue sends must come back from the wire format unchanged.
fn check_sync_entry(e: &ringvs::sync::Entry) {
    let key = ringvs::sync::Key::from_hex(&"5a".repeat(32)).expect("a key");
    let h = ringvs::sync::Header {
        kind: e.kind(),
        sender: 1,
        epoch: 1,
        seq: 1,
    };
    let mut m = Vec::new();
    ringvs::sync::encode(&key, &h, std::slice::from_ref(e), &mut m);
    let (_, back) = ringvs::sync::decode(&key, &m)
        .unwrap_or_else(|r| panic!("a queue's sync entry {e:?} is refused by the format: {r:?}"));
    assert_eq!(back, [*e], "a queue's sync entry changed on the wire");
    assert!(e.expires_in >= 1, "{e:?}: sent already expired");
}

/// The `shard` target's body.
pub fn shard(data: &[u8]) {
    run(data);
}

/// Runs an input; returns the director as it ended.
fn run(data: &[u8]) -> Director {
    let mut input = Input(data);
    let mut d = Director::new(input.u8());
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        ops += 1;
        let op = input.u8();
        let mut pkt = match op & 7 {
            0 | 1 => {
                let n = usize::from(input.u16() % 2048);
                input.take(n).to_vec()
            }
            2 | 3 => {
                let mut p = built(input.u8(), input.u8(), input.u8(), input.u8());
                for _ in 0..input.u8() % 4 {
                    let (at, x) = (usize::from(input.u8()), input.u8());
                    if let Some(b) = p.get_mut(at) {
                        *b ^= x;
                    }
                }
                p
            }
            4 => {
                d.advance(Duration::from_millis(10 * u64::from(input.u8())));
                continue;
            }
            5 => {
                let (a, b) = (input.u8(), input.u8());
                d.change(a, b);
                continue;
            }
            7 => {
                let b = input.u8();
                d.sync(b, &mut input);
                continue;
            }
            _ => {
                d.advance(Duration::from_secs(u64::from(input.u8())));
                continue;
            }
        };
        if op & 8 != 0 {
            fix_checksums(&mut pkt, op & 16 != 0);
        }
        let hdr = if op & 64 != 0 && d.vnet {
            let h = VnetHdr::parse(input.take(vnet::LEN)).unwrap_or_default();
            let ihl = usize::from(pkt.first().map_or(0, |b| b & 15)) * 4;
            let l4 = matches!(pkt.get(9), Some(&ip_proto::TCP) | Some(&ip_proto::UDP));
            if h.needs_csum() && l4 && ihl >= 20 && pkt.len() >= ihl + 20 {
                pkt = partial(pkt);
            }
            Some(h)
        } else if d.vnet {
            Some(VnetHdr::default())
        } else {
            None
        };
        d.packet(usize::from(op >> 5 & 1), hdr, &pkt);
    }
    d.advance(Duration::from_millis(10));
    d.drain_outgoing();
    let shards: Vec<&Shard> = d.shards.iter().collect();
    check_accounting("the end", &shards, &d.registry);
    d
}

#[cfg(test)]
mod tests {
    /// The sync seeds have queues take peers' entries (and ignore one for an unknown
    /// service), queue their own flows for the peers, and dump.
    #[test]
    fn the_sync_seeds_take_ignore_and_send() {
        use std::sync::atomic::Ordering::Relaxed;
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/shard");
        for setup in [0, 32, 48, 4] {
            let d = super::run(&std::fs::read(seeds.join(format!("sync-{setup}"))).unwrap());
            let st = &d.link.stats;
            let (taken, ignored, queued) = (
                st.applied.load(Relaxed),
                st.ignored.load(Relaxed),
                st.queued.load(Relaxed),
            );
            eprintln!("sync-{setup}: taken {taken} ignored {ignored} queued {queued}");
            assert!(taken >= 4, "sync-{setup}: entries taken");
            assert!(
                ignored >= 1,
                "sync-{setup}: the unknown service's entry ignored"
            );
            assert!(queued >= 1, "sync-{setup}: flows queued for the peers");
        }
    }

    /// The IPv6 seed (lab-scenario-0 with every built packet IPv6) takes NAT66 both ways and
    /// translates ICMPv6 errors.
    #[test]
    fn the_ipv6_seed_reaches_nat66() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/shard");
        let d = super::run(&std::fs::read(seeds.join("lab-ipv6-0")).unwrap());
        let c = d.shards[0].counters();
        let t6 = d.shards[0].table6().expect("an IPv6 table");
        eprintln!(
            "ipv6: in {} out {} icmp {} echo {} conns {} table6 {}",
            c.total.in_pkts,
            c.total.out_pkts,
            c.icmp_translated,
            c.echo_replies,
            c.total.conns,
            t6.len()
        );
        assert!(c.total.in_pkts >= 12, "to realservers");
        assert!(c.total.out_pkts >= 8, "to clients");
        assert!(c.icmp_translated >= 1, "ICMPv6 errors translated");
        assert!(c.total.conns >= 3, "connections");
    }

    /// The seeds reach what they are for: the lab's flows are forwarded both ways, tunnelled,
    /// their ICMP errors translated; the plugins' faults and the defenses' drops happen.
    #[test]
    fn the_seeds_reach_the_paths() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/shard");
        let read = |name: &str| std::fs::read(seeds.join(name)).unwrap();
        for setup in 0..8 {
            let d = super::run(&read(&format!("lab-scenario-{setup}")));
            let c = d.shards[0].counters();
            eprintln!(
                "scenario {setup}: in {} out {} icmp {} echo {} drops {:?}",
                c.total.in_pkts,
                c.total.out_pkts,
                c.icmp_translated,
                c.echo_replies,
                ringvs::dataplane::stats::DropReason::ALL
                    .map(|r| (r.label(), c.drops[r as usize]))
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .collect::<Vec<_>>()
            );
            // Defenses (5–7) answer SYNs themselves (the SYN proxy, synauth) or block some.
            let want = if setup >= 5 { 8 } else { 16 };
            assert!(c.total.in_pkts >= want, "scenario {setup}: to realservers");
            assert!(
                c.icmp_translated >= 1,
                "scenario {setup}: ICMP errors translated"
            );
            assert!(c.total.out_pkts >= want / 2, "scenario {setup}: to clients");
            assert!(c.total.conns >= 3, "scenario {setup}: connections");
        }
    }
}
