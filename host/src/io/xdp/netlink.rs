//! The few rtnetlink and interface queries the AF_XDP backend needs: where the kernel routes
//! an address (`RTM_GETROUTE`, as `ip route get`), the neighbour table (`RTM_GETNEIGH`, as
//! `ip neigh`), asking the kernel to resolve a neighbour (`RTM_NEWNEIGH` with `NTF_USE`), an
//! interface's index, MAC address, MTU and queue count, and the namespace's own addresses.
//!
//! Messages are built and parsed by hand (a netlink header, a fixed family header, then
//! type-length-value attributes, all 4-byte aligned).

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::io::ctx;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_STATS64: u16 = 23;
/// Offset of `tx_dropped` in `struct rtnl_link_stats64` (the eighth `__u64`).
const STATS64_TX_DROPPED: usize = 7 * 8;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_USE: u8 = 0x01;

/// Neighbour states with a usable link-layer address (`NUD_VALID`).
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

/// Where the kernel sends packets for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Output interface.
    pub oif: u32,
    /// The next hop: the gateway, or the address itself on a connected network.
    pub next_hop: IpAddr,
    /// The source address the kernel would use (`src` in `ip route get`), if it has one.
    pub src: Option<IpAddr>,
}

/// One entry of the neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    /// Interface.
    pub ifindex: u32,
    /// Address (IPv4: ARP; IPv6: neighbour discovery).
    pub addr: IpAddr,
    /// Link-layer address, if the entry has a usable one.
    pub mac: Option<[u8; 6]>,
}

/// A NETLINK_ROUTE socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends an attribute.
fn attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(align4(msg.len()), 0);
}

/// The attributes in `b` as (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((kind, data))
    })
}

/// An address attribute of either family (its length says which).
fn ip(d: &[u8]) -> Option<IpAddr> {
    match d.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(d).expect("16 bytes"),
        ))),
        _ => None,
    }
}

