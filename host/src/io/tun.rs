//! Creating a multi-queue TUN device: one `/dev/net/tun` file descriptor per queue.
//!
//! The device is not persistent: it disappears when the last queue descriptor is closed
//! (dropping [`TunDevice`], or the descriptors from [`TunDevice::into_queues`]).

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::thread;
use std::time::{Duration, Instant};

use super::ctx;
use crate::wire::vnet;

/// `IFF_NAPI` (include/uapi/linux/if_tun.h).
const IFF_NAPI: libc::c_int = 0x0010;

/// Linux's limit on the queues of one TUN device (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

/// The `txqueuelen` set when [`TunOptions::txqueuelen`] is `None` (the kernel's default of 500
/// drops bursts: see MEASURED.md).
pub const DEFAULT_TXQUEUELEN: u32 = 10_000;

/// How long [`TunDevice::create`] keeps retrying `TUNSETIFF` while it fails with `EBUSY`.
///
/// The first queue is opened with `IFF_TUN_EXCL`, so `EBUSY` means a device of that name
/// exists. Right after a previous instance exits it may still: an io_uring instance that had
/// the queue in its *registered file* table releases it from its asynchronous teardown, and
/// the device then lingers for 25–75 ms, up to 250 ms on a busy machine (measured on Linux
/// 6.18). [`run_queue`] reads the raw descriptor and waits for its operations to finish, so
/// its device goes away when the descriptor is closed; the retry covers other users.
///
/// [`run_queue`]: super::run_queue
pub const EBUSY_RETRY: Duration = Duration::from_secs(1);

/// How a TUN device is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name (at most 15 bytes). A `%d` in it lets the kernel pick a number; an empty
    /// name means `tun%d`.
    pub name: String,
    /// Number of queues (file descriptors), 1 to [`MAX_QUEUES`]; one per data-plane thread.
    pub queues: usize,
    /// Prefix every packet with a virtio-net header (`IFF_VNET_HDR`) and enable checksum and
    /// TSO offload, so the kernel hands over unchecksummed GSO super-packets of up to 64 KiB.
    pub vnet_hdr: bool,
    /// With `vnet_hdr`: accept segmentation-offload super-packets (TSO, USO); false keeps
    /// checksum offload only (the kernel segments before handing packets over: what
    /// tunnelled realservers need, see `dataplane::tunnel`).
    pub segmentation: bool,
    /// MTU to set; `None` leaves the kernel's (1500).
    pub mtu: Option<u32>,
    /// Transmit queue length; `None` means [`DEFAULT_TXQUEUELEN`].
    pub txqueuelen: Option<u32>,
    /// `IFF_NAPI`: packets written to the device are received through a NAPI context (with
    /// GRO) instead of directly in the writer's system call.
    pub napi: bool,
}

impl TunOptions {
    /// One queue, no virtio-net header, default MTU and queue length.
    pub fn new(name: impl Into<String>) -> TunOptions {
        TunOptions {
            name: name.into(),
            queues: 1,
            vnet_hdr: false,
            segmentation: true,
            mtu: None,
            txqueuelen: None,
            napi: false,
        }
    }
}

/// A TUN device that is up, with one descriptor per queue.
#[derive(Debug)]
pub struct TunDevice {
    name: String,
    ifindex: u32,
    vnet_hdr: bool,
    uso: bool,
    queues: Vec<OwnedFd>,
}

