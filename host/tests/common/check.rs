#![allow(dead_code)]

//! Checks of what the data plane emits, shared by the packet corpus test (`tests/corpus.rs`)
//! and the coverage-guided fuzz targets (`fuzz/`, which includes this file by path): our
//! wire layer's checksum verdicts, an independent parser's (etherparse) that must agree, and
//! the table's accounting against the realservers' counts.

use ringvs::conn::State;
use ringvs::control::registry::Registry;
use ringvs::dataplane::Shard;
use ringvs::wire::{
    ip_proto, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// Checksum validity of a packet: the IPv4 header, the transport or ICMP checksum (when the
/// header parses), and the header an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sums {
    pub ip: bool,
    pub l4: Option<bool>,
    pub quoted_ip: Option<bool>,
}

pub fn sums(p: &[u8]) -> Option<Sums> {
    if p.first().is_some_and(|b| b >> 4 == 6) {
        return sums6(p);
    }
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (ihl, total) = (ip.header_len(), ip.total_len() as usize);
    let seg = &p[ihl..total];
    let mut s = Sums {
        ip: ip.verify_checksum(),
        l4: None,
        quoted_ip: None,
    };
    if ip.is_fragment() {
        return Some(s);
    }
    match ip.protocol() {
        ip_proto::TCP => {
            s.l4 = TcpPacket::new_checked(seg)
                .ok()
                .map(|t| t.verify_checksum(src, dst));
        }
        ip_proto::UDP => {
            // An absent checksum (0) counts as not valid: one that was present must stay so.
            s.l4 = UdpPacket::new_checked(seg)
                .ok()
                .map(|u| u.checksum() != 0 && u.verify_checksum(src, dst));
        }
        ip_proto::ICMP => {
            if let Ok(m) = Icmpv4Packet::new_checked(seg) {
                s.l4 = Some(m.verify_checksum());
                if m.is_error() {
                    s.quoted_ip = Ipv4Packet::new_checked_quoted(m.payload())
                        .ok()
                        .map(|q| q.verify_checksum());
                }
            }
        }
        _ => {}
    }
    Some(s)
}

/// [`sums`] of an IPv6 packet: no header checksum (`ip` is true), the TCP, UDP or ICMPv6
/// checksum over the IPv6 pseudo-header after the extension headers (none for a fragment).
fn sums6(p: &[u8]) -> Option<Sums> {
    let ip = Ipv6Packet::new_checked(p).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let total = ringvs::wire::ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let mut s = Sums {
        ip: true,
        l4: None,
        quoted_ip: None,
    };
    let Ok(ul) = ip.upper_layer() else {
        return Some(s);
    };
    if ul.fragment.is_some() {
        return Some(s);
    }
    let seg = &p[ul.offset..total];
    s.l4 = match ul.protocol {
        ip_proto::TCP => TcpPacket::new_checked(seg)
            .ok()
            .map(|t| t.verify_checksum(src, dst)),
        ip_proto::UDP => UdpPacket::new_checked(seg)
            .ok()
            .map(|u| u.verify_checksum(src, dst)),
        ip_proto::ICMPV6 => Icmpv6Packet::new_checked(seg)
            .ok()
            .map(|m| m.verify_checksum(src, dst)),
        _ => None,
    };
    Some(s)
}

/// [`sums_etherparse`] of an IPv6 packet.
fn sums6_etherparse(p: &[u8]) -> Option<Sums> {
    use etherparse::{IpNumber, Ipv6Slice, TcpSlice, UdpSlice};
    let ip = Ipv6Slice::from_slice(p).ok()?;
    let (src, dst) = (
        ip.header().source_addr().octets(),
        ip.header().destination_addr().octets(),
    );
    let mut s = Sums {
        ip: true,
        l4: None,
        quoted_ip: None,
    };
    let pl = ip.payload();
    if pl.fragmented {
        return Some(s);
    }
    let seg = pl.payload;
    s.l4 = match pl.ip_number {
        IpNumber::TCP => TcpSlice::from_slice(seg)
            .ok()
            .map(|t| t.calc_checksum_ipv6(src, dst).ok() == Some(t.checksum())),
        IpNumber::UDP => UdpSlice::from_slice(seg).ok().map(|u| {
            u.checksum() != 0
                && u.to_header()
                    .calc_checksum_ipv6_raw(src, dst, u.payload())
                    .ok()
                    == Some(u.checksum())
        }),
        IpNumber::IPV6_ICMP => etherparse::Icmpv6Slice::from_slice(seg)
            .ok()
            .map(|m| m.is_checksum_valid(src, dst)),
        _ => None,
    };
    Some(s)
}

