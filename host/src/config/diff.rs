//! What a reload changes, and runtime edits: a three-way comparison of the services as they
//! run (`running`: the registry, runtime edits included), as the config file had them when
//! it was last applied (`loaded`), and as the file has them now (`file`).
//!
//! An item — a service, one of its settings, a realserver, one of its settings — is a
//! **runtime edit** where `running` differs from `loaded`. A reload makes `running` equal to
//! `file`, so it reverts every runtime edit the file does not repeat. With `keep_runtime`
//! (HAProxy's server-state file, applied by item) a runtime edit is kept where the file left
//! the item as it was (`file == loaded`); where the file changed the item too, the file wins.

use super::{ServerConfig, ServiceConfig};
use crate::conn::State;

/// What a reload does to a runtime edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The item was not edited at runtime.
    No,
    /// The reload undoes a runtime edit.
    Reverted,
    /// The reload keeps a runtime edit (`keep_runtime`).
    Kept,
}

/// One difference, in words: `service web: server 10.77.1.1:8080 weight 0 -> 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changes (or, for a kept edit, what stays).
    pub text: String,
    /// Whether it touches a runtime edit.
    pub runtime: Runtime,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.runtime {
            Runtime::No => write!(f, "{}", self.text),
            Runtime::Reverted => write!(f, "{} (reverts a runtime edit)", self.text),
            Runtime::Kept => write!(f, "{} (runtime edit kept)", self.text),
        }
    }
}

/// The services a reload applies, and what that changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to apply: `file`'s services, or with `keep_runtime` the merge.
    pub services: Vec<ServiceConfig>,
    /// The differences from `running`, and the runtime edits kept.
    pub changes: Vec<Change>,
}

impl Plan {
    /// The changes that revert a runtime edit.
    pub fn reverted(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| c.runtime == Runtime::Reverted)
    }

    /// The runtime edits kept.
    pub fn kept(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.runtime == Runtime::Kept)
    }
}

