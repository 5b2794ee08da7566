//! The io_uring TUN backend: one ring per queue (and thread), reads into a provided-buffer
//! ring, writes from the same registered buffers.
//!
//! # Buffer ownership
//!
//! All packet buffers live in one anonymous mapping, cut into `buffers` slots of `buf_size`
//! bytes (at a stride rounded up to 64). Slot `i` is registered as fixed buffer `i` and has
//! buffer id `i` in the provided-buffer ring (group [`BGID`]). Every slot is always in exactly
//! one of three hands, tracked in `Queue::owner`:
//!
//! - **Ring**: published in the provided-buffer ring; the kernel may fill it at any moment.
//! - **App**: returned by a read completion; only this thread touches it, through one
//!   `Packet` at a time.
//! - **Write**: lent to a `WriteFixed`; the kernel reads it until the completion comes back,
//!   which returns the slot to the ring whatever the result (tokio-uring's `BufResult`).
//!
//! The mapping is unmapped only once no operation can reach it (every read finished or
//! cancelled, every write completed). If that cannot be established (a panic in the
//! pipeline, a shutdown that does not converge) the memory is leaked rather than unmapped.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::register::Probe;
use io_uring::squeue::{self, SubmissionQueue};
use io_uring::types::{self, BufRingEntry, CancelBuilder, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, CompletionQueue, IoUring, Submitter};

use super::counters::{IoCounters, IoDrop, IoSnapshot};
use super::ctx;
use crate::dataplane::{Packet, Pipeline, Verdict, HEADROOM};
use crate::wire::vnet::{self, VnetHdr};

/// The provided-buffer group id used for packet reads.
pub const BGID: u16 = 0;

/// Buffer size for a device with a virtio-net header: [`HEADROOM`] + a 64 KiB GSO
/// super-packet + tail room, a whole number of pages (68 KiB).
pub const VNET_BUF_SIZE: usize = 17 * 4096;

/// Most buffers one queue may register (`IORING_MAX_REG_BUFFERS`).
pub const MAX_BUFFERS: u16 = 1 << 14;

/// How long [`run_queue`] waits, once stopping, for its reads to be cancelled and its writes
/// to complete before giving up (and leaking the buffers).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Tuning of one queue's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringOptions {
    /// Submission queue entries (the completion queue is sized so that it cannot overflow).
    pub ring_entries: u32,
    /// Packet buffers, a power of two up to [`MAX_BUFFERS`].
    pub buffers: u16,
    /// Bytes per buffer, headroom included: at least [`HEADROOM`] + 576. Packets must be
    /// shorter than `buf_size - HEADROOM` (with a virtio-net header: plus its 10 bytes):
    /// TUN truncates longer ones silently, so a read that fills its buffer is discarded.
    pub buf_size: usize,
    /// Plain reads kept in flight when multishot read is unavailable.
    pub reads_in_flight: u16,
    /// Longest wait for completions before [`Pipeline::poll`] runs anyway.
    pub idle_timeout: Duration,
    /// Try a multishot read first (`IORING_OP_READ_MULTISHOT`, Linux 6.7); `false` forces the
    /// plain-read fallback (for comparison and tests; its reads wake each other and end up on
    /// io-wq worker threads, see the [module docs](super)).
    pub multishot: bool,
    /// Count the device's drops since the queue started in [`QueueStats::device_dropped`]
    /// (the kernel counts them for the whole device: one queue, queue 0, reports them).
    pub report_device_drops: bool,
}

impl Default for UringOptions {
    /// 512 entries, 512 buffers of 2048 bytes (for a device without virtio-net header and an
    /// MTU below 1984), 32 fallback reads, 10 ms idle timeout, multishot.
    fn default() -> Self {
        UringOptions {
            ring_entries: 512,
            buffers: 512,
            buf_size: 2048,
            reads_in_flight: 32,
            idle_timeout: Duration::from_millis(10),
            multishot: true,
            report_device_drops: false,
        }
    }
}

/// The longest packet (bytes, IP header on) a queue with the default buffers of
/// [`UringOptions::for_device`] takes whole: its buffer less [`HEADROOM`], less one (a read
/// that fills its buffer may have been truncated by TUN, so it is discarded). 1983 without a
/// virtio-net header; what `director.mtu` is checked against when `offload = false`.
pub fn largest_packet(vnet_hdr: bool) -> usize {
    UringOptions::for_device(vnet_hdr).buf_size - HEADROOM - 1
}