/// [`sums`] by another parser, written independently of ringvs's wire layer (etherparse):
/// the IPv4 header checksum, the TCP/UDP checksum over the pseudo-header, the ICMP checksum
/// and, in an ICMP error, the quoted IPv4 header's checksum. `None` if etherparse does not
/// take the packet as IPv4.
pub fn sums_etherparse(p: &[u8]) -> Option<Sums> {
    use etherparse::{IpNumber, Ipv4HeaderSlice, TcpSlice, UdpSlice};
    if p.first().is_some_and(|b| b >> 4 == 6) {
        return sums6_etherparse(p);
    }
    // Header checksums are summed over the header's bytes: etherparse's decoded header
    // drops the reserved flag bit, which the sum covers.
    let header_ok = |b: &[u8]| !fold(words(b)) == 0;
    // The header alone (etherparse's Ipv4Slice would also take an AH header apart, which
    // the director passes on as it is).
    let h = Ipv4HeaderSlice::from_slice(p).ok()?;
    let total = usize::from(h.total_len());
    let seg = p.get(h.slice().len()..total)?;
    let mut s = Sums {
        ip: header_ok(h.slice()),
        l4: None,
        quoted_ip: None,
    };
    if h.is_fragmenting_payload() {
        return Some(s);
    }
    let (src, dst) = (h.source(), h.destination());
    match h.protocol() {
        IpNumber::TCP => {
            s.l4 = TcpSlice::from_slice(seg)
                .ok()
                .map(|t| t.calc_checksum_ipv4(src, dst).ok() == Some(t.checksum()));
        }
        IpNumber::UDP => {
            s.l4 = UdpSlice::from_slice(seg).ok().map(|u| {
                u.checksum() != 0
                    && u.to_header()
                        .calc_checksum_ipv4_raw(src, dst, u.payload())
                        .ok()
                        == Some(u.checksum())
            });
        }
        IpNumber::ICMP => {
            // Any message of at least the 8-byte header (etherparse also refuses, say, a
            // timestamp message of the wrong length, which the director may pass on).
            if let Some(&ty) = seg.first().filter(|_| seg.len() >= 8) {
                // The checksum covers the whole message: the header's 8 bytes and the rest.
                s.l4 = Some(!fold(words(seg)) == 0);
                // Destination unreachable, source quench, redirect, time exceeded, parameter
                // problem: the quoted IPv4 header follows the 8 bytes.
                if matches!(ty, 3 | 4 | 5 | 11 | 12) {
                    s.quoted_ip = Ipv4HeaderSlice::from_slice(&seg[8..])
                        .ok()
                        .map(|q| header_ok(q.slice()));
                }
            }
        }
        _ => {}
    }
    Some(s)
}

/// `b` as big-endian 16-bit words (an odd last byte padded with 0).
fn words(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
}

