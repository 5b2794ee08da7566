//! Defense plugins in a queue: admission of new flows, the state table of the current
//! level, and the once-a-second tick whose actions the host checks before applying.
//!
//! The order on a service is the configuration's: for a new flow, each defense's drop rate
//! then its `admit`, and the first refusal wins. For the state table, the first defense
//! (in that order) at a level above 0 wins; with none, the host's normal table.

use super::blocks::BlockMode;
pub use super::policy::{ActionKind, ACTIONS};
use super::policy::{Ctx, Func, PolicySlot, Prepared, Role, SlotId};
use crate::conn::state::{State, StateTable, STATES, TCP_STATES};
use crate::conn::{Conn, ConnId, ConnTable, FlowAddr, Tick, TICKS_PER_SEC};
use crate::plugin::{
    defense_types as dt, table_types as tt, DefenseInstance, Plugin, PluginError, TableView,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// One level of a defense: the state table and timeout overrides (seconds, 0 = the
/// service's own) it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// The table.
    pub table: StateTable,
    /// Timeout overrides per state.
    pub timeouts: [u32; STATES],
}

impl Level {
    /// The host's normal table, no overrides.
    pub fn normal() -> Level {
        Level {
            table: StateTable::NORMAL,
            timeouts: [0; STATES],
        }
    }
}

fn state_of(t: tt::TcpState) -> State {
    match t {
        tt::TcpState::None => State::None,
        tt::TcpState::Established => State::Established,
        tt::TcpState::SynSent => State::SynSent,
        tt::TcpState::SynRecv => State::SynRecv,
        tt::TcpState::FinWait => State::FinWait,
        tt::TcpState::TimeWait => State::TimeWait,
        tt::TcpState::Close => State::Close,
        tt::TcpState::CloseWait => State::CloseWait,
        tt::TcpState::LastAck => State::LastAck,
        tt::TcpState::Listen => State::Listen,
        tt::TcpState::Synack => State::SynAck,
    }
}

fn wit_state(s: State) -> tt::TcpState {
    match s {
        State::Established => tt::TcpState::Established,
        State::SynSent => tt::TcpState::SynSent,
        State::SynRecv => tt::TcpState::SynRecv,
        State::FinWait => tt::TcpState::FinWait,
        State::TimeWait => tt::TcpState::TimeWait,
        State::Close => tt::TcpState::Close,
        State::CloseWait => tt::TcpState::CloseWait,
        State::LastAck => tt::TcpState::LastAck,
        State::Listen => tt::TcpState::Listen,
        State::SynAck => tt::TcpState::Synack,
        State::None | State::Udp => tt::TcpState::None,
    }
}

/// Checks the state tables a defense handed over; level 0 defaults to the normal table.
pub fn validate_levels(
    plugin: &str,
    tables: Vec<dt::StateTable>,
) -> Result<Vec<Level>, PluginError> {
    let mut out = Vec::with_capacity(tables.len().max(1));
    for (i, t) in tables.into_iter().enumerate() {
        let flat: Vec<u8> = t.transitions.iter().map(|s| state_of(*s) as u8).collect();
        let table = StateTable::from_indices(&flat)
            .map_err(|e| PluginError::SelfTest(format!("{plugin}: level {i}: {e}")))?;
        if t.timeouts.len() != STATES {
            return Err(PluginError::SelfTest(format!(
                "{plugin}: level {i}: {} timeouts, expected {STATES} (the {TCP_STATES} TCP states, then UDP)",
                t.timeouts.len()
            )));
        }
        let mut timeouts = [0u32; STATES];
        timeouts.copy_from_slice(&t.timeouts);
        out.push(Level { table, timeouts });
    }
    if out.is_empty() {
        out.push(Level::normal());
    }
    Ok(out)
}

/// A defense plugin prepared for a snapshot; its extra is its validated levels (index =
/// level).
pub type PluginDefense = Prepared<DefenseInstance, Arc<[Level]>>;

/// A defense of a service in one queue: its [`PolicySlot`] and what the host applies for it
/// (its level's state table, its drop rate).
#[derive(Debug)]
pub struct DefenseSlot {
    /// The plugin's slot (no instance while poisoned: "no defense action").
    pub slot: PolicySlot<DefenseInstance, Arc<[Level]>>,
    /// Its current level.
    pub level: u8,
    /// Refuse one new flow in this many (0: none).
    pub drop_rate: u32,
    /// Flows left until the next refusal.
    pub drop_counter: u32,
    /// It did something in its last tick (for `ringvs_defense_active`).
    pub acted: bool,
    /// New flows it refused since the last tick.
    pub refusing: u32,
    /// New flows it refused in the second before the last tick.
    pub refused_last: u32,
    /// It holds the service's SYN proxy on in this queue (`syn-proxy(true)`).
    pub syn_proxy: bool,
}

