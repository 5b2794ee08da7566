//! Connection states and the state tables, as data (IPVS `ip_vs_proto_tcp.c`).
//!
//! A TCP packet of a tracked connection moves it to
//! `table.next(direction, event, state)`; the host applies whichever [`StateTable`] the service
//! currently uses. secure_tcp is not an `if` in the packet path: it is another table.
//!
//! secure_tcp's table (`tcp_states_dos`) is data of the `defense-secure-tcp` plugin, handed to
//! the host as its level 1.
//!
//! The events are derived from the TCP flags with IPVS's priority: RST, then SYN, then FIN,
//! then ACK. A segment with none of them leaves the state as it is classified by the caller
//! (IPVS moves it to CLOSE; ringvs drops such segments earlier as nonsensical flags).

use core::fmt;

/// States of a tracked connection. TCP uses all but [`State::Udp`]; UDP uses only that one.
///
/// The discriminants are the indices of the state tables' columns and of the timeout table.
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
    /// A UDP "connection".
    Udp = 11,
}

/// Number of TCP states (columns of a state table).
pub const TCP_STATES: usize = 11;
/// Number of states including UDP (length of a timeout table).
pub const STATES: usize = 12;

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
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a packet travels relative to the connection.
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

/// What a TCP segment means to the state machine.
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
    /// with none of the four.
    pub fn from_tcp_flags(flags: u8) -> Option<Event> {
        use crate::wire::tcp::flags::{ACK, FIN, RST, SYN};
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
/// [`TCP_STATES`].
#[derive(Clone, PartialEq, Eq)]
pub struct StateTable {
    rows: [[State; TCP_STATES]; 12],
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
                "a state table has {} entries (3 directions × 4 events × {TCP_STATES} states), got {n}",
                12 * TCP_STATES
            ),
            StateTableError::BadState { index, value } => write!(
                f,
                "entry {index} of the state table is {value}, not a TCP state (0..{TCP_STATES})"
            ),
        }
    }
}

impl std::error::Error for StateTableError {}

use State::{
    Close as sCL, CloseWait as sCW, Established as sES, FinWait as sFW, LastAck as sLA,
    Listen as sLI, SynRecv as sSR, SynSent as sSS, TimeWait as sTW,
};

impl StateTable {
    /// IPVS's normal table (`tcp_states`).
    #[rustfmt::skip]
    pub const NORMAL: StateTable = StateTable { rows: [
        // INPUT
        //       sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        /*syn*/ [sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR],
        /*fin*/ [sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW],
        /*ack*/ [sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES],
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
        /*ack*/ [sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES],
        /*rst*/ [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL],
    ]};

    /// The next state. `state` must be a TCP state; a UDP state is returned unchanged.
    #[inline]
    pub fn next(&self, dir: Direction, event: Event, state: State) -> State {
        let row = dir as usize * 4 + event as usize;
        match self.rows[row].get(state as usize) {
            Some(s) => *s,
            None => state,
        }
    }

    /// Builds a table from a flat list of state indices, row-major as the constants above
    /// (what a defense plugin hands over). Every entry is checked.
    pub fn from_indices(flat: &[u8]) -> Result<StateTable, StateTableError> {
        if flat.len() != 12 * TCP_STATES {
            return Err(StateTableError::Shape(flat.len()));
        }
        let mut rows = [[State::None; TCP_STATES]; 12];
        for (index, &value) in flat.iter().enumerate() {
            let s = State::from_index(value)
                .filter(|s| (*s as usize) < TCP_STATES)
                .ok_or(StateTableError::BadState { index, value })?;
            rows[index / TCP_STATES][index % TCP_STATES] = s;
        }
        Ok(StateTable { rows })
    }

    /// The table as a flat list of state indices (inverse of [`StateTable::from_indices`]).
    pub fn to_indices(&self) -> Vec<u8> {
        self.rows.iter().flatten().map(|s| *s as u8).collect()
    }
}

impl fmt::Debug for StateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == StateTable::NORMAL {
            f.write_str("StateTable::NORMAL")
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
mod tests {
    use super::Direction::*;
    use super::Event::*;
    use super::*;

