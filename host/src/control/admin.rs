//! The admin socket: a Unix socket created 0600 (0660 with `admin_group`), never
//! world-accessible, serving the protocol of [`super::protocol`]. Peers other than root (and
//! the configured group) are refused.

use super::daemon::Daemon;
use super::protocol::{parse_request, Response, MAX_REQUEST};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// A bound admin socket and who may use it.
pub struct Listener {
    inner: UnixListener,
    gid: Option<u32>,
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
    Ok(Listener { inner, gid })
}

/// Accepts and serves connections until the task is aborted.
pub async fn serve(listener: Listener, daemon: Arc<Mutex<Daemon>>) {
    loop {
        let (stream, _) = match listener.inner.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let allowed = match stream.peer_cred() {
            // Safety: geteuid has no preconditions.
            Ok(c) => {
                c.uid() == 0
                    || c.uid() == unsafe { libc::geteuid() }
                    || Some(c.gid()) == listener.gid
            }
            Err(_) => false,
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, d, allowed).await {
                debug!("admin session ended: {e}");
            }
        });
    }
}

async fn send(stream: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).unwrap_or_else(|_| "{\"v\":1,\"ok\":false}".into());
    line.push('\n');
    stream.write_all(line.as_bytes()).await
}

async fn session(
    mut stream: UnixStream,
    daemon: Arc<Mutex<Daemon>>,
    allowed: bool,
) -> std::io::Result<()> {
    if !allowed {
        return send(
            &mut stream,
            &Response::err("permission denied: only root or the admin group may use this socket"),
        )
        .await;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Serve every complete line in the buffer.
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let resp = match parse_request(line) {
                Err(e) => Response::err(e),
                Ok(req) => {
                    let d = daemon.clone();
                    match tokio::task::spawn_blocking(move || match d.lock() {
                        Ok(mut d) => d.handle(req),
                        Err(_) => Err("daemon state poisoned".to_string()),
                    })
                    .await
                    {
                        Ok(Ok(v)) => Response::ok(v),
                        Ok(Err(e)) => Response::err(e),
                        Err(e) => Response::err(format!("internal error: {e}")),
                    }
                }
            };
            send(&mut stream, &resp).await?;
        }
        if buf.len() > MAX_REQUEST {
            send(
                &mut stream,
                &Response::err(format!("request too large (limit {MAX_REQUEST} bytes)")),
            )
            .await?;
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
