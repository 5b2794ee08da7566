//! The admin socket: a Unix socket created 0600 (0660 with `admin_group`), never
//! world-accessible, serving the protocol of [`super::protocol`]. Peers other than root, the
//! daemon's own user and members of the configured group (primary or supplementary) are
//! refused with one error answer, whatever the file's mode says.
//!
//! What answers the requests is a [`Handler`] (the daemon implements it); this module knows
//! the socket and the protocol's framing, not the daemon.
//!
//! Connections are bounded ([`Limits`]): at most [`Limits::max_connections`] at once (one
//! more is answered with an error and closed, so file descriptors stay free for health
//! probes), each closed after [`Limits::idle_timeout`] without a request (or with an answer
//! it does not read), and each allowed [`Limits::requests_per_sec`] requests a second (a
//! token bucket of that size; a request over it is answered with an error, not run).

use super::protocol::{parse_request, Request, Response, MAX_REQUEST};
use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// What answers the admin socket's requests, one at a time (behind a mutex).
pub trait Handler: Send + 'static {
    /// Reads what a request names outside the daemon (the plugin file of a `plugin-swap`)
    /// before the lock is taken, so that a slow or hostile file holds up this connection
    /// only, never the daemon. An error is the answer, and the lock is not taken.
    fn read_ahead(req: &Request) -> Result<Option<ReadAhead>, String>
    where
        Self: Sized,
    {
        let _ = req;
        Ok(None)
    }

    /// Answers one request, with what [`Handler::read_ahead`] read for it: its result, or
    /// the error to send back.
    fn handle(
        &mut self,
        req: Request,
        ahead: Option<ReadAhead>,
    ) -> Result<serde_json::Value, String>;
}

/// A file a request names, read before the handler's lock was taken.
#[derive(Debug)]
pub struct ReadAhead {
    /// The path as the request gave it.
    pub path: std::path::PathBuf,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// A bound admin socket and who may use it.
pub struct Listener {
    inner: UnixListener,
    access: Access,
}

/// Who may use a bound admin socket besides root and the daemon's user: the members of one
/// group, or nobody. Shared by the listener and the daemon, which changes it on reload
/// (`director.admin_group`): the socket file's group and mode follow, and every request is
/// checked against the group of the moment, so removing the group revokes access at once,
/// also on connections already open.
#[derive(Clone, Debug)]
pub struct Access(Arc<AccessInner>);

#[derive(Debug)]
struct AccessInner {
    path: std::path::PathBuf,
    /// The admin group's id, or -1 for none.
    gid: std::sync::atomic::AtomicI64,
}

impl Access {
    /// The admin group's id, if any.
    pub fn gid(&self) -> Option<u32> {
        u32::try_from(self.0.gid.load(std::sync::atomic::Ordering::Acquire)).ok()
    }

    /// Gives the socket to `group` (0660, that group) or to no group (0600, the daemon's own
    /// group); nothing changes if the group does not exist or the file cannot be changed.
    pub fn set_group(&self, group: Option<&str>) -> Result<(), String> {
        let gid = group.map(group_id).transpose()?;
        let path = &self.0.path;
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| "bad socket path".to_string())?;
        // Safety: getegid has no preconditions.
        let owner_gid = gid.unwrap_or_else(|| unsafe { libc::getegid() });
        // Revoking: the mode first, so the file is never group-accessible to a new group.
        if gid.is_none() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        }
        // Safety: chown on a NUL-terminated path; -1 keeps the owner.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, owner_gid) } != 0 {
            return Err(format!(
                "cannot give {} to group {owner_gid}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        if gid.is_some() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        }
        self.0.gid.store(
            gid.map_or(-1, i64::from),
            std::sync::atomic::Ordering::Release,
        );
        Ok(())
    }
}

/// Checks that `group`, if given, exists (for a reload, before anything changes).
pub fn check_group(group: Option<&str>) -> Result<(), String> {
    group.map(group_id).transpose().map(|_| ())
}

fn group_id(name: &str) -> Result<u32, String> {
    let c = CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    // Safety: getgrnam reads a NUL-terminated string and returns a pointer into static storage
    // (or null); it is read at once, on this thread, before any other getgr* call.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(format!("director.admin_group: no group named {name:?}"));
    }
    // Safety: non-null result of getgrnam, see above.
    Ok(unsafe { (*gr).gr_gid })
}

