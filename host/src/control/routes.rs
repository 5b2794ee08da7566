//! `director.routes = "auto"`: installs exactly the routes of the documented manual recipe,
//! and removes exactly those on exit.
//!
//! - `ip route replace VIP/32 dev DEVICE` for each virtual address;
//! - for each interface facing realservers (found with `ip route get RIP`):
//!   `ip rule add iif IFACE lookup TABLE pref PREF`;
//! - `ip route replace default dev DEVICE table TABLE`.
//!
//! Each family has its own: `ip -6 route replace VIP/128 dev DEVICE`, `ip -6 rule …`, `ip -6
//! route replace default dev DEVICE table TABLE` for IPv6 services.
//!
//! The daemon turns off reverse-path filtering on the device ringvs created, and IPv6 on it
//! unless an IPv6 service exists (its own device; nothing else on the host is changed), and
//! checks that forwarding is on.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

/// Routing table used for realservers' replies.
pub const REPLY_TABLE: u32 = 77;
/// Priority of the policy rules.
pub const RULE_PREF: u32 = 1000;

/// An `ip` command that failed.
#[derive(Debug)]
pub struct RouteError(pub String);

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouteError {}

fn ip(args: &[&str]) -> Result<String, RouteError> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        RouteError(format!(
            "cannot run `ip {}`: {e} (is iproute2 installed?)",
            args.join(" ")
        ))
    })?;
    if !out.status.success() {
        return Err(RouteError(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes the sysctls of the device ringvs owns. Errors are returned for the caller to log.
/// `accept_local`: tunnelled packets (`forward = "tun"`) come out of the device with one of
/// the director's own addresses as their source, which the kernel otherwise drops as a
/// martian.
pub fn device_sysctls(device: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    for (path, val) in [
        (format!("/proc/sys/net/ipv4/conf/{device}/rp_filter"), "0"),
        (
            format!("/proc/sys/net/ipv4/conf/{device}/accept_local"),
            "1",
        ),
    ] {
        if let Err(e) = std::fs::write(&path, val) {
            warnings.push(format!("cannot set {path} to {val}: {e}"));
        }
    }
    warnings
}

/// Checks the host settings the routing contract needs, returning what is wrong.
pub fn check_forwarding() -> Vec<String> {
    let mut problems = Vec::new();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    if read("/proc/sys/net/ipv4/ip_forward") != "1" {
        problems.push(
            "net.ipv4.ip_forward is 0: the kernel will not forward rewritten packets (set it to 1)"
                .to_string(),
        );
    }
    if read("/proc/sys/net/ipv4/conf/all/rp_filter") == "1" {
        problems.push(
            "net.ipv4.conf.all.rp_filter is 1 (strict): rewritten packets leave the device with a \
             client source address and are dropped (set it to 0 or 2)"
                .to_string(),
        );
    }
    problems
}

/// IPv6 forwarding, checked when an IPv6 service exists.
pub fn check_forwarding6() -> Option<String> {
    let on = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    (!on).then(|| {
        "net.ipv6.conf.all.forwarding is 0: the kernel will not forward rewritten IPv6 packets (set it to 1)"
            .to_string()
    })
}

/// Turns IPv6 on (`on`) or off on the device ringvs owns: on while an IPv6 service exists
/// (its routes need it), off otherwise (nothing of the kernel's own IPv6 — router
/// solicitations, MLD — goes through the queues for nothing).
pub fn device_ipv6(device: &str, on: bool) -> Result<(), String> {
    let path = format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
    std::fs::write(&path, if on { "0" } else { "1" }).map_err(|e| format!("cannot set {path}: {e}"))
}

/// The `ip` words of a family: `-4` or `-6`.
fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "-4"
    } else {
        "-6"
    }
}

/// A host route's prefix: `/32` or `/128`.
fn host(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The routes ringvs installed.
#[derive(Debug, Default)]
pub struct AutoRoutes {
    device: String,
    vips: BTreeSet<IpAddr>,
    /// Interfaces with a policy rule, per family (`-4`/`-6`).
    ifaces: BTreeSet<(&'static str, String)>,
    /// Families with the default route of the reply table.
    default_route: BTreeSet<&'static str>,
}

impl AutoRoutes {
    /// Nothing installed yet, for `device`.
    pub fn new(device: &str) -> AutoRoutes {
        AutoRoutes {
            device: device.to_string(),
            ..AutoRoutes::default()
        }
    }

    /// The interface the kernel would use to reach `addr`.
    fn iface_to(addr: IpAddr) -> Result<String, RouteError> {
        let out = ip(&[family(addr), "-o", "route", "get", &addr.to_string()])?;
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "dev" {
                if let Some(d) = words.next() {
                    return Ok(d.to_string());
                }
            }
        }
        Err(RouteError(format!(
            "`ip route get {addr}` names no interface: {}",
            out.trim()
        )))
    }

    /// `ip FAMILY rule ACTION iif IFACE lookup TABLE pref PREF`.
    fn rule(fam: &str, action: &str, iface: &str) -> Result<String, RouteError> {
        ip(&[
            fam,
            "rule",
            action,
            "iif",
            iface,
            "lookup",
            &REPLY_TABLE.to_string(),
            "pref",
            &RULE_PREF.to_string(),
        ])
    }

    /// `ip FAMILY route ACTION default dev DEVICE table TABLE`.
    fn reply_route(&self, fam: &str, action: &str) -> Result<String, RouteError> {
        ip(&[
            fam,
            "route",
            action,
            "default",
            "dev",
            &self.device,
            "table",
            &REPLY_TABLE.to_string(),
        ])
    }

    /// Makes the installed routes match `vips` and the interfaces facing `servers` (each
    /// family with its own rules and reply route).
    pub fn sync(
        &mut self,
        vips: &BTreeSet<IpAddr>,
        servers: &BTreeSet<IpAddr>,
    ) -> Result<(), RouteError> {
        let mut ifaces = BTreeSet::new();
        for s in servers {
            let i = Self::iface_to(*s)?;
            if i == self.device {
                return Err(RouteError(format!(
                    "realserver {s} is routed through {} itself; it must sit behind another interface",
                    self.device
                )));
            }
            ifaces.insert((family(*s), i));
        }
        let families: BTreeSet<_> = vips.iter().map(|v| family(*v)).collect();
        for fam in families.iter().chain(&["-4"]) {
            if !self.default_route.contains(fam) {
                self.reply_route(fam, "replace")?;
                self.default_route.insert(fam);
            }
        }
        for v in vips.difference(&self.vips.clone()) {
            ip(&[
                family(*v),
                "route",
                "replace",
                &host(*v),
                "dev",
                &self.device,
            ])?;
            self.vips.insert(*v);
        }
        for v in self.vips.clone().difference(vips) {
            let _ = ip(&[family(*v), "route", "del", &host(*v), "dev", &self.device]);
            self.vips.remove(v);
        }
        for (fam, i) in ifaces.difference(&self.ifaces.clone()) {
            // Idempotent: drop a leftover identical rule first.
            let _ = Self::rule(fam, "del", i);
            Self::rule(fam, "add", i)?;
            self.ifaces.insert((fam, i.clone()));
        }
        for (fam, i) in self.ifaces.clone().difference(&ifaces) {
            let _ = Self::rule(fam, "del", i);
            self.ifaces.remove(&(*fam, i.clone()));
        }
        Ok(())
    }

    /// Removes everything installed; returns what could not be removed.
    pub fn remove_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (fam, i) in std::mem::take(&mut self.ifaces) {
            if let Err(e) = Self::rule(fam, "del", &i) {
                errors.push(e.0);
            }
        }
        for v in std::mem::take(&mut self.vips) {
            // The route goes with the device anyway; ignore "no such route".
            let _ = ip(&[family(v), "route", "del", &host(v), "dev", &self.device]);
        }
        for fam in std::mem::take(&mut self.default_route) {
            let _ = self.reply_route(fam, "del");
        }
        errors
    }
}
