//! Classic pcap files (not pcapng): a reader that yields IP packets from the common link
//! types, and a writer of raw-IP captures.
//!
//! The format: a 24-byte file header (magic, version, zone, accuracy, snaplen, link type) in
//! the writer's byte order, then records of a 16-byte header (seconds, micro- or nanoseconds,
//! captured length, original length) followed by the captured bytes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

/// Link types ("LINKTYPE_*" in the tcpdump.org registry) the reader understands.
pub mod linktype {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet II, optionally with one 802.1Q/802.1ad tag.
    pub const ETHERNET: u32 = 1;
    /// Raw IPv4 or IPv6; what [`super::PcapWriter`] writes.
    pub const RAW: u32 = 101;
    /// Linux "cooked" capture v1 (`tcpdump -i any`, older libpcap).
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4 only.
    pub const IPV4: u32 = 228;
    /// Raw IPv6 only.
    pub const IPV6: u32 = 229;
    /// Linux "cooked" capture v2 (`tcpdump -i any`, libpcap ≥ 1.10).
    pub const LINUX_SLL2: u32 = 276;
}

/// The largest record the reader accepts (libpcap's `MAXIMUM_SNAPLEN`), and the snaplen the
/// writer declares; longer packets are written truncated.
pub const MAX_RECORD: u32 = 262_144;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;
const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// Why a capture cannot be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The underlying reader or writer failed.
    #[error("{file}: {source}")]
    Io {
        /// The file (or `<reader>`/`<writer>`).
        file: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with a pcap magic number.
    #[error("{file}: not a pcap file: bad magic {magic:#010x}")]
    BadMagic {
        /// The file.
        file: String,
        /// The first four bytes, most significant first.
        magic: u32,
    },
    /// The file is pcapng, which this reader does not handle.
    #[error(
        "{file}: pcapng files are not supported, only classic pcap \
         (convert with `editcap -F pcap IN OUT` or `tcpdump -r IN -w OUT`)"
    )]
    Pcapng {
        /// The file.
        file: String,
    },
    /// A link type the reader cannot take IP packets out of.
    #[error("{file}: unsupported link type {linktype}")]
    UnsupportedLinkType {
        /// The file.
        file: String,
        /// The link type from the file header.
        linktype: u32,
    },
    /// The file ends in the middle of a header or a record.
    #[error("{file}: truncated {what} at byte offset {offset}")]
    Truncated {
        /// The file.
        file: String,
        /// "file header", "record header" or "record".
        what: &'static str,
        /// Offset of the start of the incomplete header or record.
        offset: u64,
    },
    /// A record claims more bytes than any capture holds (a corrupt file).
    #[error("{file}: record at byte offset {offset} claims {len} bytes (limit {MAX_RECORD})")]
    RecordTooLarge {
        /// The file.
        file: String,
        /// Offset of the record header.
        offset: u64,
        /// The captured length it claims.
        len: u32,
    },
}

/// One packet from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    /// The packet, starting at the IPv4 or IPv6 header (link-layer header removed).
    pub data: Vec<u8>,
    /// The capture holds fewer bytes than were on the wire (snaplen).
    pub truncated: bool,
}

/// Reads the IP packets of a classic pcap file, in either byte order, with micro- or
/// nanosecond timestamps. Frames that are not IPv4 or IPv6 are skipped and counted.
#[derive(Debug)]
pub struct PcapReader<R = BufReader<File>> {
    r: R,
    file: String,
    big_endian: bool,
    nanos: bool,
    linktype: u32,
    snaplen: u32,
    offset: u64,
    skipped: u64,
    done: bool,
}

impl PcapReader {
    /// Opens and checks the file header of `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<PcapReader, PcapError> {
        let file = path.as_ref().display().to_string();
        match File::open(path.as_ref()) {
            Ok(f) => PcapReader::with_name(BufReader::new(f), file),
            Err(source) => Err(PcapError::Io { file, source }),
        }
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads the file header from `r`; errors name the file `<reader>`.
    pub fn from_reader(r: R) -> Result<PcapReader<R>, PcapError> {
        PcapReader::with_name(r, "<reader>".into())
    }

