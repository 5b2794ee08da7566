//! Persistence inside the data plane, with the built `persist-netmask` component: two queues
//! sharing one template store (flows of one client network land on both, as the steering
//! hash spreads them), stickiness per /24, n_control, expiry, invalidation, a plugin swap
//! that keeps the templates, and a faulty plugin that costs persistence, not forwarding.

mod common;

use common::plugins::plugin;
use ringvs::conn::{HashKey, Tick, TICKS_PER_SEC};
use ringvs::control::plugins::PluginManager;
use ringvs::control::registry::Registry;
use ringvs::dataplane::policy::{Instance, Role};
use ringvs::dataplane::stats::{DropReason, ShardReport};
use ringvs::dataplane::templates::TemplateStore;
use ringvs::dataplane::testkit::tcp;
use ringvs::dataplane::{
    Control, Packet, Pipeline, PluginEvent, Shard, ShardConfig, Verdict, HEADROOM,
};
use ringvs::plugin::FaultKind;
use ringvs::wire::tcp::flags::{ACK, RST, SYN};
use ringvs::wire::Ipv4Packet;
use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Instant;

const VIP: &str = "10.77.100.100:80";
/// Template timeout of the service, seconds.
const PERSIST_SECS: u32 = 10;

fn config(plugin_path: &str, persist_config: &str) -> String {
    format!(
        r#"
[plugins.pn]
path = "{plugin_path}"

[plugins.pn2]
path = "{plugin_path}"

[[service]]
name = "web"
vip = "{VIP}"
scheduler = "rr"
persistence = {{ plugin = "pn", timeout = "{PERSIST_SECS}s", config = {{ {persist_config} }} }}
timeouts = {{ syn_recv = "5s", close = "2s" }}
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"
[[service.server]]
addr = "10.77.1.3:8080"
"#
    )
}

struct Lab {
    shards: Vec<Shard>,
    controls: Vec<crossbeam_channel::Sender<Control>>,
    registry: Registry,
    plugins: PluginManager,
    events: crossbeam_channel::Receiver<PluginEvent>,
    templates: Arc<TemplateStore>,
    now: Tick,
}

fn lab_with(text: &str, queues: usize) -> Lab {
    lab_store(
        text,
        queues,
        TemplateStore::new(1 << 20, HashKey([3, 4])).unwrap(),
    )
}

