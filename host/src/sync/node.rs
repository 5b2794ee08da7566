//! The sync thread: one UDP socket, the queues' outgoing entries batched into messages, the
//! peers' messages checked and handed to the queues that own their flows, heartbeats, and
//! bulk transfers to peers that (re)joined. Bounded everywhere: `max_rate` messages a second
//! (a bulk transfer included), one batch of each kind (connections, templates) waiting here, and the queues' bounded
//! ways in ([`super::link::QUEUE_DEPTH`]).
//!
//! A peer is known by the address its messages come from (its `listen`) and by its id; a
//! heartbeat or message with a new epoch from it (it started, or restarted) starts a bulk
//! transfer of this director's table to it, if this director's role sends.

use super::{decode, encode, Entry, Header, Key, Kind, Link, ReplayWindow};
use crate::conn::HashKey;
use crate::dataplane::Control;
use crossbeam_channel::{Receiver, Sender};
use std::collections::VecDeque;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A batch leaves when full or this old.
pub const FLUSH: Duration = Duration::from_millis(20);

/// The kinds of entries batched for their messages, in [`Run`]'s batch order.
const BATCHED: [Kind; 4] = [
    Kind::Entries,
    Kind::Templates,
    Kind::Entries6,
    Kind::Templates6,
];

/// Heartbeats, when nothing else was sent.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Control messages a queue may have waiting before received entries for it are dropped
/// (about 50,000 entries).
pub const MAX_PENDING: usize = 1024;
/// How long the thread sleeps in `recv` when there is nothing to do.
const IDLE: Duration = Duration::from_millis(2);

/// What the sync thread needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This director's id.
    pub id: u32,
    /// The shared key.
    pub key: Key,
    /// Bound address.
    pub listen: SocketAddrV4,
    /// Where changes go.
    pub peers: Vec<SocketAddrV4>,
    /// Messages a second, at most.
    pub max_rate: u32,
    /// The queues' steering secret (which queue owns a client's flow).
    pub steer_key: HashKey,
}

/// A peer as `ringvs ha status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// Where its messages come from.
    pub addr: SocketAddrV4,
    /// Its id, once heard from.
    pub id: Option<u32>,
    /// Its epoch (start time, Unix seconds).
    pub epoch: u32,
    /// Milliseconds since its last message; `None`: never heard.
    pub last_seen_ms: Option<u64>,
    /// Messages taken from it.
    pub messages: u64,
    /// Bulk transfers sent to it.
    pub bulk_sent: u64,
}

/// Socket receive buffer asked for: a bulk transfer's bursts and the gaps in the thread's
/// turns both fit (the kernel caps it at `net.core.rmem_max` unless forced with
/// CAP_NET_ADMIN, which is tried first).
const RECEIVE_BUFFER: libc::c_int = 4 << 20;

fn grow_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = RECEIVE_BUFFER;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // Safety: `size` is a c_int owned by this frame; setsockopt reads
        // `size_of::<c_int>()` bytes of it; the descriptor is the socket's, open.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// The peers and when each was last heard, shared with `ringvs ha status`.
type Peers = Arc<Mutex<Vec<(PeerStatus, Option<Instant>)>>>;

/// For `ringvs check` (and the start): `listen` is an address of this machine and every
/// unicast peer has a route from it. Returns a line saying so, or the error naming the key.
pub fn check(listen: SocketAddrV4, peers: &[SocketAddrV4]) -> Result<String, String> {
    let probe = UdpSocket::bind(SocketAddrV4::new(*listen.ip(), 0)).map_err(|e| {
        format!(
            "director.sync.listen: {} is not an address of this machine ({e})",
            listen.ip()
        )
    })?;
    for (i, p) in peers.iter().enumerate() {
        if p.ip().is_multicast() {
            continue;
        }
        // A UDP connect sends nothing: it looks the route up, as a send would.
        probe.connect(p).map_err(|e| {
            format!(
                "director.sync.peers[{i}]: {p} cannot be reached from {} ({e})",
                listen.ip()
            )
        })?;
    }
    Ok(format!(
        "sync: listen {listen}, {} peer(s) reachable",
        peers.len()
    ))
}

/// The running sync thread.
#[derive(Debug)]
pub struct Node {
    /// Shared with the queues.
    pub link: Arc<Link>,
    peers: Peers,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The bound address (`listen`, with the port the kernel gave if it was 0).
    pub local: SocketAddrV4,
}

