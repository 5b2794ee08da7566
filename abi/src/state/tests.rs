use super::Direction::*;
use super::Event::*;
use super::*;

/// `tcp_states` and `tcp_states_dos` as `net/netfilter/ipvs/ip_vs_proto_tcp.c` writes them
/// (Linux 3.12 and later; rows INPUT, OUTPUT, INPUT-ONLY × syn, fin, ack, rst), in the
/// kernel's own notation: the constants above are checked against this, cell by cell.
const KERNEL_TCP_STATES: &str = "
/*syn*/ {{sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR }},
/*fin*/ {{sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW }},
/*ack*/ {{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES }},
/*rst*/ {{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR }},
/*syn*/ {{sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR }},
/*fin*/ {{sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW }},
/*ack*/ {{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES }},
/*rst*/ {{sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL }},
/*syn*/ {{sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR }},
/*fin*/ {{sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW }},
/*ack*/ {{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES }},
/*rst*/ {{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL }},
";

const KERNEL_TCP_STATES_DOS: &str = "
/*syn*/ {{sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA }},
/*fin*/ {{sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sSA }},
/*ack*/ {{sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA }},
/*rst*/ {{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL }},
/*syn*/ {{sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA }},
/*fin*/ {{sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW }},
/*ack*/ {{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES }},
/*rst*/ {{sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL }},
/*syn*/ {{sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA }},
/*fin*/ {{sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW }},
/*ack*/ {{sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES }},
/*rst*/ {{sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL }},
";

/// The kernel's short state names, in `IP_VS_TCP_S_*` order.
const KERNEL_NAMES: [&str; TCP_STATES] = [
    "sNO", "sES", "sSS", "sSR", "sFW", "sTW", "sCL", "sCW", "sLA", "sLI", "sSA",
];

fn check_against_kernel(ours: &StateTable, kernel: &str) {
    let rows: [&str; ROWS] = {
        let mut it = kernel.lines().filter(|l| l.contains("{{"));
        core::array::from_fn(|_| it.next().expect("12 rows"))
    };
    assert!(kernel.lines().filter(|l| l.contains("{{")).count() == ROWS);
    let flat = ours.flat();
    for (r, line) in rows.iter().enumerate() {
        let inner = line.split("{{").nth(1).unwrap().split("}}").next().unwrap();
        let cells: [&str; TCP_STATES] = {
            let mut it = inner.split(',').map(str::trim);
            core::array::from_fn(|_| it.next().expect("11 cells"))
        };
        for (c, name) in cells.iter().enumerate() {
            let want = KERNEL_NAMES
                .iter()
                .position(|n| n == name)
                .expect("a kernel state");
            let got = flat[r * TCP_STATES + c];
            assert_eq!(
                got as usize,
                want,
                "row {r} ({}) column {} is {got:?}, the kernel has {name}",
                line.split("*/").next().unwrap(),
                KERNEL_NAMES[c]
            );
        }
    }
}

#[test]
fn tables_are_the_kernels_cell_by_cell() {
    check_against_kernel(&StateTable::NORMAL, KERNEL_TCP_STATES);
    check_against_kernel(&StateTable::DOS, KERNEL_TCP_STATES_DOS);
}

#[test]
fn ack_on_none_establishes_since_sloppy_tcp() {
    for t in [StateTable::NORMAL, StateTable::DOS] {
        assert_eq!(t.next(Input, Ack, State::None), State::Established);
        assert_eq!(t.next(InputOnly, Ack, State::None), State::Established);
    }
}

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
    // Under the dos table it stays half-open until the realserver answers.
    walk(
        &StateTable::DOS,
        &[
            (Input, Syn, State::SynRecv),
            (Input, Ack, State::SynRecv),
            (Output, Syn, State::SynAck),
            (Input, Ack, State::SynAck),
            (Output, Ack, State::Established),
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
fn udp_is_not_a_column() {
    assert_eq!(StateTable::NORMAL.next(Input, Syn, State::Udp), State::Udp);
}

#[test]
fn flags_priority() {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    assert_eq!(Event::from_tcp_flags(SYN | ACK), Some(Syn));
    assert_eq!(Event::from_tcp_flags(RST | ACK), Some(Rst));
    assert_eq!(Event::from_tcp_flags(FIN | ACK), Some(Fin));
    assert_eq!(Event::from_tcp_flags(ACK | PSH), Some(Ack));
    assert_eq!(Event::from_tcp_flags(PSH), None);
}

#[test]
fn indices_round_trip_and_validation() {
    let flat: [u8; TRANSITIONS] = StateTable::NORMAL.flat().map(|s| s as u8);
    assert_eq!(StateTable::from_indices(&flat).unwrap(), StateTable::NORMAL);
    assert_eq!(
        StateTable::from_indices(&flat[1..]),
        Err(StateTableError::Shape(131))
    );
    let mut bad = flat;
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
