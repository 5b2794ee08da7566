//! Health checks against real listeners on 127.0.0.1: TCP accept vs a closed port, an HTTP
//! server answering 200, 500 or nothing at all, with the transitions, their timing (rise and
//! fall are honoured, detection stays within `fall × interval + timeout`), the flags the
//! data plane reads, and the checkers following the registry through runtime edits and
//! reloads.

use ringvs::config::{from_str, CheckKind, HealthConfig, HttpCheck, OnFail};
use ringvs::control::registry::Registry;
use ringvs::dataplane::service::{DestState, DEST_F_DOWN, DEST_F_HEALTH_REMOVED, DEST_F_REMOVED};
use ringvs::health::{Health, Monitor, Want};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{sleep, Instant};

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(100);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Scheduling slack allowed on top of a bound (the machine is shared and busy).
const SLACK: Duration = Duration::from_millis(600);

fn cfg(kind: CheckKind, on_fail: OnFail) -> HealthConfig {
    HealthConfig {
        kind,
        interval: INTERVAL,
        timeout: TIMEOUT,
        rise: RISE,
        fall: FALL,
        on_fail,
        port: None,
        addr: None,
    }
}

fn http(path: &str) -> CheckKind {
    CheckKind::Http(HttpCheck {
        path: path.into(),
        expect: vec![200],
        host: None,
        tls: false,
    })
}

fn local(l: &TcpListener) -> SocketAddr {
    l.local_addr().unwrap()
}

/// A port nothing listens on (bound once, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    local(&l)
}

