//! The reader on captures built byte by byte: both formats, both byte orders, every link
//! type, and broken files.

use super::*;

/// A 28-byte IPv4/UDP packet.
const V4: [u8; 28] = [
    0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 80, 0, 8, 0,
    0,
];
/// A 40-byte IPv6 header with no payload.
const V6: [u8; 40] = {
    let mut p = [0u8; 40];
    p[0] = 0x60;
    p[6] = 59; // no next header
    p[7] = 64;
    p
};

/// A capture of `linktype` with the given (frame, original length) records.
fn capture(big_endian: bool, nanos: bool, linktype: u32, recs: &[(&[u8], u32)]) -> Vec<u8> {
    let w32 = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut f = Vec::new();
    f.extend(w32(if nanos { MAGIC_NANOS } else { MAGIC_MICROS }));
    f.extend(w16(2));
    f.extend(w16(4));
    f.extend([0; 8]);
    f.extend(w32(65535));
    f.extend(w32(linktype));
    for (i, (frame, len)) in recs.iter().enumerate() {
        f.extend(w32(1_700_000_000 + i as u32));
        f.extend(w32(123_456));
        f.extend(w32(frame.len() as u32));
        f.extend(w32(*len));
        f.extend(*frame);
    }
    f
}

fn read_all(bytes: &[u8]) -> (Vec<PcapRecord>, u64) {
    let mut r = PcapReader::from_reader(bytes).unwrap();
    let recs = r.by_ref().map(Result::unwrap).collect();
    (recs, r.skipped())
}

fn framed(header: &[u8], ip: &[u8]) -> Vec<u8> {
    [header, ip].concat()
}

#[test]
fn round_trip_micros_and_nanos() {
    for nanos in [false, true] {
        let mut w = if nanos {
            PcapWriter::new_nanos(Vec::new()).unwrap()
        } else {
            PcapWriter::new(Vec::new()).unwrap()
        };
        let t0 = Duration::new(1_700_000_000, 123_456_789);
        w.write(t0, &V4).unwrap();
        w.write(t0 + Duration::from_secs(1), &V6).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 28 + 16 + 40);

        // Little-endian header: magic, version 2.4, snaplen MAX_RECORD, raw IP.
        let magic = if nanos { MAGIC_NANOS } else { MAGIC_MICROS };
        assert_eq!(bytes[0..4], magic.to_le_bytes());
        assert_eq!(bytes[4..8], [2, 0, 4, 0]);
        assert_eq!(bytes[16..20], MAX_RECORD.to_le_bytes());
        assert_eq!(bytes[20..24], linktype::RAW.to_le_bytes());
        assert!(!PcapReader::from_reader(&bytes[..]).unwrap().is_pcapng());
        let (recs, skipped) = read_all(&bytes);
        assert_eq!(skipped, 0);
        let t0 = if nanos {
            t0
        } else {
            Duration::new(1_700_000_000, 123_456_000)
        };
        assert_eq!(
            recs,
            vec![
                PcapRecord {
                    ts: t0,
                    data: V4.to_vec(),
                    truncated: false
                },
                PcapRecord {
                    ts: t0 + Duration::from_secs(1),
                    data: V6.to_vec(),
                    truncated: false
                },
            ]
        );
    }
}

#[test]
fn round_trip_through_a_file() {
    let path = std::env::temp_dir().join(format!("ringvs-pcap-{}.pcap", std::process::id()));
    let mut w = PcapWriter::create(&path).unwrap();
    w.write(Duration::from_micros(5), &V4).unwrap();
    w.flush().unwrap();
    drop(w);
    let recs: Vec<_> = PcapReader::open(&path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].ts, &recs[0].data[..]),
        (Duration::from_micros(5), &V4[..])
    );
}

#[test]
fn oversized_packets_are_written_truncated() {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let big = vec![0x45u8; MAX_RECORD as usize + 10];
    w.write(Duration::ZERO, &big).unwrap();
    let bytes = w.into_inner().unwrap();
    let (recs, _) = read_all(&bytes);
    assert_eq!(recs[0].data.len(), MAX_RECORD as usize);
    assert!(recs[0].truncated);
}

