//! Least privilege (issue 11): with `director.user`, a running daemon has given up root and
//! every capability on every thread once it is set up, and still forwards and answers;
//! without it, it stays root with only the capabilities running needs.
//! Needs root (it creates a TUN device, in a network namespace of its own).

mod common;

use common::{have_root, in_netns};
use ringvs::control::client;
use ringvs::control::privileges;
use ringvs::control::protocol::Request;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `KEY:` of a `/proc/PID/status` text, split on whitespace.
fn field<'a>(status: &'a str, key: &str) -> Vec<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .split_whitespace()
        .collect()
}

/// Every thread's `/proc/PID/task/TID/status`, but the kernel's io_uring workers' (they run
/// no user code; `privileges::keep_only` leaves them be).
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter(|s| !s.starts_with("Name:\tiou-"))
        .collect()
}

fn wait_answering(socket: &Path, log: &Path) {
    let until = Instant::now() + Duration::from_secs(20);
    while client::call(socket, &Request::Status {}).is_err() {
        assert!(
            Instant::now() < until,
            "the daemon did not answer: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon started by this test in its network namespace, with `director` lines added to a
/// one-service config; stopped (SIGTERM, must exit 0) by [`Running::stop`].
struct Running {
    child: std::process::Child,
    dir: std::path::PathBuf,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Running {
    /// `service`: more lines for the service (`{DIR}` is replaced by the daemon's directory,
    /// which everyone may write to).
    fn start(name: &str, director: &str, service: &str) -> Running {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ringvs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let service = service.replace("{DIR}", &dir.display().to_string());
        let socket = dir.join("admin.sock");
        let conf = dir.join("ringvs.toml");
        std::fs::write(
            &conf,
            format!(
                "[director]\ndevice = \"rvspriv0\"\nconn_memory_limit = \"8MiB\"\n\
                 admin_socket = \"{}\"\nmetrics_listen = \"off\"\n{director}\n\n\
                 [[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\n{service}\n\n\
                 [[service.server]]\naddr = \"10.77.1.1:8080\"\n",
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.join("ringvs.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ringvs"))
            .args(["run", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_answering(&socket, &log);
        Running {
            child,
            dir,
            socket,
            log,
        }
    }

    /// Every thread's status, at least the queues' and the runtime's.
    fn threads(&self) -> Vec<String> {
        let all = threads(self.child.id());
        assert!(
            all.len() >= 3,
            "the queues and the runtime: {} threads",
            all.len()
        );
        all
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        // Safety: kill sends SIGTERM to the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {}", self.log());
                break;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("the daemon did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_daemon_with_a_user_runs_without_root_or_capabilities() {
    if !have_root() {
        return;
    }
    let nobody = privileges::lookup("nobody").expect("a user named nobody");
    in_netns(move || {
        let d = Running::start(
            "priv-user",
            "queues = 2\nroutes = \"manual\"\nuser = \"nobody\"",
            "",
        );
        let id = nobody.uid.to_string();
        let gid = nobody.gid.to_string();
        for t in &d.threads() {
            let name = field(t, "Name:").join(" ");
            assert_eq!(field(t, "Uid:"), [id.as_str(); 4], "{name}: uids");
            assert_eq!(field(t, "Gid:"), [gid.as_str(); 4], "{name}: gids");
            for caps in ["CapEff:", "CapPrm:", "CapAmb:"] {
                assert_eq!(field(t, caps), ["0000000000000000"], "{name}: {caps}");
            }
        }
        // Root (this test) still may use the admin socket, and the daemon still answers.
        let list = client::call(&d.socket, &Request::List {}).unwrap();
        assert!(list.to_string().contains("10.77.1.1:8080"), "{list}");
        assert!(d.log().contains("running as nobody"), "{}", d.log());
        d.stop();
    });
}

/// Without `director.user` the daemon stays uid 0 but, once set up, every thread keeps only
/// what running needs: CAP_BPF to load the steering program again for two TUN queues,
/// CAP_NET_ADMIN for `routes = "auto"`, CAP_SETUID and CAP_SETGID to run health-check scripts
/// as an unprivileged user, CAP_CHOWN for `admin_group` on reload; nothing else, in any set (the bounding set too). What it kept
/// still works: a service added at runtime reloads the steering program, or gets its route,
/// and a script check runs as nobody.
#[test]
fn a_root_daemon_keeps_only_the_capabilities_it_needs() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        // routes = "auto" wants forwarding on (this namespace's own setting).
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        // A way to the realservers, for the routes it installs.
        common::ip(&["link", "add", "rs0", "type", "veth", "peer", "name", "rs0p"]);
        common::ip(&["addr", "add", "10.77.1.254/24", "dev", "rs0"]);
        common::ip(&["link", "set", "rs0p", "up"]);
        common::ip(&["link", "set", "rs0", "up"]);
        // As root, scripts are run as an unprivileged user (CAP_SETUID, CAP_SETGID) and a
        // reload may give the admin socket to another group (CAP_CHOWN).
        let scripts = (1u64 << privileges::cap::SETUID)
            | (1 << privileges::cap::SETGID)
            | (1 << privileges::cap::CHOWN);
        let bpf = 1u64 << privileges::cap::BPF;
        let net_admin = 1u64 << privileges::cap::NET_ADMIN;
        for (name, director, want) in [
            (
                "priv-steer",
                "queues = 2\nroutes = \"manual\"",
                scripts | bpf,
            ),
            (
                "priv-routes",
                "queues = 1\nroutes = \"auto\"",
                scripts | net_admin,
            ),
            ("priv-none", "queues = 1\nroutes = \"manual\"", scripts),
        ] {
            let d = Running::start(
                name,
                director,
                "health = { check = \"script\", command = [\"/bin/sh\", \"-c\", \"id -u > {DIR}/who\"], \
                 interval = \"1s\", timeout = \"900ms\" }",
            );
            let hex = format!("{want:016x}");
            for t in &d.threads() {
                let tname = field(t, "Name:").join(" ");
                assert_eq!(field(t, "Uid:"), ["0"; 4], "{name} {tname}: still root");
                for caps in ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:"] {
                    assert_eq!(field(t, caps), [hex.as_str()], "{name} {tname}: {caps}");
                }
                assert_eq!(field(t, "CapAmb:"), ["0000000000000000"], "{name} {tname}");
            }
            assert!(
                d.log()
                    .contains("every other capability dropped on every thread"),
                "{}",
                d.log()
            );
            // What it kept is what running needs.
            let add = ringvs::control::protocol::parse_request(
                br#"{"v":1,"cmd":"service-add","name":"dns","vip":"10.77.100.101:53","proto":"udp"}"#,
            )
            .unwrap();
            let answer = client::call(&d.socket, &add);
            assert!(
                answer.is_ok(),
                "{name}: service add: {answer:?}\n{}",
                d.log()
            );
            if want & net_admin != 0 {
                let routes = Command::new("ip")
                    .args(["route", "show", "table", "all"])
                    .output()
                    .unwrap();
                let routes = String::from_utf8_lossy(&routes.stdout);
                assert!(
                    routes.contains("10.77.100.101"),
                    "{name}: the new VIP's route: {routes}"
                );
            }
            let list = client::call(&d.socket, &Request::List {}).unwrap();
            assert!(list.to_string().contains("10.77.100.101:53"), "{list}");
            let who = d.dir.join("who");
            let until = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(&who).map_or(true, |w| w.trim().is_empty()) {
                assert!(
                    Instant::now() < until,
                    "{name}: the script check never ran: {}",
                    d.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let nobody = privileges::lookup("nobody").unwrap().uid.to_string();
            assert_eq!(
                std::fs::read_to_string(&who).unwrap().trim(),
                nobody,
                "{name}: the script check runs as nobody"
            );
            d.stop();
        }
    });
}
