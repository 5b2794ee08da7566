//! Helpers shared by the real-kernel tests: root detection, a private network namespace per
//! test, and `ip` commands.

#![allow(dead_code)]

pub mod director;

use std::io;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Upper bound for any single test body, namespace set-up included.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn have_root() -> bool {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("RINGVS_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("these tests need root (CAP_NET_ADMIN) and RINGVS_REQUIRE_ROOT=1 is set");
    }
    eprintln!("notice: skipping TUN test, not root (set RINGVS_REQUIRE_ROOT=1 to fail instead)");
    false
}

/// Runs `f` on a new thread in a new network namespace with `lo` up; fails the test if it
/// panics, takes longer than [`TEST_TIMEOUT`], or leaves a thread in the namespace.
pub fn in_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        // Safety: unshare(CLONE_NEWNET) only moves this thread to a new namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
        let ns = netns_inode("/proc/thread-self/ns/net");
        ip(&["link", "set", "lo", "up"]);
        let _ = tx.send((ns, f()));
    });
    match rx.recv_timeout(TEST_TIMEOUT) {
        Ok((ns, r)) => {
            t.join().expect("namespace thread");
            // The namespace (and anything left in it) dies with the last task in it. A thread
            // that was joined may still be listed for a moment: its task finishes exiting
            // after join returns (the kernel clears the joiner's tid before it is reaped), so
            // only one still there after a second is left behind.
            let in_ns = || -> Vec<_> {
                std::fs::read_dir("/proc/self/task")
                    .unwrap()
                    .filter_map(|t| t.ok())
                    .filter(|t| netns_inode(t.path().join("ns/net")) == ns)
                    .map(|t| t.file_name())
                    .collect()
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            let mut left = in_ns();
            while !left.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                left = in_ns();
            }
            assert!(
                left.is_empty(),
                "threads left in the test namespace: {left:?}"
            );
            r
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("namespace thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test body exceeded {TEST_TIMEOUT:?}"),
    }
}

/// The inode identifying the network namespace at `path` (0 if it cannot be read, e.g. the
/// thread is gone).
pub fn netns_inode(path: impl AsRef<std::path::Path>) -> u64 {
    std::fs::metadata(path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0)
}

/// Runs `ip ARGS` in the calling thread's network namespace (a spawned child inherits it).
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
pub mod plugins;
