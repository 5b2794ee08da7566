//! Blocked source prefixes, set by defense plugins for a time, each for the service whose
//! defense asked. The control plane keeps the list and hands every queue a copy; a queue
//! checks it only while it is not empty, one hash lookup per distinct prefix length of the
//! packet's family (IPv4 and IPv6 prefixes are apart: `::/0` covers no IPv4 source). A
//! service holds at most [`ringvs_abi::MAX_BLOCKS`] blocks.

use crate::conn::{reached, Tick};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// How a blocked source is treated (the WIT's `block-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockMode {
    /// Every packet to a service dropped, established connections' too.
    Drop,
    /// New flows refused silently; established connections continue.
    Tarpit,
}

/// One block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Until this tick.
    pub until: Tick,
    /// How.
    pub mode: BlockMode,
    /// The plugin that asked.
    pub by: Arc<str>,
}

/// A block's place: service slot, family, prefix bits (masked; IPv4 in the low 32 bits) and
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    svc: u16,
    v6: bool,
    bits: u128,
    len: u8,
}

impl Key {
    /// The prefix of `a` of length `len` (at most the family's width) for service `svc`.
    #[inline]
    fn of(svc: u16, a: IpAddr, len: u8) -> Key {
        let (v6, bits) = match a {
            IpAddr::V4(a) => (false, u128::from(mask(a, len))),
            IpAddr::V6(a) => (true, mask6(a, len)),
        };
        Key {
            svc,
            v6,
            bits,
            len: len.min(if v6 { 128 } else { 32 }),
        }
    }

    fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.bits as u32))
        }
    }
}

/// Blocked IPv4 and IPv6 prefixes, per service slot. Every change costs O(1) (plus a walk
/// of the family's lengths when a prefix length appears or disappears): a defense may add
/// hundreds of blocks a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockList {
    entries: HashMap<Key, Block>,
    /// Blocks per service slot.
    per_svc: HashMap<u16, usize>,
    /// Blocks per prefix length, per family (IPv4, IPv6).
    per_len: [[u32; 129]; 2],
    /// The prefix lengths in use per family, longest first (what `lookup` tries).
    lens: [Vec<u8>; 2],
}

impl Default for BlockList {
    fn default() -> Self {
        BlockList {
            entries: HashMap::new(),
            per_svc: HashMap::new(),
            per_len: [[0; 129]; 2],
            lens: [Vec::new(), Vec::new()],
        }
    }
}

/// The prefix of `a` of length `len` (0..=32).
pub fn mask(a: Ipv4Addr, len: u8) -> u32 {
    let v = u32::from(a);
    if len == 0 {
        0
    } else {
        v & (u32::MAX << (32 - len.min(32) as u32))
    }
}

/// The prefix of `a` of length `len` (0..=128).
pub fn mask6(a: Ipv6Addr, len: u8) -> u128 {
    let v = u128::from(a);
    if len == 0 {
        0
    } else {
        v & (u128::MAX << (128 - len.min(128) as u32))
    }
}

impl BlockList {
    /// Adds or extends a block of service `svc`. False (nothing changed) if the service
    /// already holds [`ringvs_abi::MAX_BLOCKS`] others.
    pub fn insert(&mut self, svc: u16, addr: IpAddr, len: u8, block: Block) -> bool {
        let k = Key::of(svc, addr, len);
        match self.entries.get_mut(&k) {
            Some(b) if reached(b.until, block.until) && b.mode == block.mode => return true,
            Some(b) => *b = block,
            None => {
                if self.count(svc) >= ringvs_abi::MAX_BLOCKS {
                    return false;
                }
                self.entries.insert(k, block);
                self.counted(k, true);
            }
        }
        true
    }

    /// Blocks of service `svc`.
    pub fn count(&self, svc: u16) -> usize {
        self.per_svc.get(&svc).copied().unwrap_or(0)
    }

    /// Lifts a block of service `svc`; true if there was one.
    pub fn remove(&mut self, svc: u16, addr: IpAddr, len: u8) -> bool {
        let k = Key::of(svc, addr, len);
        let r = self.entries.remove(&k).is_some();
        if r {
            self.counted(k, false);
        }
        r
    }

    /// Drops blocks that ended before `now`; true if any did.
    pub fn expire(&mut self, now: Tick) -> bool {
        let mut gone = Vec::new();
        self.entries.retain(|k, b| {
            let keep = !reached(now, b.until);
            if !keep {
                gone.push(*k);
            }
            keep
        });
        for &k in &gone {
            self.counted(k, false);
        }
        !gone.is_empty()
    }

