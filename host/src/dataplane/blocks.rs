//! Blocked source prefixes, set by defense plugins for a time. The control plane keeps the
//! director-wide list and hands every queue a copy; a queue checks it only while it is not
//! empty, one hash lookup per distinct prefix length.

use crate::conn::Tick;
use std::collections::HashMap;
use std::net::Ipv4Addr;
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

/// Blocked IPv4 prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockList {
    entries: HashMap<(u32, u8), Block>,
    lens: Vec<u8>,
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

impl BlockList {
    /// Adds or extends a block.
    pub fn insert(&mut self, addr: Ipv4Addr, len: u8, block: Block) {
        let k = (mask(addr, len), len);
        match self.entries.get_mut(&k) {
            Some(b) if b.until >= block.until && b.mode == block.mode => {}
            _ => {
                self.entries.insert(k, block);
            }
        }
        self.reindex();
    }

    /// Lifts a block; true if there was one.
    pub fn remove(&mut self, addr: Ipv4Addr, len: u8) -> bool {
        let r = self.entries.remove(&(mask(addr, len), len)).is_some();
        self.reindex();
        r
    }

    /// Drops blocks that ended before `now`; true if any did.
    pub fn expire(&mut self, now: Tick) -> bool {
        let before = self.entries.len();
        self.entries.retain(|_, b| b.until > now);
        let changed = self.entries.len() != before;
        if changed {
            self.reindex();
        }
        changed
    }

    fn reindex(&mut self) {
        let mut lens: Vec<u8> = self.entries.keys().map(|k| k.1).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        self.lens = lens;
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

    /// The block covering `a` at `now`, the most specific first.
    #[inline]
    pub fn lookup(&self, a: Ipv4Addr, now: Tick) -> Option<&Block> {
        self.lens
            .iter()
            .filter_map(|&len| self.entries.get(&(mask(a, len), len)))
            .find(|b| b.until > now)
    }

    /// Every block: (prefix, length, block).
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, u8, &Block)> {
        self.entries
            .iter()
            .map(|((p, l), b)| (Ipv4Addr::from(*p), *l, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Ipv4Addr::new(198, 51, 100, 77),
            24,
            b(100, BlockMode::Tarpit),
        );
        l.insert(Ipv4Addr::new(198, 51, 100, 5), 32, b(50, BlockMode::Drop));
        assert_eq!(
            l.lookup(Ipv4Addr::new(198, 51, 100, 5), 10).map(|b| b.mode),
            Some(BlockMode::Drop)
        );
        assert_eq!(
            l.lookup(Ipv4Addr::new(198, 51, 100, 9), 10).map(|b| b.mode),
            Some(BlockMode::Tarpit)
        );
        assert!(l.lookup(Ipv4Addr::new(198, 51, 101, 9), 10).is_none());
        // The /32 has ended at 60, the /24 still covers it.
        assert_eq!(
            l.lookup(Ipv4Addr::new(198, 51, 100, 5), 60).map(|b| b.mode),
            Some(BlockMode::Tarpit)
        );
        assert!(l.expire(60));
        assert_eq!(l.len(), 1);
        assert!(l.remove(Ipv4Addr::new(198, 51, 100, 0), 24));
        assert!(l.is_empty());
        assert_eq!(mask(Ipv4Addr::new(10, 1, 2, 3), 0), 0);
        assert_eq!(
            mask(Ipv4Addr::new(10, 1, 2, 3), 16),
            u32::from(Ipv4Addr::new(10, 1, 0, 0))
        );
    }
}