/// The address family and the bytes of `a`, as netlink carries them.
fn family_and_bytes(a: IpAddr) -> (u8, Vec<u8>) {
    match a {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

impl Netlink {
    /// Opens a socket in the caller's network namespace.
    pub fn new() -> io::Result<Netlink> {
        // Safety: plain socket(2); the result is checked and owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(ctx(io::Error::last_os_error(), "netlink socket".into()));
        }
        // Safety: `fd` is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // Safety: SO_RCVTIMEO reads one timeval from the valid pointer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Netlink {
            fd,
            seq: 1,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends one request (`body` is the family header and attributes) and hands every
    /// message of the answer to `each` (type, payload after the netlink header) until the
    /// answer ends. A netlink error becomes an `Err`.
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // Safety: `msg` is valid for its length; the kernel is the destination (NULL address
        // on a netlink socket means the kernel).
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            // Safety: reading into our buffer, at most its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut b = &self.buf[..n as usize];
            while b.len() >= 16 {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let t = u16::from_ne_bytes([b[4], b[5]]);
                let s = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < 16 || len > b.len() {
                    break;
                }
                let payload = &b[16..len];
                b = &b[align4(len).min(b.len())..];
                if s != seq {
                    continue; // a late answer to an earlier request
                }
                match t {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                            .unwrap_or(0);
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    _ => {
                        each(t, payload);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Where the kernel routes `dst` (`ip route get DST`, either family); `None` if
    /// unreachable.
    pub fn route_get(&mut self, dst: impl Into<IpAddr>) -> io::Result<Option<Route>> {
        let dst: IpAddr = dst.into();
        let (family, bytes) = family_and_bytes(dst);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let bits = 8 * bytes.len() as u8;
        let mut body = vec![family, bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        attr(&mut body, RTA_DST, &bytes);
        let mut out = None;
        let r = self.request(RTM_GETROUTE, 0, &body, |t, p| {
            if t != RTM_NEWROUTE || p.len() < 12 {
                return;
            }
            let (mut oif, mut gw, mut src) = (None, None, None);
            for (k, d) in attrs(&p[12..]) {
                match k {
                    RTA_OIF if d.len() == 4 => {
                        oif = Some(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
                    }
                    RTA_GATEWAY => gw = ip(d),
                    RTA_PREFSRC => src = ip(d),
                    _ => {}
                }
            }
            out = oif.map(|oif| Route {
                oif,
                next_hop: gw.unwrap_or(dst),
                src,
            });
        });
        match r {
            Ok(()) => Ok(out),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Interface `ifindex`'s `tx_dropped` (`ip -s link`'s TX "dropped"; for a TUN device, the
    /// packets the kernel could not queue to its reader), from the caller's namespace (sysfs
    /// shows the namespace that mounted it); `None` if the answer has no 64-bit statistics.
    pub fn link_tx_dropped(&mut self, ifindex: u32) -> io::Result<Option<u64>> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = [0u8; 16];
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let mut out = None;
        self.request(RTM_GETLINK, 0, &body, |t, p| {
            if t != RTM_NEWLINK || p.len() < 16 {
                return;
            }
            for (k, d) in attrs(&p[16..]) {
                if let (IFLA_STATS64, Some(v)) =
                    (k, d.get(STATS64_TX_DROPPED..STATS64_TX_DROPPED + 8))
                {
                    out = Some(u64::from_ne_bytes(v.try_into().expect("8 bytes")));
                }
            }
        })?;
        Ok(out)
    }

    /// The neighbour table of both families (`ip neigh`: ARP's and neighbour discovery's).
    pub fn neighbours(&mut self) -> io::Result<Vec<Neigh>> {
        // struct ndmsg: family, pad1, pad2, ifindex, state, flags, type.
        let body = [libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut out = Vec::new();
        self.request(RTM_GETNEIGH, NLM_F_DUMP, &body, |t, p| {
            let family_ok = p
                .first()
                .is_some_and(|&f| f == libc::AF_INET as u8 || f == libc::AF_INET6 as u8);
            if t != RTM_NEWNEIGH || p.len() < 12 || !family_ok {
                return;
            }
            let ifindex = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]) as u32;
            let state = u16::from_ne_bytes([p[8], p[9]]);
            let (mut addr, mut mac) = (None, None);
            for (k, d) in attrs(&p[12..]) {
                match k {
                    NDA_DST => addr = ip(d),
                    NDA_LLADDR if d.len() == 6 => {
                        mac = Some([d[0], d[1], d[2], d[3], d[4], d[5]]);
                    }
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                out.push(Neigh {
                    ifindex,
                    addr,
                    mac: mac.filter(|_| state & NUD_VALID != 0),
                });
            }
        })?;
        Ok(out)
    }

    /// Asks the kernel to resolve `addr` on `ifindex` (ARP, or neighbour discovery for
    /// IPv6), creating the entry if needed: `RTM_NEWNEIGH` with `NTF_USE`, which starts
    /// resolution as if a packet were waiting.
    pub fn resolve(&mut self, ifindex: u32, addr: impl Into<IpAddr>) -> io::Result<()> {
        let (family, bytes) = family_and_bytes(addr.into());
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes()); // state: NUD_NONE
        body.push(NTF_USE);
        body.push(0);
        attr(&mut body, NDA_DST, &bytes);
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_ACK, &body, |_, _| {})
    }
}

/// An interface: index, MAC, MTU and receive queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// Receive queues (`ethtool -l`: rx + combined), 1 if the driver does not say.
    pub rx_queues: u32,
}

fn ifreq(name: &str) -> libc::ifreq {
    // Safety: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    ifr
}

/// `ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct Channels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx: u32,
    tx: u32,
    other: u32,
    combined: u32,
}

impl Iface {
    /// Looks interface `index` up in the caller's namespace.
    pub fn by_index(index: u32) -> io::Result<Iface> {
        let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
        // Safety: `buf` holds IFNAMSIZ bytes, as if_indextoname requires; it writes a
        // NUL-terminated name into it or returns NULL.
        let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
        if p.is_null() {
            return Err(io::Error::last_os_error());
        }
        let name: String = buf
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();
        Iface::by_name(&name)
    }

    /// Looks `name` up in the caller's namespace.
    pub fn by_name(name: &str) -> io::Result<Iface> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not an interface name"),
            ));
        }
        // Safety: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // Safety: `raw` is fresh and ours.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let ioctl = |req: libc::c_ulong, ifr: &mut libc::ifreq| -> io::Result<()> {
            // Safety: every request used here reads the name of, and writes one member of,
            // the ifreq, which is valid and exclusively borrowed for the call.
            let rc = unsafe {
                libc::ioctl(
                    sock.as_raw_fd(),
                    req as libc::Ioctl,
                    ifr as *mut libc::ifreq,
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let mut ifr = ifreq(name);
        ioctl(libc::SIOCGIFINDEX, &mut ifr).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODEV) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("interface {name} does not exist (in this network namespace)"),
                )
            } else {
                ctx(e, format!("SIOCGIFINDEX on {name}"))
            }
        })?;
        // Safety: the kernel filled the ifindex member.
        let index = unsafe { ifr.ifr_ifru.ifru_ifindex } as u32;
        let mut ifr = ifreq(name);
        ioctl(libc::SIOCGIFHWADDR, &mut ifr)
            .map_err(|e| ctx(e, format!("SIOCGIFHWADDR on {name}")))?;
        // Safety: the kernel filled the hwaddr member.
        let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != libc::ARPHRD_ETHER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "interface {name} is not Ethernet (link type {}); AF_XDP mode needs Ethernet interfaces",
                    hw.sa_family
                ),
            ));
        }
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *m = *b as u8;
        }
        let mut ifr = ifreq(name);
        ioctl(libc::SIOCGIFMTU, &mut ifr).map_err(|e| ctx(e, format!("SIOCGIFMTU on {name}")))?;
        // Safety: the kernel filled the mtu member.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu } as u32;
        let mut ch = Channels {
            cmd: 0x3c, // ETHTOOL_GCHANNELS
            ..Channels::default()
        };
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_data = (&mut ch as *mut Channels).cast();
        let rx_queues = match ioctl(libc::SIOCETHTOOL, &mut ifr) {
            Ok(()) => (ch.rx + ch.combined).max(1),
            Err(_) => 1,
        };
        Ok(Iface {
            name: name.to_string(),
            index,
            mac,
            mtu,
            rx_queues,
        })
    }
}

