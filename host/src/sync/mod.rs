//! Connection sync between directors (issue 14): the wire format, version 1, and the checks
//! every received message passes before anything in it is believed.
//!
//! A message is one UDP datagram, at most [`MAX_MESSAGE`] bytes (no fragmentation on a
//! 1,500-byte path), all integers big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `RVSY` |
//! | 4 | version (1) |
//! | 5 | kind: 1 entries, 2 bulk start, 3 bulk end, 4 heartbeat, 5 templates ([`Kind`]) |
//! | 6..8 | entry count |
//! | 8..12 | sender id (`sync.id`, unique among the directors) |
//! | 12..16 | epoch: the sender's start, Unix seconds; a restart begins a higher one |
//! | 16..24 | sequence number, from 1 within an epoch, one per message |
//! | 24..28 | reserved, 0 |
//! | 28.. | entries, [`ENTRY_LEN`] bytes each ([`Entry`]) |
//! | last 32 | HMAC-SHA256 of everything before it, under the shared key |
//!
//! A connection (in an entries message): protocol (6, 17), state ([`State`] index), flags
//! (0), address family (4), client address and port, virtual address and port, realserver
//! address and port, 2 bytes 0, then the seconds left before it expires.
//!
//! A persistence template (in a templates message, kind 5, which a build before templates
//! refuses whole as `header` and so loses nothing else): protocol, 0, flags (bit 0: a
//! template), address family (4), the 8-byte affinity key (opaque: what the service's
//! persistence plugin named), virtual address and port, realserver address and port, then the
//! seconds left.
//!
//! Receiving: [`decode`] checks length, magic, version, count and the MAC (in constant time)
//! before it reads an entry, then every entry's fields; [`ReplayWindow::accept`] then takes a
//! sender's (epoch, sequence) once: a higher epoch starts afresh (the sender restarted), a
//! lower one is a replay, and within an epoch a 64-message window takes late messages once.
//! A message that fails any of these is counted by its [`Reject`] reason and changes nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::conn::state::State;

/// The first bytes of every message.
pub const MAGIC: [u8; 4] = *b"RVSY";
/// The format this build speaks.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 28;
/// One entry's length.
pub const ENTRY_LEN: usize = 28;
/// The MAC's length (HMAC-SHA256, untruncated).
pub const MAC_LEN: usize = 32;
/// The largest message: one 1,500-byte IPv4 packet less its IPv4 and UDP headers.
pub const MAX_MESSAGE: usize = 1472;
/// Entries in one message, at most.
pub const MAX_ENTRIES: usize = (MAX_MESSAGE - HEADER_LEN - MAC_LEN) / ENTRY_LEN;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// New and changed connections.
    Entries = 1,
    /// A bulk transfer (the whole table, to a peer that joined) starts.
    BulkStart = 2,
    /// A bulk transfer ended: the receiver has everything.
    BulkEnd = 3,
    /// Nothing changed; the sender is alive (sync lag and peer liveness).
    Heartbeat = 4,
    /// New and refreshed persistence templates.
    Templates = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entries,
            2 => Kind::BulkStart,
            3 => Kind::BulkEnd,
            4 => Kind::Heartbeat,
            5 => Kind::Templates,
            _ => return None,
        })
    }
}

/// A message's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub sender: u32,
    pub epoch: u32,
    pub seq: u64,
}

/// One connection (or persistence template) as sync carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// IP protocol: 6 or 17.
    pub proto: u8,
    /// The connection's state (a template's is [`State::None`]).
    pub state: State,
    /// A persistence template's affinity key: the entry is a template (affinity key →
    /// realserver, for the service at `vip`), not a connection; its `client` is unspecified.
    pub template: Option<u64>,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub server: SocketAddrV4,
    /// Seconds before it expires.
    pub expires_in: u32,
}

const F_TEMPLATE: u8 = 1;
const AF_INET: u8 = 4;

impl Entry {
    /// The kind of message that carries it: [`Kind::Templates`] for a template,
    /// [`Kind::Entries`] for a connection.
    pub fn kind(&self) -> Kind {
        if self.template.is_some() {
            Kind::Templates
        } else {
            Kind::Entries
        }
    }
}

