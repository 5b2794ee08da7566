//! SYN cookies: the initial sequence number of the proxy's SYN-ACK, which carries what the
//! handshake must remember so that the SYN leaves no state.
//!
//! The layout is Linux's (`secure_tcp_syn_cookie`, `net/ipv4/syncookies.c`):
//!
//! ```text
//! cookie = H1(tuple) + client_isn + (gen << 24) + ((H2(tuple, gen) + mss_index) mod 2^24)
//! ```
//!
//! `H1` is keyed with a secret fixed for the director's life, `H2` with a secret that
//! rotates every [`ROTATE_SECS`]: generation `g` uses `keys[g % 2]`, and a rotation to `g + 1`
//! replaces the key of `g - 1`. An ACK's cookie is checked against the generation its top
//! byte names, which must be the current one or the one before: after two rotations the key
//! that made it is gone and the cookie is refused. The low 24 bits leave 2 for the MSS index
//! and 22 that a forger must guess. Window scale and SACK-permitted do not fit; like Linux,
//! the proxy puts them in the low bits of the timestamp it sends ([`ts_encode`]), which the
//! client echoes — without timestamps the connection gets neither.

use crate::conn::HashKey;
use core::hash::Hasher;
use siphasher::sip::SipHasher13;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Seconds between rotations of the cookie secret.
pub const ROTATE_SECS: u32 = 64;

/// MSS values a cookie can carry (Linux's `msstab` for IPv4); the proxy offers the largest
/// not above the client's.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

/// Timestamp bits that carry options (Linux's `TSBITS`).
pub const TS_BITS: u32 = 6;
const TS_MASK: u32 = (1 << TS_BITS) - 1;
/// Window scale value in the timestamp bits meaning "none" (Linux's `TS_OPT_WSCALE_MASK`).
const TS_NO_WSCALE: u32 = 0xf;
const TS_SACK: u32 = 1 << 4;

/// A client → virtual service endpoint pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Client address.
    pub saddr: Ipv4Addr,
    /// Virtual address.
    pub daddr: Ipv4Addr,
    /// Client port.
    pub sport: u16,
    /// Virtual port.
    pub dport: u16,
}

/// Why an ACK's cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Made by a generation whose key is gone (two rotations or more ago), or forged.
    Stale,
    /// The right generation, the wrong hash: forged or corrupted.
    Forged,
}

/// The cookie secrets, shared by every queue (a client's ACK may reach another queue than
/// its SYN did).
pub struct CookieKeys {
    fixed: HashKey,
    keys: [[AtomicU64; 2]; 2],
    gen: AtomicU32,
    rotating: Mutex<()>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieKeys(generation {})", self.generation())
    }
}

fn key_cells(k: HashKey) -> [AtomicU64; 2] {
    [AtomicU64::new(k.0[0]), AtomicU64::new(k.0[1])]
}

impl CookieKeys {
    /// Fresh secrets from the operating system's random source, generation 0.
    pub fn new() -> CookieKeys {
        CookieKeys::with(HashKey::random(), [HashKey::random(), HashKey::random()])
    }

    /// Given secrets (tests).
    pub fn with(fixed: HashKey, keys: [HashKey; 2]) -> CookieKeys {
        CookieKeys {
            fixed,
            keys: [key_cells(keys[0]), key_cells(keys[1])],
            gen: AtomicU32::new(0),
            rotating: Mutex::new(()),
        }
    }