/// One's-complement sum of 16-bit words, folded.
fn fold(words: impl Iterator<Item = u32>) -> u16 {
    let mut sum: u32 = words.sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A forwarded packet is well-formed IPv4 or IPv6, and every checksum valid on the way in is valid
/// on the way out; etherparse parses it too and agrees with every checksum verdict.
pub fn check_forwarded(what: &str, input: &[u8], output: &[u8]) {
    let after = check_emitted(what, output);
    let Some(before) = sums(input) else {
        panic!("{what}: a packet that is not well-formed IPv4 or IPv6 was forwarded: {input:02x?}");
    };
    assert!(
        !before.ip || after.ip,
        "{what}: IPv4 header checksum broken: {input:02x?} -> {output:02x?}"
    );
    assert!(
        before.l4 != Some(true) || after.l4 == Some(true),
        "{what}: transport/ICMP checksum broken: {input:02x?} -> {output:02x?}"
    );
    assert!(
        before.quoted_ip != Some(true) || after.quoted_ip == Some(true),
        "{what}: quoted IPv4 header checksum broken: {input:02x?} -> {output:02x?}"
    );
}

/// A packet the data plane emits is well-formed IPv4 or IPv6 that etherparse parses too, agreeing
/// with every checksum verdict of ours; returns our verdicts.
pub fn check_emitted(what: &str, output: &[u8]) -> Sums {
    let Some(after) = sums(output) else {
        panic!("{what}: forwarded packet is not well-formed IPv4 or IPv6: {output:02x?}");
    };
    // etherparse walks on through the headers after a later fragment's Fragment header,
    // where RFC 8200 §4.5 has fragment data (which the director passes on): there, ours only.
    let later_fragment = Ipv6Packet::new_checked(output)
        .ok()
        .and_then(|ip| ip.upper_layer().ok())
        .and_then(|ul| ul.fragment)
        .is_some_and(|f| f.offset != 0);
    let theirs = match sums_etherparse(output) {
        Some(t) => t,
        None if later_fragment => after,
        None => {
            panic!("{what}: etherparse does not parse the forwarded packet as IP: {output:02x?}")
        }
    };
    // Every verdict both parsers reach must agree (they differ in what malformed quoted
    // headers and odd ICMP lengths they still take apart: then only one has a verdict).
    let agree = |a: Option<bool>, b: Option<bool>| a.zip(b).is_none_or(|(a, b)| a == b);
    assert!(
        theirs.ip == after.ip
            && agree(theirs.l4, after.l4)
            && agree(theirs.quoted_ip, after.quoted_ip),
        "{what}: etherparse's checksum verdicts {theirs:?} differ from ours {after:?}: {output:02x?}"
    );
    after
}

/// Makes the checksums of `p` valid where its headers allow, as the kernel would deliver it:
/// always the IPv4 header's, and the transport's when `l4`.
pub fn fix_checksums(p: &mut [u8], l4: bool) {
    let Ok(mut ip) = Ipv4Packet::new_checked_quoted(&mut p[..]) else {
        return;
    };
    ip.fill_checksum();
    let (src, dst, proto, ihl, total, frag) = (
        ip.src_addr(),
        ip.dst_addr(),
        ip.protocol(),
        ip.header_len(),
        ip.total_len() as usize,
        ip.is_fragment(),
    );
    if !l4 || total > p.len() || frag {
        return;
    }
    let seg = &mut p[ihl..total];
    match proto {
        ip_proto::TCP => {
            if let Ok(mut t) = TcpPacket::new_checked(seg) {
                t.fill_checksum(src, dst);
            }
        }
        ip_proto::UDP => {
            if let Ok(mut u) = UdpPacket::new_checked(&mut seg[..]) {
                if u.checksum() != 0 {
                    u.fill_checksum(src, dst);
                }
            }
        }
        ip_proto::ICMP => {
            if let Ok(mut m) = Icmpv4Packet::new_checked(seg) {
                m.fill_checksum();
            }
        }
        _ => {}
    }
}

/// Every connection is counted once at its realserver, in the state it is in (over all the
/// queues of one registry).
pub fn check_accounting(what: &str, shards: &[&Shard], registry: &Registry) {
    let mut entries = 0u64;
    let mut established = 0u64;
    for s in shards {
        let t = s.table();
        assert!(t.len() <= t.capacity(), "{what}: table over capacity");
        let by_state: u32 = t.by_state().iter().sum();
        assert_eq!(by_state as usize, t.len(), "{what}: by_state vs entries");
        let t6 = s.table6();
        if let Some(t6) = t6 {
            assert!(
                t6.len() <= t6.capacity(),
                "{what}: IPv6 table over capacity"
            );
            let by_state: u32 = t6.by_state().iter().sum();
            assert_eq!(
                by_state as usize,
                t6.len(),
                "{what}: IPv6 by_state vs entries"
            );
        }
        // Entries held by connection sync (in either table) are not counted for their
        // realservers yet.
        let (held, held_established) = s.held_entries();
        let est = |n: &[u32]| u64::from(n[State::Established as usize]);
        let all = t.len() as u64 + t6.map_or(0, |t6| t6.len() as u64);
        let all_established = est(t.by_state()) + t6.map_or(0, |t6| est(t6.by_state()));
        assert!(held <= all, "{what}: held entries");
        entries += all - held;
        established += all_established - held_established;
    }
    let (mut active, mut inactive) = (0u64, 0u64);
    for s in registry.all_services() {
        for d in &s.dests {
            active += u64::from(d.state.counters.active());
            inactive += u64::from(d.state.counters.inactive());
        }
    }
    assert_eq!(
        active, established,
        "{what}: active connections vs ESTABLISHED entries"
    );
    assert_eq!(
        active + inactive,
        entries,
        "{what}: realserver counts vs entries"
    );
}
