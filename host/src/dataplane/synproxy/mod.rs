//! The SYN proxy: ringvs answers a client's SYN itself, with a cookie, and opens the
//! connection to the realserver only once the client's ACK proves it is real (nftables'
//! `synproxy`, DPVS's synproxy). A spoofed SYN costs one packet and no state.
//!
//! ```text
//!  client                 ringvs (per queue, native)                 realserver
//!  SYN ───────────────▶  answer: SYN-ACK, seq = cookie  (no entry)
//!      ◀───────────────  SYN-ACK
//!  ACK (+ data) ──────▶  cookie valid → entry F_PROXIED|F_PROXY_OPENING, scheduled,
//!                        data stashed, the ACK becomes the SYN ─────────▶ SYN
//!                                                    ◀──────────────────  SYN-ACK
//!                        offsets learned; the SYN-ACK becomes the client's ACK
//!                        (+ the stashed data) ──────────────────────────▶ ACK (+ data)
//!  later packets:        client → server: ack, TSecr, SACK blocks shifted;
//!                        server → client: seq, TSval shifted, window rescaled
//! ```
//!
//! What a handshake must remember travels in the cookie (the client's MSS) and in the
//! timestamp the proxy sends (window scale, SACK-permitted): see [`cookie`]. While opening,
//! the entry's [`Conn::proxy`] words hold the cookie and the client's initial sequence
//! number; afterwards the sequence and timestamp offsets. Its `aux` byte holds the
//! negotiated options.
//!
//! The ACK the proxy sends the realserver for the client announces a 64 KiB window (in the
//! client's scale): the client's own is not kept, and the realserver learns it from the
//! client's next segment.
//!
//! Every packet transform here works in place in the I/O buffer and computes complete
//! checksums for the packets it makes (their virtio-net offload request is cleared).

pub mod cookie;

use crate::conn::{reached, Conn, Tick, F_PROXY_OPENING};
use crate::dataplane::Packet;
use crate::wire::tcp::{field, flags as tf};
use crate::wire::{ip_proto, tcpopt, Ipv4Packet, Ipv4Repr, TcpPacket};
use cookie::{CookieKeys, Invalid, TsOptions, Tuple};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// The window scale the proxy offers clients that offer one (Linux's usual shift for its
/// default buffers). Windows from the realserver are rescaled to it.
pub const WS_PROXY: u8 = 7;

/// Seconds the proxy waits for a realserver's SYN-ACK before resetting the client.
pub const OPEN_TIMEOUT_SECS: u32 = 5;

/// Seconds after which the proxy sends its SYN again while the realserver is silent (as a
/// Linux client does: 1 s, then 2 s later).
pub const SYN_RETRIES_SECS: [u32; 2] = [1, 3];

/// Bytes of data sent with a client's ACK that the proxy keeps until the realserver has
/// answered (more is dropped: the client sends it again).
pub const STASH_BYTES: usize = 1460;
/// Most stash slots per queue (connections opening with data at once).
pub const STASH_SLOTS: usize = 256;

/// Bytes of stash for a queue with `budget` bytes of memory: at most 1/64 of it, from 4 to
/// [`STASH_SLOTS`] slots. The stash is carved out of the queue's table budget.
pub fn stash_memory(budget: usize) -> usize {
    (budget / 64 / STASH_BYTES).clamp(4, STASH_SLOTS) * STASH_BYTES
}

/// Packets the proxy sends on its own (resets, SYNs again), waiting to be written.
const OUTBOX_MAX: usize = 4096;
/// Opening connections whose SYN the proxy will send again, at most.
const RETRIES_MAX: usize = 65_536;

/// `aux` bits of a proxied connection.
mod aux {
    /// The realserver's window scale shift (bits 0-3).
    pub const WS_SERVER: u8 = 0x0f;
    /// Windows are scaled (both sides offered a window scale).
    pub const SCALED: u8 = 0x10;
    /// Timestamps are in use.
    pub const TS: u8 = 0x20;
    /// While opening: the client's option bits (window scale 0-3, SACK 4) are stored
    /// instead, with `TS`.
    pub const OPENING_OPTS: u8 = 0x1f;
    /// While opening: the index of the MSS the cookie promised (bits 6-7).
    pub const OPENING_MSS_SHIFT: u8 = 6;
}

