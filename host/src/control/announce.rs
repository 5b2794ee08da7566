//! `ringvs ha announce`: keeps a BGP speaker's announcement of the virtual addresses in step
//! with the director's readiness (`ringvs ha ready`, [`StatusResult::unready`]), for
//! active-active directors behind an ECMP router (docs/HA.md).
//!
//! BIRD, FRR and GoBGP announce what they are told and cannot ask ringvs whether it is fit
//! to serve, so this loop asks, once an interval, and runs the operator's commands on each
//! change: `--up` (e.g. `birdc enable vip`) when the director becomes ready, `--down` when it
//! is not (a service without a realserver that can take a flow, health checks not passed
//! yet, SIGTERM with `director.stop_delay`) or does not answer (the daemon is gone or hung:
//! an answer must come within the interval, at most 3 s). It starts withdrawn: the first
//! check announces only a ready director. SIGTERM or SIGINT withdraws before exiting.
//! A command that fails is run again at the next check; the state changes only once it
//! succeeded.

use std::process::Command;
use std::time::Duration;

use super::protocol::{Request, StatusResult};

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Ready: announce.
    Ready,
    /// Not ready, or no answer: withdraw, saying why.
    NotReady(String),
}

/// Announced or not, as far as the speaker was last told.
#[derive(Debug, Default)]
pub struct Announcer {
    /// `None` until a command succeeded.
    announced: Option<bool>,
}

impl Announcer {
    /// The command to run after `check` (`Some(true)`: up, `Some(false)`: down), if the
    /// speaker must be told anything.
    pub fn want(&self, check: &Check) -> Option<bool> {
        let up = *check == Check::Ready;
        (self.announced != Some(up)).then_some(up)
    }

    /// The speaker was told `up`.
    pub fn told(&mut self, up: bool) {
        self.announced = Some(up);
    }

    /// What must run on exit: down, unless the speaker already withdrew.
    pub fn on_exit(&self) -> bool {
        self.announced != Some(false)
    }
}

/// Readiness from a `status` answer.
pub fn check_of(status: Result<StatusResult, String>) -> Check {
    match status {
        Err(e) => Check::NotReady(format!("no answer: {e}")),
        Ok(s) if s.unready.is_empty() => Check::Ready,
        Ok(s) => Check::NotReady(s.unready.join("; ")),
    }
}

/// Runs `cmd` with `sh -c`; an error says how it failed.
fn run_sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    Err(format!(
        "{:?} {}: {}",
        cmd,
        out.status,
        err.trim()
            .lines()
            .chain(text.trim().lines())
            .last()
            .unwrap_or("")
    ))
}

/// Asks the daemon at `socket` for its status, within `limit` (the socket's own timeouts:
/// a hung daemon leaves no thread behind waiting for it).
async fn ask(socket: std::path::PathBuf, limit: Duration) -> Result<StatusResult, String> {
    tokio::task::spawn_blocking(move || {
        let v = super::client::call_within(&socket, &Request::Status {}, limit)?;
        serde_json::from_value::<StatusResult>(v)
            .map_err(|e| format!("unexpected answer from the daemon: {e}"))
    })
    .await
    .map_err(|e| format!("the check failed: {e}"))?
}

/// The loop, until SIGTERM or SIGINT (then down, if announced).
pub fn run(
    socket: std::path::PathBuf,
    up_cmd: &str,
    down: &str,
    interval: f64,
) -> Result<(), String> {
    if !(0.1..=60.0).contains(&interval) {
        return Err(format!(
            "--interval: expected 0.1 to 60 seconds, found {interval}"
        ));
    }
    let every = Duration::from_secs_f64(interval);
    let limit = every.min(Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut a = Announcer::default();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    let check = check_of(ask(socket.clone(), limit).await);
                    let Some(up) = a.want(&check) else { continue };
                    let (cmd, what) = if up { (up_cmd, "announce") } else { (down, "withdraw") };
                    let why = match &check {
                        Check::Ready => "ready".to_string(),
                        Check::NotReady(w) => w.clone(),
                    };
                    match run_sh(cmd) {
                        Ok(()) => {
                            eprintln!("ringvs ha announce: {what} ({why})");
                            a.told(up);
                        }
                        Err(e) => eprintln!("ringvs ha announce: {what} failed, trying again: {e}"),
                    }
                }
            }
        }
        if a.on_exit() {
            run_sh(down).map_err(|e| format!("withdraw on exit failed: {e}"))?;
            eprintln!("ringvs ha announce: withdraw (stopping)");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not(why: &str) -> Check {
        Check::NotReady(why.into())
    }

    #[test]
    fn announces_on_readiness_and_withdraws_on_anything_else() {
        let mut a = Announcer::default();
        // Starts withdrawn: a director not ready yet is withdrawn once, then left alone.
        assert_eq!(a.want(&not("health checks")), Some(false));
        a.told(false);
        assert_eq!(a.want(&not("health checks")), None);
        assert!(!a.on_exit());
        assert_eq!(a.want(&Check::Ready), Some(true));
        // A failed command leaves the state: asked again.
        assert_eq!(a.want(&Check::Ready), Some(true));
        a.told(true);
        assert_eq!(a.want(&Check::Ready), None);
        assert!(a.on_exit(), "announced: withdraw on exit");
        assert_eq!(a.want(&not("stopping")), Some(false));
    }

    #[test]
    fn a_silent_or_unready_daemon_is_not_ready() {
        assert_eq!(check_of(Err("refused".into())), not("no answer: refused"));
        let mut s: StatusResult = serde_json::from_value(serde_json::json!({
            "version": "x", "uptime_secs": 1, "device": "d", "queues": 1, "offload": false,
            "generation": 1, "entries": 0, "capacity": 1, "memory_bytes": 0,
            "memory_limit": 1, "by_state": {}, "drops": {}, "passthrough": 0
        }))
        .unwrap();
        assert_eq!(check_of(Ok(s.clone())), Check::Ready);
        s.unready = vec!["a".into(), "b".into()];
        assert_eq!(check_of(Ok(s)), not("a; b"));
    }

    #[test]
    fn a_hung_daemon_is_no_answer_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("ringvs-announce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        // Accepts, reads, never answers.
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let hold = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let start = std::time::Instant::now();
        let r = rt.block_on(ask(socket, Duration::from_millis(200)));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(check_of(r), Check::NotReady(_)));
        drop(hold.join());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn commands_report_how_they_failed() {
        assert_eq!(run_sh("true"), Ok(()));
        let e = run_sh("echo nope >&2; exit 3").unwrap_err();
        assert!(e.contains("nope") && e.contains('3'), "{e}");
    }
}