    /// The current generation.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.gen.load(Ordering::Acquire)
    }

    /// Moves to generation `to` if it is ahead (each step replaces the oldest key with a
    /// fresh random one). Cheap when there is nothing to do: every queue calls it.
    pub fn rotate_to(&self, to: u32) {
        // Generations wrap (after 2^32 rotations): "ahead" is a wrapping comparison.
        if to.wrapping_sub(self.generation()) as i32 <= 0 {
            return;
        }
        let Ok(_guard) = self.rotating.lock() else {
            return;
        };
        let mut g = self.generation();
        // Only the last two generations' keys matter: more steps replace both.
        while g != to {
            let next = if to.wrapping_sub(g) > 2 {
                to.wrapping_sub(1)
            } else {
                g.wrapping_add(1)
            };
            let k = HashKey::random();
            let cell = &self.keys[(next % 2) as usize];
            cell[0].store(k.0[0], Ordering::Relaxed);
            cell[1].store(k.0[1], Ordering::Relaxed);
            self.gen.store(next, Ordering::Release);
            g = next;
        }
    }

    #[inline]
    fn key(&self, gen: u32) -> (u64, u64) {
        let cell = &self.keys[(gen % 2) as usize];
        (
            cell[0].load(Ordering::Relaxed),
            cell[1].load(Ordering::Relaxed),
        )
    }

    #[inline]
    fn h1(&self, t: &Tuple) -> u32 {
        let mut h = SipHasher13::new_with_keys(self.fixed.0[0], self.fixed.0[1]);
        write_tuple(&mut h, t);
        h.finish() as u32
    }

    #[inline]
    fn h2(&self, t: &Tuple, gen: u32) -> u32 {
        let (k0, k1) = self.key(gen);
        let mut h = SipHasher13::new_with_keys(k0, k1);
        write_tuple(&mut h, t);
        h.write_u32(gen);
        h.finish() as u32
    }

    /// The cookie for a SYN with initial sequence number `isn` and MSS `mss` (the client's,
    /// 536 if it gave none): the cookie and the MSS it promises.
    pub fn make(&self, t: &Tuple, isn: u32, mss: u16) -> (u32, u16) {
        let index = MSS_TABLE.iter().rposition(|m| *m <= mss).unwrap_or(0);
        let gen = self.generation();
        let cookie = self
            .h1(t)
            .wrapping_add(isn)
            .wrapping_add((gen & 0xff) << 24)
            .wrapping_add(self.h2(t, gen).wrapping_add(index as u32) & 0x00ff_ffff);
        (cookie, MSS_TABLE[index])
    }

    /// Checks the cookie an ACK returns (`ack - 1`) for a client whose initial sequence
    /// number was `isn` (`seq - 1`): the MSS it promised, or why it is refused.
    pub fn check(&self, t: &Tuple, isn: u32, cookie: u32) -> Result<u16, Invalid> {
        let rest = cookie.wrapping_sub(self.h1(t)).wrapping_sub(isn);
        let g8 = rest >> 24;
        let cur = self.generation();
        let age = (cur & 0xff).wrapping_sub(g8) & 0xff;
        if age > 1 {
            return Err(Invalid::Stale);
        }
        let gen = cur.wrapping_sub(age);
        let index = (rest.wrapping_sub(self.h2(t, gen))) & 0x00ff_ffff;
        MSS_TABLE
            .get(index as usize)
            .copied()
            .ok_or(Invalid::Forged)
    }
}

impl Default for CookieKeys {
    fn default() -> Self {
        CookieKeys::new()
    }
}

#[inline]
fn write_tuple(h: &mut SipHasher13, t: &Tuple) {
    h.write_u64(u64::from(u32::from(t.saddr)) << 32 | u64::from(u32::from(t.daddr)));
    h.write_u32(u32::from(t.sport) << 16 | u32::from(t.dport));
}

/// What a cookie connection negotiated besides the MSS: the client's window scale and
/// SACK-permitted, which travel in the timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TsOptions {
    /// The client's window scale shift, if it offered one.
    pub wscale: Option<u8>,
    /// The client offered SACK.
    pub sack: bool,
}

impl TsOptions {
    /// The 6 option bits.
    pub fn bits(self) -> u32 {
        self.wscale.map_or(TS_NO_WSCALE, u32::from) | if self.sack { TS_SACK } else { 0 }
    }

    /// From the 6 option bits; `None` for a window scale above 14.
    pub fn from_bits(bits: u32) -> Option<TsOptions> {
        let ws = bits & 0xf;
        let wscale = match ws {
            TS_NO_WSCALE => None,
            0..=14 => Some(ws as u8),
            _ => return None,
        };
        Some(TsOptions {
            wscale,
            sack: bits & TS_SACK != 0,
        })
    }
}

