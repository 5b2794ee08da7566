//! Defenses: state tables per level, admission of new flows, and a tick with actions.

use crate::{Config, Flow};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

use ringvs_abi::state::{STATES, TCP_STATES, TRANSITIONS};
/// A TCP state, in the host's numbering (columns of a [`StateTable`]); the same type the
/// director uses (`ringvs_abi::State`). `Udp` is not a column: UDP entries are reported in
/// scans as [`TcpState::None`], as the WIT says.
pub use ringvs_abi::State as TcpState;
pub use ringvs_abi::{Direction, Event};
/// Host limits a defense meets: the longest block, the most heavy hitters in `tick-stats`,
/// the most actions applied from one tick, the most connection ids one tick may drop, the
/// most slots one `table.scan` call visits.
pub use ringvs_abi::{
    MAX_BLOCK_SECS, MAX_SCAN_SLOTS, MAX_TICK_ACTIONS, MAX_TICK_DROPS, MAX_TOP_SOURCES,
};

/// A TCP state table and its timeouts, handed to the host and applied per packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTable {
    /// Next state for (direction, event, state): index `(dir * 4 + event) * 11 + state`.
    pub transitions: [TcpState; TRANSITIONS],
    /// Timeout per state in seconds (11 TCP states then UDP); 0 keeps the service's own.
    pub timeouts: [u32; STATES],
}

impl StateTable {
    /// A table from rows written like IPVS's `tcp_states` (12 rows of 11 columns: input
    /// syn/fin/ack/rst, output …, input-only …), with no timeout overrides.
    pub fn from_rows(rows: [[TcpState; TCP_STATES]; 12]) -> StateTable {
        let mut transitions = [TcpState::None; TRANSITIONS];
        for (r, row) in rows.iter().enumerate() {
            transitions[r * TCP_STATES..(r + 1) * TCP_STATES].copy_from_slice(row);
        }
        StateTable {
            transitions,
            timeouts: [0; STATES],
        }
    }

    /// IPVS's normal table (`tcp_states`), no timeout overrides.
    pub fn normal() -> StateTable {
        StateTable::from(ringvs_abi::StateTable::NORMAL)
    }

    /// IPVS's secure_tcp table (`tcp_states_dos`), no timeout overrides.
    pub fn dos() -> StateTable {
        StateTable::from(ringvs_abi::StateTable::DOS)
    }

    /// The next state.
    pub fn next(&self, dir: Direction, ev: Event, state: TcpState) -> TcpState {
        self.transitions
            .get((dir as usize * 4 + ev as usize) * TCP_STATES + state as usize)
            .copied()
            .unwrap_or(state)
    }

    /// Sets a timeout override.
    pub fn with_timeout(mut self, state: TcpState, secs: u32) -> StateTable {
        self.timeouts[state as usize] = secs;
        self
    }
}

impl From<ringvs_abi::StateTable> for StateTable {
    fn from(t: ringvs_abi::StateTable) -> StateTable {
        StateTable {
            transitions: t.flat(),
            timeouts: [0; STATES],
        }
    }
}

/// What the host counted for a new flow's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceStats {
    /// New flows per second from this address.
    pub new_flows: u32,
    /// Its connections in the table now.
    pub concurrent: u32,
}

/// Admission of a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Schedule it.
    Accept,
    /// Drop its packet.
    Drop,
}

/// A source and its rates in the last second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRate {
    /// The address.
    pub addr: IpAddr,
    /// New flows in the last second.
    pub new_flows: u32,
    /// Packets in the last second.
    pub packets: u32,
}

/// Once-a-second statistics of the queue a defense instance runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickStats {
    /// Seconds since the director started.
    pub now: u64,
    /// Number of queues: table and rate figures are this queue's share.
    pub queues: u32,
    /// The current defense level.
    pub level: u8,
    /// Connections tracked.
    pub entries: u64,
    /// The most the memory budget allows.
    pub capacity: u64,
    /// Bytes the table uses.
    pub memory: u64,
    /// The table's budget in bytes.
    pub memory_limit: u64,
    /// Memory the system has available, in bytes.
    pub system_available: u64,
    /// Entries per state: 11 TCP states, then UDP.
    pub by_state: Vec<u32>,
    /// New flows in the last second.
    pub new_flows: u64,
    /// Packets in the last second.
    pub packets: u64,
    /// Heavy hitters by new flows, heaviest first.
    pub top_sources: Vec<SourceRate>,
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