impl DefenseSlot {
    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        self.slot.plugin()
    }

    /// Its levels.
    pub fn levels(&self) -> &Arc<[Level]> {
        &self.slot.prepared().extra
    }

    /// True if this defense is doing something: a level above 0, a drop rate, the SYN
    /// proxy held on, actions in its last tick, or new flows refused in the second before it.
    pub fn active(&self) -> bool {
        self.level > 0
            || self.drop_rate > 0
            || self.syn_proxy
            || self.acted
            || self.refused_last > 0
    }

    /// IPVS drop_packet: true if this new flow is the one in `drop_rate` to refuse.
    #[inline]
    pub fn rate_drop(&mut self) -> bool {
        if self.drop_rate == 0 {
            return false;
        }
        self.drop_counter = self.drop_counter.saturating_sub(1);
        if self.drop_counter == 0 {
            self.drop_counter = self.drop_rate;
            true
        } else {
            false
        }
    }

    /// A fresh instance after a fault: it starts from nothing, and so does what its
    /// predecessor had set.
    pub fn deliver(&mut self, inst: DefenseInstance, ctx: &mut Ctx<'_>) {
        if self.slot.deliver(inst, ctx) {
            self.level = 0;
            self.drop_rate = 0;
            self.drop_counter = 0;
        }
    }
}

/// Makes a service's defense slots match its prepared defenses: unchanged plugins keep
/// their slot (level, drop rate, instance); new ones take the instance prepared for this
/// queue; dropped ones give their instance back.
pub fn sync(
    slots: &mut Vec<DefenseSlot>,
    prepared: &[Arc<PluginDefense>],
    (shard, svc): (usize, u16),
    ctx: &mut Ctx<'_>,
) {
    let mut old: Vec<Option<DefenseSlot>> = std::mem::take(slots).into_iter().map(Some).collect();
    for (index, p) in prepared.iter().enumerate() {
        let at = SlotId {
            shard,
            svc,
            role: Role::Defense(index),
        };
        let kept = old
            .iter_mut()
            .find(|s| {
                s.as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s.slot.prepared(), p))
            })
            .and_then(Option::take);
        let slot = match kept {
            Some(mut d) => {
                let mut inner = Some(d.slot);
                PolicySlot::sync(&mut inner, Some(p), at, ctx);
                d.slot = inner.expect("kept");
                d
            }
            None => {
                let mut inner = None;
                PolicySlot::sync(&mut inner, Some(p), at, ctx);
                DefenseSlot {
                    slot: inner.expect("made"),
                    level: 0,
                    drop_rate: 0,
                    drop_counter: 0,
                    acted: false,
                    refusing: 0,
                    refused_last: 0,
                    syn_proxy: false,
                }
            }
        };
        slots.push(slot);
    }
    for mut d in old.into_iter().flatten() {
        d.slot.give_back(ctx);
    }
}

/// Admission of a new flow by a service's defenses, in order; the first refusal wins. A
/// defense whose instance faults (or is poisoned) takes no action: the flow goes on, the
/// fallback is counted and a fresh instance asked for.
pub fn admit(
    slots: &mut [DefenseSlot],
    flow: &crate::plugin::FlowWit,
    source: dt::SourceStats,
    ctx: &mut Ctx<'_>,
) -> bool {
    for slot in slots.iter_mut() {
        if slot.rate_drop() {
            slot.refusing = slot.refusing.saturating_add(1);
            ctx.stats.defense(&slot.slot.plugin().name).refused_flows += 1;
            return false;
        }
        let verdict = slot.slot.call(Func::Admit, ctx, |i| i.admit(flow, source));
        if verdict == Some(dt::Verdict::Drop) {
            slot.refusing = slot.refusing.saturating_add(1);
            ctx.stats.defense(&slot.slot.plugin().name).refused_flows += 1;
            return false;
        }
    }
    true
}

/// The state table and timeouts (ticks) a service gets from its defenses' levels.
pub fn effective_table(slots: &[DefenseSlot], own: &[u32; STATES]) -> (StateTable, [Tick; STATES]) {
    let level = slots
        .iter()
        .find(|s| s.level > 0)
        .and_then(|s| s.levels().get(s.level as usize).cloned())
        .or_else(|| slots.first().and_then(|s| s.levels().first().cloned()))
        .unwrap_or_else(Level::normal);
    let mut t = [0; STATES];
    for i in 0..STATES {
        let secs = if level.timeouts[i] > 0 {
            level.timeouts[i]
        } else {
            own[i]
        };
        t[i] = secs.saturating_mul(TICKS_PER_SEC);
    }
    (level.table, t)
}

/// A service's entries in one queue's tables, as a defense's tick may scan them: the IPv4
/// table's slots, then the IPv6 table's (slot `n4 + i` is the IPv6 table's slot `i`), one
/// slot space a plugin walks without knowing the families apart.
pub struct ServiceTable<'a> {
    /// The queue's IPv4 table.
    pub table: &'a ConnTable<Ipv4Addr>,
    /// The queue's IPv6 table, if it has one.
    pub six: Option<&'a ConnTable<Ipv6Addr>>,
    /// The service slot.
    pub svc: u16,
    /// Now.
    pub now: Tick,
    /// The service's timeouts in ticks (to derive idle time).
    pub timeouts: [Tick; STATES],
    /// Where the entries the scans return are noted (what `drop-connections` may name), if
    /// anywhere.
    pub seen: Option<&'a std::cell::RefCell<Seen>>,
}

