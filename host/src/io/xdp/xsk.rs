//! AF_XDP sockets, their rings and the UMEM they share, on `libc` alone.
//!
//! One [`Umem`] (an anonymous mapping cut into fixed-size frames) is registered once, by the
//! first socket; every other socket (one per interface and queue) binds with
//! `XDP_SHARED_UMEM` and gets its own fill and completion rings, so a frame received on any
//! interface by any queue can be sent from any socket without a copy.
//!
//! The four rings of a socket are single-producer single-consumer queues shared with the
//! kernel (the `libxdp` protocol): the producer writes descriptors, then publishes its index
//! with a release store; the consumer reads the index with an acquire load, then the
//! descriptors, then publishes its own index. Each ring caches the other side's index and
//! reads it again only when it seems out of room, so a batch costs two atomic operations.

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::io::ctx;

/// The UMEM: `frames` frames of `frame_size` bytes, registered with the first socket.
#[derive(Debug)]
pub struct Umem {
    ptr: NonNull<u8>,
    len: usize,
    frame_size: u32,
}

// Safety: the mapping is plain memory. Which frame a thread may touch is decided by the
// frame ownership protocol of the AF_XDP queues (each frame is in one hand at a time).
unsafe impl Send for Umem {}
// Safety: as above; `Umem` itself only hands out raw pointers.
unsafe impl Sync for Umem {}

impl Umem {
    /// Maps `frames` frames of `frame_size` (a power of two, 2048 or 4096) bytes, on
    /// transparent huge pages when large, touched so that they are backed before the kernel
    /// pins them.
    pub fn new(frames: u32, frame_size: u32) -> io::Result<Umem> {
        let len = frames as usize * frame_size as usize;
        // Safety: a fresh anonymous mapping aliases nothing; the result is checked.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ctx(
                io::Error::last_os_error(),
                format!("mmap of the AF_XDP UMEM ({frames} frames of {frame_size} bytes)"),
            ));
        }
        // Safety: the range is the mapping just made; MADV_HUGEPAGE is only a hint.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        Ok(Umem {
            ptr: NonNull::new(p.cast()).expect("mmap returned NULL"),
            len,
            frame_size,
        })
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the mapping is empty (never: `new` refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The start of the frame holding UMEM address `addr`.
    #[inline]
    pub fn frame_of(&self, addr: u64) -> u64 {
        addr & !u64::from(self.frame_size - 1)
    }

    /// The frame holding `addr` as a mutable slice.
    ///
    /// # Safety
    ///
    /// `addr` must lie inside the UMEM, and the caller must own that frame (no ring, no other
    /// thread and no other live slice refers to it) for as long as the slice lives.
    #[inline]
    // Frames are handed between owners by the ring protocol, not by Rust borrows: the
    // caller's ownership of the frame is what makes the slice exclusive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame_mut(&self, addr: u64) -> &mut [u8] {
        let start = self.frame_of(addr) as usize;
        debug_assert!(start + self.frame_size as usize <= self.len);
        // Safety: the caller vouches for ownership and range.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), self.frame_size as usize)
        }
    }

    /// `len` bytes at UMEM address `addr`, read-only.
    ///
    /// # Safety
    ///
    /// The range must lie inside one frame the caller owns, and nothing may write it while
    /// the slice lives.
    #[inline]
    pub unsafe fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        debug_assert!(addr as usize + len <= self.len);
        // Safety: the caller vouches for ownership and range.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(addr as usize), len) }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // Safety: the mapping is ours. Sockets that registered or shared it hold their own
        // pins on its pages (the kernel pinned them at XDP_UMEM_REG), so unmapping our view is
        // safe even if the kernel releases the UMEM later.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A descriptor of the RX and TX rings (`struct xdp_desc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Desc {
    /// UMEM address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Options (multi-buffer continuation flag; unused).
    pub options: u32,
}

