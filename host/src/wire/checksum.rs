//! The Internet checksum: one's complement sum of big-endian 16-bit words (RFC 1071), and its
//! incremental update (RFC 1624).
//!
//! Vocabulary used throughout:
//!
//! - a *sum* is an accumulator ([`sum`]); it only means something modulo `0xFFFF`;
//! - a *folded* value is a sum reduced to 16 bits with end-around carries ([`fold`]), not
//!   complemented. A folded value is `0` only when every summed word was zero; otherwise it
//!   is in `1..=0xFFFF` (one's complement has two zeros, `0x0000` and `0xFFFF`, and folding
//!   a non-zero sum yields the "negative zero" `0xFFFF`, never `0x0000`);
//! - a *checksum field* holds the complement of the folded sum of everything it covers, so
//!   the folded sum over the covered bytes, checksum field included, is `0xFFFF` for valid data;
//! - a *partial* field (virtio-net `NEEDS_CSUM`, the kernel's `CHECKSUM_PARTIAL`) holds the
//!   folded pseudo-header sum, not complemented; whoever transmits the packet adds the
//!   transport header and payload and complements.
//!
//! Incremental updates use RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which never turns
//! a correct `0x0000` into `0xFFFF` (the flaw of RFC 1141's `HC - ~m - m'` that RFC 1624 §3
//! corrects). The one case where equation 3 yields `0xFFFF` (`HC = 0xFFFF`, `m = 0xFFFF`,
//! `m' = 0`) needs a checksum field of `0xFFFF`, which a full computation only produces when
//! every covered word is zero; UDP's "computed zero is sent as `0xFFFF`" is handled by
//! [`crate::wire::UdpPacket`].

use core::net::{Ipv4Addr, Ipv6Addr};

/// Folds a 64-bit accumulator to 16 bits with end-around carries.
#[inline]
fn fold64(acc: u64) -> u16 {
    // acc < 2^64 → s < 2^33 → s < 2^18 → s ≤ 0x10002 → s ≤ 0xFFFF.
    let s = (acc & 0xFFFF_FFFF) + (acc >> 32);
    let s = (s & 0xFFFF) + (s >> 16);
    let s = (s & 0xFFFF) + (s >> 16);
    let s = (s & 0xFFFF) + (s >> 16);
    s as u16
}

/// Accumulates `data` as big-endian 16-bit words; an odd trailing byte is padded with zero.
///
/// The result is already folded to at most `0xFFFF`, so up to 65,537 results can be added in
/// a `u32` before [`fold`]. Any slice length is handled (the internal 64-bit accumulator takes
/// 8 bytes per step and could only overflow beyond 16 GiB).
///
/// The words are added in the machine's byte order and the folded result swapped once at the
/// end (RFC 1071 §2(B): the one's complement sum of byte-swapped words is the byte-swapped
/// sum), which spares a swap per word on little-endian machines.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let hi = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        let lo = u32::from_ne_bytes([c[4], c[5], c[6], c[7]]);
        // Each 32-bit word is two 16-bit words; 2^16 ≡ 1 (mod 0xFFFF), so adding it whole is
        // the same one's complement sum.
        acc += u64::from(hi) + u64::from(lo);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        // The first byte of a word padded with zero, as the machine reads it.
        acc += u64::from(u16::from_ne_bytes([b, 0]));
    }
    u32::from(u16::from_be(fold64(acc)))
}

