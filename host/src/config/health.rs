//! `health = { … }`: realserver health checks, per service with per-server overrides.
//!
//! The keys follow keepalived's `real_server` checkers under the names HAProxy made common:
//! `interval` is keepalived's `delay_loop`, `timeout` its `connect_timeout`, `fall` its
//! `retry` + 1, `on_fail = "quiesce"` its `inhibit_on_failure`, `port`/`addr` its
//! `connect_port`/`connect_ip`, `host` its `virtualhost`, `expect` its `status_code`.
//! See docs/HEALTH.md.

use super::{raw, units, ConfigError, Validator};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Shortest check interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest check interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest check timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Largest `rise` or `fall`.
pub const MAX_COUNT: u32 = 100;

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connection is accepted (keepalived `TCP_CHECK`).
    Tcp,
    /// `GET path` answers with an expected status (keepalived `HTTP_GET`).
    Http(HttpCheck),
    /// A command exits 0 (keepalived `MISC_CHECK`).
    Script(ScriptCheck),
}

/// A script check (keepalived `MISC_CHECK`): `command` runs (no shell) every interval with
/// `RINGVS_SERVICE`, `RINGVS_SERVER`, `RINGVS_TARGET` in its environment, as `user`, killed
/// at the timeout. Exit 0 passes. With `dynamic` (keepalived `misc_dynamic`), 1 fails and
/// 2 to 255 pass with weight `status - 2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCheck {
    /// The program (an absolute path) and its arguments.
    pub command: Vec<String>,
    /// Who it runs as when the daemon is root.
    pub user: String,
    /// The exit status sets the weight.
    pub dynamic: bool,
}

/// Commands run when a realserver goes up or down (keepalived `notify_up`/`notify_down`),
/// with `RINGVS_EVENT`, `RINGVS_SERVICE`, `RINGVS_SERVER` and `RINGVS_REASON` set; at most
/// `max_per_minute` per service (the rest are dropped and counted), each killed at `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Run when a realserver comes up.
    pub up: Option<Vec<String>>,
    /// Run when a realserver goes down.
    pub down: Option<Vec<String>>,
    /// Each run ends by then (killed with its process group).
    pub timeout: Duration,
    /// Who they run as when the daemon is root.
    pub user: String,
    /// Most runs per service per minute.
    pub max_per_minute: u32,
}

/// A user's uid and gid, from the password database.
pub fn user_ids(name: &str) -> Result<(u32, u32), String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    // Safety: `passwd` is plain data; getpwnam_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // Safety: every pointer is to a live local of the size passed; getpwnam_r writes only
    // into `pw` and `buf` and sets `out` to `&mut pw` or null.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return Err(format!("no user named {name:?}"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// The user scripts and hooks run as when none is configured.
pub const DEFAULT_SCRIPT_USER: &str = "nobody";

impl CheckKind {
    /// `tcp` or `http`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(h) if h.tls => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Script(_) => "script",
        }
    }
}

/// An HTTP check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request path (starts with `/`).
    pub path: String,
    /// Status codes that pass; empty means any 2xx (keepalived's default).
    pub expect: Vec<u16>,
    /// `Host` header; the checked address when unset.
    pub host: Option<String>,
    /// Over TLS (`check = "https"`, keepalived's `SSL_GET`): the certificate is not verified
    /// (keepalived's default), the handshake's signatures are; `host`, when a DNS name, is
    /// also sent as SNI.
    pub tls: bool,
}

impl HttpCheck {
    /// True if `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        if self.expect.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect.contains(&status)
        }
    }

    /// What passes, for messages: `200`, `200 or 204`, `2xx`.
    pub fn expected(&self) -> String {
        if self.expect.is_empty() {
            "2xx".into()
        } else {
            self.expect
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        }
    }
}

/// What a failing realserver becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// No new flows, existing flows kept, weight remembered (keepalived
    /// `inhibit_on_failure`, but without touching the weight).
    Quiesce,
    /// No new flows; existing flows drain as when the operator removes it (and end on their
    /// next packet with `director.expire_nodest_conn`). keepalived's default.
    Remove,
}

impl OnFail {
    /// `quiesce` or `remove`.
    pub fn name(self) -> &'static str {
        match self {
            OnFail::Quiesce => "quiesce",
            OnFail::Remove => "remove",
        }
    }
}