    /// Keeps the counts (and the lengths in use) in step with one block added or removed.
    fn counted(&mut self, k: Key, added: bool) {
        let n = self.per_svc.entry(k.svc).or_insert(0);
        let fam = usize::from(k.v6);
        let l = &mut self.per_len[fam][usize::from(k.len)];
        if added {
            *n += 1;
            *l += 1;
        } else {
            *n -= 1;
            *l -= 1;
            if *n == 0 {
                self.per_svc.remove(&k.svc);
            }
        }
        if *l <= 1 {
            // A length appeared or disappeared (or may have): rebuild, longest first.
            let width = if k.v6 { 128u8 } else { 32 };
            let per_len = &self.per_len[fam];
            self.lens[fam] = (0..=width)
                .rev()
                .filter(|&i| per_len[usize::from(i)] > 0)
                .collect();
        }
    }

    /// True if nothing is blocked.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The block of service `svc` covering `a` at `now`, the most specific first.
    #[inline]
    pub fn lookup(&self, svc: u16, a: impl Into<IpAddr>, now: Tick) -> Option<&Block> {
        let a = a.into();
        self.lens[usize::from(a.is_ipv6())]
            .iter()
            .filter_map(|&len| self.entries.get(&Key::of(svc, a, len)))
            .find(|b| !reached(now, b.until))
    }

    /// True if service `svc` has a block of exactly this prefix (expired or not).
    pub fn contains(&self, svc: u16, addr: IpAddr, len: u8) -> bool {
        self.entries.contains_key(&Key::of(svc, addr, len))
    }