/// Changes to covered words, accumulated for one incremental update of a checksum field
/// (RFC 1624 eqn 3, `HC' = ~(~HC + Σ(~m + m'))`), however many fields changed: one fold and
/// one write of the field instead of one per field.
///
/// Words are taken as stored, in the machine's byte order, and the field is read and
/// written the same way (RFC 1071 §2(B)): no byte swap per word. Applying a `Delta` gives
/// exactly what the big-endian [`update16`] / [`update32`] / [`update_addr`] give applied
/// one after the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// A 16-bit field changes from `old` to `new` (bytes as in the packet).
    #[inline]
    pub fn bytes2(self, old: [u8; 2], new: [u8; 2]) -> Delta {
        Delta(self.0 + u64::from(!u16::from_ne_bytes(old)) + u64::from(u16::from_ne_bytes(new)))
    }

    /// A 16-bit aligned 32-bit field changes from `old` to `new`.
    #[inline]
    pub fn bytes4(self, old: [u8; 4], new: [u8; 4]) -> Delta {
        Delta(self.0 + u64::from(!u32::from_ne_bytes(old)) + u64::from(u32::from_ne_bytes(new)))
    }

    /// A pseudo-header address changes from `old` to `new`.
    #[inline]
    pub fn addr<A: PseudoAddr>(self, old: A, new: A) -> Delta {
        Delta(self.0 + old.ne_not_sum() + new.ne_sum())
    }

    /// A complete checksum field (its bytes as stored) after the changes.
    #[inline]
    pub fn apply(self, field: [u8; 2]) -> [u8; 2] {
        (!fold64(u64::from(!u16::from_ne_bytes(field)) + self.0)).to_ne_bytes()
    }

    /// A *partial* field (a folded pseudo-header sum, not complemented) after the changes.
    #[inline]
    pub fn apply_partial(self, field: [u8; 2]) -> [u8; 2] {
        fold64(u64::from(u16::from_ne_bytes(field)) + self.0).to_ne_bytes()
    }
}

/// Folds the carries of a sum into 16 bits. Not complemented.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xFFFF) + (sum >> 16);
    let s = (s & 0xFFFF) + (s >> 16);
    s as u16
}

/// The folded sum of `data`: `fold(sum(data))`. A checksum field is its complement.
#[inline]
pub fn data(data: &[u8]) -> u16 {
    fold(sum(data))
}

/// The one's complement sum of folded parts, folded.
#[inline]
pub fn combine(parts: &[u16]) -> u16 {
    fold64(parts.iter().map(|&p| u64::from(p)).sum())
}

/// The folded sum of the IPv4 TCP/UDP pseudo-header. Not complemented: this is what a
/// partial checksum field holds.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u16 {
    pseudo_header_for(src, dst, protocol, length)
}

/// An address that a TCP/UDP/ICMPv6 pseudo-header covers: IPv4's 4 bytes or IPv6's 16.
///
/// The transport views ([`crate::wire::TcpPacket`], [`crate::wire::UdpPacket`]) take either,
/// so one rewriter serves NAT44 and NAT66: IPv6 has no header checksum, and its transport
/// checksums cover the 128-bit addresses through the pseudo-header (RFC 8200 §8.1).
pub trait PseudoAddr: Copy {
    /// Whether a UDP checksum field of 0 means "no checksum" (IPv4) rather than a bad one
    /// (IPv6, RFC 8200 §8.1).
    const UDP_CHECKSUM_OPTIONAL: bool;
    /// The sum of the address's big-endian 16-bit words, unfolded (at most 8 × `0xFFFF`).
    fn word_sum(self) -> u32;
    /// The sum of the complements of those words, unfolded.
    fn not_word_sum(self) -> u32;
    /// The address's bytes as 32-bit words in the machine's byte order, summed (for
    /// [`Delta`]).
    fn ne_sum(self) -> u64;
    /// The complements of those words, summed.
    fn ne_not_sum(self) -> u64;
}

impl PseudoAddr for Ipv4Addr {
    const UDP_CHECKSUM_OPTIONAL: bool = true;

    #[inline]
    fn word_sum(self) -> u32 {
        words32(self.octets())
    }

    #[inline]
    fn not_word_sum(self) -> u32 {
        not_words32(self.octets())
    }

    #[inline]
    fn ne_sum(self) -> u64 {
        u64::from(u32::from_ne_bytes(self.octets()))
    }

    #[inline]
    fn ne_not_sum(self) -> u64 {
        u64::from(!u32::from_ne_bytes(self.octets()))
    }
}

impl PseudoAddr for Ipv6Addr {
    const UDP_CHECKSUM_OPTIONAL: bool = false;

    #[inline]
    fn word_sum(self) -> u32 {
        self.segments().iter().map(|&w| u32::from(w)).sum()
    }

    #[inline]
    fn not_word_sum(self) -> u32 {
        self.segments().iter().map(|&w| u32::from(!w)).sum()
    }

    #[inline]
    fn ne_sum(self) -> u64 {
        let o = self.octets();
        o.chunks_exact(4)
            .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .sum()
    }

