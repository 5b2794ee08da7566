use super::*;
use crate::wire::test_util::{packets, Rng};
use crate::wire::{checksum, ip_proto};
use core::hint::black_box;

/// The transport checksum of a v6 packet whose upper layer starts at `at` verifies.
fn transport_ok(p: &[u8], at: usize) -> bool {
    let ip = Ipv6Packet::new_checked(p).unwrap();
    let l4 = &p[at..HEADER_LEN + usize::from(ip.payload_len())];
    let up = ip.upper_layer().unwrap();
    let pseudo =
        checksum::pseudo_header_for(ip.src_addr(), ip.dst_addr(), up.protocol, l4.len() as u32);
    checksum::combine(&[pseudo, checksum::data(l4)]) == 0xFFFF
}

#[test]
fn captured_packets_read_back() {
    let p = Ipv6Packet::new_checked(&packets::SYN6[..]).unwrap();
    assert_eq!(p.version(), 6);
    assert_eq!((p.traffic_class(), p.flow_label()), (0, 0xfff2c));
    assert_eq!(
        (p.payload_len(), p.next_header(), p.hop_limit()),
        (40, ip_proto::TCP, 64)
    );
    assert_eq!(p.src_addr(), "fd77::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(p.dst_addr(), "fd77::1".parse::<Ipv6Addr>().unwrap());
    let up = p.upper_layer().unwrap();
    assert_eq!(
        up,
        UpperLayer {
            protocol: ip_proto::TCP,
            offset: 40,
            fragment: None,
            ext_headers: 0
        }
    );
    assert!(transport_ok(&packets::SYN6, 40));
    assert!(transport_ok(&packets::UDP6, 40));
    let u = Ipv6Packet::new_checked(&packets::UDP6[..]).unwrap();
    assert_eq!(&u.payload()[8..], b"hello");
    // Hop-by-Hop (Router Alert) before ICMPv6.
    let m = Ipv6Packet::new_checked(&packets::MLD6[..]).unwrap();
    let up = m.upper_layer().unwrap();
    assert_eq!(
        (up.protocol, up.offset, up.ext_headers),
        (ip_proto::ICMPV6, 48, 1)
    );
    assert!(transport_ok(&packets::MLD6, 48));
    // An ICMPv6 error quotes the datagram whole: a packet of its own at offset 48.
    let e = Ipv6Packet::new_checked(&packets::PORT_UNREACH6[..]).unwrap();
    assert_eq!(e.upper_layer().unwrap().protocol, ip_proto::ICMPV6);
    assert_eq!(
        e.payload()[..2],
        [1, 4],
        "destination unreachable, port unreachable"
    );
    assert!(transport_ok(&packets::PORT_UNREACH6, 40));
    assert_eq!(e.payload()[8..], packets::UDP6[..]);
}

#[test]
fn repr_round_trips_and_padding_is_not_payload() {
    let p = Ipv6Packet::new_checked(&packets::SYN6[..]).unwrap();
    let r = Ipv6Repr::parse(&p).unwrap();
    let mut buf = [0u8; 40];
    r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf[..], packets::SYN6[..40]);
    let mut padded = packets::UDP6.to_vec();
    padded.extend_from_slice(&[0; 11]);
    let q = Ipv6Packet::new_checked(&padded[..]).unwrap();
    assert_eq!(q.payload().len(), 13);
}

#[test]
fn bad_fixed_headers_are_refused() {
    assert_eq!(
        Ipv6Packet::new_checked(&packets::SYN6[..39]).err(),
        Some(Error)
    );
    assert_eq!(
        Ipv6Packet::new_checked(&packets::SYN6[..79]).err(),
        Some(Error),
        "payload cut"
    );
    let mut v4 = packets::SYN6;
    v4[0] = 0x40;
    assert_eq!(Ipv6Packet::new_checked(&v4[..]).err(), Some(Error));
    let mut long = packets::SYN6;
    long[4..6].copy_from_slice(&41u16.to_be_bytes());
    assert_eq!(Ipv6Packet::new_checked(&long[..]).err(), Some(Error));
}