    /// One connection's life through a table: (direction, event, expected state after).
    fn walk(table: &StateTable, steps: &[(Direction, Event, State)]) {
        let mut s = State::None;
        for (i, (d, e, want)) in steps.iter().enumerate() {
            s = table.next(*d, *e, s);
            assert_eq!(s, *want, "step {i}: {d:?} {e:?}");
        }
    }

    #[test]
    fn nat_handshake_and_client_close() {
        // Client SYN, server SYN-ACK (SYN in output), client ACK, data, client FIN,
        // server ACK, server FIN, client ACK.
        walk(
            &StateTable::NORMAL,
            &[
                (Input, Syn, State::SynRecv),
                (Output, Syn, State::SynRecv),
                (Input, Ack, State::Established),
                (Output, Ack, State::Established),
                (Input, Fin, State::CloseWait),
                (Output, Ack, State::CloseWait),
                (Output, Fin, State::TimeWait),
                (Input, Ack, State::TimeWait),
            ],
        );
    }

    #[test]
    fn server_closes_first() {
        walk(
            &StateTable::NORMAL,
            &[
                (Input, Syn, State::SynRecv),
                (Output, Syn, State::SynRecv),
                (Input, Ack, State::Established),
                (Output, Fin, State::FinWait),
                (Input, Ack, State::FinWait),
                (Input, Fin, State::TimeWait),
            ],
        );
    }

    #[test]
    fn client_ack_establishes_without_secure_tcp() {
        // The weakness secure_tcp fixes: a spoofed SYN then ACK establishes the entry
        // although the realserver never answered.
        walk(
            &StateTable::NORMAL,
            &[
                (Input, Syn, State::SynRecv),
                (Input, Ack, State::Established),
            ],
        );
    }

    #[test]
    fn rst_closes() {
        let t = &StateTable::NORMAL;
        assert_eq!(t.next(Input, Rst, State::Established), State::Close);
        assert_eq!(t.next(Output, Rst, State::Established), State::Close);
        // IPVS ignores a client RST on a half-open entry (blind RST protection).
        assert_eq!(t.next(Input, Rst, State::SynRecv), State::SynRecv);
    }

    #[test]
    fn input_only_fin_goes_to_fin_wait() {
        // For one-directional methods the director never sees the server's FIN.
        assert_eq!(
            StateTable::NORMAL.next(InputOnly, Fin, State::Established),
            State::FinWait
        );
        assert_eq!(
            StateTable::NORMAL.next(Input, Fin, State::Established),
            State::CloseWait
        );
    }

    #[test]
    fn reuse_after_time_wait() {
        assert_eq!(
            StateTable::NORMAL.next(Input, Syn, State::TimeWait),
            State::SynRecv
        );
    }

    #[test]
    fn flags_priority() {
        use crate::wire::tcp::flags::*;
        assert_eq!(Event::from_tcp_flags(SYN | ACK), Some(Syn));
        assert_eq!(Event::from_tcp_flags(RST | ACK), Some(Rst));
        assert_eq!(Event::from_tcp_flags(FIN | ACK), Some(Fin));
        assert_eq!(Event::from_tcp_flags(ACK | PSH), Some(Ack));
        assert_eq!(Event::from_tcp_flags(PSH), None);
    }

    #[test]
    fn indices_round_trip_and_validation() {
        let flat = StateTable::NORMAL.to_indices();
        assert_eq!(StateTable::from_indices(&flat).unwrap(), StateTable::NORMAL);
        assert_eq!(
            StateTable::from_indices(&flat[1..]),
            Err(StateTableError::Shape(131))
        );
        let mut bad = flat.clone();
        bad[7] = State::Udp as u8;
        assert_eq!(
            StateTable::from_indices(&bad),
            Err(StateTableError::BadState {
                index: 7,
                value: 11
            })
        );
    }

    #[test]
    fn timeouts_keys() {
        for s in State::ALL {
            assert_eq!(State::from_key(s.key()), Some(s));
        }
        assert_eq!(Timeouts::IPVS.get(State::Established), 900);
        assert_eq!(Timeouts::IPVS.get(State::Udp), 300);
    }
}
