//! The XDP program: which frames go to ringvs's AF_XDP sockets, and which to the kernel.
//!
//! One program per interface, generated here as eBPF instructions (see [`crate::io::bpf`]),
//! sharing the maps of endpoints ([`Endpoints`], one per family) that the control plane keeps
//! in step with the services. For an IPv4 or IPv6 frame (no VLAN tag) to the interface's own
//! MAC address, in order:
//!
//! | frame | action |
//! |---|---|
//! | to a virtual address (any protocol or port: a VIP's ICMP echo, an unknown port, a fragment) | redirect |
//! | to one of the director's own addresses (health-check replies, SSH, BGP, ping, neighbour discovery) | pass |
//! | TCP/UDP, first fragment, from a realserver endpoint (`proto, RIP, port`) | redirect |
//! | ICMP error (types 3, 4, 5, 11, 12) quoting a packet to a realserver endpoint | redirect |
//! | IPv6: TCP/UDP right after the fixed header from a realserver endpoint | redirect |
//! | IPv6: ICMPv6 error (types 1–4) quoting TCP/UDP right after its fixed header, to a realserver endpoint | redirect |
//! | anything else: ARP, neighbour discovery to another address, IPv6 with extension headers from a realserver, VLAN, other traffic | pass |
//!
//! IPv6 from a realserver is taken only with its transport header right after the fixed
//! header (as the TUN steering program reads it, `io::steer`): a realserver's reply with an
//! extension header goes to the kernel, which has no connection for it (replies carry none
//! in practice: realservers send plain TCP and UDP).
//!
//! A frame to another MAC address (broadcast, multicast, or another host's frame that a
//! promiscuous interface or a switch flooding an unknown address delivers: the XDP program
//! runs before the kernel's `PACKET_OTHERHOST` check) is passed, never taken: a director must
//! not forward what was sent to another (behind ECMP, a dead director's frames are flooded to
//! the others until the router withdraws its route). The MAC is the interface's at start.
//!
//! "Redirect" is `bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)`: to the AF_XDP socket
//! of the queue the frame arrived on, or to the kernel if there is none (a queue ringvs does
//! not serve). [`classify`] is the same decision in Rust; the kernel tests compare them with
//! `BPF_PROG_TEST_RUN`.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::io::bpf::{op::*, prog_load, Asm, Insn, Map, MapType, ProgType};

/// XDP return codes.
pub const XDP_PASS: i32 = 2;
/// XDP return codes.
pub const XDP_TX: i32 = 3;
/// XDP return codes.
pub const XDP_REDIRECT: i32 = 4;

/// `bpf_map_lookup_elem`.
const HELPER_MAP_LOOKUP: i32 = 1;
/// `bpf_redirect_map`.
const HELPER_REDIRECT_MAP: i32 = 51;

/// What an [`Endpoints`] key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A virtual address (port and protocol 0): everything to it is ringvs's.
    Vip = 1,
    /// One of the director's own addresses (port and protocol 0): the kernel's.
    Local = 2,
    /// A realserver endpoint: its replies are ringvs's.
    Real = 3,
}

/// One key of an endpoint map: `addr` and `port` in network order as they sit in the
/// packet, then the protocol and the [`Kind`]: 8 bytes for an IPv4 address (the IPv4 map),
/// 20 for an IPv6 one (the IPv6 map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The kind of entry.
    pub kind: Kind,
    /// IP protocol (0 for addresses).
    pub proto: u8,
    /// Address.
    pub addr: IpAddr,
    /// Port (0 for addresses).
    pub port: u16,
}

/// Key length of the IPv4 map.
const KEY4_LEN: usize = 8;
/// Key length of the IPv6 map.
const KEY6_LEN: usize = 20;

