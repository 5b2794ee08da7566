//! Real-kernel tests of the AF_XDP backend, each in a private network namespace:
//!
//! - the XDP program decides exactly as its Rust mirror (`prog::classify`) on a table of
//!   frames (`BPF_PROG_TEST_RUN`);
//! - end to end on a veth pair with two queues: frames injected on the peer with an
//!   AF_PACKET socket reach the pipeline without their Ethernet header, both directions of
//!   every flow are processed by the queue that owns it (hand-off), what the pipeline forwards
//!   leaves with the Ethernet header of the kernel's neighbour entry, frames the director
//!   must not take (ARP, to its own address) stay with the kernel, and the program is gone
//!   once the plane is dropped;
//! - an interface that already has an XDP program is refused, not taken over.

mod common;

use common::*;
use ringvs::conn::HashKey;
use ringvs::dataplane::testkit::{icmp6, icmp_error, tcp, tcp6, udp, udp6, with_ext6};
use ringvs::dataplane::{Packet, Pipeline, Verdict};
use ringvs::io::bpf::XdpMode;
use ringvs::io::steer;
use ringvs::io::xdp::netlink::Iface;
use ringvs::io::xdp::prog::{self, Endpoint, Endpoints, Target};
use ringvs::io::xdp::{ServiceSet, XdpOptions, XdpPlane};
use ringvs::io::{IoCounters, IoDir, QueueIo};
use ringvs::wire::checksum;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 100);
const RIP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 0x100);
const RIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd77, 9, 0, 0, 0, 0, 0, 1);

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn program_decides_as_its_mirror() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let mut eps = Endpoints::new().unwrap();
        let want: HashSet<Endpoint> = [
            Endpoint::vip(VIP),
            Endpoint::local(LOCAL),
            Endpoint::real(6, RIP, 8080),
            Endpoint::real(17, RIP, 5353),
            Endpoint::vip(VIP6),
            Endpoint::local(LOCAL6),
            Endpoint::real(6, RIP6, 8080),
            Endpoint::real(17, RIP6, 5353),
        ]
        .into_iter()
        .collect();
        assert_eq!(eps.sync(&want).unwrap(), (8, 0));
        assert_eq!(eps.read_back().unwrap(), want);
        // The interface's MAC: its high bit set in each half, as sign extension would break.
        let m = [0x82, 0x80, 0xf0, 0x00, 0x80, 0x01];
        let prog = prog::load(eps.fds(), Target::Return(prog::XDP_TX), m).unwrap();

        let c = SocketAddrV4::new(CLIENT, 40_000);
        let vip80 = SocketAddrV4::new(VIP, 80);
        let rip = SocketAddrV4::new(RIP, 8080);
        let ip = |p: Vec<u8>| eth(m, m, 0x0800, &p);
        let mut frag = tcp(rip, c, 0x10, b"x");
        frag[6] = 0x00;
        frag[7] = 0x10; // fragment offset 16
        let mut options = tcp(c, vip80, 0x10, b"");
        options[0] = 0x46; // claims 24 bytes of header
        let mut reply_options = tcp(rip, c, 0x10, b"");
        reply_options[0] = 0x46; // the ports are then read 4 bytes further
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("SYN to the VIP", ip(tcp(c, vip80, 0x02, b"")), true),
            // Another host's frame (flooded by a switch, or seen by a promiscuous
            // interface), broadcast: not this director's to forward.
            (
                "SYN to the VIP, another MAC",
                eth(
                    [0x82, 0x80, 0xf0, 0x00, 0x80, 0x02],
                    m,
                    0x0800,
                    &tcp(c, vip80, 0x02, b""),
                ),
                false,
            ),
            (
                "SYN to the VIP, another MAC's first half",
                eth(
                    [0x02, 0x80, 0xf0, 0x00, 0x80, 0x01],
                    m,
                    0x0800,
                    &tcp(c, vip80, 0x02, b""),
                ),
                false,
            ),
            (
                "realserver reply, broadcast",
                eth([0xff; 6], m, 0x0800, &tcp(rip, c, 0x12, b"")),
                false,
            ),
            (
                "to the VIP, unknown port",
                ip(tcp(c, SocketAddrV4::new(VIP, 81), 0x02, b"")),
                true,
            ),
            ("realserver reply", ip(tcp(rip, c, 0x12, b"")), true),
            (
                "UDP reply",
                ip(udp(SocketAddrV4::new(RIP, 5353), c, b"a")),
                true,
            ),
            (
                "reply from another port",
                ip(tcp(SocketAddrV4::new(RIP, 22), c, 0x12, b"")),
                false,
            ),
            ("wrong protocol for the port", ip(udp(rip, c, b"a")), false),
            (
                "health-check reply to a local address",
                ip(tcp(rip, SocketAddrV4::new(LOCAL, 50_000), 0x12, b"")),
                false,
            ),
            (
                "ICMP error quoting client→RIP",
                ip(icmp_error(
                    RIP,
                    CLIENT,
                    3,
                    3,
                    0,
                    &tcp(c, rip, 0x10, b"x"),
                    48,
                )),
                true,
            ),
            (
                "ICMP error to the VIP",
                ip(icmp_error(
                    Ipv4Addr::new(10, 77, 100, 1),
                    VIP,
                    3,
                    4,
                    1300,
                    &tcp(vip80, c, 0x10, &[0; 100]),
                    28,
                )),
                true,
            ),
            (
                "ICMP error about something else",
                ip(icmp_error(
                    RIP,
                    CLIENT,
                    3,
                    3,
                    0,
                    &tcp(c, SocketAddrV4::new(RIP, 9), 0x10, b"x"),
                    48,
                )),
                false,
            ),
            ("later fragment from a realserver", ip(frag), false),
            ("to the VIP, header with options", ip(options), true),
            ("reply, header with options", ip(reply_options), false),
            ("ARP", eth([0xff; 6], m, 0x0806, &[0; 28]), false),
            ("IPv6 to no one", eth(m, m, 0x86dd, &[0x60; 40]), false),
            ("truncated", eth(m, m, 0x0800, &[0x45, 0, 0]), false),
        ];
        let mut cases = cases;
        cases.extend(ipv6_cases(m));
        for (what, frame, take) in cases {
            let mirror = prog::classify(&frame, m, |e| want.contains(e));
            assert_eq!(mirror, take, "mirror: {what}");
            let got = prog::test_run(std::os::fd::AsFd::as_fd(&prog), &frame).unwrap();
            let want_action = if take { prog::XDP_TX } else { prog::XDP_PASS };
            assert_eq!(got, want_action, "kernel: {what}");
        }
        // A realserver removed from the services leaves the map.
        let fewer: HashSet<Endpoint> = want.iter().filter(|e| e.port != 5353).copied().collect();
        assert_eq!(eps.sync(&fewer).unwrap(), (0, 2));
        assert_eq!(eps.read_back().unwrap(), fewer);
    });
}

