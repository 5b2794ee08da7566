//! The AF_XDP backend (`director.io = "af_xdp"`): the data plane on the client- and
//! realserver-facing interfaces themselves, without a TUN device and without the kernel's
//! forwarding path in between.
//!
//! - [`prog`]: the XDP program, generated in Rust, that redirects only what ringvs serves
//!   (traffic to virtual addresses, realservers' replies, ICMP errors about them) into the
//!   AF_XDP sockets and passes everything else (ARP, SSH, the health checks' replies to the
//!   director's own addresses) to the kernel.
//! - [`xsk`]: the sockets, their rings and the UMEM they share (no copy between interfaces
//!   or queues).
//! - [`queue`]: one thread per queue, one socket per interface on that queue; frames of a flow
//!   another queue owns are handed to it through [`spsc`] rings.
//! - [`frame`]: Ethernet off before the pipeline, on after it (shared with the in-memory
//!   mirror the corpus tests use); [`neigh`] and [`netlink`]: the headers for what is sent,
//!   from the kernel's routing and neighbour tables.
//!
//! [`XdpPlane::start`] attaches the program to every interface through a BPF link: the kernel
//! detaches it when the link's descriptor closes, so no program outlives the process, however
//! it ends (SIGKILL and crashes included). An interface that already has an XDP program is
//! refused, never taken over.
//!
//! Modes: native XDP where the driver has it (veth does), else generic; zero-copy sockets
//! where the driver supports them, else copy mode (veth: copy). Each interface must have
//! exactly `director.queues` receive queues (`ethtool -L`), so that no queue's traffic falls
//! back to the kernel.
//!
//! Frames are at most one MTU (no multi-buffer): with XDP attached, veth turns off the GSO
//! of its peer, so bulk TCP arrives as MTU-sized segments instead of 64 KiB super-packets.

pub mod frame;
pub mod neigh;
pub mod netlink;
pub mod prog;
pub mod queue;
pub mod spsc;
pub mod xsk;

pub use queue::{XdpQueue, XdpQueueStats};

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::conn::HashKey;
use crate::io::bpf::{self, Map, MapType, XdpMode};
use neigh::Neighbours;
use netlink::{Iface, Netlink};
use prog::{Endpoint, Endpoints, Target};
use xsk::{Bind, RingSizes, Umem, Xsk};

/// How the AF_XDP backend is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpOptions {
    /// The interfaces (client- and realserver-facing; one interface may be both).
    pub interfaces: Vec<String>,
    /// Queues (threads); every interface must have this many receive queues.
    pub queues: usize,
    /// Native or generic XDP; `None`: native, else generic.
    pub mode: Option<XdpMode>,
    /// Zero-copy sockets: `Some(true)` required, `Some(false)` never, `None` where possible.
    pub zero_copy: Option<bool>,
    /// UMEM frames per queue (a power of two).
    pub frames_per_queue: u32,
    /// Entries of each RX and TX ring.
    pub ring_size: u32,
    /// Empty loop iterations before a queue sleeps (busy polling); 0 sleeps at once.
    pub busy_poll: u32,
    /// Longest sleep before [`Pipeline::poll`](crate::dataplane::Pipeline::poll) runs anyway.
    pub idle_timeout: Duration,
}

impl XdpOptions {
    /// Defaults for `interfaces` and `queues`: 4096 frames of 2 KiB per queue, rings of 2048,
    /// no busy polling (a queue sleeps in `poll(2)` as soon as it finds nothing to do: on the
    /// shared 2-core lab machine spinning took CPU from the clients and servers and lowered
    /// keep-alive req/s by 15-40 %, see docs/PERFORMANCE.md), 10 ms idle timeout.
    pub fn new(interfaces: Vec<String>, queues: usize) -> XdpOptions {
        XdpOptions {
            interfaces,
            queues,
            mode: None,
            zero_copy: None,
            frames_per_queue: 4096,
            ring_size: 2048,
            busy_poll: 0,
            idle_timeout: Duration::from_millis(10),
        }
    }
}

