//! keepalived's features in ringvs, with a detached daemon and the `ringvs` binary:
//!
//! - a sorry server takes the new flows while no realserver can, and stands by again when
//!   one can (keepalived `sorry_server`).

mod common;

use common::director::Director;
use ringvs::dataplane::testkit::{tcp, TWO_SERVICES};
use ringvs::wire::tcp::flags::SYN;
use std::net::{SocketAddr, SocketAddrV4};

fn a<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// The realserver a forwarded packet went to.
fn dest(pkt: &Option<Vec<u8>>) -> SocketAddr {
    let p = pkt.as_ref().expect("forwarded");
    let ip = std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    SocketAddrV4::new(ip, u16::from_be_bytes([p[22], p[23]])).into()
}

#[test]
fn a_sorry_server_takes_new_flows_while_no_realserver_can() {
    let services = TWO_SERVICES.replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\nsorry_server = \"10.77.9.9:8080\"",
    );
    let mut d = Director::start(&services);
    let vip = a("10.77.100.100:80");
    let web = |d: &Director| {
        d.list()
            .services
            .into_iter()
            .find(|s| s.name == "web")
            .unwrap()
    };
    assert!(web(&d)
        .flags
        .contains(&"sorry 10.77.9.9:8080 standby".to_string()));
    let out = d.packets(&[tcp(a("10.77.0.2:40000"), vip, SYN, b"")]);
    assert_ne!(dest(&out[0]), a("10.77.9.9:8080"), "a realserver serves");

    d.ok(&["server", "weight", "web", "10.77.1.1:8080", "0"]);
    d.ok(&["server", "weight", "web", "10.77.1.2:8080", "0"]);
    assert!(
        web(&d)
            .flags
            .contains(&"sorry 10.77.9.9:8080 active".to_string()),
        "{:?}",
        web(&d).flags
    );
    for port in 40001..40005 {
        let out = d.packets(&[tcp(a(&format!("10.77.0.2:{port}")), vip, SYN, b"")]);
        assert_eq!(
            dest(&out[0]),
            a("10.77.9.9:8080"),
            "the sorry server serves"
        );
    }
    let table = d.ok(&["list"]);
    assert!(
        table.contains("TCP  10.77.100.100:80 wlc sorry 10.77.9.9:8080 active"),
        "{table}"
    );
    assert!(table.contains("  -> 10.77.9.9:8080"), "{table}");

    d.ok(&["server", "weight", "web", "10.77.1.2:8080", "1"]);
    assert!(web(&d)
        .flags
        .contains(&"sorry 10.77.9.9:8080 standby".to_string()));
    let out = d.packets(&[tcp(a("10.77.0.3:40000"), vip, SYN, b"")]);
    assert_eq!(dest(&out[0]), a("10.77.1.2:8080"), "back to the realserver");

    // At runtime, like the file.
    d.ok(&["service", "edit", "dns", "--sorry-server", "10.77.9.9:53"]);
    let dns = d
        .list()
        .services
        .into_iter()
        .find(|s| s.name == "dns")
        .unwrap();
    assert!(dns
        .flags
        .contains(&"sorry 10.77.9.9:53 standby".to_string()));
    d.ok(&["service", "edit", "dns", "--no-sorry-server"]);
    let dns = d
        .list()
        .services
        .into_iter()
        .find(|s| s.name == "dns")
        .unwrap();
    assert!(
        !dns.flags.iter().any(|f| f.starts_with("sorry")),
        "{:?}",
        dns.flags
    );
    // `save` writes it.
    let saved = d.ok(&["save"]);
    assert!(
        saved.contains("sorry_server = \"10.77.9.9:8080\""),
        "{saved}"
    );
}

// ---------------------------------------------------------------------------------------------
// MISC_CHECK (script checks), dynamic weights, notify hooks: the checkers on a real runtime.

