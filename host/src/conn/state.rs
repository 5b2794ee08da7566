//! Connection states and the TCP state tables, as data (IPVS `ip_vs_proto_tcp.c`).
//!
//! The definitions live once, in the `ringvs-abi` crate that the SDK shares (see
//! [`ringvs_abi::state`]): a TCP packet of a tracked connection moves it to
//! `table.next(direction, event, state)`, and secure_tcp is another table, not an `if`.
//!
//! The events are derived from the TCP flags with IPVS's priority: RST, then SYN, then FIN,
//! then ACK. A segment with none of them leaves the state as it is (IPVS moves it to CLOSE;
//! ringvs drops such segments earlier as nonsensical flags).

pub use ringvs_abi::state::{
    Direction, Event, State, StateTable, StateTableError, Timeouts, STATES, TCP_STATES, TRANSITIONS,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bits_are_the_wire_flags() {
        use crate::wire::tcp::flags::*;
        assert_eq!(Event::from_tcp_flags(SYN | ACK), Some(Event::Syn));
        assert_eq!(Event::from_tcp_flags(RST | ACK), Some(Event::Rst));
        assert_eq!(Event::from_tcp_flags(FIN | ACK), Some(Event::Fin));
        assert_eq!(Event::from_tcp_flags(ACK | PSH), Some(Event::Ack));
        assert_eq!(Event::from_tcp_flags(PSH), None);
    }
}
