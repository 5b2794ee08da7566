//! Least privilege (issue 11): with `director.user`, a running daemon has given up root and
//! every capability on every thread once it is set up, and still forwards and answers.
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

/// Every thread's `/proc/PID/task/TID/status`.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
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

#[test]
fn a_daemon_with_a_user_runs_without_root_or_capabilities() {
    if !have_root() {
        return;
    }
    let nobody = privileges::lookup("nobody").expect("a user named nobody");
    in_netns(move || {
        let dir = std::env::temp_dir().join(format!("ringvs-priv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        let conf = dir.join("ringvs.toml");
        std::fs::write(
            &conf,
            format!(
                "[director]\ndevice = \"rvspriv0\"\nqueues = 2\nconn_memory_limit = \"8MiB\"\n\
                 admin_socket = \"{}\"\nmetrics_listen = \"off\"\nroutes = \"manual\"\n\
                 user = \"nobody\"\n\n[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\n\n\
                 [[service.server]]\naddr = \"10.77.1.1:8080\"\n",
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.join("ringvs.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringvs"))
            .args(["run", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_answering(&socket, &log);
        let pid = child.id();
        let all = threads(pid);
        assert!(
            all.len() >= 3,
            "the queues and the runtime: {} threads",
            all.len()
        );
        let id = nobody.uid.to_string();
        let gid = nobody.gid.to_string();
        for t in &all {
            let name = field(t, "Name:").join(" ");
            assert_eq!(field(t, "Uid:"), [id.as_str(); 4], "{name}: uids");
            assert_eq!(field(t, "Gid:"), [gid.as_str(); 4], "{name}: gids");
            for caps in ["CapEff:", "CapPrm:", "CapAmb:"] {
                assert_eq!(field(t, caps), ["0000000000000000"], "{name}: {caps}");
            }
        }
        // Root (this test) still may use the admin socket, and the daemon still answers.
        let list = client::call(&socket, &Request::List {}).unwrap();
        assert!(list.to_string().contains("10.77.1.1:8080"), "{list}");
        let log_text = std::fs::read_to_string(&log).unwrap();
        assert!(log_text.contains("running as nobody"), "{log_text}");
        // Safety: kill sends SIGTERM to the child we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{status}: {}",
                    std::fs::read_to_string(&log).unwrap()
                );
                break;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("the daemon did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
