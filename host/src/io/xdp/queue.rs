//! One AF_XDP queue: a thread with one socket per interface (all on the same queue number),
//! driving one [`Pipeline`].
//!
//! # Frames
//!
//! The UMEM is cut into equal shares, one per queue; a queue lends only its own frames to
//! its fill rings, so every frame it receives is its own. Each frame is in one hand at a time:
//!
//! - **free**: on the queue's free stack;
//! - **fill**: lent to the kernel in a fill ring, until it comes back full in an RX ring;
//! - **app**: being processed (a batch, at most [`BATCH`] frames);
//! - **handed**: in a hand-off ring to the queue that owns its flow (see below);
//! - **tx**: in a TX ring or being sent, until the completion ring gives it back;
//! - **returning**: in a return ring to its home queue, after another queue sent or dropped it.
//!
//! A frame that leaves its queue (handed off, then sent or dropped by another queue) always
//! comes back through a return ring, so each queue keeps exactly its share: no queue can
//! starve another of frames. No allocation happens per packet: the free stack, the batch and
//! the rings are sized at start.
//!
//! # Hand-off
//!
//! Each queue owns a shard of the connection table, so both directions of a flow must be
//! processed by the same queue. A NIC (or a veth's sender) picks the receive queue by its own
//! hash of the packet, which a NAT rewrite changes, and an XDP program can only redirect a
//! frame to the socket of the queue it arrived on. So a queue that receives a frame of a flow
//! another queue owns ([`steer::queue_of_packet`]: the same keyed hash of the client endpoint
//! the TUN steering program computes) passes the frame's descriptor to that queue through a
//! single-producer single-consumer ring: no copy, the frame stays where it is in the shared
//! UMEM. A sleeping queue is woken through its eventfd, at most once per batch.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{self, Framed, ETH};
use super::neigh::{Hop, NextHop, NextHopCache, HOLD, HOLD_TIME};
use super::spsc::{Consumer, Producer};
use super::xsk::{Desc, Umem, Xsk, XskStats};
use super::Shared;
use crate::dataplane::Pipeline;
use crate::io::counters::{IoCounters, IoDrop, IoSnapshot};
use crate::io::steer;

/// Frames handled per batch (and per [`Pipeline::prefetch`] call).
pub const BATCH: usize = 32;

/// Where the IP header of a packet the queue sends on its own starts in its frame: where a
/// received one's does (the kernel's XDP headroom, then the Ethernet header).
const OWN_START: usize = crate::io::mem::XDP_HEADROOM + ETH;

/// Wakes a sleeping queue.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Waker {
    /// An eventfd.
    pub fn new() -> io::Result<Waker> {
        // Safety: plain eventfd(2); the result is checked and owned at once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // Safety: `fd` is fresh and ours.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicBool::new(false),
        })
    }

    /// Wakes the queue if it sleeps (call after a SeqCst fence that follows the publish).
    fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one = 1u64;
            // Safety: writing 8 bytes from a valid u64 to our eventfd.
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn drain(&self) {
        let mut v = 0u64;
        // Safety: reading 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// What one AF_XDP queue did, returned when it stops.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct XdpQueueStats {
    /// Frames received from the queue's sockets.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Bytes received (frames without their Ethernet header).
    pub rx_bytes: u64,
    /// Bytes sent (IP packets, without the Ethernet header).
    pub tx_bytes: u64,
    /// Packets the pipeline dropped.
    pub drops: u64,
    /// Frames handed to the queue owning their flow.
    pub handed_out: u64,
    /// Frames other queues handed to this one.
    pub handed_in: u64,
    /// Frames dropped because a hand-off ring was full.
    pub handoff_full: u64,
    /// Forwarded packets held until their destination's next hop was resolved.
    pub held: u64,
    /// Forwarded packets dropped: the destination's next hop was not resolved in time (or
    /// too many packets were waiting).
    pub no_neighbour: u64,
    /// Forwarded packets dropped: no route through ringvs's interfaces.
    pub no_route: u64,
    /// Forwarded packets dropped: the TX ring was full.
    pub tx_full: u64,
    /// Frames too short for Ethernet + IPv4, or with no room for the Ethernet header.
    pub discarded: u64,
    /// Times the queue slept waiting for frames.
    pub sleeps: u64,
    /// True if the sockets run in zero-copy mode.
    pub zero_copy: bool,
    /// What the kernel counted on the queue's sockets (summed).
    pub kernel: XskStats,
}

