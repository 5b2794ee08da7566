//! Symmetric queue steering for a multi-queue TUN device (`TUNSETSTEERINGEBPF`).
//!
//! Each queue owns a shard of the connection table, so both directions of a flow must reach
//! the same queue. The kernel's automatic queue selection hashes the packet's own 4-tuple,
//! and a NAT rewrite changes it: a client's SYN and the realserver's SYN-ACK may land on
//! different queues (seen in the lab). This program keys every packet on the *client*
//! endpoint instead:
//!
//! - TCP/UDP to a virtual service (`dst` is a VIP:port): the source;
//! - anything else (replies from realservers): the destination;
//! - ICMP errors: the client of the quoted packet (its destination if it came from a VIP,
//!   else its source);
//! - IPv6 the same way (TCP/UDP right after the fixed header, ICMPv6 errors 1–4 quoting
//!   one), hashed as three words ([`queue_of6`]); with extension headers, queue 0.
//!
//! The queue is SipHash-1-3 of the client endpoint under a secret drawn when the daemon
//! starts ([`queue_of`]), modulo the number of queues: one client's many connections spread
//! over the queues by their ports, and nobody who does not know the secret can choose source
//! ports (or addresses) that pile onto one queue (the old fixed multiplicative hash let
//! anyone compute such a set). The secret is compiled into the program as immediates.
//!
//! [`queue_of`] and [`client_of`] are the same functions in Rust: the tests compare them with
//! the kernel, and the AF_XDP backend uses them to hand packets to the queue that owns them.
//! The program is a socket filter (`BPF_PROG_TYPE_SOCKET_FILTER`) using `LD_ABS`/`LD_IND`
//! loads, generated from the list of services and loaded with `bpf(2)`; it is rebuilt when
//! the services change. Packets it cannot parse go to queue 0, and so do fragments (first ones
//! included): queue 0 reassembles them and hands the datagram on ([`crate::dataplane::defrag`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use super::bpf::{op::*, prog_load, Asm, Insn, ProgType};
use crate::conn::{sip, HashKey};

/// Stack slots (offsets from the frame pointer).
const SLOT_PORT: i16 = -4;
const SLOT_PROTO: i16 = -8;

/// The one 8-byte message hashed for a client endpoint: the address in the high half, the
/// port above the low 16 bits (the layout of the connection table's key, protocol 0).
fn message(addr: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(addr)) << 32) | (u64::from(port) << 16)
}

/// SipHash-1-3 of one 8-byte message under `key`: what `SipHasher13` gives after a single
/// `write_u64` (checked against the `siphasher` crate in the tests), and what the program
/// computes in eBPF. The connection table's own function ([`sip::one_word`]).
pub fn siphash13_word(key: &HashKey, m: u64) -> u64 {
    sip::one_word(key, m)
}

/// SipHash-1-3 under `key` of an IPv6 client endpoint's three words ([`message6`]): what
/// `SipHasher13` gives after one `write_u64` per word.
fn siphash13_words6(key: &HashKey, w: [u64; 3]) -> u64 {
    sip::one(key, [w[0], w[1], w[2], 24 << 56])
}

/// The queue (of `queues`) that packets of client endpoint `addr:port` are steered to under
/// the steering secret `key`.
pub fn queue_of(key: &HashKey, addr: Ipv4Addr, port: u16, queues: u32) -> u32 {
    (siphash13_word(key, message(addr, port)) % u64::from(queues.max(1))) as u32
}

/// The words hashed for an IPv6 client endpoint: the address's halves (high first, as the
/// packet has them), then the port.
fn message6(addr: Ipv6Addr, port: u16) -> [u64; 3] {
    let n = u128::from(addr);
    [(n >> 64) as u64, n as u64, u64::from(port)]
}

/// [`queue_of`] for an IPv6 client endpoint.
pub fn queue_of6(key: &HashKey, addr: Ipv6Addr, port: u16, queues: u32) -> u32 {
    (siphash13_words6(key, message6(addr, port)) % u64::from(queues.max(1))) as u32
}