/// What the queues share with the control plane.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) neigh: Neighbours,
    /// The services, as the steering hash knows them (sorted), and their generation.
    pub(crate) services: RwLock<Arc<Steered>>,
    pub(crate) services_gen: AtomicU64,
    /// The steering secret.
    pub(crate) key: HashKey,
}

/// What the endpoint map must hold: the services' part and the local addresses.
#[derive(Debug)]
struct EndpointState {
    map: Endpoints,
    services: HashSet<Endpoint>,
    locals: HashSet<Endpoint>,
}

impl EndpointState {
    fn sync(&mut self) -> io::Result<()> {
        let want: HashSet<Endpoint> = self.services.union(&self.locals).copied().collect();
        self.map.sync(&want).map(|_| ())
    }
}

/// The services as the steering hash knows them: `(protocol, VIP, port)`, IPv4 and IPv6,
/// each sorted.
pub(crate) type Steered = (Vec<(u8, Ipv4Addr, u16)>, Vec<(u8, Ipv6Addr, u16)>);

/// What the services contribute: the steering lists and the endpoint maps' entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSet {
    /// `(protocol, VIP, port)` of every IPv4 service, sorted.
    pub services: Vec<(u8, Ipv4Addr, u16)>,
    /// `(protocol, VIP, port)` of every IPv6 service, sorted.
    pub services6: Vec<(u8, Ipv6Addr, u16)>,
    /// `(protocol, address, port)` of every realserver, either family.
    pub reals: Vec<(u8, IpAddr, u16)>,
}

impl ServiceSet {
    fn steered(&self) -> Steered {
        (self.services.clone(), self.services6.clone())
    }

    fn endpoints(&self) -> HashSet<Endpoint> {
        let mut set: HashSet<Endpoint> = self
            .services
            .iter()
            .map(|&(_, vip, _)| Endpoint::vip(vip))
            .chain(self.services6.iter().map(|&(_, vip, _)| Endpoint::vip(vip)))
            .collect();
        set.extend(
            self.reals
                .iter()
                .map(|&(p, a, port)| Endpoint::real(p, a, port)),
        );
        set
    }
}

/// The XDP program on every interface, the shared state, and the resolver thread. Dropping
/// it detaches the programs.
pub struct XdpPlane {
    /// One link per interface: the program is attached while it is open.
    links: Vec<OwnedFd>,
    _progs: Vec<OwnedFd>,
    _xskmaps: Vec<Map>,
    endpoints: Arc<Mutex<EndpointState>>,
    shared: Arc<Shared>,
    resolver: Option<JoinHandle<()>>,
    mode: XdpMode,
    ifaces: Vec<Iface>,
}

impl std::fmt::Debug for XdpPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XdpPlane({:?}, {:?})", self.ifaces, self.mode)
    }
}

/// Looks up the interfaces and checks what AF_XDP needs of them.
pub fn interfaces(opts: &XdpOptions, frame_size: u32) -> Result<Vec<Iface>, String> {
    if opts.interfaces.is_empty() {
        return Err("no interfaces given".into());
    }
    let mut out: Vec<Iface> = Vec::new();
    for name in &opts.interfaces {
        let i = Iface::by_name(name).map_err(|e| e.to_string())?;
        if out.iter().any(|o| o.index == i.index) {
            return Err(format!("interface {name} is named twice"));
        }
        if i.rx_queues as usize != opts.queues {
            return Err(format!(
                "interface {name} has {} receive queue(s) but director.queues = {}: every queue of an interface needs its AF_XDP socket, or its traffic would bypass ringvs; set director.queues = {} or change the interface's queues (`ethtool -L {name} combined {q}`, on veth `ethtool -L {name} rx {q} tx {q}` on both ends)",
                i.rx_queues,
                opts.queues,
                i.rx_queues,
                q = opts.queues
            ));
        }
        let room = frame_size - 256 - 14;
        if i.mtu > room {
            return Err(format!(
                "interface {name} has MTU {}, more than an AF_XDP frame of {frame_size} bytes holds ({room}); lower the MTU",
                i.mtu
            ));
        }
        out.push(i);
    }
    Ok(out)
}

