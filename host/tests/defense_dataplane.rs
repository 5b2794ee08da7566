//! Defense plugins inside a queue: admission in order, faults that fall back to "no
//! defense action", and tick actions checked before they are applied.

mod common;

use common::plugins::plugin;
use ringvs::conn::{HashKey, State};
use ringvs::control::plugins::PluginManager;
use ringvs::control::registry::Registry;
use ringvs::dataplane::policy::Role;
use ringvs::dataplane::stats::{DropReason, ShardReport};
use ringvs::dataplane::testkit::tcp;
use ringvs::dataplane::{Packet, Pipeline, PluginEvent, Shard, ShardConfig, Verdict, HEADROOM};
use ringvs::wire::tcp::flags::{ACK, SYN};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(defense_config: &str) -> String {
    format!(
        r#"
[plugins.tc]
path = "{}"
config = {{ {defense_config} }}

[[service]]
name = "web"
vip = "10.77.100.100:80"
scheduler = "rr"
defense = ["tc"]
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"
"#,
        plugin("tc-defense").display()
    )
}

struct Lab {
    shard: Shard,
    events: crossbeam_channel::Receiver<PluginEvent>,
    t0: Instant,
    secs: u64,
    _plugins: PluginManager,
}

fn lab(defense_config: &str) -> Lab {
    let cfg = ringvs::config::from_str(&config(defense_config), "t.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let mut plugins = PluginManager::default();
    let loaded = plugins.load_config(&cfg).unwrap();
    let prepared = plugins.prepare(&registry, 1, &loaded).unwrap();
    plugins.commit(loaded);
    let snap = Arc::new(plugins.snapshot(&mut registry, prepared));
    let (etx, events) = crossbeam_channel::unbounded();
    let t0 = Instant::now();
    let shard = Shard::new(
        ShardConfig {
            id: 0,
            memory_limit: 1 << 20,
            hash_key: HashKey([5, 6]),
            start: t0,
            expire_nodest_conn: false,
            events: Some(etx),
            sources: Default::default(),
            queues: 1,
            templates: Default::default(),
            cookies: Default::default(),
        },
        snap,
        None,
    )
    .unwrap();
    Lab {
        shard,
        events,
        t0,
        secs: 0,
        _plugins: plugins,
    }
}

impl Lab {
    fn send(&mut self, pkt: &[u8]) -> Verdict {
        let mut buf = vec![0u8; HEADROOM + pkt.len()];
        buf[HEADROOM..].copy_from_slice(pkt);
        let mut p = Packet::new(&mut buf, HEADROOM, pkt.len()).unwrap();
        self.shard.process(&mut p)
    }

    fn syn(&mut self, addr: &str, port: u16) -> Verdict {
        let c = SocketAddrV4::new(addr.parse().unwrap(), port);
        self.send(&tcp(c, "10.77.100.100:80".parse().unwrap(), SYN, b""))
    }

    /// One more second: the defenses tick.
    fn second(&mut self) {
        self.secs += 1;
        self.shard.poll(self.t0 + Duration::from_secs(self.secs));
    }

    fn report(&mut self) -> ShardReport {
        self.shard.publish();
        self.shard.shared().report.lock().unwrap().clone()
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.shard.counters().drops[r as usize]
    }
}

#[test]
fn admission_drops_what_the_defense_refuses() {
    let mut l = lab("");
    assert_eq!(l.syn("10.77.0.2", 1000), Verdict::Forward);
    assert_eq!(l.syn("10.77.0.2", 666), Verdict::Drop);
    assert_eq!(l.drops(DropReason::Defense), 1);
    assert_eq!(l.shard.table().len(), 1, "the refused flow left no entry");
}

#[test]
fn a_faulting_defense_takes_no_action() {
    let mut l = lab("");
    assert_eq!(
        l.syn("10.77.0.2", 667),
        Verdict::Forward,
        "the trap in admit does not stop the flow"
    );
    let r = l.report();
    let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!((c.faults[2], c.fallbacks), (1, 1), "{c:?}");
    let evs: Vec<PluginEvent> = l.events.try_iter().collect();
    assert!(
        evs.iter()
            .any(|e| matches!(e, PluginEvent::Need { at, fault: Some(_), .. } if at.role == Role::Defense(0))),
        "{evs:?}"
    );
    // Poisoned: later flows are not even asked about (port 666 is let through now).
    assert_eq!(l.syn("10.77.0.2", 666), Verdict::Forward);
    l.second();
    let st = l.report().defenses;
    assert!(st.iter().any(|d| !d.healthy), "{st:?}");
}

#[test]
fn a_faulting_tick_takes_no_action() {
    let mut l = lab("trap_tick = true, actions = \"rate:1\"");
    l.second();
    assert_eq!(
        l.syn("10.77.0.2", 1000),
        Verdict::Forward,
        "no drop rate was set"
    );
    let r = l.report();
    let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!(c.faults[2], 1);
}

#[test]
fn tick_actions_are_checked_then_applied() {
    // level:3 (no such level), embryonic:2 (only one exists), drop:99999 (not live) are refused;
    // rate:2, embryonic:1 and the tarpit block apply.
    let mut l = lab("actions = \"level:3,embryonic:2,drop:99999,rate:2,embryonic:1,block:10.77.9.0/24:60:tarpit\"");
    assert_eq!(l.syn("10.77.0.2", 2000), Verdict::Forward);
    assert_eq!(l.shard.table().by_state()[State::SynRecv as usize], 1);
    l.second();
    assert_eq!(
        l.shard.table().len(),
        0,
        "embryonic:1 dropped the SYN_RECV entry"
    );
    let r = l.report();
    let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!(c.refused.iter().sum::<u64>(), 3, "{c:?}");
    assert_eq!(c.actions.iter().sum::<u64>(), 3, "{c:?}");
    // Drop rate 2: every second new flow is refused.
    let verdicts: Vec<Verdict> = (0..4).map(|i| l.syn("10.77.0.3", 3000 + i)).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Forward,
            Verdict::Drop,
            Verdict::Forward,
            Verdict::Drop
        ]
    );
    // The tarpitted /24: new flows refused silently, others unaffected.
    assert_eq!(l.syn("10.77.9.7", 4000), Verdict::Drop);
    assert_eq!(l.drops(DropReason::Tarpit), 1);
    let evs: Vec<PluginEvent> = l.events.try_iter().collect();
    assert!(
        evs.iter().any(|e| matches!(e, PluginEvent::Block { .. })),
        "the control plane is told: {evs:?}"
    );
    assert!(l
        .report()
        .defenses
        .iter()
        .any(|d| d.active && d.drop_rate == 2));
}

#[test]
fn a_drop_block_stops_established_flows_too() {
    let mut l = lab("actions = \"block:10.77.8.8/32:60:drop\"");
    let c = SocketAddrV4::new("10.77.8.8".parse().unwrap(), 5000);
    assert_eq!(l.syn("10.77.8.8", 5000), Verdict::Forward);
    l.second();
    assert_eq!(
        l.send(&tcp(c, "10.77.100.100:80".parse().unwrap(), ACK, b"")),
        Verdict::Drop
    );
    assert_eq!(l.drops(DropReason::Blocked), 1);
    assert_eq!(l.syn("10.77.8.9", 5001), Verdict::Forward, "only the /32");
}
