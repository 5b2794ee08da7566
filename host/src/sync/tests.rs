use super::*;
use std::net::{SocketAddr, SocketAddrV6};

fn key() -> Key {
    Key::from_hex(&"5a".repeat(32)).unwrap()
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            proto: if i % 3 == 2 { 17 } else { 6 },
            state: if i % 3 == 2 {
                State::Udp
            } else {
                State::Established
            },
            template: None,
            client: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, (i % 250) as u8), 40_000 + i as u16)
                .into(),
            vip: "10.77.100.100:80".parse().unwrap(),
            server: SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1 + (i % 3) as u8), 8080).into(),
            expires_in: 900 - i as u32,
        })
        .collect()
}

fn header(seq: u64) -> Header {
    Header {
        kind: Kind::Entries,
        sender: 7,
        epoch: 1_764_900_000,
        seq,
    }
}

fn message(seq: u64, n: usize) -> Vec<u8> {
    let mut m = Vec::new();
    encode(&key(), &header(seq), &entries(n), &mut m);
    m
}

#[test]
fn messages_round_trip_up_to_a_full_datagram() {
    assert_eq!(MAX_ENTRIES, 50);
    for n in [0, 1, 7, MAX_ENTRIES] {
        let m = message(3, n);
        assert_eq!(m.len(), HEADER_LEN + n * ENTRY_LEN + MAC_LEN);
        assert!(m.len() <= MAX_MESSAGE);
        assert_eq!(decode(&key(), &m), Ok((header(3), entries(n))));
    }
}

#[test]
fn any_changed_bit_or_another_key_is_a_bad_mac() {
    let m = message(9, 4);
    for i in 0..m.len() {
        for bit in 0..8 {
            let mut f = m.clone();
            f[i] ^= 1 << bit;
            let r = decode(&key(), &f);
            assert!(r.is_err(), "byte {i} bit {bit} changed, still accepted");
            // Fields checked before the MAC answer for themselves; the rest is the MAC.
            if !(4..8).contains(&i) && i >= 4 {
                assert_eq!(r, Err(Reject::Mac), "byte {i} bit {bit}");
            }
        }
    }
    let other = Key::from_hex(&"a5".repeat(32)).unwrap();
    assert_eq!(decode(&other, &m), Err(Reject::Mac));
}

#[test]
fn truncated_oversized_and_foreign_messages_are_refused_by_reason() {
    let m = message(1, 3);
    for len in 0..m.len() {
        let r = decode(&key(), &m[..len]);
        assert!(
            matches!(r, Err(Reject::Length) | Err(Reject::Mac)),
            "{len}: {r:?}"
        );
    }
    let mut long = m.clone();
    long.extend_from_slice(&[0; ENTRY_LEN]);
    assert_eq!(decode(&key(), &long), Err(Reject::Length));
    assert_eq!(
        decode(&key(), &vec![0; MAX_MESSAGE + 1]),
        Err(Reject::Length)
    );
    let mut magic = m.clone();
    magic[0] = b'X';
    assert_eq!(decode(&key(), &magic), Err(Reject::Magic));
    let mut v2 = m.clone();
    v2[4] = 2;
    assert_eq!(decode(&key(), &v2), Err(Reject::Version));
    let mut many = m.clone();
    many[6..8].copy_from_slice(&(MAX_ENTRIES as u16 + 1).to_be_bytes());
    assert_eq!(decode(&key(), &many), Err(Reject::Oversized));
}

