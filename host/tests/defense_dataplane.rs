//! Defense plugins inside a queue: admission in order, faults that fall back to "no
//! defense action", and tick actions checked before they are applied.

mod common;

use common::plugins::plugin;
use ringvs::conn::{HashKey, State};
use ringvs::control::plugins::PluginManager;
use ringvs::control::registry::Registry;
use ringvs::dataplane::policy::{ActionKind, Role};
use ringvs::dataplane::stats::{DropReason, ShardReport};
use ringvs::dataplane::testkit::{tcp, tcp6};
use ringvs::dataplane::{
    Control, Packet, Pipeline, PluginEvent, Shard, ShardConfig, Verdict, HEADROOM,
};
use ringvs::wire::tcp::flags::{ACK, SYN};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
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

[[service]]
name = "other"
vip = "10.77.100.100:81"
scheduler = "rr"
[[service.server]]
addr = "10.77.1.1:8081"
"#,
        plugin("tc-defense").display()
    )
}

/// [`config`] with the catalogue's defense `plugin` (configured with `defense_config`) in
/// place of tc-defense, under the same name.
fn config_of(plugin_name: &str, defense_config: &str) -> String {
    let text = config("").replacen(
        &format!(
            "path = \"{}\"\nconfig = {{  }}",
            plugin("tc-defense").display()
        ),
        &format!(
            "path = \"{}\"\nconfig = {{ {defense_config} }}",
            plugin(plugin_name).display()
        ),
        1,
    );
    assert!(
        !text.contains(&plugin("tc-defense").display().to_string()),
        "{text}"
    );
    text
}

struct Lab {
    shard: Shard,
    events: crossbeam_channel::Receiver<PluginEvent>,
    /// What the daemon sends the queue (its block list, among others).
    control: crossbeam_channel::Sender<Control>,
    t0: Instant,
    secs: u64,
    _plugins: PluginManager,
}

/// Where the defenses' ticks run: at the second's boundary on the queue's thread, or on the
/// queue's tick thread (the daemon's way).
const MODES: [bool; 2] = [false, true];

fn lab(defense_config: &str) -> Lab {
    lab_from(&config(defense_config))
}

fn lab_from(text: &str) -> Lab {
    lab_in(text, false)
}