/// The addresses of both families of the caller's namespace (every interface, loopback
/// included).
pub fn local_addrs() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // Safety: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // Safety: `p` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // Safety: ifa_addr points at a sockaddr of the family it names.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if fam == libc::AF_INET as libc::sa_family_t {
                // Safety: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if fam == libc::AF_INET6 as libc::sa_family_t {
                // Safety: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        p = ifa.ifa_next;
    }
    // Safety: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut m = Vec::new();
        attr(&mut m, RTA_DST, &[10, 77, 0, 2]);
        attr(&mut m, 9, &[1, 2, 3]);
        attr(&mut m, RTA_OIF, &7u32.to_ne_bytes());
        let got: Vec<(u16, Vec<u8>)> = attrs(&m).map(|(k, d)| (k, d.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (RTA_DST, vec![10, 77, 0, 2]),
                (9, vec![1, 2, 3]),
                (RTA_OIF, 7u32.to_ne_bytes().to_vec())
            ]
        );
        // Truncated or nonsense lengths end the walk instead of panicking.
        assert_eq!(attrs(&m[..6]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }

    #[test]
    fn loopback_statistics_are_read() {
        // Safety: a NUL-terminated name.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert!(lo > 0);
        let mut nl = Netlink::new().unwrap();
        let dropped = nl.link_tx_dropped(lo).unwrap();
        assert!(dropped.is_some(), "lo has 64-bit statistics");
        assert!(
            nl.link_tx_dropped(u32::MAX >> 1).is_err(),
            "no such interface"
        );
    }

    #[test]
    fn loopback_is_found() {
        let lo = Iface::by_name("lo");
        // Loopback is not Ethernet: a clear refusal.
        assert!(lo.unwrap_err().to_string().contains("not Ethernet"));
        assert!(Iface::by_name("ringvs-nope0")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        let locals = local_addrs().unwrap();
        assert!(locals.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(
            locals.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)),
            "{locals:?}"
        );
    }
}
