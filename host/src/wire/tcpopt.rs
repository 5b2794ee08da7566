//! TCP options (RFC 9293 §3.1, RFC 7323, RFC 2018): the few the SYN proxy reads, writes and
//! translates — MSS, window scale, SACK-permitted, SACK blocks and timestamps.
//!
//! [`parse`] reads an option list without trusting it: a length that runs past the list, a
//! length below 2, or a known option of the wrong length is an error, never a panic.
//! [`Located`] remembers where the timestamps and SACK blocks are, so a translation rewrites
//! them in place; [`write_words`] changes 16-bit aligned or unaligned bytes of a segment and
//! keeps a complete checksum right (RFC 1624 over the aligned words they touch).

use super::{checksum, Error, Result};

/// Option kinds.
pub mod kind {
    /// End of the list.
    pub const EOL: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size (SYN only), length 4.
    pub const MSS: u8 = 2;
    /// Window scale (SYN only), length 3.
    pub const WSCALE: u8 = 3;
    /// SACK permitted (SYN only), length 2.
    pub const SACK_PERM: u8 = 4;
    /// SACK blocks, length 2 + 8 × n.
    pub const SACK: u8 = 5;
    /// Timestamps, length 10.
    pub const TIMESTAMP: u8 = 8;
}

/// Largest window scale shift (RFC 7323 §2.3).
pub const MAX_WSCALE: u8 = 14;

/// What a segment's options say, and where the translatable ones are (offsets into the
/// option list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Located {
    /// MSS.
    pub mss: Option<u16>,
    /// Window scale shift (capped at [`MAX_WSCALE`], as RFC 7323 says).
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_perm: bool,
    /// (TSval, TSecr).
    pub ts: Option<(u32, u32)>,
    /// Offset of TSval (TSecr follows at + 4).
    pub ts_at: usize,
    /// Offset of the first SACK block and the number of blocks.
    pub sack_at: Option<(usize, usize)>,
}

/// Reads an option list.
pub fn parse(opts: &[u8]) -> Result<Located> {
    let mut out = Located::default();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            kind::EOL => break,
            kind::NOP => {
                i += 1;
                continue;
            }
            k => {
                let len = usize::from(*opts.get(i + 1).ok_or(Error)?);
                if len < 2 || i + len > opts.len() {
                    return Err(Error);
                }
                let body = &opts[i + 2..i + len];
                match (k, len) {
                    (kind::MSS, 4) => out.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                    (kind::WSCALE, 3) => out.wscale = Some(body[0].min(MAX_WSCALE)),
                    (kind::SACK_PERM, 2) => out.sack_perm = true,
                    (kind::TIMESTAMP, 10) => {
                        out.ts = Some((be32(&body[0..4]), be32(&body[4..8])));
                        out.ts_at = i + 2;
                    }
                    (kind::SACK, l) if (l - 2) % 8 == 0 && l > 2 => {
                        out.sack_at = Some((i + 2, (l - 2) / 8));
                    }
                    (
                        kind::MSS | kind::WSCALE | kind::SACK_PERM | kind::TIMESTAMP | kind::SACK,
                        _,
                    ) => return Err(Error),
                    _ => {}
                }
                i += len;
            }
        }
    }
    Ok(out)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The options of a SYN or SYN-ACK this host writes, in Linux's order (MSS, SACK-permitted
/// and timestamps, then NOP + window scale), padded to a multiple of 4 with NOPs. Returns
/// the length written (at most 20).
pub fn emit_syn(
    out: &mut [u8; 20],
    mss: u16,
    sack_perm: bool,
    ts: Option<(u32, u32)>,
    wscale: Option<u8>,
) -> usize {
    let mut n = 0;
    out[..4].copy_from_slice(&[kind::MSS, 4, (mss >> 8) as u8, mss as u8]);
    n += 4;
    match (sack_perm, ts) {
        (true, Some((v, e))) => {
            out[n..n + 2].copy_from_slice(&[kind::SACK_PERM, 2]);
            out[n + 2..n + 4].copy_from_slice(&[kind::TIMESTAMP, 10]);
            out[n + 4..n + 8].copy_from_slice(&v.to_be_bytes());
            out[n + 8..n + 12].copy_from_slice(&e.to_be_bytes());
            n += 12;
        }
        (false, Some((v, e))) => {
            out[n..n + 2].copy_from_slice(&[kind::NOP, kind::NOP]);
            out[n + 2..n + 4].copy_from_slice(&[kind::TIMESTAMP, 10]);
            out[n + 4..n + 8].copy_from_slice(&v.to_be_bytes());
            out[n + 8..n + 12].copy_from_slice(&e.to_be_bytes());
            n += 12;
        }
        (true, None) => {
            out[n..n + 4].copy_from_slice(&[kind::NOP, kind::NOP, kind::SACK_PERM, 2]);
            n += 4;
        }
        (false, None) => {}
    }
    if let Some(ws) = wscale {
        out[n..n + 4].copy_from_slice(&[kind::NOP, kind::WSCALE, 3, ws.min(MAX_WSCALE)]);
        n += 4;
    }
    n
}