/// Why a received message was dropped (one counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than a header and a MAC, longer than [`MAX_MESSAGE`], or not the length its
    /// count says.
    Length,
    /// Not a ringvs sync message.
    Magic,
    /// A version this build does not speak.
    Version,
    /// More entries than a message holds.
    Oversized,
    /// The MAC does not match: forged, corrupted, or another key.
    Mac,
    /// An unknown kind, or a reserved field not 0.
    Header,
    /// An entry with an unknown protocol, state, flag or address family.
    Entry,
    /// A message already taken, or older than the window.
    Replay,
}

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; 8] = [
        Reject::Length,
        Reject::Magic,
        Reject::Version,
        Reject::Oversized,
        Reject::Mac,
        Reject::Header,
        Reject::Entry,
        Reject::Replay,
    ];

    /// The `reason` label of `ringvs_sync_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Length => "length",
            Reject::Magic => "magic",
            Reject::Version => "version",
            Reject::Oversized => "oversized",
            Reject::Mac => "mac",
            Reject::Header => "header",
            Reject::Entry => "entry",
            Reject::Replay => "replay",
        }
    }
}

/// The shared key (`sync.key`: 32 bytes or more of randomness, as 64+ hex digits).
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Fewest key bytes accepted.
    pub const MIN_LEN: usize = 32;

    /// A key from its hex form; at least [`Key::MIN_LEN`] bytes.
    pub fn from_hex(s: &str) -> Result<Key, String> {
        let s = s.trim();
        if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("expected hex digits, an even number of them".into());
        }
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
            .collect();
        if bytes.len() < Key::MIN_LEN {
            return Err(format!(
                "{} bytes: a key needs at least {} (e.g. `openssl rand -hex 32`)",
                bytes.len(),
                Key::MIN_LEN
            ));
        }
        Ok(Key(bytes))
    }

    /// The key's bytes (for `ringvs save`).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Appends the message of `header` and `entries` (at most [`MAX_ENTRIES`]) to `out`, MAC
/// included.
pub fn encode(key: &Key, header: &Header, entries: &[Entry], out: &mut Vec<u8>) {
    assert!(entries.len() <= MAX_ENTRIES, "{} entries", entries.len());
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.kind as u8);
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    out.extend_from_slice(&header.sender.to_be_bytes());
    out.extend_from_slice(&header.epoch.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for e in entries {
        // Templates in templates messages only (the layout differs); connections in any
        // other kind (a bulk end may carry some: the format allows it).
        debug_assert!(
            e.template.is_some() == (header.kind == Kind::Templates),
            "a {:?} in a {:?} message",
            e.kind(),
            header.kind
        );
        out.push(e.proto);
        let put = |out: &mut Vec<u8>, a: SocketAddrV4| {
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        };
        match e.template {
            None => {
                out.extend_from_slice(&[e.state as u8, 0, AF_INET]);
                for a in [e.client, e.vip, e.server] {
                    put(out, a);
                }
                out.extend_from_slice(&[0; 2]);
            }
            Some(key) => {
                out.extend_from_slice(&[State::None as u8, F_TEMPLATE, AF_INET]);
                out.extend_from_slice(&key.to_be_bytes());
                put(out, e.vip);
                put(out, e.server);
            }
        }
        out.extend_from_slice(&e.expires_in.to_be_bytes());
    }
    let mut mac = key.mac();
    mac.update(&out[start..]);
    out.extend_from_slice(&mac.finalize().into_bytes());
}

/// `body` (a message without its MAC) with the MAC of `key` appended: for tests and the fuzz
/// target, which must reach what [`decode`] checks after the MAC.
pub fn sign_for_tests(key: &Key, body: &[u8]) -> Vec<u8> {
    let mut mac = key.mac();
    mac.update(body);
    let mut m = body.to_vec();
    m.extend_from_slice(&mac.finalize().into_bytes());
    m
}

/// Reads a received message: its header and entries, or why it is refused. Nothing in the
/// message is read as an entry before its MAC checked out.
pub fn decode(key: &Key, msg: &[u8]) -> Result<(Header, Vec<Entry>), Reject> {
    if msg.len() < HEADER_LEN + MAC_LEN || msg.len() > MAX_MESSAGE {
        return Err(Reject::Length);
    }
    if msg[..4] != MAGIC {
        return Err(Reject::Magic);
    }
    if msg[4] != VERSION {
        return Err(Reject::Version);
    }
    let count = usize::from(u16::from_be_bytes([msg[6], msg[7]]));
    if count > MAX_ENTRIES {
        return Err(Reject::Oversized);
    }
    if msg.len() != HEADER_LEN + count * ENTRY_LEN + MAC_LEN {
        return Err(Reject::Length);
    }
    let (body, tag) = msg.split_at(msg.len() - MAC_LEN);
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| Reject::Mac)?;
    let be32 = |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let kind = Kind::from_u8(msg[5]).ok_or(Reject::Header)?;
    if be32(24) != 0 {
        return Err(Reject::Header);
    }
    let header = Header {
        kind,
        sender: be32(8),
        epoch: be32(12),
        seq: u64::from(be32(16)) << 32 | u64::from(be32(20)),
    };
    let parse = if kind == Kind::Templates {
        template
    } else {
        entry
    };
    let entries = body[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .map(parse)
        .collect::<Option<Vec<_>>>()
        .ok_or(Reject::Entry)?;
    Ok((header, entries))
}