fn lab_store(text: &str, queues: usize, templates: TemplateStore) -> Lab {
    let cfg = ringvs::config::from_str(text, "t.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let mut plugins = PluginManager::default();
    let loaded = plugins.load_config(&cfg).unwrap();
    let prepared = plugins.prepare(&registry, queues, &loaded).unwrap();
    plugins.commit(loaded);
    let snap = Arc::new(plugins.snapshot(&mut registry, prepared));
    let (etx, events) = crossbeam_channel::unbounded();
    let templates = Arc::new(templates);
    let start = Instant::now();
    let mut shards = Vec::new();
    let mut controls = Vec::new();
    for id in 0..queues {
        let (ctx, crx) = crossbeam_channel::unbounded();
        let mut s = Shard::new(
            ShardConfig {
                id,
                hash_key: HashKey([1, 2]),
                start,
                events: Some(etx.clone()),
                queues,
                templates: templates.clone(),
                ..ShardConfig::test(1 << 20)
            },
            snap.clone(),
            Some(crx),
        )
        .unwrap();
        s.set_now(1);
        shards.push(s);
        controls.push(ctx);
    }
    Lab {
        shards,
        controls,
        registry,
        plugins,
        events,
        templates,
        now: 1,
    }
}

fn lab(queues: usize) -> Lab {
    let path = plugin("persist-netmask").display().to_string();
    lab_with(&config(&path, "netmask = \"255.255.255.0\""), queues)
}

/// Sends a packet into queue `q`; returns the verdict and where it was sent.
fn send(s: &mut Shard, pkt: &[u8]) -> (Verdict, SocketAddrV4) {
    let mut buf = vec![0u8; HEADROOM + pkt.len()];
    buf[HEADROOM..].copy_from_slice(pkt);
    let mut p = Packet::new(&mut buf, HEADROOM, pkt.len()).unwrap();
    let v = s.process(&mut p);
    let d = p.data();
    let ip = Ipv4Packet::new_checked(d).unwrap();
    let port = u16::from_be_bytes([d[22], d[23]]);
    (v, SocketAddrV4::new(ip.dst_addr(), port))
}

impl Lab {
    /// A SYN from `client` into queue `q`: the realserver it went to.
    fn syn(&mut self, q: usize, client: &str) -> String {
        let (v, to) = send(
            &mut self.shards[q],
            &tcp(client.parse().unwrap(), VIP.parse().unwrap(), SYN, b""),
        );
        assert_eq!(v, Verdict::Forward, "SYN from {client} on queue {q}");
        to.to_string()
    }

    fn rst(&mut self, q: usize, client: &str) {
        send(
            &mut self.shards[q],
            &tcp(
                client.parse().unwrap(),
                VIP.parse().unwrap(),
                RST | ACK,
                b"",
            ),
        );
    }

    /// Moves every queue's clock forward.
    fn advance(&mut self, secs: u32) {
        self.now += secs * TICKS_PER_SEC;
        for s in &mut self.shards {
            s.set_now(self.now);
        }
    }

    fn persistent(&self) -> Vec<u32> {
        self.registry
            .service("web")
            .unwrap()
            .dests
            .iter()
            .map(|d| d.state.counters.persistent())
            .collect()
    }

    fn conns(&self) -> Vec<(u32, u32)> {
        self.registry
            .service("web")
            .unwrap()
            .dests
            .iter()
            .map(|d| (d.state.counters.active(), d.state.counters.inactive()))
            .collect()
    }
}

/// The position of a realserver in the lab's service (10.77.1.N:8080 is N − 1).
fn server_index(addr: &str) -> usize {
    ["10.77.1.1:8080", "10.77.1.2:8080", "10.77.1.3:8080"]
        .iter()
        .position(|a| *a == addr)
        .unwrap_or_else(|| panic!("not a lab server: {addr}"))
}

fn report(s: &mut Shard) -> ShardReport {
    s.publish();
    s.shared().report.lock().unwrap().clone()
}

#[test]
fn a_network_sticks_across_flows_and_queues_and_new_networks_are_spread() {
    let mut l = lab(2);
    // Three /24s, each first seen on queue 0: rr schedules them to the three servers.
    let first: Vec<String> = ["10.77.20.5:1000", "10.77.21.5:1000", "10.77.22.5:1000"]
        .iter()
        .map(|c| l.syn(0, c))
        .collect();
    let distinct: BTreeSet<&String> = first.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "new networks are scheduled, and spread: {first:?}"
    );
    assert_eq!(l.persistent(), [1, 1, 1], "one template each (PersistConn)");
    // Many more flows from those networks, other hosts and ports, on both queues.
    for i in 0..60u32 {
        for (n, net) in [20, 21, 22].iter().enumerate() {
            let c = format!("10.77.{net}.{}:{}", 1 + i % 250, 2000 + i);
            let q = (i as usize + n) % 2;
            assert_eq!(l.syn(q, &c), first[n], "flow {c} on queue {q}");
        }
    }
    assert_eq!(l.persistent(), [1, 1, 1], "still one template per network");
    // Templates count as PersistConn, never as connections: 61 flows each, all inactive.
    assert_eq!(l.conns(), [(0, 61), (0, 61), (0, 61)]);
    let stats = l.templates.stats();
    assert_eq!(stats.entries, 3);
    // The plugin was asked once per flow, over both queues.
    let calls: u64 = (0..2)
        .map(|q| {
            let r = report(&mut l.shards[q]);
            r.plugins
                .iter()
                .find(|(n, _)| &**n == "pn")
                .map_or(0, |(_, c)| {
                    c.calls[ringvs::dataplane::policy::Func::Affinity as usize]
                })
        })
        .sum();
    assert_eq!(calls, 3 + 180);
    assert!(
        report(&mut l.shards[0]).link_bytes > 0,
        "the link column exists on a queue with a persistent service"
    );
}

