use super::*;
use crate::wire::ipv6::HEADER_LEN as IPV6_HEADER_LEN;
use crate::wire::test_util::packets;
use crate::wire::{Ipv6Packet, L4Ports, UdpPacket};

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The ICMPv6 message of a captured packet, checked to be one, with its addresses.
fn message(p: &[u8]) -> (Icmpv6Packet<&[u8]>, Ipv6Addr, Ipv6Addr) {
    let ip = Ipv6Packet::new_checked(p).unwrap();
    let up = ip.upper_layer().unwrap();
    assert_eq!(up.protocol, ip_proto::ICMPV6);
    let icmp = Icmpv6Packet::new_checked(&p[up.offset..]).unwrap();
    (icmp, ip.src_addr(), ip.dst_addr())
}

#[test]
fn linux_neighbour_solicitation() {
    let (ns, src, dst) = message(&packets::NS6);
    assert_eq!((ns.msg_type(), ns.code()), (msg_type::NEIGHBOR_SOLICIT, 0));
    assert!(!ns.is_error());
    assert!(ns.verify_checksum(src, dst));
    assert!(!ns.verify_checksum(src, v6("ff02::1:ff00:2")));
    assert_eq!(ns.nd_target(), Some(v6("fd77::1")));
    assert_eq!(dst, solicited_node(v6("fd77::1")));
    assert_eq!(multicast_mac(dst), [0x33, 0x33, 0xff, 0x00, 0x00, 0x01]);
    let mac = [0xa6, 0x76, 0x79, 0xc1, 0x23, 0x7a];
    assert_eq!(ns.nd_link_addr(nd_option::SOURCE_LL_ADDR), Ok(Some(mac)));
    assert_eq!(ns.nd_link_addr(nd_option::TARGET_LL_ADDR), Ok(None));
    let repr = NdRepr::parse(&ns).unwrap();
    assert_eq!(
        repr,
        NdRepr::Solicit {
            target: v6("fd77::1"),
            source_mac: Some(mac)
        }
    );
    // Emitted again, byte for byte what Linux sent.
    let mut buf = [0xEEu8; 40];
    assert_eq!(repr.emit(&mut buf, src, dst), Ok(32));
    assert_eq!(buf[..32], packets::NS6[IPV6_HEADER_LEN..]);
    assert_eq!(buf[32..], [0xEE; 8], "past the message: untouched");
}

#[test]
fn linux_neighbour_advertisement() {
    let (na, src, dst) = message(&packets::NA6);
    assert_eq!(na.msg_type(), msg_type::NEIGHBOR_ADVERT);
    assert!(na.verify_checksum(src, dst));
    let flags = nd_flags::ROUTER | nd_flags::SOLICITED | nd_flags::OVERRIDE;
    assert_eq!(na.nd_flags(), flags);
    let mac = [0x06, 0x71, 0xfe, 0xbd, 0x73, 0x13];
    let repr = NdRepr::parse(&na).unwrap();
    assert_eq!(
        repr,
        NdRepr::Advert {
            flags,
            target: v6("fd77::1"),
            target_mac: Some(mac)
        }
    );
    let mut buf = [0u8; 32];
    assert_eq!(repr.emit(&mut buf, src, dst), Ok(32));
    assert_eq!(buf, packets::NA6[IPV6_HEADER_LEN..]);
    assert_eq!(repr.emit(&mut buf[..31], src, dst), Err(Error));
    // Without the option: 24 bytes, and it parses back the same.
    let bare = NdRepr::Advert {
        flags: nd_flags::SOLICITED,
        target: v6("fd77::9"),
        target_mac: None,
    };
    assert_eq!(bare.buffer_len(), 24);
    assert_eq!(bare.emit(&mut buf, src, dst), Ok(24));
    let p = Icmpv6Packet::new_checked(&buf[..24]).unwrap();
    assert!(p.verify_checksum(src, dst));
    assert_eq!(NdRepr::parse(&p), Ok(bare));
}