impl Node {
    /// Binds `listen` and starts the thread. `outgoing`: each queue's entries; `queues`:
    /// each queue's control channel (same order).
    pub fn start(
        s: Settings,
        link: Arc<Link>,
        outgoing: Vec<Receiver<Entry>>,
        queues: Vec<Sender<Control>>,
    ) -> Result<Node, String> {
        check(s.listen, &s.peers)?;
        let socket = UdpSocket::bind(s.listen)
            .map_err(|e| format!("director.sync.listen: cannot bind {}: {e}", s.listen))?;
        for p in s.peers.iter().filter(|p| p.ip().is_multicast()) {
            socket
                .join_multicast_v4(p.ip(), s.listen.ip())
                .map_err(|e| format!("director.sync.peers: cannot join {}: {e}", p.ip()))?;
            let _ = socket.set_multicast_loop_v4(false);
        }
        socket
            .set_read_timeout(Some(IDLE))
            .map_err(|e| e.to_string())?;
        grow_receive_buffer(&socket);
        let local = match socket.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => s.listen,
        };
        let peers = Arc::new(Mutex::new(
            s.peers
                .iter()
                .filter(|p| !p.ip().is_multicast())
                .map(|a| (PeerStatus::new(*a), None))
                .collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        let mut run = Run {
            socket,
            s,
            epoch,
            seq: 0,
            link: link.clone(),
            outgoing,
            next_queue: 0,
            queues,
            window: ReplayWindow::default(),
            batches: Default::default(),
            batch_since: [None; 4],
            tokens: 0.0,
            refilled: Instant::now(),
            last_sent: None,
            bulk: VecDeque::new(),
            peers: peers.clone(),
            lag_max: Duration::ZERO,
            lag_since: Instant::now(),
            buf: Vec::with_capacity(super::MAX_MESSAGE),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringvs-sync".into())
            .spawn(move || run.run(&flag))
            .map_err(|e| format!("cannot start the sync thread: {e}"))?;
        Ok(Node {
            link,
            peers,
            stop,
            thread: Some(thread),
            local,
        })
    }

    /// The peers, as last heard.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.peers
            .lock()
            .map(|p| {
                p.iter()
                    .map(|(s, seen)| PeerStatus {
                        last_seen_ms: seen.map(|t| now.duration_since(t).as_millis() as u64),
                        ..s.clone()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the thread (pending entries are dropped).
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PeerStatus {
    fn new(addr: SocketAddrV4) -> PeerStatus {
        PeerStatus {
            addr,
            id: None,
            epoch: 0,
            last_seen_ms: None,
            messages: 0,
            bulk_sent: 0,
        }
    }
}

/// A bulk transfer to one peer: queue by queue, slot range by slot range.
struct Bulk {
    to: SocketAddrV4,
    queue: usize,
    /// The next slot to ask for, or the answer awaited.
    next: Option<u32>,
    waiting: Option<Receiver<(Vec<Entry>, Option<u32>)>>,
    pending: VecDeque<Entry>,
    started: bool,
}

struct Run {
    socket: UdpSocket,
    s: Settings,
    epoch: u32,
    seq: u64,
    link: Arc<Link>,
    outgoing: Vec<Receiver<Entry>>,
    /// The queue [`Run::collect`] takes from first next time.
    next_queue: usize,
    queues: Vec<Sender<Control>>,
    window: ReplayWindow,
    /// Entries waiting for their message, one batch per kind of [`BATCHED`] (a message
    /// carries one kind).
    batches: [Vec<Entry>; 4],
    batch_since: [Option<Instant>; 4],
    tokens: f64,
    refilled: Instant,
    last_sent: Option<Instant>,
    bulk: VecDeque<Bulk>,
    peers: Peers,
    lag_max: Duration,
    lag_since: Instant,
    buf: Vec<u8>,
}

impl Run {
    fn run(&mut self, stop: &AtomicBool) {
        let mut rx = vec![0u8; 2048];
        while !stop.load(Relaxed) {
            self.refill();
            self.receive(&mut rx);
            self.collect();
            self.bulk_step();
            let now = Instant::now();
            if self
                .last_sent
                .is_none_or(|t| now.duration_since(t) >= HEARTBEAT)
            {
                for i in 0..self.s.peers.len() {
                    self.send(Kind::Heartbeat, &[], self.s.peers[i], true);
                }
                self.last_sent = Some(now);
            }
            if now.duration_since(self.lag_since) >= Duration::from_secs(1) {
                self.link
                    .stats
                    .lag_us
                    .store(self.lag_max.as_micros() as u64, Relaxed);
                self.lag_max = Duration::ZERO;
                self.lag_since = now;
            }
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let rate = f64::from(self.s.max_rate.max(1));
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        // Bursts of 5 ms at most (8 messages at least): a full burst, 12 KiB to 75 KiB at the
        // default rate, fits a peer's default socket buffer (212,992 bytes), and the thread
        // comes round every 2 ms at most, so the rate is still reached.
        self.tokens = (self.tokens + dt * rate).min((rate / 200.0).max(8.0));
    }

    /// Sends one message to `to`; `force`: even without a token (heartbeats).
    fn send(&mut self, kind: Kind, entries: &[Entry], to: SocketAddrV4, force: bool) -> bool {
        if !force && self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        self.seq += 1;
        let h = Header {
            kind,
            sender: self.s.id,
            epoch: self.epoch,
            seq: self.seq,
        };
        self.buf.clear();
        encode(&self.s.key, &h, entries, &mut self.buf);
        let stats = &self.link.stats;
        match self.socket.send_to(&self.buf, to) {
            Ok(_) => stats.sent_messages.fetch_add(1, Relaxed),
            Err(_) => stats.send_errors.fetch_add(1, Relaxed),
        };
        true
    }

    /// Takes the queues' entries into the batches (connections, templates) and sends each
    /// when full or old enough (and the rate allows: otherwise the entries wait in the
    /// queues' bounded channels).
    fn collect(&mut self) {
        loop {
            while self
                .batches
                .iter()
                .zip(BATCHED)
                .all(|(b, kind)| b.len() < kind.max_entries())
            {
                // Round the queues, so that a busy one does not hold the others' entries
                // back when the rate bound holds.
                let n = self.outgoing.len();
                let Some(e) = (0..n).find_map(|k| {
                    let q = (self.next_queue + k) % n;
                    self.outgoing[q]
                        .try_recv()
                        .ok()
                        .inspect(|_| self.next_queue = q + 1)
                }) else {
                    break;
                };
                let k = BATCHED
                    .iter()
                    .position(|&kind| kind == e.kind())
                    .unwrap_or(0);
                if self.batches[k].is_empty() {
                    self.batch_since[k] = Some(Instant::now());
                }
                self.batches[k].push(e);
            }
            let mut sent = false;
            for (k, kind) in BATCHED.into_iter().enumerate() {
                let old = self.batch_since[k].is_some_and(|t| t.elapsed() >= FLUSH);
                let batch = &self.batches[k];
                if batch.is_empty() || (batch.len() < kind.max_entries() && !old) {
                    continue;
                }
                if self.tokens < self.s.peers.len() as f64 {
                    return;
                }
                let batch = std::mem::take(&mut self.batches[k]);
                for i in 0..self.s.peers.len() {
                    self.send(kind, &batch, self.s.peers[i], true);
                }
                if let Some(t) = self.batch_since[k].take() {
                    self.lag_max = self.lag_max.max(t.elapsed());
                }
                self.link
                    .stats
                    .sent_entries
                    .fetch_add(batch.len() as u64, Relaxed);
                self.batches[k] = batch;
                self.batches[k].clear();
                self.last_sent = Some(Instant::now());
                sent = true;
            }
            if !sent {
                return;
            }
        }
    }

    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..256 {
            let (n, from) = match self.socket.recv_from(buf) {
                Ok((n, SocketAddr::V4(from))) => (n, from),
                Ok(_) => continue,
                Err(_) => return,
            };
            let link = self.link.clone();
            let stats = &link.stats;
            let (h, entries) = match decode(&self.s.key, &buf[..n]) {
                Ok(m) => m,
                Err(r) => {
                    stats.reject(r);
                    continue;
                }
            };
            if h.sender == self.s.id {
                // Our own, looped back by a multicast group.
                continue;
            }
            if let Err(r) = self.window.accept(&h) {
                stats.reject(r);
                continue;
            }
            stats.lost.store(self.window.lost(), Relaxed);
            stats.received_messages.fetch_add(1, Relaxed);
            stats
                .received_entries
                .fetch_add(entries.len() as u64, Relaxed);
            self.heard(from, &h);
            match h.kind {
                Kind::Entries | Kind::Templates | Kind::Entries6 | Kind::Templates6 => {
                    self.hand_in(entries)
                }
                Kind::BulkEnd => {
                    stats.bulk_received.fetch_add(1, Relaxed);
                }
                Kind::BulkStart | Kind::Heartbeat => {}
            }
        }
    }

    /// Notes a peer's message; a new epoch (it started or restarted) earns it a bulk
    /// transfer if this director sends.
    fn heard(&mut self, from: SocketAddrV4, h: &Header) {
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        let i = match peers.iter().position(|(p, _)| p.addr == from) {
            Some(i) => i,
            // A multicast peer, or one not listed: known from now on (bounded by the
            // replay window's sender limit upstream).
            None if peers.len() < ReplayWindow::MAX_SENDERS => {
                peers.push((PeerStatus::new(from), None));
                peers.len() - 1
            }
            None => return,
        };
        let (p, seen) = &mut peers[i];
        let joined = p.id != Some(h.sender) || h.epoch > p.epoch;
        p.id = Some(h.sender);
        p.epoch = p.epoch.max(h.epoch);
        p.messages += 1;
        *seen = Some(Instant::now());
        if joined && self.link.role().sends() && !self.bulk.iter().any(|b| b.to == from) {
            p.bulk_sent += 1;
            self.bulk.push_back(Bulk {
                to: from,
                queue: 0,
                next: Some(0),
                waiting: None,
                pending: VecDeque::new(),
                started: false,
            });
        }
    }

    /// Hands received entries to the queues that own their flows; a queue that has
    /// [`MAX_PENDING`] control messages waiting (it is not polling) gets none (they are
    /// counted as ignored), so memory stays bounded.
    fn hand_in(&mut self, entries: Vec<Entry>) {
        let n = self.queues.len();
        let give = |q: &Sender<Control>, v: Vec<Entry>, stats: &super::Stats| {
            if q.len() >= MAX_PENDING {
                stats.ignored.fetch_add(v.len() as u64, Relaxed);
            } else {
                let _ = q.send(Control::Synced(v));
            }
        };
        if n == 1 {
            give(&self.queues[0], entries, &self.link.stats);
            return;
        }
        let mut per: Vec<Vec<Entry>> = vec![Vec::new(); n];
        for e in entries {
            let q = match e.template {
                // The templates are the director's, shared by the queues: any queue takes it.
                Some(key) => (key % n as u64) as usize,
                None => {
                    (match e.client {
                        SocketAddr::V4(c) => crate::io::steer::queue_of(
                            &self.s.steer_key,
                            *c.ip(),
                            c.port(),
                            n as u32,
                        ),
                        SocketAddr::V6(c) => crate::io::steer::queue_of6(
                            &self.s.steer_key,
                            *c.ip(),
                            c.port(),
                            n as u32,
                        ),
                    }) as usize
                }
            };
            per[q].push(e);
        }
        for (q, v) in per.into_iter().enumerate() {
            if !v.is_empty() {
                give(&self.queues[q], v, &self.link.stats);
            }
        }
    }

    /// The first bulk transfer, as far as the rate and the queues' answers allow: ask a
    /// queue for its next slots, send what it answered, end with `BulkEnd`.
    fn bulk_step(&mut self) {
        let Some(mut b) = self.bulk.pop_front() else {
            return;
        };
        let n = self.queues.len();
        let done = loop {
            if self.tokens < 1.0 {
                break false;
            }
            if !b.started {
                b.started = true;
                self.send(Kind::BulkStart, &[], b.to, false);
                continue;
            }
            if let Some(kind) = b.pending.front().map(Entry::kind) {
                // One message, one kind: the run of entries of the first one's kind.
                let k = b
                    .pending
                    .iter()
                    .take(kind.max_entries())
                    .take_while(|e| e.kind() == kind)
                    .count();
                let chunk: Vec<Entry> = b.pending.drain(..k).collect();
                self.send(kind, &chunk, b.to, false);
                self.link
                    .stats
                    .sent_entries
                    .fetch_add(chunk.len() as u64, Relaxed);
                continue;
            }
            if let Some(rx) = &b.waiting {
                let next = match rx.try_recv() {
                    Ok((entries, next)) => {
                        b.pending.extend(entries);
                        next
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break false,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => None,
                };
                b.waiting = None;
                b.next = next;
                if next.is_none() {
                    b.queue += 1;
                    b.next = (b.queue < n).then_some(0);
                }
                continue;
            }
            match b.next {
                Some(from) if b.queue < n => {
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    if self.queues[b.queue]
                        .send(Control::SyncDump { from, reply: tx })
                        .is_ok()
                    {
                        b.waiting = Some(rx);
                        break false;
                    }
                    b.queue += 1;
                    b.next = (b.queue < n).then_some(0);
                }
                _ => {
                    self.send(Kind::BulkEnd, &[], b.to, false);
                    self.link.stats.bulk_sent.fetch_add(1, Relaxed);
                    break true;
                }
            }
        };
        if !done {
            self.bulk.push_front(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_a_foreign_listen_address_and_an_unreachable_peer() {
        let e = check("10.77.250.1:8848".parse().unwrap(), &[]).unwrap_err();
        assert!(
            e.contains("director.sync.listen: 10.77.250.1 is not an address of this machine"),
            "{e}"
        );
        // From the loopback address, nothing outside it can be reached.
        let e = check(
            "127.0.0.1:8848".parse().unwrap(),
            &[
                "127.0.0.2:8848".parse().unwrap(),
                "10.77.9.2:8848".parse().unwrap(),
            ],
        )
        .unwrap_err();
        assert!(
            e.contains("director.sync.peers[1]: 10.77.9.2:8848 cannot be reached from 127.0.0.1"),
            "{e}"
        );
        let ok = check(
            "127.0.0.1:8848".parse().unwrap(),
            &[
                "127.0.0.2:8848".parse().unwrap(),
                "239.1.1.1:8848".parse().unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(ok, "sync: listen 127.0.0.1:8848, 2 peer(s) reachable");
    }
}
