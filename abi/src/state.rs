//! Connection states and IPVS's TCP state tables, as data (`ip_vs_proto_tcp.c`).
//!
//! A TCP packet of a tracked connection moves it to `table.next(direction, event, state)`;
//! the host applies whichever [`StateTable`] the service uses now. secure_tcp is not an `if`
//! in the packet path: it is the other table, [`StateTable::DOS`], which the
//! `defense-secure-tcp` plugin hands the host as its level 1.
//!
//! Both tables are the kernel's as of Linux 3.12 and later, checked cell by cell against
//! `ip_vs_proto_tcp.c` in this module's tests. Since 3.12 (sloppy TCP) an ACK on a NONE
//! entry moves it to ESTABLISHED in the INPUT and INPUT-ONLY rows of both tables, where
//! older kernels closed it (`sCL`); ringvs had kept the old cell until the tables were
//! written once here. ringvs creates a TCP entry only for a SYN, so a NONE entry never
//! sees an ACK first and the cell does not change what the director does.

use core::fmt;

/// States of a tracked connection. TCP uses all but [`State::Udp`]; UDP uses only that one.
///
/// The discriminants are the WIT `tcp-state` order: the columns of a state table and the
/// indices of a timeout table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    /// `sNO`: no packet seen yet.
    None = 0,
    /// `sES`: both sides have talked; the only *active* state.
    Established = 1,
    /// `sSS`: the realserver sent a SYN.
    SynSent = 2,
    /// `sSR`: the client sent a SYN.
    SynRecv = 3,
    /// `sFW`: one side sent a FIN.
    FinWait = 4,
    /// `sTW`: both sides closed.
    TimeWait = 5,
    /// `sCL`: reset or closed.
    Close = 6,
    /// `sCW`: the client closed first.
    CloseWait = 7,
    /// `sLA`: last ACK awaited.
    LastAck = 8,
    /// `sLI`: listening (FTP-style helpers; kept for table fidelity).
    Listen = 9,
    /// `sSA`: SYN seen, answer pending under secure_tcp.
    SynAck = 10,
    /// A UDP "connection" (not a column of the TCP tables; has a timeout).
    Udp = 11,
}

/// Number of TCP states (columns of a state table).
pub const TCP_STATES: usize = 11;
/// Number of states including UDP (length of a timeout table).
pub const STATES: usize = 12;
/// Number of events (rows per direction of a state table).
pub const EVENTS: usize = 4;
/// Number of directions (row blocks of a state table).
pub const DIRECTIONS: usize = 3;
/// Rows of a state table.
pub const ROWS: usize = DIRECTIONS * EVENTS;
/// Entries of a state table as the WIT hands it over (`state-table.transitions`).
pub const TRANSITIONS: usize = ROWS * TCP_STATES;

impl State {
    /// All states, in discriminant order.
    pub const ALL: [State; STATES] = [
        State::None,
        State::Established,
        State::SynSent,
        State::SynRecv,
        State::FinWait,
        State::TimeWait,
        State::Close,
        State::CloseWait,
        State::LastAck,
        State::Listen,
        State::SynAck,
        State::Udp,
    ];

    /// The state with this index, if any.
    pub fn from_index(i: u8) -> Option<State> {
        State::ALL.get(i as usize).copied()
    }

    /// Its name as `ipvsadm -Lnc` prints it.
    pub fn name(self) -> &'static str {
        match self {
            State::None => "NONE",
            State::Established => "ESTABLISHED",
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::FinWait => "FIN_WAIT",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::Listen => "LISTEN",
            State::SynAck => "SYNACK",
            State::Udp => "UDP",
        }
    }

    /// Its key in a `timeouts = { … }` table (lower-case name).
    pub fn key(self) -> &'static str {
        match self {
            State::None => "none",
            State::Established => "established",
            State::SynSent => "syn_sent",
            State::SynRecv => "syn_recv",
            State::FinWait => "fin_wait",
            State::TimeWait => "time_wait",
            State::Close => "close",
            State::CloseWait => "close_wait",
            State::LastAck => "last_ack",
            State::Listen => "listen",
            State::SynAck => "synack",
            State::Udp => "udp",
        }
    }

    /// The state whose [`State::key`] is `key`.
    pub fn from_key(key: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.key() == key)
    }

    /// True for states IPVS counts in `ActiveConn` (only ESTABLISHED); all others are
    /// `InActConn`.
    pub fn is_active(self) -> bool {
        self == State::Established
    }

    /// True for half-open TCP states that a SYN flood fills (what drop_entry may reap).
    pub fn is_embryonic(self) -> bool {
        matches!(self, State::SynRecv | State::SynAck | State::None)
    }

    /// True for the states of a connection on its way out.
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            State::FinWait | State::TimeWait | State::Close | State::CloseWait | State::LastAck
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a packet travels relative to the connection (a row block of a state table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// Client → virtual service.
    Input = 0,
    /// Realserver → client (seen only with NAT).
    Output = 1,
    /// Client → virtual service on a connection whose replies bypass the director (TUN, DR),
    /// or which has not yet seen a reply.
    InputOnly = 2,
}

/// What a TCP segment means to the state machine (a row of a direction's block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Event {
    /// SYN (without RST).
    Syn = 0,
    /// FIN (without RST or SYN).
    Fin = 1,
    /// ACK only.
    Ack = 2,
    /// RST.
    Rst = 3,
}

impl Event {
    /// Classifies TCP flags with IPVS's priority (RST > SYN > FIN > ACK). `None` for a segment
    /// with none of the four. The flags are the TCP header's bits (FIN 0x01, SYN 0x02,
    /// RST 0x04, ACK 0x10).
    pub fn from_tcp_flags(flags: u8) -> Option<Event> {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        if flags & RST != 0 {
            Some(Event::Rst)
        } else if flags & SYN != 0 {
            Some(Event::Syn)
        } else if flags & FIN != 0 {
            Some(Event::Fin)
        } else if flags & ACK != 0 {
            Some(Event::Ack)
        } else {
            None
        }
    }
}