impl TunDevice {
    /// Creates the device and brings it up. Fails if a device of that name exists (after
    /// retrying for [`EBUSY_RETRY`]): attaching to it would silently change its flags under
    /// its other users.
    ///
    /// With `vnet_hdr` the device uses 10-byte little-endian virtio-net headers and offloads
    /// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`, plus `TUN_F_USO4 | TUN_F_USO6` where the kernel
    /// accepts them ([`TunDevice::uso`]). Without it, offloads are switched off explicitly:
    /// they persist on a device, and a reader that cannot see the header would otherwise get
    /// packets with partial checksums.
    pub fn create(opts: &TunOptions) -> io::Result<TunDevice> {
        if opts.name.len() >= libc::IFNAMSIZ || opts.name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TUN device name {:?}: must be at most {} bytes without NUL",
                    opts.name,
                    libc::IFNAMSIZ - 1
                ),
            ));
        }
        if opts.queues == 0 || opts.queues > MAX_QUEUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "TUN device {:?}: {} queues requested, must be 1 to {MAX_QUEUES}",
                    opts.name, opts.queues
                ),
            ));
        }

        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.napi {
            flags |= IFF_NAPI;
        }
        let mut name = opts.name.clone();
        let mut queues = Vec::with_capacity(opts.queues);
        for q in 0..opts.queues {
            // The first queue must create the device: attaching to an existing one would
            // silently change its flags (and offloads) under its other users.
            let excl = if q == 0 { libc::IFF_TUN_EXCL } else { 0 };
            let fd = open_queue(&name, flags | excl, q)?;
            // The kernel may have expanded a `%d` pattern: attach the other queues to the
            // device the first one created.
            name = fd.1;
            queues.push(fd.0);
        }
        let q0 = queues[0].as_raw_fd();

        let mut uso = false;
        if opts.vnet_hdr {
            let size = vnet::LEN as libc::c_int;
            // Safety: TUNSETVNETHDRSZ reads one c_int through the pointer, which is valid.
            unsafe { tun_ioctl(q0, libc::TUNSETVNETHDRSZ, &size as *const _ as _) }
                .map_err(|e| ctx(e, format!("TUNSETVNETHDRSZ({size}) on {name}")))?;
            let le: libc::c_int = 1;
            // Safety: TUNSETVNETLE reads one c_int through the pointer, which is valid.
            unsafe { tun_ioctl(q0, libc::TUNSETVNETLE, &le as *const _ as _) }
                .map_err(|e| ctx(e, format!("TUNSETVNETLE(1) on {name}")))?;
            let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
            let with_uso = base | libc::TUN_F_USO4 | libc::TUN_F_USO6;
            // TUNSETOFFLOAD takes the flags by value. Kernels without USO reject unknown bits
            // with EINVAL: retry without them. Without segmentation: checksum offload only.
            let wanted = if opts.segmentation {
                with_uso
            } else {
                libc::TUN_F_CSUM
            };
            // Safety: TUNSETOFFLOAD takes an integer argument and dereferences nothing.
            let first = unsafe { tun_ioctl(q0, libc::TUNSETOFFLOAD, wanted as libc::c_ulong) };
            match first {
                Ok(()) => uso = opts.segmentation,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && opts.segmentation => {
                    // Safety: as above.
                    unsafe { tun_ioctl(q0, libc::TUNSETOFFLOAD, base as libc::c_ulong) }
                        .map_err(|e| ctx(e, format!("TUNSETOFFLOAD(CSUM|TSO4|TSO6) on {name}")))?;
                }
                Err(e) => {
                    return Err(ctx(
                        e,
                        format!("TUNSETOFFLOAD(CSUM|TSO4|TSO6|USO) on {name}"),
                    ))
                }
            }
        } else {
            // Safety: TUNSETOFFLOAD takes an integer argument and dereferences nothing.
            unsafe { tun_ioctl(q0, libc::TUNSETOFFLOAD, 0) }
                .map_err(|e| ctx(e, format!("TUNSETOFFLOAD(0) on {name}")))?;
        }

        let sock = ctl_socket().map_err(|e| ctx(e, format!("control socket for {name}")))?;
        let mut ifr = ifreq(&name);
        // SIOCGIFINDEX reads ifr_name and writes ifr_ifindex in the ifreq we own.
        sock_ioctl(&sock, libc::SIOCGIFINDEX, &mut ifr)
            .map_err(|e| ctx(e, format!("SIOCGIFINDEX on {name}")))?;
        // Safety: the kernel filled the ifindex member of the union.
        let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex } as u32;

        if let Some(mtu) = opts.mtu {
            let mut ifr = ifreq(&name);
            ifr.ifr_ifru.ifru_mtu = int_arg(mtu, "MTU", &name)?;
            // SIOCSIFMTU reads ifr_name and ifr_mtu from the ifreq we own.
            sock_ioctl(&sock, libc::SIOCSIFMTU, &mut ifr)
                .map_err(|e| ctx(e, format!("SIOCSIFMTU({mtu}) on {name}")))?;
        }
        let qlen = opts.txqueuelen.unwrap_or(DEFAULT_TXQUEUELEN);
        let mut ifr = ifreq(&name);
        // `ifr_qlen` is the `ifr_ivalue` member, which shares its place with `ifr_mtu`.
        ifr.ifr_ifru.ifru_mtu = int_arg(qlen, "txqueuelen", &name)?;
        // SIOCSIFTXQLEN reads ifr_name and ifr_qlen from the ifreq we own.
        sock_ioctl(&sock, libc::SIOCSIFTXQLEN, &mut ifr)
            .map_err(|e| ctx(e, format!("SIOCSIFTXQLEN({qlen}) on {name}")))?;

        let mut ifr = ifreq(&name);
        // SIOCGIFFLAGS reads ifr_name and writes ifr_flags in the ifreq we own.
        sock_ioctl(&sock, libc::SIOCGIFFLAGS, &mut ifr)
            .map_err(|e| ctx(e, format!("SIOCGIFFLAGS on {name}")))?;
        // Safety: the kernel filled the flags member of the union.
        let up = unsafe { ifr.ifr_ifru.ifru_flags } | libc::IFF_UP as libc::c_short;
        ifr.ifr_ifru.ifru_flags = up;
        // SIOCSIFFLAGS reads ifr_name and ifr_flags from the ifreq we own.
        sock_ioctl(&sock, libc::SIOCSIFFLAGS, &mut ifr)
            .map_err(|e| ctx(e, format!("SIOCSIFFLAGS(IFF_UP) on {name}")))?;

        Ok(TunDevice {
            name,
            ifindex,
            vnet_hdr: opts.vnet_hdr,
            uso,
            queues,
        })
    }

    /// The interface name (with any `%d` expanded).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// True if packets carry a virtio-net header.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// True if UDP segmentation offload (`TUN_F_USO4 | TUN_F_USO6`) was accepted, so the
    /// kernel may hand over `GSO_UDP_L4` super-packets.
    pub fn uso(&self) -> bool {
        self.uso
    }

    /// The queue descriptors, one per queue.
    pub fn queue_fds(&self) -> &[OwnedFd] {
        &self.queues
    }

    /// Gives up the queue descriptors, e.g. to move one to each data-plane thread. The device
    /// lives until the last of them is closed.
    pub fn into_queues(self) -> Vec<OwnedFd> {
        self.queues
    }
}