    /// Reads the file header from `r`; errors name the file `file`.
    pub fn with_name(mut r: R, file: String) -> Result<PcapReader<R>, PcapError> {
        let mut h = [0u8; FILE_HEADER];
        match read_full(&mut r, &mut h) {
            Ok(n) if n == FILE_HEADER => {}
            Ok(n) if n >= 4 && u32::from_be_bytes([h[0], h[1], h[2], h[3]]) == MAGIC_PCAPNG => {
                return Err(PcapError::Pcapng { file })
            }
            Ok(_) => {
                return Err(PcapError::Truncated {
                    file,
                    what: "file header",
                    offset: 0,
                })
            }
            Err(source) => return Err(PcapError::Io { file, source }),
        }
        let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match magic {
            MAGIC_MICROS => (true, false),
            MAGIC_NANOS => (true, true),
            m if m.swap_bytes() == MAGIC_MICROS => (false, false),
            m if m.swap_bytes() == MAGIC_NANOS => (false, true),
            MAGIC_PCAPNG => return Err(PcapError::Pcapng { file }),
            magic => return Err(PcapError::BadMagic { file, magic }),
        };
        let u32_at = |i: usize| read_u32(&h[i..i + 4], big_endian);
        // The upper bits of the link-type field carry FCS information.
        let linktype = u32_at(20) & 0xffff;
        if !matches!(
            linktype,
            linktype::NULL
                | linktype::ETHERNET
                | linktype::RAW
                | linktype::LINUX_SLL
                | linktype::IPV4
                | linktype::IPV6
                | linktype::LINUX_SLL2
        ) {
            return Err(PcapError::UnsupportedLinkType { file, linktype });
        }
        Ok(PcapReader {
            r,
            file,
            big_endian,
            nanos,
            linktype,
            snaplen: u32_at(16),
            offset: FILE_HEADER as u64,
            skipped: 0,
            done: false,
        })
    }

    /// The link type of the capture.
    pub fn link_type(&self) -> u32 {
        self.linktype
    }

    /// The snapshot length declared in the file header.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// True if timestamps have nanosecond resolution.
    pub fn nanos(&self) -> bool {
        self.nanos
    }

    /// Frames skipped so far because they are not IPv4 or IPv6 (or too short for their
    /// link-layer header).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next record, including non-IP ones (`None` data offset), or `None` at the end.
    fn next_frame(&mut self) -> Result<Option<(PcapRecord, Option<usize>)>, PcapError> {
        let at = self.offset;
        let mut h = [0u8; RECORD_HEADER];
        match read_full(&mut self.r, &mut h) {
            Ok(0) => return Ok(None),
            Ok(RECORD_HEADER) => {}
            Ok(_) => return Err(self.truncated("record header", at)),
            Err(source) => return Err(self.io(source)),
        }
        let u32_at = |i: usize| read_u32(&h[i..i + 4], self.big_endian);
        let (secs, frac, caplen, len) = (u32_at(0), u32_at(4), u32_at(8), u32_at(12));
        if caplen > MAX_RECORD {
            return Err(PcapError::RecordTooLarge {
                file: self.file.clone(),
                offset: at,
                len: caplen,
            });
        }
        let mut data = vec![0u8; caplen as usize];
        match read_full(&mut self.r, &mut data) {
            Ok(n) if n == data.len() => {}
            Ok(_) => return Err(self.truncated("record", at)),
            Err(source) => return Err(self.io(source)),
        }
        self.offset = at + (RECORD_HEADER + data.len()) as u64;
        let nanos = if self.nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        // Duration::new carries nanoseconds beyond one second into the seconds.
        let ts = Duration::new(u64::from(secs), 0) + Duration::from_nanos(u64::from(nanos));
        let ip = ip_offset(self.linktype, &data);
        Ok(Some((
            PcapRecord {
                ts,
                data,
                truncated: caplen < len,
            },
            ip,
        )))
    }

    fn truncated(&self, what: &'static str, offset: u64) -> PcapError {
        PcapError::Truncated {
            file: self.file.clone(),
            what,
            offset,
        }
    }

    fn io(&self, source: io::Error) -> PcapError {
        PcapError::Io {
            file: self.file.clone(),
            source,
        }
    }
}

impl<R: Read> Iterator for PcapReader<R> {
    type Item = Result<PcapRecord, PcapError>;

