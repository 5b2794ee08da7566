//! `ringvs replay --compare A.toml B.toml CAPTURE`: the same capture through two configs (two
//! policies), side by side: the spread of new flows over the realservers, the flows that would
//! land on a different server, the persistence template hits, what the defenses refused and
//! when, and the table's occupancy over time.

use super::replay::{ReplayReport, Sample};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddrV4;

/// Two replays of one capture, compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The two configs, A then B.
    pub configs: [String; 2],
    /// New flows per realserver (`service/addr`): A's count, B's count.
    pub spread: Vec<(String, [u64; 2])>,
    /// New flows in A, in B.
    pub new_flows: [u64; 2],
    /// Flows both runs scheduled (same protocol, client and virtual service).
    pub common: u64,
    /// Of those, the ones B sent to another realserver than A.
    pub different_server: u64,
    /// New flows sent by an existing persistence template, A and B.
    pub persistence_hits: [u64; 2],
    /// Packets dropped by defenses, A and B.
    pub defense_drops: [u64; 2],
    /// The first second at which a defense dropped anything, A and B.
    pub first_defense_drop_secs: [Option<u64>; 2],
    /// Table occupancy (entries) over time: the second, A's, B's (the last known value of a
    /// run that has no sample at that second).
    pub occupancy: Vec<(u64, [u64; 2])>,
}

/// Compares two reports of one capture.
pub fn compare(a: &ReplayReport, b: &ReplayReport) -> Comparison {
    let key = |r: &ReplayReport| -> Vec<String> {
        let mut v = Vec::new();
        for s in &r.services {
            for d in &s.servers {
                v.push(format!("{}/{}", s.name, d.addr));
            }
        }
        v
    };
    let mut names = key(a);
    for n in key(b) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let count = |r: &ReplayReport, name: &str| -> u64 {
        r.services
            .iter()
            .flat_map(|s| {
                s.servers
                    .iter()
                    .map(move |d| (format!("{}/{}", s.name, d.addr), d.conns))
            })
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| c)
    };
    let spread = names
        .into_iter()
        .map(|n| {
            let c = [count(a, &n), count(b, &n)];
            (n, c)
        })
        .collect();
    let first_of =
        |r: &ReplayReport| -> HashMap<(&'static str, SocketAddrV4, SocketAddrV4), SocketAddrV4> {
            let mut m = HashMap::new();
            for f in &r.decisions {
                m.entry((f.proto, f.client, f.vip)).or_insert(f.server);
            }
            m
        };
    let (fa, fb) = (first_of(a), first_of(b));
    let mut common = 0;
    let mut different = 0;
    for (k, sa) in &fa {
        if let Some(sb) = fb.get(k) {
            common += 1;
            if sa != sb {
                different += 1;
            }
        }
    }
    let first_drop = |r: &ReplayReport| {
        r.timeline
            .iter()
            .find(|s| s.defense_drops > 0)
            .map(|s| s.at_secs)
    };
    let mut secs: Vec<u64> = a
        .timeline
        .iter()
        .chain(&b.timeline)
        .map(|s| s.at_secs)
        .collect();
    secs.sort_unstable();
    secs.dedup();
    let at = |t: &[Sample], sec: u64| {
        t.iter()
            .take_while(|s| s.at_secs <= sec)
            .last()
            .map_or(0, |s| s.entries)
    };
    let occupancy = secs
        .into_iter()
        .map(|s| (s, [at(&a.timeline, s), at(&b.timeline, s)]))
        .collect();
    let drops = |r: &ReplayReport| r.timeline.last().map_or(0, |s| s.defense_drops);
    Comparison {
        configs: [a.config.clone(), b.config.clone()],
        spread,
        new_flows: [a.decisions.len() as u64, b.decisions.len() as u64],
        common,
        different_server: different,
        persistence_hits: [a.persistence_hits, b.persistence_hits],
        defense_drops: [drops(a), drops(b)],
        first_defense_drop_secs: [first_drop(a), first_drop(b)],
        occupancy,
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = &self.configs;
        writeln!(f, "A: {a}")?;
        writeln!(f, "B: {b}")?;
        writeln!(f, "{:<32} {:>16} {:>16}", "", "A", "B")?;
        writeln!(
            f,
            "{:<32} {:>16} {:>16}",
            "new flows", self.new_flows[0], self.new_flows[1]
        )?;
        for (n, [x, y]) in &self.spread {
            let cell = |c: u64, total: u64| format!("{c} ({:.1}%)", pct(c, total));
            writeln!(
                f,
                "  {:<30} {:>16} {:>16}",
                n,
                cell(*x, self.new_flows[0]),
                cell(*y, self.new_flows[1])
            )?;
        }
        writeln!(
            f,
            "{:<32} {:>16} {:>16}",
            "persistence hits", self.persistence_hits[0], self.persistence_hits[1]
        )?;
        let when = |s: Option<u64>| s.map_or("-".to_string(), |s| format!("from {s} s"));
        writeln!(
            f,
            "{:<32} {:>16} {:>16}",
            "defense drops", self.defense_drops[0], self.defense_drops[1]
        )?;
        writeln!(
            f,
            "{:<32} {:>16} {:>16}",
            "  first",
            when(self.first_defense_drop_secs[0]),
            when(self.first_defense_drop_secs[1])
        )?;
        writeln!(f, "table entries over time (s: A B):")?;
        let step = self.occupancy.len().div_ceil(10).max(1);
        for (i, (s, [x, y])) in self.occupancy.iter().enumerate() {
            if i % step == 0 || i + 1 == self.occupancy.len() {
                writeln!(f, "  {s:>8} {x:>10} {y:>10}")?;
            }
        }
        write!(
            f,
            "flows on a different server in B: {} of {} scheduled by both ({:.1}%)",
            self.different_server,
            self.common,
            pct(self.different_server, self.common)
        )
    }
}