impl UringOptions {
    /// Defaults for a device with or without a virtio-net header; with one, 256 buffers of
    /// [`VNET_BUF_SIZE`] so that 64 KiB GSO super-packets fit (17 MiB per queue).
    pub fn for_device(vnet_hdr: bool) -> Self {
        if vnet_hdr {
            UringOptions {
                buffers: 256,
                buf_size: VNET_BUF_SIZE,
                ..UringOptions::default()
            }
        } else {
            UringOptions::default()
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !self.buffers.is_power_of_two() || self.buffers > MAX_BUFFERS {
            return bad(format!(
                "io_uring options: buffers = {}, expected a power of two from 1 to {MAX_BUFFERS}",
                self.buffers
            ));
        }
        if self.buf_size < HEADROOM + 576 || self.buf_size > (1 << 30) {
            return bad(format!(
                "io_uring options: buf_size = {}, expected {} to 2^30 bytes",
                self.buf_size,
                HEADROOM + 576
            ));
        }
        if self.reads_in_flight == 0 || self.reads_in_flight > self.buffers {
            return bad(format!(
                "io_uring options: reads_in_flight = {}, expected 1 to buffers ({})",
                self.reads_in_flight, self.buffers
            ));
        }
        if self.ring_entries < u32::from(self.reads_in_flight) + 16 || self.ring_entries > 32768 {
            return bad(format!(
                "io_uring options: ring_entries = {}, expected reads_in_flight + 16 ({}) to 32768",
                self.ring_entries,
                u32::from(self.reads_in_flight) + 16
            ));
        }
        Ok(())
    }
}

/// What one queue did, returned by [`run_queue`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets read.
    pub reads: u64,
    /// Packets written.
    pub writes: u64,
    /// Writes that failed (the buffer was recycled all the same).
    pub write_errors: u64,
    /// The errno of the last failed write, 0 if none.
    pub last_write_errno: i32,
    /// Reads that found the buffer ring empty (the read is re-armed when buffers come back).
    pub enobufs: u64,
    /// Packets the kernel dropped for the whole device since the queue started, because a
    /// queue of it was full (its `tx_dropped`), read at most every 100 ms; 0 unless
    /// [`UringOptions::report_device_drops`].
    pub device_dropped: u64,
    /// Loop iterations that reaped at least one completion.
    pub batches: u64,
    /// Packet bytes read, without virtio-net headers.
    pub bytes_in: u64,
    /// Packet bytes written, without virtio-net headers.
    pub bytes_out: u64,
    /// Packets the pipeline dropped.
    pub drops: u64,
    /// Packets read but not forwarded by the backend: malformed virtio-net header, possibly
    /// truncated (filled the buffer), no room left for the header after `prepend`, or read
    /// while stopping.
    pub discarded: u64,
    /// Times the multishot read was armed again after it ended (ENOBUFS and the like).
    pub rearms: u64,
    /// Completions the kernel lost to a full completion queue (the ring's `overflow`
    /// counter). Stays 0: the queue is sized for every completion that can be pending.
    pub cq_overflow: u64,
    /// True if the reads were multishot; false if the plain-read fallback ran.
    pub multishot: bool,
    /// True if the ring was set up with `IORING_SETUP_SINGLE_ISSUER`.
    pub single_issuer: bool,
    /// True if the ring was set up with `IORING_SETUP_DEFER_TASKRUN`.
    pub defer_taskrun: bool,
}

impl QueueStats {
    /// The figures [`IoCounters`] publishes.
    pub fn snapshot(&self) -> IoSnapshot {
        let mut s = IoSnapshot {
            packets: [self.reads, self.writes],
            bytes: [self.bytes_in, self.bytes_out],
            ..IoSnapshot::default()
        };
        s.drops[IoDrop::WriteError as usize] = self.write_errors;
        s.drops[IoDrop::Enobufs as usize] = self.enobufs;
        s.drops[IoDrop::KernelQueueFull as usize] = self.device_dropped;
        s.drops[IoDrop::Discarded as usize] = self.discarded;
        s
    }
}