use ringvs::config::{CheckKind, HealthConfig, NotifyConfig, OnFail, ScriptCheck};
use ringvs::dataplane::service::{DestState, DEST_F_DOWN};
use ringvs::health::{Health, Monitor, Want};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// A directory anyone may write (scripts run as nobody when the tests run as root).
fn open_dir(tag: &str) -> PathBuf {
    let d = common::director::tmpdir(tag);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

fn script_cfg(command: &str, dynamic: bool, timeout: Duration) -> HealthConfig {
    HealthConfig {
        kind: CheckKind::Script(ScriptCheck {
            command: vec![command.to_string()],
            user: "nobody".into(),
            dynamic,
        }),
        interval: Duration::from_millis(150),
        timeout,
        rise: 1,
        fall: 1,
        on_fail: OnFail::Quiesce,
        port: None,
        addr: None,
    }
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what} within {limit:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_check_and_notify_hooks_follow_the_server() {
    let dir = open_dir("misc");
    let flag = dir.join("alive");
    let log = dir.join("notify.log");
    let check = script(
        &dir,
        "check",
        &format!(
            "test \"$RINGVS_SERVICE $RINGVS_SERVER\" = 'web 10.77.1.1:8080' || exit 9\ntest -e {} || {{ echo 'app says no' >&2; exit 1; }}",
            flag.display()
        ),
    );
    let hook = script(
        &dir,
        "hook",
        &format!(
            "echo \"$RINGVS_EVENT $RINGVS_SERVICE $RINGVS_SERVER $RINGVS_REASON\" >> {}",
            log.display()
        ),
    );
    std::fs::write(&flag, b"").unwrap();
    let server = a("10.77.1.1:8080");
    let dest = DestState::new(5);
    dest.health_pending();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let notify = NotifyConfig {
        up: Some(vec![hook.clone(), "ignored-arg".into()]),
        down: Some(vec![hook]),
        timeout: Duration::from_secs(2),
        user: "nobody".into(),
        max_per_minute: 3,
    };
    m.sync([Want {
        service: "web".into(),
        server,
        dest: dest.clone(),
        cfg: script_cfg(&check, false, Duration::from_secs(2)),
        notify: Some(notify),
    }]);
    let limit = Duration::from_secs(5);
    until(limit, "up on the first passed script", || {
        dest.flags() & DEST_F_DOWN == 0
    })
    .await;
    assert!(lines(&log).is_empty(), "no hook for a new server coming up");

    std::fs::remove_file(&flag).unwrap();
    until(limit, "down when the script fails", || {
        dest.flags() & DEST_F_DOWN != 0
    })
    .await;
    let s = m.status("web", server).unwrap();
    assert_eq!(s.health, Health::Down);
    assert_eq!(s.reason.as_deref(), Some("script exit 1: app says no"));
    until(limit, "the down hook ran", || lines(&log).len() == 1).await;
    assert_eq!(
        lines(&log)[0],
        "down web 10.77.1.1:8080 script exit 1: app says no"
    );
    std::fs::write(&flag, b"").unwrap();
    until(limit, "up again", || dest.flags() & DEST_F_DOWN == 0).await;
    until(limit, "the up hook ran", || lines(&log).len() == 2).await;
    assert_eq!(lines(&log)[1], "up web 10.77.1.1:8080 ");

    // Flapping: at most 3 hooks a minute for the service; the rest are dropped.
    for _ in 0..3 {
        std::fs::remove_file(&flag).unwrap();
        until(limit, "down", || dest.flags() & DEST_F_DOWN != 0).await;
        std::fs::write(&flag, b"").unwrap();
        until(limit, "up", || dest.flags() & DEST_F_DOWN == 0).await;
    }
    sleep(Duration::from_millis(500)).await;
    assert_eq!(lines(&log).len(), 3, "the limit: {:?}", lines(&log));
    m.stop_all();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_script_is_killed_at_its_timeout_and_the_server_goes_down() {
    let dir = open_dir("hang");
    let hang = script(&dir, "hang", "sleep 30");
    let dest = DestState::new(5);
    dest.health_pending();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let server = a("10.77.1.2:8080");
    m.sync([Want {
        service: "web".into(),
        server,
        dest: dest.clone(),
        cfg: script_cfg(&hang, false, Duration::from_millis(100)),
        notify: None,
    }]);
    until(Duration::from_secs(3), "down on a timeout", || {
        m.status("web", server)
            .is_some_and(|s| s.health == Health::Down)
    })
    .await;
    let s = m.status("web", server).unwrap();
    assert_eq!(s.reason.as_deref(), Some("script timeout (100ms), killed"));
    m.stop_all();
    sleep(Duration::from_millis(300)).await;
    // No `sleep 30` of the checks is left: each was killed with its process group.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &hang])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_check_sets_the_weight() {
    let dir = open_dir("dyn");
    let weight_file = dir.join("weight");
    std::fs::write(&weight_file, b"7").unwrap();
    // keepalived misc_dynamic: exit 2..255 passes with weight status - 2.
    let check = script(
        &dir,
        "check",
        &format!("exit $(cat {})", weight_file.display()),
    );
    let services = ringvs::config::from_str(
        "[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\n[[service.server]]\naddr = \"10.77.1.1:8080\"\nweight = 1\n",
        "t.toml",
    )
    .unwrap()
    .services;
    let registry = ringvs::control::registry::Registry::new(&services).unwrap();
    let dest = registry.service("web").unwrap().dests[0].state.clone();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let server = a("10.77.1.1:8080");
    m.sync([Want {
        service: "web".into(),
        server,
        dest: dest.clone(),
        cfg: script_cfg(&check, true, Duration::from_secs(2)),
        notify: None,
    }]);
    let limit = Duration::from_secs(5);
    until(limit, "a dynamic weight", || {
        !m.dynamic_weights().is_empty()
    })
    .await;
    assert_eq!(m.dynamic_weights(), [("web".to_string(), server, 5)]);
    assert!(registry.set_dynamic_weight("web", server, 5));
    assert_eq!(dest.weight(), 5);
    assert!(!registry.set_dynamic_weight("web", server, 5), "no change");
    // The configured weight is what `save` writes.
    assert_eq!(registry.service_configs()[0].servers[0].weight, 1);
    // Exit 1 fails; exit 0 passes and keeps the weight.
    std::fs::write(&weight_file, b"1").unwrap();
    until(limit, "down on exit 1", || dest.flags() & DEST_F_DOWN != 0).await;
    std::fs::write(&weight_file, b"0").unwrap();
    until(limit, "up on exit 0", || dest.flags() & DEST_F_DOWN == 0).await;
    assert_eq!(m.dynamic_weights(), [("web".to_string(), server, 5)]);
    m.stop_all();
    let _ = Arc::strong_count(&dest);
    std::fs::remove_dir_all(&dir).unwrap();
}