fn lab_in(text: &str, tick_thread: bool) -> Lab {
    let cfg = ringvs::config::from_str(text, "t.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let mut plugins = PluginManager::default();
    let loaded = plugins.load_config(&cfg).unwrap();
    let prepared = plugins.prepare(&registry, 1, &loaded).unwrap();
    plugins.commit(loaded);
    let snap = Arc::new(plugins.snapshot(&mut registry, prepared));
    let (etx, events) = crossbeam_channel::unbounded();
    let (control, crx) = crossbeam_channel::unbounded();
    let t0 = Instant::now();
    let shard = Shard::new(
        ShardConfig {
            hash_key: HashKey([5, 6]),
            start: t0,
            events: Some(etx),
            tick_thread,
            ..ShardConfig::test(1 << 20)
        },
        snap,
        Some(crx),
    )
    .unwrap();
    Lab {
        shard,
        events,
        control,
        t0,
        secs: 0,
        _plugins: plugins,
    }
}

impl Lab {
    fn send(&mut self, pkt: &[u8]) -> Verdict {
        // Room after the packet, as the backends' buffers have: a cookie SYN-ACK carries
        // more options than the SYN it answers.
        let mut buf = vec![0u8; HEADROOM + pkt.len() + 64];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let mut p = Packet::new(&mut buf, HEADROOM, pkt.len()).unwrap();
        self.shard.process(&mut p)
    }

    fn syn(&mut self, addr: &str, port: u16) -> Verdict {
        let c = SocketAddrV4::new(addr.parse().unwrap(), port);
        self.send(&tcp(c, "10.77.100.100:80".parse().unwrap(), SYN, b""))
    }

    /// One more second: the defenses tick, and what they ask is applied (on the tick
    /// thread: once the ticks are back, polled for within 20 s).
    fn second(&mut self) {
        self.secs += 1;
        let t = self.t0 + Duration::from_secs(self.secs);
        self.shard.poll(t);
        self.settle(t);
    }

    /// Polls at `t` until no tick is out.
    fn settle(&mut self, t: Instant) {
        let until = Instant::now() + Duration::from_secs(20);
        while self.shard.ticks_in_flight() > 0 {
            assert!(Instant::now() < until, "a tick never came back");
            std::thread::sleep(Duration::from_micros(200));
            self.shard.poll(t);
        }
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
    for threaded in MODES {
        let mut l = lab_in(&config("trap_tick = true, actions = \"rate:1\""), threaded);
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
}

#[test]
fn tick_actions_are_checked_then_applied() {
    for threaded in MODES {
        // level:3 (no such level), embryonic:2 (only one exists), drop:99999 (not live) are refused;
        // rate:2, embryonic:1 and the tarpit block apply.
        let mut l = lab_in(&config("actions = \"level:3,embryonic:2,drop:99999,rate:2,embryonic:1,block:10.77.9.0/24:60:tarpit\""), threaded);
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
}

#[test]
fn a_defense_switches_the_syn_proxy_where_the_service_leaves_it_to_auto() {
    let mut l = lab("actions = \"proxy:on\"");
    assert_eq!(l.syn("10.77.0.2", 1000), Verdict::Forward);
    assert_eq!(
        l.shard.table().len(),
        1,
        "no pressure: the SYN made an entry"
    );
    l.second();
    // Held on by the defense: the next SYN gets a cookie SYN-ACK and leaves no state.
    assert_eq!(l.syn("10.77.0.3", 1001), Verdict::Forward);
    assert_eq!(l.shard.table().len(), 1, "the proxy answered the SYN");
    let r = l.report();
    assert!(r.proxying[0], "{:?}", r.proxying);
    assert!(
        !r.proxying.get(1).copied().unwrap_or(false),
        "only its service"
    );
    let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!(c.actions[ActionKind::SynProxy as usize], 1, "{c:?}");
    assert!(
        r.defenses.iter().any(|d| d.active),
        "holding the proxy is activity"
    );

    // The operator's "off" is final: the request is refused, SYNs make entries.
    let text = config("actions = \"proxy:on\"").replacen(
        "defense = [\"tc\"]",
        "defense = [\"tc\"]\nsyn_proxy = \"off\"",
        1,
    );
    let mut l = lab_from(&text);
    l.second();
    assert_eq!(l.syn("10.77.0.3", 1001), Verdict::Forward);
    assert_eq!(l.shard.table().len(), 1, "no proxy: an entry");
    let r = l.report();
    let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!(c.refused[ActionKind::SynProxy as usize], 1, "{c:?}");
    assert!(!r.proxying[0]);
}

#[test]
fn secure_tcp_holds_the_syn_proxy_at_its_dos_level() {
    for threaded in MODES {
        // The catalogue's secure-tcp in mode 3 (always at level 1) with syn_proxy = true.
        let text = config_of("defense-secure-tcp", "mode = 3, syn_proxy = true");
        assert!(text.contains("syn_proxy = true"), "{text}");
        assert!(text.contains("syn_proxy = true"), "{text}");
        let mut l = lab_in(&text, threaded);
        assert_eq!(l.syn("10.77.0.2", 1000), Verdict::Forward);
        assert_eq!(l.shard.table().len(), 1);
        l.second();
        assert_eq!(l.syn("10.77.0.3", 1001), Verdict::Forward);
        assert_eq!(l.shard.table().len(), 1, "the proxy answered the SYN");
        let r = l.report();
        assert!(r.proxying[0]);
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        assert_eq!(c.actions[ActionKind::SetLevel as usize], 1, "{c:?}");
        assert_eq!(c.actions[ActionKind::SynProxy as usize], 1, "{c:?}");
    }
}

#[test]
fn a_drop_block_stops_established_flows_too() {
    for threaded in MODES {
        let mut l = lab_in(
            &config("actions = \"block:10.77.8.8/32:60:drop\""),
            threaded,
        );
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
}

/// A defense's block applies on its queue at once, without copying the director's list,
/// which the daemon shares among the queues (a copy on every block, on every queue, once a
/// second with a defense that blocks every tick, was what a queue used to pay).
#[test]
fn a_queues_own_blocks_apply_at_once_and_leave_the_directors_list_shared() {
    use ringvs::dataplane::blocks::{Block, BlockList, BlockMode};
    for threaded in MODES {
        let mut l = lab_in(
            &config("actions = \"block:198.18.0.0/24:30:drop\""),
            threaded,
        );
        let mut list = BlockList::default();
        let until = l.shard.now() + 6000;
        let by: Arc<str> = "director".into();
        let mode = BlockMode::Drop;
        assert!(list.insert(
            0,
            "203.0.113.0".parse().unwrap(),
            24,
            Block { until, mode, by }
        ));
        let shared = Arc::new(list);
        l.control.send(Control::Blocks(shared.clone())).unwrap();
        l.second();
        assert_eq!(
            l.syn("198.18.0.5", 1000),
            Verdict::Drop,
            "its own block, at once"
        );
        assert_eq!(l.syn("203.0.113.9", 1000), Verdict::Drop, "the director's");
        assert_eq!(l.syn("10.77.0.9", 1000), Verdict::Forward);
        assert_eq!(
            Arc::strong_count(&shared),
            2,
            "the queue still shares the director's list"
        );
    }
}

#[test]
fn a_block_applies_to_the_asking_defenses_service_only() {
    for threaded in MODES {
        let mut l = lab_in(
            &config("actions = \"block:10.77.0.9/32:60:drop\""),
            threaded,
        );
        l.second();
        assert_eq!(l.syn("10.77.0.9", 1000), Verdict::Drop);
        assert_eq!(l.drops(DropReason::Blocked), 1);
        let other = SocketAddrV4::new("10.77.0.9".parse().unwrap(), 1001);
        assert_eq!(
            l.send(&tcp(other, "10.77.100.100:81".parse().unwrap(), SYN, b"")),
            Verdict::Forward,
            "the other service has no defense and no block"
        );
    }
}

/// IPv6 sources are counted, ranked and blocked as IPv4 ones are: the catalogue's ratelimit
/// refuses an IPv6 source over its rate at `admit` (the per-source sketch's estimate), finds
/// it among the director's top sources at its tick and blocks its /128, established
/// connections included (`drop`); its neighbour in the same /64 goes on.
#[test]
fn an_ipv6_source_over_its_rate_is_refused_then_blocked() {
    let text = format!(
        r#"
[plugins.rl]
path = "{}"
config = {{ new_flows_per_sec = 5, action = "block", block_secs = 60, block_mode = "drop" }}

[[service]]
name = "web6"
vip = "[fd77:100::100]:80"
scheduler = "rr"
defense = ["rl"]
[[service.server]]
addr = "[fd77:1::1]:8080"
"#,
        plugin("defense-ratelimit").display()
    );
    let vip: SocketAddrV6 = "[fd77:100::100]:80".parse().unwrap();
    let rs: SocketAddrV6 = "[fd77:1::1]:8080".parse().unwrap();
    let heavy: Ipv6Addr = "fd77::66".parse().unwrap();
    let neighbour: Ipv6Addr = "fd77::67".parse().unwrap();
    let at = |a: Ipv6Addr, port: u16| SocketAddrV6::new(a, port, 0, 0);
    let syn = |l: &mut Lab, c: SocketAddrV6| l.send(&tcp6(c, vip, SYN, b""));
    // The rest of a handshake: the source counts once it completes.
    let complete = |l: &mut Lab, c: SocketAddrV6| {
        assert_eq!(l.send(&tcp6(rs, c, SYN | ACK, b"")), Verdict::Forward);
        assert_eq!(l.send(&tcp6(c, vip, ACK, b"")), Verdict::Forward);
    };
    for threaded in MODES {
        let mut l = lab_in(&text, threaded);
        // Seven SYNs at once (none has completed: the source counts 0), then their
        // handshakes: 7 new flows, over the 5 a second allowed.
        for port in 1000..1007 {
            assert_eq!(syn(&mut l, at(heavy, port)), Verdict::Forward);
        }
        for port in 1000..1007 {
            complete(&mut l, at(heavy, port));
        }
        assert_eq!(syn(&mut l, at(heavy, 2000)), Verdict::Drop, "at 5 a second");
        assert_eq!(l.drops(DropReason::Defense), 1);
        assert_eq!(syn(&mut l, at(neighbour, 1000)), Verdict::Forward);
        complete(&mut l, at(neighbour, 1000));
        l.second();
        let top = l.report().top;
        assert_eq!(
            (top[0].addr, top[0].new_flows),
            (IpAddr::V6(heavy), 7),
            "{top:?}"
        );
        assert!(top.iter().any(|s| s.addr == IpAddr::V6(neighbour)));
        // The daemon merges the queues' top sources and hands them to every queue.
        let sources = Arc::new(top);
        l.control
            .send(Control::Top {
                sources,
                system_available: 1 << 30,
            })
            .unwrap();
        l.second();
        let blocks: Vec<(IpAddr, u8)> = l
            .events
            .try_iter()
            .filter_map(|e| match e {
                PluginEvent::Block { req, .. } => Some((req.addr, req.len)),
                _ => None,
            })
            .collect();
        assert_eq!(blocks, vec![(IpAddr::V6(heavy), 128)]);
        let est = tcp6(at(heavy, 1000), vip, ACK, b"");
        assert_eq!(
            l.send(&est),
            Verdict::Drop,
            "a drop block takes established flows"
        );
        assert_eq!(l.drops(DropReason::Blocked), 1);
        let other = tcp6(at(neighbour, 1000), vip, ACK, b"");
        assert_eq!(l.send(&other), Verdict::Forward, "only the /128");
    }
}

#[test]
fn a_hundred_thousand_actions_a_tick_cost_the_host_a_bounded_share() {
    for threaded in MODES {
        // A plugin that returns 100 000 actions every tick: the host applies at most
        // MAX_TICK_ACTIONS of them per tick and refuses (and counts) the rest; the service's
        // blocks stop at MAX_BLOCKS; established flows keep flowing in between.
        let mut l = lab_in(&config("flood = 100000, repeat = true"), threaded);
        let c = SocketAddrV4::new("10.77.0.2".parse().unwrap(), 4000);
        let vip: SocketAddrV4 = "10.77.100.100:80".parse().unwrap();
        assert_eq!(l.send(&tcp(c, vip, SYN, b"")), Verdict::Forward);
        let ticks = ringvs_abi::MAX_BLOCKS / ringvs_abi::MAX_TICK_ACTIONS + 2;
        for _ in 0..ticks {
            l.second();
            assert_eq!(l.send(&tcp(c, vip, ACK, b"data")), Verdict::Forward);
        }
        let r = l.report();
        let (_, tc) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        let block = ActionKind::Block as usize;
        assert_eq!(tc.actions[block] as usize, ringvs_abi::MAX_BLOCKS);
        assert_eq!(
            (tc.actions[block] + tc.refused[block]) as usize,
            ticks * 100_000,
            "every action applied or refused, counted"
        );
        assert_eq!(tc.faults, [0; 4], "the plugin itself stayed healthy");
    }
}

#[test]
fn on_the_tick_thread_a_spinning_tick_holds_no_packet_and_is_stopped() {
    let mut l = lab_in(&config("spin_tick = true"), true);
    let c = SocketAddrV4::new("10.77.0.2".parse().unwrap(), 4000);
    let vip: SocketAddrV4 = "10.77.100.100:80".parse().unwrap();
    assert_eq!(l.send(&tcp(c, vip, SYN, b"")), Verdict::Forward);
    // The boundary's poll hands the tick over and returns: the tick spins elsewhere.
    l.secs += 1;
    let t = l.t0 + Duration::from_secs(l.secs);
    l.shard.poll(t);
    assert_eq!(l.shard.ticks_in_flight(), 1, "the tick is out");
    // Until the next poll the instance is away: established packets flow, and new flows
    // are admitted without the defense (port 666 would be refused by it), counted as busy.
    for _ in 0..100 {
        assert_eq!(l.send(&tcp(c, vip, ACK, b"data")), Verdict::Forward);
    }
    assert_eq!(l.syn("10.77.0.3", 666), Verdict::Forward);
    let r = l.report();
    let (_, tc) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!((tc.busy, tc.fallbacks), (1, 0), "{tc:?}");
    assert!(r.defenses.iter().all(|d| d.healthy), "lent is not poisoned");
    // The deadline stops the spin on the tick thread; the fault comes back and poisons.
    l.settle(t);
    let r = l.report();
    let (_, tc) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
    assert_eq!(tc.faults[0], 1, "a deadline fault: {tc:?}");
    assert_eq!(tc.fallbacks, 1, "{tc:?}");
    let evs: Vec<PluginEvent> = l.events.try_iter().collect();
    assert!(
        evs.iter().any(|e| matches!(e, PluginEvent::Retire(_))),
        "the instance went back: {evs:?}"
    );
    assert!(
        evs.iter().any(
            |e| matches!(e, PluginEvent::Need { at, fault: Some(_), .. } if at.role == Role::Defense(0))
        ),
        "a fresh one is asked for: {evs:?}"
    );
    assert!(r.defenses.iter().any(|d| !d.healthy), "{:?}", r.defenses);
}

#[test]
fn the_tick_thread_scans_the_table_through_the_queue() {
    // drop_entry, always on: each tick scans the table and drops the SYN_RECV entries.
    let text = config_of("defense-drop-entry", "mode = 3");
    for threaded in MODES {
        let mut l = lab_in(&text, threaded);
        for p in 0..50 {
            assert_eq!(l.syn("10.77.0.2", 2000 + p), Verdict::Forward);
        }
        let c = SocketAddrV4::new("10.77.0.9".parse().unwrap(), 3000);
        let vip: SocketAddrV4 = "10.77.100.100:81".parse().unwrap();
        assert_eq!(l.send(&tcp(c, vip, SYN, b"")), Verdict::Forward);
        assert_eq!(l.shard.table().len(), 51);
        l.second();
        assert_eq!(
            l.shard.table().len(),
            1,
            "threaded {threaded}: the embryonic entries of its service are gone, the other service's stays"
        );
        let r = l.report();
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        assert_eq!(c.actions[ActionKind::DropConnections as usize], 1, "{c:?}");
    }
}

/// A defense's scans walk the IPv6 table too (its slots after the IPv4 table's), and its
/// `drop-connections` and `drop-embryonic` reach IPv6 entries: drop-entry clears an IPv6
/// service's half-open entries, tc-defense's `embryonic:N` drops N of them; an established
/// IPv6 connection and another service's entries stay.
#[test]
fn defense_scans_and_drops_reach_ipv6_entries() {
    let six = |name: &str, config: &str| {
        format!(
            r#"
[plugins.tc]
path = "{}"
config = {{ {config} }}

[[service]]
name = "web6"
vip = "[fd77:100::100]:80"
scheduler = "rr"
defense = ["tc"]
[[service.server]]
addr = "[fd77:1::1]:8080"

[[service]]
name = "other6"
vip = "[fd77:100::100]:81"
scheduler = "rr"
[[service.server]]
addr = "[fd77:1::1]:8081"
"#,
            plugin(name).display()
        )
    };
    let vip: SocketAddrV6 = "[fd77:100::100]:80".parse().unwrap();
    let other: SocketAddrV6 = "[fd77:100::100]:81".parse().unwrap();
    let rs: SocketAddrV6 = "[fd77:1::1]:8080".parse().unwrap();
    let client = |port| SocketAddrV6::new("fd77::2".parse().unwrap(), port, 0, 0);
    // 50 half-open entries of web6, one established, one half-open of other6: 52.
    let fill = |l: &mut Lab| {
        for p in 0..50 {
            assert_eq!(
                l.send(&tcp6(client(2000 + p), vip, SYN, b"")),
                Verdict::Forward
            );
        }
        let c = client(4000);
        assert_eq!(l.send(&tcp6(c, vip, SYN, b"")), Verdict::Forward);
        assert_eq!(l.send(&tcp6(rs, c, SYN | ACK, b"")), Verdict::Forward);
        assert_eq!(l.send(&tcp6(c, vip, ACK, b"")), Verdict::Forward);
        assert_eq!(
            l.send(&tcp6(client(3000), other, SYN, b"")),
            Verdict::Forward
        );
        assert_eq!(l.report().entries, 52);
    };
    for threaded in MODES {
        let mut l = lab_in(&six("defense-drop-entry", "mode = 3"), threaded);
        fill(&mut l);
        l.second();
        let r = l.report();
        assert_eq!(
            r.entries, 2,
            "threaded {threaded}: web6's half-open entries are gone; its established one and other6's stay"
        );
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        assert_eq!(c.actions[ActionKind::DropConnections as usize], 1, "{c:?}");

        let mut l = lab_in(&six("tc-defense", "actions = \"embryonic:20\""), threaded);
        fill(&mut l);
        l.second();
        let r = l.report();
        assert_eq!(
            r.entries, 32,
            "threaded {threaded}: 20 of web6's embryonic entries"
        );
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        assert_eq!(c.actions[ActionKind::DropEmbryonic as usize], 1, "{c:?}");
    }
}

#[test]
fn a_defense_swapped_while_its_tick_is_out_gives_the_old_instance_back() {
    let mut l = lab_in(&config("actions = \"rate:1\""), true);
    l.secs += 1;
    let t = l.t0 + Duration::from_secs(l.secs);
    l.shard.poll(t);
    assert_eq!(l.shard.ticks_in_flight(), 1);
    // A reload replaces the defense (new configuration) before the tick is back.
    let cfg = ringvs::config::from_str(&config("drop_port = 1234"), "t.toml").unwrap();
    let mut registry = Registry::new(&cfg.services).unwrap();
    let loaded = l._plugins.load_config(&cfg).unwrap();
    let prepared = l._plugins.prepare(&registry, 1, &loaded).unwrap();
    l._plugins.commit(loaded);
    let snap = Arc::new(l._plugins.snapshot(&mut registry, prepared));
    l.shard.apply_snapshot(snap);
    l.settle(t);
    let evs: Vec<PluginEvent> = l.events.try_iter().collect();
    assert!(
        evs.iter().any(|e| matches!(e, PluginEvent::Retire(_))),
        "the returning instance went back: {evs:?}"
    );
    // Its answer (drop every new flow) was not applied to the new defense, which works.
    assert_eq!(l.syn("10.77.0.2", 1000), Verdict::Forward);
    assert_eq!(l.syn("10.77.0.2", 1234), Verdict::Drop);
    let r = l.report();
    assert!(
        r.defenses.iter().all(|d| d.healthy && d.drop_rate == 0),
        "{:?}",
        r.defenses
    );
}

#[test]
fn drop_connections_names_only_entries_the_ticks_scans_returned() {
    // The entry in slot 0 is live and of the service, but the tick never scanned it: its id
    // is a guess (or a stale id from an earlier tick), and the action is refused.
    for threaded in MODES {
        let mut l = lab_in(&config("actions = \"drop:0\""), threaded);
        assert_eq!(l.syn("10.77.0.2", 2000), Verdict::Forward);
        assert!(l.shard.table().entry_at(0).is_some());
        l.second();
        assert_eq!(l.shard.table().len(), 1, "threaded {threaded}: not dropped");
        let r = l.report();
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        assert_eq!(c.refused[ActionKind::DropConnections as usize], 1, "{c:?}");
    }
}

#[test]
fn a_large_drop_is_applied_a_bounded_share_per_poll_on_the_tick_thread() {
    // drop-embryonic of 600 entries: at the boundary on the queue's thread (tests, replay),
    // all at once; on the tick thread, in steps between batches, at most 128 drops a poll
    // (see `WORK_PER_POLL`), the queue forwarding meanwhile.
    const N: u16 = 600;
    for threaded in MODES {
        let mut l = lab_in(&config(&format!("actions = \"embryonic:{N}\"")), threaded);
        for p in 0..N {
            assert_eq!(l.syn("10.77.0.2", 2000 + p), Verdict::Forward);
        }
        l.secs += 1;
        let t = l.t0 + Duration::from_secs(l.secs);
        l.shard.poll(t);
        let (mut steps, mut most, mut sent) = (0, 0, 0);
        let until = Instant::now() + Duration::from_secs(20);
        while l.shard.ticks_in_flight() > 0 {
            assert!(Instant::now() < until, "a tick never came back");
            std::thread::sleep(Duration::from_micros(200));
            let before = l.shard.table().len();
            l.shard.poll(t);
            let dropped = before - l.shard.table().len();
            steps += usize::from(dropped > 0);
            most = most.max(dropped);
            // A new flow of the other service goes through between two steps.
            sent += 1;
            let c = SocketAddrV4::new("10.77.0.9".parse().unwrap(), 3000 + sent);
            let vip: SocketAddrV4 = "10.77.100.100:81".parse().unwrap();
            assert_eq!(l.send(&tcp(c, vip, SYN, b"")), Verdict::Forward);
        }
        assert_eq!(
            l.shard.table().len(),
            usize::from(sent),
            "threaded {threaded}: every embryonic entry of the service dropped, none of the \
             other service's"
        );
        if threaded {
            assert!(most <= 128, "{most} drops in one poll");
            assert!(steps >= usize::from(N) / 128, "{steps} steps");
        }
        let r = l.report();
        let (_, c) = r.plugins.iter().find(|(n, _)| &**n == "tc").unwrap();
        assert_eq!(c.actions[ActionKind::DropEmbryonic as usize], 1, "{c:?}");
    }
}