/// The IPv6 frames of [`program_decides_as_its_mirror`] for an interface whose MAC is `m`:
/// (what, frame, taken).
fn ipv6_cases(m: [u8; 6]) -> Vec<(&'static str, Vec<u8>, bool)> {
    let ip = |p: Vec<u8>| eth(m, m, 0x86dd, &p);
    let c = SocketAddrV6::new(CLIENT6, 40_000, 0, 0);
    let vip80 = SocketAddrV6::new(VIP6, 80, 0, 0);
    let rip = SocketAddrV6::new(RIP6, 8080, 0, 0);
    let rip_dns = SocketAddrV6::new(RIP6, 5353, 0, 0);
    let syn = tcp6(c, vip80, 0x02, b"");
    let reply = tcp6(rip, c, 0x12, b"");
    // An ICMPv6 packet too big from a router, quoting what was sent to the realserver.
    let router: Ipv6Addr = "fd77:1::fe".parse().unwrap();
    let to_rip = tcp6(c, rip, 0x10, b"x");
    let mut not_v6 = syn.clone();
    not_v6[0] = 0x45;
    vec![
        ("IPv6 SYN to the VIP", ip(syn.clone()), true),
        (
            "IPv6 to the VIP, unknown port",
            ip(udp6(c, SocketAddrV6::new(VIP6, 9, 0, 0), b"a")),
            true,
        ),
        (
            "IPv6 to the VIP behind a hop-by-hop header",
            ip(with_ext6(&syn, 0, &[0, 0, 1, 4, 0, 0, 0, 0])),
            true,
        ),
        (
            "IPv6 SYN to the VIP, another MAC",
            eth([0x33, 0x33, 0, 0, 0, 1], m, 0x86dd, &syn),
            false,
        ),
        ("IPv6 realserver reply", ip(reply.clone()), true),
        ("IPv6 UDP reply", ip(udp6(rip_dns, c, b"a")), true),
        (
            "IPv6 reply from another port",
            ip(tcp6(SocketAddrV6::new(RIP6, 22, 0, 0), c, 0x12, b"")),
            false,
        ),
        (
            "IPv6 wrong protocol for the port",
            ip(udp6(rip, c, b"a")),
            false,
        ),
        (
            "IPv6 reply behind an extension header",
            ip(with_ext6(&reply, 60, &[0, 0, 1, 4, 0, 0, 0, 0])),
            false,
        ),
        (
            "IPv6 health-check reply to a local address",
            ip(tcp6(
                rip,
                SocketAddrV6::new(LOCAL6, 50_000, 0, 0),
                0x12,
                b"",
            )),
            false,
        ),
        (
            "neighbour solicitation for a local address",
            ip(icmp6(CLIENT6, LOCAL6, 135, 0, 0, &LOCAL6.octets())),
            false,
        ),
        (
            "ICMPv6 packet too big quoting client→RIP",
            ip(icmp6(router, CLIENT6, 2, 0, 1280, &to_rip)),
            true,
        ),
        (
            "ICMPv6 unreachable quoting client→another port",
            ip(icmp6(
                router,
                CLIENT6,
                1,
                4,
                0,
                &tcp6(c, SocketAddrV6::new(RIP6, 9, 0, 0), 0x10, b"x"),
            )),
            false,
        ),
        (
            "ICMPv6 echo quoting nothing",
            ip(icmp6(router, CLIENT6, 128, 0, 0, &to_rip)),
            false,
        ),
        (
            "ICMPv6 error cut short",
            ip(icmp6(router, CLIENT6, 2, 0, 1280, &to_rip[..43])),
            false,
        ),
        ("IPv6 EtherType, IPv4 inside", ip(not_v6), false),
        ("IPv6 truncated", eth(m, m, 0x86dd, &syn[..39]), false),
    ]
}

