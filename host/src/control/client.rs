//! The CLI side of the admin socket: send one request, print the answer the way ipvsadm
//! would.

use super::protocol::{
    encode_request, ConnectionsResult, ListResult, Request, Response, StatusResult,
};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `req` to the daemon at `socket` and returns its result, or a clear error.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, String> {
    call_within(socket, req, Duration::from_secs(30))
}

/// [`call`], with no answer within `limit` an error (a hung daemon).
pub fn call_within(
    socket: &Path,
    req: &Request,
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                " (is ringvs running? start it with `ringvs run -c FILE`)"
            }
            std::io::ErrorKind::PermissionDenied => " (only root or the admin group may use it)",
            _ => "",
        };
        format!(
            "cannot connect to the admin socket {}: {e}{hint}",
            socket.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(limit));
    let _ = s.set_write_timeout(Some(limit));
    // A daemon that refuses the peer answers at once and closes, possibly before the request
    // is written: its answer, not the failed write, is the error to show.
    let sent = s.write_all(encode_request(req).as_bytes());
    let mut line = String::new();
    let read = BufReader::new(&s).read_line(&mut line);
    if line.is_empty() {
        return Err(match (sent, read) {
            (Err(e), _) => format!("cannot send the request: {e}"),
            (_, Err(e)) => format!("no answer from the daemon: {e}"),
            _ => "the daemon closed the connection without answering".into(),
        });
    }
    let resp: Response =
        serde_json::from_str(&line).map_err(|e| format!("unreadable answer: {e}"))?;
    if resp.ok {
        Ok(resp.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(resp
            .error
            .unwrap_or_else(|| "the daemon refused the request".into()))
    }
}

/// ipvsadm's `print_largenum`: exact below 100 million, then K, M, G, T.
pub fn large(n: u64) -> String {
    if n < 100_000_000 {
        n.to_string()
    } else if n < 1_000_000_000 {
        format!("{}K", n / 1_000)
    } else if n < 100_000_000_000 {
        format!("{}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        format!("{}G", n / 1_000_000_000)
    } else {
        format!("{}T", n / 1_000_000_000_000)
    }
}

/// A row of five counters as ipvsadm prints them: a 33-column name, then 9-column numbers.
fn row(name: &str, v: [u64; 5]) -> String {
    let mut o = format!("{name:<33}");
    for x in v {
        o += &format!("{:>9}", large(x));
    }
    o.push('\n');
    o
}

/// Which table `ringvs list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListView {
    /// Weights and connection counts (`ipvsadm -Ln`).
    Counts,
    /// Counters (`--stats`).
    Stats,
    /// Rates (`--rate`).
    Rate,
    /// Connection thresholds (`--thresholds`).
    Thresholds,
    /// Persistence templates per realserver (`--persistent-conn`).
    PersistConn,
}