impl XdpQueueStats {
    /// The figures [`IoCounters`] publishes.
    pub fn snapshot(&self) -> IoSnapshot {
        let mut s = IoSnapshot {
            packets: [self.rx, self.tx],
            bytes: [self.rx_bytes, self.tx_bytes],
            ..IoSnapshot::default()
        };
        let k = &self.kernel;
        for (r, v) in [
            (IoDrop::Discarded, self.discarded),
            (IoDrop::TxFull, self.tx_full),
            (IoDrop::NoNeighbour, self.no_neighbour),
            (IoDrop::NoRoute, self.no_route),
            (IoDrop::HandoffFull, self.handoff_full),
            (IoDrop::RxRingFull, k.rx_ring_full),
            (IoDrop::KernelRxDropped, k.rx_dropped),
            (IoDrop::FillRingEmpty, k.rx_fill_ring_empty_descs),
            (IoDrop::InvalidDesc, k.rx_invalid_descs + k.tx_invalid_descs),
        ] {
            s.drops[r as usize] = v;
        }
        s
    }
}

/// How often a running queue reads its sockets' kernel counters (frames dropped for a full
/// RX ring are [`Pipeline::lost`]).
const KERNEL_STATS_EVERY: Duration = Duration::from_millis(100);

/// One queue, ready to run on its thread.
pub struct XdpQueue {
    pub(super) id: usize,
    pub(super) socks: Vec<Xsk>,
    pub(super) umem: Arc<Umem>,
    pub(super) shared: Arc<Shared>,
    /// Frames per queue (the UMEM share).
    pub(super) share: u64,
    pub(super) fill_target: u32,
    pub(super) busy_poll: u32,
    pub(super) idle_timeout: Duration,
    /// Hand-off rings to each queue (`None` for itself), and from each.
    pub(super) hand_out: Vec<Option<Producer>>,
    pub(super) hand_in: Vec<Consumer>,
    /// Return rings to each queue, and from each.
    pub(super) ret_out: Vec<Option<Producer>>,
    pub(super) ret_in: Vec<Consumer>,
    pub(super) wakers: Arc<Vec<Waker>>,
    /// The queue's free stack as [`XdpQueue::prime`] left it (its fill rings hold the rest).
    pub(super) free: Vec<u64>,
}

/// Tops every socket's fill ring up to `target` frames lent, from `free`.
fn top_up(socks: &mut [Xsk], target: u32, free: &mut Vec<u64>) {
    for s in socks.iter_mut() {
        let size = s.fill.size();
        let room = s.fill.free(size);
        let lent = size - room;
        if lent >= target {
            continue;
        }
        let want = (target - lent).min(room) as usize;
        let n = want.min(free.len());
        for _ in 0..n {
            if let Some(f) = free.pop() {
                s.fill.push(f);
            }
        }
        if n > 0 {
            s.fill.submit();
            s.kick_fill();
        }
    }
}

impl std::fmt::Debug for XdpQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XdpQueue({}, {:?})", self.id, self.socks)
    }
}

/// A descriptor packed into one ring word: address above, length in the low 16 bits.
#[inline]
fn pack(d: Desc) -> u64 {
    (d.addr << 16) | u64::from(d.len & 0xffff)
}

#[inline]
fn unpack(v: u64) -> Desc {
    Desc {
        addr: v >> 16,
        len: (v & 0xffff) as u32,
        options: 0,
    }
}

/// A forwarded packet waiting for its destination's next hop: its frame, where the IP
/// packet starts in it and how long it is, the destination, and since when.
struct Held {
    frame: u64,
    start: usize,
    len: usize,
    dst: IpAddr,
    since: Instant,
}