/// What the proxy counts, per queue (`ringvs_syn_proxy_total{event}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A SYN answered with a cookie.
    CookieSent = 0,
    /// An ACK with a valid cookie: a connection opened to a realserver.
    CookieOk,
    /// An ACK whose cookie was forged, corrupted or too old (two rotations).
    CookieInvalid,
    /// A realserver answered the proxy's SYN.
    ServerOpened,
    /// A realserver refused (RST): the client was reset.
    ServerRefused,
    /// A realserver never answered: the client was reset.
    ServerTimeout,
    /// Data sent with the ACK, kept for the realserver.
    DataStashed,
    /// Data sent with the ACK that could not be kept (too long, no free slot).
    DataDropped,
    /// A client packet while its connection was opening (dropped; the client resends).
    EarlyPacket,
    /// The proxy's SYN sent again (the realserver was silent).
    SynRetry,
    /// A client RST or FIN before the realserver answered.
    ClientGaveUp,
    /// The realserver answered the proxy's SYN for an older connection of the same
    /// addresses (its TIME_WAIT): reset, and the SYN sent again.
    ServerStale,
}

/// Number of [`Event`]s.
pub const EVENTS: usize = 12;

impl Event {
    /// Every event, in order.
    pub const ALL: [Event; EVENTS] = [
        Event::CookieSent,
        Event::CookieOk,
        Event::CookieInvalid,
        Event::ServerOpened,
        Event::ServerRefused,
        Event::ServerTimeout,
        Event::DataStashed,
        Event::DataDropped,
        Event::EarlyPacket,
        Event::SynRetry,
        Event::ClientGaveUp,
        Event::ServerStale,
    ];

    /// The `event` label.
    pub fn label(self) -> &'static str {
        match self {
            Event::CookieSent => "cookie_sent",
            Event::CookieOk => "cookie_ok",
            Event::CookieInvalid => "cookie_invalid",
            Event::ServerOpened => "server_opened",
            Event::ServerRefused => "server_refused",
            Event::ServerTimeout => "server_timeout",
            Event::DataStashed => "data_stashed",
            Event::DataDropped => "data_dropped",
            Event::EarlyPacket => "early_packet",
            Event::SynRetry => "syn_retry",
            Event::ClientGaveUp => "client_gave_up",
            Event::ServerStale => "server_stale",
        }
    }
}

/// A client's ACK that passed the cookie check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The client's initial sequence number.
    pub isn: u32,
    /// The cookie (the proxy's initial sequence number).
    pub cookie: u32,
    /// The MSS the cookie promised.
    pub mss: u16,
    /// Window scale and SACK the client offered, if it uses timestamps.
    pub opts: TsOptions,
    /// The client's TSval, if it uses timestamps.
    pub tsval: Option<u32>,
    /// The window field of the ACK (scaled by the client's shift).
    pub window: u16,
}

/// Data kept from clients' ACKs until their realservers answer.
struct Stash {
    bytes: Vec<u8>,
    len: Vec<u16>,
    /// Connection slab index + 1 of each slot's owner; 0: free.
    owner: Vec<u32>,
}

impl Stash {
    fn new(memory: usize) -> Stash {
        let slots = memory / STASH_BYTES;
        Stash {
            bytes: vec![0; slots * STASH_BYTES],
            len: vec![0; slots],
            owner: vec![0; slots],
        }
    }

    fn put(&mut self, conn: u32, data: &[u8]) -> bool {
        if data.len() > STASH_BYTES {
            return false;
        }
        let Some(i) = self.owner.iter().position(|o| *o == 0) else {
            return false;
        };
        self.owner[i] = conn + 1;
        self.len[i] = data.len() as u16;
        self.bytes[i * STASH_BYTES..i * STASH_BYTES + data.len()].copy_from_slice(data);
        true
    }

    /// Adds `data` at byte `at` of what is kept for `conn` (a slot is taken if it has
    /// none): only if it follows on exactly and fits. A repeat of what is kept is taken as
    /// kept.
    fn append(&mut self, conn: u32, at: usize, data: &[u8]) -> bool {
        let i = match self.owner.iter().position(|o| *o == conn + 1) {
            Some(i) => i,
            None if at == 0 => return self.put(conn, data),
            None => return false,
        };
        let have = usize::from(self.len[i]);
        if at + data.len() <= have {
            return true;
        }
        if at != have || have + data.len() > STASH_BYTES {
            return false;
        }
        let base = i * STASH_BYTES + have;
        self.bytes[base..base + data.len()].copy_from_slice(data);
        self.len[i] = (have + data.len()) as u16;
        true
    }

