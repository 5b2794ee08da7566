//! Connection tracking: the table, the TCP state tables as data, timers and the per-server
//! connection counts.
//!
//! Everything here belongs to one data-plane thread except [`DestCounters`], which the
//! threads share with the schedulers and the control plane (IPVS's `activeconns` and
//! `inactconns` are global too).

mod counters;
pub(crate) mod sip;
pub mod state;
mod table;

pub use counters::DestCounters;
pub use state::{Direction, Event, State, StateTable, StateTableError, Timeouts};
pub use table::{reached, ticks_left};
pub use table::{
    BudgetTooSmall, Conn, ConnId, ConnTable, FlowAddr, Full, HashKey, NewConn, Tick, EVICT_SAMPLE,
    F_INACTIVE, F_NOOUTPUT, F_PERSISTENT, F_PROXIED, F_PROXY_OPENING, MAX_STEP, TICKS_PER_SEC,
    WHEEL_SLOTS,
};

#[cfg(test)]
mod tests;