#[test]
fn templates_outlive_their_timeout_while_they_control_connections_then_expire() {
    let mut l = lab(2);
    // Network A; an established flow holds its template.
    let a = "10.77.20.5:1000";
    let sa = l.syn(0, a);
    let ia = server_index(&sa);
    send(
        &mut l.shards[0],
        &tcp(sa.parse().unwrap(), a.parse().unwrap(), SYN | ACK, b""),
    );
    send(
        &mut l.shards[0],
        &tcp(a.parse().unwrap(), VIP.parse().unwrap(), ACK, b""),
    );
    assert_eq!(l.conns()[ia], (1, 0), "established");
    // More networks move rr's cursor on (four more picks: A's server is not next).
    for c in [
        "10.77.21.5:1",
        "10.77.22.5:1",
        "10.77.23.5:1",
        "10.77.24.5:1",
    ] {
        l.syn(0, c);
    }
    // Long past the template timeout: A's template lives on, since it controls a connection.
    l.advance(3 * PERSIST_SECS);
    let mut only_a = [0, 0, 0];
    only_a[ia] = 1;
    assert_eq!(l.persistent(), only_a, "only A's template is left");
    assert_eq!(
        l.syn(1, "10.77.20.77:5000"),
        sa,
        "A still sticks, on the other queue too"
    );
    // Every flow of A ends: the established one is reset, the new SYN's embryo expires.
    l.rst(0, a);
    l.advance(6);
    assert_eq!(l.conns()[ia], (0, 0));
    assert_eq!(
        l.persistent(),
        only_a,
        "refreshed by the last flow: not expired yet"
    );
    l.advance(PERSIST_SECS);
    assert_eq!(
        l.persistent(),
        [0, 0, 0],
        "expired with no flow for its timeout"
    );
    assert_eq!(l.templates.stats().entries, 0);
    // A is rescheduled: rr's next pick on queue 0 is another server.
    let again = l.syn(0, "10.77.20.5:1001");
    assert_ne!(again, sa, "rescheduled, not sent by a leftover template");
    assert_eq!(
        l.persistent()[server_index(&again)],
        1,
        "and a new template made"
    );
}

#[test]
fn removed_servers_invalidate_their_templates_and_a_swap_keeps_them() {
    let mut l = lab(1);
    let sa = l.syn(0, "10.77.20.5:1000");
    let sb = l.syn(0, "10.77.21.5:1000");
    assert_ne!(sa, sb);
    // Reload with the same plugin under another name and another config form (/24 as a
    // prefix length): new instances in the queue, same keys, templates untouched.
    let path = plugin("persist-netmask").display().to_string();
    let text = config(&path, "netmask = 24").replace("plugin = \"pn\"", "plugin = \"pn2\"");
    let cfg = ringvs::config::from_str(&text, "t.toml").unwrap();
    let loaded = l.plugins.load_config(&cfg).unwrap();
    let mut trial = l.registry.clone();
    trial.apply(&cfg.services).unwrap();
    let prepared = l.plugins.prepare(&trial, 1, &loaded).unwrap();
    l.plugins.commit(loaded);
    l.registry = trial;
    let snap = l.plugins.snapshot(&mut l.registry, prepared);
    l.shards[0].apply_snapshot(Arc::new(snap));
    assert_eq!(
        l.syn(0, "10.77.20.9:3000"),
        sa,
        "templates survive the swap"
    );
    let r = report(&mut l.shards[0]);
    assert!(
        r.plugins
            .iter()
            .any(|(n, c)| &**n == "pn2" && c.calls.iter().sum::<u64>() > 0),
        "the new instance answers: {:?}",
        r.plugins
    );
    // A's server is removed: its template is invalid, A is scheduled afresh and sticks.
    l.registry
        .remove_server("web", sa.parse().unwrap())
        .unwrap();
    let prepared = l
        .plugins
        .prepare(&l.registry, 1, &Default::default())
        .unwrap();
    let snap = l.plugins.snapshot(&mut l.registry, prepared);
    l.shards[0].apply_snapshot(Arc::new(snap));
    let moved = l.syn(0, "10.77.20.10:3000");
    assert_ne!(moved, sa);
    assert_eq!(l.syn(0, "10.77.20.11:3000"), moved, "and sticks there");
    assert_eq!(l.syn(0, "10.77.21.11:3000"), sb, "B is untouched");
}

