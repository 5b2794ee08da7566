//! eBPF plumbing shared by the TUN steering program ([`super::steer`]) and the XDP program
//! of the AF_XDP backend ([`super::xdp`]): a tiny assembler with forward labels, and the few
//! `bpf(2)` commands ringvs needs (load a program, create and edit a map, attach an XDP
//! program through a link).
//!
//! The programs are generated here, in Rust, as instructions: no C compiler, no clang, no
//! libbpf, no nightly toolchain, and nothing to build before `cargo build`. Both programs are
//! a few hundred instructions of straight-line parsing, which an assembler with labels keeps
//! readable; what they compute is mirrored by plain Rust functions that the tests compare
//! with the kernel's answers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Signed offset (jumps, memory).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

/// Opcode parts and registers (include/uapi/linux/bpf_common.h, bpf.h).
pub mod op {
    #![allow(missing_docs)]
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
    pub const IMM: u8 = 0x00;
    pub const ABS: u8 = 0x20;
    pub const IND: u8 = 0x40;
    pub const MEM: u8 = 0x60;
    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;
    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JNE: u8 = 0x50;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
    pub const JLT: u8 = 0xa0;

    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;
    pub const R6: u8 = 6;
    pub const R7: u8 = 7;
    pub const R8: u8 = 8;
    pub const R9: u8 = 9;
    pub const FP: u8 = 10;

    /// `src` of a 64-bit immediate load that names a map by descriptor.
    pub const PSEUDO_MAP_FD: u8 = 1;
}

use op::*;

/// A label: an instruction index to be bound later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// A tiny assembler with forward labels.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    fixups: Vec<(usize, Label)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    /// One raw instruction.
    pub fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
    }
    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    /// Binds `l` to the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    /// A jump whose target is `l` (offset patched in [`Asm::finish`]).
    pub fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(code, dst, src, 0, imm);
    }
    /// `if dst OP imm goto l` (64-bit compare).
    pub fn jmp_imm(&mut self, cmp: u8, dst: u8, imm: i32, l: Label) {
        self.jump(JMP | cmp | K, dst, 0, imm, l);
    }
    /// `if dst OP src goto l` (64-bit compare).
    pub fn jmp_reg(&mut self, cmp: u8, dst: u8, src: u8, l: Label) {
        self.jump(JMP | cmp | X, dst, src, 0, l);
    }
    /// `goto l`.
    pub fn ja(&mut self, l: Label) {
        self.jump(JMP | JA, 0, 0, 0, l);
    }
    /// The program, with every jump resolved. Panics on an unbound label (a bug in the
    /// generator, caught by the tests of each program).
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, l) in self.fixups {
            let target = self.labels[l.0].expect("every label is bound");
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
    /// Socket filters: `r0 = packet[off]` (big-endian, converted to host order).
    pub fn ld_abs(&mut self, size: u8, off: i32) {
        self.emit(LD | ABS | size, 0, 0, 0, off);
    }
    /// Socket filters: `r0 = packet[reg + off]`.
    pub fn ld_ind(&mut self, size: u8, reg: u8, off: i32) {
        self.emit(LD | IND | size, 0, reg, 0, off);
    }
    /// `dst = src` (64-bit).
    pub fn mov(&mut self, dst: u8, src: u8) {
        self.emit(ALU64 | MOV | X, dst, src, 0, 0);
    }
    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.emit(ALU64 | MOV | K, dst, 0, 0, imm);
    }
    /// `dst OP= imm` (64-bit).
    pub fn alu_imm(&mut self, alu: u8, dst: u8, imm: i32) {
        self.emit(ALU64 | alu | K, dst, 0, 0, imm);
    }
    /// `dst OP= src` (64-bit).
    pub fn alu_reg(&mut self, alu: u8, dst: u8, src: u8) {
        self.emit(ALU64 | alu | X, dst, src, 0, 0);
    }
    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.emit(LDX | MEM | size, dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: u8, dst: u8, off: i16, src: u8) {
        self.emit(STX | MEM | size, dst, src, off, 0);
    }
    /// `*(size *)(dst + off) = imm`.
    pub fn st_imm(&mut self, size: u8, dst: u8, off: i16, imm: i32) {
        self.emit(ST | MEM | size, dst, 0, off, imm);
    }
    /// `dst = imm` (a full 64-bit immediate: two instruction slots).
    pub fn ld_imm64(&mut self, dst: u8, imm: u64) {
        self.emit(LD | DW | IMM, dst, 0, 0, imm as u32 as i32);
        self.emit(0, 0, 0, 0, (imm >> 32) as u32 as i32);
    }
    /// `dst = &map` (the kernel replaces the descriptor with the map at load).
    pub fn ld_map_fd(&mut self, dst: u8, map: BorrowedFd<'_>) {
        self.emit(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, map.as_raw_fd());
        self.emit(0, 0, 0, 0, 0);
    }
    /// `r0 = helper(r1, …, r5)`; clobbers r1–r5.
    pub fn call(&mut self, helper: i32) {
        self.emit(JMP | CALL, 0, 0, 0, helper);
    }
    /// `return imm`.
    pub fn exit_with(&mut self, v: i32) {
        self.mov_imm(R0, v);
        self.emit(JMP | EXIT, 0, 0, 0, 0);
    }
    /// `return r0`.
    pub fn exit(&mut self) {
        self.emit(JMP | EXIT, 0, 0, 0, 0);
    }
    /// `dst = dst rotl n` (64-bit), using `tmp`.
    pub fn rotl(&mut self, dst: u8, n: i32, tmp: u8) {
        self.mov(tmp, dst);
        self.alu_imm(LSH, dst, n);
        self.alu_imm(RSH, tmp, 64 - n);
        self.alu_reg(OR, dst, tmp);
    }
}