/// Emits one SipRound on v0..v3 = r1..r4, with r5 as scratch.
fn sip_round(a: &mut Asm) {
    let (v0, v1, v2, v3, t) = (R1, R2, R3, R4, R5);
    a.alu_reg(ADD, v0, v1);
    a.rotl(v1, 13, t);
    a.alu_reg(XOR, v1, v0);
    a.rotl(v0, 32, t);
    a.alu_reg(ADD, v2, v3);
    a.rotl(v3, 16, t);
    a.alu_reg(XOR, v3, v2);
    a.alu_reg(ADD, v0, v3);
    a.rotl(v3, 21, t);
    a.alu_reg(XOR, v3, v0);
    a.alu_reg(ADD, v2, v1);
    a.rotl(v1, 17, t);
    a.alu_reg(XOR, v1, v2);
    a.rotl(v2, 32, t);
}

/// Emits `r0 = siphash13_word(key, m) % queues` for the message in `m` (not r0–r5).
/// Clobbers r0–r5.
pub(crate) fn emit_queue_of(a: &mut Asm, key: &HashKey, m: u8, queues: u32) {
    emit_sip_init(a, key);
    emit_sip_word(a, m);
    emit_sip_final(a, 1, queues);
}

/// Emits SipHash's initial state for `key` in v0..v3 = r1..r4.
fn emit_sip_init(a: &mut Asm, key: &HashKey) {
    let (v0, v1, v2, v3) = (R1, R2, R3, R4);
    a.ld_imm64(v0, sip::INIT[0] ^ key.0[0]);
    a.ld_imm64(v1, sip::INIT[1] ^ key.0[1]);
    a.ld_imm64(v2, sip::INIT[2] ^ key.0[0]);
    a.ld_imm64(v3, sip::INIT[3] ^ key.0[1]);
}

/// Emits the compression of one message word in `m` (not r0–r5).
fn emit_sip_word(a: &mut Asm, m: u8) {
    let (v0, v3) = (R1, R4);
    a.alu_reg(XOR, v3, m);
    sip_round(a);
    a.alu_reg(XOR, v0, m);
}

/// Emits the length block of `words` words, the finalisation and `r0 = hash % queues`.
fn emit_sip_final(a: &mut Asm, words: u64, queues: u32) {
    let (v0, v1, v2, v3) = (R1, R2, R3, R4);
    a.ld_imm64(R0, (8 * words) << 56);
    a.alu_reg(XOR, v3, R0);
    sip_round(a);
    a.alu_reg(XOR, v0, R0);
    a.alu_imm(XOR, v2, 0xff);
    for _ in 0..3 {
        sip_round(a);
    }
    a.mov(R0, v0);
    a.alu_reg(XOR, R0, v1);
    a.alu_reg(XOR, R0, v2);
    a.alu_reg(XOR, R0, v3);
    a.alu_imm(MOD, R0, queues.max(1) as i32);
}