#[test]
fn link_types() {
    let eth = |t: u16| {
        let mut h = vec![0u8; 12];
        h.extend(t.to_be_bytes());
        h
    };
    let vlan = |t: u16| {
        let mut h = eth(0x8100);
        h.extend([0, 42]);
        h.extend(t.to_be_bytes());
        h
    };
    let sll = |t: u16| {
        let mut h = vec![0u8; 14];
        h.extend(t.to_be_bytes());
        h
    };
    let sll2 = |t: u16| {
        let mut h = t.to_be_bytes().to_vec();
        h.extend([0u8; 18]);
        h
    };
    let arp = [0u8; 28];
    /// (link type, IP frame, its IP packet, a non-IP frame)
    type Case<'a> = (u32, Vec<u8>, &'a [u8], Vec<u8>);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (linktype::NULL, framed(&2u32.to_le_bytes(), &V4), &V4, framed(&7u32.to_le_bytes(), &V4)),
        (linktype::NULL, framed(&2u32.to_be_bytes(), &V4), &V4, framed(&[1, 2], &[])),
        (linktype::NULL, framed(&30u32.to_le_bytes(), &V6), &V6, framed(&23u32.to_be_bytes(), &V6)),
        (linktype::ETHERNET, framed(&eth(0x0800), &V4), &V4, framed(&eth(0x0806), &arp)),
        (linktype::ETHERNET, framed(&eth(0x86dd), &V6), &V6, framed(&eth(0x0800), &[])),
        (linktype::ETHERNET, framed(&vlan(0x0800), &V4), &V4, framed(&vlan(0x0806), &arp)),
        (linktype::RAW, V6.to_vec(), &V6, vec![0x10, 0, 0]),
        (linktype::LINUX_SLL, framed(&sll(0x0800), &V4), &V4, framed(&sll(0x0806), &arp)),
        (linktype::LINUX_SLL2, framed(&sll2(0x86dd), &V6), &V6, framed(&sll2(0x0806), &arp)),
        (linktype::IPV4, V4.to_vec(), &V4, V6.to_vec()),
        (linktype::IPV6, V6.to_vec(), &V6, V4.to_vec()),
    ];
    for (lt, frame, ip, other) in &cases {
        for big_endian in [false, true] {
            let bytes = capture(
                big_endian,
                false,
                *lt,
                &[(other, other.len() as u32), (frame, frame.len() as u32)],
            );
            let (recs, skipped) = read_all(&bytes);
            let what = format!("link type {lt}, big endian {big_endian}");
            assert_eq!(skipped, 1, "{what}");
            assert_eq!(recs.len(), 1, "{what}");
            assert_eq!(&recs[0].data[..], *ip, "{what}");
            assert_eq!(
                recs[0].ts,
                Duration::new(1_700_000_001, 123_456_000),
                "{what}"
            );
            assert!(!recs[0].truncated, "{what}");
        }
    }
}

#[test]
fn nanosecond_timestamps_and_truncated_captures() {
    let bytes = capture(true, true, linktype::RAW, &[(&V4[..20], 28)]);
    let (recs, _) = read_all(&bytes);
    assert_eq!(recs[0].ts, Duration::new(1_700_000_000, 123_456));
    assert!(recs[0].truncated);
    assert_eq!(&recs[0].data[..], &V4[..20]);
}

fn err(bytes: &[u8]) -> String {
    let e = match PcapReader::with_name(bytes, "x.pcap".into()) {
        Err(e) => e,
        Ok(mut r) => r.find_map(Result::err).expect("an error"),
    };
    e.to_string()
}