#[test]
fn linux_packet_too_big_quotes_a_cut_packet() {
    let (ptb, src, dst) = message(packets::PACKET_TOO_BIG6);
    assert_eq!(packets::PACKET_TOO_BIG6.len(), MIN_MTU);
    assert_eq!((ptb.msg_type(), ptb.code()), (msg_type::PACKET_TOO_BIG, 0));
    assert!(ptb.is_error());
    assert_eq!(ptb.mtu(), 1280);
    assert!(ptb.verify_checksum(src, dst));
    assert_eq!(ptb.nd_target(), None);
    assert_eq!(ptb.nd_link_addr(nd_option::SOURCE_LL_ADDR), Err(Error));
    let quoted = ptb.into_payload();
    assert_eq!(Ipv6Packet::new_checked(quoted), Err(Error), "cut short");
    let inner = Ipv6Packet::new_checked_quoted(quoted).unwrap();
    assert_eq!(inner.payload_len(), 1408);
    assert_eq!(inner.payload().len(), quoted.len() - IPV6_HEADER_LEN);
    assert_eq!((inner.src_addr(), inner.dst_addr()), (dst, v6("fd77:1::2")));
    let up = inner.upper_layer().unwrap();
    assert_eq!((up.protocol, up.offset), (ip_proto::UDP, IPV6_HEADER_LEN));
    let ports = L4Ports::new_checked(inner.payload()).unwrap();
    assert_eq!((ports.src_port(), ports.dst_port()), (0xd87c, 9));
    assert_eq!(UdpPacket::new_checked(inner.payload()), Err(Error));
    // Not IPv6, or not a whole fixed header: refused.
    assert_eq!(Ipv6Packet::new_checked_quoted(&quoted[..39]), Err(Error));
    let mut v4 = [0u8; 40];
    v4[0] = 0x45;
    assert_eq!(Ipv6Packet::new_checked_quoted(&v4[..]), Err(Error));
}

#[test]
fn linux_port_unreachable_and_a_translated_copy() {
    let (pu, src, dst) = message(&packets::PORT_UNREACH6);
    assert_eq!(
        (pu.msg_type(), pu.code()),
        (msg_type::DEST_UNREACHABLE, unreach_code::PORT_UNREACHABLE)
    );
    assert!(pu.verify_checksum(src, dst));
    // NAT66 of the error's destination: the checksum follows the pseudo-header.
    let mut buf = packets::PORT_UNREACH6;
    let (new_dst, at) = (v6("2001:db8::77"), IPV6_HEADER_LEN);
    let mut icmp = Icmpv6Packet::new_checked(&mut buf[at..]).unwrap();
    icmp.update_checksum_for_addr(dst, new_dst);
    assert!(icmp.verify_checksum(src, new_dst));
    assert!(!icmp.verify_checksum(src, dst));
    icmp.fill_checksum(src, new_dst);
    assert_eq!(
        icmp.checksum(),
        Icmpv6Packet::new_unchecked(&buf[at..]).checksum()
    );
    // One byte of the quote changed: the checksum no longer holds.
    let mut bad = packets::PORT_UNREACH6;
    bad[100] ^= 1;
    assert!(!Icmpv6Packet::new_checked(&bad[at..])
        .unwrap()
        .verify_checksum(src, dst));
}

#[test]
fn echo_fields_and_setters() {
    let (a, b) = (v6("fd77::2"), v6("fd77::1"));
    let mut buf = [0u8; 12];
    buf[8..].copy_from_slice(b"ping");
    let mut p = Icmpv6Packet::new_checked(&mut buf[..]).unwrap();
    p.set_msg_type(msg_type::ECHO_REQUEST);
    p.set_code(0);
    p.set_echo_ident(0x1f2e);
    p.set_echo_seq(7);
    p.fill_checksum(a, b);
    assert!(!p.is_error());
    assert!(p.verify_checksum(a, b));
    assert_eq!(p.rest_of_header(), 0x1f2e_0007);
    assert_eq!((p.echo_ident(), p.echo_seq()), (0x1f2e, 7));
    p.set_rest_of_header(1500);
    assert_eq!((p.mtu(), p.pointer()), (1500, 1500));
    assert_eq!(p.payload(), b"ping");
    p.payload_mut()[0] = b'P';
    assert!(!p.verify_checksum(a, b));
}