/// Runs one TUN queue until [`Pipeline::poll`] returns `false`: reads packets, hands each to
/// `pipeline`, writes back those it forwards.
///
/// `fd` is the raw queue descriptor (it need not be non-blocking: io_uring waits for TUN
/// readiness by polling). `vnet_hdr` must match how the device was opened; it is checked
/// when `fd` is a TUN queue. Call it on the thread that owns the queue: the ring is set up for
/// a single issuer. `live` gets the queue's counters on every pass of its loop.
pub fn run_queue<P: Pipeline>(
    fd: BorrowedFd<'_>,
    vnet_hdr: bool,
    opts: &UringOptions,
    pipeline: &mut P,
    live: &IoCounters,
) -> io::Result<QueueStats> {
    opts.validate()?;
    if let Some(has) = super::tun::queue_has_vnet_hdr(fd) {
        if has != vnet_hdr {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TUN fd {}: device has IFF_VNET_HDR = {has}, run_queue called with \
                     vnet_hdr = {vnet_hdr}",
                    fd.as_raw_fd()
                ),
            ));
        }
    }
    let vnet_len = if vnet_hdr { vnet::LEN } else { 0 };
    let buffers = usize::from(opts.buffers);
    let stride = opts.buf_size.next_multiple_of(64);

    // Declared before the ring, so dropped after it.
    let mut bufs = Mapping::new(stride * buffers)
        .map_err(|e| ctx(e, format!("mmap of {buffers} packet buffers")))?;
    let mut ring_mem = Mapping::new(buffers * mem::size_of::<BufRingEntry>())
        .map_err(|e| ctx(e, "mmap of the provided-buffer ring".into()))?;

    // Each buffer yields at most one read and one write completion before it is recycled;
    // add the read terminations and a cancel: the completion queue cannot overflow.
    let cq_entries = (2 * opts.buffers as u32 + opts.reads_in_flight as u32 + 16)
        .next_power_of_two()
        .max(2 * opts.ring_entries);
    let (mut ring, single_issuer, defer_taskrun) = build_ring(opts.ring_entries, cq_entries)?;

    let iovecs: Vec<libc::iovec> = (0..buffers)
        .map(|i| libc::iovec {
            // Safety (of the pointer arithmetic): i * stride < the mapping's length.
            iov_base: unsafe { bufs.ptr.as_ptr().add(i * stride) }.cast(),
            iov_len: opts.buf_size,
        })
        .collect();
    // Safety: the iovecs cover the mapping `bufs`, which outlives the registration: it is
    // dropped after the ring, and leaked if operations may still use it.
    unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(|e| {
        ctx(
            e,
            format!(
                "IORING_REGISTER_BUFFERS ({buffers} x {} bytes; RLIMIT_MEMLOCK too low?)",
                opts.buf_size
            ),
        )
    })?;
    drop(iovecs);
    // Safety: `ring_mem` is page-aligned, holds `buffers` entries and outlives the
    // registration like `bufs`.
    unsafe {
        ring.submitter().register_buf_ring_with_flags(
            ring_mem.ptr.as_ptr() as u64,
            opts.buffers,
            BGID,
            0,
        )
    }
    .map_err(|e| ctx(e, "IORING_REGISTER_PBUF_RING".into()))?;

    let mut probe = Probe::new();
    let multishot = opts.multishot
        && ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(opcode::ReadMulti::CODE);

    let entries = ring_mem.ptr.cast::<BufRingEntry>();
    let mut q = Queue {
        fd: fd.as_raw_fd(),
        vnet_len,
        base: bufs.ptr,
        stride,
        buf_size: opts.buf_size,
        entry_off: HEADROOM - vnet_len,
        entry_len: (opts.buf_size - (HEADROOM - vnet_len)) as u32,
        entries,
        // Safety: `entries` points at entry 0 of the ring, which is initialised (zeroed).
        tail_ptr: NonNull::from(unsafe { &*BufRingEntry::tail(entries.as_ptr()) }),
        tail: 0,
        mask: opts.buffers - 1,
        owner: vec![Owner::App; buffers],
        in_ring: 0,
        writes_in_flight: 0,
        multishot,
        multishot_seen: false,
        reads_wanted: if multishot { 1 } else { opts.reads_in_flight },
        reads_in_flight: opts.reads_in_flight,
        reads_outstanding: 0,
        stopping: false,
        cancel_outstanding: false,
        stats: QueueStats {
            multishot,
            single_issuer,
            defer_taskrun,
            ..QueueStats::default()
        },
        device_drops: DeviceDrops::open(fd),
        report_device_drops: opts.report_device_drops,
    };
    for bid in 0..opts.buffers {
        q.recycle(bid);
    }
    q.publish();

    // From here on operations may hold buffers: unmap only after a clean shutdown.
    bufs.release = false;
    ring_mem.release = false;
    let idle = Timespec::from(opts.idle_timeout);
    let result = q.run(&mut ring, pipeline, &idle, live);
    let quiet = q.shutdown(&mut ring);
    if quiet {
        let s = ring.submitter();
        // Failures only mean the ring teardown will do it.
        let _ = s.unregister_buf_ring(BGID);
        let _ = s.unregister_buffers();
        bufs.release = true;
        ring_mem.release = true;
    }
    drop(ring);
    let stats = q.stats;
    live.store(&stats.snapshot());
    match result {
        Ok(()) if quiet => Ok(stats),
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "TUN fd {}: operations still in flight {SHUTDOWN_TIMEOUT:?} after stopping \
                 (buffers leaked); stats: {stats:?}",
                fd.as_raw_fd()
            ),
        )),
        Err(e) => Err(e),
    }
}

const UD_KIND: u64 = 0xffff_ffff << 32;
const UD_READ: u64 = 1 << 32;
const UD_WRITE: u64 = 2 << 32;
const UD_CANCEL: u64 = 3 << 32;