/// Binds the socket. Refuses to replace a socket a running daemon answers on; removes a
/// stale one.
pub fn bind(path: &Path, group: Option<&str>) -> Result<Listener, String> {
    // The umask is the process's: two binds at once (tests) must not mix theirs up.
    static BIND: Mutex<()> = Mutex::new(());
    let _serial = BIND.lock().unwrap_or_else(|e| e.into_inner());
    let gid = group.map(group_id).transpose()?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use by a running ringvs; stop it first or choose another director.admin_socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
    }
    // Create it with no access for anyone else from the first instant.
    // Safety: umask only changes this process's file-creation mask; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let res = std::os::unix::net::UnixListener::bind(path);
    // Safety: as above.
    unsafe { libc::umask(old) };
    let std_listener =
        res.map_err(|e| format!("cannot bind admin socket {}: {e}", path.display()))?;
    if let Some(gid) = gid {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| "bad socket path".to_string())?;
        // Safety: chown on a NUL-terminated path we just created; -1 keeps the owner.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            return Err(format!(
                "cannot give {} to group {gid}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let inner = UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
    let access = Access(Arc::new(AccessInner {
        path: path.to_path_buf(),
        gid: std::sync::atomic::AtomicI64::new(gid.map_or(-1, i64::from)),
    }));
    Ok(Listener { inner, access })
}

impl Listener {
    /// Who may use it: a handle the daemon keeps to change the admin group on reload.
    pub fn access(&self) -> Access {
        self.access.clone()
    }
}

/// Bounds on the admin socket's connections (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a connection may wait for its next request, or leave an answer unread.
    pub idle_timeout: Duration,
    /// Requests a second one connection may make (also the burst).
    pub requests_per_sec: u32,
}

impl Limits {
    /// The daemon's: 64 connections, 30 s idle, 50 requests a second each.
    pub const DEFAULT: Limits = Limits {
        max_connections: 64,
        idle_timeout: Duration::from_secs(30),
        requests_per_sec: 50,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Accepts and serves connections until the task is aborted; `handler` answers. With the
/// default [`Limits`].
pub async fn serve<H: Handler>(listener: Listener, handler: Arc<Mutex<H>>) {
    serve_with(listener, handler, Limits::DEFAULT).await
}

/// [`serve`] with other limits (tests).
pub async fn serve_with<H: Handler>(listener: Listener, handler: Arc<Mutex<H>>, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, _) = match listener.inner.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(
                "admin socket: refused a connection: {} already open",
                limits.max_connections
            );
            let msg = format!(
                "too many admin connections (limit {}); try again",
                limits.max_connections
            );
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    send(&mut stream, &Response::err(msg)),
                )
                .await;
            });
            continue;
        };
        let allowed = match authorize(&stream, listener.access.gid()) {
            Ok(()) => true,
            Err(who) => {
                warn!("admin socket: refused {who}");
                false
            }
        };
        let h = handler.clone();
        let access = listener.access.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, h, allowed, access, limits).await {
                debug!("admin session ended: {e}");
            }
            drop(slot);
        });
    }
}

/// Lets root, the daemon's own user and members of the admin group in; otherwise says who
/// was refused. Membership counts the peer's primary group and its supplementary groups, as
/// the kernel had them when it connected (`SO_PEERGROUPS`, Linux 4.13; on older kernels
/// `Groups:` of `/proc/PID/status`).
fn authorize(stream: &UnixStream, gid: Option<u32>) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("a peer whose credentials cannot be read: {e}"))?;
    // Safety: geteuid has no preconditions.
    if cred.uid() == 0 || cred.uid() == unsafe { libc::geteuid() } {
        return Ok(());
    }
    let who = format!(
        "uid {} gid {} (pid {}): not root and not in director.admin_group",
        cred.uid(),
        cred.gid(),
        cred.pid().map_or("?".to_string(), |p| p.to_string())
    );
    let Some(gid) = gid else { return Err(who) };
    if cred.gid() == gid {
        return Ok(());
    }
    let groups = match peer_groups(stream.as_raw_fd()) {
        Ok(g) => g,
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => cred
            .pid()
            .map(|p| proc_groups(p as u32))
            .unwrap_or_default(),
        Err(e) => return Err(format!("{who} (its groups cannot be read: {e})")),
    };
    if groups.contains(&gid) {
        Ok(())
    } else {
        Err(who)
    }
}

