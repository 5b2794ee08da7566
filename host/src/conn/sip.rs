//! SipHash-1-3 of the connection hash's messages: one at a time ([`one`], [`one_word`]) and a
//! batch's at once ([`many`]).
//!
//! A message is given as its 8-byte blocks, the last one already holding the message's
//! length and tail as SipHash pads it (an IPv4 key is one word: `[word, 8 << 56]`; an IPv6
//! key is two words and a 4-byte tail: `[lo, hi, 20 << 56 | tail]`). Both give exactly what
//! `SipHasher13` gives for the same bytes, without its generic buffering.
//!
//! [`many`] computes four hashes side by side, lane `j` of every state word (a 256-bit
//! register) belonging to message `j`: the same rounds as [`one`], with AVX-512VL's rotate
//! where the CPU has it, AVX2's shifts where it has only those (chosen at run time), one
//! message at a time elsewhere. Only 256-bit registers: 512-bit ones would lower the clock
//! of the whole core on some CPUs (Skylake-SP and Cascade Lake servers), the packet path's
//! included. A batch's hashes are independent of each other, so computing them side by side
//! changes no result, only the instructions it takes.

use super::table::HashKey;

/// SipHash's initialisation constants ("somepseudorandomlygeneratedbytes"), also what the
/// steering program (`io::steer`) starts its state from.
pub(crate) const INIT: [u64; 4] = [C0, C1, C2, C3];
const C0: u64 = 0x736f_6d65_7073_6575;
const C1: u64 = 0x646f_7261_6e64_6f6d;
const C2: u64 = 0x6c79_6765_6e65_7261;
const C3: u64 = 0x7465_6462_7974_6573;
/// The length block of an 8-byte message.
const B: u64 = 8u64 << 56;

/// One SipRound over state words `v0..v3`.
macro_rules! sip_round {
    ($v0:ident, $v1:ident, $v2:ident, $v3:ident) => {
        $v0 = $v0.wrapping_add($v1);
        $v1 = $v1.rotate_left(13) ^ $v0;
        $v0 = $v0.rotate_left(32);
        $v2 = $v2.wrapping_add($v3);
        $v3 = $v3.rotate_left(16) ^ $v2;
        $v0 = $v0.wrapping_add($v3);
        $v3 = $v3.rotate_left(21) ^ $v0;
        $v2 = $v2.wrapping_add($v1);
        $v1 = $v1.rotate_left(17) ^ $v2;
        $v2 = $v2.rotate_left(32);
    };
}

/// The blocks of an 8-byte message `m`.
#[inline(always)]
pub(super) fn word_blocks(m: u64) -> [u64; 2] {
    [m, B]
}

/// SipHash-1-3 of an 8-byte message under `key`.
#[inline(always)]
pub(crate) fn one_word(key: &HashKey, m: u64) -> u64 {
    one(key, word_blocks(m))
}

/// SipHash-1-3 under `key` of the message whose blocks are `m` (padded as the module docs
/// say).
#[inline(always)]
pub(crate) fn one<const W: usize>(key: &HashKey, m: [u64; W]) -> u64 {
    let (k0, k1) = (key.0[0], key.0[1]);
    let (mut v0, mut v1, mut v2, mut v3) = (k0 ^ C0, k1 ^ C1, k0 ^ C2, k1 ^ C3);
    for b in m {
        v3 ^= b;
        sip_round!(v0, v1, v2, v3);
        v0 ^= b;
    }
    v2 ^= 0xff;
    sip_round!(v0, v1, v2, v3);
    sip_round!(v0, v1, v2, v3);
    sip_round!(v0, v1, v2, v3);
    v0 ^ v1 ^ v2 ^ v3
}