impl Endpoint {
    /// A virtual address.
    pub fn vip(addr: impl Into<IpAddr>) -> Endpoint {
        Endpoint {
            kind: Kind::Vip,
            proto: 0,
            addr: addr.into(),
            port: 0,
        }
    }
    /// One of the director's own addresses.
    pub fn local(addr: impl Into<IpAddr>) -> Endpoint {
        Endpoint {
            kind: Kind::Local,
            proto: 0,
            addr: addr.into(),
            port: 0,
        }
    }
    /// A realserver endpoint.
    pub fn real(proto: u8, addr: impl Into<IpAddr>, port: u16) -> Endpoint {
        Endpoint {
            kind: Kind::Real,
            proto,
            addr: addr.into(),
            port,
        }
    }
    /// The map key (its length names the map: [`KEY4_LEN`] or [`KEY6_LEN`]).
    pub fn key(&self) -> Vec<u8> {
        let mut k = match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        k.extend_from_slice(&self.port.to_be_bytes());
        k.push(self.proto);
        k.push(self.kind as u8);
        k
    }
    fn from_key(k: &[u8]) -> Option<Endpoint> {
        let n = match k.len() {
            KEY4_LEN => 4,
            KEY6_LEN => 16,
            _ => return None,
        };
        let kind = match k[n + 3] {
            1 => Kind::Vip,
            2 => Kind::Local,
            3 => Kind::Real,
            _ => return None,
        };
        let addr = match n {
            4 => IpAddr::V4(Ipv4Addr::new(k[0], k[1], k[2], k[3])),
            _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&k[..16]).ok()?)),
        };
        Some(Endpoint {
            kind,
            proto: k[n + 2],
            addr,
            port: u16::from_be_bytes([k[n], k[n + 1]]),
        })
    }
}

/// The endpoint maps (one per family) shared by the programs of every interface.
#[derive(Debug)]
pub struct Endpoints {
    map: Map,
    map6: Map,
    /// What the maps hold (mirrors the kernel's copy).
    held: HashSet<Endpoint>,
}

/// The descriptors of the two endpoint maps, as a program is built with them.
#[derive(Debug, Clone, Copy)]
pub struct MapFds<'a> {
    /// The IPv4 map (8-byte keys).
    pub v4: BorrowedFd<'a>,
    /// The IPv6 map (20-byte keys).
    pub v6: BorrowedFd<'a>,
}

/// Most endpoints the maps hold, both families together.
pub const MAX_ENDPOINTS: u32 = 65_536;

impl Endpoints {
    /// Empty maps.
    pub fn new() -> io::Result<Endpoints> {
        Ok(Endpoints {
            map: Map::create(MapType::Hash, KEY4_LEN, 1, MAX_ENDPOINTS, "ringvs_endpts")?,
            map6: Map::create(MapType::Hash, KEY6_LEN, 1, MAX_ENDPOINTS, "ringvs_endpt6")?,
            held: HashSet::new(),
        })
    }

    /// The maps' descriptors.
    pub fn fds(&self) -> MapFds<'_> {
        MapFds {
            v4: self.map.fd(),
            v6: self.map6.fd(),
        }
    }

    fn map_of(&self, e: &Endpoint) -> &Map {
        if e.addr.is_ipv6() {
            &self.map6
        } else {
            &self.map
        }
    }

    /// Makes the map hold exactly `want`: adds what is missing, then removes what is no
    /// longer wanted. Returns (added, removed).
    pub fn sync(&mut self, want: &HashSet<Endpoint>) -> io::Result<(usize, usize)> {
        if want.len() > MAX_ENDPOINTS as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} endpoints (virtual addresses, local addresses, realservers); the XDP map holds {MAX_ENDPOINTS}",
                    want.len()
                ),
            ));
        }
        let mut added = 0;
        for e in want.difference(&self.held.clone()) {
            self.map_of(e).update(&e.key(), &[1])?;
            self.held.insert(*e);
            added += 1;
        }
        let gone: Vec<Endpoint> = self.held.difference(want).copied().collect();
        for e in &gone {
            self.map_of(e).delete(&e.key())?;
            self.held.remove(e);
        }
        Ok((added, gone.len()))
    }

    /// What the kernel's maps hold (for tests).
    pub fn read_back(&self) -> io::Result<HashSet<Endpoint>> {
        let mut keys = self.map.keys()?;
        keys.extend(self.map6.keys()?);
        Ok(keys.iter().filter_map(|k| Endpoint::from_key(k)).collect())
    }
}