/// Builds the program for `services` (protocol number, VIP, port), the IPv6 services
/// `services6`, `queues` queues and the steering secret `key`.
pub fn program(
    services: &[(u8, Ipv4Addr, u16)],
    services6: &[(u8, Ipv6Addr, u16)],
    queues: u32,
    key: &HashKey,
) -> Vec<Insn> {
    let mut a = Asm::default();
    let out0 = a.label();
    let six = a.label();
    let l4 = a.label();
    let icmp = a.label();
    let mix = a.label();
    let is_err = a.label();

    a.mov(R6, R1); // LD_ABS/LD_IND take the packet from r6
                   // IPv4, not a fragment (first ones included: MF or an offset).
    a.ld_abs(B, 0);
    a.emit(ALU64 | AND | K, R0, 0, 0, 0xf0);
    a.jump(JMP32 | JNE | K, R0, 0, 0x40, six);
    a.ld_abs(H, 6);
    a.emit(ALU64 | AND | K, R0, 0, 0, 0x3fff);
    a.jump(JMP32 | JNE | K, R0, 0, 0, out0);
    a.ld_abs(B, 0);
    a.emit(ALU64 | AND | K, R0, 0, 0, 0x0f);
    a.emit(ALU64 | LSH | K, R0, 0, 0, 2);
    a.mov(R7, R0); // r7 = IP header length
    a.ld_abs(B, 9);
    a.mov(R8, R0); // r8 = protocol
    a.jump(JMP32 | JEQ | K, R8, 0, 6, l4);
    a.jump(JMP32 | JEQ | K, R8, 0, 17, l4);
    a.jump(JMP32 | JEQ | K, R8, 0, 1, icmp);
    a.jump(JMP | JA, 0, 0, 0, out0);

    // TCP/UDP: r9 = dst address, slot = dst port; to a service → use the source instead.
    a.bind(l4);
    a.ld_abs(W, 16);
    a.mov(R9, R0);
    a.ld_ind(H, R7, 2);
    a.stx(W, FP, SLOT_PORT, R0);
    let inbound = a.label();
    for &(proto, vip, port) in services {
        let next = a.label();
        a.jump(JMP32 | JNE | K, R9, 0, u32::from(vip) as i32, next);
        a.jump(JMP32 | JNE | K, R8, 0, proto as i32, next);
        a.ldx(W, R0, FP, SLOT_PORT);
        a.jump(JMP32 | JEQ | K, R0, 0, port as i32, inbound);
        a.bind(next);
    }
    a.jump(JMP | JA, 0, 0, 0, mix);
    // Without services nothing jumps there: no block the verifier would call unreachable.
    if !services.is_empty() {
        a.bind(inbound);
        a.ld_abs(W, 12);
        a.mov(R9, R0);
        a.ld_ind(H, R7, 0);
        a.stx(W, FP, SLOT_PORT, R0);
        a.jump(JMP | JA, 0, 0, 0, mix);
    }

    // ICMP errors: the quoted packet starts 8 bytes into the ICMP message.
    a.bind(icmp);
    a.ld_ind(B, R7, 0);
    for t in [3, 4, 5, 11, 12] {
        a.jump(JMP32 | JEQ | K, R0, 0, t, is_err);
    }
    a.jump(JMP | JA, 0, 0, 0, out0);
    a.bind(is_err);
    a.emit(ALU64 | ADD | K, R7, 0, 0, 8); // r7 = quoted IP header
    a.ld_ind(B, R7, 0);
    a.emit(ALU64 | AND | K, R0, 0, 0, 0x0f);
    a.emit(ALU64 | LSH | K, R0, 0, 0, 2);
    a.emit(ALU64 | ADD | X, R0, R7, 0, 0);
    a.mov(R8, R0); // r8 = quoted transport header
    a.ld_ind(B, R7, 9);
    a.stx(W, FP, SLOT_PROTO, R0);
    a.ld_ind(W, R7, 12);
    a.mov(R9, R0); // quoted source address
    a.ld_ind(H, R8, 0);
    a.stx(W, FP, SLOT_PORT, R0); // quoted source port
    let from_vip = a.label();
    for &(proto, vip, port) in services {
        let next = a.label();
        a.jump(JMP32 | JNE | K, R9, 0, u32::from(vip) as i32, next);
        a.ldx(W, R0, FP, SLOT_PROTO);
        a.jump(JMP32 | JNE | K, R0, 0, proto as i32, next);
        a.ldx(W, R0, FP, SLOT_PORT);
        a.jump(JMP32 | JEQ | K, R0, 0, port as i32, from_vip);
        a.bind(next);
    }
    a.jump(JMP | JA, 0, 0, 0, mix); // quoted source is the client
    if !services.is_empty() {
        a.bind(from_vip);
        a.ld_ind(W, R7, 16);
        a.mov(R9, R0);
        a.ld_ind(H, R8, 2);
        a.stx(W, FP, SLOT_PORT, R0);
    }

    // r0 = queue_of(key, r9, port): m = addr << 32 | port << 16, in r9.
    a.bind(mix);
    a.alu_imm(LSH, R9, 32);
    a.ldx(W, R0, FP, SLOT_PORT);
    a.alu_imm(LSH, R0, 16);
    a.alu_reg(OR, R9, R0);
    emit_queue_of(&mut a, key, R9, queues);
    a.exit();

    a.bind(six);
    emit_ipv6(&mut a, services6, queues, key, out0);

    a.bind(out0);
    a.exit_with(0);
    a.finish()
}

/// Stack slots of an IPv6 client endpoint's words (see [`message6`]).
const SLOT_HI: i16 = -16;
const SLOT_LO: i16 = -24;
const SLOT_P6: i16 = -32;