    /// The data kept for `conn`, if any; the slot is freed.
    fn take(&mut self, conn: u32) -> Option<&[u8]> {
        let i = self.owner.iter().position(|o| *o == conn + 1)?;
        self.owner[i] = 0;
        let n = usize::from(self.len[i]);
        Some(&self.bytes[i * STASH_BYTES..i * STASH_BYTES + n])
    }

    fn release(&mut self, conn: u32) {
        if let Some(o) = self.owner.iter_mut().find(|o| **o == conn + 1) {
            *o = 0;
        }
    }
}

/// One queue's SYN proxy: the shared cookie secrets, the stash, the resets to send, and
/// what it counted.
pub struct SynProxy {
    keys: Arc<CookieKeys>,
    stash: Stash,
    outbox: Vec<Own>,
    retries: Vec<Retry>,
    /// Events counted, per [`Event`].
    pub events: [u64; EVENTS],
}

impl std::fmt::Debug for SynProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynProxy")
            .field("keys", &self.keys)
            .field("events", &self.events)
            .finish()
    }
}

/// A packet the proxy sends on its own (a SYN with options at most).
#[derive(Clone, Copy)]
struct Own {
    bytes: [u8; 60],
    len: u8,
}

/// An opening connection whose SYN goes again if the realserver stays silent.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// Slab index of its entry.
    conn: u32,
    /// Its client (the slab slot may belong to another connection later).
    client: SocketAddrV4,
    /// Its realserver.
    server: SocketAddrV4,
    /// The client's initial sequence number.
    isn: u32,
    /// The entry's `aux` while opening (options, MSS index).
    opts: u8,
    /// When.
    due: Tick,
    /// SYNs sent again so far.
    tries: u8,
}

/// The fields of a TCP segment the proxy reads, from a packet whose IPv4 header is 20 bytes
/// (the data plane drops IP options before).
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    /// Source.
    pub src: SocketAddrV4,
    /// Destination.
    pub dst: SocketAddrV4,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window field.
    pub window: u16,
    /// Options.
    pub opts: tcpopt::Located,
    /// Payload offset in the packet, and length.
    pub payload: (usize, usize),
}

const IHL: usize = crate::wire::ipv4::HEADER_LEN;

impl Seg {
    /// Reads a segment; `None` if its options are malformed.
    pub fn read(data: &[u8]) -> Option<Seg> {
        let ip = Ipv4Packet::new_unchecked(data);
        let t = TcpPacket::new_checked(&data[IHL..]).ok()?;
        let opts = tcpopt::parse(t.options()).ok()?;
        let hl = t.header_len();
        Some(Seg {
            src: SocketAddrV4::new(ip.src_addr(), t.src_port()),
            dst: SocketAddrV4::new(ip.dst_addr(), t.dst_port()),
            seq: t.seq_number(),
            ack: t.ack_number(),
            flags: t.flags(),
            window: t.window_len(),
            opts,
            payload: (IHL + hl, data.len() - IHL - hl),
        })
    }
}

/// What a new packet built in place looks like.
struct Build<'a> {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &'a [u8],
    /// Payload bytes to place after the header (`None`: none).
    payload: Option<&'a [u8]>,
}