    /// The next IP packet. After an error, the iteration ends.
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.next_frame() {
                Ok(None) => self.done = true,
                Ok(Some((mut rec, Some(off)))) => {
                    rec.data.drain(..off);
                    return Some(Ok(rec));
                }
                Ok(Some((_, None))) => self.skipped += 1,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Where the IP header starts in a frame of `linktype`, if the frame carries IPv4 or IPv6.
fn ip_offset(linktype: u32, frame: &[u8]) -> Option<usize> {
    const ETH_IPV4: u16 = 0x0800;
    const ETH_IPV6: u16 = 0x86dd;
    let be16 = |i: usize| Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]));
    let ethertype = |t: u16| matches!(t, ETH_IPV4 | ETH_IPV6);
    let off = match linktype {
        linktype::NULL => {
            let fam: [u8; 4] = frame.get(..4)?.try_into().ok()?;
            // The family is in the capturing host's byte order: the small reading is right.
            let family = u32::from_le_bytes(fam).min(u32::from_be_bytes(fam));
            // AF_INET; AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, Darwin.
            matches!(family, 2 | 10 | 24 | 28 | 30).then_some(4)?
        }
        linktype::ETHERNET => match be16(12)? {
            0x8100 | 0x88a8 => ethertype(be16(16)?).then_some(18)?,
            t => ethertype(t).then_some(14)?,
        },
        linktype::LINUX_SLL => ethertype(be16(14)?).then_some(16)?,
        linktype::LINUX_SLL2 => ethertype(be16(0)?).then_some(20)?,
        _ => 0,
    };
    let version = frame.get(off)? >> 4;
    let ok = match linktype {
        linktype::IPV4 => version == 4,
        linktype::IPV6 => version == 6,
        _ => version == 4 || version == 6,
    };
    ok.then_some(off)
}

fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let b = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Reads until `buf` is full or the end of input; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a little-endian classic pcap file of link type [`linktype::RAW`].
#[derive(Debug)]
pub struct PcapWriter<W: Write = BufWriter<File>> {
    w: W,
    file: String,
    nanos: bool,
}

impl PcapWriter {
    /// Creates (truncates) `path` and writes the file header; microsecond timestamps.
    pub fn create(path: impl AsRef<Path>) -> Result<PcapWriter, PcapError> {
        let file = path.as_ref().display().to_string();
        match File::create(path.as_ref()) {
            Ok(f) => PcapWriter::with_name(BufWriter::new(f), file, false),
            Err(source) => Err(PcapError::Io { file, source }),
        }
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header to `w`; microsecond timestamps.
    pub fn new(w: W) -> Result<PcapWriter<W>, PcapError> {
        PcapWriter::with_name(w, "<writer>".into(), false)
    }

    /// Writes the file header to `w`; nanosecond timestamps.
    pub fn new_nanos(w: W) -> Result<PcapWriter<W>, PcapError> {
        PcapWriter::with_name(w, "<writer>".into(), true)
    }

    /// Writes the file header to `w`; errors name the file `file`.
    pub fn with_name(w: W, file: String, nanos: bool) -> Result<PcapWriter<W>, PcapError> {
        let mut pw = PcapWriter { w, file, nanos };
        let magic = if nanos { MAGIC_NANOS } else { MAGIC_MICROS };
        let mut h = [0u8; FILE_HEADER];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&MAX_RECORD.to_le_bytes());
        h[20..24].copy_from_slice(&linktype::RAW.to_le_bytes());
        pw.put(&h)?;
        Ok(pw)
    }

    /// Appends one packet (starting at its IP header) captured at `ts` since the epoch.
    /// Packets longer than [`MAX_RECORD`] are stored truncated, with their full length.
    /// Timestamps past 2106 are clamped.
    pub fn write(&mut self, ts: Duration, data: &[u8]) -> Result<(), PcapError> {
        let caplen = data.len().min(MAX_RECORD as usize);
        let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
        let frac = if self.nanos {
            ts.subsec_nanos()
        } else {
            ts.subsec_micros()
        };
        let mut h = [0u8; RECORD_HEADER];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&frac.to_le_bytes());
        h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        h[12..16].copy_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.put(&h)?;
        self.put(&data[..caplen])
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        let r = self.w.flush();
        r.map_err(|source| self.io(source))
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, PcapError> {
        self.flush()?;
        Ok(self.w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), PcapError> {
        let r = self.w.write_all(b);
        r.map_err(|source| self.io(source))
    }

    fn io(&self, source: io::Error) -> PcapError {
        PcapError::Io {
            file: self.file.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 28-byte IPv4/UDP packet.
    const V4: [u8; 28] = [
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 80, 0,
        8, 0, 0,
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

            let r = PcapReader::from_reader(&bytes[..]).unwrap();
            assert_eq!(
                (r.link_type(), r.snaplen(), r.nanos()),
                (101, MAX_RECORD, nanos)
            );
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
            "x.pcap: not a pcap file: bad magic 0x47455420"
        );
        let ng = [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        assert!(
            err(&ng).starts_with("x.pcap: pcapng files are not supported"),
            "{}",
            err(&ng)
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
}
