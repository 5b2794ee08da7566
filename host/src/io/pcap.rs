//! Captures: a reader of classic pcap and pcapng files that yields the IP packets of the
//! common link types, and a writer of classic raw-IP captures.
//!
//! Classic pcap: a 24-byte file header (magic, version, zone, accuracy, snaplen, link type) in
//! the writer's byte order, then records of a 16-byte header (seconds, micro- or nanoseconds,
//! captured length, original length) followed by the captured bytes. pcapng: blocks of (type,
//! length, body, length). A section header block (SHB) sets the byte order of its section;
//! each interface description block (IDB) gives an interface's link type and timestamp unit
//! (`if_tsresol`, `if_tsoffset`); enhanced (EPB) and simple (SPB) packet blocks carry the
//! packets. Other blocks (statistics, name resolution, …) are skipped.
//!
//! The `pcap-parser` crate parses both formats; this module adds what a replay needs on top:
//! the link-layer header taken off, the timestamps as [`Duration`]s, limits on what a record
//! may claim, and errors that name the file and the byte offset.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, LegacyPcapReader, OptionCode, PcapBlockOwned, PcapNGReader};

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

/// The largest pcapng block the reader accepts: a packet of [`MAX_RECORD`] bytes and room for
/// its block's header and options.
pub const MAX_BLOCK: u32 = MAX_RECORD + 65_536;

/// The reader's buffer at first: a few ordinary packets.
const BUFFER_START: usize = 64 * 1024;

/// The reader's buffer once a block did not fit: two of the largest blocks, so that a refill
/// moves data rarely.
const BUFFER: usize = 2 * MAX_BLOCK as usize;

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
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("{file}: not a pcap or pcapng file: bad magic {magic:#010x}")]
    BadMagic {
        /// The file.
        file: String,
        /// The first four bytes, most significant first.
        magic: u32,
    },
    /// A link type the reader cannot take IP packets out of (the file's, or in pcapng the
    /// interface's that a packet came on).
    #[error("{file}: unsupported link type {linktype}")]
    UnsupportedLinkType {
        /// The file.
        file: String,
        /// The link type from the file header or the interface description.
        linktype: u32,
    },
    /// The file ends in the middle of a header, a record or a block.
    #[error("{file}: truncated {what} at byte offset {offset}")]
    Truncated {
        /// The file.
        file: String,
        /// "file header", "section header block", "record header", "record", "block header"
        /// or "block".
        what: &'static str,
        /// Offset of the start of the incomplete header, record or block.
        offset: u64,
    },
    /// A record or block claims more bytes than any capture holds (a corrupt file).
    #[error("{file}: {what} at byte offset {offset} claims {len} bytes (limit {limit})")]
    RecordTooLarge {
        /// The file.
        file: String,
        /// "record" (a classic record, or a pcapng packet's captured length) or "block".
        what: &'static str,
        /// Offset of the record or block.
        offset: u64,
        /// The length it claims.
        len: u32,
        /// [`MAX_RECORD`] or [`MAX_BLOCK`].
        limit: u32,
    },
    /// A block or record that is complete but cannot be what it claims (a corrupt file).
    #[error("{file}: malformed {what} at byte offset {offset}: {why}")]
    Malformed {
        /// The file.
        file: String,
        /// "section header block", "block", "interface description" or "packet block".
        what: &'static str,
        /// Offset of the block.
        offset: u64,
        /// What is wrong with it.
        why: String,
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

/// The input as `pcap-parser` reads it: the four bytes read to tell the formats apart, then
/// the rest.
type Input<R> = Source<io::Chain<io::Cursor<[u8; 4]>, R>>;

/// Reads `r` until each buffer is full or the input ends: `pcap-parser` parses the header it
/// got from one `read`, and a pipe may hand it a few bytes. The I/O error behind a failed
/// read is kept in `error` (the parser reports only that a read failed).
struct Source<R> {
    r: R,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_full(&mut self.r, buf).inspect_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(copy);
        })
    }
}

/// The parser of the capture's format.
enum Blocks<R: Read> {
    Pcap(LegacyPcapReader<Input<R>>),
    Pcapng(PcapNGReader<Input<R>>),
}