/// The running state of a queue (what `run` works with).
struct State {
    held: Vec<Held>,
    /// The other half of `held`'s double buffer (retries move what stays into it).
    held_spare: Vec<Held>,
    /// What `sleep` polls: every socket, then the eventfd.
    pollfds: Vec<libc::pollfd>,
    held_version: u64,
    free: Vec<u64>,
    tx_pending: Vec<bool>,
    touched: u64,
    hops: NextHopCache,
    services: Arc<super::Steered>,
    services_gen: u64,
    batch: [Desc; BATCH],
    k: usize,
    stats: XdpQueueStats,
}

impl XdpQueue {
    /// The queue's frames: `[id * share, (id + 1) * share)`.
    fn home_of(&self, frame: u64) -> usize {
        (frame / (self.share * u64::from(self.umem.frame_size()))) as usize
    }

    /// Runs the queue until [`Pipeline::poll`] returns `false`.
    /// Publishes its counters to `live` on every pass (the kernel's socket counters once a
    /// second).
    pub fn run<P: Pipeline>(
        mut self,
        pipeline: &mut P,
        live: &IoCounters,
    ) -> io::Result<XdpQueueStats> {
        let mut pollfds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pollfds.push(libc::pollfd {
            fd: self.wakers[self.id].fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let mut st = State {
            held: Vec::with_capacity(HOLD),
            held_spare: Vec::with_capacity(HOLD),
            pollfds,
            held_version: 0,
            free: std::mem::take(&mut self.free),
            tx_pending: vec![false; self.socks.len()],
            touched: 0,
            hops: NextHopCache::default(),
            services: Arc::default(),
            services_gen: u64::MAX,
            batch: [Desc::default(); BATCH],
            k: 0,
            stats: XdpQueueStats {
                zero_copy: self.socks.iter().any(Xsk::zero_copy),
                ..XdpQueueStats::default()
            },
        };
        let queues = self.hand_out.len();
        let mut idle = 0u32;
        let mut kernel_at = Instant::now();
        loop {
            if queues > 1 {
                let g = self.shared.services_gen.load(Ordering::Acquire);
                if g != st.services_gen {
                    st.services_gen = g;
                    if let Ok(s) = self.shared.services.read() {
                        st.services = s.clone();
                    }
                }
            }
            let mut work = self.reap(&mut st);
            if !st.held.is_empty() {
                self.retry_held(&mut st);
            }
            self.refill(&mut st);
            work += self.receive(&mut st, pipeline);
            self.flush(&mut st)?;
            let now = Instant::now();
            if now.duration_since(kernel_at) >= KERNEL_STATS_EVERY {
                kernel_at = now;
                let full = st.stats.kernel.rx_ring_full;
                st.stats.kernel = self.kernel_stats();
                if st.stats.kernel.rx_ring_full != full {
                    pipeline.lost();
                }
            }
            live.store(&st.stats.snapshot());
            if !pipeline.poll(now) {
                break;
            }
            self.send_own(&mut st, pipeline);
            if work > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle > self.busy_poll {
                    idle = 0;
                    self.sleep(&mut st)?;
                }
            }
        }
        st.stats.kernel = self.kernel_stats();
        live.store(&st.stats.snapshot());
        Ok(st.stats)
    }

    /// What the kernel counted on the queue's sockets, summed (a `getsockopt` each).
    fn kernel_stats(&self) -> XskStats {
        let mut t = XskStats::default();
        for k in self.socks.iter().filter_map(|s| s.stats().ok()) {
            t.rx_dropped += k.rx_dropped;
            t.rx_invalid_descs += k.rx_invalid_descs;
            t.tx_invalid_descs += k.tx_invalid_descs;
            t.rx_ring_full += k.rx_ring_full;
            t.rx_fill_ring_empty_descs += k.rx_fill_ring_empty_descs;
            t.tx_ring_empty_descs += k.tx_ring_empty_descs;
        }
        t
    }

    /// Frames back: returned by other queues, and sent (completion rings).
    fn reap(&mut self, st: &mut State) -> usize {
        let mut n = 0;
        for c in self.ret_in.iter_mut() {
            let mut any = false;
            while let Some(f) = c.pop() {
                st.free.push(f);
                any = true;
                n += 1;
            }
            if any {
                c.release();
            }
        }
        for i in 0..self.socks.len() {
            let avail = self.socks[i].comp.available();
            for j in 0..avail {
                let addr = self.socks[i].comp.peek(j);
                self.release(st, addr);
            }
            if avail > 0 {
                self.socks[i].comp.release(avail);
                n += avail as usize;
            }
        }
        n
    }

    /// A frame this queue is done with: to the free stack, or home.
    #[inline]
    fn release(&mut self, st: &mut State, addr: u64) {
        let frame = self.umem.frame_of(addr);
        let home = self.home_of(frame);
        if home == self.id {
            st.free.push(frame);
        } else if let Some(Some(p)) = self.ret_out.get_mut(home) {
            // Cannot be full: the ring holds the home queue's whole share.
            let _ = p.push(frame);
            st.touched |= 1 << home;
        }
    }

    /// Builds the queue's free stack (every frame of its share) and lends its fill rings
    /// their first frames: called before the XDP program is attached, so that no frame of
    /// the first burst finds an empty fill ring (the kernel would drop it).
    pub(super) fn prime(&mut self) {
        let fs = u64::from(self.umem.frame_size());
        let first = self.id as u64 * self.share;
        self.free = (first..first + self.share).map(|f| f * fs).rev().collect();
        top_up(&mut self.socks, self.fill_target, &mut self.free);
    }

    /// Tops every fill ring up to its target from the free stack.
    fn refill(&mut self, st: &mut State) {
        top_up(&mut self.socks, self.fill_target, &mut st.free);
    }

    /// Takes what the RX rings and the hand-off rings hold, in batches.
    fn receive<P: Pipeline>(&mut self, st: &mut State, pipeline: &mut P) -> usize {
        let queues = self.hand_out.len() as u32;
        let mut n = 0;
        for i in 0..self.socks.len() {
            let avail = self.socks[i].rx.available().min(256);
            for j in 0..avail {
                let d = self.socks[i].rx.peek(j);
                st.stats.rx += 1;
                st.stats.rx_bytes += u64::from(d.len).saturating_sub(ETH as u64);
                if queues > 1 {
                    let owner = {
                        // Safety: the frame came out of our RX ring: ours until released;
                        // the view lives only for this computation.
                        let ip = unsafe {
                            self.umem
                                .bytes(d.addr + ETH as u64, (d.len as usize).saturating_sub(ETH))
                        };
                        let (v4, v6) = &*st.services;
                        steer::queue_of_packet(ip, v4, v6, &self.shared.key, queues) as usize
                    };
                    if owner != self.id {
                        self.hand_off(st, owner, d);
                        continue;
                    }
                }
                st.batch[st.k] = d;
                st.k += 1;
                if st.k == BATCH {
                    self.process_batch(st, pipeline);
                }
            }
            if avail > 0 {
                self.socks[i].rx.release(avail);
                n += avail as usize;
            }
        }
        for q in 0..self.hand_in.len() {
            let mut any = false;
            while let Some(v) = self.hand_in[q].pop() {
                any = true;
                n += 1;
                st.stats.handed_in += 1;
                st.batch[st.k] = unpack(v);
                st.k += 1;
                if st.k == BATCH {
                    self.process_batch(st, pipeline);
                }
                if n > 4096 {
                    break;
                }
            }
            if any {
                self.hand_in[q].release();
            }
        }
        if st.k > 0 {
            self.process_batch(st, pipeline);
        }
        n
    }

    fn hand_off(&mut self, st: &mut State, owner: usize, d: Desc) {
        let pushed = match self.hand_out.get_mut(owner) {
            Some(Some(p)) => p.push(pack(d)),
            _ => false,
        };
        if pushed {
            st.stats.handed_out += 1;
            st.touched |= 1 << owner;
        } else {
            st.stats.handoff_full += 1;
            self.release(st, d.addr);
        }
    }

    /// Shows the batch to the pipeline, then processes, frames and queues each packet.
    fn process_batch<P: Pipeline>(&mut self, st: &mut State, pipeline: &mut P) {
        let k = std::mem::take(&mut st.k);
        {
            let mut views: [&[u8]; BATCH] = [&[]; BATCH];
            for (v, d) in views.iter_mut().zip(&st.batch[..k]) {
                // Safety: every frame of the batch is ours (app); these read-only views live
                // only for this call, before any of them is processed.
                *v = unsafe {
                    self.umem
                        .bytes(d.addr + ETH as u64, (d.len as usize).saturating_sub(ETH))
                };
            }
            pipeline.prefetch(&views[..k]);
        }
        for i in 0..k {
            let d = st.batch[i];
            self.process_one(st, pipeline, d);
        }
    }

    fn process_one<P: Pipeline>(&mut self, st: &mut State, pipeline: &mut P, d: Desc) {
        let frame = self.umem.frame_of(d.addr);
        let off = (d.addr - frame) as usize;
        let out = {
            // Safety: the frame is ours (app) until it is queued for sending or released
            // below; the slice does not outlive this block.
            let buf = unsafe { self.umem.frame_mut(frame) };
            frame::run(pipeline, buf, off, d.len as usize)
        };
        let (start, plen, dst) = match out {
            Framed::Forward { start, len, dst } => (start, len, dst),
            Framed::Dropped => {
                st.stats.drops += 1;
                self.release(st, frame);
                return;
            }
            Framed::Consumed => {
                self.release(st, frame);
                return;
            }
            Framed::Discarded => {
                st.stats.discarded += 1;
                self.release(st, frame);
                return;
            }
        };
        self.route(st, frame, start, plen, dst);
    }

    /// Sends the IP packet at `start..start + len` of `frame` towards `dst`: at once when its
    /// next hop is known, held while it resolves, released when it cannot be sent.
    fn route(&mut self, st: &mut State, frame: u64, start: usize, plen: usize, dst: IpAddr) {
        match st.hops.get(&self.shared.neigh, dst) {
            Hop::Via(hop) => self.transmit(st, frame, start, plen, hop),
            Hop::Unreachable => {
                st.stats.no_route += 1;
                self.release(st, frame);
            }
            Hop::Unknown if st.held.len() < HOLD => {
                // Look again on the next iteration, then whenever the table moves.
                st.held_version = u64::MAX;
                st.stats.held += 1;
                st.held.push(Held {
                    frame,
                    start,
                    len: plen,
                    dst,
                    since: Instant::now(),
                });
            }
            Hop::Unknown => {
                st.stats.no_neighbour += 1;
                self.release(st, frame);
            }
        }
    }

    /// Sends the packets the pipeline sends on its own ([`Pipeline::drain`]: the SYN proxy's
    /// resets, a few a second at most), each copied into a free frame of this queue at the
    /// offset a received packet has; with no free frame or no room, it is counted and not
    /// sent.
    fn send_own<P: Pipeline>(&mut self, st: &mut State, pipeline: &mut P) {
        let start = OWN_START;
        let room = self.umem.frame_size() as usize - start;
        pipeline.drain(&mut |pkt| {
            if pkt.len() < 20 || pkt.len() > room {
                st.stats.discarded += 1;
                return;
            }
            let Some(frame) = st.free.pop() else {
                st.stats.tx_full += 1;
                return;
            };
            {
                // Safety: the frame came off this queue's free stack: ours until it is
                // queued for sending or released; the slice ends with this block.
                let buf = unsafe { self.umem.frame_mut(frame) };
                buf[start..start + pkt.len()].copy_from_slice(pkt);
            }
            match frame::destination(pkt) {
                Some(dst) => self.route(st, frame, start, pkt.len(), dst),
                None => {
                    st.stats.discarded += 1;
                    self.release(st, frame);
                }
            }
        });
    }

    /// Puts the Ethernet header of `hop` in front of the packet at `start` of `frame` and
    /// queues it on the socket of `hop`'s interface.
    fn transmit(&mut self, st: &mut State, frame: u64, start: usize, len: usize, hop: NextHop) {
        let slot = usize::from(hop.slot);
        if slot >= self.socks.len() || self.socks[slot].tx.free(1) == 0 {
            st.stats.tx_full += 1;
            self.release(st, frame);
            return;
        }
        {
            // Safety: the frame is ours (app) until it is queued below; the slice ends
            // before that.
            let buf = unsafe { self.umem.frame_mut(frame) };
            frame::put_header(buf, start, &hop.hdr);
        }
        let s = &mut self.socks[slot];
        s.tx.push(Desc {
            addr: frame + (start - ETH) as u64,
            len: (len + ETH) as u32,
            options: 0,
        });
        st.tx_pending[slot] = true;
        st.stats.tx += 1;
        st.stats.tx_bytes += len as u64;
    }

    /// Sends held packets whose next hop is now known; drops those that waited too long.
    fn retry_held(&mut self, st: &mut State) {
        let v = self.shared.neigh.version();
        let expired = st
            .held
            .first()
            .is_some_and(|h| h.since.elapsed() > HOLD_TIME);
        if v == st.held_version && !expired {
            return;
        }
        st.held_version = v;
        let mut held = std::mem::take(&mut st.held);
        let mut keep = std::mem::take(&mut st.held_spare);
        for h in held.drain(..) {
            match st.hops.get(&self.shared.neigh, h.dst) {
                Hop::Via(hop) => self.transmit(st, h.frame, h.start, h.len, hop),
                Hop::Unreachable => {
                    st.stats.no_route += 1;
                    self.release(st, h.frame);
                }
                Hop::Unknown if h.since.elapsed() <= HOLD_TIME => keep.push(h),
                Hop::Unknown => {
                    st.stats.no_neighbour += 1;
                    self.release(st, h.frame);
                }
            }
        }
        st.held = keep;
        st.held_spare = held;
    }

    /// Publishes TX rings (and asks the kernel to send), hand-off and return rings (and wakes
    /// the queues they go to, if asleep).
    fn flush(&mut self, st: &mut State) -> io::Result<()> {
        for (i, s) in self.socks.iter_mut().enumerate() {
            if !std::mem::take(&mut st.tx_pending[i]) {
                continue;
            }
            s.tx.submit();
            for _ in 0..64 {
                if s.kick_tx()? {
                    break;
                }
            }
        }
        if st.touched != 0 {
            for q in 0..self.hand_out.len() {
                if st.touched & (1 << q) == 0 {
                    continue;
                }
                if let Some(p) = &self.hand_out[q] {
                    p.publish();
                }
                if let Some(p) = &self.ret_out[q] {
                    p.publish();
                }
            }
            fence(Ordering::SeqCst);
            for q in 0..self.hand_out.len() {
                if st.touched & (1 << q) != 0 {
                    self.wakers[q].wake();
                }
            }
            st.touched = 0;
        }
        Ok(())
    }

    /// Waits for frames on any socket, or a wakeup from another queue, or the idle timeout.
    fn sleep(&mut self, st: &mut State) -> io::Result<()> {
        let me = &self.wakers[self.id];
        me.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.hand_in.iter().any(|c| !c.is_empty()) || self.ret_in.iter().any(|c| !c.is_empty()) {
            me.sleeping.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let fds = &mut st.pollfds;
        for f in fds.iter_mut() {
            f.revents = 0;
        }
        let ms = if st.held.is_empty() {
            self.idle_timeout.as_millis().clamp(1, 1000) as libc::c_int
        } else {
            1
        };
        // Safety: `fds` is a valid array of pollfd of the length given.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        me.sleeping.store(false, Ordering::SeqCst);
        st.stats.sleeps += 1;
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        if fds.last().is_some_and(|f| f.revents != 0) {
            me.drain();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_pack_into_one_word() {
        for d in [
            Desc {
                addr: 0,
                len: 0,
                options: 0,
            },
            Desc {
                addr: (64 << 20) + 256,
                len: 1514,
                options: 0,
            },
            Desc {
                addr: (1 << 40) - 1,
                len: 65535,
                options: 0,
            },
        ] {
            assert_eq!(unpack(pack(d)), d);
        }
    }
}
