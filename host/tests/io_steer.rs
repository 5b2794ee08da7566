//! Real-kernel test of symmetric queue steering: both directions of every flow, and ICMP
//! errors about it, reach the same queue of a multi-queue TUN device, the one `queue_of`
//! names for the client endpoint.

mod common;

use common::*;
use ringvs::dataplane::testkit::{icmp6, icmp_error, tcp, tcp6, udp, udp6};
use ringvs::io::steer;
use ringvs::io::{TunDevice, TunOptions};
use ringvs::wire::tcp::flags::{ACK, SYN};
use ringvs::wire::{ip_proto, Ipv4Packet, L4Ports};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 100, 100);
const RIP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 0x100);
const RIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

fn raw_socket6() -> OwnedFd {
    // Safety: plain socket(2); the descriptor is owned right away. IPPROTO_RAW over IPv6:
    // the packets come with their IPv6 header.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(
        fd >= 0,
        "raw IPv6 socket: {}",
        std::io::Error::last_os_error()
    );
    // Safety: fd is a new descriptor nobody else owns.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

fn send6(sock: &OwnedFd, pkt: &[u8]) {
    let dst = ringvs::wire::Ipv6Packet::new_checked(pkt)
        .unwrap()
        .dst_addr();
    let sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as u16,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: dst.octets(),
        },
        sin6_scope_id: 0,
    };
    // Safety: pkt and sa are valid for the call; the socket is a raw IPv6 socket.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    assert_eq!(
        n,
        pkt.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
}