impl<R: Read> Blocks<R> {
    fn get(&mut self) -> &mut dyn PcapReaderIterator {
        match self {
            Blocks::Pcap(r) => r,
            Blocks::Pcapng(r) => r,
        }
    }
}

/// What the reader knows of the format: the file header's fields, or the current pcapng
/// section's byte order and interfaces.
#[derive(Debug)]
enum Format {
    Pcap {
        linktype: u32,
        nanos: bool,
        big_endian: bool,
        /// 16 bytes, or 24 in the "modified" format of a patched libpcap.
        record_header: usize,
    },
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
        /// The time of the last packet with one (simple packet blocks have none).
        last: Duration,
    },
}

/// A pcapng interface: its link type and clock.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second (`if_tsresol`: 10^n, or 2^n with the top bit set).
    units: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset: i64,
}

/// Reads the IP packets of a classic pcap file (either byte order, micro- or nanosecond
/// timestamps) or a pcapng file (any number of sections and interfaces, each with its link
/// type and timestamp resolution). Frames that are not IPv4 or IPv6 are skipped and counted.
pub struct PcapReader<R: Read = BufReader<File>> {
    blocks: Blocks<R>,
    format: Format,
    file: String,
    read_error: Arc<Mutex<Option<io::Error>>>,
    /// The buffer has grown to [`BUFFER`].
    grown: bool,
    skipped: u64,
    done: bool,
}

