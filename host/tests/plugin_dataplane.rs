//! Plugins inside a queue: faults are contained (the flow is still forwarded, by the
//! fallback), counted, and the plugin is replaced; swaps hand over state and keep flows.

mod common;

use common::plugins::plugin;
use ringvs::conn::HashKey;
use ringvs::control::plugins::PluginManager;
use ringvs::control::registry::Registry;
use ringvs::dataplane::policy::{Instance, Role};
use ringvs::dataplane::testkit::tcp;
use ringvs::dataplane::{
    Control, Packet, Pipeline, PluginEvent, Shard, ShardConfig, Verdict, HEADROOM,
};
use ringvs::plugin::FaultKind;
use ringvs::wire::tcp::flags::{ACK, SYN};
use ringvs::wire::Ipv4Packet;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[plugins.hostile]
path = "PATH"

[plugins.rr-a]
path = "RR"

[plugins.rr-b]
path = "RR"

[[service]]
name = "web"
vip = "10.77.100.100:80"
scheduler = "hostile"
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"
[[service.server]]
addr = "10.77.1.3:8080"
"#;

struct Lab {
    shard: Shard,
    registry: Registry,
    plugins: PluginManager,
    events: crossbeam_channel::Receiver<PluginEvent>,
    control: crossbeam_channel::Sender<Control>,
}

fn lab(hostile: &str) -> Lab {
    let text = CONFIG
        .replace("PATH", &plugin(hostile).display().to_string())
        .replace("RR", &plugin("sched-rr").display().to_string());
    let cfg = ringvs::config::from_str(&text, "t.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let mut plugins = PluginManager::default();
    let loaded = plugins.load_config(&cfg).unwrap();
    let prepared = plugins.prepare(&registry, 1, &loaded).unwrap();
    plugins.commit(loaded);
    let snap = Arc::new(plugins.snapshot(&mut registry, prepared));
    let (etx, events) = crossbeam_channel::unbounded();
    let (control, crx) = crossbeam_channel::unbounded();
    let shard = Shard::new(
        ShardConfig {
            hash_key: HashKey([1, 2]),
            events: Some(etx),
            ..ShardConfig::test(1 << 20)
        },
        snap,
        Some(crx),
    )
    .unwrap();
    Lab {
        shard,
        registry,
        plugins,
        events,
        control,
    }
}

/// Sends a packet; returns the verdict and the destination it was rewritten to.
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

fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new("10.77.0.2".parse().unwrap(), port)
}

const VIP: &str = "10.77.100.100:80";

fn report(s: &mut Shard) -> ringvs::dataplane::stats::ShardReport {
    s.publish();
    s.shared().report.lock().unwrap().clone()
}

fn contained(hostile: &str, kind: FaultKind) {
    let mut l = lab(hostile);
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    // Healthy calls first: the hostile plugin round-robins.
    assert_eq!(
        send(&mut l.shard, &tcp(client(1000), vip, SYN, b""))
            .1
            .to_string(),
        "10.77.1.1:8080"
    );
    assert_eq!(
        send(&mut l.shard, &tcp(client(1001), vip, SYN, b""))
            .1
            .to_string(),
        "10.77.1.2:8080"
    );
    // The trigger: the flow is still forwarded, by the fallback (built-in wlc: server 3 is
    // the least loaded).
    let t = Instant::now();
    let (v, to) = send(&mut l.shard, &tcp(client(666), vip, SYN, b""));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "the packet path stalled {:?}",
        t.elapsed()
    );
    assert_eq!(v, Verdict::Forward);
    assert_eq!(to.to_string(), "10.77.1.3:8080");
    let r = report(&mut l.shard);
    let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "hostile").unwrap();
    assert_eq!(c.faults[kind as usize], 1, "{kind:?} counted: {c:?}");
    assert_eq!(c.fallbacks, 1);
    // The queue retired the poisoned instance and asked for a new one.
    let evs: Vec<PluginEvent> = l.events.try_iter().collect();
    assert!(
        evs.iter().any(|e| matches!(e, PluginEvent::Retire(_))),
        "{evs:?}"
    );
    let need = evs.into_iter().find_map(|e| match e {
        PluginEvent::Need { at, fault, .. } if at.role == Role::Scheduler => Some(fault),
        _ => None,
    });
    assert_eq!(need.flatten().map(|f| f.kind), Some(kind));
    // Until it comes, new flows go to the fallback; existing ones keep their server.
    assert_eq!(
        send(&mut l.shard, &tcp(client(1000), vip, ACK, b""))
            .1
            .to_string(),
        "10.77.1.1:8080"
    );
    let (v, _) = send(&mut l.shard, &tcp(client(1002), vip, SYN, b""));
    assert_eq!(v, Verdict::Forward);
    // The control plane delivers a fresh instance (after the backoff, here at once).
    let pm = l.plugins;
    let e = l.registry.service("web").unwrap().clone();
    let p = pm.loaded["hostile"].clone();
    let mut inst = ringvs::plugin::SchedulerInstance::new(&p).unwrap();
    inst.servers_changed(&ringvs::control::plugins::server_infos_of(&e))
        .unwrap();
    l.control
        .send(Control::Fresh {
            svc: e.id,
            role: Role::Scheduler,
            instance: Instance::Scheduler(inst),
        })
        .unwrap();
    l.shard.poll(Instant::now());
    let before = report(&mut l.shard).plugins[0].1.calls[0];
    send(&mut l.shard, &tcp(client(1003), vip, SYN, b""));
    let after = report(&mut l.shard).plugins[0].1.calls[0];
    assert_eq!(after, before + 1, "the new instance schedules again");
}

