//! Least privilege (`director.user`): once the daemon has done what needs root (the TUN
//! device and its queues, XDP programs, the admin socket and the metrics listener), it gives
//! root up for good and runs on as that user, with no capabilities at all.
//!
//! The switch is `initgroups` + `setgid` + `setuid`. glibc applies each of them to every
//! thread of the process (the queues and the runtime already run), and a thread whose uids
//! all leave 0 loses its permitted and effective capabilities (capabilities(7), "Effect of
//! user ID changes on capabilities"; `PR_SET_KEEPCAPS` is never set). `capset` would not do:
//! it changes the calling thread only.
//!
//! What that costs is checked at load: `routes = "auto"` installs and removes routes while
//! running (CAP_NET_ADMIN), so it cannot go with `user`.
//!
//! Without `user` the daemon stays uid 0 but keeps only the capabilities it still needs
//! ([`needed`], [`keep_only`]): CAP_NET_ADMIN for `routes = "auto"` and AF_XDP's next-hop
//! resolution, CAP_BPF to load the
//! queue steering program again when services change (several TUN queues), and CAP_SETUID
//! and CAP_SETGID, with which health-check and notify scripts run as an unprivileged user,
//! and CAP_CHOWN, with which a reload gives the admin socket to a new `admin_group`; started
//! as another user with ambient capabilities (the systemd unit), only the first two.
//! `capset` changes the calling thread only, so [`keep_only`] does what glibc does for
//! `setuid`: it signals every other thread, whose handler drops the same capabilities (the
//! bounding set, the ambient set, then effective, permitted and inheritable), and checks every
//! thread's `/proc/self/task/TID/status` afterwards. Threads started later inherit the reduced
//! sets.

use std::ffi::CString;
use std::path::Path;

