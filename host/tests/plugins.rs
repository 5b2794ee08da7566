//! The plugin runtime against real components: loading and its refusals, calls, faults and
//! state hand-off.

mod common;

use common::plugins::plugin;
use ringvs::plugin::{
    flow_v4, FaultKind, Kind, PluginError, Runtime, RuntimeOptions, SchedulerInstance, ServerInfo,
};
use serde_json::json;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rt() -> Arc<Runtime> {
    Runtime::new(RuntimeOptions::default()).unwrap()
}

fn servers(n: u8) -> Vec<ServerInfo> {
    (1..=n)
        .map(|i| ServerInfo {
            addr: format!("10.77.1.{i}:8080").parse().unwrap(),
            weight: 1,
        })
        .collect()
}

fn flow(port: u16) -> ringvs::plugin::FlowWit {
    flow_v4(
        6,
        SocketAddrV4::new("10.77.0.2".parse().unwrap(), port),
        "10.77.100.100:80".parse().unwrap(),
    )
}

fn sched(name: &str, config: serde_json::Value) -> SchedulerInstance {
    let p = rt()
        .load(name, &plugin(name), None, &config, Some(Kind::Scheduler))
        .unwrap();
    let mut s = SchedulerInstance::new(&p).unwrap();
    s.servers_changed(&servers(3)).unwrap();
    s
}