/// Attaches `prog` to `iface` in `mode` (`None`: native, else generic).
fn attach(
    prog: &OwnedFd,
    iface: &Iface,
    mode: Option<XdpMode>,
) -> Result<(OwnedFd, XdpMode), String> {
    let try_mode = |m: XdpMode| bpf::xdp_link(prog.as_fd(), iface.index, m);
    let explain = |e: io::Error, m: XdpMode| {
        let hint = match e.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => {
                " (the interface already has an XDP program; ringvs does not replace one: `ip link set dev NAME xdp off` if it is stale)"
            }
            Some(libc::EOPNOTSUPP) => " (the driver has no native XDP; try xdp_mode = \"generic\")",
            Some(libc::EPERM) => " (needs root or CAP_BPF + CAP_NET_ADMIN)",
            _ => "",
        };
        format!(
            "cannot attach the XDP program to {} ({} mode): {e}{hint}",
            iface.name,
            match m {
                XdpMode::Native => "native",
                XdpMode::Generic => "generic",
            }
        )
        .replace("NAME", &iface.name)
    };
    match mode {
        Some(m) => try_mode(m).map(|l| (l, m)).map_err(|e| explain(e, m)),
        None => match try_mode(XdpMode::Native) {
            Ok(l) => Ok((l, XdpMode::Native)),
            Err(e)
                if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                    || e.raw_os_error() == Some(libc::EINVAL) =>
            {
                try_mode(XdpMode::Generic)
                    .map(|l| (l, XdpMode::Generic))
                    .map_err(|e| explain(e, XdpMode::Generic))
            }
            Err(e) => Err(explain(e, XdpMode::Native)),
        },
    }
}

/// For `ringvs check`: the interfaces exist and fit, AF_XDP sockets can be opened, and the
/// XDP program loads and attaches (a program that passes every frame, detached at once).
/// Returns a line describing what was found.
pub fn check(opts: &XdpOptions) -> Result<String, String> {
    let ifaces = interfaces(opts, 2048)?;
    let umem = Umem::new(64, 2048).map_err(|e| e.to_string())?;
    drop(umem);
    // Safety: plain socket(2) probe; closed at once.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "cannot open an AF_XDP socket: {} (the kernel needs CONFIG_XDP_SOCKETS, and ringvs root or CAP_NET_RAW)",
            io::Error::last_os_error()
        ));
    }
    // Safety: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    let endpoints = Endpoints::new().map_err(|e| format!("cannot create the XDP map: {e}"))?;
    let prog = prog::load(endpoints.fds(), Target::Return(prog::XDP_PASS), [0; 6])
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for i in &ifaces {
        let (link, mode) = attach(&prog, i, opts.mode)?;
        drop(link);
        found.push(format!(
            "{} (index {}, {} queue(s), MTU {}, {} XDP)",
            i.name,
            i.index,
            i.rx_queues,
            i.mtu,
            match mode {
                XdpMode::Native => "native",
                XdpMode::Generic => "generic",
            }
        ));
    }
    Ok(format!("af_xdp: {}", found.join(", ")))
}