/// Emits: `(proto, addr at packet offset `at`, port in SLOT_PORT)` is one of `services6`
/// → jump to `hit` (r8 holds the protocol; clobbers r0).
fn emit_match6(
    a: &mut Asm,
    services6: &[(u8, Ipv6Addr, u16)],
    at: i32,
    hit: crate::io::bpf::Label,
) {
    for &(proto, vip, port) in services6 {
        let next = a.label();
        a.jump(JMP32 | JNE | K, R8, 0, i32::from(proto), next);
        a.ldx(W, R0, FP, SLOT_PORT);
        a.jump(JMP32 | JNE | K, R0, 0, i32::from(port), next);
        for (k, w) in vip.octets().chunks(4).enumerate() {
            a.ld_abs(W, at + 4 * k as i32);
            let w = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            a.jump(JMP32 | JNE | K, R0, 0, w as i32, next);
        }
        a.ja(hit);
        a.bind(next);
    }
}

/// Emits: the IPv6 endpoint at packet offsets `at` (address) and `port` into the slots of
/// [`message6`] (clobbers r0, r7), then a jump to `mix`.
fn emit_store6(a: &mut Asm, at: i32, port: i32, mix: crate::io::bpf::Label) {
    for (half, slot) in [(0, SLOT_HI), (8, SLOT_LO)] {
        a.ld_abs(W, at + half);
        a.mov(R7, R0);
        a.alu_imm(LSH, R7, 32);
        a.ld_abs(W, at + half + 4);
        a.alu_reg(OR, R7, R0);
        a.stx(DW, FP, slot, R7);
    }
    a.ld_abs(H, port);
    a.stx(DW, FP, SLOT_P6, R0);
    a.ja(mix);
}

/// Emits the program's IPv6 part, entered with r0 = the version nibble (`0x60` or
/// anything else but 0x40): TCP/UDP right after the fixed header, keyed on the client as
/// IPv4 is; an ICMPv6 error quoting TCP/UDP right after its fixed header, on the quoted
/// packet's client; everything else (extension headers, fragments included) to `out0`.
fn emit_ipv6(
    a: &mut Asm,
    services6: &[(u8, Ipv6Addr, u16)],
    queues: u32,
    key: &HashKey,
    out0: crate::io::bpf::Label,
) {
    let (l4, icmp, quoted, mix) = (a.label(), a.label(), a.label(), a.label());
    a.jump(JMP32 | JNE | K, R0, 0, 0x60, out0);
    a.ld_abs(B, 6);
    a.mov(R8, R0); // r8 = next header
    a.jump(JMP32 | JEQ | K, R8, 0, 6, l4);
    a.jump(JMP32 | JEQ | K, R8, 0, 17, l4);
    a.jump(JMP32 | JEQ | K, R8, 0, 58, icmp);
    a.ja(out0);

    // TCP/UDP: to a service → the source is the client, else the destination.
    a.bind(l4);
    let inbound = a.label();
    a.ld_abs(H, 42);
    a.stx(W, FP, SLOT_PORT, R0);
    emit_match6(a, services6, 24, inbound);
    emit_store6(a, 24, 42, mix);
    if !services6.is_empty() {
        a.bind(inbound);
        emit_store6(a, 8, 40, mix);
    }

    // ICMPv6 errors (types 1–4): the quoted packet starts 8 bytes into the message (48).
    a.bind(icmp);
    let is_err = a.label();
    a.ld_abs(B, 40);
    for t in 1..=4 {
        a.jump(JMP32 | JEQ | K, R0, 0, t, is_err);
    }
    a.ja(out0);
    a.bind(is_err);
    a.ld_abs(B, 54);
    a.mov(R8, R0); // r8 = the quoted next header
    a.jump(JMP32 | JEQ | K, R8, 0, 6, quoted);
    a.jump(JMP32 | JEQ | K, R8, 0, 17, quoted);
    a.ja(out0);
    a.bind(quoted);
    let from_vip = a.label();
    a.ld_abs(H, 90); // both quoted ports present, whichever is used
    a.ld_abs(H, 88);
    a.stx(W, FP, SLOT_PORT, R0);
    emit_match6(a, services6, 56, from_vip);
    emit_store6(a, 56, 88, mix); // the quoted source is the client
    if !services6.is_empty() {
        a.bind(from_vip);
        emit_store6(a, 72, 90, mix);
    }

    a.bind(mix);
    emit_sip_init(a, key);
    for slot in [SLOT_HI, SLOT_LO, SLOT_P6] {
        a.ldx(DW, R9, FP, slot);
        emit_sip_word(a, R9);
    }
    emit_sip_final(a, 3, queues);
    a.exit();
}