/// Option bytes of a plain segment with timestamps: NOP, NOP, TS (12 bytes).
pub fn emit_ts(v: u32, e: u32) -> [u8; 12] {
    let mut o = [
        kind::NOP,
        kind::NOP,
        kind::TIMESTAMP,
        10,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    o[4..8].copy_from_slice(&v.to_be_bytes());
    o[8..12].copy_from_slice(&e.to_be_bytes());
    o
}

/// Writes `new` at `at` in `seg` (a TCP segment whose checksum is at bytes 16..18), and,
/// when `full`, updates the complete checksum incrementally over the 16-bit words the
/// change touches — `at` may be odd. A partial checksum (offload) covers no header byte
/// and is left alone.
#[inline]
pub fn write_words(seg: &mut [u8], at: usize, new: &[u8], full: bool) {
    if !full {
        seg[at..at + new.len()].copy_from_slice(new);
        return;
    }
    let start = at & !1;
    let end = (at + new.len() + 1) & !1;
    let mut c = u16::from_be_bytes([seg[16], seg[17]]);
    let mut old = [0u8; 16];
    let span = end - start;
    debug_assert!(span <= old.len() && end <= seg.len());
    old[..span].copy_from_slice(&seg[start..end]);
    seg[at..at + new.len()].copy_from_slice(new);
    for k in (0..span).step_by(2) {
        let o = u16::from_be_bytes([old[k], old[k + 1]]);
        let n = u16::from_be_bytes([seg[start + k], seg[start + k + 1]]);
        if o != n {
            c = checksum::update16(c, o, n);
        }
    }
    seg[16..18].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's SYN options: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    const LINUX_SYN: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn parses_a_linux_syn() {
        let o = parse(&LINUX_SYN).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_perm);
        assert_eq!(o.ts, Some((0x1234, 0)));
        assert_eq!(o.ts_at, 8);
        assert_eq!(o.sack_at, None);
    }

    #[test]
    fn emit_then_parse_round_trips() {
        for (sack, ts, ws) in [
            (true, Some((7, 9)), Some(7)),
            (false, Some((7, 9)), None),
            (true, None, Some(0)),
            (false, None, None),
        ] {
            let mut b = [0u8; 20];
            let n = emit_syn(&mut b, 1400, sack, ts, ws);
            assert_eq!(n % 4, 0);
            let o = parse(&b[..n]).unwrap();
            assert_eq!(
                (o.mss, o.sack_perm, o.ts, o.wscale),
                (Some(1400), sack, ts, ws)
            );
        }
        let o = parse(&emit_ts(5, 6)).unwrap();
        assert_eq!((o.ts, o.ts_at), (Some((5, 6)), 4));
    }

    #[test]
    fn sack_blocks_are_located() {
        let o = parse(&[1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]).unwrap();
        assert_eq!(o.sack_at, Some((4, 2)));
    }

    #[test]
    fn hostile_lists_are_errors_not_panics() {
        for bad in [
            &[2u8][..],             // no length
            &[2, 1],                // length below 2
            &[8, 10, 0, 0],         // runs past the list
            &[2, 3, 0],             // MSS of the wrong length
            &[8, 6, 0, 0, 0, 0],    // timestamps of the wrong length
            &[5, 7, 0, 0, 0, 0, 0], // SACK not a whole block
            &[5, 2],                // SACK with no block
            &[30, 0],               // unknown kind, length 0
        ] {
            assert_eq!(parse(bad), Err(Error), "{bad:?}");
        }
        // Unknown kinds are skipped; EOL ends the list whatever follows.
        assert_eq!(parse(&[30, 3, 9, 0, 99]).unwrap(), Located::default());
        assert_eq!(parse(&[3, 3, 200]).unwrap().wscale, Some(MAX_WSCALE));
    }

    #[test]
    fn write_words_keeps_the_checksum_right_at_any_alignment() {
        use crate::wire::test_util::Rng;
        let mut rng = Rng::new(7);
        for at in 20..40 {
            let mut seg = vec![0u8; 64];
            for b in seg.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            seg[16] = 0;
            seg[17] = 0;
            let c = !checksum::data(&seg);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
            let new = (rng.next_u64() as u32).to_be_bytes();
            write_words(&mut seg, at, &new, true);
            assert_eq!(&seg[at..at + 4], &new);
            assert_eq!(checksum::data(&seg), 0xffff, "at {at}");
        }
    }
}