/// Where the program sends a frame it takes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// `bpf_redirect_map(xskmap, rx_queue_index, XDP_PASS)`.
    Xsks(BorrowedFd<'a>),
    /// Return this XDP action instead (tests: `BPF_PROG_TEST_RUN` with no sockets).
    Return(i32),
}

/// Stack offset of the 8-byte IPv4 lookup key.
const KEY: i16 = -8;
/// Stack offset of the 20-byte IPv6 lookup key (every store into it aligned, as the
/// verifier requires on the stack).
const KEY6: i16 = -32;

/// Ethernet + the fixed IPv6 header.
const L6: i16 = 14 + 40;

/// Builds the program for an interface whose MAC address is `mac`.
pub fn program(maps: MapFds<'_>, target: Target<'_>, mac: [u8; 6]) -> Vec<Insn> {
    let mut a = Asm::default();
    let pass = a.label();
    let take = a.label();
    let l4 = a.label();
    let icmp = a.label();
    let six = a.label();
    let (ctx, data, end, ihl) = (R6, R7, R8, R9);

    a.mov(ctx, R1);
    a.ldx(W, data, ctx, 0);
    a.ldx(W, end, ctx, 4);
    // Ethernet + the fixed IPv4 header (an IPv6 frame is longer still).
    a.mov(R0, data);
    a.alu_imm(ADD, R0, 14 + 20);
    a.jmp_reg(JGT, R0, end, pass);
    // Addressed to this interface (16 bits at a time: immediates are sign-extended).
    for (i, half) in mac.chunks_exact(2).enumerate() {
        a.ldx(H, R0, data, 2 * i as i16);
        a.jmp_imm(
            JNE,
            R0,
            i32::from(u16::from_ne_bytes([half[0], half[1]])),
            pass,
        );
    }
    a.ldx(H, R0, data, 12);
    a.jmp_imm(JEQ, R0, i32::from(u16::from_ne_bytes([0x86, 0xdd])), six);
    a.jmp_imm(JNE, R0, i32::from(u16::from_ne_bytes([0x08, 0x00])), pass);
    a.ldx(B, ihl, data, 14);
    a.mov(R0, ihl);
    a.alu_imm(AND, R0, 0xf0);
    a.jmp_imm(JNE, R0, 0x40, pass);
    a.alu_imm(AND, ihl, 0x0f);
    a.alu_imm(LSH, ihl, 2);
    a.jmp_imm(JLT, ihl, 20, pass);

    // 1. To a virtual address: ours. 2. To a local address: the kernel's.
    a.ldx(W, R0, data, 14 + 16);
    a.stx(W, FP, KEY, R0);
    a.st_imm(H, FP, KEY + 4, 0);
    a.st_imm(B, FP, KEY + 6, 0);
    a.st_imm(B, FP, KEY + 7, Kind::Vip as i32);
    lookup(&mut a, maps.v4, KEY);
    a.jmp_imm(JNE, R0, 0, take);
    a.st_imm(B, FP, KEY + 7, Kind::Local as i32);
    lookup(&mut a, maps.v4, KEY);
    a.jmp_imm(JNE, R0, 0, pass);

    a.ldx(B, R0, data, 14 + 9);
    a.jmp_imm(JEQ, R0, 6, l4);
    a.jmp_imm(JEQ, R0, 17, l4);
    a.jmp_imm(JEQ, R0, 1, icmp);
    a.ja(pass);

    // 3. TCP/UDP from a realserver endpoint (first fragments only: later ones have no ports).
    a.bind(l4);
    a.stx(B, FP, KEY + 6, R0);
    a.ldx(H, R0, data, 14 + 6);
    a.alu_imm(AND, R0, i32::from(u16::from_ne_bytes([0x1f, 0xff])));
    a.jmp_imm(JNE, R0, 0, pass);
    a.mov(R1, data);
    a.alu_imm(ADD, R1, 14);
    a.alu_reg(ADD, R1, ihl);
    a.mov(R0, R1);
    a.alu_imm(ADD, R0, 4);
    a.jmp_reg(JGT, R0, end, pass);
    a.ldx(H, R0, R1, 0);
    a.stx(H, FP, KEY + 4, R0);
    a.ldx(W, R0, data, 14 + 12);
    a.stx(W, FP, KEY, R0);
    a.st_imm(B, FP, KEY + 7, Kind::Real as i32);
    lookup(&mut a, maps.v4, KEY);
    a.jmp_imm(JNE, R0, 0, take);
    a.ja(pass);

    // 4. ICMP errors quoting a packet to a realserver endpoint.
    a.bind(icmp);
    a.mov(R1, data);
    a.alu_imm(ADD, R1, 14);
    a.alu_reg(ADD, R1, ihl); // r1 = ICMP header
    a.mov(R0, R1);
    a.alu_imm(ADD, R0, 8 + 20);
    a.jmp_reg(JGT, R0, end, pass);
    a.ldx(B, R0, R1, 0);
    let is_err = a.label();
    for t in [3, 4, 5, 11, 12] {
        a.jmp_imm(JEQ, R0, t, is_err);
    }
    a.ja(pass);
    a.bind(is_err);
    a.ldx(B, R0, R1, 8 + 9);
    a.stx(B, FP, KEY + 6, R0);
    a.ldx(W, R0, R1, 8 + 16);
    a.stx(W, FP, KEY, R0);
    a.ldx(B, R2, R1, 8);
    a.alu_imm(AND, R2, 0x0f);
    a.alu_imm(LSH, R2, 2); // quoted header length
    a.jmp_imm(JLT, R2, 20, pass);
    a.alu_imm(ADD, R1, 8);
    a.alu_reg(ADD, R1, R2); // r1 = quoted transport header
    a.mov(R0, R1);
    a.alu_imm(ADD, R0, 4);
    a.jmp_reg(JGT, R0, end, pass);
    a.ldx(H, R0, R1, 2);
    a.stx(H, FP, KEY + 4, R0);
    a.st_imm(B, FP, KEY + 7, Kind::Real as i32);
    lookup(&mut a, maps.v4, KEY);
    a.jmp_imm(JNE, R0, 0, take);
    a.ja(pass);

    // IPv6: the same rules on the fixed header, with the IPv6 map.
    a.bind(six);
    let l4_6 = a.label();
    let icmp6 = a.label();
    a.mov(R0, data);
    a.alu_imm(ADD, R0, i32::from(L6));
    a.jmp_reg(JGT, R0, end, pass);
    a.ldx(B, R0, data, 14);
    a.alu_imm(AND, R0, 0xf0);
    a.jmp_imm(JNE, R0, 0x60, pass);
    // 1, 2: the destination address.
    address6(&mut a, data, 14 + 24);
    a.st_imm(H, FP, KEY6 + 16, 0);
    a.st_imm(B, FP, KEY6 + 18, 0);
    a.st_imm(B, FP, KEY6 + 19, Kind::Vip as i32);
    lookup(&mut a, maps.v6, KEY6);
    a.jmp_imm(JNE, R0, 0, take);
    a.st_imm(B, FP, KEY6 + 19, Kind::Local as i32);
    lookup(&mut a, maps.v6, KEY6);
    a.jmp_imm(JNE, R0, 0, pass);
    a.ldx(B, R0, data, 14 + 6);
    a.jmp_imm(JEQ, R0, 6, l4_6);
    a.jmp_imm(JEQ, R0, 17, l4_6);
    a.jmp_imm(JEQ, R0, 58, icmp6);
    a.ja(pass);

    // 3. TCP/UDP right after the fixed header, from a realserver endpoint.
    a.bind(l4_6);
    a.stx(B, FP, KEY6 + 18, R0);
    a.mov(R0, data);
    a.alu_imm(ADD, R0, i32::from(L6) + 4);
    a.jmp_reg(JGT, R0, end, pass);
    address6(&mut a, data, 14 + 8);
    a.ldx(H, R0, data, L6);
    a.stx(H, FP, KEY6 + 16, R0);
    a.st_imm(B, FP, KEY6 + 19, Kind::Real as i32);
    lookup(&mut a, maps.v6, KEY6);
    a.jmp_imm(JNE, R0, 0, take);
    a.ja(pass);

    // 4. ICMPv6 errors (1–4) quoting TCP/UDP right after the quoted fixed header, sent to a
    // realserver endpoint.
    a.bind(icmp6);
    let q = L6 + 8; // the quoted IPv6 header
    a.mov(R0, data);
    a.alu_imm(ADD, R0, i32::from(q) + 40 + 4);
    a.jmp_reg(JGT, R0, end, pass);
    a.ldx(B, R0, data, L6);
    a.jmp_imm(JEQ, R0, 0, pass);
    a.jmp_imm(JGT, R0, 4, pass);
    a.ldx(B, R0, data, q + 6);
    let quoted_l4 = a.label();
    a.jmp_imm(JEQ, R0, 6, quoted_l4);
    a.jmp_imm(JEQ, R0, 17, quoted_l4);
    a.ja(pass);
    a.bind(quoted_l4);
    a.stx(B, FP, KEY6 + 18, R0);
    address6(&mut a, data, q + 24);
    a.ldx(H, R0, data, q + 40 + 2);
    a.stx(H, FP, KEY6 + 16, R0);
    a.st_imm(B, FP, KEY6 + 19, Kind::Real as i32);
    lookup(&mut a, maps.v6, KEY6);
    a.jmp_imm(JNE, R0, 0, take);

    a.bind(pass);
    a.exit_with(XDP_PASS);

    a.bind(take);
    match target {
        Target::Xsks(map) => {
            a.ld_map_fd(R1, map);
            a.ldx(W, R2, ctx, 16); // rx_queue_index
            a.mov_imm(R3, XDP_PASS);
            a.call(HELPER_REDIRECT_MAP);
            a.exit();
        }
        Target::Return(action) => a.exit_with(action),
    }
    a.finish()
}