/// A raw Ethernet socket on `ifindex`.
fn packet_socket(ifindex: u32) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // Safety: plain socket(2); checked and owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
    // Safety: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Safety: sockaddr_ll is plain old data.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex as i32;
    // Safety: a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    fd
}

fn send_frame(fd: &OwnedFd, frame: &[u8]) {
    // Safety: sending from a valid buffer on a bound packet socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        n,
        frame.len() as isize,
        "send: {}",
        std::io::Error::last_os_error()
    );
}

/// Frames arriving on the socket's interface (not those it sent), for up to `wait`.
fn recv_frames(fd: &OwnedFd, want: usize, wait: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        // Safety: sockaddr_ll is plain old data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // Safety: reading into our buffer and address, with their sizes.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sa as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if sa.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        out.push(buf[..n as usize].to_vec());
    }
    out
}

/// A stand-in for the data plane: NAT between VIP:80 and RIP:8080, recording which queue
/// saw which client port.
struct Nat {
    queue: usize,
    seen: Arc<Mutex<Vec<(u16, usize, bool)>>>,
    stop: Arc<AtomicBool>,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn fix_checksums(d: &mut [u8]) {
    put16(d, 10, 0);
    let c = checksum::fold(checksum::sum(&d[..20]));
    put16(d, 10, !c);
    let (src, dst) = (
        Ipv4Addr::new(d[12], d[13], d[14], d[15]),
        Ipv4Addr::new(d[16], d[17], d[18], d[19]),
    );
    let l4 = d.len() - 20;
    put16(d, 20 + 16, 0);
    let ph = checksum::pseudo_header_v4(src, dst, 6, l4 as u32);
    let c = checksum::fold(u32::from(ph) + checksum::sum(&d[20..]));
    put16(d, 20 + 16, !c);
}

impl Pipeline for Nat {
    fn process(&mut self, pkt: &mut Packet<'_>) -> Verdict {
        let d = pkt.data_mut();
        if d.len() < 40 || d[9] != 6 {
            return Verdict::Drop;
        }
        let dst = Ipv4Addr::new(d[16], d[17], d[18], d[19]);
        let src = Ipv4Addr::new(d[12], d[13], d[14], d[15]);
        let (inbound, client_port) = if dst == VIP {
            d[16..20].copy_from_slice(&RIP.octets());
            put16(d, 22, 8080);
            (true, u16::from_be_bytes([d[20], d[21]]))
        } else if src == RIP {
            d[12..16].copy_from_slice(&VIP.octets());
            put16(d, 20, 80);
            (false, u16::from_be_bytes([d[22], d[23]]))
        } else {
            return Verdict::Drop;
        };
        fix_checksums(d);
        self.seen
            .lock()
            .unwrap()
            .push((client_port, self.queue, inbound));
        Verdict::Forward
    }