/// Accepts and holds TCP connections until dropped.
struct TcpServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpServer {
    async fn start(addr: &str) -> TcpServer {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = local(&l);
        let task = tokio::spawn(async move {
            loop {
                if let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            }
        });
        TcpServer { addr, task }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// An HTTP server whose answer is switched at run time: 200, 500, or nothing at all.
struct HttpServer {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    async fn start() -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = local(&l);
        let mode = Arc::new(AtomicU8::new(OK));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let (m, r) = (m.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    r.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    let answer: &[u8] = match m.load(Ordering::Relaxed) {
                        OK => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        FAIL => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                        _ => {
                            // Hold the connection, answer nothing.
                            sleep(Duration::from_secs(30)).await;
                            return;
                        }
                    };
                    let _ = s.write_all(answer).await;
                });
            }
        });
        HttpServer {
            addr,
            mode,
            requests,
            task,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn flags(d: &DestState) -> u32 {
    d.flags() & (DEST_F_DOWN | DEST_F_HEALTH_REMOVED)
}

/// Polls until `dest`'s health flags equal `want`; returns how long that took. Panics after
/// `limit`.
async fn flags_become(d: &DestState, want: u32, limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    while flags(d) != want {
        assert!(
            t0.elapsed() < limit,
            "{what}: flags {:#x}, want {want:#x} within {limit:?}",
            flags(d)
        );
        sleep(Duration::from_millis(5)).await;
    }
    t0.elapsed()
}

fn want(service: &str, server: SocketAddr, dest: &Arc<DestState>, cfg: HealthConfig) -> Want {
    Want {
        service: service.into(),
        server,
        dest: dest.clone(),
        cfg,
        notify: None,
    }
}

/// A new server (created down by the registry) comes up on its first passed check.
fn pending_dest() -> Arc<DestState> {
    let d = DestState::new(5);
    d.health_pending();
    d
}

#[tokio::test]
async fn tcp_accept_is_up_and_a_closed_port_is_down() {
    let srv = TcpServer::start("127.0.0.1:0").await;
    let closed = closed_port().await;
    let (up, down) = (pending_dest(), pending_dest());
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let tcp = cfg(CheckKind::Tcp, OnFail::Quiesce);
    m.sync([
        want("web", srv.addr, &up, tcp.clone()),
        want("web", closed, &down, tcp.clone()),
    ]);
    // The first check runs at once; one pass is enough for a new server.
    let t = flags_become(&up, 0, TIMEOUT + SLACK, "listening server").await;
    assert!(t < INTERVAL, "a new server needs one check, took {t:?}");
    sleep(INTERVAL).await;
    let s = m.status("web", closed).unwrap();
    assert_eq!(s.health, Health::Down);
    assert_eq!(s.reason.as_deref(), Some("connection refused"));
    assert_eq!(flags(&down), DEST_F_DOWN);
    assert_eq!(down.weight(), 5, "quiesce keeps the configured weight");
    assert!(up.schedulable() && !down.schedulable());
    assert_eq!(m.counts(), (2, 1));
}

#[tokio::test]
async fn ipv6_realservers_are_checked_over_ipv6() {
    // TCP: a listener on [::1] is up, a closed port of [::1] down.
    let srv = TcpServer::start("[::1]:0").await;
    assert!(srv.addr.is_ipv6());
    let closed = {
        let l = TcpListener::bind("[::1]:0").await.unwrap();
        local(&l)
    };
    let (up, down) = (pending_dest(), pending_dest());
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let tcp = cfg(CheckKind::Tcp, OnFail::Quiesce);
    m.sync([
        want("web6", srv.addr, &up, tcp.clone()),
        want("web6", closed, &down, tcp),
    ]);
    flags_become(&up, 0, TIMEOUT + SLACK, "listening IPv6 server").await;
    sleep(INTERVAL).await;
    let s = m.status("web6", closed).unwrap();
    assert_eq!(s.health, Health::Down);
    assert_eq!(s.reason.as_deref(), Some("connection refused"));
    // HTTP: the request names the server as a URL does, in brackets.
    let l = TcpListener::bind("[::1]:0").await.unwrap();
    let addr = local(&l);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut st, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let n = st.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = st
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let d = pending_dest();
    m.sync([want("web6", addr, &d, cfg(http("/"), OnFail::Quiesce))]);
    flags_become(&d, 0, TIMEOUT + SLACK, "IPv6 HTTP server").await;
    let req = rx.recv().await.unwrap();
    assert!(
        req.contains(&format!("Host: [::1]:{}\r\n", addr.port())),
        "{req}"
    );
}

#[tokio::test]
async fn tcp_fall_and_rise_are_counted_and_timed() {
    let srv = TcpServer::start("127.0.0.1:0").await;
    let addr = srv.addr;
    let d = pending_dest();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    m.sync([want("web", addr, &d, cfg(CheckKind::Tcp, OnFail::Quiesce))]);
    flags_become(&d, 0, TIMEOUT + SLACK, "up").await;
    // Stop listening: `fall` refused connections later it is down — not before.
    drop(srv);
    let window = INTERVAL * FALL + TIMEOUT;
    let t = flags_become(
        &d,
        DEST_F_DOWN,
        window + SLACK,
        "down after the listener closed",
    )
    .await;
    assert!(
        t >= INTERVAL * (FALL - 1) - Duration::from_millis(20),
        "down after {t:?}: fall = {FALL} checks {INTERVAL:?} apart cannot fail that fast"
    );
    assert_eq!(
        m.status("web", addr).unwrap().reason.as_deref(),
        Some("connection refused")
    );
    // Listen again on the same port: `rise` passed checks later it is up — not before.
    let srv = TcpServer::start(&addr.to_string()).await;
    let t = flags_become(&d, 0, INTERVAL * RISE + SLACK, "up after listening again").await;
    assert!(
        t >= INTERVAL * (RISE - 1) - Duration::from_millis(20),
        "up after {t:?}: rise = {RISE} needs {RISE} checks {INTERVAL:?} apart"
    );
    let s = m.status("web", addr).unwrap();
    assert_eq!((s.health, s.reason), (Health::Up, None));
    drop(srv);
}

#[tokio::test]
async fn http_200_passes_500_fails_and_silence_times_out() {
    let srv = HttpServer::start().await;
    let d = pending_dest();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    m.sync([want(
        "web",
        srv.addr,
        &d,
        cfg(http("/healthz"), OnFail::Quiesce),
    )]);
    flags_become(&d, 0, TIMEOUT + SLACK, "200").await;
    let req = srv.requests.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET /healthz HTTP/1.0\r\n"), "{req}");
    assert!(
        req.contains(&format!("\r\nHost: {}\r\n", srv.addr)),
        "{req}"
    );

    let window = INTERVAL * FALL + TIMEOUT;
    srv.set(FAIL);
    let t = flags_become(&d, DEST_F_DOWN, window + SLACK, "500").await;
    assert!(
        t >= INTERVAL * (FALL - 1) - Duration::from_millis(20),
        "{t:?}"
    );
    assert_eq!(
        m.status("web", srv.addr).unwrap().reason.as_deref(),
        Some("HTTP 500 (expected 200)")
    );

    srv.set(OK);
    let t = flags_become(&d, 0, INTERVAL * RISE + SLACK, "200 again").await;
    assert!(
        t >= INTERVAL * (RISE - 1) - Duration::from_millis(20),
        "{t:?}"
    );

    // Accepts, reads the request, never answers: each check ends at the timeout.
    srv.set(HANG);
    let t = flags_become(&d, DEST_F_DOWN, window + SLACK, "no answer").await;
    assert!(t >= INTERVAL * (FALL - 1), "{t:?}");
    assert_eq!(
        m.status("web", srv.addr).unwrap().reason.as_deref(),
        Some("response timeout (100ms)")
    );
    assert!(m.status("web", srv.addr).unwrap().checks >= (1 + FALL + RISE + FALL) as u64);
}

#[tokio::test]
async fn remove_sets_the_removed_bit_and_recovery_clears_both() {
    let srv = HttpServer::start().await;
    let d = pending_dest();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    m.sync([want("web", srv.addr, &d, cfg(http("/"), OnFail::Remove))]);
    flags_become(&d, 0, TIMEOUT + SLACK, "up").await;
    srv.set(FAIL);
    flags_become(
        &d,
        DEST_F_DOWN | DEST_F_HEALTH_REMOVED,
        INTERVAL * FALL + TIMEOUT + SLACK,
        "removed",
    )
    .await;
    assert_eq!(
        d.flags() & DEST_F_REMOVED,
        0,
        "the registry's bit is not the checker's"
    );
    // Switching the same down server to quiesce keeps it down, without the removed bit.
    m.sync([want("web", srv.addr, &d, cfg(http("/"), OnFail::Quiesce))]);
    assert_eq!(flags(&d), DEST_F_DOWN);
    assert_eq!(m.status("web", srv.addr).unwrap().health, Health::Down);
    srv.set(OK);
    flags_become(&d, 0, INTERVAL * RISE + SLACK, "back").await;
}

#[tokio::test]
async fn sync_keeps_carries_starts_and_stops() {
    let srv = TcpServer::start("127.0.0.1:0").await;
    let closed = closed_port().await;
    let (a, b) = (pending_dest(), DestState::new(1));
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let tcp = cfg(CheckKind::Tcp, OnFail::Quiesce);
    // `b` is already serving (flags 0) when its service gets a check: it starts up, and
    // only `fall` failures take it down.
    let r = m.sync([
        want("web", srv.addr, &a, tcp.clone()),
        want("web", closed, &b, tcp.clone()),
    ]);
    assert_eq!((r.started, r.kept), (2, 0));
    assert_eq!(m.status("web", closed).unwrap().health, Health::Up);
    flags_become(&b, DEST_F_DOWN, INTERVAL * FALL + TIMEOUT + SLACK, "b down").await;
    let checks = m.status("web", closed).unwrap().checks;
    // The same wants again: nothing restarts, state and counts kept.
    let r = m.sync([
        want("web", srv.addr, &a, tcp.clone()),
        want("web", closed, &b, tcp.clone()),
    ]);
    assert_eq!((r.started, r.changed, r.stopped, r.kept), (0, 0, 0, 2));
    assert_eq!(m.status("web", closed).unwrap().health, Health::Down);
    // Another check for `b`: it stays down (no fresh start), its counts carry over.
    let mut slower = tcp.clone();
    slower.interval = INTERVAL * 2;
    let r = m.sync([
        want("web", srv.addr, &a, tcp.clone()),
        want("web", closed, &b, slower),
    ]);
    assert_eq!((r.changed, r.kept), (1, 1));
    let s = m.status("web", closed).unwrap();
    assert_eq!(s.health, Health::Down);
    assert!(s.checks >= checks);
    assert_eq!(flags(&b), DEST_F_DOWN);
    // `b` no longer checked (removed, or its service dropped the check): flags cleared,
    // never written again.
    let r = m.sync([want("web", srv.addr, &a, tcp.clone())]);
    assert_eq!(r.stopped, 1);
    assert_eq!(flags(&b), 0);
    assert!(m.status("web", closed).is_none());
    // Neither does `a`'s once stopped: its server dying afterwards must change nothing.
    assert_eq!(m.sync([]).stopped, 1);
    drop(srv);
    sleep(INTERVAL * (FALL + 1) + TIMEOUT).await;
    assert_eq!(
        (flags(&a), flags(&b)),
        (0, 0),
        "a stopped checker wrote the flags"
    );
    assert!(m.is_empty());
}

#[tokio::test]
async fn shutdown_leaves_flags_and_stops_every_task() {
    let srv = TcpServer::start("127.0.0.1:0").await;
    let d = pending_dest();
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    m.sync([want(
        "web",
        srv.addr,
        &d,
        cfg(CheckKind::Tcp, OnFail::Quiesce),
    )]);
    flags_become(&d, 0, TIMEOUT + SLACK, "up").await;
    m.stop_all();
    assert!(m.is_empty());
    drop(srv);
    sleep(INTERVAL * (FALL + 1) + TIMEOUT).await;
    assert_eq!(flags(&d), 0, "a checker outlived stop_all");
}

#[tokio::test(flavor = "current_thread")]
async fn hanging_checks_do_not_stall_the_runtime() {
    // Fifty servers that accept and never answer, each check waiting its full timeout, on
    // the same single-threaded runtime as everything else on the control side.
    let srv = HttpServer::start().await;
    srv.set(HANG);
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    let mut c = cfg(http("/"), OnFail::Quiesce);
    c.timeout = INTERVAL;
    let dests: Vec<_> = (0..50).map(|_| DestState::new(1)).collect();
    m.sync((0..50).map(|i| {
        let server = SocketAddr::new(srv.addr.ip(), 20_000 + i as u16);
        let mut c = c.clone();
        c.addr = Some(srv.addr);
        want("web", server, &dests[i], c)
    }));
    let mut worst = Duration::ZERO;
    for _ in 0..40 {
        let t = Instant::now();
        sleep(Duration::from_millis(10)).await;
        worst = worst.max(t.elapsed());
    }
    // A blocking check would hold the thread for its whole timeout (200 ms), fifty of them
    // in a row: seconds. Non-blocking ones leave the timer on time, give or take the load.
    assert!(
        worst < Duration::from_millis(500),
        "a 10 ms timer fired after {worst:?} while checks hung"
    );
    assert!(srv.requests.lock().unwrap().len() >= 50);
}

const CFG: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
health = { check = "tcp", interval = "200ms", timeout = "100ms", rise = 2, fall = 3 }

[[service.server]]
addr = "UP"

[[service.server]]
addr = "DEAD"
"#;

#[tokio::test]
async fn checkers_follow_the_registry() {
    let srv = TcpServer::start("127.0.0.1:0").await;
    let srv2 = TcpServer::start("127.0.0.1:0").await;
    let dead = closed_port().await;
    let text = CFG
        .replace("UP", &srv.addr.to_string())
        .replace("DEAD", &dead.to_string());
    let services = from_str(&text, "t.toml").unwrap().services;
    let mut reg = Registry::new(&services).unwrap();
    let dest = |r: &Registry, a: SocketAddr| {
        r.service("web")
            .unwrap()
            .dests
            .iter()
            .find(|d| d.addr == a)
            .unwrap()
            .state
            .clone()
    };
    // New servers of a checked service start down: no flow before a check passes.
    let (up, down) = (dest(&reg, srv.addr), dest(&reg, dead));
    assert!(!up.schedulable() && !down.schedulable());
    let mut m = Monitor::new(Some(tokio::runtime::Handle::current()));
    assert_eq!(m.sync(reg.health_wants()).started, 2);
    flags_become(&up, 0, TIMEOUT + SLACK, "listening server").await;
    sleep(INTERVAL).await;
    assert_eq!(flags(&down), DEST_F_DOWN);

    // A server added at runtime gets the service's check, pending until it passes.
    reg.add_server("web", ringvs::config::ServerConfig::new(srv2.addr, 3))
        .unwrap();
    let added = dest(&reg, srv2.addr);
    assert_eq!(flags(&added), DEST_F_DOWN);
    let r = m.sync(reg.health_wants());
    assert_eq!((r.started, r.kept), (1, 2));
    flags_become(&added, 0, TIMEOUT + SLACK, "added server").await;

    // A weight change touches no health state.
    reg.set_weight("web", srv.addr, 0).unwrap();
    assert_eq!(m.sync(reg.health_wants()).kept, 3);

    // A removed server stops being checked: the registry's bit drains it, ours is gone.
    reg.remove_server("web", dead).unwrap();
    let r = m.sync(reg.health_wants());
    assert_eq!((r.stopped, r.kept), (1, 2));
    assert_eq!(down.flags(), DEST_F_REMOVED);
    assert!(m.status("web", dead).is_none());

    // A reload with the same servers keeps their checkers and state.
    let mut cfgs = reg.service_configs();
    let before = m.status("web", srv2.addr).unwrap();
    reg.apply(&cfgs).unwrap();
    let r = m.sync(reg.health_wants());
    assert_eq!((r.started, r.stopped, r.kept), (0, 0, 2));
    let after = m.status("web", srv2.addr).unwrap();
    assert_eq!((after.health, after.since), (before.health, before.since));

    // A reload without the check: servers are no longer checked and serve again.
    srv.task.abort();
    flags_become(
        &up,
        DEST_F_DOWN,
        INTERVAL * FALL + TIMEOUT + SLACK,
        "srv stopped",
    )
    .await;
    for c in cfgs.iter_mut() {
        c.health = None;
        for s in c.servers.iter_mut() {
            s.health = None;
        }
    }
    reg.apply(&cfgs).unwrap();
    assert_eq!(m.sync(reg.health_wants()).stopped, 2);
    assert_eq!(flags(&up), 0);
    assert!(m.is_empty());
}