/// The plan of a reload from `running` (with `loaded` as last applied) to `file`.
pub fn plan(
    running: &[ServiceConfig],
    loaded: &[ServiceConfig],
    file: &[ServiceConfig],
    keep_runtime: bool,
) -> Plan {
    let mut m = Merge {
        keep: keep_runtime,
        changes: Vec::new(),
    };
    let find = |v: &[ServiceConfig], n: &str| v.iter().find(|s| s.name == n).cloned();
    let mut names: Vec<&str> = file.iter().map(|s| s.name.as_str()).collect();
    for s in running.iter().chain(loaded) {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let mut services = Vec::new();
    for name in names {
        let (r, l, f) = (find(running, name), find(loaded, name), find(file, name));
        if let Some(s) = m.service(name, r, l, f) {
            services.push(s);
        }
    }
    Plan {
        services,
        changes: m.changes,
    }
}

struct Merge {
    keep: bool,
    changes: Vec<Change>,
}

impl Merge {
    /// The value an item takes: `running`'s where a runtime edit is kept, else `file`'s; and
    /// whether the item was edited at runtime.
    fn pick<T: PartialEq + Clone>(&self, r: &T, l: &T, f: &T) -> (T, Runtime) {
        let edited = r != l;
        if self.keep && edited && f == l {
            (r.clone(), Runtime::Kept)
        } else if edited {
            (f.clone(), Runtime::Reverted)
        } else {
            (f.clone(), Runtime::No)
        }
    }

    /// Notes the change of an item from `r` to `target`, or a kept edit.
    fn note(&mut self, text: impl FnOnce() -> String, changed: bool, runtime: Runtime) {
        match runtime {
            Runtime::Kept => self.changes.push(Change {
                text: text(),
                runtime,
            }),
            _ if changed => self.changes.push(Change {
                text: text(),
                runtime,
            }),
            _ => {}
        }
    }

    fn service(
        &mut self,
        name: &str,
        r: Option<ServiceConfig>,
        l: Option<ServiceConfig>,
        f: Option<ServiceConfig>,
    ) -> Option<ServiceConfig> {
        let (present, rt) = self.pick(&r.is_some(), &l.is_some(), &f.is_some());
        match (present, r, f) {
            (false, None, _) => {
                self.note(|| format!("= service {name} removed at runtime"), false, rt);
                None
            }
            (false, Some(r), _) => {
                self.note(
                    || format!("- service {name} ({} {})", r.proto.name(), r.vip),
                    true,
                    rt,
                );
                None
            }
            // Kept: a service added at runtime that the file does not have.
            (true, Some(r), None) => {
                self.note(
                    || {
                        format!(
                            "= service {name} ({} {}) added at runtime",
                            r.proto.name(),
                            r.vip
                        )
                    },
                    false,
                    rt,
                );
                Some(r)
            }
            (true, None, Some(f)) => {
                self.note(
                    || {
                        format!(
                            "+ service {name} ({} {}, {} server(s))",
                            f.proto.name(),
                            f.vip,
                            f.servers.len()
                        )
                    },
                    true,
                    rt,
                );
                Some(f)
            }
            (true, Some(r), Some(f)) => Some(self.fields(name, &r, l.as_ref(), &f)),
            (true, None, None) => None,
        }
    }

    /// A service in both `running` and `file`: setting by setting, server by server.
    fn fields(
        &mut self,
        name: &str,
        r: &ServiceConfig,
        l: Option<&ServiceConfig>,
        f: &ServiceConfig,
    ) -> ServiceConfig {
        let mut out = f.clone();
        macro_rules! field {
            ($label:expr, $get:expr, $show:expr) => {{
                let get = $get;
                let (rv, fv) = (get(r), get(f));
                let lv = l.map(get);
                let (v, rt) = self.pick(&Some(rv.clone()), &lv, &Some(fv));
                let v = v.expect("present");
                let changed = v != rv;
                let show = $show;
                self.note(
                    || {
                        if changed {
                            format!("~ service {name}: {} {} -> {}", $label, show(&rv), show(&v))
                        } else {
                            format!("= service {name}: {} {}", $label, show(&rv))
                        }
                    },
                    changed,
                    rt,
                );
                v
            }};
        }
        let (proto, vip) =
            field!(
                "address",
                |s: &ServiceConfig| (s.proto, s.vip),
                |v: &(super::Proto, std::net::SocketAddr)| format!("{} {}", v.0.name(), v.1)
            );
        out.proto = proto;
        out.vip = vip;
        out.forward = field!(
            "forward",
            |s: &ServiceConfig| s.forward,
            |v: &super::Forward| { v.ipvsadm_name().to_string() }
        );
        out.scheduler = field!(
            "scheduler",
            |s: &ServiceConfig| s.scheduler.clone(),
            |v: &String| v.clone()
        );
        out.persistence = field!(
            "persistence",
            |s: &ServiceConfig| s.persistence.clone(),
            |v: &Option<super::PersistenceConfig>| match v {
                None => "none".to_string(),
                Some(p) => format!("{} {}s {}", p.plugin, p.timeout_secs, p.config),
            }
        );
        out.defense = field!(
            "defense",
            |s: &ServiceConfig| s.defense.clone(),
            |v: &Vec<String>| format!("[{}]", v.join(", "))
        );
        out.timeouts = field!(
            "timeouts",
            |s: &ServiceConfig| s.timeouts,
            |v: &crate::conn::Timeouts| {
                let set: Vec<String> = State::ALL
                    .iter()
                    .filter(|st| v.get(**st) != crate::conn::Timeouts::IPVS.get(**st))
                    .map(|st| format!("{}={}s", st.key(), v.get(*st)))
                    .collect();
                if set.is_empty() {
                    "IPVS defaults".to_string()
                } else {
                    set.join(",")
                }
            }
        );
        out.udp_unreplied = field!(
            "timeouts.udp_unreplied",
            |s: &ServiceConfig| s.udp_unreplied,
            |v: &u32| format!("{v}s")
        );
        out.syn_proxy = field!(
            "syn_proxy",
            |s: &ServiceConfig| s.syn_proxy,
            |v: &super::SynProxyMode| v.name().to_string()
        );
        out.max_conns = field!("max_conns", |s: &ServiceConfig| s.max_conns, |v: &u32| v
            .to_string());
        out.sloppy = field!("sloppy", |s: &ServiceConfig| s.sloppy, |v: &bool| v
            .to_string());
        out.health = field!(
            "health",
            |s: &ServiceConfig| s.health.clone(),
            |v: &Option<super::HealthConfig>| match v {
                None => "none".to_string(),
                Some(h) => format!("{} every {:?}", h.kind.name(), h.interval),
            }
        );
        out.sorry_server = field!(
            "sorry server",
            |s: &ServiceConfig| s.sorry_server,
            |v: &Option<std::net::SocketAddr>| v.map_or("none".to_string(), |a| a.to_string())
        );
        out.notify = field!(
            "notify",
            |s: &ServiceConfig| s.notify.clone(),
            |v: &Option<super::NotifyConfig>| match v {
                None => "none".to_string(),
                Some(n) => format!("up {:?} down {:?}", n.up, n.down),
            }
        );
        out.servers = self.servers(name, r, l, f);
        out
    }

    fn servers(
        &mut self,
        name: &str,
        r: &ServiceConfig,
        l: Option<&ServiceConfig>,
        f: &ServiceConfig,
    ) -> Vec<ServerConfig> {
        let find = |s: Option<&ServiceConfig>, a| {
            s.and_then(|s| s.servers.iter().find(|x| x.addr == a).cloned())
        };
        let mut addrs: Vec<_> = f.servers.iter().map(|s| s.addr).collect();
        for s in r
            .servers
            .iter()
            .chain(l.iter().flat_map(|l| l.servers.iter()))
        {
            if !addrs.contains(&s.addr) {
                addrs.push(s.addr);
            }
        }
        let mut out = Vec::new();
        for a in addrs {
            let (rs, ls, fs) = (find(Some(r), a), find(l, a), find(Some(f), a));
            let (present, rt) = self.pick(&rs.is_some(), &ls.is_some(), &fs.is_some());
            match (present, rs, fs) {
                (false, None, _) => {
                    self.note(
                        || format!("= service {name}: server {a} removed at runtime"),
                        false,
                        rt,
                    );
                }
                (false, Some(_), _) => {
                    self.note(|| format!("- service {name}: server {a}"), true, rt);
                }
                (true, Some(rs), None) => {
                    self.note(
                        || format!("= service {name}: server {a} added at runtime"),
                        false,
                        rt,
                    );
                    out.push(rs);
                }
                (true, None, Some(fs)) => {
                    self.note(
                        || format!("+ service {name}: server {a} weight {}", fs.weight),
                        true,
                        rt,
                    );
                    out.push(fs);
                }
                (true, Some(rs), Some(fs)) => {
                    let ls = ls.as_ref();
                    let mut v = fs.clone();
                    let (w, rt) =
                        self.pick(&Some(rs.weight), &ls.map(|x| x.weight), &Some(fs.weight));
                    v.weight = w.unwrap_or(fs.weight);
                    self.note(
                        || match v.weight == rs.weight {
                            true => format!("= service {name}: server {a} weight {}", rs.weight),
                            false => format!(
                                "~ service {name}: server {a} weight {} -> {}",
                                rs.weight, v.weight
                            ),
                        },
                        v.weight != rs.weight,
                        rt,
                    );
                    let th = |s: &ServerConfig| (s.upper, s.lower);
                    let (t, rt) = self.pick(&Some(th(&rs)), &ls.map(th), &Some(th(&fs)));
                    let t = t.unwrap_or(th(&fs));
                    (v.upper, v.lower) = t;
                    self.note(
                        || {
                            format!(
                                "~ service {name}: server {a} thresholds upper {} lower {} -> upper {} lower {}",
                                rs.upper, rs.lower, t.0, t.1
                            )
                        },
                        t != th(&rs),
                        rt,
                    );
                    let (h, rt) = self.pick(
                        &Some(rs.health.clone()),
                        &ls.map(|x| x.health.clone()),
                        &Some(fs.health.clone()),
                    );
                    v.health = h.unwrap_or(fs.health.clone());
                    let changed = v.health != rs.health;
                    self.note(
                        || format!("~ service {name}: server {a} health check"),
                        changed,
                        rt,
                    );
                    // The method is the file's (not a runtime edit).
                    let method = |s: &ServerConfig, svc: &ServiceConfig| {
                        s.forward.unwrap_or(svc.forward).ipvsadm_name()
                    };
                    let (was, now) = (method(&rs, r), method(&fs, f));
                    self.note(
                        || format!("~ service {name}: server {a} forward {was} -> {now}"),
                        was != now,
                        Runtime::No,
                    );
                    out.push(v);
                }
                _ => {}
            }
        }
        out
    }
}