/// Writes `b` as a whole IPv4 + TCP packet at the front of `pkt`'s data (resizing it), with
/// complete checksums, and clears the offload request.
fn build(pkt: &mut Packet<'_>, b: &Build<'_>) -> bool {
    let hl = crate::wire::tcp::HEADER_LEN + b.opts.len();
    let plen = b.payload.map_or(0, <[u8]>::len);
    let total = IHL + hl + plen;
    let Some(data) = pkt.resize(total) else {
        return false;
    };
    if let Some(p) = b.payload {
        data[IHL + hl..total].copy_from_slice(p);
    }
    {
        let seg = &mut data[IHL..total];
        seg[field::DATA_OFF] = ((hl / 4) as u8) << 4;
        seg[crate::wire::tcp::HEADER_LEN..hl].copy_from_slice(b.opts);
        let mut t = TcpPacket::new_unchecked(seg);
        t.set_src_port(b.src.port());
        t.set_dst_port(b.dst.port());
        t.set_seq_number(b.seq);
        t.set_ack_number(b.ack);
        t.set_flags(b.flags);
        t.set_window_len(b.window);
        t.set_urgent_at(0);
        t.fill_checksum(*b.src.ip(), *b.dst.ip());
    }
    let repr = Ipv4Repr {
        src_addr: *b.src.ip(),
        dst_addr: *b.dst.ip(),
        protocol: ip_proto::TCP,
        ttl: 64,
        payload_len: hl + plen,
        ident: 0,
        dont_frag: true,
        dscp_ecn: 0,
    };
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut data[..IHL]));
    pkt.vnet = None;
    true
}

/// A 64 KiB window in units of `2^wscale`.
fn window_64k(wscale: Option<u8>) -> u16 {
    (0xffff_u32 >> wscale.unwrap_or(0)).max(1) as u16
}

/// Seconds → ticks.
fn ticks(secs: u32) -> Tick {
    secs.saturating_mul(crate::conn::TICKS_PER_SEC)
}

impl SynProxy {
    /// A queue's proxy with the director's cookie secrets and `stash` bytes of stash (see
    /// [`stash_memory`]).
    pub fn new(keys: Arc<CookieKeys>, stash: usize) -> SynProxy {
        SynProxy {
            keys,
            stash: Stash::new(stash),
            outbox: Vec::new(),
            retries: Vec::new(),
            events: [0; EVENTS],
        }
    }

    /// Stash slots holding data now.
    pub fn stash_in_use(&self) -> usize {
        self.stash.owner.iter().filter(|o| **o != 0).count()
    }

    /// The cookie secrets.
    pub fn keys(&self) -> &Arc<CookieKeys> {
        &self.keys
    }

    #[inline]
    fn count(&mut self, e: Event) {
        self.events[e as usize] += 1;
    }

    /// How long an opening connection waits for its realserver, in ticks.
    pub fn open_timeout() -> Tick {
        ticks(OPEN_TIMEOUT_SECS)
    }

    /// Answers a client's SYN (`s`, read from `pkt`) with the cookie SYN-ACK, in place.
    /// False if the packet could not be answered (malformed options were caught before).
    pub fn answer_syn(&mut self, pkt: &mut Packet<'_>, s: &Seg) -> bool {
        let t = Tuple {
            saddr: *s.src.ip(),
            daddr: *s.dst.ip(),
            sport: s.src.port(),
            dport: s.dst.port(),
        };
        let (cookie, mss) = self.keys.make(&t, s.seq, s.opts.mss.unwrap_or(536));
        let ts = s.opts.ts.map(|(tsval, _)| {
            let opts = TsOptions {
                wscale: s.opts.wscale,
                sack: s.opts.sack_perm,
            };
            (cookie::ts_encode(cookie, opts), tsval)
        });
        // Without timestamps the options cannot be remembered: neither is offered.
        let (sack, ws) = match ts {
            Some(_) => (s.opts.sack_perm, s.opts.wscale.map(|_| WS_PROXY)),
            None => (false, None),
        };
        let mut opts = [0u8; 20];
        let n = tcpopt::emit_syn(&mut opts, mss, sack, ts, ws);
        let ok = build(
            pkt,
            &Build {
                src: s.dst,
                dst: s.src,
                seq: cookie,
                ack: s.seq.wrapping_add(1),
                flags: tf::SYN | tf::ACK,
                window: u16::MAX,
                opts: &opts[..n],
                payload: None,
            },
        );
        if ok {
            self.count(Event::CookieSent);
        }
        ok
    }

