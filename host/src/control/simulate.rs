//! `ringvs plugin test`: which realserver a scheduler gives each of many flows (Katran's
//! "which real gets this flow"), and how many flows move when a realserver goes away.
//!
//! The flows are TCP from pseudo-random clients (a fixed seed: the same run gives the same
//! answer) to one virtual address. Each pick counts as one established connection on the
//! server picked, so least-connection schedulers see the load they created. Then the same
//! flows go to a fresh instance that was told the list without the removed server (by
//! default the last): a flow *moved* if it was on another server than the removed one and
//! now lands elsewhere. A consistent-hashing scheduler (mh) moves few; rr and wlc move most.

use crate::dataplane::testkit::Rng;
use crate::plugin::{flow_v4, Plugin, SchedulerInstance, ServerInfo};
use ringvs_abi::LOAD_STRIDE;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// What one simulation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulation {
    /// The realservers and their weights, as given.
    pub servers: Vec<(SocketAddrV4, u32)>,
    /// Flows asked about.
    pub flows: u64,
    /// Flows picked per server (index as `servers`); flows without a server are `unplaced`.
    pub picks: Vec<u64>,
    /// Flows the scheduler gave no server.
    pub unplaced: u64,
    /// The server removed for the second run.
    pub removed: usize,
    /// Flows per server with it removed (the removed one's count is 0).
    pub picks_after: Vec<u64>,
    /// Flows that were on a server other than the removed one and moved.
    pub moved: u64,
    /// Flows that were on the removed server (they must move).
    pub displaced: u64,
}

/// `flow i` of a run: a client address and port from the seed's sequence.
fn flows(n: u64) -> impl Iterator<Item = SocketAddrV4> {
    let mut rng = Rng::new(0x5eed);
    (0..n).map(move |_| {
        let v = rng.next_u64();
        let addr = Ipv4Addr::from(0x0a00_0000 | (v as u32 & 0x00ff_ffff));
        SocketAddrV4::new(addr, 1024 + ((v >> 32) as u16 % 64_000))
    })
}

/// Runs `plugin` (a scheduler) over `flows` flows to `vip`; `None` for a flow without a
/// server. Each pick adds an active connection to its server.
fn run(
    plugin: &Arc<Plugin>,
    servers: &[(SocketAddrV4, u32)],
    n: u64,
    vip: SocketAddrV4,
) -> Result<Vec<Option<usize>>, String> {
    let mut inst = SchedulerInstance::new(plugin).map_err(|e| e.to_string())?;
    let infos: Vec<ServerInfo> = servers
        .iter()
        .map(|&(addr, weight)| ServerInfo {
            addr: addr.into(),
            weight,
        })
        .collect();
    inst.servers_changed(&infos)
        .map_err(|f| format!("servers-changed: {f}"))?;
    let mut load: Vec<u32> = servers.iter().flat_map(|&(_, w)| [w, 0, 0]).collect();
    let mut out = Vec::with_capacity(n as usize);
    for client in flows(n) {
        let pick = inst
            .pick(&flow_v4(6, client, vip), &load)
            .map_err(|f| format!("pick: {f}"))?;
        if let Some(i) = pick {
            let active = &mut load[i * LOAD_STRIDE + 1];
            *active = active.saturating_add(1);
        }
        out.push(pick);
    }
    Ok(out)
}