impl XdpPlane {
    /// Sets up everything: the UMEM, one socket per interface and queue, the endpoint map for
    /// `set`, the program on every interface, the resolver thread (realservers resolved before
    /// this returns, up to 1 s). Returns the plane and one [`XdpQueue`] per queue, to run on
    /// their threads.
    pub fn start(
        opts: &XdpOptions,
        set: &ServiceSet,
        key: HashKey,
    ) -> Result<(XdpPlane, Vec<XdpQueue>), String> {
        let frame_size = 2048u32;
        let ifaces = interfaces(opts, frame_size)?;
        let n = opts.queues;
        if n == 0 || n > 64 {
            return Err(format!("AF_XDP: {n} queues, expected 1 to 64"));
        }
        let share = u64::from(opts.frames_per_queue.next_power_of_two());
        let umem =
            Arc::new(Umem::new((share * n as u64) as u32, frame_size).map_err(|e| e.to_string())?);
        let sizes = RingSizes {
            rxtx: opts.ring_size.next_power_of_two(),
            fill: (share as u32 / 2).next_power_of_two().max(64),
        };
        // Sockets: the first registers the UMEM, the others share it.
        let mut socks: Vec<Vec<Xsk>> = Vec::with_capacity(n);
        let mut owner: Option<i32> = None;
        for q in 0..n {
            let mut row = Vec::with_capacity(ifaces.len());
            for i in &ifaces {
                let bind = match owner {
                    None => Bind::Owner {
                        zero_copy: opts.zero_copy,
                    },
                    Some(fd) => Bind::Shared(fd),
                };
                let s = Xsk::open(&umem, i.index, q as u32, sizes, bind)
                    .map_err(|e| format!("{} queue {q}: {e}", i.name))?;
                owner.get_or_insert(s.raw_fd());
                row.push(s);
            }
            socks.push(row);
        }
        let mut xskmaps = Vec::with_capacity(ifaces.len());
        for (k, i) in ifaces.iter().enumerate() {
            let m = Map::create(MapType::Xsk, 4, 4, n as u32, "ringvs_xsks")
                .map_err(|e| format!("{}: {e}", i.name))?;
            for (q, row) in socks.iter().enumerate() {
                m.update(
                    &(q as u32).to_ne_bytes(),
                    &(row[k].raw_fd() as u32).to_ne_bytes(),
                )
                .map_err(|e| format!("{}: XSKMAP entry for queue {q}: {e}", i.name))?;
            }
            xskmaps.push(m);
        }
        let mut endpoints = EndpointState {
            map: Endpoints::new().map_err(|e| format!("cannot create the XDP map: {e}"))?,
            services: set.endpoints(),
            locals: locals()?,
        };
        endpoints
            .sync()
            .map_err(|e| format!("XDP endpoint map: {e}"))?;
        let mut progs = Vec::with_capacity(ifaces.len());
        for (m, i) in xskmaps.iter().zip(&ifaces) {
            progs.push(
                prog::load(endpoints.map.fds(), Target::Xsks(m.fd()), i.mac)
                    .map_err(|e| e.to_string())?,
            );
        }
        let shared = Arc::new(Shared {
            neigh: Neighbours::new(ifaces.clone()),
            services: RwLock::new(Arc::new(set.steered())),
            services_gen: AtomicU64::new(1),
            key,
        });
        let mut nl = Netlink::new().map_err(|e| e.to_string())?;
        let reals: Vec<IpAddr> = set.reals.iter().map(|r| r.1).collect();
        shared.neigh.prime(&mut nl, &reals, Duration::from_secs(1));

        let wakers = Arc::new(
            (0..n)
                .map(|_| queue::Waker::new())
                .collect::<io::Result<Vec<_>>>()
                .map_err(|e| format!("eventfd: {e}"))?,
        );
        // Rings between every pair of queues: hand-offs and returns, each large enough for a
        // whole share (so a push never fails in practice).
        let mut hand_out: Vec<Vec<Option<spsc::Producer>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut hand_in: Vec<Vec<spsc::Consumer>> = (0..n).map(|_| Vec::new()).collect();
        let mut ret_out: Vec<Vec<Option<spsc::Producer>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut ret_in: Vec<Vec<spsc::Consumer>> = (0..n).map(|_| Vec::new()).collect();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let (p, c) = spsc::ring(share as usize);
                hand_out[a][b] = Some(p);
                hand_in[b].push(c);
                let (p, c) = spsc::ring(share as usize);
                ret_out[a][b] = Some(p);
                ret_in[b].push(c);
            }
        }
        let fill_target = (sizes.fill)
            .min(share as u32 / (2 * ifaces.len() as u32))
            .max(32);
        let mut queues = Vec::with_capacity(n);
        for (id, ((((row, ho), hi), ro), ri)) in socks
            .into_iter()
            .zip(hand_out)
            .zip(hand_in)
            .zip(ret_out)
            .zip(ret_in)
            .enumerate()
        {
            queues.push(XdpQueue {
                id,
                socks: row,
                umem: umem.clone(),
                shared: shared.clone(),
                share,
                fill_target,
                busy_poll: opts.busy_poll,
                idle_timeout: opts.idle_timeout,
                hand_out: ho,
                hand_in: hi,
                ret_out: ro,
                ret_in: ri,
                wakers: wakers.clone(),
                free: Vec::new(),
            });
        }
        for q in queues.iter_mut() {
            q.prime();
        }
        // Attach last, with every fill ring lent its frames: from here on, traffic reaches
        // the sockets.
        let mut links = Vec::with_capacity(ifaces.len());
        let mut mode = XdpMode::Native;
        for (p, i) in progs.iter().zip(&ifaces) {
            let (l, m) = attach(p, i, opts.mode)?;
            if m == XdpMode::Generic {
                mode = XdpMode::Generic;
            }
            links.push(l);
        }
        let endpoints = Arc::new(Mutex::new(endpoints));
        let resolver = {
            let shared = shared.clone();
            let endpoints = endpoints.clone();
            std::thread::Builder::new()
                .name("ringvs-neigh".into())
                .spawn(move || {
                    shared.neigh.run(nl, || {
                        if let Ok(l) = locals() {
                            if let Ok(mut e) = endpoints.lock() {
                                if e.locals != l {
                                    e.locals = l;
                                    let _ = e.sync();
                                }
                            }
                        }
                    })
                })
                .map_err(|e| format!("cannot start the resolver thread: {e}"))?
        };
        Ok((
            XdpPlane {
                links,
                _progs: progs,
                _xskmaps: xskmaps,
                endpoints,
                shared,
                resolver: Some(resolver),
                mode,
                ifaces,
            },
            queues,
        ))
    }

    /// Keeps the endpoint map and the steering list in step with the services.
    pub fn update(&self, set: &ServiceSet) -> Result<(), String> {
        {
            let mut e = self
                .endpoints
                .lock()
                .map_err(|_| "XDP endpoint state poisoned".to_string())?;
            e.services = set.endpoints();
            e.sync().map_err(|e| format!("XDP endpoint map: {e}"))?;
        }
        if let Ok(mut s) = self.shared.services.write() {
            let want = set.steered();
            if **s != want {
                *s = Arc::new(want);
                self.shared.services_gen.fetch_add(1, Ordering::AcqRel);
            }
        }
        for &(_, a, _) in &set.reals {
            if self.shared.neigh.lookup(a).is_none() {
                self.shared.neigh.want(a);
            }
        }
        Ok(())
    }

    /// Native or generic (generic if any interface fell back to it).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interfaces.
    pub fn interfaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// Detaches the programs now (dropping the plane does too).
    pub fn detach(&mut self) {
        self.links.clear();
    }
}

impl Drop for XdpPlane {
    fn drop(&mut self) {
        self.links.clear();
        self.shared.neigh.stop();
        if let Some(t) = self.resolver.take() {
            let _ = t.join();
        }
    }
}

/// The namespace's own addresses as endpoint-map entries.
fn locals() -> Result<HashSet<Endpoint>, String> {
    Ok(netlink::local_addrs()
        .map_err(|e| format!("cannot list the local addresses: {e}"))?
        .into_iter()
        .map(Endpoint::local)
        .collect())
}