/// Signed by the key, yet not a valid message: refused after the MAC, by what is wrong.
#[test]
fn well_signed_nonsense_is_refused() {
    let resign = |m: Vec<u8>| sign_for_tests(&key(), &m[..m.len() - MAC_LEN]);
    let at = |field: usize| HEADER_LEN + field;
    for (what, edit, want) in [
        ("kind 9", (5, 9u8), Reject::Header),
        ("reserved", (25, 1), Reject::Header),
        ("protocol 1", (at(0), 1), Reject::Entry),
        ("state 12", (at(1), 12), Reject::Entry),
        ("UDP state on TCP", (at(1), State::Udp as u8), Reject::Entry),
        ("flag 2", (at(2), 2), Reject::Entry),
        (
            "a template flag in an entries message",
            (at(2), 1),
            Reject::Entry,
        ),
        ("IPv6", (at(3), 6), Reject::Entry),
        ("padding", (at(22), 1), Reject::Entry),
    ] {
        let mut m = message(1, 1);
        m[edit.0] = edit.1;
        assert_eq!(decode(&key(), &resign(m)), Err(want), "{what}");
    }
}

#[test]
fn each_message_is_taken_once() {
    let mut w = ReplayWindow::default();
    let h = |epoch, seq| Header {
        epoch,
        ..header(seq)
    };
    assert_eq!(
        w.accept(&h(10, 0)),
        Err(Reject::Replay),
        "sequence numbers start at 1"
    );
    assert_eq!(w.accept(&h(10, 5)), Ok(()));
    assert_eq!(w.accept(&h(10, 5)), Err(Reject::Replay), "the same again");
    assert_eq!(w.accept(&h(10, 3)), Ok(()), "late, within the window");
    assert_eq!(w.accept(&h(10, 3)), Err(Reject::Replay));
    assert_eq!(w.accept(&h(10, 100)), Ok(()));
    assert_eq!(
        w.accept(&h(10, 100 - WINDOW)),
        Err(Reject::Replay),
        "behind the window"
    );
    assert_eq!(w.accept(&h(10, 100 - WINDOW + 1)), Ok(()));
    assert_eq!(w.accept(&h(10, 6)), Err(Reject::Replay));
    // The sender restarted: a new epoch, numbers from 1 again; the old epoch is over.
    assert_eq!(w.accept(&h(11, 1)), Ok(()));
    assert_eq!(w.accept(&h(10, 101)), Err(Reject::Replay), "an older epoch");
    // Another sender has its own numbers.
    assert_eq!(
        w.accept(&Header {
            sender: 8,
            ..h(10, 5)
        }),
        Ok(())
    );
}

#[test]
fn keys_are_long_enough_hex() {
    assert!(Key::from_hex(&"ab".repeat(32)).is_ok());
    assert!(Key::from_hex(&"ab".repeat(31))
        .unwrap_err()
        .contains("at least 32"));
    assert!(Key::from_hex("xyz").is_err());
    assert_eq!(format!("{:?}", key()), "Key(..)", "never printed");
}

/// One entry for other modules' tests: an established connection from client `n`.
pub(crate) fn sample_entry(n: u8) -> Entry {
    Entry {
        proto: 6,
        state: State::Established,
        template: None,
        client: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, n), 40_000).into(),
        vip: "10.77.100.100:80".parse().unwrap(),
        server: "10.77.1.1:8080".parse().unwrap(),
        expires_in: 900,
    }
}

#[test]
fn messages_that_leave_the_window_untaken_are_counted_lost() {
    let h = |seq| Header {
        kind: Kind::Heartbeat,
        sender: 3,
        epoch: 20,
        seq,
    };
    let mut w = ReplayWindow::default();
    for seq in [5, 6, 8] {
        w.accept(&h(seq)).unwrap();
    }
    assert_eq!(w.lost(), 0, "7 may still come");
    // 104: 5..=8 leave the window (7 never came), and 9..=40 are jumped past.
    w.accept(&h(104)).unwrap();
    assert_eq!(w.lost(), 1 + 32);
    // Late, within the window: taken, not lost.
    w.accept(&h(50)).unwrap();
    // 204: 41..=104 leave; 50 and 104 were taken; 105..=140 jumped past.
    w.accept(&h(204)).unwrap();
    assert_eq!(w.lost(), 33 + 62 + 36);
    // A restart of the sender (a higher epoch) starts afresh: nothing before its first is
    // lost.
    w.accept(&Header {
        epoch: 21,
        ..h(1000)
    })
    .unwrap();
    w.accept(&Header {
        epoch: 21,
        ..h(1001)
    })
    .unwrap();
    assert_eq!(w.lost(), 131);
    // In order, nothing is lost, however long it runs.
    for seq in 1002..1300 {
        w.accept(&Header {
            epoch: 21,
            ..h(seq)
        })
        .unwrap();
    }
    assert_eq!(w.lost(), 131);
}