/// `out[i] = one(key, m[i])` for every `i` of `m` (`out` at least as long).
#[inline]
pub(super) fn many<const W: usize>(key: &HashKey, m: &[[u64; W]], out: &mut [u64]) {
    assert!(out.len() >= m.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // Safety: the CPU has AVX-512F and AVX-512VL (checked just above).
            unsafe { many_avx512(key, m, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // Safety: the CPU has AVX2 (checked just above).
            unsafe { many_avx2(key, m, out) };
            return;
        }
    }
    many_one_by_one(key, m, out);
}

/// [`many`] one message at a time.
fn many_one_by_one<const W: usize>(key: &HashKey, m: &[[u64; W]], out: &mut [u64]) {
    for (o, &b) in out.iter_mut().zip(m) {
        *o = one(key, b);
    }
}

/// Rotates each 64-bit lane of `$x` left by `$n` bits, with AVX2: a shuffle for 32, two
/// shifts and an or otherwise.
#[cfg(target_arch = "x86_64")]
macro_rules! rotl_avx2 {
    ($x:expr, 32) => {
        _mm256_shuffle_epi32::<0b10_11_00_01>($x)
    };
    ($x:expr, $n:literal) => {
        _mm256_or_si256(
            _mm256_slli_epi64::<$n>($x),
            _mm256_srli_epi64::<{ 64 - $n }>($x),
        )
    };
}

/// The same with AVX-512VL's rotate (on 256-bit registers).
#[cfg(target_arch = "x86_64")]
macro_rules! rotl_avx512 {
    ($x:expr, $n:literal) => {
        _mm256_rol_epi64::<$n>($x)
    };
}

/// A [`many`] for four messages a time in 256-bit registers, rotating with `$rotl`,
/// compiled for the CPU features `$features`.
#[cfg(target_arch = "x86_64")]
macro_rules! many_x4 {
    ($(#[$doc:meta])* $name:ident, $features:literal, $rotl:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        fn $name<const W: usize>(key: &HashKey, m: &[[u64; W]], out: &mut [u64]) {
            use std::arch::x86_64::*;
            macro_rules! round {
                ($v0:ident, $v1:ident, $v2:ident, $v3:ident) => {
                    $v0 = _mm256_add_epi64($v0, $v1);
                    $v1 = _mm256_xor_si256($rotl!($v1, 13), $v0);
                    $v0 = $rotl!($v0, 32);
                    $v2 = _mm256_add_epi64($v2, $v3);
                    $v3 = _mm256_xor_si256($rotl!($v3, 16), $v2);
                    $v0 = _mm256_add_epi64($v0, $v3);
                    $v3 = _mm256_xor_si256($rotl!($v3, 21), $v0);
                    $v2 = _mm256_add_epi64($v2, $v1);
                    $v1 = _mm256_xor_si256($rotl!($v1, 17), $v2);
                    $v2 = $rotl!($v2, 32);
                };
            }
            let splat = |x: u64| _mm256_set1_epi64x(x as i64);
            let (k0, k1) = (key.0[0], key.0[1]);
            let mut chunks = m.chunks_exact(4);
            let mut at = 0;
            for c in &mut chunks {
                let (mut v0, mut v1) = (splat(k0 ^ C0), splat(k1 ^ C1));
                let (mut v2, mut v3) = (splat(k0 ^ C2), splat(k1 ^ C3));
                // Block `i` of the four messages, a lane each.
                let blocks: [[u64; 4]; W] =
                    std::array::from_fn(|i| [c[0][i], c[1][i], c[2][i], c[3][i]]);
                for [b0, b1, b2, b3] in blocks {
                    let b = _mm256_set_epi64x(b3 as i64, b2 as i64, b1 as i64, b0 as i64);
                    v3 = _mm256_xor_si256(v3, b);
                    round!(v0, v1, v2, v3);
                    v0 = _mm256_xor_si256(v0, b);
                }
                v2 = _mm256_xor_si256(v2, splat(0xff));
                round!(v0, v1, v2, v3);
                round!(v0, v1, v2, v3);
                round!(v0, v1, v2, v3);
                let h = _mm256_xor_si256(_mm256_xor_si256(v0, v1), _mm256_xor_si256(v2, v3));
                let mut lanes = [0u64; 4];
                // Safety: `lanes` is 32 bytes, what an unaligned 256-bit store writes.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), h) };
                out[at..at + 4].copy_from_slice(&lanes);
                at += 4;
            }
            many_one_by_one(key, chunks.remainder(), &mut out[at..]);
        }
    };
}

#[cfg(target_arch = "x86_64")]
many_x4!(
    /// [`many`] with AVX-512VL: a rotate instruction for every rotation.
    many_avx512,
    "avx2,avx512f,avx512vl",
    rotl_avx512
);

#[cfg(target_arch = "x86_64")]
many_x4!(
    /// [`many`] with AVX2.
    many_avx2,
    "avx2",
    rotl_avx2
);

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` xorshift words from `seed`.
    fn words(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    }

    /// Every length (whole lane groups, a remainder, none), blocks of both families' sizes,
    /// through the dispatcher and through each variant this CPU can run: each hash equal to
    /// [`one`]'s (itself checked against the reference for both families by
    /// `conn::tests::specialised_siphash_matches_the_reference` and
    /// `conn::tests::batch_hashes_match_each_tables_hash`).
    #[test]
    fn many_matches_one_each_every_length_every_variant() {
        fn check<const W: usize>(key: &HashKey, m: &[[u64; W]]) {
            type Many<const W: usize> = fn(&HashKey, &[[u64; W]], &mut [u64]);
            let mut variants: Vec<(&str, Many<W>)> =
                vec![("dispatch", many), ("one by one", many_one_by_one)];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // Safety: the CPU has AVX2 (checked just above).
                    variants.push(("avx2", |k, m, o| unsafe { many_avx2(k, m, o) }));
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // Safety: the CPU has AVX-512F/VL (checked just above).
                    variants.push(("avx512", |k, m, o| unsafe { many_avx512(k, m, o) }));
                }
            }
            for (name, f) in variants {
                for n in 0..=m.len() {
                    let mut out = vec![0u64; n + 1];
                    f(key, &m[..n], &mut out);
                    for i in 0..n {
                        assert_eq!(
                            out[i],
                            one(key, m[i]),
                            "{name}, {W} blocks: {n} messages, {i}"
                        );
                    }
                    assert_eq!(
                        out[n], 0,
                        "{name}, {W} blocks: {n} messages: wrote past them"
                    );
                }
            }
        }
        let key = HashKey([0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908]);
        let w = words(0x2545_f491_4f6c_dd1d, 3 * 29);
        let two: Vec<[u64; 2]> = w.chunks(3).map(|c| word_blocks(c[0])).collect();
        let three: Vec<[u64; 3]> = w.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        check(&key, &two);
        check(&key, &three);
    }
}