/// A ring mapped from a socket.
struct RingMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // Safety: the mapping is ours and nothing refers to it once its ring is dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A ring of `T` entries shared with the kernel: producer and consumer indexes, flags, and
/// the entries.
pub struct Ring<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our side's index, published by `submit`/`release`.
    local: u32,
    /// The other side's index as last read.
    cached: u32,
    _map: RingMap,
    _t: PhantomData<T>,
}

// Safety: the ring's memory is a mapping owned by the ring; one thread uses it at a time
// (a queue's rings move to its thread once and stay there).
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps ring `pgoff` of socket `fd`, of `size` entries, at offsets `off`.
    fn map(
        fd: RawFd,
        pgoff: libc::off_t,
        size: u32,
        off: &libc::xdp_ring_offset,
        producer_side: bool,
    ) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * mem::size_of::<T>();
        // Safety: mapping a socket's ring at the page offset the kernel documents for it;
        // the result is checked.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).expect("mmap returned NULL");
        // Safety (of the pointer arithmetic): the kernel's offsets lie inside the mapping.
        let at = |o: u64| unsafe { NonNull::new_unchecked(base.as_ptr().add(o as usize)) };
        let mut ring = Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            mask: size - 1,
            size,
            local: 0,
            cached: 0,
            _map: RingMap { ptr: base, len },
            _t: PhantomData,
        };
        // Start from the kernel's indexes (0 on a fresh socket).
        if producer_side {
            ring.local = ring.producer().load(Ordering::Relaxed);
            ring.cached = ring.consumer().load(Ordering::Acquire);
        } else {
            ring.local = ring.consumer().load(Ordering::Relaxed);
            ring.cached = ring.producer().load(Ordering::Acquire);
        }
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // Safety: a 4-aligned u32 inside the mapping, which lives as long as `self`; the
        // kernel accesses it atomically too.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // Safety: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// The ring's flags word (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        // Safety: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries.
    pub fn size(&self) -> u32 {
        self.size
    }

    #[inline]
    fn slot(&self, i: u32) -> *mut T {
        // Safety (of the pointer arithmetic): masked index < size entries in the mapping.
        unsafe { self.entries.as_ptr().add((i & self.mask) as usize) }
    }

    // -- producer side (fill, TX) --

    /// Free entries we may write (re-reading the consumer's index if needed).
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.local.wrapping_sub(self.cached);
        if free >= want {
            return free;
        }
        self.cached = self.consumer().load(Ordering::Acquire);
        self.size - self.local.wrapping_sub(self.cached)
    }

    /// Writes one entry (after `free` said there is room); visible after `submit`.
    #[inline]
    pub fn push(&mut self, v: T) {
        // Safety: `free` guaranteed the slot is not one the kernel has yet to consume, and
        // only this thread writes the ring.
        unsafe { self.slot(self.local).write(v) };
        self.local = self.local.wrapping_add(1);
    }

    /// Publishes what `push` wrote.
    #[inline]
    pub fn submit(&mut self) {
        self.producer().store(self.local, Ordering::Release);
    }

    // -- consumer side (RX, completion) --

    /// Entries available to read (re-reading the producer's index if none are cached).
    #[inline]
    pub fn available(&mut self) -> u32 {
        let n = self.cached.wrapping_sub(self.local);
        if n > 0 {
            return n;
        }
        self.cached = self.producer().load(Ordering::Acquire);
        self.cached.wrapping_sub(self.local)
    }

    /// Reads entry `i` of those `available` (0-based); the entry stays ours until `release`.
    #[inline]
    pub fn peek(&self, i: u32) -> T {
        // Safety: the producer published this entry (acquire in `available`), and it is not
        // reused until we release it.
        unsafe { self.slot(self.local.wrapping_add(i)).read() }
    }

    /// Gives `n` read entries back to the producer.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.consumer().store(self.local, Ordering::Release);
    }
}

