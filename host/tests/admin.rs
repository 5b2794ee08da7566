//! The admin socket end to end, in process: a real [`Daemon`] whose queues run on no device
//! ([`Daemon::detached`]; the test drives them with packets), the real socket code
//! ([`admin::bind`], [`admin::serve`]) and the real client ([`client::call`], and the
//! `ringvs` binary).
//!
//! - runtime service edits keep connections; removals drain, or expire with `--expire`;
//! - bad input of every kind is answered with a clear error and changes nothing;
//! - a request line over the limit closes the connection;
//! - the CLI against a stopped daemon names the socket and says the daemon is not running;
//! - socket permissions and peer credentials, with real non-root peers (`setpriv`): needs
//!   root; without it those tests print a notice and pass, unless `RINGVS_REQUIRE_ROOT` is
//!   set;
//! - a swap or reload of a plugin whose file was rebuilt takes the new build, on the queues
//!   too, and reports both hashes.

mod common;

use common::plugins::plugin;
use ringvs::config::{self, ServiceEdit};
use ringvs::control::admin;
use ringvs::control::client;
use ringvs::control::daemon::Daemon;
use ringvs::control::protocol::{ListResult, Request};
use ringvs::dataplane::stats::DropReason;
use ringvs::dataplane::testkit::{tcp, TWO_SERVICES};
use ringvs::dataplane::Shard;
use ringvs::io::process_packets;
use ringvs::wire::tcp::flags::{ACK, SYN};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddrV4;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::plugins as built;

