//! A detached daemon serving its real admin socket on a thread, for tests that drive it
//! with the `ringvs` binary; and small helpers to run that binary.

#![allow(dead_code)]

use ringvs::config;
use ringvs::control::admin;
use ringvs::control::client;
use ringvs::control::daemon::Daemon;
use ringvs::control::protocol::{ListResult, Request};
use ringvs::dataplane::Shard;
use ringvs::io::process_packets;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The `ringvs` binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringvs");

/// A fresh directory for one test.
pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "ringvs-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `bin` with `args`.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A detached daemon serving its admin socket on a thread; stops when dropped.
pub struct Director {
    /// Its directory (removed when dropped).
    pub dir: PathBuf,
    /// Its admin socket.
    pub socket: PathBuf,
    /// Its config file.
    pub conf: PathBuf,
    shards: Vec<Shard>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Director {
    /// A daemon of `services` (config text after `[director]`'s socket, metrics and memory
    /// lines), its config at `self.conf`.
    pub fn start(services: &str) -> Director {
        let dir = tmpdir("daemon");
        let socket = dir.join("admin.sock");
        let conf = dir.join("ringvs.toml");
        std::fs::write(
            &conf,
            format!(
                "[director]\nadmin_socket = \"{}\"\nmetrics_listen = \"off\"\nconn_memory_limit = \"4MiB\"\n{services}",
                socket.display()
            ),
        )
        .unwrap();
        let cfg = config::load_with_env(&conf, false).unwrap();
        let (mut daemon, shards) = Daemon::detached(cfg).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _in_runtime = rt.enter();
            admin::bind(&socket, None).unwrap()
        };
        daemon.attach_admin(listener.access());
        let daemon = Arc::new(Mutex::new(daemon));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = admin::serve(listener, daemon) => {}
                    _ = rx => {}
                }
            });
        });
        Director {
            dir,
            socket,
            conf,
            shards,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs the CLI against it.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--socket", self.socket.to_str().unwrap()]);
        run(Path::new(BIN), &a)
    }

    /// The CLI must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Its `list` answer.
    pub fn list(&self) -> ListResult {
        serde_json::from_value(client::call(&self.socket, &Request::List {}).unwrap()).unwrap()
    }

    /// Runs packets through queue 0 after it has applied what the control plane sent.
    pub fn packets(&mut self, pkts: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let shard = &mut self.shards[0];
        process_packets(shard, &[]);
        let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
        process_packets(shard, &refs)
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