fn entry(b: &[u8]) -> Option<Entry> {
    let proto = b[0];
    let state = State::from_index(b[1])?;
    let valid_state = match proto {
        6 => state != State::Udp,
        17 => state == State::Udp,
        _ => return None,
    };
    if !valid_state || b[2] != 0 || b[3] != AF_INET || b[22..24] != [0, 0] {
        return None;
    }
    Some(Entry {
        proto,
        state,
        template: None,
        client: addr(b, 4),
        vip: addr(b, 10),
        server: addr(b, 16),
        expires_in: seconds(b),
    })
}

/// A template's 28 bytes (see the module docs).
fn template(b: &[u8]) -> Option<Entry> {
    let proto = b[0];
    if !matches!(proto, 6 | 17)
        || b[1] != State::None as u8
        || b[2] != F_TEMPLATE
        || b[3] != AF_INET
    {
        return None;
    }
    let mut key = [0; 8];
    key.copy_from_slice(&b[4..12]);
    Some(Entry {
        proto,
        state: State::None,
        template: Some(u64::from_be_bytes(key)),
        client: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        vip: addr(b, 12),
        server: addr(b, 18),
        expires_in: seconds(b),
    })
}

fn addr(b: &[u8], at: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]),
        u16::from_be_bytes([b[at + 4], b[at + 5]]),
    )
}

fn seconds(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[24], b[25], b[26], b[27]])
}

/// Messages a window remembers behind the highest sequence number.
pub const WINDOW: u64 = 64;

/// One sender's newest epoch, its highest sequence number, and which of the [`WINDOW`]
/// numbers below it were taken (IPsec's anti-replay window, RFC 4303 §3.4.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    epoch: u32,
    top: u64,
    bits: u64,
    /// The first sequence number taken in this epoch (what came before is not ours to miss).
    first: u64,
}

impl Seen {
    /// Moves the window up to `seq` (above `top`); returns how many sequence numbers left
    /// it (or jumped past it) never taken: messages lost.
    fn slide(&mut self, seq: u64) -> u64 {
        let shift = seq - self.top;
        // Leaving: bit positions from max(0, WINDOW - shift) to the last one at or above
        // `first`.
        let lo = WINDOW.saturating_sub(shift);
        let hi = (WINDOW - 1).min(self.top - self.first);
        let mut lost = 0;
        if lo <= hi {
            let width = hi - lo + 1;
            let mask = if width >= 64 {
                u64::MAX
            } else {
                ((1u64 << width) - 1) << lo
            };
            lost += width - u64::from((self.bits & mask).count_ones());
        }
        // Jumped past: numbers above `top` that are never in the new window.
        lost += seq.saturating_sub(WINDOW).saturating_sub(self.top);
        self.bits = if shift >= WINDOW {
            0
        } else {
            self.bits << shift
        };
        self.bits |= 1;
        self.top = seq;
        lost
    }
}

/// Which messages each sender has had taken.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    senders: std::collections::HashMap<u32, Seen>,
    lost: u64,
}

impl ReplayWindow {
    /// Messages lost so far, all senders: sequence numbers that left the window (or were
    /// jumped past) without being taken. Late ones within the window are not lost.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Senders one window keeps, at most (an authenticated sender only gets here).
    pub const MAX_SENDERS: usize = 256;

    /// Takes `h` if it was not taken before: a higher epoch than the sender's last starts it
    /// afresh, a lower one is refused, and within the epoch each sequence number is taken
    /// once, back to [`WINDOW`] behind the highest.
    pub fn accept(&mut self, h: &Header) -> Result<(), Reject> {
        if h.seq == 0 {
            return Err(Reject::Replay);
        }
        if !self.senders.contains_key(&h.sender) && self.senders.len() >= Self::MAX_SENDERS {
            return Err(Reject::Replay);
        }
        let s = self.senders.entry(h.sender).or_default();
        if h.epoch < s.epoch {
            return Err(Reject::Replay);
        }
        if h.epoch > s.epoch {
            *s = Seen {
                epoch: h.epoch,
                top: h.seq,
                bits: 1,
                first: h.seq,
            };
            return Ok(());
        }
        if h.seq > s.top {
            self.lost += s.slide(h.seq);
            return Ok(());
        }
        let behind = s.top - h.seq;
        if behind >= WINDOW || s.bits & (1 << behind) != 0 {
            return Err(Reject::Replay);
        }
        s.bits |= 1 << behind;
        Ok(())
    }
}

pub mod link;
pub mod node;

pub use link::{Link, QueueSync, Stats};

#[cfg(test)]
mod tests;