#[test]
fn wlc_component_picks_like_ipvs() {
    let mut s = sched("sched-wlc", json!({}));
    // weight, active, inactive per server.
    assert_eq!(
        s.pick(&flow(1), &[1, 0, 0, 1, 0, 0, 1, 0, 0]).unwrap(),
        Some(0)
    );
    assert_eq!(
        s.pick(&flow(1), &[1, 1, 0, 1, 0, 5, 1, 0, 0]).unwrap(),
        Some(2)
    );
    // 3×256/1 = 768 against 4×256/3 ≈ 341.
    assert_eq!(
        s.pick(&flow(1), &[1, 3, 0, 3, 4, 0, 0, 0, 0]).unwrap(),
        Some(1)
    );
    assert_eq!(
        s.pick(&flow(1), &[0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
        None
    );
}

#[test]
fn rr_state_survives_a_swap() {
    let mut a = sched("sched-rr", json!({}));
    let load = [1, 0, 0, 1, 0, 0, 1, 0, 0];
    assert_eq!(a.pick(&flow(1), &load).unwrap(), Some(0));
    assert_eq!(a.pick(&flow(1), &load).unwrap(), Some(1));
    let state = a.export_state().unwrap();
    let mut b = sched("sched-rr", json!({}));
    assert_eq!(b.import_state(&state).unwrap(), Ok(()));
    assert_eq!(
        b.pick(&flow(1), &load).unwrap(),
        Some(2),
        "the new instance continues the rotation"
    );
    let mut fresh = sched("sched-rr", json!({}));
    assert_eq!(
        fresh.pick(&flow(1), &load).unwrap(),
        Some(0),
        "without the hand-off it starts over"
    );
    assert!(
        b.import_state(&[7, 7]).unwrap().is_err(),
        "garbage state is refused, not trusted"
    );
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let mut s = sched("tc-loop", json!({}));
    let t = Instant::now();
    let f = s
        .pick(&flow(666), &[1, 0, 0, 1, 0, 0, 1, 0, 0])
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(f.kind, FaultKind::Deadline, "{f}");
    assert!(took < Duration::from_millis(50), "stopped after {took:?}");
}

#[test]
fn a_memory_bomb_hits_the_limit() {
    let mut s = sched("tc-membomb", json!({}));
    let f = s
        .pick(&flow(666), &[1, 0, 0, 1, 0, 0, 1, 0, 0])
        .unwrap_err();
    assert_eq!(f.kind, FaultKind::Memory, "{f}");
}

#[test]
fn a_panic_is_a_trap() {
    let mut s = sched("tc-trap", json!({}));
    assert_eq!(
        s.pick(&flow(1), &[1, 0, 0, 1, 0, 0, 1, 0, 0]).unwrap(),
        Some(0)
    );
    let f = s
        .pick(&flow(666), &[1, 0, 0, 1, 0, 0, 1, 0, 0])
        .unwrap_err();
    assert_eq!(f.kind, FaultKind::Trap, "{f}");
}

#[test]
fn an_unknown_server_is_a_bad_return() {
    let mut s = sched("tc-bad-return", json!({}));
    let f = s
        .pick(&flow(666), &[1, 0, 0, 1, 0, 0, 1, 0, 0])
        .unwrap_err();
    assert_eq!(f.kind, FaultKind::BadReturn, "{f}");
    assert!(f.detail.contains("server 10 of 3"), "{f}");
}

#[test]
fn a_quiesced_pick_is_a_bad_return() {
    // wlc is honest; feed the hostile one a load where its round robin lands on weight 0.
    let mut s = sched("tc-bad-return", json!({}));
    assert_eq!(
        s.pick(&flow(1), &[0, 0, 0, 1, 0, 0, 1, 0, 0]).unwrap(),
        Some(1)
    );
}

#[test]
fn always_hostile_plugins_fail_their_self_test_at_load() {
    let rt = rt();
    for (name, want) in [
        ("tc-loop", "deadline"),
        ("tc-membomb", "memory"),
        ("tc-trap", "trap"),
        ("tc-bad-return", "bad_return"),
    ] {
        let e = rt
            .load(
                name,
                &plugin(name),
                None,
                &json!({"always": true}),
                Some(Kind::Scheduler),
            )
            .unwrap_err();
        match &e {
            PluginError::SelfTest(m) => assert!(m.contains(want), "{name}: {m}"),
            other => panic!("{name}: {other}"),
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("ringvs-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Not a component: a core module, and not wasm at all.
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let e = rt.load("core", &core, None, &json!({}), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("core WebAssembly module, not a component"),
        "{e}"
    );
    let text = dir.join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    let e = rt.load("text", &text, None, &json!({}), None).unwrap_err();
    assert!(e.to_string().contains("not a WebAssembly component"), "{e}");
    // Missing file.
    let e = rt
        .load("gone", &dir.join("gone.wasm"), None, &json!({}), None)
        .unwrap_err();
    assert!(
        matches!(e, PluginError::Read(..)) && e.to_string().contains("gone.wasm"),
        "{e}"
    );
    // sha256 pin.
    let e = rt
        .load(
            "sched-wlc",
            &plugin("sched-wlc"),
            Some([0u8; 32]),
            &json!({}),
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("sha256 mismatch"), "{e}");
    // Wrong world.
    let e = rt
        .load(
            "sched-wlc",
            &plugin("sched-wlc"),
            None,
            &json!({}),
            Some(Kind::Defense),
        )
        .unwrap_err();
    assert!(e.to_string().contains("is a scheduler plugin"), "{e}");
    // Built against the previous WIT (sched-lc as ringvs:plugin@0.1.0 built it): refused,
    // with the version it was built for and what to do.
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sched_lc-wit-0.1.0.wasm");
    let e = rt
        .load("old", &old, None, &json!({}), Some(Kind::Scheduler))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("built for WIT ringvs:plugin@0.1.0: rebuild it against the ringvs-sdk"),
        "{e}"
    );
    assert!(e.contains(&format!("@{}", ringvs_abi::WIT_VERSION)), "{e}");
    // A config the plugin rejects.
    let e = rt
        .load(
            "sched-wlc",
            &plugin("sched-wlc"),
            None,
            &json!({"bogus": 1}),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(&e, PluginError::ConfigRejected(m) if m.contains("unknown config key `bogus`")),
        "{e}"
    );
    // Imports the host does not provide.
    let e = rt
        .load("tc-wasi", &plugin("tc-wasi"), None, &json!({}), None)
        .unwrap_err();
    assert!(
        matches!(&e, PluginError::Imports(..)) && e.to_string().contains("wasi:"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pinned_hash_is_accepted() {
    use sha2::Digest;
    let path = plugin("sched-wlc");
    let digest: [u8; 32] = sha2::Sha256::digest(std::fs::read(&path).unwrap()).into();
    let p = rt()
        .load("sched-wlc", &path, Some(digest), &json!({}), None)
        .unwrap();
    assert_eq!(p.kind, Kind::Scheduler);
}

/// Collects what the daemon's tracing output would show.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_plugin_logs_with_its_name_rate_limited_per_instance_and_counted() {
    use std::sync::atomic::Ordering::Relaxed;
    let out = Captured::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let (p, picks) = tracing::subscriber::with_default(subscriber, || {
        let p = rt()
            .load(
                "chatty",
                &plugin("tc-log"),
                None,
                &json!({}),
                Some(Kind::Scheduler),
            )
            .unwrap();
        let mut s = SchedulerInstance::new(&p).unwrap();
        s.servers_changed(&servers(2)).unwrap();
        let t0 = Instant::now();
        for port in 0..100 {
            assert!(s.pick(&flow(port), &[1, 0, 0, 1, 0, 0]).unwrap().is_some());
        }
        (p, t0.elapsed())
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    // init logged at warn twice (the self-test's instance and this one), the self-test's
    // pick and ours at info.
    let c = &p.logs;
    let (warn, info, dropped) = (
        c.written[1].load(Relaxed),
        c.written[2].load(Relaxed),
        c.dropped.load(Relaxed),
    );
    assert_eq!(warn, 2);
    assert_eq!(info + dropped, 101, "every message kept or dropped");
    if picks < Duration::from_millis(900) {
        // All in one second: the self-test's pick; then this instance's ten a second, its
        // init's warn being one of them.
        assert_eq!((info, dropped), (10, 91));
    }
    assert!(dropped > 0, "100 picks in {picks:?} and nothing dropped");
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains("plugin=\"chatty\"")
            && l.contains("configured with 0 key(s)")),
        "the level, the plugin's name and the message on one line: {text}"
    );
    assert_eq!(
        text.matches("picked server").count() as u64,
        info,
        "every kept message is in the output: {text}"
    );
}

#[test]
fn the_pick_simulator_shows_the_spread_and_what_a_removal_moves() {
    use ringvs::control::simulate::{parse_servers, simulate};
    let load = |name: &str| {
        rt().load(name, &plugin(name), None, &json!({}), Some(Kind::Scheduler))
            .unwrap()
    };
    // wrr: exactly the weights, before and after; removing a server reshuffles the rest.
    let servers = parse_servers("10.0.0.1:80=3,10.0.0.2:80=1,10.0.0.3:80=1").unwrap();
    let s = simulate(&load("sched-wrr"), &servers, 20_000, None).unwrap();
    assert_eq!(s.picks, vec![12_000, 4_000, 4_000]);
    assert_eq!(s.picks_after, vec![15_000, 5_000, 0]);
    assert_eq!((s.removed, s.displaced, s.unplaced), (2, 4_000, 0));
    assert!(s.moved > 1_000, "wrr is not consistent: {s}");
    // mh (Maglev hashing): about a quarter each; removing one moves its flows and almost
    // no other.
    let servers = parse_servers("10.0.0.1:80,10.0.0.2:80,10.0.0.3:80,10.0.0.4:80").unwrap();
    let s = simulate(&load("sched-mh"), &servers, 20_000, Some(0)).unwrap();
    for n in &s.picks {
        assert!((4_500..5_500).contains(n), "{s}");
    }
    assert_eq!(s.picks_after[0], 0);
    assert_eq!(s.displaced, s.picks[0]);
    assert!(
        s.moved * 100 < 15_000,
        "mh moves under 1% of the others: {s}"
    );
    let text = s.to_string();
    assert!(text.contains("removing 10.0.0.1:80:"), "{text}");
}
