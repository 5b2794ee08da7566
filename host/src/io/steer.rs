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
//!   else its source).
//!
//! [`queue_of`] is the same function in Rust; the data plane never needs it, tests do.
//! The program is a socket filter (`BPF_PROG_TYPE_SOCKET_FILTER`) using `LD_ABS`/`LD_IND`
//! loads, generated from the list of services and loaded with `bpf(2)`; it is rebuilt when
//! the services change. Packets it cannot parse go to queue 0.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd};

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Instruction classes, sizes, modes and operations (include/uapi/linux/bpf_common.h, bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const ABS: u8 = 0x20;
const IND: u8 = 0x40;
const MEM: u8 = 0x60;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const MUL: u8 = 0x20;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const EXIT: u8 = 0x90;

const R0: u8 = 0;
const R1: u8 = 1;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const FP: u8 = 10;

/// Stack slots (offsets from the frame pointer).
const SLOT_PORT: i16 = -4;
const SLOT_PROTO: i16 = -8;

/// First multiplier of the hash.
const M1: u32 = 0x9e37_79b1;
/// Second multiplier of the hash.
const M2: u32 = 0x85eb_ca6b;

/// The queue (of `queues`) that packets of client endpoint `addr:port` are steered to.
pub fn queue_of(addr: Ipv4Addr, port: u16, queues: u32) -> u32 {
    let mut h = u32::from(addr).wrapping_mul(M1) ^ port as u32;
    h = h.wrapping_mul(M2);
    h ^= h >> 16;
    h % queues.max(1)
}

/// A tiny assembler with forward labels.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.insns.len());
    }
    /// A jump whose target is label `l` (offset patched in `finish`).
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, l: usize) {
        self.fixups.push((self.insns.len(), l));
        self.emit(code, dst, src, 0, imm);
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in self.fixups {
            let target = self.labels[l].expect("every label is bound");
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
    fn ld_abs(&mut self, size: u8, off: i32) {
        self.emit(LD | ABS | size, 0, 0, 0, off);
    }
    fn ld_ind(&mut self, size: u8, reg: u8, off: i32) {
        self.emit(LD | IND | size, 0, reg, 0, off);
    }
    fn mov(&mut self, dst: u8, src: u8) {
        self.emit(ALU64 | MOV | X, dst, src, 0, 0);
    }
    fn store(&mut self, slot: i16, src: u8) {
        self.emit(STX | MEM | W, FP, src, slot, 0);
    }
    fn load(&mut self, dst: u8, slot: i16) {
        self.emit(LDX | MEM | W, dst, FP, slot, 0);
    }
    fn exit_with(&mut self, v: i32) {
        self.emit(ALU64 | MOV | K, R0, 0, 0, v);
        self.emit(JMP | EXIT, 0, 0, 0, 0);
    }
}

/// Builds the program for `services` (protocol number, VIP, port) and `queues` queues.
pub fn program(services: &[(u8, Ipv4Addr, u16)], queues: u32) -> Vec<Insn> {
    let mut a = Asm::default();
    let out0 = a.label();
    let l4 = a.label();
    let icmp = a.label();
    let mix = a.label();
    let is_err = a.label();

    a.mov(R6, R1); // LD_ABS/LD_IND take the packet from r6
                   // IPv4, no fragment.
    a.ld_abs(B, 0);
    a.emit(ALU64 | AND | K, R0, 0, 0, 0xf0);
    a.jump(JMP32 | JNE | K, R0, 0, 0x40, out0);
    a.ld_abs(H, 6);
    a.emit(ALU64 | AND | K, R0, 0, 0, 0x1fff);
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
    a.store(SLOT_PORT, R0);
    let inbound = a.label();
    for &(proto, vip, port) in services {
        let next = a.label();
        a.jump(JMP32 | JNE | K, R9, 0, u32::from(vip) as i32, next);
        a.jump(JMP32 | JNE | K, R8, 0, proto as i32, next);
        a.load(R0, SLOT_PORT);
        a.jump(JMP32 | JEQ | K, R0, 0, port as i32, inbound);
        a.bind(next);
    }
    a.jump(JMP | JA, 0, 0, 0, mix);
    a.bind(inbound);
    a.ld_abs(W, 12);
    a.mov(R9, R0);
    a.ld_ind(H, R7, 0);
    a.store(SLOT_PORT, R0);
    a.jump(JMP | JA, 0, 0, 0, mix);

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
    a.store(SLOT_PROTO, R0);
    a.ld_ind(W, R7, 12);
    a.mov(R9, R0); // quoted source address
    a.ld_ind(H, R8, 0);
    a.store(SLOT_PORT, R0); // quoted source port
    let from_vip = a.label();
    for &(proto, vip, port) in services {
        let next = a.label();
        a.jump(JMP32 | JNE | K, R9, 0, u32::from(vip) as i32, next);
        a.load(R0, SLOT_PROTO);
        a.jump(JMP32 | JNE | K, R0, 0, proto as i32, next);
        a.load(R0, SLOT_PORT);
        a.jump(JMP32 | JEQ | K, R0, 0, port as i32, from_vip);
        a.bind(next);
    }
    a.jump(JMP | JA, 0, 0, 0, mix); // quoted source is the client
    a.bind(from_vip);
    a.ld_ind(W, R7, 16);
    a.mov(R9, R0);
    a.ld_ind(H, R8, 2);
    a.store(SLOT_PORT, R0);

    // r0 = queue_of(r9, port)
    a.bind(mix);
    a.emit(ALU | MOV | X, R0, R9, 0, 0);
    a.emit(ALU | MUL | K, R0, 0, 0, M1 as i32);
    a.load(R1, SLOT_PORT);
    a.emit(ALU | XOR | X, R0, R1, 0, 0);
    a.emit(ALU | MUL | K, R0, 0, 0, M2 as i32);
    a.emit(ALU | MOV | X, R1, R0, 0, 0);
    a.emit(ALU | RSH | K, R1, 0, 0, 16);
    a.emit(ALU | XOR | X, R0, R1, 0, 0);
    a.emit(ALU | MOD | K, R0, 0, 0, queues.max(1) as i32);
    a.emit(JMP | EXIT, 0, 0, 0, 0);

    a.bind(out0);
    a.exit_with(0);
    a.finish()
}

/// Loads a socket-filter program; returns its descriptor. The error carries the verifier's
/// log.
pub fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    // union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns, license, log_level,
    // log_size, log_buf, kern_version, prog_flags, prog_name[16].
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..48 + 12].copy_from_slice(b"ringvs_steer");
    // Safety: `attr` is a valid bpf_attr for BPF_PROG_LOAD whose pointers (instructions,
    // license, log buffer) stay alive and unaliased for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&log[..end]);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "loading the TUN steering program failed: {e}{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; verifier: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )
                }
            ),
        ));
    }
    // Safety: bpf(2) returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_inside_the_program() {
        let p = program(
            &[
                (6, Ipv4Addr::new(10, 77, 100, 100), 80),
                (17, Ipv4Addr::new(192, 0, 2, 1), 53),
            ],
            2,
        );
        for (i, insn) in p.iter().enumerate() {
            let class = insn.code & 0x07;
            if (class == JMP || class == JMP32) && insn.code & 0xf0 != EXIT {
                let t = i as isize + 1 + insn.off as isize;
                assert!(
                    t > i as isize && (t as usize) < p.len(),
                    "insn {i} jumps to {t}"
                );
            }
        }
        assert_eq!(p.last().unwrap().code, JMP | EXIT);
    }

    #[test]
    fn spreads_clients() {
        let mut n = [0u32; 4];
        for port in 0..4000u16 {
            n[queue_of(Ipv4Addr::new(10, 77, 0, 2), port, 4) as usize] += 1;
        }
        assert!(n.iter().all(|&c| c > 800), "{n:?}");
    }
}