impl<R: Read> std::fmt::Debug for PcapReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("file", &self.file)
            .field("format", &self.format)
            .field("skipped", &self.skipped)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl PcapReader {
    /// Opens `path` and checks its file header (classic pcap) or first section header
    /// (pcapng).
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
        let mut magic = [0u8; 4];
        match read_full(&mut r, &mut magic) {
            Ok(4) => {}
            Ok(_) => {
                return Err(PcapError::Truncated {
                    file,
                    what: "file header",
                    offset: 0,
                })
            }
            Err(source) => return Err(PcapError::Io { file, source }),
        }
        let read_error = Arc::new(Mutex::new(None));
        let input = Source {
            r: io::Cursor::new(magic).chain(r),
            error: Arc::clone(&read_error),
        };
        let pcapng = u32::from_be_bytes(magic) == MAGIC_PCAPNG;
        let what = if pcapng {
            "section header block"
        } else {
            "file header"
        };
        let opened = if pcapng {
            PcapNGReader::new(BUFFER_START, input).map(Blocks::Pcapng)
        } else {
            LegacyPcapReader::new(BUFFER_START, input).map(Blocks::Pcap)
        };
        let mut blocks = match opened {
            Ok(b) => b,
            Err(pcap_parser::PcapError::HeaderNotRecognized) if !pcapng => {
                let magic = u32::from_be_bytes(magic);
                return Err(PcapError::BadMagic { file, magic });
            }
            Err(pcap_parser::PcapError::ReadError) => {
                return Err(PcapError::Io {
                    source: take_error(&read_error),
                    file,
                })
            }
            Err(pcap_parser::PcapError::Incomplete(_) | pcap_parser::PcapError::Eof) => {
                return Err(PcapError::Truncated {
                    file,
                    what,
                    offset: 0,
                })
            }
            Err(_) => {
                return Err(PcapError::Malformed {
                    file,
                    what,
                    offset: 0,
                    why: "bad byte-order magic, version or length".into(),
                })
            }
        };
        let format = match &mut blocks {
            Blocks::Pcapng(_) => Format::Pcapng {
                big_endian: false,
                interfaces: Vec::new(),
                last: Duration::ZERO,
            },
            // The legacy reader hands out the file header it has parsed as its first block.
            Blocks::Pcap(r) => match r.next() {
                Ok((len, PcapBlockOwned::LegacyHeader(h))) => {
                    // The upper bits of the link-type field carry FCS information.
                    let linktype = (h.network.0 as u32) & 0xffff;
                    let format = Format::Pcap {
                        linktype,
                        nanos: h.is_nanosecond_precision(),
                        big_endian: h.is_bigendian(),
                        record_header: if h.is_modified_format() { 24 } else { 16 },
                    };
                    r.consume(len);
                    if !supported(linktype) {
                        return Err(PcapError::UnsupportedLinkType { file, linktype });
                    }
                    format
                }
                _ => {
                    return Err(PcapError::Truncated {
                        file,
                        what,
                        offset: 0,
                    })
                }
            },
        };
        Ok(PcapReader {
            blocks,
            format,
            file,
            read_error,
            grown: false,
            skipped: 0,
            done: false,
        })
    }

    /// True for a pcapng file, false for a classic pcap file.
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::Pcapng { .. })
    }

    /// Frames skipped so far because they are not IPv4 or IPv6 (or too short for their
    /// link-layer header).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next packet, including non-IP ones (`None` data offset), or `None` at the end.
    fn next_frame(&mut self) -> Result<Option<(PcapRecord, Option<usize>)>, PcapError> {
        loop {
            let blocks = self.blocks.get();
            let at = blocks.consumed() as u64;
            if let Format::Pcapng { big_endian, .. } = &self.format {
                // Every pcapng block is at least 12 bytes (type, length, length again);
                // pcap-parser 0.17 takes 12 off a shorter length before checking it.
                if let Some(len) = ng_block_len(blocks.data(), *big_endian) {
                    if len < 12 {
                        return Err(PcapError::Malformed {
                            file: self.file.clone(),
                            what: "block",
                            offset: at,
                            why: format!("block length {len}, below the 12 bytes of any block"),
                        });
                    }
                }
            }
            let failure = match blocks.next() {
                Ok((len, block)) => {
                    let frame = self.format.frame(block, &self.file, at);
                    blocks.consume(len);
                    match frame? {
                        Some(f) => return Ok(Some(f)),
                        None => continue,
                    }
                }
                Err(pcap_parser::PcapError::Eof) => return Ok(None),
                Err(pcap_parser::PcapError::Incomplete(_)) => {
                    let before = blocks.data().len();
                    if blocks.refill().is_err() {
                        return Err(PcapError::Io {
                            file: self.file.clone(),
                            source: take_error(&self.read_error),
                        });
                    }
                    // A refill that adds nothing to an incomplete block: the buffer is full.
                    if blocks.data().len() > before || blocks.reader_exhausted() {
                        continue;
                    }
                    if !self.grown {
                        self.grown = blocks.grow(BUFFER);
                        continue;
                    }
                    "the block does not fit in the reader's buffer".to_string()
                }
                Err(pcap_parser::PcapError::BufferTooSmall) if !self.grown => {
                    self.grown = blocks.grow(BUFFER);
                    continue;
                }
                Err(pcap_parser::PcapError::ReadError) => {
                    return Err(PcapError::Io {
                        file: self.file.clone(),
                        source: take_error(&self.read_error),
                    })
                }
                Err(e) => parse_error(&e),
            };
            let exhausted = blocks.reader_exhausted();
            return Err(self
                .format
                .broken(blocks.data(), exhausted, &self.file, at, failure));
        }
    }
}

