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
//! | 5 | kind: 1 entries, 2 bulk start, 3 bulk end, 4 heartbeat, 5 templates, 6 IPv6 entries, 7 IPv6 templates ([`Kind`]) |
//! | 6..8 | entry count |
//! | 8..12 | sender id (`sync.id`, unique among the directors) |
//! | 12..16 | epoch: the sender's start, Unix seconds; a restart begins a higher one |
//! | 16..24 | sequence number, from 1 within an epoch, one per message |
//! | 24..28 | reserved, 0 |
//! | 28.. | entries, [`ENTRY_LEN`] bytes each (kinds 6 and 7: [`ENTRY6_LEN`]) ([`Entry`]) |
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
//! IPv6 (kinds 6 and 7, which a build before them refuses whole as `header`, as above): the
//! same fields, each address in 16 bytes, in 64-byte entries. A connection: protocol, state,
//! flags (0), address family (6), client, virtual and realserver address and port, 2 bytes 0,
//! the seconds left. A template: protocol, 0, flags (1), address family (6), the key, virtual
//! and realserver address and port, 12 bytes 0, the seconds left. An entry goes in an IPv6
//! message if any of its addresses is IPv6; an IPv4 address there (a tunnel's realserver may
//! be of the other family than its service) is written IPv4-mapped (`::ffff:a.b.c.d`). A
//! connection's client and virtual address are of one family, and an entry of IPv4
//! addresses only is refused in an IPv6 message (it has its own kind).
//!
//! Receiving: [`decode`] checks length, magic, version, count and the MAC (in constant time)
//! before it reads an entry, then every entry's fields; [`ReplayWindow::accept`] then takes a
//! sender's (epoch, sequence) once: a higher epoch starts afresh (the sender restarted), a
//! lower one is a replay, and within an epoch a 64-message window takes late messages once.
//! A message that fails any of these is counted by its [`Reject`] reason and changes nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

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
/// One entry's length in an IPv6 message (kinds 6 and 7).
pub const ENTRY6_LEN: usize = 64;
/// Entries in one IPv6 message, at most.
pub const MAX_ENTRIES6: usize = (MAX_MESSAGE - HEADER_LEN - MAC_LEN) / ENTRY6_LEN;

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
    /// New and changed connections with an IPv6 address.
    Entries6 = 6,
    /// New and refreshed persistence templates with an IPv6 address.
    Templates6 = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entries,
            2 => Kind::BulkStart,
            3 => Kind::BulkEnd,
            4 => Kind::Heartbeat,
            5 => Kind::Templates,
            6 => Kind::Entries6,
            7 => Kind::Templates6,
            _ => return None,
        })
    }

    /// True for the kinds of IPv6 entries.
    pub fn is_six(self) -> bool {
        matches!(self, Kind::Entries6 | Kind::Templates6)
    }

    /// True for the kinds that carry templates.
    pub fn is_templates(self) -> bool {
        matches!(self, Kind::Templates | Kind::Templates6)
    }

    /// One entry's length in a message of this kind.
    pub fn entry_len(self) -> usize {
        if self.is_six() {
            ENTRY6_LEN
        } else {
            ENTRY_LEN
        }
    }

    /// Entries in one message of this kind, at most.
    pub fn max_entries(self) -> usize {
        if self.is_six() {
            MAX_ENTRIES6
        } else {
            MAX_ENTRIES
        }
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
    /// realserver, for the service at `vip`), not a connection; its `client` is unspecified
    /// ([`Entry::NO_CLIENT`]).
    pub template: Option<u64>,
    /// The client (of the virtual address's family).
    pub client: SocketAddr,
    pub vip: SocketAddr,
    /// The realserver (a tunnelled one may be of the other family).
    pub server: SocketAddr,
    /// Seconds before it expires.
    pub expires_in: u32,
}

const F_TEMPLATE: u8 = 1;
const AF_INET: u8 = 4;
const AF_INET6: u8 = 6;

impl Entry {
    /// A template's client: none.
    pub const NO_CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