/// Loads a socket-filter program; returns its descriptor. The error carries the verifier's
/// log.
pub fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    prog_load(
        ProgType::SocketFilter,
        insns,
        "ringvs_steer",
        "the TUN steering program",
    )
}

/// The client endpoint of an IPv4 packet as the program sees it (see the [module
/// docs](self)), or `None` where the program answers queue 0 (not IPv4, a fragment, another
/// protocol, an ICMP message that is not an error, truncated). `services` is sorted, as the
/// daemon keeps it. The AF_XDP backend uses it to hand a packet to the queue that owns its
/// flow.
pub fn client_of(pkt: &[u8], services: &[(u8, Ipv4Addr, u16)]) -> Option<(Ipv4Addr, u16)> {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
    let addr = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| Ipv4Addr::new(s[0], s[1], s[2], s[3]))
    };
    let is_service =
        |proto: u8, a: Ipv4Addr, p: u16| services.binary_search(&(proto, a, p)).is_ok();
    let first = *pkt.first()?;
    if first & 0xf0 != 0x40 || be16(pkt, 6)? & 0x3fff != 0 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let proto = *pkt.get(9)?;
    match proto {
        6 | 17 => {
            let (src, dst) = (addr(pkt, 12)?, addr(pkt, 16)?);
            let (sport, dport) = (be16(pkt, ihl)?, be16(pkt, ihl + 2)?);
            Some(if is_service(proto, dst, dport) {
                (src, sport)
            } else {
                (dst, dport)
            })
        }
        1 => {
            if !matches!(*pkt.get(ihl)?, 3 | 4 | 5 | 11 | 12) {
                return None;
            }
            let q = ihl + 8;
            let qihl = usize::from(*pkt.get(q)? & 0x0f) * 4;
            let qproto = *pkt.get(q + 9)?;
            let (src, dst) = (addr(pkt, q + 12)?, addr(pkt, q + 16)?);
            let (sport, dport) = (be16(pkt, q + qihl)?, be16(pkt, q + qihl + 2)?);
            Some(if is_service(qproto, src, sport) {
                (dst, dport)
            } else {
                (src, sport)
            })
        }
        _ => None,
    }
}