    /// Forgets the blocks `other` has too (a queue's own blocks, once the director's list
    /// carries them).
    pub fn forget_those_in(&mut self, other: &BlockList) {
        let gone: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| other.entries.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            self.entries.remove(&k);
            self.counted(k, false);
        }
    }

    /// Every block: (service slot, prefix, length, block).
    pub fn iter(&self) -> impl Iterator<Item = (u16, IpAddr, u8, &Block)> {
        self.entries
            .iter()
            .map(|(k, b)| (k.svc, k.addr(), k.len, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queues_own_blocks_are_forgotten_once_the_directors_list_has_them() {
        let b = |until| Block {
            until,
            mode: BlockMode::Drop,
            by: "t".into(),
        };
        let (a, c) = ("10.1.0.0".parse().unwrap(), "10.2.0.0".parse().unwrap());
        let mut own = BlockList::default();
        assert!(own.insert(1, a, 16, b(100)) && own.insert(1, c, 16, b(100)));
        let mut director = BlockList::default();
        assert!(director.insert(1, a, 16, b(100)));
        assert!(director.contains(1, "10.1.9.9".parse().unwrap(), 16));
        own.forget_those_in(&director);
        assert_eq!((own.len(), own.count(1)), (1, 1));
        assert!(own.contains(1, c, 16) && !own.contains(1, a, 16));
        assert!(own
            .lookup(1, "10.2.3.4".parse::<IpAddr>().unwrap(), 0)
            .is_some());
        assert!(own
            .lookup(1, "10.1.3.4".parse::<IpAddr>().unwrap(), 0)
            .is_none());
    }

    #[test]
    fn a_service_holds_at_most_max_blocks() {
        let mut l = BlockList::default();
        for i in 0..ringvs_abi::MAX_BLOCKS as u32 {
            assert!(l.insert(
                3,
                Ipv4Addr::from(0x0b00_0000 + i).into(),
                32,
                b(100, BlockMode::Drop)
            ));
        }
        assert!(!l.insert(
            3,
            Ipv4Addr::new(10, 9, 9, 9).into(),
            32,
            b(100, BlockMode::Drop)
        ));
        // Extending one it has is fine; another service has its own room.
        assert!(l.insert(
            3,
            Ipv4Addr::from(0x0b00_0000).into(),
            32,
            b(200, BlockMode::Drop)
        ));
        assert!(l.insert(
            4,
            Ipv4Addr::new(10, 9, 9, 9).into(),
            32,
            b(100, BlockMode::Drop)
        ));
        assert_eq!((l.count(3), l.count(4)), (ringvs_abi::MAX_BLOCKS, 1));
    }

    fn b(until: Tick, mode: BlockMode) -> Block {
        Block {
            until,
            mode,
            by: "t".into(),
        }
    }

    #[test]
    fn prefixes_match_and_expire() {
        let mut l = BlockList::default();
        l.insert(
            1,
            Ipv4Addr::new(198, 51, 100, 77).into(),
            24,
            b(100, BlockMode::Tarpit),
        );
        l.insert(
            1,
            Ipv4Addr::new(198, 51, 100, 5).into(),
            32,
            b(50, BlockMode::Drop),
        );
        assert_eq!(
            l.lookup(1, Ipv4Addr::new(198, 51, 100, 5), 10)
                .map(|b| b.mode),
            Some(BlockMode::Drop)
        );
        assert_eq!(
            l.lookup(1, Ipv4Addr::new(198, 51, 100, 9), 10)
                .map(|b| b.mode),
            Some(BlockMode::Tarpit)
        );
        assert!(l.lookup(1, Ipv4Addr::new(198, 51, 101, 9), 10).is_none());
        // Another service is not blocked.
        assert!(l.lookup(2, Ipv4Addr::new(198, 51, 100, 5), 10).is_none());
        // The /32 has ended at 60, the /24 still covers it.
        assert_eq!(
            l.lookup(1, Ipv4Addr::new(198, 51, 100, 5), 60)
                .map(|b| b.mode),
            Some(BlockMode::Tarpit)
        );
        assert!(l.expire(60));
        assert_eq!(l.len(), 1);
        assert_eq!((l.count(1), l.lens[0].as_slice()), (1, &[24u8][..]));
        assert!(!l.remove(2, Ipv4Addr::new(198, 51, 100, 0).into(), 24));
        assert!(l.remove(1, Ipv4Addr::new(198, 51, 100, 0).into(), 24));
        assert!(l.is_empty());
        assert_eq!((l.count(1), l.lens[0].len()), (0, 0));
        assert_eq!(mask(Ipv4Addr::new(10, 1, 2, 3), 0), 0);
        assert_eq!(
            mask(Ipv4Addr::new(10, 1, 2, 3), 16),
            u32::from(Ipv4Addr::new(10, 1, 0, 0))
        );
    }

    #[test]
    fn ipv6_prefixes_match_and_families_stay_apart() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut l = BlockList::default();
        assert!(l.insert(1, ip("2001:db8:1:2:aaaa::1"), 64, b(100, BlockMode::Tarpit)));
        assert!(l.insert(1, ip("2001:db8:1:2::66"), 128, b(100, BlockMode::Drop)));
        let mode = |l: &BlockList, a: &str| l.lookup(1, ip(a), 10).map(|b| b.mode);
        assert_eq!(mode(&l, "2001:db8:1:2::66"), Some(BlockMode::Drop));
        assert_eq!(mode(&l, "2001:db8:1:2::67"), Some(BlockMode::Tarpit));
        assert_eq!(mode(&l, "2001:db8:1:3::66"), None);
        assert!(l.contains(1, ip("2001:db8:1:2:ffff::"), 64));
        assert_eq!(
            (l.lens[1].as_slice(), l.lens[0].len()),
            (&[128u8, 64][..], 0)
        );
        // Every IPv6 source, and no IPv4 one; every IPv4 source, and no IPv6 one.
        assert!(l.insert(2, ip("::"), 0, b(100, BlockMode::Drop)));
        assert!(l.lookup(2, ip("2001:db8::1"), 10).is_some());
        assert!(l.lookup(2, Ipv4Addr::new(192, 0, 2, 1), 10).is_none());
        assert!(l.lookup(2, ip("::ffff:192.0.2.1"), 10).is_some());
        assert!(l.insert(3, ip("0.0.0.0"), 0, b(100, BlockMode::Drop)));
        assert!(l.lookup(3, Ipv4Addr::new(192, 0, 2, 1), 10).is_some());
        assert!(l.lookup(3, ip("2001:db8::1"), 10).is_none());
        // The prefix as listed is the masked one.
        let listed: Vec<_> = l
            .iter()
            .filter(|x| x.0 == 1 && x.2 == 64)
            .map(|x| x.1)
            .collect();
        assert_eq!(listed, vec![ip("2001:db8:1:2::")]);
        assert!(l.remove(1, ip("2001:db8:1:2::"), 64));
        assert_eq!(mode(&l, "2001:db8:1:2::67"), None);
        assert_eq!(mask6(Ipv6Addr::LOCALHOST, 0), 0);
        assert_eq!(mask6(Ipv6Addr::LOCALHOST, 128), 1);
        assert_eq!(mask6(Ipv6Addr::LOCALHOST, 127), 0);
    }
}
