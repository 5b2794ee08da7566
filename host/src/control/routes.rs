//! `director.routes = "auto"`: installs exactly the routes of the documented manual recipe,
//! and removes exactly those on exit.
//!
//! - `ip route replace VIP/32 dev DEVICE` for each virtual address;
//! - for each interface facing realservers (found with `ip route get RIP`):
//!   `ip rule add iif IFACE lookup TABLE pref PREF`;
//! - `ip route replace default dev DEVICE table TABLE`.
//!
//! It also turns off IPv6 and reverse-path filtering on the device ringvs created (its own
//! device; nothing else on the host is changed) and checks that forwarding is on.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
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
        (
            format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6"),
            "1",
        ),
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

/// The routes ringvs installed.
#[derive(Debug, Default)]
pub struct AutoRoutes {
    device: String,
    vips: BTreeSet<Ipv4Addr>,
    ifaces: BTreeSet<String>,
    default_route: bool,
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
    fn iface_to(addr: Ipv4Addr) -> Result<String, RouteError> {
        let out = ip(&["-o", "route", "get", &addr.to_string()])?;
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

    /// Makes the installed routes match `vips` and the interfaces facing `servers`.
    pub fn sync(
        &mut self,
        vips: &BTreeSet<Ipv4Addr>,
        servers: &BTreeSet<Ipv4Addr>,
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
            ifaces.insert(i);
        }
        if !self.default_route {
            ip(&[
                "route",
                "replace",
                "default",
                "dev",
                &self.device,
                "table",
                &REPLY_TABLE.to_string(),
            ])?;
            self.default_route = true;
        }
        for v in vips.difference(&self.vips.clone()) {
            ip(&["route", "replace", &format!("{v}/32"), "dev", &self.device])?;
            self.vips.insert(*v);
        }
        for v in self.vips.clone().difference(vips) {
            let _ = ip(&["route", "del", &format!("{v}/32"), "dev", &self.device]);
            self.vips.remove(v);
        }
        for i in ifaces.difference(&self.ifaces.clone()) {
            // Idempotent: drop a leftover identical rule first.
            let _ = ip(&[
                "rule",
                "del",
                "iif",
                i,
                "lookup",
                &REPLY_TABLE.to_string(),
                "pref",
                &RULE_PREF.to_string(),
            ]);
            ip(&[
                "rule",
                "add",
                "iif",
                i,
                "lookup",
                &REPLY_TABLE.to_string(),
                "pref",
                &RULE_PREF.to_string(),
            ])?;
            self.ifaces.insert(i.clone());
        }
        for i in self.ifaces.clone().difference(&ifaces) {
            let _ = ip(&[
                "rule",
                "del",
                "iif",
                i,
                "lookup",
                &REPLY_TABLE.to_string(),
                "pref",
                &RULE_PREF.to_string(),
            ]);
            self.ifaces.remove(i);
        }
        Ok(())
    }

    /// Removes everything installed; returns what could not be removed.
    pub fn remove_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for i in std::mem::take(&mut self.ifaces) {
            if let Err(e) = ip(&[
                "rule",
                "del",
                "iif",
                &i,
                "lookup",
                &REPLY_TABLE.to_string(),
                "pref",
                &RULE_PREF.to_string(),
            ]) {
                errors.push(e.0);
            }
        }
        for v in std::mem::take(&mut self.vips) {
            // The route goes with the device anyway; ignore "no such route".
            let _ = ip(&["route", "del", &format!("{v}/32"), "dev", &self.device]);
        }
        if std::mem::take(&mut self.default_route) {
            let _ = ip(&[
                "route",
                "del",
                "default",
                "dev",
                &self.device,
                "table",
                &REPLY_TABLE.to_string(),
            ]);
        }
        errors
    }
}