/// True if every jump of `prog` lands inside it, after itself (the programs here only jump
/// forward), it ends with `exit`, and every instruction is reachable (the verifier's rule).
/// For the generators' tests.
pub fn jumps_are_forward_and_inside(prog: &[Insn]) -> Result<(), String> {
    for (i, insn) in prog.iter().enumerate() {
        let class = insn.code & 0x07;
        let jop = insn.code & 0xf0;
        if (class == JMP || class == JMP32) && jop != EXIT && jop != CALL {
            let t = i as isize + 1 + insn.off as isize;
            if t <= i as isize || t as usize >= prog.len() {
                return Err(format!("insn {i} jumps to {t}"));
            }
        }
    }
    match prog.last() {
        Some(last) if last.code == JMP | EXIT => {}
        _ => return Err("the program does not end with exit".into()),
    }
    // The verifier refuses a program with an instruction no path reaches ("unreachable
    // insn"). Jumps only go forward, so one pass in order finds them all.
    let mut reached = vec![false; prog.len() + 2];
    reached[0] = true;
    for (i, insn) in prog.iter().enumerate() {
        if !reached[i] {
            return Err(format!("insn {i} is unreachable"));
        }
        let class = insn.code & 0x07;
        let jop = insn.code & 0xf0;
        let target = (i as isize + 1 + insn.off as isize) as usize;
        if insn.code == LD | DW | IMM {
            // Two slots: the second is the immediate's high half.
            reached[i + 1] = true;
            reached[i + 2] = true;
        } else if class == JMP && jop == JA {
            reached[target] = true;
        } else if (class == JMP || class == JMP32) && jop == EXIT {
        } else if (class == JMP || class == JMP32) && jop != CALL {
            reached[i + 1] = true;
            reached[target] = true;
        } else {
            reached[i + 1] = true;
        }
    }
    Ok(())
}

/// Program types ringvs loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgType {
    /// `BPF_PROG_TYPE_SOCKET_FILTER` (TUN steering).
    SocketFilter,
    /// `BPF_PROG_TYPE_XDP`.
    Xdp,
}

/// `bpf(cmd, attr)`: the command's result (a descriptor or 0).
fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<i64> {
    // Safety: `attr` is a zero-initialised 128-byte `union bpf_attr` prefix filled by the
    // caller for `cmd`; every pointer in it points at memory the caller keeps alive and
    // unaliased for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Copies `name` (at most 15 bytes, NUL-terminated by the zeroed buffer) into `attr[at..]`.
fn put_name(attr: &mut [u8], at: usize, name: &str) {
    let n = name.len().min(15);
    attr[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
}

/// Takes ownership of a descriptor a bpf(2) command returned.
fn owned(fd: i64) -> OwnedFd {
    // Safety: bpf(2) returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads a program; returns its descriptor. The error carries the tail of the verifier's log
/// and names `what`.
pub fn prog_load(kind: ProgType, insns: &[Insn], name: &str, what: &str) -> io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_XDP: u32 = 37;
    let (prog_type, attach) = match kind {
        ProgType::SocketFilter => (1u32, 0u32),
        ProgType::Xdp => (6u32, BPF_XDP),
    };
    let license = b"GPL\0";
    let mut log = vec![0u8; 256 * 1024];
    // union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns, license, log_level,
    // log_size, log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex,
    // expected_attach_type.
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, prog_type);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 24, 1);
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    put_name(&mut attr, 48, name);
    put32(&mut attr, 68, attach);
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let verifier = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "; verifier: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
            };
            Err(io::Error::new(
                e.kind(),
                format!("loading {what} failed: {e}{verifier}"),
            ))
        }
    }
}