/// What happens to a packet after the pipeline saw it.
enum Outcome {
    Discard,
    Drop,
    /// Kept by the pipeline: nothing to write, not a drop.
    Consumed,
    /// Write `len` bytes from `off` in the slot (virtio-net header included).
    Write {
        off: usize,
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Ring,
    App,
    Write,
}

/// The state of one queue; see the module docs for the buffer invariants.
struct Queue {
    fd: RawFd,
    vnet_len: usize,
    base: NonNull<u8>,
    stride: usize,
    buf_size: usize,
    /// Where reads land in a slot: the IP header at [`HEADROOM`], the vnet header before it.
    entry_off: usize,
    entry_len: u32,
    entries: NonNull<BufRingEntry>,
    /// The ring's tail: the `resv` field of entry 0, which the kernel only reads.
    tail_ptr: NonNull<u16>,
    /// Local tail of the provided-buffer ring, published by `publish`.
    tail: u16,
    mask: u16,
    owner: Vec<Owner>,
    in_ring: u32,
    writes_in_flight: u32,
    multishot: bool,
    /// A multishot read has completed successfully at least once.
    multishot_seen: bool,
    reads_wanted: u16,
    reads_in_flight: u16,
    reads_outstanding: u16,
    stopping: bool,
    cancel_outstanding: bool,
    stats: QueueStats,
    /// The device's drops, when its statistics can be read.
    device_drops: Option<DeviceDrops>,
    /// Whether [`QueueStats::device_dropped`] is kept ([`UringOptions::report_device_drops`]).
    report_device_drops: bool,
}

/// How often a queue reads its device's drop count.
const DEVICE_DROPS_EVERY: Duration = Duration::from_millis(100);

/// The packets the kernel dropped for the TUN device because a queue of it was full (its
/// `tx_dropped`: the kernel transmits to ringvs), by netlink in the queue's own network
/// namespace (sysfs shows the namespace that mounted it, which a daemon started in a
/// namespace by systemd or `unshare` does not share). The count is the device's, not the
/// queue's: with several queues, each learns of every queue's drops.
struct DeviceDrops {
    source: DropSource,
    /// The count when the source was opened.
    first: u64,
    last: u64,
    at: Instant,
}

/// Where [`DeviceDrops`] reads the count.
enum DropSource {
    /// The interface's 64-bit statistics, by netlink.
    Link {
        netlink: super::xdp::netlink::Netlink,
        ifindex: u32,
    },
    /// A file holding a decimal number, as sysfs writes it (tests).
    #[cfg(test)]
    File(std::fs::File),
}

impl DeviceDrops {
    /// The statistics of the device TUN queue `fd` belongs to; `None` if they cannot be read
    /// (not a TUN queue, or no netlink).
    fn open(fd: BorrowedFd<'_>) -> Option<DeviceDrops> {
        let name = super::tun::queue_device(fd)?;
        let name = std::ffi::CString::new(name).ok()?;
        // Safety: if_nametoindex reads the NUL-terminated name; 0 means not found.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return None;
        }
        let netlink = super::xdp::netlink::Netlink::new().ok()?;
        Self::from_source(DropSource::Link { netlink, ifindex })
    }

    /// The count in the file at `path` (a decimal number, as sysfs writes it).
    #[cfg(test)]
    fn at_path(path: &str) -> Option<DeviceDrops> {
        Self::from_source(DropSource::File(std::fs::File::open(path).ok()?))
    }

    fn from_source(source: DropSource) -> Option<DeviceDrops> {
        let mut d = DeviceDrops {
            source,
            first: 0,
            last: 0,
            at: Instant::now(),
        };
        d.last = d.read()?;
        d.first = d.last;
        Some(d)
    }

    fn read(&mut self) -> Option<u64> {
        match &mut self.source {
            DropSource::Link { netlink, ifindex } => netlink.link_tx_dropped(*ifindex).ok()?,
            #[cfg(test)]
            DropSource::File(file) => {
                use std::os::unix::fs::FileExt;
                let mut b = [0u8; 24];
                let n = file.read_at(&mut b, 0).ok()?;
                std::str::from_utf8(&b[..n]).ok()?.trim().parse().ok()
            }
        }
    }

    /// True if the count grew since it was last read, read at most every
    /// [`DEVICE_DROPS_EVERY`].
    fn grew(&mut self, now: Instant) -> bool {
        if now.duration_since(self.at) < DEVICE_DROPS_EVERY {
            return false;
        }
        self.at = now;
        match self.read() {
            Some(n) if n != self.last => {
                self.last = n;
                true
            }
            _ => false,
        }
    }

    /// The drops since the source was opened (as of the last read).
    fn since_open(&self) -> u64 {
        self.last.saturating_sub(self.first)
    }
}

