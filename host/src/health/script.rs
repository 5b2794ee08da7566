//! External commands: keepalived's `MISC_CHECK` (a script check) and its notify scripts.
//!
//! A command runs without a shell, with a clean environment (`PATH` and the `RINGVS_…`
//! variables given), standard input from /dev/null, as an unprivileged user when the daemon
//! is root (`nobody` unless told another), in a process group of its own. One that does not
//! end within its timeout is killed with its whole group (SIGKILL) and reported as a timeout:
//! a hanging script never holds a checker, nor leaves processes behind.

use std::fmt;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout_at, Instant};

/// The user commands run as when the daemon is root and none is configured.
pub use crate::config::DEFAULT_SCRIPT_USER as DEFAULT_USER;

/// `PATH` of a command's environment.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Most bytes of a command's standard error kept for a failure's reason.
const MAX_STDERR: usize = 256;

/// How a command ended, if not with exit status 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    /// It ran past its timeout and was killed with its process group.
    Timeout(Duration),
    /// It could not be started (no such file, not executable, no such user, …).
    Spawn(String),
    /// It exited with this status; the start of its standard error.
    Exit(i32, String),
    /// It was killed by this signal.
    Signal(i32),
}

impl ScriptError {
    /// The `result` label of the metrics: `timeout`, `error` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            ScriptError::Timeout(_) => "timeout",
            ScriptError::Spawn(_) => "error",
            ScriptError::Exit(..) | ScriptError::Signal(_) => "failed",
        }
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptError::Timeout(d) => write!(f, "script timeout ({}ms), killed", d.as_millis()),
            ScriptError::Spawn(e) => write!(f, "cannot run the script: {e}"),
            ScriptError::Exit(code, err) if err.is_empty() => write!(f, "script exit {code}"),
            ScriptError::Exit(code, err) => write!(f, "script exit {code}: {err}"),
            ScriptError::Signal(s) => write!(f, "script killed by signal {s}"),
        }
    }
}

/// Runs `cmd` (a path and its arguments) with `env` added to a clean environment, as `user`
/// when the daemon is root, for at most `timeout`. `Ok(0)` is exit status 0; any other exit
/// status is `Ok(status)` only with `any_status`, else an error.
pub async fn run(
    cmd: &[String],
    env: &[(&str, String)],
    user: &str,
    timeout: Duration,
    any_status: bool,
) -> Result<i32, ScriptError> {
    let deadline = Instant::now() + timeout;
    let (path, args) = cmd
        .split_first()
        .ok_or_else(|| ScriptError::Spawn("empty command".into()))?;
    let mut c = tokio::process::Command::new(path);
    c.args(args)
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = crate::config::user_ids(user).map_err(ScriptError::Spawn)?;
        // std drops the supplementary groups (setgroups) before switching, as root.
        c.uid(uid).gid(gid);
    }
    let mut child = c
        .spawn()
        .map_err(|e| ScriptError::Spawn(format!("{path}: {e}")))?;
    let pid = child.id();
    let mut stderr = child.stderr.take();
    let waited = timeout_at(deadline, async {
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let mut chunk = [0u8; MAX_STDERR];
            // Read what comes until the end or the first MAX_STDERR bytes; the rest is left
            // (the pipe closes with the child).
            while err.len() < MAX_STDERR {
                match s.read(&mut chunk[..MAX_STDERR - err.len()]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err.extend_from_slice(&chunk[..n]),
                }
            }
        }
        (child.wait().await, err)
    })
    .await;
    match waited {
        Err(_) => {
            if let Some(pid) = pid {
                // Safety: kill on the process group this child leads (process_group(0));
                // the child is not reaped yet, so its id (and group id) is still ours.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            Err(ScriptError::Timeout(timeout))
        }
        Ok((Err(e), _)) => Err(ScriptError::Spawn(e.to_string())),
        Ok((Ok(status), err)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(0), _) => Ok(0),
                (Some(code), _) if any_status => Ok(code),
                (Some(code), _) => Err(ScriptError::Exit(
                    code,
                    String::from_utf8_lossy(&err)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                )),
                (None, Some(sig)) => Err(ScriptError::Signal(sig)),
                (None, None) => Err(ScriptError::Spawn("no exit status".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn exit_status_stderr_and_environment() {
        let dir = std::env::temp_dir().join(format!("ringvs-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Readable by nobody when the test runs as root.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = script(
            &dir,
            "ok",
            "test \"$RINGVS_SERVER\" = 10.77.1.1:8080 && test -z \"$HOME\"",
        );
        let bad = script(&dir, "bad", "echo 'no pong from the app' >&2; exit 3");
        let rt = rt();
        let env = [("RINGVS_SERVER", "10.77.1.1:8080".to_string())];
        let run1 = |c: &str, any| {
            rt.block_on(run(
                &[c.to_string()],
                &env,
                DEFAULT_USER,
                Duration::from_secs(5),
                any,
            ))
        };
        assert_eq!(run1(&ok, false), Ok(0));
        let e = run1(&bad, false).unwrap_err();
        assert_eq!(e, ScriptError::Exit(3, "no pong from the app".into()));
        assert_eq!(e.to_string(), "script exit 3: no pong from the app");
        assert_eq!(e.label(), "failed");
        assert_eq!(run1(&bad, true), Ok(3), "dynamic checks take any status");
        let e = run1("/nonexistent/check", false).unwrap_err();
        assert!(matches!(e, ScriptError::Spawn(_)), "{e}");
        assert_eq!(e.label(), "error");
        // As root, an unprivileged user runs it.
        // Safety: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let who = script(
                &dir,
                "who",
                "test \"$(id -u)\" = 65534 || { id -u >&2; exit 1; }",
            );
            assert_eq!(run1(&who, false), Ok(0), "runs as nobody");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hanging_script_and_its_children_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("ringvs-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let pids = dir.join("pids");
        let hang = script(
            &dir,
            "hang",
            &format!(
                "sleep 30 & echo $! > {p}; echo $$ >> {p}; sleep 30",
                p = pids.display()
            ),
        );
        let rt = rt();
        let t0 = std::time::Instant::now();
        let r = rt.block_on(run(
            &[hang],
            &[],
            DEFAULT_USER,
            Duration::from_millis(300),
            false,
        ));
        let took = t0.elapsed();
        assert_eq!(r, Err(ScriptError::Timeout(Duration::from_millis(300))));
        std::thread::sleep(Duration::from_millis(200));
        assert!(took < Duration::from_secs(3), "took {took:?}");
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            assert!(!alive, "process {pid} of the script survived its timeout");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
