//! The fuzz targets' bodies, one function per target (`fuzz_targets/*.rs` call them), so that
//! `cargo test` here replays every seed and every fixture (a crash found once) through the
//! same code without libFuzzer. docs/FUZZING.md says how to run them.
//!
//! Each body checks properties, not only "no panic": parsers that accept bytes emit them back
//! to an equal description; every packet the data plane forwards is well-formed IPv4 that an
//! independent parser (etherparse) reads with the same checksum verdicts, and keeps every
//! checksum that was valid on the way in; the tables' accounting matches the realservers'
//! counts; the admin decoder's requests survive encoding; the pcap reader's packets survive
//! writing.

#[path = "../../host/tests/common/check.rs"]
pub mod check;

mod shard;

pub use shard::shard;

use ringvs::wire::icmpv4::Icmpv4Packet;
use ringvs::wire::ports::L4Ports;
use ringvs::wire::vnet::{self, VnetHdr};
use ringvs::wire::{
    ip_proto, tcpopt, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};

/// Reads a fuzz input front to back; past its end every read gives zeros (the input's
/// structure stays total: any bytes are a valid input).
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// The wire layer: IPv4 header, TCP (and its options), UDP, ICMP (and the header an error
/// quotes), the ports of a quoted segment, the virtio-net header, the IPv6 header and its
/// extension-header chain, TCP and UDP over IPv6, ICMPv6 (an error's quote, neighbour
/// discovery). What parses is emitted again from its description and must parse to the same
/// description.
pub fn wire(data: &[u8]) {
    if let Ok(h) = VnetHdr::parse(data) {
        let mut b = [0u8; vnet::LEN];
        h.emit(&mut b).expect("a parsed header emits");
        assert_eq!(VnetHdr::parse(&b).ok(), Some(h), "vnet header round trip");
    }
    if let Ok(ip6) = ringvs::wire::Ipv6Packet::new_checked(data) {
        ipv6(&ip6);
        return;
    }
    let Ok(ip) = Ipv4Packet::new_checked(data) else {
        // A quoted header (ICMP errors carry one cut short) has a laxer check.
        if let Ok(q) = Ipv4Packet::new_checked_quoted(data) {
            let _ = L4Ports::new_checked(q.payload());
        }
        return;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let _ = ip.verify_checksum();
    let _ = ip.options();
    if let Ok(repr) = Ipv4Repr::parse(&ip) {
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
        let again = Ipv4Packet::new_checked(&b[..]).expect("an emitted header parses");
        assert!(
            again.verify_checksum(),
            "an emitted header has a valid checksum"
        );
        assert_eq!(Ipv4Repr::parse(&again).ok(), Some(repr), "IPv4 round trip");
    }
    if ip.is_fragment() {
        return;
    }
    let seg = ip.payload();
    match ip.protocol() {
        ip_proto::TCP => transport_tcp(seg, src, dst),
        ip_proto::UDP => transport_udp(seg, src, dst),
        ip_proto::ICMP => {
            if let Ok(m) = Icmpv4Packet::new_checked(seg) {
                let _ = m.verify_checksum();
                if m.is_error() {
                    if let Ok(q) = Ipv4Packet::new_checked_quoted(m.payload()) {
                        let _ = L4Ports::new_checked(q.payload());
                    }
                }
            }
        }
        _ => {}
    }
}

/// A TCP segment sent from `src` to `dst` (either family): checked, described, emitted again
/// from its description with a checksum that holds, and described the same.
fn transport_tcp<A: ringvs::wire::PseudoAddr>(seg: &[u8], src: A, dst: A) {
    let Ok(t) = TcpPacket::new_checked(seg) else {
        return;
    };
    let _ = t.verify_checksum(src, dst);
    let _ = tcpopt::parse(t.options());
    let repr = TcpRepr::parse(&t).expect("a checked segment describes");
    // The emitted header has no options: the payload follows 20 bytes in.
    let mut b = vec![0u8; repr.buffer_len()];
    b[repr.header_len()..].copy_from_slice(t.payload());
    repr.emit(&mut TcpPacket::new_unchecked(&mut b[..]), src, dst);
    let again = TcpPacket::new_checked(&b[..]).expect("an emitted segment parses");
    assert!(
        again.verify_checksum(src, dst),
        "an emitted segment's checksum"
    );
    assert_eq!(TcpRepr::parse(&again).ok(), Some(repr), "TCP round trip");
}

/// A UDP datagram, as [`transport_tcp`].
fn transport_udp<A: ringvs::wire::PseudoAddr>(seg: &[u8], src: A, dst: A) {
    let Ok(u) = UdpPacket::new_checked(seg) else {
        return;
    };
    let _ = u.verify_checksum(src, dst);
    let repr = UdpRepr::parse(&u).expect("a checked datagram describes");
    let mut b = seg[..repr.buffer_len()].to_vec();
    repr.emit(&mut UdpPacket::new_unchecked(&mut b[..]), src, dst);
    let again = UdpPacket::new_checked(&b[..]).expect("an emitted datagram parses");
    assert!(
        again.verify_checksum(src, dst),
        "an emitted datagram's checksum"
    );
    assert_eq!(UdpRepr::parse(&again).ok(), Some(repr), "UDP round trip");
}

/// An IPv6 packet: the extension-header walk ends inside the payload, or refuses by a rule;
/// the fixed header round-trips.
fn ipv6(ip: &ringvs::wire::Ipv6Packet<&[u8]>) {
    use ringvs::wire::{ipv6, Ipv6Packet, Ipv6Repr};
    if let Ok(up) = ip.upper_layer() {
        let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
        assert!(
            up.offset <= end,
            "the upper layer at {} past {end}",
            up.offset
        );
        assert!(up.ext_headers <= ipv6::MAX_EXT_HEADERS);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let l4 = &ip.payload()[up.offset - ipv6::HEADER_LEN..];
        match up.protocol {
            _ if up.fragment.is_some_and(|f| f.offset > 0) => {}
            ip_proto::TCP => transport_tcp(l4, src, dst),
            ip_proto::UDP => transport_udp(l4, src, dst),
            ip_proto::ICMPV6 => icmpv6(l4, src, dst),
            _ => {}
        }
    }
    let repr = Ipv6Repr::parse(ip).expect("a checked packet describes");
    let mut b = vec![0u8; repr.buffer_len() + repr.payload_len];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
    let again = Ipv6Packet::new_checked(&b[..]).expect("an emitted header parses");
    assert_eq!(Ipv6Repr::parse(&again).ok(), Some(repr), "IPv6 round trip");
}

/// An ICMPv6 message: a neighbour solicitation or advertisement that describes is emitted
/// again with a checksum that holds and describes the same; an error's quote is walked.
fn icmpv6(m: &[u8], src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) {
    use ringvs::wire::icmpv6::NdRepr;
    use ringvs::wire::{Icmpv6Packet, Ipv6Packet};
    let Ok(p) = Icmpv6Packet::new_checked(m) else {
        return;
    };
    let _ = p.verify_checksum(src, dst);
    if p.is_error() {
        if let Ok(q) = Ipv6Packet::new_checked_quoted(p.payload()) {
            if let Ok(up) = q.upper_layer() {
                let at = up.offset - ringvs::wire::ipv6::HEADER_LEN;
                let _ = L4Ports::new_checked(q.payload().get(at..).unwrap_or_default());
            }
        }
    }
    if let Ok(nd) = NdRepr::parse(&p) {
        let mut b = vec![0u8; nd.buffer_len()];
        assert_eq!(
            nd.emit(&mut b, src, dst),
            Ok(b.len()),
            "an ND message emits"
        );
        let again = Icmpv6Packet::new_checked(&b[..]).expect("an emitted message parses");
        assert!(again.verify_checksum(src, dst), "an emitted ND checksum");
        assert_eq!(NdRepr::parse(&again), Ok(nd), "ND round trip");
    }
}

/// The admin protocol's decoder: a request it takes is encoded again and decodes to the same
/// request; a refused one gets an error message, never a panic.
pub fn admin(data: &[u8]) {
    use ringvs::control::protocol::{encode_request, parse_request};
    match parse_request(data) {
        Ok(req) => {
            let line = encode_request(&req);
            let again = parse_request(line.as_bytes())
                .unwrap_or_else(|e| panic!("an encoded request does not decode: {e}: {line}"));
            assert_eq!(again, req, "admin request round trip: {line}");
        }
        Err(e) => assert!(!e.is_empty(), "an empty error message"),
    }
}

/// The config loader: TOML text, then (after a line `--env--`) `KEY=VALUE` lines set as
/// `RINGVS_KEY` environment variables for the loader's environment overrides. A config it
/// refuses has a message; one it takes is valid again after a save (the saved text loads to
/// the same services).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (toml, env) = text.split_once("\n--env--\n").unwrap_or((&text, ""));
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, v)| {
            !k.is_empty()
                && !k.contains(['\0', '='])
                && !v.contains('\0')
                && k.len() + v.len() < 512
        })
        .take(8)
        .map(|(k, v)| (format!("RINGVS_{k}"), v.to_string()))
        .collect();
    // The fuzz process is one thread; the variables are gone before anything else reads
    // the environment.
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    let result = ringvs::config::from_str_with_env(toml, "fuzz.toml");
    for (k, _) in &vars {
        std::env::remove_var(k);
    }
    match result {
        Ok(cfg) => {
            let saved = ringvs::config::save::to_toml(&cfg.director, &cfg.plugins, &cfg.services)
                .unwrap_or_else(|e| panic!("a config that loaded cannot be saved: {e}"));
            let again = ringvs::config::from_str(&saved, "saved.toml").unwrap_or_else(|e| {
                panic!("a config that loaded does not load once saved: {e}\n{saved}")
            });
            assert_eq!(
                again.services, cfg.services,
                "services differ after a save:\n{saved}"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The pcap/pcapng reader: every packet it gives, written to a classic pcap and read again,
/// comes back the same; an error ends the reading with a message.
pub fn pcap(data: &[u8]) {
    use ringvs::io::pcap::{PcapReader, PcapWriter};
    let Ok(reader) = PcapReader::from_reader(data) else {
        return;
    };
    let mut records = Vec::new();
    for r in reader.take(4096) {
        match r {
            Ok(rec) => records.push(rec),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut w = PcapWriter::new_nanos(&mut out).expect("a writer on a Vec");
        for rec in &records {
            w.write(rec.ts, &rec.data).expect("writing to a Vec");
        }
    }
    let back: Vec<_> = PcapReader::from_reader(&out[..])
        .expect("our own capture opens")
        .map(|r| r.expect("our own capture reads"))
        .collect();
    assert_eq!(
        back.len(),
        records.len(),
        "packets lost in a write and read"
    );
    for (a, b) in records.iter().zip(&back) {
        // As the writer documents: records cut at MAX_RECORD, seconds past 2106 clamped.
        let keep = a.data.len().min(ringvs::io::pcap::MAX_RECORD as usize);
        assert_eq!(
            a.data[..keep],
            b.data,
            "a packet changed in a write and read"
        );
        let ts = if a.ts.as_secs() > u64::from(u32::MAX) {
            std::time::Duration::new(u64::from(u32::MAX), a.ts.subsec_nanos())
        } else {
            a.ts
        };
        assert_eq!(ts, b.ts, "a timestamp changed in a write and read");
    }
}

/// The key the `sync` target's messages are signed with (`fuzz/make-seeds.py` signs with it).
pub const SYNC_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// Connection sync messages (issue 14). First byte even: the rest is a message as received
/// (forged, if its MAC is not [`SYNC_KEY`]'s). Odd: the rest is signed here first, so that the
/// fuzzer reaches what is checked after the MAC. A message taken is encoded again to the same
/// bytes and passes a replay window once; a refused one has a reason.
pub fn sync(data: &[u8]) {
    use ringvs::sync::{decode, encode, Key, ReplayWindow, MAC_LEN};
    let key = Key::from_hex(SYNC_KEY).expect("the fuzz key");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let msg = if mode % 2 == 1 {
        ringvs::sync::sign_for_tests(&key, rest)
    } else {
        rest.to_vec()
    };
    if let Ok((h, entries)) = decode(&key, &msg) {
        let mut again = Vec::new();
        encode(&key, &h, &entries, &mut again);
        assert_eq!(again, msg, "a message taken encodes to the same bytes");
        assert!(msg.len() >= MAC_LEN);
        let mut w = ReplayWindow::default();
        if w.accept(&h).is_ok() {
            assert!(w.accept(&h).is_err(), "the same message taken twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every file under `seeds/TARGET/` and `fixtures/TARGET/` through the target's body.
    fn replay(target: &str, body: fn(&[u8])) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for dir in ["seeds", "fixtures"] {
            let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                let data = std::fs::read(&p).unwrap();
                eprintln!("{}", p.display());
                body(&data);
                n += 1;
            }
        }
        assert!(n > 0, "no seeds for {target}");
    }

    #[test]
    fn wire_seeds_and_fixtures() {
        replay("wire", super::wire);
    }

    #[test]
    fn shard_seeds_and_fixtures() {
        replay("shard", super::shard);
    }

    #[test]
    fn admin_seeds_and_fixtures() {
        replay("admin", super::admin);
    }

    #[test]
    fn config_seeds_and_fixtures() {
        replay("config", super::config);
    }

    #[test]
    fn pcap_seeds_and_fixtures() {
        replay("pcap", super::pcap);
    }

    #[test]
    fn sync_seeds_and_fixtures() {
        replay("sync", super::sync);
    }

    /// The sync seeds are signed as the target expects: not all refused at the MAC.
    #[test]
    fn sync_seeds_are_taken() {
        let key = ringvs::sync::Key::from_hex(super::SYNC_KEY).unwrap();
        let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds/sync");
        for (name, entries) in [
            ("entries", 2),
            ("templates", 2),
            ("full", 50),
            ("heartbeat", 0),
            ("entries6", 2),
            ("templates6", 1),
        ] {
            let data = std::fs::read(seeds.join(name)).unwrap();
            let (_, got) = ringvs::sync::decode(&key, &data[1..]).unwrap();
            assert_eq!(got.len(), entries, "{name}");
        }
        let forged = std::fs::read(seeds.join("forged")).unwrap();
        assert_eq!(
            ringvs::sync::decode(&key, &forged[1..]),
            Err(ringvs::sync::Reject::Mac)
        );
    }
}