#[test]
fn a_down_or_quiesced_server_with_expire_quiescent_template() {
    let mut l = lab(1);
    let sa = l.syn(0, "10.77.20.5:1000");
    let da = l.registry.service("web").unwrap().dests[server_index(&sa)]
        .state
        .clone();
    // Quiesced (weight 0): IPVS keeps sending the network there by default …
    da.set_weight(0);
    assert_eq!(l.syn(0, "10.77.20.6:1000"), sa);
    // … but not with expire_quiescent_template.
    l.templates.set_expire_quiescent(true);
    let moved = l.syn(0, "10.77.20.7:1000");
    assert_ne!(moved, sa);
    assert_eq!(l.syn(0, "10.77.20.8:1000"), moved);
    l.templates.set_expire_quiescent(false);
    da.set_weight(1);
    // Network B; a health check marks its server down: B moves.
    let sb = l.syn(0, "10.77.21.5:1000");
    let db = l.registry.service("web").unwrap().dests[server_index(&sb)]
        .state
        .clone();
    db.health_down(false);
    assert_eq!(db.flags(), ringvs::dataplane::service::DEST_F_DOWN);
    let moved = l.syn(0, "10.77.21.6:1000");
    assert_ne!(moved, sb);
    assert_eq!(l.syn(0, "10.77.21.7:1000"), moved);
}

#[test]
fn a_full_template_store_refuses_new_networks_cleanly() {
    let path = plugin("persist-netmask").display().to_string();
    // One template per client address, in a tiny store.
    let tiny = TemplateStore::new(64 << 10, HashKey([5, 5])).unwrap();
    let cap = tiny.capacity();
    // Every SYN must reach the template store: without `syn_proxy = "off"` the SYN proxy
    // would answer them itself once a thousand are half-open (that is the flood defense).
    let cfg = config(&path, "netmask = \"255.255.255.255\"").replace(
        "scheduler = \"rr\"",
        "scheduler = \"rr\"\nsyn_proxy = \"off\"",
    );
    let mut l = lab_store(&cfg, 1, tiny);
    let tiny = l.templates.clone();
    let s = &mut l.shards[0];
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    let mut refused = 0;
    for i in 0..(2 * cap as u32) {
        let c = SocketAddrV4::new((0x0a4d_4000 + i).into(), 1000);
        let (v, _) = send(s, &tcp(c, vip, SYN, b""));
        if v == Verdict::Drop {
            refused += 1;
        }
    }
    let r = report(s);
    assert!(refused > 0);
    assert_eq!(r.counters.drops[DropReason::TemplateFull as usize], refused);
    assert_eq!(tiny.refused(), refused);
    assert!(tiny.stats().entries as usize <= cap);
    assert_eq!(
        r.entries + refused,
        2 * cap as u64,
        "refused flows leave no entry"
    );
}

fn hostile_lab() -> Lab {
    let path = plugin("tc-persist").display().to_string();
    lab_with(&config(&path, ""), 1)
}

#[test]
fn a_faulty_persistence_plugin_costs_persistence_not_forwarding() {
    for (port, kind) in [(666u16, FaultKind::Trap), (667, FaultKind::Deadline)] {
        let mut l = hostile_lab();
        let sa = l.syn(0, "10.77.20.5:1000");
        assert_eq!(l.syn(0, "10.77.20.6:1000"), sa, "sticky while healthy");
        // The faulting flow is forwarded, scheduled normally (rr's next server).
        let t = Instant::now();
        assert_ne!(l.syn(0, &format!("10.77.20.7:{port}")), sa);
        assert!(t.elapsed().as_millis() < 200, "no stall: {:?}", t.elapsed());
        let r = report(&mut l.shards[0]);
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "pn").unwrap();
        assert_eq!(c.faults[kind as usize], 1, "{kind:?} counted: {c:?}");
        assert_eq!(c.fallbacks, 1);
        let need = l.events.try_iter().find_map(|e| match e {
            PluginEvent::Need { at, fault, .. } if at.role == Role::Persistence => Some(fault),
            _ => None,
        });
        assert_eq!(need.flatten().map(|f| f.kind), Some(kind));
        // Until a fresh instance comes, flows are not persistent (rr moves on) …
        let unpinned = l.syn(0, "10.77.20.8:1000");
        assert_ne!(unpinned, sa);
        // … and the template is still there for later.
        let mut only_a = [0, 0, 0];
        only_a[server_index(&sa)] = 1;
        assert_eq!(l.persistent(), only_a);
        // The control plane's fresh instance (its backoff skipped here).
        let e = l.registry.service("web").unwrap().clone();
        let p = l.plugins.loaded["pn"].clone();
        let inst = ringvs::plugin::PersistenceInstance::new(&p, &[]).unwrap();
        l.controls[0]
            .send(Control::Fresh {
                svc: e.id,
                role: Role::Persistence,
                instance: Instance::Persistence(inst),
            })
            .unwrap();
        l.shards[0].poll(Instant::now());
        assert_eq!(l.syn(0, "10.77.20.9:1000"), sa, "sticky again");
        let r = report(&mut l.shards[0]);
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "pn").unwrap();
        assert_eq!(
            c.fallbacks, 2,
            "the flow without an instance was a fallback too"
        );
    }
}