/// The length field of the pcapng block at the front of `data` (a section header block
/// tells its own byte order; other blocks have their section's), if its header is there.
fn ng_block_len(data: &[u8], big_endian: bool) -> Option<u32> {
    let word = |at: usize, be: bool| {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let shb = data.get(..4)? == [0x0a, 0x0d, 0x0d, 0x0a];
    let be = if shb {
        data.get(8..12)? == [0x1a, 0x2b, 0x3c, 0x4d]
    } else {
        big_endian
    };
    word(4, be)
}

impl Format {
    /// The packet of `block` at byte offset `at`, if it is a packet; other blocks update
    /// what the reader knows of the format.
    fn frame(
        &mut self,
        block: PcapBlockOwned<'_>,
        file: &str,
        at: u64,
    ) -> Result<Option<(PcapRecord, Option<usize>)>, PcapError> {
        let malformed = |what: &'static str, why: String| PcapError::Malformed {
            file: file.into(),
            what,
            offset: at,
            why,
        };
        let too_large = |len: u32| PcapError::RecordTooLarge {
            file: file.into(),
            what: "record",
            offset: at,
            len,
            limit: MAX_RECORD,
        };
        let (linktype, ts, data, origlen) = match (self, block) {
            (
                Format::Pcap {
                    linktype, nanos, ..
                },
                PcapBlockOwned::Legacy(b),
            ) => {
                if b.caplen > MAX_RECORD {
                    return Err(too_large(b.caplen));
                }
                let nanos = if *nanos {
                    b.ts_usec
                } else {
                    b.ts_usec.saturating_mul(1000)
                };
                // Duration::new carries nanoseconds beyond one second into the seconds.
                let ts =
                    Duration::new(u64::from(b.ts_sec), 0) + Duration::from_nanos(u64::from(nanos));
                (*linktype, ts, b.data, b.origlen)
            }
            (
                Format::Pcapng {
                    big_endian,
                    interfaces,
                    last,
                },
                PcapBlockOwned::NG(block),
            ) => match block {
                Block::SectionHeader(shb) => {
                    *big_endian = shb.big_endian();
                    interfaces.clear();
                    return Ok(None);
                }
                Block::InterfaceDescription(idb) => {
                    let units = units(idb.if_tsresol).ok_or_else(|| {
                        malformed(
                            "interface description",
                            format!("if_tsresol {:#04x} is not a resolution", idb.if_tsresol),
                        )
                    })?;
                    interfaces.push(Interface {
                        linktype: (idb.linktype.0 as u32) & 0xffff,
                        units,
                        offset: tsoffset(&idb.options, *big_endian),
                    });
                    return Ok(None);
                }
                Block::EnhancedPacket(epb) => {
                    let iface = interface(interfaces, epb.if_id)
                        .map_err(|why| malformed("packet block", why))?;
                    if epb.caplen > MAX_RECORD {
                        return Err(too_large(epb.caplen));
                    }
                    let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                    let ts = iface.timestamp(ticks).ok_or_else(|| {
                        malformed(
                            "packet block",
                            "timestamp after 2106 (beyond what pcap can hold)".into(),
                        )
                    })?;
                    *last = ts;
                    // `data` is padded to four bytes; the captured length is what counts.
                    let data = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                    (iface.linktype, ts, data, epb.origlen)
                }
                Block::SimplePacket(spb) => {
                    // No timestamp: the packet counts as captured with the one before it.
                    let iface =
                        interface(interfaces, 0).map_err(|why| malformed("packet block", why))?;
                    let data = spb.data.get(..spb.origlen as usize).unwrap_or(spb.data);
                    (iface.linktype, *last, data, spb.origlen)
                }
                _ => return Ok(None),
            },
            // The header, handled when the file was opened.
            _ => return Ok(None),
        };
        if !supported(linktype) {
            return Err(PcapError::UnsupportedLinkType {
                file: file.into(),
                linktype,
            });
        }
        let ip = ip_offset(linktype, data);
        let record = PcapRecord {
            ts,
            truncated: (data.len() as u64) < u64::from(origlen),
            data: data.to_vec(),
        };
        Ok(Some((record, ip)))
    }

    /// The error for a record or block at `at` that the parser could not take (`failure`),
    /// from its header in `data`: cut short by the end of the file, claiming too much, or
    /// malformed.
    fn broken(
        &self,
        data: &[u8],
        exhausted: bool,
        file: &str,
        at: u64,
        failure: String,
    ) -> PcapError {
        let file = file.to_string();
        let truncated = |what| PcapError::Truncated {
            file: file.clone(),
            what,
            offset: at,
        };
        let u32_at = |i: usize, big_endian: bool| {
            let b: [u8; 4] = data.get(i..i + 4)?.try_into().ok()?;
            Some(if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            })
        };
        match self {
            Format::Pcap {
                big_endian,
                record_header,
                ..
            } => match u32_at(8, *big_endian) {
                _ if data.len() < *record_header => truncated("record header"),
                Some(len) if len > MAX_RECORD => PcapError::RecordTooLarge {
                    file,
                    what: "record",
                    offset: at,
                    len,
                    limit: MAX_RECORD,
                },
                _ if exhausted => truncated("record"),
                _ => PcapError::Malformed {
                    file,
                    what: "record",
                    offset: at,
                    why: failure,
                },
            },
            Format::Pcapng { big_endian, .. } => {
                // A section header gives its own byte order (its byte-order magic, at 8).
                let big_endian = match u32_at(0, false) {
                    Some(MAGIC_PCAPNG) => u32_at(8, true).map_or(*big_endian, |m| m == 0x1a2b_3c4d),
                    _ => *big_endian,
                };
                match u32_at(4, big_endian) {
                    None => truncated("block header"),
                    Some(len) if len > MAX_BLOCK => PcapError::RecordTooLarge {
                        file,
                        what: "block",
                        offset: at,
                        len,
                        limit: MAX_BLOCK,
                    },
                    Some(len) if exhausted && data.len() < len as usize => truncated("block"),
                    Some(_) => PcapError::Malformed {
                        file,
                        what: "block",
                        offset: at,
                        why: failure,
                    },
                }
            }
        }
    }
}