/// Ring sizes of one socket (powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizes {
    /// RX and TX rings.
    pub rxtx: u32,
    /// Fill and completion rings.
    pub fill: u32,
}

/// How a socket binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// The socket that registers the UMEM; `zero_copy`: `Some(true)` forces zero-copy,
    /// `Some(false)` copy mode, `None` lets the kernel choose (zero-copy where the driver
    /// supports it).
    Owner {
        /// See above.
        zero_copy: Option<bool>,
    },
    /// Shares the UMEM of the owner socket with this descriptor.
    Shared(RawFd),
}

/// An AF_XDP socket bound to one interface queue, with its four rings.
pub struct Xsk {
    fd: OwnedFd,
    /// Received descriptors.
    pub rx: Ring<Desc>,
    /// Descriptors to send.
    pub tx: Ring<Desc>,
    /// Frames lent to the kernel for receiving.
    pub fill: Ring<u64>,
    /// Frames the kernel has finished sending.
    pub comp: Ring<u64>,
    /// The interface index.
    pub ifindex: u32,
    /// The queue.
    pub queue: u32,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Xsk(fd {}, if {} queue {})",
            self.fd.as_raw_fd(),
            self.ifindex,
            self.queue
        )
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T, what: &str) -> io::Result<()> {
    // Safety: `v` points at a valid T of the size given, as the option expects.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(ctx(io::Error::last_os_error(), what.to_string()));
    }
    Ok(())
}

fn getsockopt<T: Default>(fd: RawFd, opt: libc::c_int, what: &str) -> io::Result<T> {
    let mut v = T::default();
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // Safety: `v` is a writable T and `len` its size; the kernel writes at most `len` bytes.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (&mut v as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(ctx(io::Error::last_os_error(), what.to_string()));
    }
    Ok(v)
}

/// `struct xdp_statistics` (what the kernel counted for a socket).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XskStats {
    /// Dropped for other reasons (e.g. no room, bad frame).
    pub rx_dropped: u64,
    /// Invalid descriptors in the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors in the TX ring.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame came.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