/// Formats `ringvs list` like `ipvsadm -Ln` (and its `--stats` / `--rate` variants).
pub fn format_list(l: &ListResult, status: Option<&StatusResult>, view: ListView) -> String {
    let mut o = String::new();
    if let Some(s) = status {
        o += &format!(
            "ringvs {} (connections={}/{}, queues={})\n",
            s.version, s.entries, s.capacity, s.queues
        );
    }
    match view {
        ListView::Counts => {
            o += "Prot LocalAddress:Port Scheduler Flags\n";
            o += "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn";
            // ipvsadm's columns, then one more when any server is health-checked.
            let checked = l
                .services
                .iter()
                .flat_map(|s| &s.servers)
                .any(|s| s.health != "unchecked");
            if checked {
                o += "  Health";
            }
            o.push('\n');
        }
        ListView::Stats => {
            o +=
                "Prot LocalAddress:Port                Conns   InPkts  OutPkts  InBytes OutBytes\n";
            o += "  -> RemoteAddress:Port\n";
        }
        ListView::Rate => {
            o +=
                "Prot LocalAddress:Port                  CPS    InPPS   OutPPS    InBPS   OutBPS\n";
            o += "  -> RemoteAddress:Port\n";
        }
        // ipvsadm: "%-33s %-10s %-10s %-10s %-10s" and "%-33s %-9s %-11s %-10s %-10s".
        ListView::Thresholds => {
            o += &format!(
                "{:<33} {:<10} {:<10} {:<10} InActConn\n",
                "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn"
            );
            o += "  -> RemoteAddress:Port\n";
        }
        ListView::PersistConn => {
            o += &format!(
                "{:<33} {:<9} {:<11} {:<10} InActConn\n",
                "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn"
            );
            o += "  -> RemoteAddress:Port\n";
        }
    }
    for svc in &l.services {
        let prot = svc.proto.to_uppercase();
        match view {
            ListView::Counts | ListView::Thresholds | ListView::PersistConn => {
                let mut flags = svc.flags.join(" ");
                if svc.draining {
                    flags = format!("{flags} draining").trim().to_string();
                }
                o += format!("{prot:<4} {} {} {}", svc.vip, svc.scheduler, flags).trim_end();
                o.push('\n');
            }
            ListView::Stats => o += &row(&format!("{prot:<4} {}", svc.vip), traffic(&svc.stats)),
            ListView::Rate => o += &row(&format!("{prot:<4} {}", svc.vip), rates(&svc.rate)),
        }
        for srv in &svc.servers {
            match view {
                ListView::Counts => {
                    let mut note = match (srv.health.as_str(), &srv.health_reason) {
                        ("unchecked", _) => String::new(),
                        ("down", Some(r)) => format!("down ({r})"),
                        (h, _) => h.to_string(),
                    };
                    if srv.draining {
                        note = format!("{note} draining").trim_start().to_string();
                    }
                    let line = format!(
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<10} {note}",
                        srv.addr, srv.forward, srv.weight, srv.active, srv.inactive
                    );
                    o += line.trim_end();
                    o.push('\n');
                }
                ListView::Stats => o += &row(&format!("  -> {}", srv.addr), traffic(&srv.stats)),
                ListView::Rate => o += &row(&format!("  -> {}", srv.addr), rates(&srv.rate)),
                // ipvsadm: "  -> %-28s %-10u %-10u %-10u %-10u".
                ListView::Thresholds => {
                    let line = format!(
                        "  -> {:<28} {:<10} {:<10} {:<10} {:<10}",
                        srv.addr, srv.upper, srv.lower, srv.active, srv.inactive
                    );
                    o += line.trim_end();
                    if srv.overloaded {
                        o += " overloaded";
                    }
                    o.push('\n');
                }
                // ipvsadm: "  -> %-28s %-9u %-11u %-10u %-10u".
                ListView::PersistConn => {
                    let line = format!(
                        "  -> {:<28} {:<9} {:<11} {:<10} {:<10}",
                        srv.addr, srv.weight, srv.persistent, srv.active, srv.inactive
                    );
                    o += line.trim_end();
                    o.push('\n');
                }
            }
        }
    }
    o
}

fn traffic(t: &crate::dataplane::stats::Traffic) -> [u64; 5] {
    [t.conns, t.in_pkts, t.out_pkts, t.in_bytes, t.out_bytes]
}

fn rates(r: &super::protocol::Rates) -> [u64; 5] {
    [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps].map(|x| x.round() as u64)
}

/// Formats `ringvs ha status`: the role, the peers, what was sent, received and refused.
pub fn format_ha(h: &super::protocol::HaResult) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "role {}  id {}  listen {}", h.role, h.id, h.listen);
    let _ = writeln!(
        o,
        "{:<22} {:>6} {:>12} {:>10} {:>10}",
        "peer", "id", "last seen", "messages", "bulk sent"
    );
    for p in &h.peers {
        let _ = writeln!(
            o,
            "{:<22} {:>6} {:>12} {:>10} {:>10}",
            p.addr.to_string(),
            p.id.map_or_else(|| "-".to_string(), |i| i.to_string()),
            p.last_seen_ms.map_or_else(
                || "never".to_string(),
                |ms| format!("{:.1}s ago", ms as f64 / 1000.0)
            ),
            p.messages,
            p.bulk_sent
        );
    }
    let _ = writeln!(
        o,
        "sent: {} entries in {} messages ({} send errors), lag {:.1} ms; queued {}, not queued (sync behind) {}",
        h.sent_entries, h.sent_messages, h.send_errors, h.lag_ms, h.queued, h.queue_full
    );
    let _ = writeln!(
        o,
        "received: {} entries in {} messages ({} lost); taken {}, ignored {}, held {}; bulk sent {}, received {}",
        h.received_entries,
        h.received_messages,
        h.lost_messages,
        h.applied,
        h.ignored,
        h.held,
        h.bulk_sent,
        h.bulk_received
    );
    let rejected: Vec<String> = h
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "rejected: {}",
        if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join(", ")
        }
    );
    o
}