    /// The kind of message that carries it: templates or connections, in an IPv6 message if
    /// any of its addresses is IPv6.
    pub fn kind(&self) -> Kind {
        let six = self.vip.is_ipv6()
            || self.server.is_ipv6()
            || (self.template.is_none() && self.client.is_ipv6());
        match (self.template.is_some(), six) {
            (false, false) => Kind::Entries,
            (true, false) => Kind::Templates,
            (false, true) => Kind::Entries6,
            (true, true) => Kind::Templates6,
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

/// Appends the message of `header` and `entries` (at most `header.kind`'s
/// [`Kind::max_entries`], each of that kind) to `out`, MAC included.
pub fn encode(key: &Key, header: &Header, entries: &[Entry], out: &mut Vec<u8>) {
    let kind = header.kind;
    assert!(
        entries.len() <= kind.max_entries(),
        "{} entries",
        entries.len()
    );
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    out.extend_from_slice(&header.sender.to_be_bytes());
    out.extend_from_slice(&header.epoch.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let six = kind.is_six();
    for e in entries {
        // Each kind has its layout; connections may also go in a bulk end (the format
        // allows it), IPv4 ones only.
        let ours = e.kind() == kind || (e.kind() == Kind::Entries && !kind.is_templates() && !six);
        debug_assert!(ours, "a {:?} in a {:?} message", e.kind(), kind);
        let at = out.len();
        let put = |out: &mut Vec<u8>, a: SocketAddr| {
            match (six, a.ip()) {
                (false, IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
                (false, IpAddr::V6(_)) => out.extend_from_slice(&[0; 4]),
                (true, IpAddr::V4(ip)) => out.extend_from_slice(&ip.to_ipv6_mapped().octets()),
                (true, IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
            }
            out.extend_from_slice(&a.port().to_be_bytes());
        };
        let af = if six { AF_INET6 } else { AF_INET };
        out.push(e.proto);
        match e.template {
            None => {
                out.extend_from_slice(&[e.state as u8, 0, af]);
                for a in [e.client, e.vip, e.server] {
                    put(out, a);
                }
            }
            Some(key) => {
                out.extend_from_slice(&[State::None as u8, F_TEMPLATE, af]);
                out.extend_from_slice(&key.to_be_bytes());
                put(out, e.vip);
                put(out, e.server);
            }
        }
        // Zeros up to the seconds.
        out.resize(at + kind.entry_len() - 4, 0);
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
    // An unknown kind is refused after the MAC (`header`); its length is checked as
    // IPv4 entries' meanwhile.
    let layout = Kind::from_u8(msg[5]).unwrap_or(Kind::Entries);
    if count > layout.max_entries() {
        return Err(Reject::Oversized);
    }
    if msg.len() != HEADER_LEN + count * layout.entry_len() + MAC_LEN {
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
    let parse = match kind {
        Kind::Templates => template,
        Kind::Entries6 => entry6,
        Kind::Templates6 => template6,
        _ => entry,
    };
    let entries = body[HEADER_LEN..]
        .chunks_exact(kind.entry_len())
        .map(parse)
        .collect::<Option<Vec<_>>>()
        .ok_or(Reject::Entry)?;
    Ok((header, entries))
}

/// A connection's protocol and state, if they go together.
fn proto_state(b: &[u8]) -> Option<(u8, State)> {
    let (proto, state) = (b[0], State::from_index(b[1])?);
    let valid = match proto {
        6 => state != State::Udp,
        17 => state == State::Udp,
        _ => false,
    };
    valid.then_some((proto, state))
}

fn entry(b: &[u8]) -> Option<Entry> {
    let (proto, state) = proto_state(b)?;
    if b[2] != 0 || b[3] != AF_INET || b[22..24] != [0, 0] {
        return None;
    }
    Some(Entry {
        proto,
        state,
        template: None,
        client: addr(b, 4).into(),
        vip: addr(b, 10).into(),
        server: addr(b, 16).into(),
        expires_in: seconds(b),
    })
}

/// An IPv6 connection's 64 bytes (see the module docs).
fn entry6(b: &[u8]) -> Option<Entry> {
    let (proto, state) = proto_state(b)?;
    if b[2] != 0 || b[3] != AF_INET6 || b[58..60] != [0, 0] {
        return None;
    }
    let (client, vip, server) = (addr6(b, 4), addr6(b, 22), addr6(b, 40));
    // One family for the client and the VIP; an IPv6 address somewhere (else it is an
    // IPv4 entry, which has its own kind).
    if client.is_ipv4() != vip.is_ipv4() || (vip.is_ipv4() && server.is_ipv4()) {
        return None;
    }
    Some(Entry {
        proto,
        state,
        template: None,
        client,
        vip,
        server,
        expires_in: seconds6(b),
    })
}

/// An IPv6 template's 64 bytes (see the module docs).
fn template6(b: &[u8]) -> Option<Entry> {
    if !matches!(b[0], 6 | 17)
        || b[1] != State::None as u8
        || b[2] != F_TEMPLATE
        || b[3] != AF_INET6
        || b[48..60].iter().any(|&z| z != 0)
    {
        return None;
    }
    let (vip, server) = (addr6(b, 12), addr6(b, 30));
    if vip.is_ipv4() && server.is_ipv4() {
        return None;
    }
    let mut key = [0; 8];
    key.copy_from_slice(&b[4..12]);
    Some(Entry {
        proto: b[0],
        state: State::None,
        template: Some(u64::from_be_bytes(key)),
        client: Entry::NO_CLIENT,
        vip,
        server,
        expires_in: seconds6(b),
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
        client: Entry::NO_CLIENT,
        vip: addr(b, 12).into(),
        server: addr(b, 18).into(),
        expires_in: seconds(b),
    })
}

fn addr(b: &[u8], at: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]),
        u16::from_be_bytes([b[at + 4], b[at + 5]]),
    )
}

/// An address of an IPv6 entry: IPv4-mapped is IPv4.
fn addr6(b: &[u8], at: usize) -> SocketAddr {
    let mut ip = [0; 16];
    ip.copy_from_slice(&b[at..at + 16]);
    let ip = Ipv6Addr::from(ip);
    let port = u16::from_be_bytes([b[at + 16], b[at + 17]]);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    }
}

fn seconds(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[24], b[25], b[26], b[27]])
}

fn seconds6(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[60], b[61], b[62], b[63]])
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