/// How a blocked source is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockMode {
    /// Drop every packet from it, established connections' too.
    Drop,
    /// Refuse its new flows silently; established connections continue.
    Tarpit,
}

/// What a defense asks the host to do after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Use this level's state table.
    SetLevel(u8),
    /// Drop these connections (ids from [`Table::scan`]).
    DropConnections(Vec<u32>),
    /// Drop up to this many embryonic entries.
    DropEmbryonic(u32),
    /// Refuse one new flow in this many (0: none).
    DropRate(u32),
    /// Block a source prefix for `secs` seconds.
    Block {
        /// Whom.
        prefix: Prefix,
        /// How long.
        secs: u32,
        /// How.
        mode: BlockMode,
    },
    /// Lift a block.
    Unblock(Prefix),
    /// Switch the host's SYN proxy on for the service in this queue (true), or give the
    /// decision back to the host (false); honoured when the service's `syn_proxy` is
    /// `"auto"`, refused otherwise.
    SynProxy(bool),
}

/// One connection as a scan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its id, for [`Action::DropConnections`].
    pub id: u32,
    /// IP protocol.
    pub proto: u8,
    /// Its TCP state (`None` for UDP).
    pub state: TcpState,
    /// Packets from the client (saturating).
    pub packets: u32,
    /// Seconds until it expires.
    pub expires_in: u32,
    /// Seconds since its last packet.
    pub idle: u32,
}

/// The connection table, as far as a defense may see it during its tick.
pub trait Table {
    /// Slots the scan ranges over.
    fn slots(&self) -> u32;
    /// Live entries among `start .. start + count` (wrapping).
    fn scan(&self, start: u32, count: u32) -> Vec<Entry>;
}

/// A defense. One instance runs per director queue.
pub trait Defense: Default + 'static {
    /// Takes the operator's configuration. Default: accepts an empty one.
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&[])
    }

    /// State tables per level (level 0 first). Default: none (the host's normal table).
    fn levels(&self) -> Vec<StateTable> {
        Vec::new()
    }

    /// Admission of a new flow. Default: accept.
    fn admit(&mut self, _flow: &Flow, _source: &SourceStats) -> Verdict {
        Verdict::Accept
    }

    /// Once a second. Default: no action.
    fn tick(&mut self, _stats: &TickStats, _table: &dyn Table) -> Vec<Action> {
        Vec::new()
    }
}

/// Exports a [`Defense`] as the plugin's `ringvs:plugin/defense` interface.
#[macro_export]
macro_rules! export_defense {
    ($t:ty) => {
        // On every target: the type must implement the trait (a clear error at this call).
        const _: fn() = || {
            fn __must_implement<T: $crate::Defense>() {}
            __must_implement::<$t>();
        };
        // The export glue exists only in the component (its export names are not valid
        // symbol names for a native shared library).
        #[cfg(target_family = "wasm")]
        const _: () = {
            use $crate::__wit::def::exports::ringvs::plugin::defense as __d;
            use $crate::__wit::types as __t;
            $crate::__ident!();
            struct __RingvsDefense;
            static __STATE: $crate::rt::Slot<$t> = $crate::rt::Slot::new();
            impl __d::Guest for __RingvsDefense {
                fn init(config: __t::Config) -> Result<(), $crate::prelude::String> {
                    $crate::rt::defense_init::<$t>(&__STATE, config)
                }
                fn levels() -> $crate::prelude::Vec<__d::StateTable> {
                    $crate::rt::defense_levels::<$t>(&__STATE)
                }
                fn admit(flow: __t::Flow, source: __d::SourceStats) -> __d::Verdict {
                    $crate::rt::defense_admit::<$t>(&__STATE, flow, source)
                }
                fn tick(stats: __d::TickStats) -> $crate::prelude::Vec<__d::Action> {
                    $crate::rt::defense_tick::<$t>(&__STATE, stats)
                }
            }
    $crate::__wit::def::export!(__RingvsDefense with_types_in $crate::__wit::def);
        };
    };
}