/// Copies the 16-byte address at `data + off` (bounds checked by the caller) into the IPv6
/// key, a word at a time; clobbers r0.
fn address6(a: &mut Asm, data: u8, off: i16) {
    for w in 0..4 {
        a.ldx(W, R0, data, off + 4 * w);
        a.stx(W, FP, KEY6 + 4 * w, R0);
    }
}

/// `r0 = bpf_map_lookup_elem(map, fp + key)`; clobbers r1–r5.
fn lookup(a: &mut Asm, map: BorrowedFd<'_>, key: i16) {
    a.ld_map_fd(R1, map);
    a.mov(R2, FP);
    a.alu_imm(ADD, R2, i32::from(key));
    a.call(HELPER_MAP_LOOKUP);
}

/// Loads the program for one interface, whose MAC address is `mac`.
pub fn load(maps: MapFds<'_>, target: Target<'_>, mac: [u8; 6]) -> io::Result<OwnedFd> {
    prog_load(
        ProgType::Xdp,
        &program(maps, target, mac),
        "ringvs_xdp",
        "the XDP program",
    )
}

/// The program's decision in Rust for an interface whose MAC address is `mac`: true if
/// `frame` goes to ringvs ("redirect"), false if to the kernel. `has` says whether the
/// endpoint map holds an entry.
pub fn classify(frame: &[u8], mac: [u8; 6], has: impl Fn(&Endpoint) -> bool) -> bool {
    let at = |o: usize, n: usize| frame.get(o..o + n);
    let addr = |o: usize| at(o, 4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    let addr6 =
        |o: usize| at(o, 16).map(|b| Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")));
    let be16 = |o: usize| at(o, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let six = || -> Option<bool> {
        let l6 = L6 as usize;
        if frame.len() < l6 || frame[14] & 0xf0 != 0x60 {
            return Some(false);
        }
        let dst = addr6(14 + 24)?;
        if has(&Endpoint::vip(dst)) {
            return Some(true);
        }
        if has(&Endpoint::local(dst)) {
            return Some(false);
        }
        match frame[14 + 6] {
            nh @ (6 | 17) => Some(has(&Endpoint::real(nh, addr6(14 + 8)?, be16(l6)?))),
            58 => {
                let q = l6 + 8;
                at(q, 44)?;
                if !(1..=4).contains(&frame[l6]) || !matches!(frame[q + 6], 6 | 17) {
                    return Some(false);
                }
                Some(has(&Endpoint::real(
                    frame[q + 6],
                    addr6(q + 24)?,
                    be16(q + 42)?,
                )))
            }
            _ => Some(false),
        }
    };
    let inner = || -> Option<bool> {
        if frame.len() < 34 || frame[..6] != mac {
            return Some(false);
        }
        if be16(12)? == 0x86dd {
            return six();
        }
        if be16(12)? != 0x0800 || frame[14] & 0xf0 != 0x40 {
            return Some(false);
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if ihl < 20 {
            return Some(false);
        }
        let dst = addr(30)?;
        if has(&Endpoint::vip(dst)) {
            return Some(true);
        }
        if has(&Endpoint::local(dst)) {
            return Some(false);
        }
        let proto = frame[23];
        let l4 = 14 + ihl;
        match proto {
            6 | 17 => {
                if be16(20)? & 0x1fff != 0 {
                    return Some(false);
                }
                Some(has(&Endpoint::real(proto, addr(26)?, be16(l4)?)))
            }
            1 => {
                at(l4, 28)?;
                if !matches!(frame[l4], 3 | 4 | 5 | 11 | 12) {
                    return Some(false);
                }
                let q = l4 + 8;
                let qihl = usize::from(frame[q] & 0x0f) * 4;
                if qihl < 20 {
                    return Some(false);
                }
                let qproto = frame[q + 9];
                let qdst = addr(q + 16)?;
                Some(has(&Endpoint::real(qproto, qdst, be16(q + qihl + 2)?)))
            }
            _ => Some(false),
        }
    };
    inner().unwrap_or(false)
}

/// Runs `prog` once on `frame` with `BPF_PROG_TEST_RUN`; returns the XDP action.
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<i32> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&1u32.to_ne_bytes());
    // Safety: `attr` is a BPF_PROG_TEST_RUN bpf_attr whose data_in/data_out pointers point at
    // `frame` and `out`, alive and of the sizes given, for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::bpf::jumps_are_forward_and_inside;

    #[test]
    fn program_is_well_formed() {
        // Any descriptor number will do for assembling (the kernel resolves it at load).
        let fd = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&fd);
        let maps = MapFds { v4: fd, v6: fd };
        for t in [Target::Xsks(fd), Target::Return(XDP_TX)] {
            jumps_are_forward_and_inside(&program(maps, t, [2, 0, 0, 0, 0, 1])).unwrap();
        }
    }

    #[test]
    fn keys_round_trip() {
        for e in [
            Endpoint::vip(Ipv4Addr::new(10, 77, 100, 100)),
            Endpoint::local(Ipv4Addr::new(10, 77, 1, 254)),
            Endpoint::real(6, Ipv4Addr::new(10, 77, 1, 1), 8080),
            Endpoint::vip("fd77:100::100".parse::<Ipv6Addr>().unwrap()),
            Endpoint::local("fe80::1".parse::<Ipv6Addr>().unwrap()),
            Endpoint::real(17, "fd77:1::1".parse::<Ipv6Addr>().unwrap(), 53),
        ] {
            assert_eq!(Endpoint::from_key(&e.key()), Some(e));
        }
        let mut k6 = vec![0xfd, 0x77, 0, 1];
        k6.extend_from_slice(&[0; 11]);
        k6.extend_from_slice(&[1, 0x12, 0x34, 6, 3]);
        assert_eq!(
            Endpoint::real(6, "fd77:1::1".parse::<Ipv6Addr>().unwrap(), 0x1234).key(),
            k6
        );
        assert_eq!(Endpoint::from_key(&[0; 12]), None, "neither map's key");
        assert_eq!(
            Endpoint::real(17, Ipv4Addr::new(1, 2, 3, 4), 0x1234).key(),
            [1, 2, 3, 4, 0x12, 0x34, 17, 3]
        );
    }
}