/// `SO_PEERGROUPS` (include/uapi/asm-generic/socket.h; the same number on every
/// architecture ringvs builds for).
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary groups of a Unix socket's peer, as they were when it connected.
pub fn peer_groups(fd: RawFd) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // Safety: `groups` is a writable buffer of `len` bytes that outlives the call; the
        // kernel writes at most `len` bytes and stores the size it needs in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        // ERANGE: the buffer is too small and `len` says how much is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65_536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// `Groups:` of `/proc/PID/status` (empty if unreadable).
fn proc_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// A request rate limit: a token bucket of `rate` tokens, refilled at `rate` a second.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate.max(1)),
            tokens: f64::from(rate.max(1)),
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// [`send`] within `limit`: a peer that does not read its answers is dropped.
async fn send_within(
    stream: &mut UnixStream,
    r: &Response,
    limit: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(limit, send(stream, r)).await {
        Ok(res) => res,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer does not read its answers",
        )),
    }
}

async fn send(stream: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).unwrap_or_else(|_| "{\"v\":1,\"ok\":false}".into());
    line.push('\n');
    stream.write_all(line.as_bytes()).await
}

/// The answer to a peer that may not use the socket.
const DENIED: &str = "permission denied: only root or the admin group may use this socket";

async fn session<H: Handler>(
    mut stream: UnixStream,
    handler: Arc<Mutex<H>>,
    allowed: bool,
    access: Access,
    limits: Limits,
) -> std::io::Result<()> {
    let idle = limits.idle_timeout;
    if !allowed {
        return send_within(&mut stream, &Response::err(DENIED), idle).await;
    }
    let mut bucket = Bucket::new(limits.requests_per_sec);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Serve every complete line in the buffer.
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            if pos > MAX_REQUEST {
                break;
            }
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // The admin group may have changed (a reload) since the peer connected.
            if let Err(who) = authorize(&stream, access.gid()) {
                warn!("admin socket: refused {who} (admin group changed)");
                send_within(&mut stream, &Response::err(DENIED), idle).await?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
            if !bucket.take() {
                let e = format!(
                    "rate limit: more than {} requests a second on one connection; request not run",
                    limits.requests_per_sec
                );
                send_within(&mut stream, &Response::err(e), idle).await?;
                continue;
            }
            let resp = match parse_request(line) {
                Err(e) => Response::err(e),
                Ok(req) => {
                    let h = handler.clone();
                    match tokio::task::spawn_blocking(move || {
                        let ahead = H::read_ahead(&req)?;
                        match h.lock() {
                            Ok(mut h) => h.handle(req, ahead),
                            Err(_) => Err("daemon state poisoned".to_string()),
                        }
                    })
                    .await
                    {
                        Ok(Ok(v)) => Response::ok(v),
                        Ok(Err(e)) => Response::err(e),
                        Err(e) => Response::err(format!("internal error: {e}")),
                    }
                }
            };
            send_within(&mut stream, &resp, idle).await?;
        }
        // A line longer than the limit (complete or not) ends the session: the rest of it
        // cannot be told apart from the next request.
        let pending = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        if pending > MAX_REQUEST {
            send_within(
                &mut stream,
                &Response::err(format!(
                    "request too large (limit {MAX_REQUEST} bytes per line); closing the connection"
                )),
                idle,
            )
            .await?;
            let _ = stream.shutdown().await;
            return Ok(());
        }
        let n = match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
            Ok(n) => n?,
            Err(_) => {
                let e = format!("idle for {} s; closing the connection", idle.as_secs_f64());
                let _ = send_within(&mut stream, &Response::err(e), Duration::from_secs(1)).await;
                let _ = stream.shutdown().await;
                return Ok(());
            }
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