    /// Checks the cookie of a client's ACK for a connection the table does not know.
    pub fn check_ack(&mut self, s: &Seg) -> Result<Accepted, Invalid> {
        let t = Tuple {
            saddr: *s.src.ip(),
            daddr: *s.dst.ip(),
            sport: s.src.port(),
            dport: s.dst.port(),
        };
        let isn = s.seq.wrapping_sub(1);
        let cookie = s.ack.wrapping_sub(1);
        let checked = self.keys.check(&t, isn, cookie).and_then(|mss| {
            let (opts, tsval) = match s.opts.ts {
                Some((tsval, tsecr)) => (
                    cookie::ts_decode(cookie, tsecr).ok_or(Invalid::Forged)?,
                    Some(tsval),
                ),
                None => (TsOptions::default(), None),
            };
            Ok(Accepted {
                isn,
                cookie,
                mss,
                opts,
                tsval,
                window: s.window,
            })
        });
        self.count(match checked {
            Ok(_) => Event::CookieOk,
            Err(_) => Event::CookieInvalid,
        });
        checked
    }

    /// Turns the client's ACK into the proxy's SYN to the realserver `to`, in place, keeping
    /// its data (if it fits) for later; fills the connection's proxy words. The entry `c`
    /// (slab index `conn`) was just created for it.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        pkt: &mut Packet<'_>,
        s: &Seg,
        a: &Accepted,
        conn: u32,
        c: &mut Conn<Ipv4Addr>,
        to: SocketAddrV4,
        now: Tick,
    ) -> bool {
        let (off, len) = s.payload;
        if len > 0 {
            let kept = self.stash.put(conn, &pkt.data()[off..off + len]);
            self.count(if kept {
                Event::DataStashed
            } else {
                Event::DataDropped
            });
        }
        c.flags |= crate::conn::F_PROXIED | F_PROXY_OPENING;
        c.proxy = [a.cookie, a.isn];
        let mss_index = cookie::MSS_TABLE
            .iter()
            .position(|m| *m == a.mss)
            .unwrap_or(0) as u8;
        c.aux = (a.opts.bits() as u8 & aux::OPENING_OPTS)
            | if a.tsval.is_some() { aux::TS } else { 0 }
            | mss_index << aux::OPENING_MSS_SHIFT;
        if self.retries.len() < RETRIES_MAX {
            self.retries.push(Retry {
                conn,
                client: s.src,
                server: to,
                isn: a.isn,
                opts: c.aux,
                due: now.wrapping_add(ticks(SYN_RETRIES_SECS[0])),
                tries: 0,
            });
        }
        self.send_syn(pkt, s.src, to, a.isn, a.mss, a.opts, a.tsval)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_syn(
        &mut self,
        pkt: &mut Packet<'_>,
        from: SocketAddrV4,
        to: SocketAddrV4,
        isn: u32,
        mss: u16,
        o: TsOptions,
        tsval: Option<u32>,
    ) -> bool {
        let mut opts = [0u8; 20];
        let ts = tsval.map(|v| (v, 0));
        let (sack, ws) = if ts.is_some() {
            (o.sack, o.wscale)
        } else {
            (false, None)
        };
        let n = tcpopt::emit_syn(&mut opts, mss, sack, ts, ws);
        build(
            pkt,
            &Build {
                src: from,
                dst: to,
                seq: isn,
                ack: 0,
                flags: tf::SYN,
                window: u16::MAX,
                opts: &opts[..n],
                payload: None,
            },
        )
    }

    /// A client packet while its connection is opening: its data is kept with what the ACK
    /// brought, if it follows on and fits (a client usually sends its request right after
    /// the bare ACK); otherwise it is dropped and the client sends it again. True if kept.
    pub fn client_while_opening(&mut self, pkt: &Packet<'_>, s: &Seg, conn: u32, isn: u32) -> bool {
        let (off, len) = s.payload;
        let kept = len > 0
            && self.stash.append(
                conn,
                s.seq.wrapping_sub(isn.wrapping_add(1)) as usize,
                &pkt.data()[off..off + len],
            );
        self.count(if kept {
            Event::DataStashed
        } else {
            Event::EarlyPacket
        });
        kept
    }

    /// Sends the SYNs of opening connections again whose time has come; `opening` tells
    /// whether a connection (slab index, client) is still opening. Called every tick.
    pub fn retry_due(&mut self, now: Tick, mut opening: impl FnMut(u32, SocketAddrV4) -> bool) {
        let mut i = 0;
        while i < self.retries.len() {
            let r = self.retries[i];
            if !opening(r.conn, r.client) {
                self.retries.swap_remove(i);
                continue;
            }
            if !reached(now, r.due) {
                i += 1;
                continue;
            }
            let opts =
                TsOptions::from_bits(u32::from(r.opts & aux::OPENING_OPTS)).unwrap_or_default();
            let mss = cookie::MSS_TABLE[usize::from(r.opts >> aux::OPENING_MSS_SHIFT) & 3];
            // Any timestamp will do for the realserver's PAWS: the client's own come later
            // and are larger than 1.
            let tsval = (r.opts & aux::TS != 0).then_some(1);
            let mut scratch = [0u8; 256];
            let mut sent = false;
            if let Some(mut p) = Packet::new(&mut scratch, 64, 60) {
                if self.send_syn(&mut p, r.client, r.server, r.isn, mss, opts, tsval) {
                    sent = self.push_own(p.data());
                }
            }
            if sent {
                self.count(Event::SynRetry);
            }
            let tries = r.tries + 1;
            match SYN_RETRIES_SECS.get(usize::from(tries)) {
                Some(&secs) => {
                    let first = SYN_RETRIES_SECS[0];
                    self.retries[i].tries = tries;
                    self.retries[i].due = now.wrapping_add(ticks(secs.saturating_sub(first)));
                    i += 1;
                }
                None => {
                    self.retries.swap_remove(i);
                }
            }
        }
    }

    fn push_own(&mut self, p: &[u8]) -> bool {
        if self.outbox.len() >= OUTBOX_MAX || p.len() > 60 {
            return false;
        }
        let mut own = Own {
            bytes: [0; 60],
            len: p.len() as u8,
        };
        own.bytes[..p.len()].copy_from_slice(p);
        self.outbox.push(own);
        true
    }

    /// The realserver answered the proxy's SYN with a bare ACK: it still holds an older
    /// connection of the same addresses (TIME_WAIT). As a client's kernel would, the packet
    /// becomes a RST that clears it, and the SYN goes again at the next tick.
    pub fn server_stale(
        &mut self,
        pkt: &mut Packet<'_>,
        s: &Seg,
        conn: u32,
        client: SocketAddrV4,
        now: Tick,
    ) -> bool {
        self.count(Event::ServerStale);
        if let Some(r) = self
            .retries
            .iter_mut()
            .find(|r| r.conn == conn && r.client == client)
        {
            r.due = now.wrapping_add(1);
        }
        build(
            pkt,
            &Build {
                src: client,
                dst: s.src,
                seq: s.ack,
                ack: 0,
                flags: tf::RST,
                window: 0,
                opts: &[],
                payload: None,
            },
        )
    }

    /// The realserver's SYN-ACK for an opening connection: learns the offsets, and turns the
    /// packet, in place, into the client's ACK to the realserver, with the data kept from
    /// the client's ACK. `c` is the entry (slab index `conn`); `client` its client.
    pub fn server_synack(
        &mut self,
        pkt: &mut Packet<'_>,
        s: &Seg,
        conn: u32,
        c: &mut Conn<Ipv4Addr>,
        client: SocketAddrV4,
    ) -> bool {
        let [cookie, isn] = c.proxy;
        if s.ack != isn.wrapping_add(1) {
            return false;
        }
        let opening = c.aux;
        let client_ts = opening & aux::TS != 0;
        let client_opts =
            TsOptions::from_bits(u32::from(opening & aux::OPENING_OPTS)).unwrap_or_default();
        let seq_delta = s.seq.wrapping_sub(cookie);
        let (ts_delta, ts) = match (client_ts, s.opts.ts) {
            (true, Some((sval, secr))) => {
                let p0 = cookie::ts_encode(cookie, client_opts);
                (sval.wrapping_sub(p0), Some((secr, sval)))
            }
            _ => (0, None),
        };
        let mut a = 0;
        if ts.is_some() {
            a |= aux::TS;
        }
        if let (Some(_), Some(ws)) = (client_opts.wscale.filter(|_| client_ts), s.opts.wscale) {
            a |= aux::SCALED | (ws & aux::WS_SERVER);
        }
        c.aux = a;
        c.proxy = [seq_delta, ts_delta];
        c.flags &= !F_PROXY_OPENING;
        self.count(Event::ServerOpened);
        let opts = ts.map(|(v, e)| tcpopt::emit_ts(v, e));
        let mut scratch = [0u8; STASH_BYTES];
        let payload = match self.stash.take(conn) {
            Some(d) => {
                scratch[..d.len()].copy_from_slice(d);
                Some(&scratch[..d.len()])
            }
            None => None,
        };
        build(
            pkt,
            &Build {
                src: client,
                dst: s.src,
                seq: s.ack,
                ack: s.seq.wrapping_add(1),
                flags: tf::ACK | if payload.is_some() { tf::PSH } else { 0 },
                window: window_64k(client_opts.wscale.filter(|_| client_ts)),
                opts: opts.as_ref().map_or(&[][..], |o| &o[..]),
                payload,
            },
        )
    }

    /// The realserver's SYN-ACK again, on a connection already open: the proxy's ACK was
    /// lost. The packet becomes that ACK again (without the data, which the client sends
    /// again itself), with a modest window that the client's next segment corrects.
    pub fn reack(&mut self, pkt: &mut Packet<'_>, s: &Seg, client: SocketAddrV4) -> bool {
        let opts = s.opts.ts.map(|(sval, secr)| tcpopt::emit_ts(secr, sval));
        build(
            pkt,
            &Build {
                src: client,
                dst: s.src,
                seq: s.ack,
                ack: s.seq.wrapping_add(1),
                flags: tf::ACK,
                window: 512,
                opts: opts.as_ref().map_or(&[][..], |o| &o[..]),
                payload: None,
            },
        )
    }

    /// The realserver refused an opening connection (RST): the packet becomes the client's
    /// RST, from the virtual service.
    pub fn server_refused(
        &mut self,
        pkt: &mut Packet<'_>,
        conn: u32,
        c: &Conn<Ipv4Addr>,
        vip: SocketAddrV4,
    ) -> bool {
        self.stash.release(conn);
        self.count(Event::ServerRefused);
        build(
            pkt,
            &Build {
                src: vip,
                dst: SocketAddrV4::new(c.caddr(), c.cport()),
                seq: c.proxy[0].wrapping_add(1),
                ack: 0,
                flags: tf::RST,
                window: 0,
                opts: &[],
                payload: None,
            },
        )
    }

    /// An opening connection ends without an answer (expired, evicted, or the client gave
    /// up): its stash is freed, and for a timeout the client gets a RST from `vip`.
    /// `client` and `isn` are the connection's (its entry's client and `proxy[0]`).
    pub fn abandoned(
        &mut self,
        conn: u32,
        client: SocketAddrV4,
        isn: u32,
        vip: Option<SocketAddrV4>,
    ) {
        self.stash.release(conn);
        let Some(vip) = vip else {
            self.count(Event::ClientGaveUp);
            return;
        };
        self.count(Event::ServerTimeout);
        let mut scratch = [0u8; 256];
        let Some(mut p) = Packet::new(&mut scratch, 64, 40) else {
            return;
        };
        if build(
            &mut p,
            &Build {
                src: vip,
                dst: client,
                seq: isn.wrapping_add(1),
                ack: 0,
                flags: tf::RST,
                window: 0,
                opts: &[],
                payload: None,
            },
        ) {
            self.push_own(p.data());
        }
    }

    /// Packets the proxy sends on its own (resets, SYNs again), handed to `f` and
    /// forgotten.
    pub fn drain(&mut self, f: &mut dyn FnMut(&[u8])) {
        for p in self.outbox.drain(..) {
            f(&p.bytes[..usize::from(p.len)]);
        }
    }

    /// Client → realserver on a proxied connection: the acknowledgment and the SACK blocks
    /// move into the realserver's sequence space, the echoed timestamp into its clock.
    /// `full`: the checksum is complete (else partial, covering no header byte).
    #[inline]
    pub fn to_server(seg: &mut [u8], c: &Conn<Ipv4Addr>, flags: u8, full: bool) {
        let [seq_delta, ts_delta] = c.proxy;
        if flags & tf::ACK != 0 {
            let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
            tcpopt::write_words(seg, 8, &ack.wrapping_add(seq_delta).to_be_bytes(), full);
        }
        let hl = usize::from(seg[field::DATA_OFF] >> 4) * 4;
        if hl <= crate::wire::tcp::HEADER_LEN || hl > seg.len() {
            return;
        }
        let Ok(o) = tcpopt::parse(&seg[crate::wire::tcp::HEADER_LEN..hl]) else {
            return;
        };
        let base = crate::wire::tcp::HEADER_LEN;
        if c.aux & aux::TS != 0 {
            if let Some((_, ecr)) = o.ts {
                let at = base + o.ts_at + 4;
                tcpopt::write_words(seg, at, &ecr.wrapping_add(ts_delta).to_be_bytes(), full);
            }
        }
        if let Some((at, n)) = o.sack_at {
            for k in 0..n * 2 {
                let p = base + at + 4 * k;
                let v = u32::from_be_bytes([seg[p], seg[p + 1], seg[p + 2], seg[p + 3]]);
                tcpopt::write_words(seg, p, &v.wrapping_add(seq_delta).to_be_bytes(), full);
            }
        }
    }

    /// The TCP segment an ICMP error quotes, on a proxied connection (`l4`: as much of it as
    /// the error quotes). `about_client_bound`: the quoted segment is one the director sent
    /// to the client (its sequence number in the client's space), and the error goes to the
    /// realserver, which accepts it only for a sequence number it sent: move it back into
    /// the realserver's space. Otherwise the quoted segment went to the realserver and the
    /// error goes to the client: its acknowledgment (if quoted and set) moves back into the
    /// client's space. The quoted checksum, when quoted, is updated to match.
    pub fn quoted(l4: &mut [u8], c: &Conn<Ipv4Addr>, about_client_bound: bool) {
        let [seq_delta, _] = c.proxy;
        let (at, shift): (usize, fn(u32, u32) -> u32) = if about_client_bound {
            (4, u32::wrapping_add)
        } else {
            // The flags byte must be quoted to know whether the acknowledgment is one.
            if l4.len() < 14 || l4[13] & tf::ACK == 0 {
                return;
            }
            (8, u32::wrapping_sub)
        };
        let Some(word) = l4.get_mut(at..at + 4) else {
            return;
        };
        let old: [u8; 4] = word.try_into().unwrap_or_default();
        let new = shift(u32::from_be_bytes(old), seq_delta).to_be_bytes();
        word.copy_from_slice(&new);
        if let Some(sum) = l4.get_mut(16..18) {
            let c = u16::from_be_bytes([sum[0], sum[1]]);
            sum.copy_from_slice(&crate::wire::checksum::update32(c, old, new).to_be_bytes());
        }
    }

    /// Realserver → client on a proxied connection: the sequence number moves into the
    /// space the client knows (the cookie's), the timestamp into the proxy's clock, and the
    /// window to the scale the proxy announced.
    #[inline]
    pub fn to_client(seg: &mut [u8], c: &Conn<Ipv4Addr>, full: bool) {
        let [seq_delta, ts_delta] = c.proxy;
        let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
        tcpopt::write_words(seg, 4, &seq.wrapping_sub(seq_delta).to_be_bytes(), full);
        if c.aux & aux::SCALED != 0 {
            let ws = c.aux & aux::WS_SERVER;
            if ws != WS_PROXY {
                let w = u32::from(u16::from_be_bytes([seg[14], seg[15]]));
                let bytes = w << ws;
                let scaled = (bytes >> WS_PROXY).min(u32::from(u16::MAX));
                // Never advertise a zero window for a non-zero one.
                let scaled = if w > 0 { scaled.max(1) } else { 0 } as u16;
                tcpopt::write_words(seg, 14, &scaled.to_be_bytes(), full);
            }
        }
        if c.aux & aux::TS == 0 {
            return;
        }
        let hl = usize::from(seg[field::DATA_OFF] >> 4) * 4;
        if hl <= crate::wire::tcp::HEADER_LEN || hl > seg.len() {
            return;
        }
        let Ok(o) = tcpopt::parse(&seg[crate::wire::tcp::HEADER_LEN..hl]) else {
            return;
        };
        if let Some((val, _)) = o.ts {
            let at = crate::wire::tcp::HEADER_LEN + o.ts_at;
            tcpopt::write_words(seg, at, &val.wrapping_sub(ts_delta).to_be_bytes(), full);
        }
    }
}

#[cfg(test)]
mod tests;