/// A user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// Looks a user up by name in the password database.
pub fn lookup(name: &str) -> Result<User, String> {
    let c = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // Safety: an all-zero `passwd` is a valid value of a plain C struct (null pointers,
    // zero ids); getpwnam_r fills it in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // Safety: a NUL-terminated name, a `passwd` to fill and a buffer of `buf.len()` bytes
    // for its strings, all outliving the call; the result pointer is null or `&mut pw`.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 {
        return Err(format!(
            "cannot look user {name:?} up: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!("no user named {name:?}"));
    }
    Ok(User {
        name: name.to_string(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Gives root up for `user`: the admin socket at `socket` is given to it first (so that a
/// reload can still change its group and mode), then its groups, gid and uid are taken by
/// every thread. Checks the result: root cannot be taken back.
pub fn drop_to(user: &User, socket: &Path) -> Result<(), String> {
    let fail = |what: &str| {
        format!(
            "cannot drop root for user {:?}: {what}: {}",
            user.name,
            std::io::Error::last_os_error()
        )
    };
    let path = CString::new(socket.as_os_str().as_encoded_bytes())
        .map_err(|_| "bad socket path".to_string())?;
    // Safety: chown on a NUL-terminated path; -1 keeps the group.
    if unsafe { libc::chown(path.as_ptr(), user.uid, u32::MAX) } != 0 {
        return Err(fail(&format!("chown {}", socket.display())));
    }
    let name = CString::new(user.name.as_str()).map_err(|_| "bad user name".to_string())?;
    // Safety: initgroups reads a NUL-terminated name; glibc sets the groups of every thread.
    if unsafe { libc::initgroups(name.as_ptr(), user.gid) } != 0 {
        return Err(fail("initgroups"));
    }
    // Safety: setgid/setuid have no memory preconditions; glibc applies them to every thread.
    if unsafe { libc::setgid(user.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // Safety: as above.
    if unsafe { libc::setuid(user.uid) } != 0 {
        return Err(fail("setuid"));
    }
    // Safety: getters without preconditions; setuid(0) must fail now.
    let (uid, euid, back) = unsafe { (libc::getuid(), libc::geteuid(), libc::setuid(0)) };
    if (uid, euid) != (user.uid, user.uid) || (user.uid != 0 && back == 0) {
        return Err(format!(
            "dropping root for user {:?} did not hold (uid {uid}, euid {euid})",
            user.name
        ));
    }
    Ok(())
}

/// Capability numbers (linux/capability.h).
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const NET_ADMIN: u32 = 12;
    pub const BPF: u32 = 39;
}

/// The capabilities a daemon still needs after setup, as a mask: CAP_NET_ADMIN for
/// `routes = "auto"` and for `io = "af_xdp"` (its resolver asks the kernel to resolve next
/// hops, `RTM_NEWNEIGH`), CAP_BPF to reload the steering program of several TUN queues, and as
/// uid 0 CAP_SETUID and CAP_SETGID, with which health-check and notify scripts run as an
/// unprivileged user (`health::script`; a reload may add scripts at any time), and
/// CAP_CHOWN, with which a reload gives the admin socket to a new `director.admin_group`.
pub fn needed(routes_auto: bool, af_xdp: bool, tun_queues: usize, root: bool) -> u64 {
    let mut m = 0;
    if root {
        m |= (1 << cap::SETUID) | (1 << cap::SETGID) | (1 << cap::CHOWN);
    }
    if routes_auto || af_xdp {
        m |= 1 << cap::NET_ADMIN;
    }
    if tun_queues > 1 {
        m |= 1 << cap::BPF;
    }
    m
}

/// The names of the capabilities in `mask`, for logs and errors.
pub fn names(mask: u64) -> String {
    const KNOWN: [(u32, &str); 5] = [
        (cap::CHOWN, "CAP_CHOWN"),
        (cap::SETGID, "CAP_SETGID"),
        (cap::SETUID, "CAP_SETUID"),
        (cap::NET_ADMIN, "CAP_NET_ADMIN"),
        (cap::BPF, "CAP_BPF"),
    ];
    let v: Vec<String> = (0..64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| {
            KNOWN
                .iter()
                .find(|(n, _)| *n == b)
                .map_or_else(|| format!("cap {b}"), |(_, name)| name.to_string())
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// What every thread is to keep, and how many threads have done it.
static KEEP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
static LAST_CAP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(40);
static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Drops every capability outside `keep` from the calling thread: the bounding set (needs
/// CAP_SETPCAP, still there), the ambient set, then effective, permitted and inheritable.
/// Only system calls: safe in a signal handler. False if `capset` failed.
fn drop_here(keep: u64, last: u32) -> bool {
    for c in 0..=last.min(63) {
        if keep & (1 << c) == 0 {
            // Safety: prctl with integer arguments; a capability already out of the bounding
            // set, or one the kernel does not know, fails harmlessly.
            unsafe {
                if libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) == 1 {
                    libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0);
                }
            }
        }
    }
    // Safety: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let half = |shift: u32| {
        let w = (keep >> shift) as u32;
        Data {
            effective: w,
            permitted: w,
            inheritable: w,
        }
    };
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two 32-bit halves
        pid: 0,
    };
    let data = [half(0), half(32)];
    // Safety: capset(2) reads a version-3 header and two data structs, both live for the call.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) == 0 }
}

extern "C" fn on_signal(_: libc::c_int) {
    use std::sync::atomic::Ordering;
    if drop_here(KEEP.load(Ordering::SeqCst), LAST_CAP.load(Ordering::SeqCst)) {
        DONE.fetch_add(1, Ordering::SeqCst);
    }
}

/// The signal [`keep_only`] sends the other threads (glibc keeps the first real-time ones).
fn signal_number() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// The threads of this process that run its code, by task id: not the kernel's io_uring
/// workers (`iou-wrk-*`, `iou-sqp-*`), which take no signals and run no user code (they
/// act for the ring with the credentials they were created with).
fn tasks() -> Vec<libc::pid_t> {
    let io_worker = |t: &libc::pid_t| {
        std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
            .is_ok_and(|c| c.starts_with("iou-"))
    };
    std::fs::read_dir("/proc/self/task")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|t| !io_worker(t))
                .collect()
        })
        .unwrap_or_default()
}

/// A thread's (permitted, effective, bounding) sets from its status; `None` if it is gone.
pub fn task_caps(tid: libc::pid_t) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some((get("CapPrm:")?, get("CapEff:")?, get("CapBnd:")?))
}

/// Leaves every thread of the process with only the capabilities in `keep` (and those of
/// them it has): effective, permitted and inheritable; the bounding set too where CAP_SETPCAP
/// allows; no ambient ones. Returns the mask kept. Run once setup is done.
pub fn keep_only(keep: u64) -> Result<u64, String> {
    use std::sync::atomic::Ordering;
    // Safety: gettid and getpid have no preconditions.
    let (me, pid) = unsafe { (libc::gettid(), libc::getpid()) };
    let have = task_caps(me).map_or(0, |(prm, _, _)| prm);
    let keep = keep & have;
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40u32);
    KEEP.store(keep, Ordering::SeqCst);
    LAST_CAP.store(last, Ordering::SeqCst);
    let sig = signal_number();
    // Safety: a zeroed sigaction with a plain handler, SA_RESTART so that interrupted system
    // calls resume; the handler makes system calls and atomic stores only.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "cannot drop capabilities: sigaction: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let done = |t: libc::pid_t| task_caps(t).is_none_or(|(p, e, _)| p == keep && e == keep);
    // Threads may start while this runs (from a thread not yet done): a few rounds.
    for _ in 0..10 {
        let pending: Vec<libc::pid_t> = tasks()
            .into_iter()
            .filter(|&t| t != me && !done(t))
            .collect();
        if pending.is_empty() {
            break;
        }
        DONE.store(0, Ordering::SeqCst);
        let mut sent = 0;
        for t in pending {
            // Safety: tgkill to a thread of this process; one that just exited gives ESRCH.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, t, sig) } == 0 {
                sent += 1;
            }
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while DONE.load(Ordering::SeqCst) < sent && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if DONE.load(Ordering::SeqCst) == 0 {
            break; // nobody answers: the check below says who
        }
    }
    if !drop_here(keep, last) {
        return Err(format!(
            "cannot drop capabilities: capset: {}",
            std::io::Error::last_os_error()
        ));
    }
    let left: Vec<String> = tasks()
        .into_iter()
        .filter(|&t| !done(t))
        .map(|t| t.to_string())
        .collect();
    if !left.is_empty() {
        return Err(format!(
            "cannot drop capabilities: threads {} still hold others than {}",
            left.join(", "),
            names(keep)
        ));
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        assert_eq!(lookup("root").map(|u| (u.uid, u.gid)), Ok((0, 0)));
        assert_eq!(
            lookup("no-such-user-here"),
            Err("no user named \"no-such-user-here\"".into())
        );
    }
}