/// Simulates `n` flows over `servers`, then again without server `remove` (default: the
/// last).
pub fn simulate(
    plugin: &Arc<Plugin>,
    servers: &[(SocketAddrV4, u32)],
    n: u64,
    remove: Option<usize>,
) -> Result<Simulation, String> {
    if servers.is_empty() {
        return Err("no servers".into());
    }
    let removed = remove.unwrap_or(servers.len() - 1);
    if removed >= servers.len() {
        return Err(format!("no server {removed} to remove"));
    }
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 255, 255, 1), 80);
    let before = run(plugin, servers, n, vip)?;
    let rest: Vec<(SocketAddrV4, u32)> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != removed)
        .map(|(_, s)| *s)
        .collect();
    // Indices of the second run, mapped back to the full list.
    let back = |i: usize| if i >= removed { i + 1 } else { i };
    let after: Vec<Option<usize>> = if rest.is_empty() {
        vec![None; n as usize]
    } else {
        run(plugin, &rest, n, vip)?
            .into_iter()
            .map(|p| p.map(back))
            .collect()
    };
    let mut sim = Simulation {
        servers: servers.to_vec(),
        flows: n,
        picks: vec![0; servers.len()],
        unplaced: 0,
        removed,
        picks_after: vec![0; servers.len()],
        moved: 0,
        displaced: 0,
    };
    for (b, a) in before.iter().zip(&after) {
        match b {
            Some(i) => sim.picks[*i] += 1,
            None => sim.unplaced += 1,
        }
        if let Some(i) = a {
            sim.picks_after[*i] += 1;
        }
        match b {
            Some(i) if *i == removed => sim.displaced += 1,
            Some(_) if a != b => sim.moved += 1,
            _ => {}
        }
    }
    Ok(sim)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_w: u64 = self.servers.iter().map(|s| s.1 as u64).sum();
        let rest_w = total_w - self.servers[self.removed].1 as u64;
        writeln!(
            f,
            "{} flows; then without {} (moved: flows that were elsewhere and land on another server)",
            self.flows, self.servers[self.removed].0
        )?;
        writeln!(
            f,
            "{:<22} {:>6} {:>10} {:>7} {:>7}   {:>10} {:>7} {:>7}",
            "SERVER", "WEIGHT", "FLOWS", "SHARE", "WEIGHT%", "WITHOUT", "SHARE", "WEIGHT%"
        )?;
        for (i, (addr, w)) in self.servers.iter().enumerate() {
            let (after, share_after, w_after) = if i == self.removed {
                ("removed".to_string(), String::new(), String::new())
            } else {
                (
                    self.picks_after[i].to_string(),
                    format!("{:.1}%", pct(self.picks_after[i], self.flows)),
                    format!("{:.1}%", pct(*w as u64, rest_w)),
                )
            };
            writeln!(
                f,
                "{:<22} {:>6} {:>10} {:>6.1}% {:>6.1}%   {:>10} {:>7} {:>7}",
                addr.to_string(),
                w,
                self.picks[i],
                pct(self.picks[i], self.flows),
                pct(*w as u64, total_w),
                after,
                share_after,
                w_after
            )?;
        }
        if self.unplaced > 0 {
            writeln!(f, "no server: {} flows", self.unplaced)?;
        }
        write!(
            f,
            "removing {}: {} flows displaced (were on it), {} of the other {} moved ({:.2}%)",
            self.servers[self.removed].0,
            self.displaced,
            self.moved,
            self.flows - self.displaced - self.unplaced,
            pct(self.moved, self.flows - self.displaced - self.unplaced)
        )
    }
}

/// Parses `--servers 10.0.0.1:80=3,10.0.0.2:80=1` (weight 1 when `=W` is left out).
pub fn parse_servers(arg: &str) -> Result<Vec<(SocketAddrV4, u32)>, String> {
    arg.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (addr, w) = item.trim().split_once('=').unwrap_or((item.trim(), "1"));
            let addr: SocketAddrV4 = addr
                .parse()
                .map_err(|_| format!("{item:?}: expected IPv4ADDR:PORT[=WEIGHT]"))?;
            let w: u32 = w
                .parse()
                .map_err(|_| format!("{item:?}: the weight must be a whole number"))?;
            Ok((addr, w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_weights_and_refuse_nonsense() {
        assert_eq!(
            parse_servers("10.0.0.1:80=3, 10.0.0.2:80").unwrap(),
            vec![
                ("10.0.0.1:80".parse().unwrap(), 3),
                ("10.0.0.2:80".parse().unwrap(), 1)
            ]
        );
        assert!(parse_servers("10.0.0.1=3").is_err());
        assert!(parse_servers("10.0.0.1:80=x").is_err());
    }

    #[test]
    fn flows_are_the_same_every_run_and_spread() {
        let a: Vec<_> = flows(1000).collect();
        assert_eq!(a, flows(1000).collect::<Vec<_>>());
        let distinct: std::collections::HashSet<_> = a.iter().map(|c| *c.ip()).collect();
        assert!(distinct.len() > 990);
    }
}