fn templates(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            proto: if i % 2 == 1 { 17 } else { 6 },
            state: State::None,
            template: Some(0x8000_0000_0000_0000 | (i as u64) << 8),
            client: Entry::NO_CLIENT,
            vip: SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 100), 80 + i as u16).into(),
            server: SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1 + (i % 3) as u8), 8080).into(),
            expires_in: 300 + i as u32,
        })
        .collect()
}

#[test]
fn templates_round_trip_in_their_own_messages() {
    let h = Header {
        kind: Kind::Templates,
        ..header(4)
    };
    for n in [1, MAX_ENTRIES] {
        let mut m = Vec::new();
        encode(&key(), &h, &templates(n), &mut m);
        assert_eq!(m.len(), HEADER_LEN + n * ENTRY_LEN + MAC_LEN);
        assert_eq!(decode(&key(), &m), Ok((h, templates(n))));
    }
    assert_eq!(templates(1)[0].kind(), Kind::Templates);
    assert_eq!(entries(1)[0].kind(), Kind::Entries);
    // Signed, yet wrong: refused by field. A connection in a templates message is one of
    // them (its flags are 0).
    let resign = |m: Vec<u8>| sign_for_tests(&key(), &m[..m.len() - MAC_LEN]);
    let at = |field: usize| HEADER_LEN + field;
    for (what, edit, want) in [
        ("protocol 1", (at(0), 1), Reject::Entry),
        ("a state", (at(1), State::Established as u8), Reject::Entry),
        ("not flagged a template", (at(2), 0), Reject::Entry),
        ("flags 3", (at(2), 3), Reject::Entry),
        ("IPv6", (at(3), 6), Reject::Entry),
        ("kind 8", (5, 8), Reject::Header),
        // An IPv6 kind's entries are 64 bytes: 28 are not one.
        ("kind 7", (5, 7), Reject::Length),
    ] {
        let mut m = Vec::new();
        encode(&key(), &h, &templates(1), &mut m);
        m[edit.0] = edit.1;
        assert_eq!(decode(&key(), &resign(m)), Err(want), "{what}");
    }
    let mut m = Vec::new();
    encode(&key(), &h, &templates(1), &mut m);
    m[at(4)] ^= 0x80;
    let (_, back) = decode(&key(), &resign(m)).unwrap();
    assert_eq!(back[0].template, Some(0), "the key's 8 bytes are the key");
}

/// IPv6 connections of both protocols, and one whose realserver is IPv4 (a tunnel across
/// families).
fn entries6(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let udp = i % 3 == 2;
            let client = SocketAddrV6::new(
                Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, (i >> 8) as u16, i as u16),
                40_000 + i as u16,
                0,
                0,
            );
            let server: SocketAddr = if i % 4 == 3 {
                SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 3), 0).into()
            } else {
                "[fd77:1::1]:8080".parse().unwrap()
            };
            Entry {
                proto: if udp { 17 } else { 6 },
                state: if udp { State::Udp } else { State::FinWait },
                template: None,
                client: client.into(),
                vip: "[fd77:100::100]:80".parse().unwrap(),
                server,
                expires_in: 60 + i as u32,
            }
        })
        .collect()
}