/// An NS with `options` after the target.
fn ns_with(options: &[u8]) -> Vec<u8> {
    let mut m = packets::NS6[IPV6_HEADER_LEN..field::ND_OPTIONS + IPV6_HEADER_LEN].to_vec();
    m.extend_from_slice(options);
    m
}

#[test]
fn neighbour_discovery_options_by_rule() {
    let mac = [1, 2, 3, 4, 5, 6];
    let lladdr = |kind: u8| [kind, 1, 1, 2, 3, 4, 5, 6];
    // Unknown options are skipped; the first Ethernet address of the kind wins.
    let mut o = vec![14, 1, 0, 0, 0, 0, 0, 0]; // a nonce option
    o.extend_from_slice(&lladdr(1));
    o.extend_from_slice(&[1, 1, 9, 9, 9, 9, 9, 9]);
    let m = ns_with(&o);
    let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
    assert_eq!(p.nd_link_addr(nd_option::SOURCE_LL_ADDR), Ok(Some(mac)));
    // An address of another link layer's length (16 bytes) is not an Ethernet address.
    let m = ns_with(&[1, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
    assert_eq!(p.nd_link_addr(nd_option::SOURCE_LL_ADDR), Ok(None));
    // Length 0 (would loop for ever), one past the end, a lone type byte: malformed.
    for bad in [
        &[1u8, 0, 1, 2, 3, 4, 5, 6][..],
        &[1, 2, 1, 2, 3, 4, 5, 6],
        &[1],
    ] {
        let mut o = lladdr(2).to_vec();
        o.extend_from_slice(bad);
        let m = ns_with(&o);
        let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
        assert_eq!(
            p.nd_link_addr(nd_option::TARGET_LL_ADDR),
            Err(Error),
            "{bad:?}"
        );
        assert_eq!(NdRepr::parse(&p), Err(Error));
    }
    // No target: too short, another type, a non-zero code.
    let m = ns_with(&[]);
    assert_eq!(
        Icmpv6Packet::new_checked(&m[..23]).unwrap().nd_target(),
        None
    );
    let mut m = ns_with(&lladdr(1));
    m[0] = msg_type::ECHO_REQUEST;
    let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
    assert_eq!((p.nd_target(), NdRepr::parse(&p)), (None, Err(Error)));
    let mut m = ns_with(&lladdr(1));
    m[1] = 1;
    assert_eq!(
        NdRepr::parse(&Icmpv6Packet::new_checked(&m[..]).unwrap()),
        Err(Error)
    );
}

#[test]
fn truncation() {
    let msg = &packets::PORT_UNREACH6[IPV6_HEADER_LEN..];
    let (src, dst) = (v6("fd77::1"), v6("fd77::2"));
    for n in 0..=msg.len() {
        match Icmpv6Packet::new_checked(&msg[..n]) {
            Ok(p) => {
                assert!(n >= HEADER_LEN);
                assert!(p.is_error());
                assert_eq!(p.payload(), &msg[HEADER_LEN..n]);
                assert_eq!(p.verify_checksum(src, dst), n == msg.len());
                assert_eq!(p.nd_target(), None);
            }
            Err(Error) => assert!(n < HEADER_LEN),
        }
    }
}

#[test]
fn solicited_node_groups() {
    assert_eq!(
        solicited_node(v6("2001:db8::1234:5678")),
        v6("ff02::1:ff34:5678")
    );
    assert_eq!(
        solicited_node(v6("fe80::9896:1ff:fe1f:7e9c")),
        v6("ff02::1:ff1f:7e9c")
    );
    assert_eq!(multicast_mac(v6("ff02::16")), [0x33, 0x33, 0, 0, 0, 0x16]);
}