/// Attaches an eBPF steering program (`BPF_PROG_TYPE_SOCKET_FILTER` returning a queue index)
/// to the device of queue `fd` (`TUNSETSTEERINGEBPF`), e.g. to keep both directions of a flow
/// on one queue.
pub fn attach_steering_bpf(fd: BorrowedFd<'_>, prog_fd: BorrowedFd<'_>) -> io::Result<()> {
    let prog: libc::c_int = prog_fd.as_raw_fd();
    // Safety: TUNSETSTEERINGEBPF reads one c_int (the program fd) through the valid pointer.
    unsafe {
        tun_ioctl(
            fd.as_raw_fd(),
            libc::TUNSETSTEERINGEBPF,
            &prog as *const _ as _,
        )
    }
    .map_err(|e| {
        ctx(
            e,
            format!("TUNSETSTEERINGEBPF(fd {prog}) on TUN fd {}", fd.as_raw_fd()),
        )
    })
}

/// Detaches the steering program, going back to the kernel's flow-hash queue selection.
pub fn detach_steering_bpf(fd: BorrowedFd<'_>) -> io::Result<()> {
    let none: libc::c_int = -1;
    // Safety: TUNSETSTEERINGEBPF reads one c_int through the valid pointer; -1 detaches.
    unsafe {
        tun_ioctl(
            fd.as_raw_fd(),
            libc::TUNSETSTEERINGEBPF,
            &none as *const _ as _,
        )
    }
    .map_err(|e| {
        ctx(
            e,
            format!("TUNSETSTEERINGEBPF(-1) on TUN fd {}", fd.as_raw_fd()),
        )
    })
}