#[test]
fn ipv6_connections_and_templates_round_trip_in_their_own_messages() {
    assert_eq!(MAX_ENTRIES6, 22);
    let h = Header {
        kind: Kind::Entries6,
        ..header(5)
    };
    for n in [1, 4, MAX_ENTRIES6] {
        let e = entries6(n);
        assert!(e.iter().all(|e| e.kind() == Kind::Entries6));
        let mut m = Vec::new();
        encode(&key(), &h, &e, &mut m);
        assert_eq!(m.len(), HEADER_LEN + n * ENTRY6_LEN + MAC_LEN);
        assert!(m.len() <= MAX_MESSAGE);
        assert_eq!(decode(&key(), &m), Ok((h, e)));
    }
    // The IPv4 realserver is written IPv4-mapped, and comes back IPv4.
    let mut m = Vec::new();
    encode(&key(), &h, &entries6(4)[3..], &mut m);
    let server = &m[HEADER_LEN + 40..HEADER_LEN + 58];
    assert_eq!(
        server[..16],
        Ipv4Addr::new(10, 77, 1, 3).to_ipv6_mapped().octets()
    );
    // A template of an IPv6 service.
    let t = Entry {
        proto: 6,
        state: State::None,
        template: Some(0xfd77_0000_0000_0010),
        client: Entry::NO_CLIENT,
        vip: "[fd77:100::100]:443".parse().unwrap(),
        server: "[fd77:1::2]:443".parse().unwrap(),
        expires_in: 360,
    };
    assert_eq!(t.kind(), Kind::Templates6);
    let ht = Header {
        kind: Kind::Templates6,
        ..header(6)
    };
    let mut m = Vec::new();
    encode(&key(), &ht, &[t; MAX_ENTRIES6], &mut m);
    assert_eq!(decode(&key(), &m), Ok((ht, vec![t; MAX_ENTRIES6])));

    // Signed, yet wrong: refused by field or by length, never misread.
    let resign = |m: Vec<u8>| sign_for_tests(&key(), &m[..m.len() - MAC_LEN]);
    let at = |field: usize| HEADER_LEN + field;
    for (what, edit, want) in [
        ("protocol 1", (at(0), 1), Reject::Entry),
        ("UDP in a TCP state", (at(0), 17), Reject::Entry),
        ("flags 1", (at(2), 1), Reject::Entry),
        ("address family 4", (at(3), 4), Reject::Entry),
        ("the padding", (at(59), 1), Reject::Entry),
        // The client IPv4-mapped, the virtual address not: two families.
        ("client IPv4-mapped", (at(4 + 10), 0xff), Reject::Entry),
        ("IPv4 entries' kind", (5, 1), Reject::Length),
        // Every address IPv4(-mapped): an IPv4 entry, which has its own kind.
        ("all IPv4", (at(22 + 10), 0xff), Reject::Entry),
        ("templates' kind", (5, 7), Reject::Entry),
    ] {
        let mut m = Vec::new();
        encode(&key(), &h, &entries6(1), &mut m);
        m[edit.0] = edit.1;
        let mapped = |m: &mut Vec<u8>, field: usize| {
            m[at(field)..at(field + 10)].fill(0);
            m[at(field + 10)..at(field + 12)].fill(0xff);
        };
        if what == "client IPv4-mapped" {
            mapped(&mut m, 4);
        }
        if what == "all IPv4" {
            // entries6(1)'s realserver is IPv6: make all three mapped.
            for field in [4, 22, 40] {
                mapped(&mut m, field);
            }
        }
        assert_eq!(decode(&key(), &resign(m)), Err(want), "{what}");
    }
    let mut m = Vec::new();
    encode(&key(), &h, &entries6(1), &mut m);
    let mut many = m.clone();
    many[6..8].copy_from_slice(&(MAX_ENTRIES6 as u16 + 1).to_be_bytes());
    assert_eq!(decode(&key(), &many), Err(Reject::Oversized));
    let mut m2 = Vec::new();
    encode(&key(), &ht, &[t], &mut m2);
    m2[at(48)] = 1;
    assert_eq!(
        decode(&key(), &resign(m2)),
        Err(Reject::Entry),
        "template padding"
    );
}