/// A validated health check, as it applies to one realserver (or, on the service, to every
/// realserver that does not override it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// TCP or HTTP.
    pub kind: CheckKind,
    /// Time between the starts of two checks.
    pub interval: Duration,
    /// A check that takes longer fails.
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
    /// Quiesce or remove when down.
    pub on_fail: OnFail,
    /// Check this port instead of the server's.
    pub port: Option<u16>,
    /// Check this address instead of the server's (per server only).
    pub addr: Option<SocketAddr>,
}

impl HealthConfig {
    /// The endpoint checked for the realserver `server`: `addr`'s address (else the
    /// server's) and `addr`'s port (else `port`, else the server's).
    pub fn target(&self, server: SocketAddr) -> SocketAddr {
        let ip = self.addr.map_or(server.ip(), |a| a.ip());
        let port = match self.addr {
            Some(a) if a.port() != 0 => a.port(),
            _ => self.port.unwrap_or(server.port()),
        };
        SocketAddr::new(ip, port)
    }

    /// The longest time from a server's failure to it being marked down:
    /// `fall × interval + timeout`.
    pub fn detection_window(&self) -> Duration {
        self.interval * self.fall + self.timeout
    }
}

/// A key's value from the server's table if it has it, else from the service's.
struct Pick<'a> {
    svc_key: &'a str,
    svc: Option<&'a raw::Health>,
    srv_key: Option<&'a str>,
    srv: Option<&'a raw::Health>,
}

impl Pick<'_> {
    fn get<T: Clone>(
        &self,
        name: &str,
        f: impl Fn(&raw::Health) -> Option<T>,
    ) -> Option<(String, T)> {
        if let (Some(k), Some(v)) = (self.srv_key, self.srv.and_then(&f)) {
            return Some((format!("{k}.health.{name}"), v));
        }
        self.svc
            .and_then(f)
            .map(|v| (format!("{}.health.{name}", self.svc_key), v))
    }
}