impl Queue {
    fn run<P: Pipeline>(
        &mut self,
        ring: &mut IoUring,
        pipeline: &mut P,
        idle: &Timespec,
        live: &IoCounters,
    ) -> io::Result<()> {
        let (submitter, mut sq, mut cq) = ring.split();
        let args = SubmitArgs::new().timespec(idle);
        self.arm_reads(&submitter, &mut sq)?;
        // While completions keep coming, enter without waiting (the deferred task work that
        // posts them still runs): a queue under load never sleeps between batches, which
        // cost a fifth of its time in context switches under a SYN flood. The first empty
        // pass waits again.
        let mut busy = false;
        loop {
            self.publish();
            sq.sync();
            match submitter.submit_with_args(usize::from(!busy), &args) {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(ctx(e, format!("io_uring_enter for TUN fd {}", self.fd))),
            }
            let enobufs = self.stats.enobufs;
            busy = self.drain(&submitter, &mut sq, &mut cq, pipeline)? > 0;
            if self.stats.enobufs != enobufs {
                pipeline.behind();
            }
            if busy {
                self.stats.batches += 1;
            }
            self.arm_reads(&submitter, &mut sq)?;
            live.store(&self.stats.snapshot());
            let now = Instant::now();
            if let Some(d) = self.device_drops.as_mut() {
                if d.grew(now) {
                    if self.report_device_drops {
                        self.stats.device_dropped = d.since_open();
                    }
                    pipeline.lost();
                }
            }
            if !pipeline.poll(now) {
                return Ok(());
            }
            self.send_own(pipeline);
        }
    }

