//! A test defense for the host's defense machinery. `admit` drops flows from client port
//! `drop_port` (default 666) and traps for `trap_port` (default 667); with `trap_tick = true`
//! the tick traps; with `spin_tick = true` it spins until the host's deadline stops it. The
//! first tick emits the actions of `actions`, a comma-separated list:
//! `level:N`, `rate:N`, `embryonic:N`, `drop:ID`, `block:A.B.C.D/LEN:SECS:drop|tarpit`,
//! `unblock:A.B.C.D/LEN`, `proxy:on|off`; with `repeat = true`, every tick does. With `flood = N`, every
//! tick also asks for N blocks of /32s in 198.18.0.0/15, each tick's following on the last
//! one's (a plugin that floods the host with actions).
#![no_std]
use ringvs_sdk::prelude::*;
use ringvs_sdk::{BlockMode, Prefix, Table};

/// The test defense.
pub struct TestDefense {
    drop_port: u16,
    trap_port: u16,
    trap_tick: bool,
    spin_tick: bool,
    actions: Vec<Action>,
    repeat: bool,
    flood: u32,
    ticks: u64,
}

impl Default for TestDefense {
    fn default() -> Self {
        TestDefense {
            drop_port: 666,
            trap_port: 667,
            trap_tick: false,
            spin_tick: false,
            actions: Vec::new(),
            repeat: false,
            flood: 0,
            ticks: 0,
        }
    }
}

fn prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("bad prefix {s:?}"))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("bad address {a:?}"))?;
    let len: u8 = l.parse().map_err(|_| format!("bad length {l:?}"))?;
    Ok(Prefix {
        addr: IpAddr::V4(addr),
        len,
    })
}

fn action(s: &str) -> Result<Action, String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("bad action {s:?}"))?;
    let num = |v: &str| v.parse::<u32>().map_err(|_| format!("bad number {v:?}"));
    Ok(match k {
        "level" => Action::SetLevel(num(v)? as u8),
        "rate" => Action::DropRate(num(v)?),
        "embryonic" => Action::DropEmbryonic(num(v)?),
        "drop" => Action::DropConnections(vec![num(v)?]),
        "unblock" => Action::Unblock(prefix(v)?),
        "proxy" => Action::SynProxy(v == "on"),
        "block" => {
            let mut it = v.split(':');
            let p = prefix(it.next().unwrap_or(""))?;
            let secs = num(it.next().unwrap_or(""))?;
            let mode = match it.next() {
                Some("drop") => BlockMode::Drop,
                _ => BlockMode::Tarpit,
            };
            Action::Block {
                prefix: p,
                secs,
                mode,
            }
        }
        _ => return Err(format!("unknown action {k:?}")),
    })
}

impl Defense for TestDefense {
    fn configure(&mut self, c: &Config) -> Result<(), String> {
        c.check_keys(&[
            "drop_port",
            "trap_port",
            "trap_tick",
            "spin_tick",
            "actions",
            "repeat",
            "flood",
        ])?;
        self.flood = c.parse_or("flood", 0)?;
        self.drop_port = c.parse_or("drop_port", 666)?;
        self.trap_port = c.parse_or("trap_port", 667)?;
        self.trap_tick = c.parse_or("trap_tick", false)?;
        self.spin_tick = c.parse_or("spin_tick", false)?;
        self.repeat = c.parse_or("repeat", false)?;
        if let Some(list) = c.get("actions") {
            self.actions = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(action)
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    fn admit(&mut self, flow: &Flow, _source: &SourceStats) -> Verdict {
        if flow.client_port == self.trap_port {
            panic!("trap on admit");
        }
        if flow.client_port == self.drop_port {
            Verdict::Drop
        } else {
            Verdict::Accept
        }
    }

    fn tick(&mut self, _stats: &TickStats, _table: &dyn Table) -> Vec<Action> {
        if self.trap_tick {
            panic!("trap on tick");
        }
        if self.spin_tick {
            let mut x = 0u64;
            loop {
                x = core::hint::black_box(x.wrapping_add(1));
            }
        }
        self.ticks += 1;
        let mut out = if self.ticks == 1 || self.repeat {
            self.actions.clone()
        } else {
            Vec::new()
        };
        let first = (self.ticks - 1).wrapping_mul(u64::from(self.flood));
        out.extend((0..u64::from(self.flood)).map(|i| Action::Block {
            prefix: Prefix {
                addr: IpAddr::V4(Ipv4Addr::from(
                    0xc612_0000 + ((first + i) % (1 << 17)) as u32,
                )),
                len: 32,
            },
            secs: 60,
            mode: BlockMode::Drop,
        }));
        out
    }
}

export_defense!(TestDefense);