/// Whether the TUN queue `fd` was opened with `IFF_VNET_HDR`; `None` if `fd` is not a TUN
/// queue attached to a device.
pub(crate) fn queue_has_vnet_hdr(fd: BorrowedFd<'_>) -> Option<bool> {
    let mut ifr = ifreq("");
    // Safety: TUNGETIFF writes the name and flags into the ifreq we own.
    unsafe { tun_ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr as *mut _ as _) }.ok()?;
    // Safety: the kernel filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as libc::c_int;
    Some(flags & libc::IFF_VNET_HDR != 0)
}

/// The name of the device TUN queue `fd` is attached to; `None` if `fd` is not one.
pub(crate) fn queue_device(fd: BorrowedFd<'_>) -> Option<String> {
    let mut ifr = ifreq("");
    // Safety: TUNGETIFF writes the name and flags into the ifreq we own.
    unsafe { tun_ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr as *mut _ as _) }.ok()?;
    let name: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(name).ok().filter(|n| !n.is_empty())
}

/// Opens `/dev/net/tun` and attaches it as queue `q` of device `name`; returns the
/// descriptor and the actual device name.
fn open_queue(name: &str, flags: libc::c_int, q: usize) -> io::Result<(OwnedFd, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| ctx(e, format!("open /dev/net/tun for {name} queue {q}")))?;
    let fd = OwnedFd::from(file);
    let deadline = Instant::now() + EBUSY_RETRY;
    loop {
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // Safety: TUNSETIFF reads the name and flags from, and writes the name to, the
        // ifreq we own.
        match unsafe { tun_ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut _ as _) } {
            Ok(()) => {
                // Safety: the kernel wrote a NUL-terminated name into ifr_name.
                let actual = unsafe { CStr::from_ptr(ifr.ifr_name.as_ptr()) };
                return Ok((fd, actual.to_string_lossy().into_owned()));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                let what = match e.raw_os_error() {
                    Some(libc::EBUSY) => " (a device with that name exists)",
                    Some(libc::EINVAL) => " (the device has other flags, or is not a TUN)",
                    _ => "",
                };
                return Err(ctx(e, format!("TUNSETIFF on {name} queue {q}{what}")));
            }
        }
    }
}

/// `ioctl(fd, req, arg)`.
///
/// # Safety
///
/// `arg` must be what `req` expects: an integer, or a pointer to memory of the right type that
/// stays valid (and, if the kernel writes it, writable) for the duration of the call.
unsafe fn tun_ioctl(fd: RawFd, req: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // Safety: the caller vouches for `arg`; the kernel validates `fd`.
    let rc = unsafe { libc::ioctl(fd, req, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A `SIOC*` request on `ifr`. Only used with requests that read or write a `struct ifreq`.
fn sock_ioctl(sock: &OwnedFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // Safety: every caller passes a SIOC[GS]IF* request, which reads or writes one ifreq;
    // `ifr` is a valid, exclusive reference for the duration of the call.
    unsafe { tun_ioctl(sock.as_raw_fd(), req as libc::Ioctl, ifr as *mut _ as _) }
}

/// An `AF_INET` datagram socket in the caller's network namespace, the handle for `SIOC*`.
fn ctl_socket() -> io::Result<OwnedFd> {
    // Safety: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A zeroed `ifreq` carrying `name` (already checked to fit, NUL included).
fn ifreq(name: &str) -> libc::ifreq {
    // Safety: ifreq is plain old data (a name array and a union of integers, arrays and a
    // pointer); all-zero is a valid value for it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn int_arg(v: u32, what: &str, name: &str) -> io::Result<libc::c_int> {
    libc::c_int::try_from(v).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {v} for {name} does not fit in a C int"),
        )
    })
}