/// Map types ringvs creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_XSKMAP`: queue index → AF_XDP socket.
    Xsk,
}

/// A BPF map, closed on drop (programs that use it keep it alive in the kernel).
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// Creates a map of `max_entries` entries.
    pub fn create(
        kind: MapType,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
        name: &str,
    ) -> io::Result<Map> {
        const BPF_MAP_CREATE: libc::c_long = 0;
        let map_type = match kind {
            MapType::Hash => 1u32,
            MapType::Xsk => 17u32,
        };
        // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node,
        // map_name[16].
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, map_type);
        put32(&mut attr, 4, key_size as u32);
        put32(&mut attr, 8, value_size as u32);
        put32(&mut attr, 12, max_entries);
        put_name(&mut attr, 28, name);
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr).map_err(|e| {
            super::ctx(
                e,
                format!("creating BPF map {name} ({max_entries} entries)"),
            )
        })?;
        Ok(Map {
            fd: owned(fd),
            key_size,
            value_size,
        })
    }

    /// The map's descriptor (for [`Asm::ld_map_fd`]).
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    fn check(&self, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        if key.len() != self.key_size || value.is_some_and(|v| v.len() != self.value_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "BPF map: key or value of the wrong size",
            ));
        }
        Ok(())
    }

    /// Inserts or replaces `key`.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
        self.check(key, Some(value))?;
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put64(&mut attr, 8, key.as_ptr() as u64);
        put64(&mut attr, 16, value.as_ptr() as u64);
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Removes `key`; `Ok(false)` if it was not there.
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
        self.check(key, None)?;
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put64(&mut attr, 8, key.as_ptr() as u64);
        match sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every key of the map (for a hash map; order is the kernel's).
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
        let mut out = Vec::new();
        let mut next = vec![0u8; self.key_size];
        let mut cur: Option<Vec<u8>> = None;
        loop {
            let mut attr = [0u8; 128];
            put32(&mut attr, 0, self.fd.as_raw_fd() as u32);
            // A NULL key asks for the first one.
            put64(&mut attr, 8, cur.as_ref().map_or(0, |k| k.as_ptr() as u64));
            put64(&mut attr, 16, next.as_mut_ptr() as u64);
            match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => {
                    out.push(next.clone());
                    cur = Some(next.clone());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }
}

/// How an XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// The driver's hook (`XDP_FLAGS_DRV_MODE`): veth, and NICs with XDP support.
    Native,
    /// The generic hook in the stack (`XDP_FLAGS_SKB_MODE`): any interface, slower.
    Generic,
}

/// Attaches an XDP program to `ifindex` through a BPF link (`BPF_LINK_CREATE`). The program
/// stays attached exactly as long as the returned descriptor is open: when the process
/// exits, however it exits, the kernel closes it and detaches the program. A program already
/// attached to the interface (by anyone) makes this fail with `EBUSY`; it is never replaced.
pub fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32, mode: XdpMode) -> io::Result<OwnedFd> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    // prog_fd, target_ifindex, attach_type, flags.
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 4, ifindex);
    put32(&mut attr, 8, BPF_XDP);
    put32(
        &mut attr,
        12,
        match mode {
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        },
    );
    sys_bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_relative_offsets() {
        let mut a = Asm::default();
        let end = a.label();
        a.jmp_imm(JEQ, R1, 0, end);
        a.mov_imm(R0, 1);
        a.ld_imm64(R2, 0x1122_3344_5566_7788);
        a.bind(end);
        a.exit_with(2);
        let p = a.finish();
        assert_eq!(p[0].off, 3, "skips the mov and both slots of ld_imm64");
        assert_eq!(p[2].imm as u32, 0x5566_7788);
        assert_eq!(p[3].imm as u32, 0x1122_3344);
        jumps_are_forward_and_inside(&p).unwrap();
    }

    #[test]
    fn backward_or_outside_jumps_are_reported() {
        let p = [Insn {
            code: JMP | JA,
            regs: 0,
            off: -1,
            imm: 0,
        }];
        assert!(jumps_are_forward_and_inside(&p).is_err());
    }
}