const NOBODY: u32 = 65_534;
/// A supplementary group of the test's peers that is not the admin group.
const OTHER: u32 = 100;

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// A detached daemon serving its admin socket on a thread; stops when dropped.
struct Director {
    dir: PathBuf,
    socket: PathBuf,
    shards: Vec<Shard>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Director {
    fn start(director: &str) -> Director {
        Director::start_with(director, admin::Limits::DEFAULT)
    }

    fn start_with(director: &str, limits: admin::Limits) -> Director {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringvs-admin-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("admin.sock");
        let config = dir.join("ringvs.toml");
        std::fs::write(
            &config,
            format!(
                "[director]\nadmin_socket = \"{}\"\nmetrics_listen = \"off\"\nconn_memory_limit = \"4MiB\"\n{director}\n{TWO_SERVICES}",
                socket.display()
            ),
        )
        .unwrap();
        let cfg = config::load_with_env(&config, false).unwrap();
        let group = cfg.director.admin_group.clone();
        let (mut daemon, shards) = Daemon::detached(cfg).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _in_runtime = rt.enter();
            admin::bind(&socket, group.as_deref()).unwrap()
        };
        daemon.attach_admin(listener.access());
        let daemon = Arc::new(Mutex::new(daemon));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = admin::serve_with(listener, daemon, limits) => {}
                    _ = rx => {}
                }
            });
        });
        Director {
            dir,
            socket,
            shards,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn call(&self, req: Request) -> Result<serde_json::Value, String> {
        client::call(&self.socket, &req)
    }

    fn list(&self) -> ListResult {
        serde_json::from_value(self.call(Request::List {}).unwrap()).unwrap()
    }

    /// The list as JSON text: what "unchanged" is compared on.
    fn state(&self) -> String {
        serde_json::to_string(&self.list()).unwrap()
    }

    /// Runs packets through queue 0 after it has applied what the control plane sent.
    fn packets(&mut self, pkts: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let shard = &mut self.shards[0];
        process_packets(shard, &[]);
        let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
        process_packets(shard, &refs)
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.shards[0].counters().drops[r as usize]
    }

    /// Runs the `ringvs` binary against this director, optionally as another user.
    fn cli(&self, prefix: &[&str], args: &[&str]) -> Output {
        let bin = env!("CARGO_BIN_EXE_ringvs");
        let mut cmd = if prefix.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(bin);
            c
        };
        cmd.args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prefix:?} {bin}: {e}"))
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn svc<'a>(l: &'a ListResult, name: &str) -> &'a ringvs::control::protocol::ServiceInfo {
    l.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {l:?}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn service_edits_keep_connections_and_removals_drain_or_expire() {
    let mut d = Director::start("");
    let vip = a("10.77.100.100:80");
    let rs1 = a("10.77.1.1:8080");
    let c1 = a("10.77.0.2:40000");
    let out = d.packets(&[tcp(c1, vip, SYN, b"")]);
    assert_eq!(out[0], Some(tcp(c1, rs1, SYN, b"")), "c1 scheduled to rs1");

    // Edit: scheduler and one timeout. Only those change; c1 keeps its server.
    let r = d.call(Request::ServiceEdit {
        name: "web".into(),
        edit: ServiceEdit {
            vip: None,
            proto: None,
            forward: None,
            scheduler: Some("rr".into()),
            timeouts: vec![(
                "established".to_string(),
                config::Quantity::Text("600s".into()),
            )],
            defense: None,
            health: None,
            syn_proxy: None,
            max_conns: None,
            no_health: false,
            ..Default::default()
        },
    });
    assert_eq!(r, Ok("ok".into()));
    let l = d.list();
    assert_eq!(svc(&l, "web").scheduler, "rr");
    assert_eq!(svc(&l, "web").servers.len(), 2);
    assert_eq!(
        d.packets(&[tcp(c1, vip, ACK, b"")])[0],
        Some(tcp(c1, rs1, ACK, b"")),
        "an edit keeps the flow on its server"
    );
    // The new timeout applies from the flow's next transition on.
    let conn = d.shards[0].table().iter().next().unwrap().1;
    let left = conn.expires().saturating_sub(d.shards[0].now());
    let ticks = left as f64 / ringvs::conn::TICKS_PER_SEC as f64;
    assert!(
        (590.0..=600.0).contains(&ticks),
        "established timeout is 600 s now, {ticks} s left"
    );
    // An edit that changes nothing says so.
    let same = Request::ServiceEdit {
        name: "web".into(),
        edit: ServiceEdit {
            vip: Some("10.77.100.100:80".into()),
            proto: Some("tcp".into()),
            forward: Some("nat".into()),
            scheduler: Some("rr".into()),
            timeouts: Default::default(),
            defense: None,
            health: None,
            syn_proxy: None,
            max_conns: None,
            no_health: false,
            ..Default::default()
        },
    };
    assert_eq!(d.call(same), Ok("unchanged".into()));

    // Add a service and a server, through the CLI this time.
    let o = d.cli(
        &[],
        &[
            "service",
            "add",
            "api",
            "--vip",
            "10.77.100.101:80",
            "--scheduler",
            "rr",
            "--timeout",
            "fin_wait=30s",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = d.cli(&[], &["server", "add", "api", "10.77.1.3:80", "-w", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let api = a("10.77.100.101:80");
    let rs3 = a("10.77.1.3:80");
    let c2 = a("10.77.0.3:40000");
    assert_eq!(
        d.packets(&[tcp(c2, api, SYN, b"")])[0],
        Some(tcp(c2, rs3, SYN, b"")),
        "the new service forwards"
    );
    let o = d.cli(&[], &["list"]);
    let listed = text(&o.stdout);
    assert!(listed.contains("TCP  10.77.100.101:80 rr\n"), "{listed}");
    assert!(
        listed.contains(&format!("  -> {:<28} Masq    2      ", "10.77.1.3:80")),
        "{listed}"
    );

    // A service added with a health check: servers added to it at runtime are checked.
    // The server is on loopback (a closed port: checks never leave the machine); its checker
    // runs live, so only that it is checked is asserted, and it is removed before the
    // refused edits compare the whole state.
    let o = d.cli(
        &[],
        &[
            "service",
            "add",
            "hc",
            "--vip",
            "10.77.100.104:80",
            "--health",
            r#"check = "tcp", interval = "1s", fall = 2"#,
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = d.cli(&[], &["server", "add", "hc", "127.0.0.1:9"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let l = d.list();
    assert_eq!(svc(&l, "hc").flags, ["health tcp quiesce"]);
    assert_ne!(svc(&l, "hc").servers[0].health, "unchecked");
    // An edit replaces the check, for the servers that used the service's.
    let o = d.cli(
        &[],
        &[
            "service",
            "edit",
            "hc",
            "--health",
            r#"check = "http", path = "/hc", on_fail = "remove""#,
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(svc(&d.list(), "hc").flags, ["health http remove"]);
    let o = d.cli(&[], &["service", "edit", "hc", "--no-health"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let l = d.list();
    assert!(svc(&l, "hc").flags.is_empty(), "{:?}", svc(&l, "hc").flags);
    assert_eq!(svc(&l, "hc").servers[0].health, "unchecked");
    let o = d.cli(&[], &["service", "remove", "hc"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A bad check is refused by the daemon with the key named, or by the CLI before it.
    let before = d.state();
    let o = d.cli(
        &[],
        &["service", "edit", "api", "--health", r#"check = "icmp""#],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("health.check"),
        "{}",
        text(&o.stderr)
    );
    let o = d.cli(&[], &["service", "edit", "api", "--health", "check = tcp"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("expected the keys of a health table"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(d.state(), before);

    // Remove a service: its flow drains, then --expire on the draining service ends it.
    let o = d.cli(&[], &["service", "remove", "web"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(svc(&d.list(), "web").draining);
    assert_eq!(
        d.packets(&[tcp(c1, vip, ACK, b"")])[0],
        Some(tcp(c1, rs1, ACK, b"")),
        "a removed service's connection drains"
    );
    // Its name and address stay taken while it drains: a new service there would cut c1.
    let before = d.state();
    for (name, vip) in [("web2", "10.77.100.100:80"), ("web", "10.77.100.103:80")] {
        let e = d.call(add_req(name, vip, None, None, None)).unwrap_err();
        assert!(
            e.contains(
                "removed service \"web\" (tcp 10.77.100.100:80) still has 1 connection(s) draining"
            ),
            "{e}"
        );
    }
    assert_eq!(d.state(), before);
    let c3 = a("10.77.0.4:40000");
    assert_eq!(
        d.packets(&[tcp(c3, vip, SYN, b"")])[0],
        None,
        "a draining service takes no new flows"
    );
    let before = d.drops(DropReason::DestRemoved);
    let o = d.cli(&[], &["service", "remove", "web", "--expire"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(d.packets(&[tcp(c1, vip, ACK, b"")])[0], None);
    assert_eq!(d.drops(DropReason::DestRemoved), before + 1);

    // Remove a server with --expire: its flow ends on its next packet.
    let o = d.cli(
        &[],
        &["server", "remove", "api", "10.77.1.3:80", "--expire"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(d.packets(&[tcp(c2, api, ACK, b"")])[0], None);
    assert_eq!(d.drops(DropReason::DestRemoved), before + 2);
    assert!(
        d.shards[0].table().is_empty(),
        "both expired connections are gone"
    );

    // A reload applies the file again: runtime edits are not written to it.
    assert!(d
        .call(Request::Reload {
            dry_run: false,
            keep_runtime: false
        })
        .is_ok());
    let l = d.list();
    assert!(!svc(&l, "web").draining, "web is back from the file");
    assert!(l.services.iter().all(|s| s.name != "api" || s.draining));
}

/// Sends raw bytes on a fresh connection and reads one answer line.
fn raw_once(socket: &Path, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn malformed_requests_are_explained_and_change_nothing() {
    let d = Director::start("");
    let before = d.state();
    let cases: &[(&[u8], &str)] = &[
        (b"{nope\n", "not valid JSON"),
        (b"[1,2,3]\n", "must be a JSON object"),
        (b"\"list\"\n", "must be a JSON object"),
        (b"{\"cmd\":\"list\"}\n", "lacks \"v\""),
        (b"{\"v\":2,\"cmd\":\"list\"}\n", "unsupported protocol version 2"),
        (b"{\"v\":\"1\",\"cmd\":\"list\"}\n", "unsupported protocol version"),
        (b"{\"v\":1}\n", "missing field `cmd`"),
        (b"{\"v\":1,\"cmd\":\"format-disk\"}\n", "unknown variant `format-disk`"),
        (
            b"{\"v\":1,\"cmd\":\"server-weight\",\"service\":\"web\",\"addr\":\"10.77.1.1:8080\",\"weight\":0,\"force\":true}\n",
            "unknown field `force`",
        ),
        (
            b"{\"v\":1,\"cmd\":\"server-weight\",\"service\":\"web\",\"addr\":\"10.77.1.1:8080\",\"weight\":-1}\n",
            "bad request",
        ),
        (
            b"{\"v\":1,\"cmd\":\"server-weight\",\"service\":\"web\",\"addr\":\"10.77.1.1:8080\",\"weight\":\"0\"}\n",
            "bad request",
        ),
        (
            b"{\"v\":1,\"cmd\":\"server-remove\",\"service\":\"web\"}\n",
            "missing field `addr`",
        ),
        (b"\xff\xfe\x00\x01garbage\x80\n", "not UTF-8"),
        (b"\x00\x00\x00\x00\n", "not valid JSON"),
        (b"GET / HTTP/1.1\r\n", "not valid JSON"),
    ];
    // All on one connection: every bad line gets its error and the session goes on.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for (bytes, want) in cases {
        s.write_all(bytes).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false, "{bytes:?}: {line}");
        assert_eq!(v["v"], 1);
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(want), "{bytes:?}: want {want:?}, got {e:?}");
    }
    s.write_all(b"\n   \n{\"v\":1,\"cmd\":\"list\"}\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"v\":1,\"ok\":true"), "{line}");
    assert_eq!(d.state(), before);
    // The same on fresh connections.
    for (bytes, want) in cases {
        let v = raw_once(&d.socket, bytes);
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    assert_eq!(d.state(), before);
}

/// Reads until the peer closes; true if it did (EOF, or a reset because it left our extra
/// bytes unread).
fn closed(s: &mut UnixStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn oversized_requests_close_the_connection() {
    let d = Director::start("");
    let before = d.state();
    let limit = ringvs::control::protocol::MAX_REQUEST;
    let cases: Vec<Vec<u8>> = vec![
        // No newline at all.
        vec![b'a'; limit + 10_000],
        // A complete line, just over the limit.
        [vec![b' '; limit + 1], b"\n".to_vec()].concat(),
        // A valid request padded over the limit.
        {
            let mut v = br#"{"v":1,"cmd":"server-weight","service":"web","addr":"10.77.1.1:8080","weight":0,"x":""#.to_vec();
            v.resize(limit + 100, b'x');
            v.extend_from_slice(b"\"}\n");
            v
        },
        // Binary garbage.
        (0..limit + 5_000)
            .map(|i| (i * 7 + 3) as u8)
            .filter(|b| *b != b'\n')
            .collect(),
    ];
    for bytes in cases {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The daemon may close before reading everything: a failed write is fine.
        let _ = s.write_all(&bytes);
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false);
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("request too large") && e.contains(&limit.to_string()),
            "{e}"
        );
        assert!(
            closed(&mut s),
            "the connection is closed after an oversized line"
        );
    }
    // A request of exactly the limit is still served.
    let mut v = br#"{"v":1,"cmd":"list"}"#.to_vec();
    v.resize(limit, b' ');
    v.push(b'\n');
    assert_eq!(raw_once(&d.socket, &v)["ok"], true);
    assert_eq!(d.state(), before);
}

fn add_req(
    name: &str,
    vip: &str,
    scheduler: Option<&str>,
    forward: Option<&str>,
    defense: Option<&str>,
) -> Request {
    Request::ServiceAdd {
        name: name.into(),
        edit: ServiceEdit {
            vip: Some(vip.into()),
            proto: None,
            forward: forward.map(Into::into),
            scheduler: scheduler.map(Into::into),
            timeouts: Vec::new(),
            defense: defense.map(|d| vec![d.to_string()]),
            health: None,
            syn_proxy: None,
            max_conns: None,
            no_health: false,
            ..Default::default()
        },
    }
}

fn edit_req(
    name: &str,
    vip: Option<&str>,
    proto: Option<&str>,
    timeouts: &[(&str, &str)],
) -> Request {
    Request::ServiceEdit {
        name: name.into(),
        edit: ServiceEdit {
            vip: vip.map(Into::into),
            proto: proto.map(Into::into),
            forward: None,
            scheduler: None,
            timeouts: timeouts
                .iter()
                .map(|(k, v)| (k.to_string(), config::Quantity::Text(v.to_string())))
                .collect(),
            defense: None,
            health: None,
            syn_proxy: None,
            max_conns: None,
            no_health: false,
            ..Default::default()
        },
    }
}

#[test]
fn refused_edits_are_explained_and_change_nothing() {
    let d = Director::start("");
    let before = d.state();
    let server_add = |service: &str, addr: &str, weight: u64| Request::ServerAdd {
        service: service.into(),
        addr: addr.into(),
        weight: Some(weight),
        upper: None,
        lower: None,
        forward: None,
    };
    let service_add = |name: &str, vip: &str| add_req(name, vip, None, None, None);
    let add_x =
        |scheduler, forward, defense| add_req("x", "10.77.100.102:80", scheduler, forward, defense);
    let edit = |name: &str| edit_req(name, None, None, &[]);
    let cases: Vec<(Request, &str)> = vec![
        (
            server_add("nope", "10.77.1.9:80", 1),
            "no service named \"nope\"",
        ),
        (
            server_add("web", "10.77.1.1:8080", 1),
            "service \"web\" already has server 10.77.1.1:8080",
        ),
        (
            server_add("web", "10.77.1.9:80", 65_536),
            "weight 65536 is out of range (0 to 65535)",
        ),
        (
            server_add("web", "10.77.1.x", 1),
            "server-add: key `addr`: expected an address like \"10.77.100.100:80\", found \"10.77.1.x\"",
        ),
        (
            Request::ServerWeight {
                service: "web".into(),
                addr: "10.77.1.1:8080".into(),
                weight: 70_000,
            },
            "weight 70000 is out of range",
        ),
        (
            Request::ServerWeight {
                service: "web".into(),
                addr: "10.77.1.9:8080".into(),
                weight: 1,
            },
            "service \"web\" has no server 10.77.1.9:8080",
        ),
        (
            Request::ServerRemove {
                service: "web".into(),
                addr: "10.77.1.9:8080".into(),
                expire: false,
            },
            "service \"web\" has no server 10.77.1.9:8080",
        ),
        (
            Request::ServerRemove {
                service: "web".into(),
                addr: "10.77.1.9:8080".into(),
                expire: true,
            },
            "service \"web\" has no server 10.77.1.9:8080",
        ),
        (
            service_add("web", "10.77.100.102:80"),
            "a service named \"web\" already exists",
        ),
        (
            service_add("web2", "10.77.100.100:80"),
            "service \"web\" already uses that virtual address",
        ),
        (
            service_add("bad name", "10.77.100.102:80"),
            "key `name`: expected letters",
        ),
        (service_add("x", "10.77.100.102"), "key `vip`"),
        (
            add_x(Some("lblc"), None, None),
            "\"lblc\" is neither a built-in scheduler",
        ),
        // Neither loaded nor in the catalogue (catalogue defenses load at runtime: see
        // tests/catalogue.rs).
        (
            add_x(None, None, Some("no-such-defense")),
            "key `defense[0]`",
        ),
        (add_x(None, Some("dr"), None), "which needs director.io = \"af_xdp\""),
        (edit("nope"), "no service named \"nope\""),
        (
            edit_req("web", Some("10.77.100.102:80"), None, &[]),
            "the virtual address identifies the service",
        ),
        (
            edit_req("web", None, Some("udp"), &[]),
            "the protocol identifies the service",
        ),
        (
            edit_req("web", None, None, &[("syn_recv", "0s")]),
            "key `timeouts.syn_recv`: expected a duration of at least 1s",
        ),
        (
            Request::ServiceRemove {
                name: "nope".into(),
                expire: false,
            },
            "no service named \"nope\"",
        ),
        (
            Request::ServiceRemove {
                name: "nope".into(),
                expire: true,
            },
            "no service named \"nope\"",
        ),
        (
            Request::PluginSwap {
                service: "web".into(),
                target: "nope".into(),
            },
            "is neither a built-in scheduler",
        ),
        (
            Request::Zero {
                service: Some("nope".into()),
            },
            "no service named \"nope\"",
        ),
    ];
    for (req, want) in cases {
        let e = d
            .call(req.clone())
            .expect_err(&format!("{req:?} must fail"));
        assert!(e.contains(want), "{req:?}: want {want:?}, got {e:?}");
        assert_eq!(d.state(), before, "{req:?} changed the state");
    }
    // The CLI shows the same errors, exits non-zero, and changes nothing.
    for (args, want) in [
        (
            vec!["server", "weight", "web", "10.77.1.1:8080", "65536"],
            "weight 65536 is out of range (0 to 65535)",
        ),
        (
            vec!["server", "add", "web", "10.77.1.2:8080"],
            "already has server",
        ),
        (
            vec!["server", "remove", "wbe", "10.77.1.2:8080"],
            "no service named \"wbe\"",
        ),
        (
            vec!["service", "add", "dns", "--vip", "10.77.100.100:5353"],
            "already exists",
        ),
        (
            vec!["service", "edit", "web", "--timeout", "established"],
            "expected STATE=DURATION",
        ),
        (
            vec!["service", "remove", "nope"],
            "no service named \"nope\"",
        ),
        (
            vec!["server", "weight", "web", "10.77.1.1:8080", "-1"],
            "error",
        ),
    ] {
        let o = d.cli(&[], &args);
        assert!(!o.status.success(), "{args:?} must fail");
        let e = text(&o.stderr);
        assert!(e.contains(want), "{args:?}: want {want:?}, got {e:?}");
        assert_eq!(d.state(), before, "{args:?} changed the state");
    }
}

/// `server-add` and runtime edits are validated as the config file is (issue 11): no
/// unspecified address, no port 0, and no realserver or sorry server at the virtual address
/// of any service (a forwarding loop bounded only by the TTL). Refused, nothing changes.
#[test]
fn runtime_servers_are_validated_as_the_config_is() {
    let d = Director::start("");
    let before = d.state();
    let server_add = |service: &str, addr: &str| Request::ServerAdd {
        service: service.into(),
        addr: addr.into(),
        weight: None,
        upper: None,
        lower: None,
        forward: None,
    };
    let specific = "with a nonzero port and a specific address";
    let cases: Vec<(Request, &str)> = vec![
        (server_add("web", "0.0.0.0:0"), specific),
        (server_add("web", "0.0.0.0:8080"), specific),
        (server_add("web", "10.77.1.9:0"), specific),
        (
            server_add("web", "10.77.100.100:80"),
            "10.77.100.100 is the virtual address of service \"web\"; packets sent to it would come back into the director",
        ),
        // Another service's VIP, on another port, is the same loop.
        (
            server_add("dns", "10.77.100.100:8080"),
            "cannot be a realserver",
        ),
        // A new service whose VIP is a realserver's address.
        (
            add_req("x", "10.77.1.1:81", None, None, None),
            "10.77.1.1 is the virtual address of service \"x\"",
        ),
        (
            Request::ServiceEdit {
                name: "web".into(),
                edit: ServiceEdit {
                    sorry_server: Some("10.77.100.100:80".into()),
                    ..ServiceEdit::default()
                },
            },
            "cannot be a sorry server",
        ),
    ];
    for (req, want) in cases {
        let e = d
            .call(req.clone())
            .expect_err(&format!("{req:?} must fail"));
        assert!(e.contains(want), "{req:?}: want {want:?}, got {e:?}");
        assert_eq!(d.state(), before, "{req:?} changed the state");
    }
    let o = d.cli(&[], &["server", "add", "web", "0.0.0.0:0"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains(specific), "{}", text(&o.stderr));
    assert_eq!(d.state(), before);
}

/// The admin socket bounds its connections (issue 11: nothing did): one over the cap is
/// answered with an error and closed, an idle one is closed after the idle timeout (freeing
/// its slot), and requests over the per-connection rate are answered with an error, not run,
/// while the connection stays usable.
#[test]
fn admin_connections_are_capped_timed_out_and_rate_limited() {
    let limits = admin::Limits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(2),
        requests_per_sec: 5,
    };
    let d = Director::start_with("", limits);
    let before = d.state();
    // Four connections take every slot: each has been served (a connection made while the
    // `state` call's session was still ending may have been refused: it tries again).
    let status = b"{\"v\":1,\"cmd\":\"status\"}\n";
    let mut held: Vec<UnixStream> = Vec::new();
    while held.len() < 4 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(status).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        if line.contains("\"ok\":true") {
            held.push(s);
        } else {
            assert!(line.contains("too many admin connections"), "{line}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let v = raw_once(&d.socket, b"{\"v\":1,\"cmd\":\"status\"}\n");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(e.contains("too many admin connections (limit 4)"), "{v}");
    // The idle timeout closes them, with a word, and the slots come back.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(&*s).read_line(&mut line).unwrap();
        assert!(
            line.contains("idle for 2 s; closing the connection"),
            "{line}"
        );
        assert!(closed(s));
    }
    assert_eq!(d.state(), before);
    // Twenty requests at once on one connection: the first five run, later ones within the
    // same instant are refused; a second later the connection serves again.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(&b"{\"v\":1,\"cmd\":\"status\"}\n".repeat(20))
        .unwrap();
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..20 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.contains("\"ok\":true") {
            ok += 1;
        } else {
            assert!(
                line.contains("rate limit: more than 5 requests a second"),
                "{line}"
            );
            limited += 1;
        }
    }
    assert!(
        (5..20).contains(&ok) && limited > 0,
        "{ok} ran, {limited} refused"
    );
    std::thread::sleep(Duration::from_millis(400));
    s.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
}

/// Calls `req` on a thread and waits at most 20 s for the answer; on a timeout, `unstick`
/// runs (to release what the daemon hangs on) and the test fails.
fn call_within(
    d: &Director,
    req: Request,
    unstick: impl FnOnce(),
) -> Result<serde_json::Value, String> {
    let socket = d.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = req.clone();
    std::thread::spawn(move || {
        let _ = tx.send(client::call(&socket, &r));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(res) => res,
        Err(_) => {
            unstick();
            panic!("{req:?}: no answer in 20 s");
        }
    }
}

/// `plugin swap SERVICE PATH` reads regular files only, at most `MAX_PLUGIN_BYTES`, off the
/// daemon's lock (issue 11): a FIFO (which hung the daemon: every later `list` timed out), a
/// symlink to one, a symlink to `/dev/zero` (which read until memory ran out) and an
/// oversized file are refused at once, and the daemon answers on.
#[test]
fn plugin_swap_takes_regular_files_only_and_the_daemon_keeps_answering() {
    let d = Director::start("");
    let before = d.state();
    let fifo = d.dir.join("fifo.wasm");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // Safety: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let fifo_link = d.dir.join("fifo-link.wasm");
    std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();
    let zero = d.dir.join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let big = d.dir.join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(ringvs::plugin::MAX_PLUGIN_BYTES + 1)
        .unwrap();
    // Releases a daemon stuck opening the FIFO (before the fix): a writer that closes.
    let unstick = || {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    };
    let regular = "a plugin must be a regular file";
    for (path, want) in [
        (&fifo, format!("a FIFO; {regular}")),
        (&fifo_link, format!("a FIFO; {regular}")),
        (&zero, format!("a device; {regular}")),
        (
            &big,
            "over the limit of 16777216 bytes for a plugin".to_string(),
        ),
        (&d.dir, "directory".to_string()),
    ] {
        let req = Request::PluginSwap {
            service: "web".into(),
            target: path.display().to_string(),
        };
        let e = call_within(&d, req, unstick).expect_err("must fail");
        assert!(
            e.contains(&want),
            "{}: want {want:?}, got {e:?}",
            path.display()
        );
        assert_eq!(d.state(), before, "the daemon answers, unchanged");
    }
    // The CLI says the same.
    let o = d.cli(&[], &["plugin", "swap", "web", fifo.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains(regular), "{}", text(&o.stderr));
    assert_eq!(d.state(), before);
}

/// A file swapped in by path whose name the config pins (`[plugins.NAME] sha256`) must match
/// the pin (issue 11: paths given at runtime ignored it).
#[test]
fn a_swap_by_path_honours_the_configs_sha256_pin() {
    use sha2::Digest;
    let rr = std::fs::read(built::plugin("sched-rr")).unwrap();
    let lc = std::fs::read(built::plugin("sched-lc")).unwrap();
    let dir = std::env::temp_dir().join(format!("ringvs-admin-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pinned.wasm");
    std::fs::write(&file, &rr).unwrap();
    let sha: String = sha2::Sha256::digest(&rr)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let d = Director::start(&format!(
        "[plugins.pinned]\npath = \"{}\"\nsha256 = \"{sha}\"\n",
        file.display()
    ));
    let before = d.state();
    let swap = || Request::PluginSwap {
        service: "web".into(),
        target: file.display().to_string(),
    };
    // The file changed since the config pinned it.
    std::fs::write(&file, &lc).unwrap();
    let e = d
        .call(swap())
        .expect_err("a file that is not the pinned one");
    assert!(e.contains("sha256 mismatch: the config pins"), "{e}");
    assert_eq!(d.state(), before);
    // The pinned contents swap in.
    std::fs::write(&file, &rr).unwrap();
    d.call(swap()).unwrap();
    assert!(d.state().contains("\"pinned\""), "{}", d.state());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_against_a_stopped_daemon_says_so() {
    let dir = std::env::temp_dir().join(format!("ringvs-admin-stopped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_ringvs");
    let missing = dir.join("missing.sock");
    // A socket file left behind by a daemon that died: nobody listens.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for sock in [&missing, &stale] {
        for args in [
            &["list"][..],
            &["status"],
            &["server", "weight", "web", "10.77.1.1:80", "1"],
        ] {
            let o = Command::new(bin)
                .args(args)
                .arg("--socket")
                .arg(sock)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            let e = text(&o.stderr);
            assert!(
                e.starts_with(&format!(
                    "ringvs: cannot connect to the admin socket {}:",
                    sock.display()
                )),
                "{e}"
            );
            assert!(e.contains("is ringvs running?"), "{e}");
            assert!(o.stdout.is_empty());
        }
    }
    // Through a config file, the path comes from director.admin_socket.
    let cfg = dir.join("ringvs.toml");
    std::fs::write(
        &cfg,
        format!("[director]\nadmin_socket = \"{}\"\n", missing.display()),
    )
    .unwrap();
    let o = Command::new(bin)
        .args(["list", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let e = text(&o.stderr);
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("is ringvs running?"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Root is needed to act as other users. Without it: a notice, or a failure if
/// `RINGVS_REQUIRE_ROOT` is set.
fn have_root() -> bool {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    match std::env::var("RINGVS_REQUIRE_ROOT") {
        Ok(v) if !v.is_empty() && v != "0" => {
            panic!("the admin socket permission tests need root and RINGVS_REQUIRE_ROOT is set")
        }
        _ => eprintln!(
            "notice: skipping admin socket permission test, not root (set RINGVS_REQUIRE_ROOT=1 to fail instead)"
        ),
    }
    false
}

/// `setpriv` arguments that make the `ringvs` client run as nobody with these groups.
fn as_nobody(gid: u32, groups: &[u32]) -> Vec<String> {
    let mut v = vec![
        "setpriv".to_string(),
        format!("--reuid={NOBODY}"),
        format!("--regid={gid}"),
    ];
    if groups.is_empty() {
        v.push("--clear-groups".into());
    } else {
        v.push(format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    v
}

/// A group for `director.admin_group`: `staff` (gid 50 on Debian) if it exists, else the
/// first ordinary group of `/etc/group` (not root's, not nogroup, not in the test's way).
fn admin_group() -> (String, u32) {
    let groups = std::fs::read_to_string("/etc/group").expect("/etc/group");
    let all: Vec<(String, u32)> = groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_string();
            let gid = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .collect();
    all.iter()
        .find(|(n, _)| n == "staff")
        .or_else(|| {
            all.iter()
                .find(|(_, g)| *g != 0 && *g != OTHER && *g < NOBODY - 1)
        })
        .cloned()
        .expect("a group in /etc/group other than root, users and nogroup")
}

fn run_as(d: &Director, who: &[String], args: &[&str]) -> Output {
    let who: Vec<&str> = who.iter().map(String::as_str).collect();
    d.cli(&who, args)
}

#[test]
fn socket_is_private_and_non_root_peers_are_refused() {
    if !have_root() {
        return;
    }
    let d = Director::start("");
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "created 0600");
    assert_eq!(meta.uid(), 0);
    let before = d.state();
    // A non-root user cannot even connect: the file says no.
    let nobody = as_nobody(NOBODY, &[]);
    let o = run_as(&d, &nobody, &["list"]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains(&d.socket.display().to_string()), "{e}");
    assert!(e.contains("Permission denied"), "{e}");
    assert!(e.contains("only root or the admin group may use it"), "{e}");
    // Even if an operator opens the file to everyone, the daemon checks the peer.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = run_as(
        &d,
        &nobody,
        &["server", "weight", "web", "10.77.1.1:8080", "0"],
    );
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert_eq!(
        e.trim_end(),
        "ringvs: permission denied: only root or the admin group may use this socket"
    );
    assert_eq!(d.state(), before, "a refused peer changed nothing");
    // A group the daemon was not told about does not help.
    let o = run_as(&d, &as_nobody(NOBODY, &[admin_group().1]), &["list"]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    // Root is served.
    let o = d.cli(&[], &["list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn admin_group_members_are_allowed_by_primary_or_supplementary_group() {
    if !have_root() {
        return;
    }
    let (group, gid) = admin_group();
    let d = Director::start(&format!("admin_group = \"{group}\""));
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "0660 with an admin group");
    assert_eq!((meta.uid(), meta.gid()), (0, gid));
    assert_eq!(meta.mode() & 0o007, 0, "never world-accessible");

    // A member by a supplementary group: served (the primary gid alone would not be).
    let member = as_nobody(NOBODY, &[OTHER, gid]);
    let o = run_as(&d, &member, &["list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("TCP  10.77.100.100:80 wlc"),
        "{}",
        text(&o.stdout)
    );
    // And may edit.
    let o = run_as(
        &d,
        &member,
        &["server", "weight", "web", "10.77.1.1:8080", "7"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(svc(&d.list(), "web").servers[0].weight, 7);
    // A member by its primary group.
    let o = run_as(&d, &as_nobody(gid, &[]), &["list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Not a member: refused by the file, and, with the file opened up, by the daemon.
    let before = d.state();
    let outsider = as_nobody(NOBODY, &[OTHER]);
    let o = run_as(&d, &outsider, &["list"]);
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = run_as(
        &d,
        &outsider,
        &["server", "weight", "web", "10.77.1.1:8080", "0"],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("permission denied: only root or the admin group"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(d.state(), before);
    // The supplementary member still gets in through the opened file.
    let o = run_as(&d, &member, &["list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn a_reload_that_removes_the_admin_group_revokes_its_access() {
    if !have_root() {
        return;
    }
    let (group, gid) = admin_group();
    let d = Director::start(&format!("admin_group = \"{group}\""));
    let conf = d.dir.join("ringvs.toml");
    let member = as_nobody(NOBODY, &[gid]);
    assert!(run_as(&d, &member, &["list"]).status.success());
    // A member's connection, opened before the reload (python3 as the member: one request
    // per line read from its standard input, the answer printed).
    let mut client = Command::new(&member[0])
        .args(&member[1..])
        .args([
            // Not a user's shim on PATH: the system's, which nobody may run.
            "/usr/bin/python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nf=s.makefile('rw')\nfor _ in sys.stdin:\n    f.write('{\"v\":1,\"cmd\":\"status\"}\\n'); f.flush()\n    print(f.readline().strip() or 'closed', flush=True)\n",
        ])
        .arg(&d.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 as the member");
    let mut to = client.stdin.take().unwrap();
    let mut from = BufReader::new(client.stdout.take().unwrap());
    let mut ask = || -> String {
        to.write_all(b"go\n").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        line
    };
    let first = ask();
    assert!(first.contains("\"ok\":true"), "{first}");

    let without = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&format!("admin_group = \"{group}\""), "");
    std::fs::write(&conf, &without).unwrap();
    let dry = d.cli(&[], &["reload", "--dry-run"]);
    let out = text(&dry.stdout);
    assert!(
        out.contains(&format!("~ director.admin_group {group} -> none")),
        "{out}"
    );
    let o = d.cli(&[], &["reload"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("director.admin_group {group} -> none")),
        "{}",
        text(&o.stdout)
    );
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "back to 0600");
    assert_ne!(meta.gid(), gid, "no longer the group's");
    // Even through a file opened to everyone, the daemon now refuses the group.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = run_as(&d, &member, &["list"]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("permission denied: only root or the admin group"),
        "{}",
        text(&o.stderr)
    );
    // The member's connection opened before: refused at its next request, and closed.
    let after = ask();
    assert!(
        after.contains("permission denied: only root or the admin group"),
        "{after}"
    );
    let _ = client.kill();
    let _ = client.wait();
    // And back: the group is given access again.
    std::fs::write(
        &conf,
        without.replacen(
            "[director]\n",
            &format!("[director]\nadmin_group = \"{group}\"\n"),
            1,
        ),
    )
    .unwrap();
    let o = d.cli(&[], &["reload"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, gid));
    assert!(run_as(&d, &member, &["list"]).status.success());
    // A group that does not exist is refused, naming the key, and changes nothing.
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf).unwrap().replace(
            &format!("admin_group = \"{group}\""),
            "admin_group = \"no-such-group-rvs\"",
        ),
    )
    .unwrap();
    let o = d.cli(&[], &["reload"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("director.admin_group: no group named \"no-such-group-rvs\""),
        "{}",
        text(&o.stderr)
    );
    assert!(run_as(&d, &member, &["list"]).status.success());
}

#[test]
fn peer_groups_are_read_from_the_socket() {
    let (a, b) = UnixStream::pair().unwrap();
    use std::os::fd::AsRawFd;
    let mut want: Vec<u32> = {
        // Safety: getgroups with a zero size only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut g = vec![0; n as usize];
        // Safety: `g` has room for `n` entries.
        let n = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
        g.truncate(n as usize);
        g
    };
    let mut got = admin::peer_groups(a.as_raw_fd()).unwrap();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    drop(b);
}

/// The realserver a rewritten packet goes to.
fn dst(pkt: &[u8]) -> SocketAddrV4 {
    let ip = [pkt[16], pkt[17], pkt[18], pkt[19]];
    SocketAddrV4::new(ip.into(), u16::from_be_bytes([pkt[22], pkt[23]]))
}

/// The realservers that new flows from `client` ports `ports` go to.
fn picks(d: &mut Director, client: &str, ports: std::ops::Range<u16>) -> Vec<SocketAddrV4> {
    let vip = a("10.77.100.100:80");
    let syns: Vec<Vec<u8>> = ports
        .map(|p| tcp(a(&format!("{client}:{p}")), vip, SYN, b""))
        .collect();
    d.packets(&syns)
        .into_iter()
        .map(|o| dst(&o.expect("forwarded")))
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(std::fs::read(path).unwrap()).into();
    ringvs::plugin::hex(&digest)
}

#[test]
fn a_swap_or_reload_of_a_rebuilt_plugin_takes_the_new_build_and_says_so() {
    let mut d = Director::start("");
    let file = d.dir.join("mine.wasm");
    let swap = |d: &Director| {
        d.call(Request::PluginSwap {
            service: "web".into(),
            target: file.display().to_string(),
        })
    };
    // First build: round robin. New flows of one client alternate.
    std::fs::copy(plugin("sched-rr"), &file).unwrap();
    let rr = sha256_hex(&file);
    assert_eq!(
        swap(&d),
        Ok("web: scheduler wlc -> mine on 1 queue(s)".into())
    );
    let p = picks(&mut d, "10.77.0.2", 1000..1004);
    assert_ne!(p[0], p[1], "rr alternates: {p:?}");

    // The same bytes again: nothing to do, said so.
    assert_eq!(
        swap(&d),
        Ok(format!(
            "web: scheduler mine unchanged ({} sha256 {rr})",
            file.display()
        )
        .into())
    );

    // Rebuilt under the same name: source hashing. Every new flow of one client goes to one
    // server, on the queue too (not only in the listing).
    std::fs::copy(plugin("sched-sh"), &file).unwrap();
    let sh = sha256_hex(&file);
    assert_ne!(rr, sh);
    assert_eq!(
        swap(&d),
        Ok(format!(
            "web: scheduler mine -> mine on 1 queue(s); {} rebuilt: sha256 {rr} -> {sh}",
            file.display()
        )
        .into())
    );
    for client in ["10.77.0.3", "10.77.0.4", "10.77.0.5"] {
        let p = picks(&mut d, client, 2000..2006);
        assert!(
            p.iter().all(|s| *s == p[0]),
            "sh: one server per client: {p:?}"
        );
    }
    let list: Vec<ringvs::control::protocol::PluginInfo> =
        serde_json::from_value(d.call(Request::Plugins {}).unwrap()).unwrap();
    let mine = list.iter().find(|p| p.name == "mine").unwrap();
    assert_eq!(
        (mine.sha256.as_str(), mine.services.as_slice()),
        (sh.as_str(), &["web".to_string()][..])
    );

    // A reload of a [plugins.NAME] whose file changed: the new build, both hashes said.
    let cfg_path = d.dir.join("ringvs.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let decl = format!("[plugins.decl]\npath = \"{}\"\n\n", file.display());
    let text = text.replacen("[[service]]", &format!("{decl}[[service]]"), 1);
    let text = text.replacen("scheduler = \"wlc\"", "scheduler = \"decl\"", 1);
    std::fs::write(&cfg_path, &text).unwrap();
    let reload = |d: &Director| {
        d.call(Request::Reload {
            dry_run: false,
            keep_runtime: false,
        })
    };
    let r = reload(&d).unwrap();
    assert!(r.as_str().unwrap().contains("web"), "{r}");
    std::fs::copy(plugin("sched-rr"), &file).unwrap();
    let r = reload(&d).unwrap();
    let r = r.as_str().unwrap();
    assert!(
        r.contains(&format!("plugin decl reloaded: sha256 {sh} -> {rr}")),
        "{r}"
    );
    let p = picks(&mut d, "10.77.0.6", 3000..3004);
    assert_ne!(p[0], p[1], "rr again after the reload: {p:?}");
}

#[test]
fn plugins_no_service_uses_any_more_are_unloaded() {
    let mut d = Director::start("");
    let names = |d: &Director| -> Vec<String> {
        let list: Vec<ringvs::control::protocol::PluginInfo> =
            serde_json::from_value(d.call(Request::Plugins {}).unwrap()).unwrap();
        list.into_iter().map(|p| p.name).collect()
    };
    let swap = |d: &Director, target: &str| {
        d.call(Request::PluginSwap {
            service: "web".into(),
            target: target.into(),
        })
        .unwrap()
    };
    // A catalogue plugin by name, then a build by path: each swap leaves the previous one
    // unused, and it is forgotten.
    swap(&d, "sched-rr");
    assert!(
        names(&d).contains(&"sched-rr".to_string()),
        "{:?}",
        names(&d)
    );
    let file = d.dir.join("mine.wasm");
    std::fs::copy(plugin("sched-sh"), &file).unwrap();
    swap(&d, &file.display().to_string());
    let now = names(&d);
    assert!(now.contains(&"mine".to_string()), "{now:?}");
    assert!(
        !now.contains(&"sched-rr".to_string()),
        "sched-rr unloaded: {now:?}"
    );
    // The new scheduler works (source hashing: one server per client).
    let p = picks(&mut d, "10.77.0.3", 2000..2004);
    assert!(p.iter().all(|s| *s == p[0]), "{p:?}");
    // Back to a built-in: the path build goes too; swapping by name loads it again.
    swap(&d, "rr");
    assert!(!names(&d).contains(&"mine".to_string()), "{:?}", names(&d));
    swap(&d, "sched-rr");
    assert!(names(&d).contains(&"sched-rr".to_string()));
}

#[test]
fn a_server_added_at_runtime_takes_its_own_forwarding_method() {
    let d = Director::start("tunnel_source = \"10.77.1.254\"");
    let add = |addr: &str, forward: Option<&str>| {
        d.call(Request::ServerAdd {
            service: "web".into(),
            addr: addr.into(),
            weight: None,
            upper: None,
            lower: None,
            forward: forward.map(str::to_string),
        })
    };
    // A bare address takes the service's port, as a tunnelled server needs.
    assert_eq!(add("10.77.1.9", Some("tun")), Ok("ok".into()));
    let list = d.list();
    let web = list.services.iter().find(|s| s.name == "web").unwrap();
    let tun = web
        .servers
        .iter()
        .find(|x| x.addr == "10.77.1.9:80")
        .unwrap();
    assert_eq!(tun.forward, "Tunnel");
    assert!(
        web.servers.iter().any(|x| x.forward == "Masq"),
        "the others keep NAT"
    );
    for (addr, forward, want) in [
        (
            "10.77.1.8:8080",
            Some("tun"),
            "its port must be the virtual service's (80)",
        ),
        (
            "10.77.1.8",
            Some("dr"),
            "which needs director.io = \"af_xdp\"",
        ),
        (
            "10.77.1.8",
            Some("gre"),
            "expected \"nat\", \"tun\" or \"dr\"",
        ),
    ] {
        let e = add(addr, forward).unwrap_err();
        assert!(e.contains(want), "{addr} {forward:?}: {e}");
    }
    let list = d.list();
    let web = list.services.iter().find(|s| s.name == "web").unwrap();
    assert!(
        !web.servers.iter().any(|x| x.addr.starts_with("10.77.1.8")),
        "refused adds change nothing"
    );
}

/// `ringvs ha ready` (a BGP speaker's check, docs/HA.md): ready while every service has a
/// realserver that can take a new flow; quiescing the last one makes it say which service
/// and exit 1; `ringvs status` shows the same.
#[test]
fn ha_ready_says_why_a_director_should_not_be_announced() {
    let d = Director::start("");
    let o = d.cli(&[], &["ha", "ready"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "ready\n");
    for addr in ["10.77.1.1:8080", "10.77.1.2:8080"] {
        let o = d.cli(&[], &["server", "weight", "web", addr, "0"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        // Not ready only once the last one is quiesced.
        let o = d.cli(&[], &["ha", "ready"]);
        assert_eq!(o.status.success(), addr != "10.77.1.2:8080", "{addr}");
    }
    let e = text(&d.cli(&[], &["ha", "ready"]).stderr);
    assert!(
        e.contains("not ready: service \"web\" (tcp 10.77.100.100:80): no realserver can take a new flow (2 configured"),
        "{e}"
    );
    assert!(!e.contains("dns"), "{e}");
    let s = text(&d.cli(&[], &["status"]).stdout);
    assert!(s.contains("not ready    service \"web\""), "{s}");
    let o = d.cli(&[], &["server", "weight", "web", "10.77.1.1:8080", "1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(d.cli(&[], &["ha", "ready"]).status.success());
}