#[test]
fn a_persistence_config_the_plugin_refuses_is_an_error_naming_the_key() {
    let path = plugin("persist-netmask").display().to_string();
    let cfg =
        ringvs::config::from_str(&config(&path, "netmask = \"255.0.255.0\""), "t.toml").unwrap();
    let e = PluginManager::default().load_config(&cfg).err().unwrap();
    assert!(
        e.contains("t.toml")
            && e.contains("service[0].persistence.config")
            && e.contains("not contiguous"),
        "{e}"
    );
}

/// An IPv6 service (NAT66) with `netmask6 = 64`: the clients of one /64 stick to one
/// realserver, across flows and queues; other /64s are spread (rr), each with its template.
#[test]
fn an_ipv6_prefix_sticks_with_netmask6() {
    use ringvs::dataplane::testkit::tcp6;
    use std::net::SocketAddrV6;
    let path = plugin("persist-netmask").display().to_string();
    let text = config(&path, "netmask6 = 64")
        .replace("vip = \"10.77.100.100:80\"", "vip = \"[fd77:100::100]:80\"")
        .replace("\"10.77.1.1:8080\"", "\"[fd77:1::1]:8080\"")
        .replace("\"10.77.1.2:8080\"", "\"[fd77:1::2]:8080\"")
        .replace("\"10.77.1.3:8080\"", "\"[fd77:1::3]:8080\"");
    let mut l = lab_with(&text, 2);
    let vip: SocketAddrV6 = "[fd77:100::100]:80".parse().unwrap();
    let syn6 = |l: &mut Lab, q: usize, client: &str| -> String {
        let pkt = tcp6(client.parse().unwrap(), vip, SYN, b"");
        let mut buf = vec![0u8; HEADROOM + pkt.len()];
        buf[HEADROOM..].copy_from_slice(&pkt);
        let mut p = Packet::new(&mut buf, HEADROOM, pkt.len()).unwrap();
        assert_eq!(
            l.shards[q].process(&mut p),
            Verdict::Forward,
            "SYN from {client}"
        );
        let d = p.data();
        let ip = ringvs::wire::Ipv6Packet::new_checked(d).unwrap();
        SocketAddrV6::new(ip.dst_addr(), u16::from_be_bytes([d[42], d[43]]), 0, 0).to_string()
    };
    // Three /64s, several clients (hosts and ports) in each, on both queues.
    let mut by_net = std::collections::BTreeMap::new();
    for net in 1..=3u16 {
        for (i, host) in ["0:0:0:1", "0:0:0:2", "ffff:ffff:ffff:9"]
            .iter()
            .enumerate()
        {
            let client = format!("[fd77:0:0:{net:x}:{host}]:{}", 40000 + i);
            let rs = syn6(&mut l, i % 2, &client);
            by_net.entry(net).or_insert_with(BTreeSet::new).insert(rs);
        }
    }
    for (net, servers) in &by_net {
        assert_eq!(servers.len(), 1, "/64 number {net} went to {servers:?}");
    }
    let used: BTreeSet<_> = by_net.values().flatten().collect();
    assert_eq!(used.len(), 3, "rr spreads the three /64s: {by_net:?}");
    // One template per /64, each controlling its three connections.
    assert_eq!(l.persistent(), vec![1, 1, 1]);
    assert_eq!(
        report(&mut l.shards[0]).counters.persist_hits
            + report(&mut l.shards[1]).counters.persist_hits,
        6
    );
}