/// The timestamp the proxy's SYN-ACK carries: derived from the cookie (so that it need not
/// be stored) with the options in its low [`TS_BITS`].
#[inline]
pub fn ts_encode(cookie: u32, opts: TsOptions) -> u32 {
    (cookie.rotate_left(13) ^ 0x5bd1_e995) & !TS_MASK | opts.bits()
}

/// The options a client's echoed timestamp (`tsecr`) carries, if it is the one
/// [`ts_encode`] made for `cookie`.
#[inline]
pub fn ts_decode(cookie: u32, tsecr: u32) -> Option<TsOptions> {
    let opts = TsOptions::from_bits(tsecr & TS_MASK)?;
    (ts_encode(cookie, opts) == tsecr).then_some(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CookieKeys {
        CookieKeys::with(HashKey([1, 2]), [HashKey([3, 4]), HashKey([5, 6])])
    }

    fn tuple(port: u16) -> Tuple {
        Tuple {
            saddr: Ipv4Addr::new(10, 77, 0, 2),
            daddr: Ipv4Addr::new(10, 77, 100, 100),
            sport: port,
            dport: 80,
        }
    }

    #[test]
    fn round_trip_with_the_mss_rounded_down() {
        let k = keys();
        for (mss, want) in [
            (1460, 1460),
            (1500, 1460),
            (1400, 1300),
            (100, 536),
            (9000, 1460),
        ] {
            let (c, m) = k.make(&tuple(1), 777, mss);
            assert_eq!(m, want);
            assert_eq!(k.check(&tuple(1), 777, c), Ok(want));
        }
    }

    #[test]
    fn another_tuple_or_isn_is_refused() {
        let k = keys();
        let (c, _) = k.make(&tuple(1), 777, 1460);
        assert!(k.check(&tuple(2), 777, c).is_err());
        assert!(k.check(&tuple(1), 777 + 100, c).is_err());
        assert!(k.check(&tuple(1), 777 ^ (1 << 24), c).is_err());
        // Flipping any bit of the cookie above the MSS index is refused. (The index's two
        // low bits decode another of the four MSS values, as in Linux's cookies: four of
        // the 2^24 low values are valid, which is what a forger must hit.)
        for bit in 2..32 {
            assert!(
                k.check(&tuple(1), 777, c ^ (1 << bit)).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn survives_one_rotation_not_two() {
        let k = keys();
        let (c, _) = k.make(&tuple(9), 1, 1460);
        k.rotate_to(1);
        assert_eq!(k.check(&tuple(9), 1, c), Ok(1460));
        k.rotate_to(2);
        assert_eq!(k.check(&tuple(9), 1, c), Err(Invalid::Stale));
        // A cookie made now is good.
        let (c, _) = k.make(&tuple(9), 1, 1460);
        assert_eq!(k.check(&tuple(9), 1, c), Ok(1460));
        // A jump of many generations leaves no old key valid.
        k.rotate_to(1000);
        assert!(k.check(&tuple(9), 1, c).is_err());
        assert_eq!(k.generation(), 1000);
    }

    #[test]
    fn forged_cookies_are_refused_almost_always() {
        let k = keys();
        let mut rng = crate::dataplane::testkit::Rng::new(5);
        let accepted = (0..200_000)
            .filter(|_| k.check(&tuple(3), 42, rng.next_u64() as u32).is_ok())
            .count();
        // 2 of 256 generations × 4 of 2^24 indices: ~0.1 expected.
        assert!(accepted <= 2, "{accepted} random cookies accepted");
    }

    #[test]
    fn timestamp_carries_the_options() {
        for opts in [
            TsOptions {
                wscale: Some(7),
                sack: true,
            },
            TsOptions {
                wscale: None,
                sack: true,
            },
            TsOptions {
                wscale: Some(0),
                sack: false,
            },
            TsOptions {
                wscale: Some(14),
                sack: false,
            },
        ] {
            let ts = ts_encode(0xdead_beef, opts);
            assert_eq!(ts_decode(0xdead_beef, ts), Some(opts));
            assert_eq!(
                ts_decode(0xdead_beee, ts),
                None,
                "another cookie's timestamp"
            );
        }
    }
}