/// A TCP state table: for each direction and event, the next state for each current state.
///
/// Rows are `direction * 4 + event`; columns are [`State`] discriminants below
/// [`TCP_STATES`]. Flattened row-major it is the WIT's `state-table.transitions`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StateTable {
    rows: [[State; TCP_STATES]; ROWS],
}

/// Error for a state table handed over as raw data (e.g. by a defense plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateTableError {
    /// Not 12 rows of 11 entries.
    Shape(usize),
    /// An entry is not a TCP state index.
    BadState {
        /// Position of the entry in the flat list.
        index: usize,
        /// The value found.
        value: u8,
    },
}

impl fmt::Display for StateTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateTableError::Shape(n) => write!(
                f,
                "a state table has {TRANSITIONS} entries ({DIRECTIONS} directions × {EVENTS} \
                 events × {TCP_STATES} states), got {n}"
            ),
            StateTableError::BadState { index, value } => write!(
                f,
                "entry {index} of the state table is {value}, not a TCP state (0..{TCP_STATES})"
            ),
        }
    }
}

impl core::error::Error for StateTableError {}

use State::{
    Close as sCL, CloseWait as sCW, Established as sES, FinWait as sFW, LastAck as sLA,
    Listen as sLI, SynAck as sSA, SynRecv as sSR, SynSent as sSS, TimeWait as sTW,
};

impl StateTable {
    /// IPVS's normal table (`tcp_states`).
    #[rustfmt::skip]
    pub const NORMAL: StateTable = StateTable { rows: [
        // INPUT
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR],
        /*fin*/ [sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW],
        /*ack*/ [sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES],
        /*rst*/ [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR],
        // OUTPUT
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR],
        /*fin*/ [sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW],
        /*ack*/ [sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES],
        /*rst*/ [sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL],
        // INPUT-ONLY
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR],
        /*fin*/ [sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW],
        /*ack*/ [sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES],
        /*rst*/ [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL],
    ]};

    /// IPVS's secure_tcp table (`tcp_states_dos`): only the realserver's answer establishes
    /// a connection; a client's ACK leaves SYN_RECV where it is.
    #[rustfmt::skip]
    pub const DOS: StateTable = StateTable { rows: [
        // INPUT
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA],
        /*fin*/ [sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sSA],
        /*ack*/ [sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA],
        /*rst*/ [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL],
        // OUTPUT
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA],
        /*fin*/ [sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW],
        /*ack*/ [sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES],
        /*rst*/ [sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL],
        // INPUT-ONLY
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA],
        /*fin*/ [sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW],
        /*ack*/ [sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES],
        /*rst*/ [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL],
    ]};

    /// The next state. `state` must be a TCP state; a UDP state is returned unchanged.
    #[inline]
    pub fn next(&self, dir: Direction, event: Event, state: State) -> State {
        let row = dir as usize * EVENTS + event as usize;
        match self.rows[row].get(state as usize) {
            Some(s) => *s,
            None => state,
        }
    }

    /// Builds a table from a flat list of state indices, row-major as the constants above
    /// (what a defense plugin hands over). Every entry is checked.
    pub fn from_indices(flat: &[u8]) -> Result<StateTable, StateTableError> {
        if flat.len() != TRANSITIONS {
            return Err(StateTableError::Shape(flat.len()));
        }
        let mut rows = [[State::None; TCP_STATES]; ROWS];
        for (index, &value) in flat.iter().enumerate() {
            let s = State::from_index(value)
                .filter(|s| (*s as usize) < TCP_STATES)
                .ok_or(StateTableError::BadState { index, value })?;
            rows[index / TCP_STATES][index % TCP_STATES] = s;
        }
        Ok(StateTable { rows })
    }

    /// The table as a flat list of states, row-major (inverse of
    /// [`StateTable::from_indices`] once mapped to indices).
    pub fn flat(&self) -> [State; TRANSITIONS] {
        let mut out = [State::None; TRANSITIONS];
        for (i, s) in self.rows.iter().flatten().enumerate() {
            out[i] = *s;
        }
        out
    }
}

impl fmt::Debug for StateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == StateTable::NORMAL {
            f.write_str("StateTable::NORMAL")
        } else if *self == StateTable::DOS {
            f.write_str("StateTable::DOS")
        } else {
            f.debug_struct("StateTable")
                .field("rows", &self.rows)
                .finish()
        }
    }
}

/// Timeout per state, in seconds. Index by [`State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts(pub [u32; STATES]);

impl Timeouts {
    /// IPVS's defaults (`tcp_timeouts`, and 5 minutes for UDP).
    pub const IPVS: Timeouts = Timeouts([
        2,       // NONE
        15 * 60, // ESTABLISHED
        2 * 60,  // SYN_SENT
        60,      // SYN_RECV
        2 * 60,  // FIN_WAIT
        2 * 60,  // TIME_WAIT
        10,      // CLOSE
        60,      // CLOSE_WAIT
        30,      // LAST_ACK
        2 * 60,  // LISTEN
        120,     // SYNACK
        5 * 60,  // UDP
    ]);

    /// Timeout of `state` in seconds.
    #[inline]
    pub fn get(&self, state: State) -> u32 {
        self.0[state as usize]
    }

    /// Sets the timeout of `state`.
    pub fn set(&mut self, state: State, secs: u32) {
        self.0[state as usize] = secs;
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::IPVS
    }
}

#[cfg(test)]
mod tests;