    #[inline]
    fn ne_not_sum(self) -> u64 {
        let o = self.octets();
        o.chunks_exact(4)
            .map(|w| u64::from(!u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .sum()
    }
}

/// The folded sum of a TCP/UDP/ICMPv6 pseudo-header for either family: source and
/// destination address, protocol, and the transport length (IPv6's layout has a 32-bit
/// upper-layer length and the next header in the last of 4 bytes; both layouts sum the same).
/// Not complemented.
#[inline]
pub fn pseudo_header_for<A: PseudoAddr>(src: A, dst: A, protocol: u8, length: u32) -> u16 {
    let acc = u64::from(src.word_sum())
        + u64::from(dst.word_sum())
        + u64::from(protocol)
        + u64::from(length >> 16)
        + u64::from(length & 0xFFFF);
    fold64(acc)
}

/// Updates a checksum field for a pseudo-header address changing from `old` to `new` (RFC
/// 1624 eqn 3 over each of its words).
#[inline]
pub fn update_addr<A: PseudoAddr>(check: u16, old: A, new: A) -> u16 {
    let acc = u64::from(!check) + u64::from(old.not_word_sum()) + u64::from(new.word_sum());
    !fold64(acc)
}

/// Updates a *partial* field for a pseudo-header address changing from `old` to `new`.
#[inline]
pub fn update_partial_addr<A: PseudoAddr>(field: u16, old: A, new: A) -> u16 {
    let acc = u64::from(field) + u64::from(old.not_word_sum()) + u64::from(new.word_sum());
    fold64(acc)
}

/// The two big-endian words of a 32-bit field, added.
#[inline]
fn words32(v: [u8; 4]) -> u32 {
    u32::from(u16::from_be_bytes([v[0], v[1]])) + u32::from(u16::from_be_bytes([v[2], v[3]]))
}

/// The complements of the two big-endian words of a 32-bit field, added.
#[inline]
fn not_words32(v: [u8; 4]) -> u32 {
    u32::from(!u16::from_be_bytes([v[0], v[1]])) + u32::from(!u16::from_be_bytes([v[2], v[3]]))
}

/// Updates a checksum field `check` for a covered 16-bit word changing from `old` to `new`
/// (RFC 1624 eqn 3: `~(~HC + ~m + m')`).
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// Updates a checksum field `check` for a covered, 16-bit aligned 32-bit field (an IPv4
/// address) changing from `old` to `new`.
#[inline]
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    !fold(u32::from(!check) + not_words32(old) + words32(new))
}

/// Updates a *partial* field (a folded pseudo-header sum, not complemented) for a
/// pseudo-header word changing from `old` to `new`: `fold(field + ~old + new)`.
#[inline]
pub fn update_partial16(field: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(field) + u32::from(!old) + u32::from(new))
}