/// The entries a tick's scans returned, by id: what each was (its client), so that a
/// `drop-connections` applied later drops only those still there. At most
/// [`ringvs_abi::MAX_TICK_SCAN`] are noted.
#[derive(Debug, Default)]
pub struct Seen(std::collections::HashMap<u32, (IpAddr, u16)>);

impl Seen {
    /// Notes the entries of one scan's answer, each with its client.
    pub fn note(&mut self, answer: &Answer) {
        for (e, &client) in answer.0.iter().zip(&answer.1) {
            if self.0.len() >= ringvs_abi::MAX_TICK_SCAN as usize {
                return;
            }
            self.0.insert(e.id, client);
        }
    }

    /// The client of entry `id` when a scan returned it; `None` if none did.
    pub fn get(&self, id: u32) -> Option<(IpAddr, u16)> {
        self.0.get(&id).copied()
    }
}

/// One scan's answer: the entries, and each one's client in the same order (what the tick
/// notes in its [`Seen`]).
pub type Answer = (Vec<tt::Entry>, Vec<(IpAddr, u16)>);

/// Slots of both tables in one space (the IPv4 table's first).
pub fn slots(table: &ConnTable<Ipv4Addr>, six: Option<&ConnTable<Ipv6Addr>>) -> u32 {
    table.slots() + six.map_or(0, ConnTable::slots)
}

impl ServiceTable<'_> {
    /// Scans `count` slots from `start` (wrapping), as `table.scan` does, with each entry's
    /// client.
    pub fn scan_clients(&self, start: u32, count: u32) -> Answer {
        let (n4, n) = (self.table.slots(), slots(self.table, self.six));
        let mut answer: Answer = Default::default();
        if n == 0 {
            return answer;
        }
        for k in 0..count.min(n) {
            let i = start.wrapping_add(k) % n;
            match self.six {
                Some(six) if i >= n4 => self.note(&mut answer, i, six.entry_at(i - n4)),
                _ => self.note(&mut answer, i, self.table.entry_at(i)),
            }
        }
        answer
    }

    /// Adds the entry at slot `i` of the slot space, if it is the service's.
    fn note<A: FlowAddr>(&self, answer: &mut Answer, i: u32, e: Option<(ConnId, &Conn<A>)>) {
        let Some((_, c)) = e.filter(|(_, c)| c.svc == self.svc) else {
            return;
        };
        let left = crate::conn::ticks_left(c.expires(), self.now);
        let full = self.timeouts[c.state as usize];
        answer.0.push(tt::Entry {
            id: i,
            proto: c.proto(),
            state: wit_state(c.state),
            packets: c.in_pkts,
            expires_in: left / TICKS_PER_SEC,
            idle: full.saturating_sub(left) / TICKS_PER_SEC,
        });
        answer.1.push((c.caddr().ip(), c.cport()));
    }
}

impl TableView for ServiceTable<'_> {
    fn slots(&self) -> u32 {
        slots(self.table, self.six)
    }

    fn scan(&self, start: u32, count: u32) -> Vec<tt::Entry> {
        let answer = self.scan_clients(start, count);
        if let Some(seen) = self.seen {
            seen.borrow_mut().note(&answer);
        }
        answer.0
    }
}

/// A block a defense asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    /// The service whose defense asked (the block applies to it only).
    pub svc: u16,
    /// Prefix address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Seconds (1 to 86,400).
    pub secs: u32,
    /// Mode.
    pub mode: BlockMode,
}

/// Checks a WIT prefix: a length within the address's family.
pub fn prefix(p: &dt::Prefix) -> Option<(IpAddr, u8)> {
    match p.addr {
        crate::plugin::FlowWitIp::V4(a) if p.len <= 32 => Some((Ipv4Addr::from(a).into(), p.len)),
        crate::plugin::FlowWitIp::V6((hi, lo)) if p.len <= 128 => {
            let a = u128::from(hi) << 64 | u128::from(lo);
            Some((Ipv6Addr::from(a).into(), p.len))
        }
        _ => None,
    }
}

/// Checks a WIT block asked for by a defense of service `svc`.
pub fn block_request(svc: u16, b: &dt::Block) -> Option<BlockRequest> {
    let (addr, len) = prefix(&b.prefix)?;
    if b.secs == 0 || b.secs > ringvs_abi::MAX_BLOCK_SECS {
        return None;
    }
    let mode = match b.mode {
        dt::BlockMode::Drop => BlockMode::Drop,
        dt::BlockMode::Tarpit => BlockMode::Tarpit,
    };
    Some(BlockRequest {
        svc,
        addr,
        len,
        secs: b.secs,
        mode,
    })
}