    fn poll(&mut self, _now: Instant) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

#[test]
fn veth_two_queues_end_to_end() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        ip(&[
            "link",
            "add",
            "xa",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            "xb",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ]);
        ip(&["link", "set", "xa", "up"]);
        ip(&["link", "set", "xb", "up"]);
        ip(&["addr", "add", "10.77.9.1/24", "dev", "xa"]);
        let b = Iface::by_name("xb").unwrap();
        let bmac = b
            .mac
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip(&["route", "add", "10.77.1.0/24", "dev", "xa"]);
        ip(&["route", "add", "10.77.0.0/24", "dev", "xa"]);
        ip(&["neigh", "add", "10.77.1.1", "lladdr", &bmac, "dev", "xa"]);
        ip(&["neigh", "add", "10.77.0.2", "lladdr", &bmac, "dev", "xa"]);
        let a = Iface::by_name("xa").unwrap();
        assert_eq!(a.rx_queues, 2);

        let opts = XdpOptions {
            mode: Some(XdpMode::Native),
            ..XdpOptions::new(vec!["xa".into()], 2)
        };
        let set = ServiceSet {
            services: vec![(6, VIP, 80)],
            services6: Vec::new(),
            reals: vec![(6, RIP.into(), 8080)],
        };
        let key = HashKey::random();
        let (plane, queues) = XdpPlane::start(&opts, &set, key).unwrap();
        assert!(ip(&["link", "show", "xa"]).contains("xdp"), "attached");
        // A second program is refused, not swapped in.
        let again = ringvs::io::xdp::check(&opts).unwrap_err();
        assert!(again.contains("already has an XDP program"), "{again}");

        let sock = packet_socket(b.index);
        let ports: Vec<u16> = (40_000..40_064).collect();
        let send_pair = |p: u16| {
            let c = SocketAddrV4::new(CLIENT, p);
            send_frame(
                &sock,
                &eth(
                    a.mac,
                    b.mac,
                    0x0800,
                    &tcp(c, SocketAddrV4::new(VIP, 80), 0x02, b""),
                ),
            );
            send_frame(
                &sock,
                &eth(
                    a.mac,
                    b.mac,
                    0x0800,
                    &tcp(SocketAddrV4::new(RIP, 8080), c, 0x12, b""),
                ),
            );
        };
        // The first pair before any queue runs: the program is attached, so the fill rings
        // must already hold frames (an empty one makes the kernel drop them).
        send_pair(ports[0]);

        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let mut p = Nat {
                    queue: i,
                    seen: seen.clone(),
                    stop: stop.clone(),
                };
                let live = Arc::new(IoCounters::default());
                let published = live.clone();
                let t = std::thread::spawn(move || QueueIo::run(q, &mut p, &live));
                (t, published)
            })
            .collect();

        for &p in &ports[1..] {
            send_pair(p);
        }
        // Not ours: to the director's own address, and ARP.
        send_frame(
            &sock,
            &eth(
                a.mac,
                b.mac,
                0x0800,
                &tcp(
                    SocketAddrV4::new(RIP, 8080),
                    SocketAddrV4::new(LOCAL, 50_000),
                    0x12,
                    b"",
                ),
            ),
        );
        let frames: Vec<Vec<u8>> = recv_frames(&sock, 2 * ports.len() + 1, Duration::from_secs(3))
            .into_iter()
            .filter(|f| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[6..12] == a.mac)
            // Not the kernel's own answers (its RST to the frame for the local address).
            .filter(|f| f[26..30] != LOCAL.octets())
            .collect();
        stop.store(true, Ordering::Relaxed);
        let (stats, live): (Vec<_>, Vec<_>) = threads
            .into_iter()
            .map(|(t, live)| (t.join().unwrap().unwrap(), live.load()))
            .unzip();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            frames.len(),
            2 * ports.len(),
            "every packet forwarded ({stats:?})"
        );
        let mut inbound = 0;
        for f in &frames {
            assert_eq!(f[..6], b.mac, "destination MAC from the neighbour table");
            let ipk = &f[14..];
            assert_eq!(
                checksum::fold(checksum::sum(&ipk[..20])),
                0xffff,
                "IP checksum"
            );
            let (src, dst) = (&ipk[12..16], &ipk[16..20]);
            if dst == RIP.octets() {
                inbound += 1;
                assert_eq!(u16::from_be_bytes([ipk[22], ipk[23]]), 8080);
            } else {
                assert_eq!(src, VIP.octets());
                assert_eq!(dst, CLIENT.octets());
            }
        }
        assert_eq!(inbound, ports.len());
        // Both directions of each flow on the queue that owns its client endpoint.
        let mut by_port: HashMap<u16, Vec<usize>> = HashMap::new();
        for (p, q, _) in &seen {
            by_port.entry(*p).or_default().push(*q);
        }
        let mut per_queue = [0; 2];
        for (p, qs) in &by_port {
            let want = steer::queue_of(&key, CLIENT, *p, 2) as usize;
            assert!(
                qs.iter().all(|q| *q == want),
                "port {p}: {qs:?}, want {want}"
            );
            assert_eq!(qs.len(), 2);
            per_queue[want] += 1;
        }
        assert!(per_queue.iter().all(|&n| n > 10), "{per_queue:?}");
        let handed: u64 = stats
            .iter()
            .map(|s| match s {
                ringvs::io::IoStats::Xdp(x) => x.handed_out,
                _ => 0,
            })
            .sum();
        assert!(
            handed > 0,
            "some frames arrived on the other queue: {stats:?}"
        );
        // What the metrics see is what the queues returned; every forwarded frame was sent
        // by one of them, with its IP bytes counted.
        for (s, l) in stats.iter().zip(&live) {
            let ringvs::io::IoStats::Xdp(x) = s else {
                panic!("{s:?}")
            };
            assert_eq!(x.snapshot(), *l);
        }
        let sent: u64 = live.iter().map(|l| l.packets[IoDir::Tx as usize]).sum();
        let sent_bytes: u64 = live.iter().map(|l| l.bytes[IoDir::Tx as usize]).sum();
        let frame_bytes: usize = frames.iter().map(|f| f.len() - 14).sum();
        assert_eq!(sent, frames.len() as u64, "{live:?}");
        assert_eq!(sent_bytes, frame_bytes as u64, "{live:?}");
        assert_eq!(
            seen.len(),
            2 * ports.len(),
            "the local-address frame stayed with the kernel"
        );

        drop(plane);
        assert!(
            !ip(&["link", "show", "xa"]).contains("xdp"),
            "detached on drop"
        );
    });
}

