//! Defense plugins in a queue: admission of new flows, the state table of the current
//! level, and the once-a-second tick whose actions the host checks before applying.
//!
//! The order on a service is the configuration's: for a new flow, each defense's drop rate
//! then its `admit`, and the first refusal wins. For the state table, the first defense
//! (in that order) at a level above 0 wins; with none, the host's normal table.

use super::blocks::BlockMode;
use crate::conn::state::{State, StateTable, STATES, TCP_STATES};
use crate::conn::{ConnTable, Tick, TICKS_PER_SEC};
use crate::plugin::{
    defense_types as dt, table_types as tt, DefenseInstance, Plugin, PluginError, TableView,
};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

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

/// A defense plugin prepared by the control plane for a service: its validated levels and
/// one instance per queue.
pub struct PluginDefense {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its levels (index = level).
    pub levels: Arc<[Level]>,
    /// One instance per queue, taken by the queue with the snapshot.
    pub instances: Mutex<Vec<Option<DefenseInstance>>>,
}

impl std::fmt::Debug for PluginDefense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PluginDefense({}, {} levels)",
            self.plugin.name,
            self.levels.len()
        )
    }
}

/// Action kinds, for `ringvs_defense_actions_total{action}` and the refused ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `set-level`.
    SetLevel = 0,
    /// `drop-connections`.
    DropConnections,
    /// `drop-embryonic`.
    DropEmbryonic,
    /// `drop-rate`.
    DropRate,
    /// `block`.
    Block,
    /// `unblock`.
    Unblock,
}

/// Number of [`ActionKind`]s.
pub const ACTIONS: usize = 6;

impl ActionKind {
    /// Every kind.
    pub const ALL: [ActionKind; ACTIONS] = [
        ActionKind::SetLevel,
        ActionKind::DropConnections,
        ActionKind::DropEmbryonic,
        ActionKind::DropRate,
        ActionKind::Block,
        ActionKind::Unblock,
    ];

    /// The `action` label.
    pub fn label(self) -> &'static str {
        match self {
            ActionKind::SetLevel => "set_level",
            ActionKind::DropConnections => "drop_connections",
            ActionKind::DropEmbryonic => "drop_embryonic",
            ActionKind::DropRate => "drop_rate",
            ActionKind::Block => "block",
            ActionKind::Unblock => "unblock",
        }
    }

    /// The kind of an action.
    pub fn of(a: &dt::Action) -> ActionKind {
        match a {
            dt::Action::SetLevel(_) => ActionKind::SetLevel,
            dt::Action::DropConnections(_) => ActionKind::DropConnections,
            dt::Action::DropEmbryonic(_) => ActionKind::DropEmbryonic,
            dt::Action::DropRate(_) => ActionKind::DropRate,
            dt::Action::Block(_) => ActionKind::Block,
            dt::Action::Unblock(_) => ActionKind::Unblock,
        }
    }
}

/// A defense of a service in one queue.
pub struct DefenseSlot {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Its levels.
    pub levels: Arc<[Level]>,
    /// Its instance here (none while poisoned: "no defense action").
    pub inst: Option<DefenseInstance>,
    /// Its current level.
    pub level: u8,
    /// Refuse one new flow in this many (0: none).
    pub drop_rate: u32,
    /// Flows left until the next refusal.
    pub drop_counter: u32,
    /// A fresh instance has been asked for.
    pub waiting: bool,
    /// It did something in its last tick (for `ringvs_defense_active`).
    pub acted: bool,
    /// New flows it refused since the last tick.
    pub refusing: u32,
    /// New flows it refused in the second before the last tick.
    pub refused_last: u32,
}

impl std::fmt::Debug for DefenseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefenseSlot")
            .field("plugin", &self.plugin.name)
            .field("level", &self.level)
            .field("drop_rate", &self.drop_rate)
            .field("healthy", &self.inst.is_some())
            .finish()
    }
}

impl DefenseSlot {
    /// A slot for a prepared defense, with its instance for this queue (if any).
    pub fn new(p: &PluginDefense, inst: Option<DefenseInstance>) -> DefenseSlot {
        DefenseSlot {
            plugin: p.plugin.clone(),
            levels: p.levels.clone(),
            inst,
            level: 0,
            drop_rate: 0,
            drop_counter: 0,
            waiting: false,
            acted: false,
            refusing: 0,
            refused_last: 0,
        }
    }

    /// True if this defense is doing something: a level above 0, a drop rate, actions in
    /// its last tick, or new flows refused in the second before it.
    pub fn active(&self) -> bool {
        self.level > 0 || self.drop_rate > 0 || self.acted || self.refused_last > 0
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
}

/// The state table and timeouts (ticks) a service gets from its defenses' levels.
pub fn effective_table(slots: &[DefenseSlot], own: &[u32; STATES]) -> (StateTable, [Tick; STATES]) {
    let level = slots
        .iter()
        .find(|s| s.level > 0)
        .and_then(|s| s.levels.get(s.level as usize).cloned())
        .or_else(|| slots.first().and_then(|s| s.levels.first().cloned()))
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

/// A service's entries in one queue's table, as a defense's tick may scan them.
pub struct ServiceTable<'a> {
    /// The queue's table.
    pub table: &'a ConnTable<Ipv4Addr>,
    /// The service slot.
    pub svc: u16,
    /// Now.
    pub now: Tick,
    /// The service's timeouts in ticks (to derive idle time).
    pub timeouts: [Tick; STATES],
}

impl TableView for ServiceTable<'_> {
    fn slots(&self) -> u32 {
        self.table.slots()
    }

    fn scan(&self, start: u32, count: u32) -> Vec<tt::Entry> {
        let n = self.table.slots();
        if n == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for k in 0..count.min(n) {
            let i = start.wrapping_add(k) % n;
            let Some((_, c)) = self.table.entry_at(i) else {
                continue;
            };
            if c.svc != self.svc {
                continue;
            }
            let left = c.expires().saturating_sub(self.now);
            let full = self.timeouts[c.state as usize];
            out.push(tt::Entry {
                id: i,
                proto: c.proto(),
                state: wit_state(c.state),
                packets: c.in_pkts,
                expires_in: left / TICKS_PER_SEC,
                idle: full.saturating_sub(left) / TICKS_PER_SEC,
            });
        }
        out
    }
}

/// A block a defense asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    /// Prefix address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
    /// Seconds (1 to 86,400).
    pub secs: u32,
    /// Mode.
    pub mode: BlockMode,
}

/// Checks a WIT prefix (IPv4 only for now).
pub fn prefix(p: &dt::Prefix) -> Option<(Ipv4Addr, u8)> {
    match p.addr {
        crate::plugin::FlowWitIp::V4(a) if p.len <= 32 => Some((Ipv4Addr::from(a), p.len)),
        _ => None,
    }
}

/// Checks a WIT block.
pub fn block_request(b: &dt::Block) -> Option<BlockRequest> {
    let (addr, len) = prefix(&b.prefix)?;
    if b.secs == 0 || b.secs > 86_400 {
        return None;
    }
    let mode = match b.mode {
        dt::BlockMode::Drop => BlockMode::Drop,
        dt::BlockMode::Tarpit => BlockMode::Tarpit,
    };
    Some(BlockRequest {
        addr,
        len,
        secs: b.secs,
        mode,
    })
}

/// The WIT address of an IPv4 source.
pub fn wit_ip(a: Ipv4Addr) -> crate::plugin::FlowWitIp {
    crate::plugin::FlowWitIp::V4(u32::from(a))
}