fn raw_socket() -> OwnedFd {
    // Safety: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // Safety: fd is a new descriptor nobody else owns.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

fn send(sock: &OwnedFd, pkt: &[u8]) {
    let dst = Ipv4Packet::new_checked(pkt).unwrap().dst_addr();
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // Safety: pkt and sa are valid for the call; the socket is a raw IP socket.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(
        n,
        pkt.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
}

/// The client port a packet belongs to (for ICMP, that of the quoted packet).
fn client_port(pkt: &[u8]) -> Option<u16> {
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    let l4 = ip.payload();
    match ip.protocol() {
        ip_proto::ICMP => {
            let inner = Ipv4Packet::new_checked_quoted(&l4[8..]).ok()?;
            let p = L4Ports::new_checked(inner.payload()).ok()?;
            Some(if inner.src_addr() == VIP {
                p.dst_port()
            } else {
                p.src_port()
            })
        }
        _ => {
            let p = L4Ports::new_checked(l4).ok()?;
            Some(if ip.dst_addr() == VIP {
                p.src_port()
            } else {
                p.dst_port()
            })
        }
    }
}

/// A TUN device `rvssteer0` of `queues` queues (non-blocking), routes to the VIP and the
/// clients through it, the steering program attached under a fresh secret.
fn steered_tun(queues: u32) -> (TunDevice, ringvs::conn::HashKey) {
    let dev = TunDevice::create(&TunOptions {
        queues: queues as usize,
        ..TunOptions::new("rvssteer0")
    })
    .unwrap();
    ip(&["route", "add", "10.77.100.100/32", "dev", "rvssteer0"]);
    ip(&["route", "add", "10.77.0.0/24", "dev", "rvssteer0"]);
    ip(&[
        "-6",
        "route",
        "add",
        "fd77:100::100/128",
        "dev",
        "rvssteer0",
    ]);
    ip(&["-6", "route", "add", "fd77::/64", "dev", "rvssteer0"]);
    let services = [(ip_proto::TCP, VIP, 80), (ip_proto::UDP, VIP, 53)];
    let services6 = [(ip_proto::TCP, VIP6, 80), (ip_proto::UDP, VIP6, 53)];
    let key = ringvs::conn::HashKey::random();
    let prog = steer::load(&steer::program(&services, &services6, queues, &key)).unwrap();
    ringvs::io::tun::attach_steering_bpf(dev.queue_fds()[0].as_fd(), prog.as_fd()).unwrap();
    for q in dev.queue_fds() {
        // Safety: fcntl on a descriptor we own.
        unsafe { libc::fcntl(q.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    (dev, key)
}

/// Reads the device's queues until `want` packets are attributed to a client port by
/// `port_of` (given the packet and its queue) or 5 s pass: the queues each port's packets
/// came out of. Asserts that all `want` came back.
fn read_back(
    dev: &TunDevice,
    want: usize,
    mut port_of: impl FnMut(&[u8], u32) -> Option<u16>,
) -> HashMap<u16, Vec<u32>> {
    let mut seen: HashMap<u16, Vec<u32>> = HashMap::new();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while got < want && Instant::now() < deadline {
        for (qi, q) in dev.queue_fds().iter().enumerate() {
            // Safety: reading into a stack buffer we own.
            let n = unsafe { libc::read(q.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                continue;
            }
            if let Some(p) = port_of(&buf[..n as usize], qi as u32) {
                seen.entry(p).or_default().push(qi as u32);
                got += 1;
            }
        }
    }
    assert_eq!(got, want, "every packet read back");
    seen
}

/// Every port's packets all came out of the queue `queue_of` names, and the ports spread
/// over both queues.
fn assert_spread(seen: &HashMap<u16, Vec<u32>>, queue_of: impl Fn(u16) -> u32) {
    let mut per_queue = [0; 2];
    for (p, qs) in seen {
        let want = queue_of(*p);
        assert!(
            qs.iter().all(|q| *q == want),
            "port {p}: queues {qs:?}, want all {want}"
        );
        per_queue[want as usize] += 1;
    }
    assert!(
        per_queue.iter().all(|&n| n > 10),
        "flows spread over both queues: {per_queue:?}"
    );
}

/// Every fragment, first ones included (their ports would steer them elsewhere than the
/// later ones, which have none), reaches queue 0, which reassembles (`dataplane::defrag`).
#[test]
fn every_fragment_reaches_queue_0() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let (dev, key) = steered_tun(2);
        let sock = raw_socket();
        let mut sent = 0;
        for p in 40_000..40_032u16 {
            let c = SocketAddrV4::new(CLIENT, p);
            let query = udp(c, SocketAddrV4::new(VIP, 53), &[7; 3000]);
            let answer = udp(SocketAddrV4::new(RIP, 5353), c, &[8; 3000]);
            for d in [query, answer] {
                for f in ringvs::dataplane::testkit::fragments(&d, 1500) {
                    send(&sock, &f);
                    sent += 1;
                }
            }
        }
        // Not vacuous: the whole datagrams of these flows would go to both queues.
        let owners: Vec<u32> = (40_000..40_032u16)
            .map(|p| steer::queue_of(&key, CLIENT, p, 2))
            .collect();
        assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
        let mut per_queue = [0; 2];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while per_queue.iter().sum::<usize>() < sent && Instant::now() < deadline {
            for (qi, q) in dev.queue_fds().iter().enumerate() {
                // Safety: reading into a stack buffer we own.
                let n = unsafe { libc::read(q.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0
                    && Ipv4Packet::new_checked(&buf[..n as usize]).is_ok_and(|ip| ip.is_fragment())
                {
                    per_queue[qi] += 1;
                }
            }
        }
        assert_eq!(per_queue, [sent, 0], "fragments per queue");
    });
}

#[test]
fn both_directions_reach_the_clients_queue() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let queues = 2u32;
        let (dev, key) = steered_tun(queues);
        let sock = raw_socket();
        let ports: Vec<u16> = (40_000..40_064).collect();
        let mut sent = 0;
        for &p in &ports {
            let c = SocketAddrV4::new(CLIENT, p);
            let (vip, rip) = (SocketAddrV4::new(VIP, 80), SocketAddrV4::new(RIP, 8080));
            send(&sock, &tcp(c, vip, SYN, b""));
            send(&sock, &tcp(rip, c, SYN | ACK, b""));
            send(&sock, &udp(c, SocketAddrV4::new(VIP, 53), b"q"));
            send(&sock, &udp(SocketAddrV4::new(RIP, 5353), c, b"a"));
            // A router on the client's path complains about VIP → client.
            let reply = tcp(vip, c, ACK, &[0; 100]);
            send(
                &sock,
                &icmp_error(Ipv4Addr::new(10, 77, 100, 1), VIP, 3, 4, 1300, &reply, 28),
            );
            // A realserver complains about client → RIP.
            let fwd = tcp(c, rip, ACK, b"x");
            send(&sock, &icmp_error(RIP, CLIENT, 3, 3, 0, &fwd, 48));
            sent += 6;
        }
        let seen = read_back(&dev, sent, |pkt, _| {
            if Ipv4Packet::new_checked(pkt).is_err() {
                return None; // e.g. IPv6 router solicitations
            }
            client_port(pkt).filter(|p| ports.contains(p))
        });
        assert_spread(&seen, |p| steer::queue_of(&key, CLIENT, p, queues));
    });
}

/// IPv6 as IPv4: both directions of every flow, an ICMPv6 packet too big about a reply and a
/// realserver's port unreachable about a request, all on the queue `queue_of6` names for the
/// client; the kernel's verdicts and `client_of6` agree packet by packet.
#[test]
fn ipv6_flows_reach_the_clients_queue() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let queues = 2u32;
        let (dev, key) = steered_tun(queues);
        let services6 = [(ip_proto::TCP, VIP6, 80), (ip_proto::UDP, VIP6, 53)];
        let sock = raw_socket6();
        let ports: Vec<u16> = (41_000..41_064).collect();
        let a6 = |ip, port| SocketAddrV6::new(ip, port, 0, 0);
        let mut sent = Vec::new();
        for &p in &ports {
            let c = a6(CLIENT6, p);
            let (vip, rip) = (a6(VIP6, 80), a6(RIP6, 8080));
            let reply = tcp6(vip, c, ACK, &[0; 100]);
            let fwd = tcp6(c, rip, ACK, b"x");
            for pkt in [
                tcp6(c, vip, SYN, b""),
                tcp6(rip, c, SYN | ACK, b""),
                udp6(c, a6(VIP6, 53), b"q"),
                udp6(a6(RIP6, 5353), c, b"a"),
                // A router on the client's path: VIP → client was too big.
                icmp6(
                    Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 1),
                    VIP6,
                    2,
                    0,
                    1280,
                    &reply,
                ),
                // The realserver: client → RIP found no port.
                icmp6(RIP6, CLIENT6, 1, 4, 0, &fwd),
            ] {
                send6(&sock, &pkt);
                sent.push(pkt);
            }
        }
        let seen = read_back(&dev, sent.len(), |pkt, qi| {
            // The kernel's own IPv6 (router solicitations, MLD) belongs to no client.
            let (client, port) = steer::client_of6(pkt, &services6)?;
            if client != CLIENT6 || !ports.contains(&port) {
                return None;
            }
            assert_eq!(
                steer::queue_of6(&key, client, port, queues),
                qi,
                "the program and client_of6 agree: {pkt:02x?}"
            );
            Some(port)
        });
        for (p, qs) in &seen {
            assert_eq!(qs.len(), 6, "port {p}: all six packets");
        }
        assert_spread(&seen, |p| steer::queue_of6(&key, CLIENT6, p, queues));
    });
}

/// The kernel's verifier takes the program with services of either family, both or none (a
/// daemon whose services are all IPv4, all IPv6, or not there yet).
#[test]
fn the_verifier_takes_any_service_list() {
    if !have_root() {
        return;
    }
    let v4 = [(ip_proto::TCP, VIP, 80)];
    let v6 = [(ip_proto::UDP, VIP6, 53)];
    for (s4, s6) in [(&v4[..], &v6[..]), (&v4, &[]), (&[], &v6), (&[], &[])] {
        let key = ringvs::conn::HashKey::random();
        if let Err(e) = steer::load(&steer::program(s4, s6, 2, &key)) {
            panic!("{} IPv4, {} IPv6 services: {e}", s4.len(), s6.len());
        }
    }
}