impl Validator<'_> {
    /// The health check of a service (`srv` = None) or of one of its servers. `svc_key` and
    /// `srv_key` are the tables' keys (`service.0`, `service.0.server.1`).
    pub(super) fn health(
        &self,
        svc_key: &str,
        svc: Option<&raw::Health>,
        srv_key: Option<&str>,
        srv: Option<&raw::Health>,
    ) -> Result<Option<HealthConfig>, ConfigError> {
        if svc.is_none() {
            if let (Some(k), Some(_)) = (srv_key, srv) {
                return Err(self.err(
                    format!("{k}.health"),
                    format!("a server can only override the service's health check; add `health = {{ check = \"tcp\" }}` (or \"http\") to the service ({svc_key})"),
                ));
            }
            return Ok(None);
        }
        if let Some(a) = svc.and_then(|h| h.addr.as_ref()) {
            return Err(self.err(
                format!("{svc_key}.health.addr"),
                format!("{a:?}: a check address belongs to one server; set it in that [[service.server]]'s health table (use `port` to check another port on every server)"),
            ));
        }
        let p = Pick {
            svc_key,
            svc,
            srv_key,
            srv,
        };
        let Some((ck, check)) = p.get("check", |h| h.check.clone()) else {
            return Err(self.err(
                format!("{svc_key}.health.check"),
                "missing: expected \"tcp\" or \"http\"",
            ));
        };
        let interval = match p.get("interval", |h| h.interval.clone()) {
            None => Duration::from_secs(2),
            Some((k, q)) => {
                let d = self.duration(&k, q)?;
                if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
                    return Err(self.err(
                        k,
                        format!("expected 100ms to 1h, found {}ms", d.as_millis()),
                    ));
                }
                d
            }
        };
        let timeout = match p.get("timeout", |h| h.timeout.clone()) {
            None => (interval / 2).min(Duration::from_secs(1)),
            Some((k, q)) => {
                let t = self.duration(&k, q)?;
                if t < MIN_TIMEOUT || t > interval {
                    return Err(self.err(
                        k,
                        format!(
                            "expected 10ms up to the interval ({}ms), found {}ms: a check must end before the next one starts",
                            interval.as_millis(),
                            t.as_millis()
                        ),
                    ));
                }
                t
            }
        };
        let count = |name: &str, v: Option<(String, i64)>, default: u32| match v {
            None => Ok(default),
            Some((_, n)) if (1..=MAX_COUNT as i64).contains(&n) => Ok(n as u32),
            Some((k, n)) => Err(self.err(
                k,
                format!("expected 1 to {MAX_COUNT} consecutive checks for `{name}`, found {n}"),
            )),
        };
        let rise = count("rise", p.get("rise", |h| h.rise), 2)?;
        let fall = count("fall", p.get("fall", |h| h.fall), 3)?;
        let on_fail = match p.get("on_fail", |h| h.on_fail.clone()) {
            None => OnFail::Quiesce,
            Some((_, s)) if s == "quiesce" => OnFail::Quiesce,
            Some((_, s)) if s == "remove" => OnFail::Remove,
            Some((k, s)) => {
                return Err(self.err(
                    k,
                    format!("expected \"quiesce\" or \"remove\", found {s:?}"),
                ))
            }
        };
        let port = match p.get("port", |h| h.port) {
            None => None,
            Some((_, n)) if (1..=65_535).contains(&n) => Some(n as u16),
            Some((k, n)) => return Err(self.err(k, format!("expected 1 to 65535, found {n}"))),
        };
        let addr = match p.get("addr", |h| h.addr.clone()) {
            None => None,
            Some((k, s)) => Some(self.check_addr(&k, &s)?),
        };
        let http_only = ["path", "expect", "host"];
        let script_only = ["command", "user", "dynamic"];
        let refuse = |names: &[&str], what: &str| -> Result<(), ConfigError> {
            for name in names {
                let present = match *name {
                    "path" => p.get(name, |h| h.path.clone()).map(|x| x.0),
                    "expect" => p.get(name, |h| h.expect.clone()).map(|x| x.0),
                    "host" => p.get(name, |h| h.host.clone()).map(|x| x.0),
                    "command" => p.get(name, |h| h.command.clone()).map(|x| x.0),
                    "user" => p.get(name, |h| h.user.clone()).map(|x| x.0),
                    _ => p.get(name, |h| h.dynamic).map(|x| x.0),
                };
                if let Some(k) = present {
                    return Err(self.err(
                        k,
                        format!(
                            "only {what} check has this key; set check = \"{}\" or remove it",
                            if what == "an HTTP" { "http" } else { "script" }
                        ),
                    ));
                }
            }
            Ok(())
        };
        if check != "script" {
            refuse(&script_only, "a script")?;
        }
        let kind = match check.as_str() {
            "script" => {
                refuse(&http_only, "an HTTP")?;
                let Some((k, command)) = p.get("command", |h| h.command.clone()) else {
                    return Err(self.err(
                        format!("{svc_key}.health.command"),
                        "missing: a script check needs command = [\"/path/to/check\", \"arg\", …]",
                    ));
                };
                self.command(&k, &command)?;
                let user = match p.get("user", |h| h.user.clone()) {
                    None => DEFAULT_SCRIPT_USER.to_string(),
                    Some((k, u)) => {
                        user_ids(&u).map_err(|e| self.err(k, e))?;
                        u
                    }
                };
                let dynamic = p.get("dynamic", |h| h.dynamic).is_some_and(|x| x.1);
                CheckKind::Script(ScriptCheck {
                    command,
                    user,
                    dynamic,
                })
            }
            "tcp" => {
                for name in http_only {
                    let present = match name {
                        "path" => p.get(name, |h| h.path.clone()).map(|x| x.0),
                        "expect" => p.get(name, |h| h.expect.clone()).map(|x| x.0),
                        _ => p.get(name, |h| h.host.clone()).map(|x| x.0),
                    };
                    if let Some(k) = present {
                        return Err(self.err(
                            k,
                            "only an HTTP check has this key; set check = \"http\" or remove it",
                        ));
                    }
                }
                CheckKind::Tcp
            }
            "http" | "https" => {
                let path = match p.get("path", |h| h.path.clone()) {
                    None => "/".to_string(),
                    Some((k, s)) => {
                        if !s.starts_with('/')
                            || s.len() > 1024
                            || s.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(self.err(
                                k,
                                format!("expected a path starting with '/' without spaces or control characters (at most 1024 bytes), found {s:?}"),
                            ));
                        }
                        s
                    }
                };
                let expect = match p.get("expect", |h| h.expect.clone()) {
                    None => Vec::new(),
                    Some((k, e)) => {
                        let (codes, list) = match e {
                            raw::Expect::One(n) => (vec![n], false),
                            raw::Expect::Many(v) => (v, true),
                        };
                        if codes.is_empty() {
                            return Err(self.err(
                                k,
                                "expected a status code like 200 or a list of them, found an empty list",
                            ));
                        }
                        let mut out = Vec::with_capacity(codes.len());
                        for (i, n) in codes.into_iter().enumerate() {
                            if !(100..=599).contains(&n) {
                                let key = if list { format!("{k}.{i}") } else { k.clone() };
                                return Err(self.err(
                                    key,
                                    format!("expected an HTTP status code (100 to 599), found {n}"),
                                ));
                            }
                            out.push(n as u16);
                        }
                        out
                    }
                };
                let host = match p.get("host", |h| h.host.clone()) {
                    None => None,
                    Some((k, s)) => {
                        if s.is_empty()
                            || s.len() > 255
                            || s.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(self.err(
                                k,
                                format!("expected a host name (1 to 255 characters, no spaces or control characters), found {s:?}"),
                            ));
                        }
                        Some(s)
                    }
                };
                CheckKind::Http(HttpCheck {
                    path,
                    expect,
                    host,
                    tls: check == "https",
                })
            }
            other => {
                return Err(self.err(
                    ck,
                    format!("expected \"tcp\", \"http\", \"https\" or \"script\", found {other:?}"),
                ))
            }
        };
        Ok(Some(HealthConfig {
            kind,
            interval,
            timeout,
            rise,
            fall,
            on_fail,
            port,
            addr,
        }))
    }

    /// A command: an absolute program path and its arguments.
    pub(super) fn command(&self, key: &str, command: &[String]) -> Result<(), ConfigError> {
        match command.first() {
            None => Err(self.err(key, "expected [\"/path/to/program\", \"arg\", …], found an empty list")),
            Some(p) if !p.starts_with('/') => Err(self.err(
                key,
                format!("expected an absolute path as the program (no shell, no PATH lookup), found {p:?}"),
            )),
            Some(_) if command.iter().any(|a| a.contains('\0')) => {
                Err(self.err(key, "an argument contains a NUL byte"))
            }
            Some(_) => Ok(()),
        }
    }

    /// A service's `notify` table.
    pub(super) fn notify(&self, key: &str, n: &raw::Notify) -> Result<NotifyConfig, ConfigError> {
        if n.up.is_none() && n.down.is_none() {
            return Err(self.err(
                key,
                "expected `up = [\"/path\", …]` and/or `down = [\"/path\", …]`",
            ));
        }
        for (name, c) in [("up", &n.up), ("down", &n.down)] {
            if let Some(c) = c {
                self.command(&format!("{key}.{name}"), c)?;
            }
        }
        let timeout = match n.timeout.clone() {
            None => Duration::from_secs(5),
            Some(q) => {
                let k = format!("{key}.timeout");
                let t = self.duration(&k, q)?;
                if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&t) {
                    return Err(self.err(
                        k,
                        format!("expected 100ms to 60s, found {}ms", t.as_millis()),
                    ));
                }
                t
            }
        };
        let user = match &n.user {
            None => DEFAULT_SCRIPT_USER.to_string(),
            Some(u) => {
                user_ids(u).map_err(|e| self.err(format!("{key}.user"), e))?;
                u.clone()
            }
        };
        let max_per_minute = match n.max_per_minute {
            None => 6,
            Some(m) if (1..=600).contains(&m) => m as u32,
            Some(m) => {
                return Err(self.err(
                    format!("{key}.max_per_minute"),
                    format!("expected 1 to 600, found {m}"),
                ))
            }
        };
        Ok(NotifyConfig {
            up: n.up.clone(),
            down: n.down.clone(),
            timeout,
            user,
            max_per_minute,
        })
    }

    /// A duration with millisecond precision.
    fn duration(&self, key: &str, q: raw::Quantity) -> Result<Duration, ConfigError> {
        let ms = match q {
            raw::Quantity::Num(n) => n.saturating_mul(1000),
            raw::Quantity::Text(s) => units::parse_duration_ms(&s).map_err(|m| self.err(key, m))?,
        };
        Ok(Duration::from_millis(ms))
    }

    /// A check address: `ip:port`, or `ip` (stored with port 0: the check's `port`, else the
    /// server's).
    fn check_addr(&self, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
        let want = "expected an address like \"10.77.1.1:9000\", \"10.77.1.1\", \"[fd77::1]:9000\" or \"fd77::1\"";
        let bare = s
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(s);
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Ok(a),
            Ok(_) => Err(self.err(key, format!("{want}, found {s:?}"))),
            Err(_) => match bare.parse::<IpAddr>() {
                // Port 0: `target` takes the check's `port`, else the server's.
                Ok(ip) if !ip.is_unspecified() => Ok(SocketAddr::new(ip, 0)),
                _ => Err(self.err(key, format!("{want}, found {s:?}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;

    const WEB: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
health = { check = "http", interval = "2s", timeout = "1s", rise = 2, fall = 3, path = "/", expect = 200, on_fail = "quiesce" }

[[service.server]]
addr = "10.77.1.1:8080"

[[service.server]]
addr = "10.77.1.2:8080"
health = { port = 9000, path = "/status", expect = [200, 204] }

[[service.server]]
addr = "10.77.1.3:8080"
health = { addr = "10.77.2.3", on_fail = "remove" }
"#;

    fn err(text: &str) -> ConfigError {
        from_str(text, "h.toml").unwrap_err()
    }

    #[test]
    fn service_checks_with_server_overrides() {
        let c = from_str(WEB, "h.toml").unwrap();
        let s = &c.services[0];
        let h = s.health.as_ref().unwrap();
        assert_eq!(h.interval, Duration::from_secs(2));
        assert_eq!(h.timeout, Duration::from_secs(1));
        assert_eq!((h.rise, h.fall, h.on_fail), (2, 3, OnFail::Quiesce));
        assert_eq!(
            h.kind,
            CheckKind::Http(HttpCheck {
                path: "/".into(),
                expect: vec![200],
                host: None,
                tls: false,
            })
        );
        assert_eq!(h.detection_window(), Duration::from_secs(7));
        // The first server takes the service's check as it is.
        assert_eq!(s.servers[0].health.as_ref(), Some(h));
        let a = |x: &str| x.parse::<SocketAddr>().unwrap();
        assert_eq!(h.target(a("10.77.1.1:8080")), a("10.77.1.1:8080"));
        // The second overrides port, path and codes; the rest is the service's.
        let h2 = s.servers[1].health.as_ref().unwrap();
        assert_eq!(h2.target(a("10.77.1.2:8080")), a("10.77.1.2:9000"));
        assert_eq!(h2.interval, Duration::from_secs(2));
        let CheckKind::Http(http) = &h2.kind else {
            panic!("{h2:?}")
        };
        assert_eq!(
            (http.path.as_str(), &http.expect[..]),
            ("/status", &[200, 204][..])
        );
        // The third checks another address on the server's port, and is removed on failure.
        let h3 = s.servers[2].health.as_ref().unwrap();
        assert_eq!(h3.target(a("10.77.1.3:8080")), a("10.77.2.3:8080"));
        assert_eq!(h3.on_fail, OnFail::Remove);
    }

    #[test]
    fn https_is_http_over_tls_and_saves_as_such() {
        let c = from_str(
            &WEB.replace("check = \"http\"", "check = \"https\""),
            "h.toml",
        )
        .unwrap();
        let h = c.services[0].health.clone().unwrap();
        let CheckKind::Http(x) = &h.kind else {
            panic!("{:?}", h.kind)
        };
        assert!(x.tls && x.path == "/" && x.expect == [200], "{x:?}");
        assert_eq!(h.kind.name(), "https");
        // The servers' overrides keep TLS from the service's check.
        let Some(CheckKind::Http(o)) = c.services[0].servers[1].health.as_ref().map(|h| &h.kind)
        else {
            panic!()
        };
        assert!(o.tls && o.path == "/status");
        let saved = super::super::save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
        assert!(saved.contains("check = \"https\""), "{saved}");
        assert_eq!(from_str(&saved, "s.toml").unwrap().services, c.services);
    }

    #[test]
    fn defaults_are_haproxys_and_tcp_needs_only_check() {
        let c = from_str(
            &WEB.replace(
                "health = { check = \"http\", interval = \"2s\", timeout = \"1s\", rise = 2, fall = 3, path = \"/\", expect = 200, on_fail = \"quiesce\" }",
                "health = { check = \"tcp\" }",
            )
            .replace("health = { port = 9000, path = \"/status\", expect = [200, 204] }", "")
            .replace("health = { addr = \"10.77.2.3\", on_fail = \"remove\" }", ""),
            "h.toml",
        )
        .unwrap();
        let h = c.services[0].health.clone().unwrap();
        assert_eq!(h.kind, CheckKind::Tcp);
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
        assert_eq!((h.rise, h.fall, h.on_fail), (2, 3, OnFail::Quiesce));
        // No health table: not checked.
        let c = from_str(
            "[[service]]\nname = \"w\"\nvip = \"10.77.100.100:80\"\n[[service.server]]\naddr = \"10.77.1.1\"\n",
            "h.toml",
        )
        .unwrap();
        assert!(c.services[0].health.is_none() && c.services[0].servers[0].health.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let svc = "check = \"http\", interval = \"2s\", timeout = \"1s\", rise = 2, fall = 3, path = \"/\", expect = 200, on_fail = \"quiesce\"";
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "check = \"http\"",
                "check = \"smtp\"",
                "service[0].health.check",
                "\"tcp\", \"http\", \"https\" or \"script\"",
            ),
            (
                "interval = \"2s\"",
                "interval = \"2 fortnights\"",
                "service[0].health.interval",
                "unknown duration unit",
            ),
            (
                "interval = \"2s\"",
                "interval = \"50ms\"",
                "service[0].health.interval",
                "100ms to 1h",
            ),
            (
                "timeout = \"1s\"",
                "timeout = \"3s\"",
                "service[0].health.timeout",
                "up to the interval",
            ),
            ("rise = 2", "rise = 0", "service[0].health.rise", "1 to 100"),
            (
                "fall = 3",
                "fall = 1000",
                "service[0].health.fall",
                "1 to 100",
            ),
            (
                "path = \"/\"",
                "path = \"health\"",
                "service[0].health.path",
                "starting with '/'",
            ),
            (
                "path = \"/\"",
                "path = \"/a b\"",
                "service[0].health.path",
                "without spaces",
            ),
            (
                "expect = 200",
                "expect = 42",
                "service[0].health.expect",
                "100 to 599",
            ),
            (
                "expect = 200",
                "expect = [200, 700]",
                "service[0].health.expect[1]",
                "100 to 599",
            ),
            (
                "expect = 200",
                "expect = []",
                "service[0].health.expect",
                "empty list",
            ),
            (
                "on_fail = \"quiesce\"",
                "on_fail = \"inhibit\"",
                "service[0].health.on_fail",
                "\"quiesce\" or \"remove\"",
            ),
        ];
        for (from, to, key, msg) in cases {
            let e = err(&WEB.replace(svc, &svc.replace(from, to)));
            assert_eq!(e.key, *key, "{to}: {e}");
            assert!(e.message.contains(msg), "{to}: {e}");
            assert!(
                e.to_string().starts_with(&format!("h.toml: key `{key}`")),
                "{e}"
            );
        }
        // Server overrides are named as the server's keys.
        let e = err(&WEB.replace("port = 9000", "port = 0"));
        assert_eq!(e.key, "service[0].server[1].health.port");
        let e = err(&WEB.replace("addr = \"10.77.2.3\"", "addr = \"somewhere\""));
        assert_eq!(e.key, "service[0].server[2].health.addr");
        let e = err(&WEB.replace("on_fail = \"remove\"", "on_fial = \"remove\""));
        assert!(e.message.contains("on_fial"), "{e}");
        // HTTP keys on a TCP check, and a check address for the whole service.
        let e = err(&WEB.replace("check = \"http\"", "check = \"tcp\""));
        assert_eq!(e.key, "service[0].health.path");
        assert!(e.message.contains("only an HTTP check"), "{e}");
        let e = err(&WEB.replace("on_fail = \"quiesce\"", "addr = \"10.77.1.9\""));
        assert_eq!(e.key, "service[0].health.addr");
        // A server override without a service check.
        let e = err(&WEB.replace(&format!("health = {{ {svc} }}"), ""));
        assert_eq!(e.key, "service[0].server[1].health");
        assert!(e.message.contains("only override"), "{e}");
        // A missing check kind.
        let e = err(&WEB.replace("check = \"http\", ", ""));
        assert_eq!(e.key, "service[0].health.check");
    }
}