/// The resolver's netlink calls against a real kernel: the route to an address on a
/// connected network, an `NTF_USE` request that makes the kernel resolve a neighbour nobody
/// talked to yet, and the neighbour table read back with its MAC.
#[test]
fn netlink_routes_and_resolves() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        use ringvs::io::xdp::netlink::Netlink;
        // The peer lives in a namespace of its own, so that it answers ARP like a host.
        ip(&["netns", "add", "rvs-xdp-peer"]);
        struct Cleanup;
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", "rvs-xdp-peer"])
                    .status();
            }
        }
        let _cleanup = Cleanup;
        ip(&[
            "link",
            "add",
            "na",
            "type",
            "veth",
            "peer",
            "name",
            "nb",
            "netns",
            "rvs-xdp-peer",
        ]);
        ip(&["addr", "add", "10.77.8.1/24", "dev", "na"]);
        ip(&["link", "set", "na", "up"]);
        let peer = |args: &[&str]| {
            let mut a = vec!["netns", "exec", "rvs-xdp-peer", "ip"];
            a.extend_from_slice(args);
            ip(&a)
        };
        peer(&["addr", "add", "10.77.8.2/24", "dev", "nb"]);
        peer(&["link", "set", "nb", "up"]);
        peer(&["link", "set", "lo", "up"]);
        // IPv6 too: neighbour discovery, as ARP (no duplicate address detection to wait for).
        ip(&["addr", "add", "fd77:8::1/64", "dev", "na", "nodad"]);
        peer(&["addr", "add", "fd77:8::2/64", "dev", "nb", "nodad"]);
        let na = Iface::by_name("na").unwrap();
        let mut nl = Netlink::new().unwrap();
        assert!(
            nl.route_get(Ipv4Addr::new(192, 0, 2, 1)).unwrap().is_none(),
            "no default route"
        );
        assert!(
            nl.route_get("2001:db8::1".parse::<Ipv6Addr>().unwrap())
                .unwrap()
                .is_none(),
            "no IPv6 default route"
        );
        let shown = peer(&["-o", "link", "show", "nb"]);
        let v4 = IpAddr::from([10, 77, 8, 2]);
        let v6 = IpAddr::V6("fd77:8::2".parse().unwrap());
        for dst in [v4, v6] {
            let r = nl.route_get(dst).unwrap().expect("a connected route");
            assert_eq!((r.oif, r.next_hop), (na.index, dst));
            nl.resolve(na.index, dst).unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mac = loop {
                let found = nl
                    .neighbours()
                    .unwrap()
                    .into_iter()
                    .find(|n| n.addr == dst && n.ifindex == na.index)
                    .and_then(|n| n.mac);
                if let Some(m) = found {
                    break m;
                }
                assert!(
                    Instant::now() < deadline,
                    "the kernel did not resolve {dst}"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            let want = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            assert!(shown.contains(&want), "{dst}: {shown} has {want}");
        }
    });
}