/// A packet from [fd77::2] to [fd77::1] whose payload is `headers` (each `(next header of
/// the header before it, bytes)`) and 8 bytes of UDP.
fn chain(first: u8, headers: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = headers.concat();
    let mut p = vec![0u8; HEADER_LEN + body.len() + 8];
    Ipv6Repr {
        src_addr: "fd77::2".parse().unwrap(),
        dst_addr: "fd77::1".parse().unwrap(),
        next_header: first,
        hop_limit: 64,
        payload_len: body.len() + 8,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
    p[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(&body);
    p
}

fn walk(p: &[u8]) -> core::result::Result<UpperLayer, ExtError> {
    Ipv6Packet::new_checked(p).unwrap().upper_layer()
}

const UDP: u8 = ip_proto::UDP;
/// An 8-byte Destination options header (PadN), then `next`.
fn dest_opts(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

#[test]
fn extension_chains_are_walked_to_the_upper_layer() {
    let frag = [ext::ROUTING, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]; // offset 0, M
    let routing = [UDP, 0, 0, 0, 0, 0, 0, 0]; // type 0, segments left 0
    let ah = [ext::FRAGMENT, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]; // (1 + 2) × 4 = 12 bytes
    let p = chain(ext::DEST_OPTS, &[&dest_opts(ext::AH), &ah, &frag, &routing]);
    let up = walk(&p).unwrap();
    assert_eq!(
        (up.protocol, up.offset, up.ext_headers),
        (UDP, 40 + 8 + 12 + 8 + 8, 4)
    );
    assert_eq!(
        up.fragment,
        Some(Fragment {
            offset: 0,
            more: true,
            ident: 0xdeadbeef
        })
    );
    // An Authentication header too short for its own fixed fields (8 bytes: length 0).
    let short_ah = [UDP, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(
        walk(&chain(ext::AH, &[&short_ah])),
        Err(ExtError::Truncated)
    );
    // A later fragment: no upper-layer header; the walk stops at its data.
    let later = [UDP, 0, 0x05, 0xa8, 0, 0, 0, 7]; // offset 1448, last
    let up = walk(&chain(ext::FRAGMENT, &[&later])).unwrap();
    assert_eq!((up.protocol, up.offset), (UDP, 48));
    assert_eq!(up.fragment.map(|f| (f.offset, f.more)), Some((1448, false)));
    // ESP and No Next Header end the walk as upper layers.
    assert_eq!(walk(&chain(ext::ESP, &[])).unwrap().protocol, ext::ESP);
    assert_eq!(
        walk(&chain(ext::DEST_OPTS, &[&dest_opts(ext::NO_NEXT)]))
            .unwrap()
            .protocol,
        ext::NO_NEXT
    );
    // Pad1 options, and exactly the most headers allowed.
    let pad1 = [ext::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
    let mut many: Vec<&[u8]> = vec![&pad1; MAX_EXT_HEADERS - 1];
    let last = dest_opts(UDP);
    many.push(&last);
    assert_eq!(
        walk(&chain(ext::DEST_OPTS, &many)).unwrap().ext_headers,
        MAX_EXT_HEADERS
    );
}

#[test]
fn each_bad_chain_is_refused_by_its_rule() {
    let opts = dest_opts(UDP);
    let hbh_second = [ext::HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0];
    let pad1 = [ext::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
    let too_many: Vec<&[u8]> = vec![&pad1; MAX_EXT_HEADERS + 1];
    let jumbo = [UDP, 0, 0xC2, 4, 0, 1, 0, 0];
    let opt_past = [UDP, 0, 1, 9, 0, 0, 0, 0]; // PadN of 9 bytes in a 6-byte space
    let opt_cut = [UDP, 0, 0, 0, 0, 0, 0, 1]; // a last option with no length byte
    let routed = [UDP, 0, 0, 2, 0, 0, 0, 0];
    let long = [UDP, 4, 1, 4, 0, 0, 0, 0]; // (4 + 1) × 8 = 40 bytes, 16 there
    for (what, p, want) in [
        (
            "Hop-by-Hop second",
            chain(ext::DEST_OPTS, &[&hbh_second, &opts]),
            ExtError::Misplaced,
        ),
        (
            "nine headers",
            chain(ext::DEST_OPTS, &too_many),
            ExtError::TooMany,
        ),
        (
            "a jumbo option",
            chain(ext::HOP_BY_HOP, &[&jumbo]),
            ExtError::Jumbo,
        ),
        (
            "an option past its header",
            chain(ext::DEST_OPTS, &[&opt_past]),
            ExtError::Truncated,
        ),
        (
            "an option cut short",
            chain(ext::DEST_OPTS, &[&opt_cut]),
            ExtError::Truncated,
        ),
        (
            "segments left",
            chain(ext::ROUTING, &[&routed]),
            ExtError::SourceRouted,
        ),
        (
            "a header past the payload",
            chain(ext::DEST_OPTS, &[&long]),
            ExtError::Truncated,
        ),
        (
            "a next header with no bytes",
            chain(ext::DEST_OPTS, &[&dest_opts(ext::FRAGMENT)])[..48].to_vec(),
            ExtError::Truncated,
        ),
    ] {
        let mut p = p;
        let pl = (p.len() - HEADER_LEN) as u16;
        p[4..6].copy_from_slice(&pl.to_be_bytes());
        assert_eq!(walk(&p), Err(want), "{what}");
    }
}

/// Random bytes, then random setters: no accessor or walk ever panics.
#[test]
fn no_input_panics() {
    let mut rng = Rng::new(0x1776);
    let mut buf = [0u8; 160];
    for i in 0..200_000 {
        let len = rng.index(buf.len() + 1);
        for b in buf.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        buf[0] = 0x60 | (buf[0] & 0x0f);
        // Mostly consistent lengths, and chains of extension headers.
        if len >= HEADER_LEN && i % 2 == 0 {
            buf[4..6].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
            const EXT: [u8; 8] = [0, 43, 44, 50, 51, 59, 60, 6];
            buf[6] = EXT[rng.index(8)];
            for k in (HEADER_LEN..len).step_by(8) {
                if rng.below(2) == 0 {
                    buf[k] = EXT[rng.index(8)];
                    buf[k + 1] %= 4;
                }
            }
        }
        let Ok(mut p) = Ipv6Packet::new_checked(&mut buf[..len]) else {
            continue;
        };
        read(&p);
        for _ in 0..4 {
            let r = rng.next_u64();
            match r % 8 {
                0 => p.set_version_tc_flow(6, (r >> 8) as u8, (r >> 16) as u32),
                1 => p.set_payload_len((r >> 8) as u16),
                2 => p.set_next_header((r >> 8) as u8),
                3 => p.set_hop_limit((r >> 8) as u8),
                4 => p.set_src_addr(Ipv6Addr::from((r as u128) << 64 | r as u128)),
                5 => p.set_dst_addr(Ipv6Addr::from(r as u128)),
                6 => p.payload_mut().fill(r as u8),
                _ => {
                    if let Ok(repr) = Ipv6Repr::parse(&p) {
                        repr.emit(&mut p);
                    }
                }
            }
            read(&p);
        }
    }
}

fn read<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) {
    black_box((
        p.version(),
        p.traffic_class(),
        p.flow_label(),
        p.payload_len(),
    ));
    black_box((p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr()));
    let _ = black_box((p.payload(), p.upper_layer()));
    let _ = black_box(Ipv6Repr::parse(p));
}

/// NAT66 of a captured SYN: the destination address and port rewritten as LVS-NAT does, the
/// TCP checksum (complete, then partial as virtio-net hands it over) updated incrementally
/// through the 128-bit pseudo-header, and equal to a fresh computation.
#[test]
fn nat66_rewrites_keep_transport_checksums() {
    use crate::wire::{TcpPacket, UdpPacket};
    let rip: Ipv6Addr = "fd77:1::5".parse().unwrap();
    for partial in [false, true] {
        let mut buf = packets::SYN6;
        let len = buf.len() - HEADER_LEN;
        if partial {
            // The field as a sender with checksum offload leaves it: the pseudo-header sum.
            let ip = Ipv6Packet::new_checked(&buf[..]).unwrap();
            let p = checksum::pseudo_header_for(
                ip.src_addr(),
                ip.dst_addr(),
                ip_proto::TCP,
                len as u32,
            );
            buf[HEADER_LEN + 16..HEADER_LEN + 18].copy_from_slice(&p.to_be_bytes());
        }
        let mut ip = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        let vip = ip.rewrite_dst_addr(rip);
        assert_eq!(vip, "fd77::1".parse::<Ipv6Addr>().unwrap());
        let src = ip.src_addr();
        let mut tcp = TcpPacket::new_checked(ip.payload_mut()).unwrap();
        tcp.update_checksum_for_addr(vip, rip, partial);
        assert_eq!(tcp.rewrite_dst_port(8080, partial), 80);
        if partial {
            let fresh = checksum::pseudo_header_for(src, rip, ip_proto::TCP, len as u32);
            assert_eq!(tcp.checksum(), fresh);
        } else {
            assert!(tcp.verify_checksum(src, rip));
            assert!(!tcp.verify_checksum(src, vip));
        }
        assert_eq!(ip.dst_addr(), rip);
        assert!(transport_ok(&buf, HEADER_LEN) != partial);
    }

    let mut buf = packets::UDP6;
    let mut ip = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
    let client = ip.rewrite_src_addr(rip);
    let dst = ip.dst_addr();
    let mut udp = UdpPacket::new_checked(ip.payload_mut()).unwrap();
    udp.update_checksum_for_addr(client, rip, false);
    assert!(udp.verify_checksum(rip, dst));
    // Over IPv6 a zero UDP checksum is not "none" (RFC 8200 §8.1); over IPv4 it is.
    udp.set_checksum(0);
    assert!(!udp.verify_checksum(rip, dst));
    assert!(udp.verify_checksum(
        core::net::Ipv4Addr::new(10, 0, 0, 1),
        core::net::Ipv4Addr::new(10, 0, 0, 2)
    ));
    // fill_checksum over IPv6 never leaves 0.
    udp.fill_checksum(rip, dst);
    assert!(udp.verify_checksum(rip, dst));
}