/// Formats `ringvs top`: the table's fill, the heaviest sources of the last second, blocks
/// and defenses.
pub fn format_top(t: &super::protocol::TopResult) -> String {
    let mut o = format!(
        "connections {}/{} ({:.1}%), embryonic {}\n\n",
        t.entries,
        t.capacity,
        if t.capacity > 0 {
            t.entries as f64 * 100.0 / t.capacity as f64
        } else {
            0.0
        },
        t.embryonic
    );
    // IPv6 sources and prefixes widen the first column (up to 43 characters).
    let w = t
        .sources
        .iter()
        .map(|s| s.addr.to_string().len())
        .chain(t.blocks.iter().map(|b| b.prefix.len()))
        .fold(21, usize::max);
    o += &format!("{:<w$} NEW FLOWS/S   PACKETS/S\n", "SOURCE");
    for s in &t.sources {
        let a = s.addr.to_string();
        o += &format!("{a:<w$} {:>11} {:>11}\n", s.new_flows, s.packets);
    }
    if t.sources.is_empty() {
        o += "(no new flows in the last second)\n";
    }
    if !t.blocks.is_empty() {
        o += &format!("\n{:<w$} MODE     LEFT  BY\n", "BLOCKED");
        for b in &t.blocks {
            let mode = match b.mode {
                crate::dataplane::blocks::BlockMode::Drop => "drop",
                crate::dataplane::blocks::BlockMode::Tarpit => "tarpit",
            };
            o += &format!(
                "{:<w$} {:<8} {:>4}s  {}\n",
                b.prefix, mode, b.secs_left, b.by
            );
        }
    }
    if !t.defenses.is_empty() {
        o += "\nSERVICE      DEFENSE              LEVEL  DROP 1/N  ACTIVE  POISONED\n";
        for d in &t.defenses {
            o += &format!(
                "{:<12} {:<20} {:>5}  {:>8}  {:<6}  {}\n",
                d.service,
                d.plugin,
                d.level,
                d.drop_rate,
                if d.active { "yes" } else { "no" },
                d.poisoned_queues
            );
        }
    }
    o
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `name n, name n, …` of the non-zero counts, or `none`.
fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    let v: Vec<String> = m
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Formats `ringvs status` for a terminal (`--json` prints the raw result).
pub fn format_status(s: &StatusResult) -> String {
    let up = s.uptime_secs;
    let mut o = format!(
        "ringvs {}, up {}d {:02}:{:02}:{:02}, device {}, {} queue(s), offload {}, config generation {}\n",
        s.version,
        up / 86_400,
        up / 3600 % 24,
        up / 60 % 60,
        up % 60,
        s.device,
        s.queues,
        if s.offload { "on" } else { "off" },
        s.generation
    );
    o += &format!(
        "connections  {} of {} ({:.1}%), {} of {} bytes\n",
        s.entries,
        s.capacity,
        percent(s.entries, s.capacity),
        s.memory_bytes,
        s.memory_limit
    );
    o += &format!("  by state   {}\n", counts(&s.by_state));
    o += &format!("drops        {}\n", counts(&s.drops));
    o += &format!("passthrough  {} packets\n", s.passthrough);
    if s.servers_checked > 0 {
        o += &format!(
            "health       {} server(s) checked, {} down\n",
            s.servers_checked, s.servers_down
        );
    }
    if let Some(t) = &s.templates {
        if t.entries > 0 || t.refused > 0 || t.link_bytes > 0 {
            o += &format!(
                "templates    {} of {} ({} of {} bytes), refused {}, expire_quiescent_template {}\n",
                t.entries,
                t.capacity,
                t.memory_bytes,
                t.memory_limit,
                t.refused,
                if t.expire_quiescent_template { "on" } else { "off" }
            );
        }
    }
    for why in &s.unready {
        o += &format!("not ready    {why}\n");
    }
    o
}

/// Formats `ringvs list --connections` like `ipvsadm -Lnc`.
pub fn format_connections(c: &ConnectionsResult) -> String {
    let mut o = String::from("ringvs connection entries\n");
    o += "pro expire state       source                virtual               destination\n";
    for r in &c.conns {
        o += &format!(
            "{:<3} {:02}:{:02}  {:<11} {:<21} {:<21} {}\n",
            r.proto,
            r.expire_secs / 60,
            r.expire_secs % 60,
            r.state,
            r.source,
            r.virtual_addr,
            r.destination
        );
    }
    if c.truncated {
        o += "(more connections not shown; use --max)\n";
    }
    o
}

/// `ringvs plugin list --available`: one line per plugin usable by name, then where the
/// catalogue was looked for.
pub fn format_available(
    list: &[crate::plugin::catalogue::Available],
    dirs: &[std::path::PathBuf],
) -> String {
    let mut out = format!(
        "{:<16} {:<12} {:<24} {:<64}  {}\n",
        "NAME", "KIND", "VERSION", "SHA256", "FILE"
    );
    for a in list {
        let (version, sha, file) = if a.builtin {
            (
                a.version.clone().unwrap_or_default(),
                "-".to_string(),
                "built-in (native)".to_string(),
            )
        } else {
            match &a.file {
                Some(f) => (
                    a.version.clone().unwrap_or_else(|| "?".into()),
                    a.sha256.clone().unwrap_or_default(),
                    f.display().to_string(),
                ),
                None => ("-".into(), "-".into(), "NOT FOUND".into()),
            }
        };
        out += &format!(
            "{:<16} {:<12} {:<24} {:<64}  {}\n",
            a.name, a.kind, version, sha, file
        );
    }
    let missing = list
        .iter()
        .filter(|a| !a.builtin && a.file.is_none())
        .count();
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    out += &format!("catalogue searched in: {}\n", dirs.join(", "));
    if missing > 0 {
        out += &format!(
            "{missing} catalogue plugin(s) not found: install the ringvs package, or build them with `bash scripts/build-plugins.sh`\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{ConnRow, Rates, ServerInfo, ServiceInfo};
    use crate::dataplane::stats::Traffic;

    /// IPv6 sources and prefixes widen the address column; every row keeps its columns.
    #[test]
    fn top_aligns_ipv6_sources_and_blocks() {
        use crate::control::protocol::{BlockInfo, TopResult};
        use crate::dataplane::blocks::BlockMode;
        use crate::dataplane::sources::SourceCount;
        let src = |a: &str, n| SourceCount {
            addr: a.parse().unwrap(),
            new_flows: n,
            packets: 16 * n,
        };
        let t = TopResult {
            sources: vec![
                src("2001:db8:aaaa:bbbb:cccc:dddd:eeee:66", 250),
                src("10.77.0.2", 20),
            ],
            blocks: vec![BlockInfo {
                prefix: "2001:db8:aaaa:bbbb:cccc:dddd:eeee:66/128".into(),
                secs_left: 59,
                mode: BlockMode::Tarpit,
                by: "ratelimit".into(),
                service: "web6".into(),
            }],
            defenses: vec![],
            entries: 10,
            capacity: 100,
            embryonic: 0,
        };
        let text = format_top(&t);
        let lines: Vec<&str> = text.lines().collect();
        let head = lines.iter().position(|l| l.starts_with("SOURCE")).unwrap();
        let col = lines[head].find("NEW FLOWS/S").unwrap();
        assert_eq!(col, 41, "{text}");
        assert_eq!(
            &lines[head + 1][..col],
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:66     "
        );
        assert_eq!(
            lines[head + 1][col..]
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["250", "4000"]
        );
        assert!(lines[head + 2].starts_with("10.77.0.2 "), "{text}");
        let blocked = lines.iter().position(|l| l.starts_with("BLOCKED")).unwrap();
        assert_eq!(lines[blocked].find("MODE"), Some(col), "{text}");
        assert!(lines[blocked + 1].contains("/128 tarpit"), "{text}");
    }

    #[test]
    fn status_reads_as_text() {
        let mut s = StatusResult {
            version: "0.1.0".into(),
            uptime_secs: 90_061,
            device: "ringvs0".into(),
            queues: 2,
            offload: true,
            generation: 3,
            entries: 35,
            capacity: 1000,
            memory_bytes: 4096,
            memory_limit: 65536,
            by_state: [
                ("ESTABLISHED".to_string(), 4),
                ("TIME_WAIT".to_string(), 31),
                ("SYN_RECV".to_string(), 0),
            ]
            .into(),
            drops: [("defense".to_string(), 12), ("table_full".to_string(), 0)].into(),
            passthrough: 7,
            servers_checked: 3,
            servers_down: 1,
            templates: None,
            unready: Vec::new(),
        };
        let text = format_status(&s);
        assert_eq!(
            text,
            "ringvs 0.1.0, up 1d 01:01:01, device ringvs0, 2 queue(s), offload on, config generation 3\n\
             connections  35 of 1000 (3.5%), 4096 of 65536 bytes\n\
             \x20 by state   ESTABLISHED 4, TIME_WAIT 31\n\
             drops        defense 12\n\
             passthrough  7 packets\n\
             health       3 server(s) checked, 1 down\n"
        );
        s.drops.clear();
        s.servers_checked = 0;
        s.templates = Some(crate::control::protocol::TemplateStatus {
            entries: 2,
            capacity: 100,
            memory_bytes: 64,
            memory_limit: 3200,
            ..Default::default()
        });
        let text = format_status(&s);
        assert!(text.contains("drops        none\n"), "{text}");
        assert!(!text.contains("health"), "{text}");
        assert!(
            text.contains("templates    2 of 100 (64 of 3200 bytes), refused 0, expire_quiescent_template off\n"),
            "{text}"
        );
        assert!(!text.contains("ready"), "{text}");
        s.unready = vec!["stopping".into(), "service \"web\": none".into()];
        let text = format_status(&s);
        assert!(
            text.ends_with("not ready    stopping\nnot ready    service \"web\": none\n"),
            "{text}"
        );
    }

    #[test]
    fn looks_like_ipvsadm() {
        let l = ListResult {
            services: vec![ServiceInfo {
                name: "web".into(),
                syn_proxy: "auto".into(),
                syn_proxy_active: false,
                proto: "tcp".into(),
                vip: "10.77.100.100:80".into(),
                scheduler: "wlc".into(),
                flags: vec!["persistent 300".into(), "mask 255.255.255.0".into()],
                draining: false,
                stats: Traffic {
                    conns: 5,
                    in_pkts: 30,
                    out_pkts: 20,
                    in_bytes: 1990,
                    out_bytes: 123_456_789_012,
                },
                rate: Rates::default(),
                servers: vec![ServerInfo {
                    addr: "10.77.1.1:8080".into(),
                    forward: "Masq".into(),
                    weight: 1,
                    active: 2,
                    inactive: 3,
                    persistent: 4,
                    upper: 1000,
                    lower: 800,
                    overloaded: true,
                    draining: false,
                    health: "unchecked".into(),
                    health_reason: None,
                    health_since_secs: None,
                    stats: Traffic::default(),
                    rate: Rates::default(),
                }],
            }],
        };
        let t = format_list(&l, None, ListView::Counts);
        assert!(
            t.contains("TCP  10.77.100.100:80 wlc persistent 300 mask 255.255.255.0\n"),
            "{t}"
        );
        let th = format_list(&l, None, ListView::Thresholds);
        assert!(
            th.starts_with(&format!(
                "{:<33} Uthreshold Lthreshold ActiveConn InActConn\n",
                "Prot LocalAddress:Port"
            )),
            "{th}"
        );
        assert!(
            th.contains(&format!(
                "  -> {:<28} 1000       800        2          3 overloaded\n",
                "10.77.1.1:8080"
            )),
            "{th}"
        );
        let pc = format_list(&l, None, ListView::PersistConn);
        assert!(
            pc.starts_with(&format!(
                "{:<33} Weight    PersistConn ActiveConn InActConn\n",
                "Prot LocalAddress:Port"
            )),
            "{pc}"
        );
        assert!(
            pc.contains("TCP  10.77.100.100:80 wlc persistent 300"),
            "{pc}"
        );
        assert!(
            pc.contains(&format!(
                "  -> {:<28} 1         4           2          3\n",
                "10.77.1.1:8080"
            )),
            "{pc}"
        );
        // ipvsadm: "  -> %-28s %-7s %-6d %-10d %-10d"
        assert!(
            t.contains(&format!(
                "  -> {:<28} Masq    1      2          3",
                "10.77.1.1:8080"
            )),
            "{t}"
        );
        assert!(
            !t.contains("Health"),
            "no health column without checks: {t}"
        );
        // A checked service: one more column, after ipvsadm's.
        let mut h = l.clone();
        let mut down = h.services[0].servers[0].clone();
        down.addr = "10.77.1.2:8080".into();
        down.health = "down".into();
        down.health_reason = Some("connection refused".into());
        h.services[0].servers[0].health = "up".into();
        h.services[0].servers.push(down);
        let t = format_list(&h, None, ListView::Counts);
        assert!(
            t.contains(
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "  -> {:<28} Masq    1      2          3          up\n",
                "10.77.1.1:8080"
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "  -> {:<28} Masq    1      2          3          down (connection refused)\n",
                "10.77.1.2:8080"
            )),
            "{t}"
        );
        let s = format_list(&l, None, ListView::Stats);
        assert!(
            s.contains(
                "TCP  10.77.100.100:80                    5       30       20     1990     123G\n"
            ),
            "{s}"
        );
        let c = format_connections(&ConnectionsResult {
            conns: vec![ConnRow {
                proto: "TCP".into(),
                expire_secs: 899,
                state: "ESTABLISHED".into(),
                source: "10.77.0.2:40000".into(),
                virtual_addr: "10.77.100.100:80".into(),
                destination: "10.77.1.1:8080".into(),
                template: false,
            }],
            truncated: false,
        });
        assert!(c.contains("TCP 14:59  ESTABLISHED 10.77.0.2:40000"), "{c}");
    }
}