#[test]
fn a_deadline_is_contained() {
    contained("tc-loop", FaultKind::Deadline);
}

#[test]
fn a_memory_bomb_is_contained() {
    contained("tc-membomb", FaultKind::Memory);
}

#[test]
fn a_trap_is_contained() {
    contained("tc-trap", FaultKind::Trap);
}

#[test]
fn a_bad_return_is_contained() {
    contained("tc-bad-return", FaultKind::BadReturn);
}

fn swap(l: &mut Lab, to: &str) {
    let mut trial = l.registry.clone();
    trial.set_scheduler("web", to).unwrap();
    let prepared = l.plugins.prepare(&trial, 1, &Default::default()).unwrap();
    l.registry = trial;
    let snap = l.plugins.snapshot(&mut l.registry, prepared);
    l.shard.apply_snapshot(Arc::new(snap));
}

#[test]
fn a_swap_keeps_flows_and_hands_over_state() {
    let mut l = lab("tc-trap");
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    let first = send(&mut l.shard, &tcp(client(2000), vip, SYN, b"")).1;
    // Swap to rr: prepared off the data path, taken by the queue with its snapshot.
    swap(&mut l, "rr-a");
    // The existing flow keeps its server.
    assert_eq!(
        send(&mut l.shard, &tcp(client(2000), vip, ACK, b"")).1,
        first
    );
    // New flows go through rr; tc-trap exports no state, so rr starts at its first server.
    assert_eq!(
        send(&mut l.shard, &tcp(client(2001), vip, SYN, b""))
            .1
            .to_string(),
        "10.77.1.1:8080"
    );
    assert_eq!(
        send(&mut l.shard, &tcp(client(2002), vip, SYN, b""))
            .1
            .to_string(),
        "10.77.1.2:8080"
    );
    // Another rr (a new version, say) inherits the cursor and goes on with server 3.
    swap(&mut l, "rr-b");
    assert_eq!(
        send(&mut l.shard, &tcp(client(2003), vip, SYN, b""))
            .1
            .to_string(),
        "10.77.1.3:8080"
    );
    assert_eq!(
        send(&mut l.shard, &tcp(client(2000), vip, ACK, b"")).1,
        first
    );
    // Back to a built-in: plugin instances leave the queue, flows stay.
    swap(&mut l, "wlc");
    assert_eq!(
        send(&mut l.shard, &tcp(client(2000), vip, ACK, b"")).1,
        first
    );
    let retired = l
        .events
        .try_iter()
        .filter(|e| matches!(e, PluginEvent::Retire(_)))
        .count();
    assert!(
        retired >= 2,
        "old instances are handed back for dropping off the data path ({retired})"
    );
}

#[test]
fn a_new_build_under_the_same_name_reaches_the_queue() {
    let mut l = lab("tc-trap");
    let vip: SocketAddrV4 = VIP.parse().unwrap();
    swap(&mut l, "rr-a");
    send(&mut l.shard, &tcp(client(3000), vip, SYN, b""));
    let state_calls = |s: &mut Shard| {
        report(s)
            .plugins
            .iter()
            .find(|(n, _)| &**n == "rr-a")
            .map_or(0, |(_, c)| {
                c.calls[ringvs::dataplane::policy::Func::State as usize]
            })
    };
    let before = state_calls(&mut l.shard);
    // "rr-a" now names another file (a rebuilt plugin): the service's version does not
    // change, only the plugin behind the name.
    let text = CONFIG
        .replace("PATH", &plugin("tc-trap").display().to_string())
        .replace("RR", &plugin("sched-wlc").display().to_string())
        .replace("scheduler = \"hostile\"", "scheduler = \"rr-a\"");
    let cfg = ringvs::config::from_str(&text, "t.toml").unwrap();
    let loaded = l.plugins.load_config(&cfg).unwrap();
    assert!(
        !Arc::ptr_eq(&loaded["rr-a"], &l.plugins.loaded["rr-a"]),
        "a new plugin behind the same name"
    );
    let prepared = l.plugins.prepare(&l.registry, 1, &loaded).unwrap();
    l.plugins.commit(loaded);
    let snap = l.plugins.snapshot(&mut l.registry, prepared);
    l.shard.apply_snapshot(Arc::new(snap));
    assert!(
        state_calls(&mut l.shard) > before,
        "the queue switched instances (the old one exported its state)"
    );
}