/// The client endpoint of an IPv6 packet as the program sees it, or `None` where it answers
/// queue 0 (see [`emit_ipv6`]); `services6` as the program was built with.
pub fn client_of6(pkt: &[u8], services6: &[(u8, Ipv6Addr, u16)]) -> Option<(Ipv6Addr, u16)> {
    let be16 = |at: usize| {
        pkt.get(at..at + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
    };
    let addr = |at: usize| {
        let b: [u8; 16] = pkt.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    let is_service = |proto: u8, a: Ipv6Addr, p: u16| services6.contains(&(proto, a, p));
    if *pkt.first()? & 0xf0 != 0x60 {
        return None;
    }
    let next = *pkt.get(6)?;
    let (proto, src, dst, sport, dport, quoted) = match next {
        6 | 17 => (next, addr(8)?, addr(24)?, be16(40)?, be16(42)?, false),
        58 => {
            if !matches!(*pkt.get(40)?, 1..=4) || !matches!(*pkt.get(54)?, 6 | 17) {
                return None;
            }
            (pkt[54], addr(56)?, addr(72)?, be16(88)?, be16(90)?, true)
        }
        _ => return None,
    };
    Some(
        match (
            quoted,
            is_service(
                proto,
                if quoted { src } else { dst },
                if quoted { sport } else { dport },
            ),
        ) {
            // To a service: its source; a quoted packet from a service: its destination.
            (false, true) => (src, sport),
            (false, false) => (dst, dport),
            (true, true) => (dst, dport),
            (true, false) => (src, sport),
        },
    )
}

/// The queue the program sends `pkt` (either family) to: [`queue_of`] its [`client_of`]
/// ([`queue_of6`] its [`client_of6`] for IPv6), else 0.
pub fn queue_of_packet(
    pkt: &[u8],
    services: &[(u8, Ipv4Addr, u16)],
    services6: &[(u8, Ipv6Addr, u16)],
    key: &HashKey,
    queues: u32,
) -> u32 {
    if pkt.first().is_some_and(|b| b >> 4 == 6) {
        return client_of6(pkt, services6).map_or(0, |(a, p)| queue_of6(key, a, p, queues));
    }
    client_of(pkt, services).map_or(0, |(a, p)| queue_of(key, a, p, queues))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testkit::{icmp_error, tcp, udp};
    use std::hash::Hasher;
    use std::net::SocketAddrV4;

    const KEY: HashKey = HashKey([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);

    /// With or without services of either family, every instruction is reachable (the
    /// verifier refuses the program otherwise: a daemon without IPv6 services did not start).
    #[test]
    fn every_instruction_is_reachable_with_any_service_list() {
        let v4 = [(6, Ipv4Addr::new(10, 77, 100, 100), 80)];
        let v6 = [(17, "fd77:100::100".parse().unwrap(), 53)];
        for (s4, s6) in [(&v4[..], &v6[..]), (&v4, &[]), (&[], &v6), (&[], &[])] {
            let p = program(s4, s6, 4, &KEY);
            super::super::bpf::jumps_are_forward_and_inside(&p)
                .unwrap_or_else(|e| panic!("{} IPv4, {} IPv6 services: {e}", s4.len(), s6.len()));
        }
    }

    #[test]
    fn jumps_land_inside_the_program() {
        let p = program(
            &[
                (6, Ipv4Addr::new(10, 77, 100, 100), 80),
                (17, Ipv4Addr::new(192, 0, 2, 1), 53),
            ],
            &[(6, "fd77:100::100".parse().unwrap(), 80)],
            2,
            &KEY,
        );
        super::super::bpf::jumps_are_forward_and_inside(&p).unwrap();
    }

    #[test]
    fn siphash_matches_the_reference() {
        for (k, m) in [
            (KEY, 0u64),
            (KEY, message(Ipv4Addr::new(10, 77, 0, 2), 40_000)),
            (HashKey([1, 2]), u64::MAX),
        ] {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(k.0[0], k.0[1]);
            h.write_u64(m);
            assert_eq!(siphash13_word(&k, m), h.finish());
        }
        // The three words of an IPv6 endpoint.
        let words = message6("fd77::2".parse().unwrap(), 40_000);
        let mut h = siphasher::sip::SipHasher13::new_with_keys(KEY.0[0], KEY.0[1]);
        for w in words {
            h.write_u64(w);
        }
        assert_eq!(siphash13_words6(&KEY, words), h.finish());
    }

    #[test]
    fn ipv6_both_directions_and_icmpv6_errors_name_the_client() {
        use crate::dataplane::testkit::{icmp6, tcp6, udp6, with_ext6};
        use std::net::SocketAddrV6;
        let a6 = |s: &str| s.parse::<SocketAddrV6>().unwrap();
        let (vip, rip, c) = (
            a6("[fd77:100::100]:80"),
            a6("[fd77:1::1]:8080"),
            a6("[fd77::2]:40001"),
        );
        let services6 = [(6, *vip.ip(), 80), (17, *vip.ip(), 53)];
        let want = Some((*c.ip(), c.port()));
        let reply = tcp6(vip, c, 0x10, &[0; 100]);
        let fwd = tcp6(c, rip, 0x10, b"x");
        let router: std::net::Ipv6Addr = "fd77:100::1".parse().unwrap();
        for pkt in [
            tcp6(c, vip, 0x02, b""),
            tcp6(rip, c, 0x12, b""),
            udp6(c, a6("[fd77:100::100]:53"), b"q"),
            udp6(a6("[fd77:1::1]:5353"), c, b"a"),
            icmp6(router, *vip.ip(), 2, 0, 1280, &reply),
            icmp6(*rip.ip(), *c.ip(), 1, 4, 0, &fwd),
        ] {
            assert_eq!(client_of6(&pkt, &services6), want, "{pkt:02x?}");
        }
        // Extension headers (a fragment among them), echo, cut short: queue 0.
        let frag = with_ext6(
            &udp6(c, a6("[fd77:100::100]:53"), b"q"),
            44,
            &[0, 0, 0, 1, 0, 0, 0, 7],
        );
        assert_eq!(client_of6(&frag, &services6), None, "fragment");
        let echo = icmp6(*c.ip(), *vip.ip(), 128, 0, 0, b"ping");
        assert_eq!(client_of6(&echo, &services6), None, "echo");
        let syn = tcp6(c, vip, 0x02, b"");
        assert_eq!(client_of6(&syn[..43], &services6), None, "truncated");
        assert_eq!(
            client_of6(&syn, &[]),
            Some((*vip.ip(), 80)),
            "no service: the destination"
        );
        // An IPv4 packet is not IPv6's.
        assert_eq!(client_of6(&[0x45; 60], &services6), None);
        // The AF_XDP queues' hand-off picks by family: both directions, one queue, the one
        // the TUN steering program computes.
        let queues = 8;
        let home = queue_of6(&KEY, *c.ip(), c.port(), queues);
        for pkt in [tcp6(c, vip, 0x02, b""), tcp6(rip, c, 0x12, b"")] {
            assert_eq!(queue_of_packet(&pkt, &[], &services6, &KEY, queues), home);
        }
        let other = (0..64)
            .map(|p| queue_of6(&KEY, *c.ip(), 40_000 + p, queues))
            .find(|&q| q != home);
        assert!(other.is_some(), "ports spread over the queues");
        assert_eq!(queue_of_packet(&echo, &[], &services6, &KEY, queues), 0);
    }

    /// One client's ports spread over the queues under IPv6 too.
    #[test]
    fn spreads_one_ipv6_clients_ports() {
        let mut n = [0u32; 4];
        for port in 0..4000u16 {
            n[queue_of6(&KEY, "fd77::2".parse().unwrap(), port, 4) as usize] += 1;
        }
        assert!(n.iter().all(|&c| c > 800), "{n:?}");
    }

    #[test]
    fn spreads_one_clients_ports() {
        let mut n = [0u32; 4];
        for port in 0..4000u16 {
            n[queue_of(&KEY, Ipv4Addr::new(10, 77, 0, 2), port, 4) as usize] += 1;
        }
        assert!(n.iter().all(|&c| c > 800), "{n:?}");
    }

    /// Ports an attacker chose to pile onto one queue under one secret spread evenly under
    /// another: the queue of a port cannot be predicted without the secret drawn at start.
    #[test]
    fn chosen_ports_do_not_pile_up_under_another_secret() {
        let client = Ipv4Addr::new(192, 0, 2, 7);
        let piled: Vec<u16> = (1..=u16::MAX)
            .filter(|&p| queue_of(&KEY, client, p, 4) == 0)
            .take(4000)
            .collect();
        let other = HashKey::random();
        let mut n = [0u32; 4];
        for &p in &piled {
            n[queue_of(&other, client, p, 4) as usize] += 1;
        }
        assert!(n.iter().all(|&c| c > 800), "{n:?}");
    }

    #[test]
    fn both_directions_and_icmp_errors_name_the_client() {
        let vip = SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 100), 80);
        let rip = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 1), 8080);
        let c = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40_001);
        let services = [(6, *vip.ip(), 80), (17, *vip.ip(), 53)];
        let want = Some((*c.ip(), c.port()));
        let reply = tcp(vip, c, 0x10, &[0; 100]);
        let fwd = tcp(c, rip, 0x10, b"x");
        for pkt in [
            tcp(c, vip, 0x02, b""),
            tcp(rip, c, 0x12, b""),
            udp(c, SocketAddrV4::new(*vip.ip(), 53), b"q"),
            udp(SocketAddrV4::new(*rip.ip(), 5353), c, b"a"),
            icmp_error(
                Ipv4Addr::new(10, 77, 100, 1),
                *vip.ip(),
                3,
                4,
                1300,
                &reply,
                28,
            ),
            icmp_error(*rip.ip(), *c.ip(), 3, 3, 0, &fwd, 48),
        ] {
            assert_eq!(client_of(&pkt, &services), want, "{pkt:02x?}");
        }
        // A first fragment shows ports, but goes with its later fragments: to queue 0.
        let mut first = udp(c, SocketAddrV4::new(*vip.ip(), 53), &[0; 16]);
        first[6] |= 0x20;
        assert_eq!(client_of(&first, &services), None, "first fragment");
        assert_eq!(client_of(&[0x60; 40], &services), None, "IPv6");
        assert_eq!(client_of(&[0x45, 0], &services), None, "truncated");
    }
}