#[test]
fn error_messages() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
        "x.pcap: not a pcap or pcapng file: bad magic 0x47455420"
    );
    let ng = [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
    assert_eq!(
        err(&ng),
        "x.pcap: truncated section header block at byte offset 0"
    );
    assert_eq!(
        err(&capture(false, false, linktype::RAW, &[])[..20]),
        "x.pcap: truncated file header at byte offset 0"
    );
    assert_eq!(
        err(&capture(false, false, 105, &[])),
        "x.pcap: unsupported link type 105"
    );
    assert_eq!(
        err(&[0xd4, 0xc3, 0xb2]),
        "x.pcap: truncated file header at byte offset 0"
    );

    let two = capture(false, false, linktype::RAW, &[(&V4, 28), (&V4, 28)]);
    let second = (24 + 16 + 28) as u64;
    assert_eq!(
        err(&two[..two.len() - 1]),
        format!("x.pcap: truncated record at byte offset {second}")
    );
    assert_eq!(
        err(&two[..second as usize + 5]),
        format!("x.pcap: truncated record header at byte offset {second}")
    );

    let mut huge = capture(false, false, linktype::RAW, &[(&V4, 28)]);
    huge[24 + 8..24 + 12].copy_from_slice(&(MAX_RECORD + 1).to_le_bytes());
    assert_eq!(
        err(&huge),
        format!(
            "x.pcap: record at byte offset 24 claims {} bytes (limit {MAX_RECORD})",
            MAX_RECORD + 1
        )
    );

    let missing = PcapReader::open("/nonexistent/dir/y.pcap")
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("/nonexistent/dir/y.pcap: "),
        "{missing}"
    );
}

#[test]
fn records_before_an_error_are_returned_then_iteration_ends() {
    let two = capture(false, false, linktype::RAW, &[(&V4, 28), (&V4, 28)]);
    let mut r = PcapReader::from_reader(&two[..two.len() - 3]).unwrap();
    assert!(r.next().unwrap().is_ok());
    assert!(matches!(r.next(), Some(Err(PcapError::Truncated { .. }))));
    assert!(r.next().is_none());
}

#[test]
fn empty_capture() {
    let (recs, skipped) = read_all(&capture(false, false, linktype::ETHERNET, &[]));
    assert!(recs.is_empty());
    assert_eq!(skipped, 0);
}

/// A pcapng file written block by block, in either byte order.
struct Ng {
    big_endian: bool,
    bytes: Vec<u8>,
}

/// IDB option codes.
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

impl Ng {
    /// A file that starts with a section header.
    fn new(big_endian: bool) -> Ng {
        let mut ng = Ng {
            big_endian,
            bytes: Vec::new(),
        };
        ng.shb(big_endian);
        ng
    }