impl Xsk {
    /// Opens a socket on `ifindex` queue `queue`, with rings of `sizes`, registering `umem`
    /// (`Bind::Owner`) or sharing the owner's.
    pub fn open(
        umem: &Umem,
        ifindex: u32,
        queue: u32,
        sizes: RingSizes,
        bind: Bind,
    ) -> io::Result<Xsk> {
        let what = |s: &str| format!("AF_XDP socket on interface {ifindex} queue {queue}: {s}");
        // Safety: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                " (the kernel has no AF_XDP sockets: CONFIG_XDP_SOCKETS)"
            } else {
                ""
            };
            return Err(ctx(e, what(&format!("socket(AF_XDP){hint}"))));
        }
        // Safety: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Bind::Owner { .. } = bind {
            // Safety: xdp_umem_reg is plain old data; all-zero is valid.
            let mut reg: libc::xdp_umem_reg = unsafe { mem::zeroed() };
            reg.addr = umem.base() as u64;
            reg.len = umem.len() as u64;
            reg.chunk_size = umem.frame_size();
            reg.headroom = 0;
            setsockopt(raw, libc::XDP_UMEM_REG, &reg, &what("XDP_UMEM_REG"))?;
        }
        setsockopt(
            raw,
            libc::XDP_UMEM_FILL_RING,
            &sizes.fill,
            &what("fill ring"),
        )?;
        setsockopt(
            raw,
            libc::XDP_UMEM_COMPLETION_RING,
            &sizes.fill,
            &what("completion ring"),
        )?;
        setsockopt(raw, libc::XDP_RX_RING, &sizes.rxtx, &what("RX ring"))?;
        setsockopt(raw, libc::XDP_TX_RING, &sizes.rxtx, &what("TX ring"))?;
        let off: libc::xdp_mmap_offsets = {
            // Safety: plain old data; all-zero is valid.
            let mut v: libc::xdp_mmap_offsets = unsafe { mem::zeroed() };
            let mut len = mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
            // Safety: `v` is writable and `len` its size.
            let rc = unsafe {
                libc::getsockopt(
                    raw,
                    libc::SOL_XDP,
                    libc::XDP_MMAP_OFFSETS,
                    (&mut v as *mut libc::xdp_mmap_offsets).cast(),
                    &mut len,
                )
            };
            if rc < 0 {
                return Err(ctx(io::Error::last_os_error(), what("XDP_MMAP_OFFSETS")));
            }
            v
        };
        let map_err = |e: io::Error, r: &str| ctx(e, what(&format!("mmap of the {r} ring")));
        let rx = Ring::map(raw, libc::XDP_PGOFF_RX_RING, sizes.rxtx, &off.rx, false)
            .map_err(|e| map_err(e, "RX"))?;
        let tx = Ring::map(raw, libc::XDP_PGOFF_TX_RING, sizes.rxtx, &off.tx, true)
            .map_err(|e| map_err(e, "TX"))?;
        let fill = Ring::map(
            raw,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            sizes.fill,
            &off.fr,
            true,
        )
        .map_err(|e| map_err(e, "fill"))?;
        let comp = Ring::map(
            raw,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            sizes.fill,
            &off.cr,
            false,
        )
        .map_err(|e| map_err(e, "completion"))?;

        let (flags, shared_fd) = match bind {
            Bind::Owner { zero_copy } => (
                libc::XDP_USE_NEED_WAKEUP
                    | match zero_copy {
                        Some(true) => libc::XDP_ZEROCOPY,
                        Some(false) => libc::XDP_COPY,
                        None => 0,
                    },
                0,
            ),
            Bind::Shared(owner) => (libc::XDP_SHARED_UMEM, owner as u32),
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        // Safety: `sa` is a valid sockaddr_xdp of the size given.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::EINVAL) => {
                    " (is the queue beyond the interface's queues? see `ethtool -l`)"
                }
                Some(libc::EBUSY) => " (another AF_XDP socket is bound to this queue)",
                Some(libc::EOPNOTSUPP) => " (zero-copy not supported by this driver)",
                _ => "",
            };
            return Err(ctx(e, what(&format!("bind{hint}"))));
        }
        Ok(Xsk {
            fd,
            rx,
            tx,
            fill,
            comp,
            ifindex,
            queue,
        })
    }

    /// The socket's descriptor (for the XSKMAP, `poll` and wakeups).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True if the socket runs in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        getsockopt::<u32>(self.raw_fd(), libc::XDP_OPTIONS, "XDP_OPTIONS")
            .is_ok_and(|f| f & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// What the kernel counted for this socket.
    pub fn stats(&self) -> io::Result<XskStats> {
        getsockopt::<XskStats>(self.raw_fd(), libc::XDP_STATISTICS, "XDP_STATISTICS")
    }

    /// Asks the kernel to send what the TX ring holds (`sendto` with no data), when it wants
    /// to be woken. Returns false if it should be asked again (it sent a batch and more is
    /// queued, or it is busy).
    pub fn kick_tx(&self) -> io::Result<bool> {
        if !self.tx.needs_wakeup() {
            return Ok(true);
        }
        // Safety: a zero-length sendto on our socket; no buffer is read.
        let rc = unsafe {
            libc::sendto(
                self.raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(false),
            // The interface went down: frames stay in the ring until it is up again.
            Some(libc::ENETDOWN | libc::ENXIO) => Ok(true),
            _ => Err(e),
        }
    }

    /// Wakes the driver to fill frames when the fill ring asks for it (zero-copy drivers).
    pub fn kick_fill(&self) {
        if self.fill.needs_wakeup() {
            // Safety: a zero-length non-blocking recvfrom on our socket; nothing is written.
            unsafe {
                libc::recvfrom(
                    self.raw_fd(),
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
        }
    }
}