/// Updates a *partial* field for a 32-bit pseudo-header field (an IPv4 address) changing
/// from `old` to `new`.
#[inline]
pub fn update_partial32(field: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    fold(u32::from(field) + not_words32(old) + words32(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::Rng;

    /// The straightforward definition: word by word, fold at the end.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for pair in data.chunks(2) {
            let w = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            acc += u64::from(w);
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2, the checksum 220d.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(!data(&bytes), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0xab]), 0x12 * 256 + 0x34 + 0xab00);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn fold_edges() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xFFFF), 0xFFFF);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_FFFE), 0xFFFF);
        assert_eq!(fold(u32::MAX), 0xFFFF);
        assert_eq!(combine(&[0xFFFF, 0xFFFF, 0x0002]), 0x0002);
        assert_eq!(combine(&[]), 0);
    }

    #[test]
    fn sum_matches_reference_for_all_lengths_and_offsets() {
        let mut rng = Rng::new(0x5eed_0001);
        let mut buf = [0u8; 2048];
        rng.fill(&mut buf);
        for start in 0..9 {
            for len in 0..300 {
                let d = &buf[start..start + len];
                assert_eq!(data(d), reference_sum(d), "start {start} len {len}");
            }
        }
        assert_eq!(data(&buf), reference_sum(&buf));
    }

    #[test]
    fn sum_of_large_buffers() {
        // 70,000 bytes of 0xFF: 35,000 words of 0xFFFF; the accumulator carries a lot.
        let big = [0xFFu8; 70_000];
        assert_eq!(data(&big), 0xFFFF);
        assert_eq!(data(&big), reference_sum(&big));
        let mut rng = Rng::new(7);
        let mut big = [0u8; 65_537];
        rng.fill(&mut big);
        assert_eq!(data(&big), reference_sum(&big));
        // sum() results stay small enough to add many of them in a u32.
        assert!(sum(&big) <= 0xFFFF);
    }

    #[test]
    fn pseudo_header_v4_by_hand() {
        // 10.1.0.2 → 10.1.0.1, TCP, 40 bytes: the partial field of a real Linux SYN sent
        // through a TUN device with checksum offload (see tcp::tests).
        let p = pseudo_header_v4(
            Ipv4Addr::new(10, 1, 0, 2),
            Ipv4Addr::new(10, 1, 0, 1),
            6,
            40,
        );
        assert_eq!(p, 0x1433);
        // A length above 16 bits adds both halves.
        assert_eq!(
            pseudo_header_for(
                Ipv6Addr::UNSPECIFIED,
                Ipv6Addr::UNSPECIFIED,
                17,
                0x0001_0002
            ),
            17 + 1 + 2
        );
    }

    #[test]
    fn rfc1624_section3_example() {
        // RFC 1624 §3: HC = 0xDD2F, m = 0x5555 → m' = 0x3285. The new header sums to
        // 0xFFFF, so the correct new checksum is 0x0000; RFC 1141's eqn 2 gave 0xFFFF.
        assert_eq!(update16(0xDD2F, 0x5555, 0x3285), 0x0000);
        // The same on real data: two words [m, rest] with rest = 0xCD7A.
        let mut d = [0x55, 0x55, 0xCD, 0x7A, 0, 0];
        let c = !data(&d);
        assert_eq!(c, 0xDD2F);
        d[4..6].copy_from_slice(&c.to_be_bytes());
        d[0..2].copy_from_slice(&0x3285u16.to_be_bytes());
        let updated = update16(c, 0x5555, 0x3285);
        d[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(updated, !data(&d));
        // And the partial variant is a plain one's complement add.
        assert_eq!(update_partial16(0x1433, 0x0a01, 0x0a02), 0x1434);
        assert_eq!(update_partial16(0xFFFF, 0x0001, 0x0001), 0xFFFF);
    }

    /// Random buffers with a checksum field at word `at`: changing any other word with
    /// `update16` gives exactly what a full recomputation gives, including when the new sum
    /// is the negative zero and the new checksum must be `0x0000`.
    #[test]
    fn update16_equals_recomputation() {
        let mut rng = Rng::new(0x1624);
        let mut buf = [0u8; 64];
        for round in 0..20_000 {
            let words = 2 + rng.below(31) as usize;
            let d = &mut buf[..words * 2];
            rng.fill(d);
            let at = rng.below(words as u64) as usize * 2;
            d[at..at + 2].copy_from_slice(&[0, 0]);
            let check = !data(d);
            d[at..at + 2].copy_from_slice(&check.to_be_bytes());
            let mut w = rng.below(words as u64) as usize * 2;
            if w == at {
                w = (w + 2) % (words * 2);
            }
            let old = u16::from_be_bytes([d[w], d[w + 1]]);
            let new = match round % 4 {
                0 => 0x0000,
                1 => 0xFFFF,
                2 => {
                    // Make the new sum exactly 0xFFFF: new checksum 0x0000.
                    d[at..at + 2].copy_from_slice(&[0, 0]);
                    d[w..w + 2].copy_from_slice(&[0, 0]);
                    let others = data(d);
                    d[at..at + 2].copy_from_slice(&check.to_be_bytes());
                    d[w..w + 2].copy_from_slice(&old.to_be_bytes());
                    !others
                }
                _ => rng.next_u64() as u16,
            };
            let updated = update16(check, old, new);
            d[w..w + 2].copy_from_slice(&new.to_be_bytes());
            d[at..at + 2].copy_from_slice(&[0, 0]);
            let fresh = !data(d);
            // All-zero data is the one case eqn 3 cannot get right (it gives 0x0000 where a
            // full computation gives 0xFFFF); no IP, TCP or UDP header is all zero.
            if d.iter().all(|&b| b == 0) {
                assert_eq!((updated, fresh), (0x0000, 0xFFFF));
                continue;
            }
            assert_eq!(updated, fresh, "round {round}");
            if round % 4 == 2 {
                assert_eq!(fresh, 0x0000, "round {round}");
            }
            d[at..at + 2].copy_from_slice(&updated.to_be_bytes());
            assert_eq!(data(d), 0xFFFF, "round {round}");
        }
    }

    #[test]
    fn update32_equals_two_update16() {
        let mut rng = Rng::new(32);
        for _ in 0..10_000 {
            let check = rng.next_u64() as u16;
            let old = (rng.next_u64() as u32).to_be_bytes();
            let new = (rng.next_u64() as u32).to_be_bytes();
            let w = |v: [u8; 4], i: usize| u16::from_be_bytes([v[i], v[i + 1]]);
            let two = update16(update16(check, w(old, 0), w(new, 0)), w(old, 2), w(new, 2));
            let one = update32(check, old, new);
            assert_eq!(one, two, "check {check:04x} {old:?} → {new:?}");
            let p = rng.next_u64() as u16 | 1;
            let two = update_partial16(
                update_partial16(p, w(old, 0), w(new, 0)),
                w(old, 2),
                w(new, 2),
            );
            assert_eq!(update_partial32(p, old, new), two);
        }
    }

    /// A `Delta` of several fields, applied once to the bytes of a field, is the big-endian
    /// updates applied one after the other: complete and partial fields, both families'
    /// addresses, and the field values where one's complement has two zeros.
    #[test]
    fn delta_equals_the_updates_one_by_one() {
        let mut rng = Rng::new(0xde17a);
        for round in 0..20_000 {
            let check = match round % 5 {
                0 => 0x0000,
                1 => 0xFFFF,
                _ => rng.next_u64() as u16,
            };
            let (a, b) = (
                (rng.next_u64() as u32).to_be_bytes(),
                (rng.next_u64() as u32).to_be_bytes(),
            );
            let (p, q) = (rng.next_u64() as u16, rng.next_u64() as u16);
            let (x, y) = (
                Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())),
                Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())),
            );
            let d = Delta::default()
                .bytes4(a, b)
                .bytes2(p.to_be_bytes(), q.to_be_bytes())
                .addr(x, y);
            let one_by_one = update_addr(update16(update32(check, a, b), p, q), x, y);
            assert_eq!(
                d.apply(check.to_be_bytes()),
                one_by_one.to_be_bytes(),
                "round {round}"
            );
            let (v, w) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let partial = update_partial_addr(check, v, w);
            assert_eq!(
                Delta::default()
                    .addr(v, w)
                    .apply_partial(check.to_be_bytes()),
                partial.to_be_bytes(),
                "round {round}"
            );
            assert_eq!(
                Delta::default().apply(check.to_be_bytes()),
                check.to_be_bytes()
            );
        }
    }

    /// The pseudo-header laid out as RFC 8200 §8.1 draws it, summed as bytes.
    fn pseudo_header_v6_bytes(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, len: u32) -> u16 {
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&src.octets());
        b[16..32].copy_from_slice(&dst.octets());
        b[32..36].copy_from_slice(&len.to_be_bytes());
        b[39] = protocol;
        data(&b)
    }

    #[test]
    fn address_updates_equal_a_fresh_sum_for_both_families() {
        let mut rng = Rng::new(0x66);
        for _ in 0..10_000 {
            let (a, b) = (rng.next_u64(), rng.next_u64());
            let (x, y) = (
                Ipv6Addr::from(u128::from(a) << 64 | u128::from(b)),
                Ipv6Addr::from(u128::from(b) << 64 | u128::from(a.rotate_left(7))),
            );
            let other = Ipv6Addr::from(u128::from(a ^ b) << 32);
            let len = (b >> 48) as u32;
            let p = pseudo_header_for(x, other, 6, len);
            assert_eq!(p, pseudo_header_v6_bytes(x, other, 6, len));
            // A checksum field over the pseudo-header and some data, then the source moved.
            let body = !combine(&[p, a as u16]);
            let moved = update_addr(body, x, y);
            assert_eq!(
                moved,
                !combine(&[pseudo_header_for(y, other, 6, len), a as u16])
            );
            let partial = update_partial_addr(p, x, y);
            assert_eq!(partial, pseudo_header_for(y, other, 6, len));
            // IPv4: the same as the 32-bit helpers.
            let (o, n) = (Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32));
            let check = (a >> 32) as u16;
            assert_eq!(
                update_addr(check, o, n),
                update32(check, o.octets(), n.octets())
            );
            assert_eq!(
                update_partial_addr(check | 1, o, n),
                update_partial32(check | 1, o.octets(), n.octets())
            );
        }
    }
}