    fn u16(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A block: type, total length, the body padded to four bytes, total length.
    fn block(&mut self, kind: u32, body: &[u8]) -> &mut Ng {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let (k, t) = (self.u32(kind), self.u32(total));
        self.bytes.extend(k);
        self.bytes.extend(t);
        self.bytes.extend(body);
        self.bytes.resize(self.bytes.len() + padded - body.len(), 0);
        self.bytes.extend(t);
        self
    }

    /// A new section, in the given byte order from here on.
    fn shb(&mut self, big_endian: bool) -> &mut Ng {
        self.big_endian = big_endian;
        let mut body = self.u32(0x1a2b_3c4d).to_vec();
        body.extend(self.u16(1));
        body.extend(self.u16(0));
        body.extend((-1i64).to_le_bytes()); // section length unknown
        self.block(0x0a0d_0d0a, &body)
    }

    /// An interface with `tsresol` (default: microseconds) and `tsoffset` (default: 0).
    fn idb(&mut self, linktype: u16, tsresol: Option<u8>, tsoffset: Option<i64>) -> &mut Ng {
        let mut body = self.u16(linktype).to_vec();
        body.extend(self.u16(0));
        body.extend(self.u32(MAX_RECORD));
        if let Some(r) = tsresol {
            body.extend(self.u16(IF_TSRESOL));
            body.extend(self.u16(1));
            body.extend([r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            body.extend(self.u16(IF_TSOFFSET));
            body.extend(self.u16(8));
            if self.big_endian {
                body.extend(o.to_be_bytes());
            } else {
                body.extend(o.to_le_bytes());
            }
        }
        body.extend([0; 4]); // opt_endofopt
        self.block(1, &body)
    }

    /// An enhanced packet block: `frame` captured on `if_id` at `ticks` of its clock.
    fn epb(&mut self, if_id: u32, ticks: u64, frame: &[u8], origlen: u32) -> &mut Ng {
        let mut body = Vec::new();
        for v in [
            if_id,
            (ticks >> 32) as u32,
            ticks as u32,
            frame.len() as u32,
            origlen,
        ] {
            body.extend(self.u32(v));
        }
        body.extend(frame);
        self.block(6, &body)
    }

    /// A simple packet block (interface 0, no timestamp).
    fn spb(&mut self, frame: &[u8]) -> &mut Ng {
        let mut body = self.u32(frame.len() as u32).to_vec();
        body.extend(frame);
        self.block(3, &body)
    }

    /// Where the next block will start.
    fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }
}

fn eth(t: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend(t.to_be_bytes());
    f.extend(ip);
    f
}

/// Linux cooked v2: protocol, reserved, interface index, ARPHRD, packet type, address length
/// and 8 address bytes.
fn sll2(t: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = t.to_be_bytes().to_vec();
    f.extend([0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
    f.extend([2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend(ip);
    f
}

#[test]
fn pcapng_interfaces_with_their_link_types_and_clocks() {
    for big_endian in [false, true] {
        let mut ng = Ng::new(big_endian);
        ng.idb(1, None, None) // Ethernet, microseconds
            .idb(276, Some(9), None) // Linux cooked v2, nanoseconds
            .idb(101, Some(0x80 | 10), Some(100)) // raw IP, 1/1024 s, 100 s later
            .idb(147, None, None) // a user link type no packet comes on
            .epb(0, 1_700_000_000_123_456, &eth(0x0800, &V4), 42)
            .epb(1, 1_700_000_001_000_000_007, &sll2(0x86dd, &V6), 40)
            .epb(0, 1_700_000_002_000_000, &eth(0x0806, &[0; 28]), 42)
            .block(4, &[0; 4]) // a name resolution block, ignored
            .epb(2, 3 * 1024 + 512, &V4, 28)
            .spb(&eth(0x0800, &V4))
            // A second section in the other byte order: its interfaces start again at 0.
            .shb(!big_endian)
            .idb(1, Some(3), None) // Ethernet, milliseconds
            .epb(0, 1_700_000_003_250, &eth(0x86dd, &V6), 54);
        let mut r = PcapReader::from_reader(&ng.bytes[..]).unwrap();
        assert!(r.is_pcapng());
        let recs: Vec<_> = r.by_ref().map(Result::unwrap).collect();
        let what = format!("big endian {big_endian}");
        assert_eq!(r.skipped(), 1, "{what}");
        let got: Vec<_> = recs.iter().map(|r| (r.ts, &r.data[..])).collect();
        assert_eq!(
            got,
            vec![
                (Duration::new(1_700_000_000, 123_456_000), &V4[..]),
                (Duration::new(1_700_000_001, 7), &V6[..]),
                (Duration::new(103, 500_000_000), &V4[..]),
                // A simple packet block: no timestamp, the time of the packet before.
                (Duration::new(103, 500_000_000), &V4[..]),
                (Duration::new(1_700_000_003, 250_000_000), &V6[..]),
            ],
            "{what}"
        );
        assert!(!recs.iter().any(|r| r.truncated), "{what}");
    }
}

#[test]
fn pcapng_snaplen_truncation_and_padding() {
    let mut ng = Ng::new(false);
    // 21 captured bytes of 28: the block pads them to 24; the record has 21 and is cut.
    ng.idb(101, None, None).epb(0, 0, &V4[..21], 28);
    // A packet larger than the reader's first buffer (it grows).
    let big = [&V4[..], &[7; 100_000]].concat();
    ng.epb(0, 1, &big, big.len() as u32);
    let (recs, _) = read_all(&ng.bytes);
    assert_eq!(&recs[0].data[..], &V4[..21]);
    assert!(recs[0].truncated);
    assert_eq!(recs[1].data, big);
    assert!(!recs[1].truncated);
}

#[test]
fn truncated_pcapng_is_a_clear_error() {
    let mut ng = Ng::new(true);
    ng.idb(101, None, None).epb(0, 1, &V4, 28);
    let last = ng.offset();
    ng.epb(0, 2, &V6, 40);
    let bytes = &ng.bytes;
    assert_eq!(
        err(&bytes[..bytes.len() - 1]),
        format!("x.pcap: truncated block at byte offset {last}")
    );
    assert_eq!(
        err(&bytes[..last as usize + 6]),
        format!("x.pcap: truncated block header at byte offset {last}")
    );
    assert_eq!(
        err(&bytes[..20]),
        "x.pcap: truncated section header block at byte offset 0"
    );
    // The packets before the cut come first.
    let mut r = PcapReader::with_name(&bytes[..bytes.len() - 4], "x.pcap".into()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().data, V4);
    assert!(matches!(r.next(), Some(Err(PcapError::Truncated { .. }))));
    assert!(r.next().is_none());
}

#[test]
fn corrupt_pcapng_is_a_clear_error() {
    let base = || {
        let mut ng = Ng::new(false);
        ng.idb(101, None, None);
        ng
    };
    // A packet of an interface the section does not describe.
    let mut ng = base();
    let at = ng.offset();
    ng.epb(1, 0, &V4, 28);
    assert_eq!(
        err(&ng.bytes),
        format!("x.pcap: malformed packet block at byte offset {at}: a packet of interface 1, but the section describes 1")
    );
    // A block that claims 16 MiB.
    let mut ng = base();
    let at = ng.offset();
    ng.epb(0, 0, &V4, 28);
    ng.bytes[at as usize + 4..at as usize + 8].copy_from_slice(&(16u32 << 20).to_le_bytes());
    assert_eq!(
        err(&ng.bytes),
        format!("x.pcap: block at byte offset {at} claims 16777216 bytes (limit {MAX_BLOCK})")
    );
    // A block shorter than any block can be (found by the pcap fuzz target: pcap-parser
    // underflows on it), in either byte order.
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb(101, None, None);
        let at = ng.offset();
        ng.epb(0, 0, &V4, 28);
        let eight = if big {
            8u32.to_be_bytes()
        } else {
            8u32.to_le_bytes()
        };
        ng.bytes[at as usize + 4..at as usize + 8].copy_from_slice(&eight);
        assert_eq!(
            err(&ng.bytes),
            format!("x.pcap: malformed block at byte offset {at}: block length 8, below the 12 bytes of any block")
        );
    }
    // A packet that claims more bytes than its block holds: corrupt, not cut short.
    let mut ng = base();
    let at = ng.offset();
    ng.epb(0, 0, &V4, 28).epb(0, 0, &V4, 28);
    ng.bytes[at as usize + 20..at as usize + 24].copy_from_slice(&200u32.to_le_bytes());
    let e = err(&ng.bytes);
    assert!(
        e.starts_with(&format!("x.pcap: malformed block at byte offset {at}: ")),
        "{e}"
    );
    // A captured length over MAX_RECORD in a block that holds it.
    let mut ng = base();
    let at = ng.offset();
    ng.epb(0, 0, &vec![0x45; MAX_RECORD as usize + 4], MAX_RECORD + 4);
    assert_eq!(
        err(&ng.bytes),
        format!(
            "x.pcap: record at byte offset {at} claims {} bytes (limit {MAX_RECORD})",
            MAX_RECORD + 4
        )
    );
    // if_tsresol 10^20 per second.
    let mut ng = Ng::new(false);
    let at = ng.offset();
    ng.idb(101, Some(20), None);
    assert_eq!(
        err(&ng.bytes),
        format!("x.pcap: malformed interface description at byte offset {at}: if_tsresol 0x14 is not a resolution")
    );
    // A timestamp past 2106 (2^40 seconds).
    let mut ng = Ng::new(false);
    ng.idb(101, Some(0), None);
    let at = ng.offset();
    ng.epb(0, 1 << 40, &V4, 28);
    assert_eq!(
        err(&ng.bytes),
        format!("x.pcap: malformed packet block at byte offset {at}: timestamp after 2106 (beyond what pcap can hold)")
    );
    // A packet on an interface of a link type the reader cannot use.
    let mut ng = Ng::new(false);
    ng.idb(147, None, None).epb(0, 0, &V4, 28);
    assert_eq!(err(&ng.bytes), "x.pcap: unsupported link type 147");
    // A section header whose byte-order magic is wrong.
    let mut ng = Ng::new(false);
    ng.bytes[8] = 0;
    let e = err(&ng.bytes);
    assert!(
        e.starts_with("x.pcap: malformed section header block at byte offset 0: "),
        "{e}"
    );
}

/// A reader that hands out one byte per call, as a slow pipe may.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// A reader that fails after `0.len()` bytes.
struct Failing<'a>(&'a [u8]);

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("disk on fire"));
        }
        let n = self.0.len().min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn short_reads_and_read_errors() {
    let mut ng = Ng::new(false);
    ng.idb(101, None, None)
        .epb(0, 0, &V4, 28)
        .epb(0, 1, &V6, 40);
    let classic = capture(true, false, linktype::RAW, &[(&V4, 28), (&V6, 40)]);
    for bytes in [&ng.bytes, &classic] {
        let recs: Vec<_> = PcapReader::from_reader(Trickle(bytes))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(recs.len(), 2);
        // The first read fills the reader's buffer: a failure after the header shows there.
        let half = &bytes[..bytes.len() - 30];
        let e = PcapReader::with_name(Failing(half), "x.pcap".into()).unwrap_err();
        assert_eq!(e.to_string(), "x.pcap: disk on fire");
    }
    // Past the first buffer, a failure ends the iteration.
    let n = 2 * BUFFER / V4.len();
    let mut ng = Ng::new(false);
    ng.idb(101, None, None);
    for i in 0..n {
        ng.epb(0, i as u64, &V4, 28);
    }
    let classic = capture(false, false, linktype::RAW, &vec![(&V4[..], 28); n]);
    for big in [&ng.bytes, &classic] {
        let mut r = PcapReader::with_name(Failing(big), "x.pcap".into()).unwrap();
        let e = r.by_ref().find_map(Result::err).unwrap();
        assert_eq!(e.to_string(), "x.pcap: disk on fire");
        assert!(r.next().is_none());
    }
    let e = PcapReader::with_name(Failing(&[]), "x.pcap".into()).unwrap_err();
    assert_eq!(e.to_string(), "x.pcap: disk on fire");
}

/// Every prefix of a capture, and every byte of it set to a few values, reads without a panic
/// and ends; an error names the file.
#[test]
fn damaged_captures_never_panic() {
    let mut ng = Ng::new(false);
    ng.idb(1, Some(9), Some(-5))
        .idb(276, None, None)
        .epb(0, 5, &eth(0x0800, &V4), 42)
        .epb(1, 6, &sll2(0x86dd, &V6), 60)
        .spb(&eth(0x0800, &V4))
        .shb(true)
        .idb(113, Some(0x83), None)
        .epb(0, 7, &V4, 28);
    let classic = capture(false, true, linktype::ETHERNET, &[(&eth(0x0800, &V4), 42)]);
    for sample in [&ng.bytes, &classic] {
        let check = |bytes: &[u8]| {
            let Ok(r) = PcapReader::with_name(bytes, "x.pcap".into()) else {
                return;
            };
            for rec in r.take(100) {
                if let Err(e) = rec {
                    assert!(e.to_string().starts_with("x.pcap: "), "{e}");
                }
            }
        };
        for n in 0..sample.len() {
            check(&sample[..n]);
        }
        let mut bytes = sample.clone();
        for i in 0..bytes.len() {
            let was = bytes[i];
            for v in [0, 0x7f, 0x80, 0xff, was ^ 1] {
                bytes[i] = v;
                check(&bytes);
            }
            bytes[i] = was;
        }
    }
}