impl Interface {
    /// The time of a packet block's `ticks`, or `None` past what a classic pcap file can
    /// hold (2106): the replay's clock would take billions of steps to get there.
    fn timestamp(&self, ticks: u64) -> Option<Duration> {
        let secs = i128::from(ticks / self.units) + i128::from(self.offset);
        let frac = u128::from(ticks % self.units) * 1_000_000_000 / u128::from(self.units);
        // Before the epoch (a negative offset) counts as the epoch.
        let secs = u32::try_from(secs.max(0)).ok()?;
        Some(Duration::new(u64::from(secs), frac as u32))
    }
}

/// The interface `id` of the current section.
fn interface(interfaces: &[Interface], id: u32) -> Result<Interface, String> {
    let n = interfaces.len();
    interfaces
        .get(id as usize)
        .copied()
        .ok_or_else(|| format!("a packet of interface {id}, but the section describes {n}"))
}

/// Timestamp units per second of an `if_tsresol` value: 10^n, or 2^n with the top bit set.
fn units(tsresol: u8) -> Option<u64> {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(n)
    } else {
        1u64.checked_shl(n)
    }
}

/// The `if_tsoffset` option (seconds, in the section's byte order), or 0.
fn tsoffset(options: &[pcap_parser::PcapNGOption<'_>], big_endian: bool) -> i64 {
    options
        .iter()
        .filter(|o| o.code == OptionCode::IfTsoffset)
        .find_map(|o| o.as_bytes().ok()?.try_into().ok())
        .map_or(0, |b: [u8; 8]| {
            if big_endian {
                i64::from_be_bytes(b)
            } else {
                i64::from_le_bytes(b)
            }
        })
}

/// The I/O error behind a failed read (one that `Source` saw), or a general one.
fn take_error(slot: &Mutex<Option<io::Error>>) -> io::Error {
    let e = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    e.unwrap_or_else(|| io::Error::other("read failed"))
}

/// A parser error in words (the parser's own `Display` prints the input bytes).
fn parse_error<I>(e: &pcap_parser::PcapError<I>) -> String {
    use pcap_parser::PcapError as E;
    match e {
        E::NomError(_, kind) | E::OwnedNomError(_, kind) => format!("parser: {kind:?}"),
        E::BufferTooSmall => "the block does not fit in the reader's buffer".into(),
        E::UnexpectedEof => "the file ends inside it".into(),
        E::HeaderNotRecognized => "not a pcap or pcapng header".into(),
        E::Eof | E::Incomplete(_) | E::ReadError => "incomplete".into(),
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

/// True for the link types [`ip_offset`] understands.
fn supported(linktype: u32) -> bool {
    matches!(
        linktype,
        linktype::NULL
            | linktype::ETHERNET
            | linktype::RAW
            | linktype::LINUX_SLL
            | linktype::IPV4
            | linktype::IPV6
            | linktype::LINUX_SLL2
    )
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
mod tests;