    /// Writes the packets the pipeline sends on its own ([`Pipeline::drain`]: rare, a few
    /// a second at most) with a plain `writev`, outside the ring: they own no buffer slot.
    fn send_own<P: Pipeline>(&mut self, pipeline: &mut P) {
        let (fd, vnet_len) = (self.fd, self.vnet_len);
        let stats = &mut self.stats;
        pipeline.drain(&mut |pkt| {
            let hdr = [0u8; vnet::LEN];
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: vnet_len,
                },
                libc::iovec {
                    iov_base: pkt.as_ptr() as *mut libc::c_void,
                    iov_len: pkt.len(),
                },
            ];
            // Safety: both iovecs point into live buffers of the given lengths for the
            // duration of the call; the kernel only reads them.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
            if n < 0 {
                stats.write_errors += 1;
                stats.last_write_errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            } else {
                stats.writes += 1;
                stats.bytes_out += pkt.len() as u64;
            }
        });
    }

    /// Cancels the reads and waits for every operation to complete. Returns true if no
    /// operation can touch the buffers any more.
    fn shutdown(&mut self, ring: &mut IoUring) -> bool {
        self.stopping = true;
        let (submitter, mut sq, mut cq) = ring.split();
        if self.reads_outstanding > 0 {
            let cancel = opcode::AsyncCancel2::new(CancelBuilder::user_data(UD_READ).all())
                .build()
                .user_data(UD_CANCEL);
            if push(&submitter, &mut sq, &cancel).is_err() {
                return false;
            }
            self.cancel_outstanding = true;
        }
        let tick = Timespec::from(Duration::from_millis(10));
        let args = SubmitArgs::new().timespec(&tick);
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        let mut no_pipeline = Discard;
        while self.reads_outstanding > 0 || self.writes_in_flight > 0 || self.cancel_outstanding {
            if Instant::now() > deadline {
                return false;
            }
            self.publish();
            sq.sync();
            match submitter.submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(_) => return false,
            }
            if self
                .drain(&submitter, &mut sq, &mut cq, &mut no_pipeline)
                .is_err()
            {
                return false;
            }
        }
        sq.sync();
        self.owner.iter().all(|&o| o == Owner::Ring)
    }

    /// Handles every completion available now, up to what the submission queue can absorb,
    /// in batches: the packets of a batch are shown to [`Pipeline::prefetch`] before any of
    /// them is processed.
    fn drain<P: Pipeline>(
        &mut self,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        cq: &mut CompletionQueue<'_>,
        pipeline: &mut P,
    ) -> io::Result<usize> {
        // Each completion pushes at most one entry; leave room for the reads and a cancel.
        let cap = sq.capacity() - usize::from(self.reads_in_flight) - 2;
        let mut n = 0;
        let mut batch = [(0u64, 0i32, 0u32); BATCH];
        loop {
            cq.sync();
            if CompletionQueue::is_empty(cq) || n >= cap {
                break;
            }
            while n < cap {
                let mut k = 0;
                while k < BATCH && n + k < cap {
                    let Some(cqe) = cq.next() else { break };
                    batch[k] = (cqe.user_data(), cqe.result(), cqe.flags());
                    k += 1;
                }
                if k == 0 {
                    break;
                }
                n += k;
                self.prefetch(&batch[..k], pipeline);
                for &(ud, res, flags) in &batch[..k] {
                    self.complete(ud, res, flags, submitter, sq, pipeline)?;
                }
            }
        }
        self.stats.cq_overflow = u64::from(cq.overflow());
        Ok(n)
    }

    /// Shows the packets that read completions of a batch carry to the pipeline.
    fn prefetch<P: Pipeline>(&self, batch: &[(u64, i32, u32)], pipeline: &mut P) {
        let mut views: [&[u8]; BATCH] = [&[]; BATCH];
        let mut k = 0;
        for &(ud, res, flags) in batch {
            if ud & UD_KIND != UD_READ || res <= 0 || self.stopping {
                continue;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                continue;
            };
            let n = res as usize;
            if usize::from(bid) >= self.owner.len()
                || n < self.vnet_len
                || n >= self.entry_len as usize
            {
                continue;
            }
            // Safety: the kernel has finished writing this buffer (its completion is here)
            // and nothing else refers to it until `complete` takes it; the view lives only
            // for this call, before any of the batch is processed.
            views[k] = unsafe {
                std::slice::from_raw_parts(self.slot(bid).add(HEADROOM), n - self.vnet_len)
            };
            k += 1;
        }
        if k > 0 {
            pipeline.prefetch(&views[..k]);
        }
    }

    fn complete<P: Pipeline>(
        &mut self,
        ud: u64,
        res: i32,
        flags: u32,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        pipeline: &mut P,
    ) -> io::Result<()> {
        match ud & UD_KIND {
            UD_READ => self.on_read(res, flags, submitter, sq, pipeline),
            UD_WRITE => self.on_write((ud & 0xffff) as u16, res),
            UD_CANCEL => {
                self.cancel_outstanding = false;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "TUN fd {}: completion with unknown user_data {ud:#x}",
                    self.fd
                ),
            )),
        }
    }

    fn on_read<P: Pipeline>(
        &mut self,
        res: i32,
        flags: u32,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        pipeline: &mut P,
    ) -> io::Result<()> {
        if !cqueue::more(flags) {
            // The request is over: re-armed by `arm_reads` unless stopping.
            self.reads_outstanding = self.reads_outstanding.saturating_sub(1);
        }
        let bid = cqueue::buffer_select(flags);
        if let Some(bid) = bid {
            self.take(bid)?;
        }
        if res < 0 {
            if let Some(bid) = bid {
                self.recycle(bid);
            }
            return self.on_read_error(-res);
        }
        let Some(bid) = bid else {
            // A zero-length read with no buffer (nothing to do), or a kernel bug.
            return if res == 0 {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TUN fd {}: read of {res} bytes without a buffer", self.fd),
                ))
            };
        };
        if self.multishot {
            self.multishot_seen = true;
        }
        self.stats.reads += 1;
        let n = res as usize;
        let vnet_len = self.vnet_len;
        // TUN silently truncates a packet to the buffer and returns the truncated length
        // (seen on 6.18): a read that fills the buffer may be incomplete.
        if self.stopping || n < vnet_len || n >= self.entry_len as usize {
            self.stats.discarded += 1;
            self.recycle(bid);
            return Ok(());
        }
        self.stats.bytes_in += (n - vnet_len) as u64;

        let outcome = {
            let buf = self.buffer(bid);
            let vnet = if vnet_len > 0 {
                VnetHdr::parse(&buf[HEADROOM - vnet_len..HEADROOM]).ok()
            } else {
                None
            };
            match Packet::new(buf, HEADROOM, n - vnet_len) {
                Some(_) if vnet_len > 0 && vnet.is_none() => Outcome::Discard,
                None => Outcome::Discard,
                Some(mut pkt) => {
                    pkt.vnet = vnet;
                    match pipeline.process(&mut pkt) {
                        Verdict::Drop => Outcome::Drop,
                        Verdict::Consumed => Outcome::Consumed,
                        Verdict::Forward if pkt.start() < vnet_len => Outcome::Discard,
                        Verdict::Forward => {
                            let (start, len) = (pkt.start(), pkt.len());
                            if vnet_len > 0 {
                                let hdr = pkt.vnet.unwrap_or_default();
                                // Cannot fail: the slice is vnet::LEN bytes long.
                                let _ = hdr.emit(&mut pkt.buffer_mut()[start - vnet_len..start]);
                            }
                            Outcome::Write {
                                off: start - vnet_len,
                                len: len + vnet_len,
                            }
                        }
                    }
                }
            }
        };
        let (off, total) = match outcome {
            Outcome::Write { off, len } => (off, len),
            Outcome::Drop => {
                self.stats.drops += 1;
                self.recycle(bid);
                return Ok(());
            }
            Outcome::Consumed => {
                self.recycle(bid);
                return Ok(());
            }
            Outcome::Discard => {
                self.stats.discarded += 1;
                self.recycle(bid);
                return Ok(());
            }
        };

        self.owner[usize::from(bid)] = Owner::Write;
        self.writes_in_flight += 1;
        // Safety (of the pointer arithmetic): off + total <= buf_size, inside slot `bid`.
        let addr = unsafe { self.slot(bid).add(off) };
        let write = opcode::WriteFixed::new(types::Fd(self.fd), addr, total as u32, bid)
            .build()
            .user_data(UD_WRITE | u64::from(bid));
        push(submitter, sq, &write)
    }

    fn on_read_error(&mut self, errno: i32) -> io::Result<()> {
        match errno {
            libc::ENOBUFS => self.stats.enobufs += 1,
            libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
            libc::EINVAL | libc::EOPNOTSUPP if self.multishot && !self.multishot_seen => {
                // The kernel has the opcode but refuses it for this file: plain reads.
                self.multishot = false;
                self.stats.multishot = false;
                self.reads_wanted = self.reads_in_flight;
            }
            _ => {
                let e = io::Error::from_raw_os_error(errno);
                let hint = if errno == libc::EBADFD {
                    " (queue detached from its device?)"
                } else {
                    ""
                };
                return Err(ctx(e, format!("read on TUN fd {}{hint}", self.fd)));
            }
        }
        Ok(())
    }

    fn on_write(&mut self, bid: u16, res: i32) -> io::Result<()> {
        match self.owner.get(usize::from(bid)) {
            Some(Owner::Write) => {}
            state => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "TUN fd {}: write completion for buffer {bid} in state {state:?}",
                        self.fd
                    ),
                ))
            }
        }
        self.writes_in_flight -= 1;
        if res < 0 {
            self.stats.write_errors += 1;
            self.stats.last_write_errno = -res;
        } else {
            self.stats.writes += 1;
            self.stats.bytes_out += (res as u64).saturating_sub(self.vnet_len as u64);
        }
        self.recycle(bid);
        Ok(())
    }

    /// Keeps `reads_wanted` reads armed, but no more than there are buffers to fill.
    fn arm_reads(
        &mut self,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) -> io::Result<()> {
        while !self.stopping
            && self.reads_outstanding < self.reads_wanted
            && u32::from(self.reads_outstanding) < self.in_ring
        {
            let read = if self.multishot {
                if self.multishot_seen {
                    self.stats.rearms += 1;
                }
                opcode::ReadMulti::new(types::Fd(self.fd), 0, BGID).build()
            } else {
                opcode::Read::new(types::Fd(self.fd), ptr::null_mut(), self.entry_len)
                    .buf_group(BGID)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            };
            push(submitter, sq, &read.user_data(UD_READ))?;
            self.reads_outstanding += 1;
        }
        Ok(())
    }

    /// Ring → App, for a buffer a read completion returned.
    fn take(&mut self, bid: u16) -> io::Result<()> {
        match self.owner.get_mut(usize::from(bid)) {
            Some(o @ Owner::Ring) => {
                *o = Owner::App;
                self.in_ring -= 1;
                Ok(())
            }
            state => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "TUN fd {}: read completion with buffer {bid} in state {:?}",
                    self.fd, state
                ),
            )),
        }
    }

    /// App or Write → Ring: appends the slot to the provided-buffer ring (made visible to the
    /// kernel by `publish`).
    fn recycle(&mut self, bid: u16) {
        let i = usize::from(self.tail & self.mask);
        // Safety: `i` < the ring's entry count; at most `buffers` slots are ever in the ring,
        // so entry `i` is not one the kernel has yet to consume; only this thread writes it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(i) };
        // Safety (of the pointer arithmetic): the read area is inside slot `bid`.
        entry.set_addr(unsafe { self.slot(bid).add(self.entry_off) } as u64);
        entry.set_len(self.entry_len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.owner[usize::from(bid)] = Owner::Ring;
        self.in_ring += 1;
    }

    /// Makes recycled buffers visible to the kernel.
    fn publish(&self) {
        // Safety: `tail_ptr` is a 2-aligned u16 inside the ring mapping, which outlives
        // `self`; the kernel only reads it, with acquire semantics, so this release store
        // publishes the entries written before it.
        let tail = unsafe { AtomicU16::from_ptr(self.tail_ptr.as_ptr()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The start of slot `bid`.
    fn slot(&self, bid: u16) -> *mut u8 {
        debug_assert!(usize::from(bid) < self.owner.len());
        // Safety: bid < buffers, so the offset is inside the mapping.
        unsafe { self.base.as_ptr().add(usize::from(bid) * self.stride) }
    }

    /// Slot `bid` as a slice; it must be in the App state.
    fn buffer(&mut self, bid: u16) -> &mut [u8] {
        debug_assert_eq!(self.owner[usize::from(bid)], Owner::App);
        // Safety: the slot lies inside the mapping; in the App state no operation refers to
        // it, and the `&mut self` borrow keeps this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.slot(bid), self.buf_size) }
    }
}

/// Completions handled per batch (and packets per [`Pipeline::prefetch`] call).
const BATCH: usize = 32;

/// The pipeline used while stopping: reads are discarded before it would be called.
struct Discard;

impl Pipeline for Discard {
    fn process(&mut self, _pkt: &mut Packet<'_>) -> Verdict {
        Verdict::Drop
    }
    fn poll(&mut self, _now: Instant) -> bool {
        false
    }
}

/// Pushes `entry`, submitting to make room if the queue is full.
fn push(
    submitter: &Submitter<'_>,
    sq: &mut SubmissionQueue<'_>,
    entry: &squeue::Entry,
) -> io::Result<()> {
    for _ in 0..1000 {
        // Safety: every entry built here points at memory that outlives the operation: packet
        // slots and the provided-buffer ring in mappings that are unmapped only once all
        // operations have completed (see the module docs), and nothing else.
        if unsafe { sq.push(entry) }.is_ok() {
            return Ok(());
        }
        sq.sync();
        match submitter.submit() {
            Ok(_) => {}
            Err(e) if transient(&e) => {}
            Err(e) => return Err(ctx(e, "io_uring_enter with a full submission queue".into())),
        }
        sq.sync();
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "io_uring submission queue stays full",
    ))
}

/// Errors of `io_uring_enter` after which the loop simply goes on.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// Sets up the ring with the cheapest task-running mode the kernel accepts. Returns the ring
/// and whether it is single-issuer and defers task work.
fn build_ring(entries: u32, cq_entries: u32) -> io::Result<(IoUring, bool, bool)> {
    let defer = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_submit_all()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries);
    if let Ok(ring) = defer {
        return Ok((ring, true, true));
    }
    let coop = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_submit_all()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(entries);
    if let Ok(ring) = coop {
        return Ok((ring, true, false));
    }
    IoUring::builder()
        .setup_cqsize(cq_entries)
        .build(entries)
        .map(|ring| (ring, false, false))
        .map_err(|e| {
            ctx(
                e,
                format!("io_uring_setup({entries} entries, cq {cq_entries})"),
            )
        })
}

/// An anonymous private mapping. Unmapped on drop only if `release` is set, i.e. when no
/// io_uring operation can reach it any more; leaked otherwise.
///
/// Large mappings start on a 2 MiB boundary and ask for transparent huge pages: packets land
/// in buffers spread over megabytes, and with 4 KiB pages nearly every packet missed the TLB.
struct Mapping {
    /// Start of the usable (aligned) region.
    ptr: NonNull<u8>,
    /// Start and length of the whole mapping, for munmap.
    map: NonNull<u8>,
    map_len: usize,
    release: bool,
}

/// Transparent huge page size on x86-64.
const HUGE_PAGE: usize = 2 << 20;

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        let huge = len >= HUGE_PAGE;
        let map_len = if huge { len + HUGE_PAGE } else { len };
        // Safety: a fresh anonymous mapping aliases nothing; the result is checked.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if huge { 0 } else { libc::MAP_POPULATE },
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).expect("mmap returned NULL");
        let start = if huge {
            (p as usize).next_multiple_of(HUGE_PAGE)
        } else {
            p as usize
        };
        if huge {
            // Safety: [start, start + len) lies inside the mapping (we added a huge page of
            // slack). MADV_HUGEPAGE is a hint; then every page is touched so that it is
            // backed before the ring pins it.
            unsafe {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
                ptr::write_bytes(start as *mut u8, 0, len);
            }
        }
        Ok(Mapping {
            ptr: NonNull::new(start as *mut u8).expect("aligned start is not NULL"),
            map,
            map_len,
            release: true,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.release {
            // Safety: the mapping is ours, and `release` says no operation refers to it.
            unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_drops_are_noticed_when_the_count_grows_at_most_every_100_ms() {
        let dir = std::env::temp_dir().join(format!("ringvs-drops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tx_dropped");
        std::fs::write(&path, "17\n").unwrap();
        let mut d = DeviceDrops::at_path(path.to_str().unwrap()).unwrap();
        let t0 = d.at;
        assert!(!d.grew(t0 + DEVICE_DROPS_EVERY), "unchanged");
        std::fs::write(&path, "42\n").unwrap();
        assert!(!d.grew(t0 + DEVICE_DROPS_EVERY), "read again too soon");
        assert_eq!(d.since_open(), 0, "not read yet");
        assert!(d.grew(t0 + 2 * DEVICE_DROPS_EVERY));
        assert_eq!(d.since_open(), 25, "42 - 17: the drops since it was opened");
        assert!(!d.grew(t0 + 3 * DEVICE_DROPS_EVERY), "counted once");
        std::fs::write(&path, "not a number").unwrap();
        assert!(!d.grew(t0 + 4 * DEVICE_DROPS_EVERY));
        assert!(DeviceDrops::at_path(dir.join("absent").to_str().unwrap()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
