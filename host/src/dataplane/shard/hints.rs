//! What [`Pipeline::prefetch`](super::Pipeline::prefetch) learns about a batch, kept for
//! [`Pipeline::process`](super::Pipeline::process).
//!
//! Prefetching a packet's bucket needs its keyed hash (SipHash-1-3 of the client endpoint);
//! the lookup in `process` needs the same hash. [`Hints`] keeps, per packet of the batch
//! shown, the flow key read and the hash computed, and `process` takes the hint of its
//! position in the batch **only if the key is the packet's own**: a packet processed out of
//! turn (a reassembled datagram, one handed over by another queue, a batch the backend cut
//! short) finds a key that is not its and computes its hash itself. A hint can make a packet
//! cheaper, never give it another result.

use crate::conn::ConnTable;
use crate::wire::ip_proto;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Most packets of a batch looked at ahead.
pub(super) const BATCH: usize = 64;

/// A flow's key in its family's table: `(protocol, client address, client port)`. The
/// default (protocol 0) is the key of no TCP or UDP packet: "no hint".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct FlowKey {
    addr: u128,
    /// The port (bits 0..16), the protocol (16..24) and the family (bit 24 set for IPv6) in
    /// one word, so that two keys compare in two steps (this word and the address).
    tag: u32,
}

/// [`FlowKey::tag`]'s family bit.
const TAG_V6: u32 = 1 << 24;

impl FlowKey {
    #[inline]
    pub fn v4(proto: u8, addr: Ipv4Addr, port: u16) -> Self {
        FlowKey {
            addr: u128::from(u32::from(addr)),
            tag: u32::from(proto) << 16 | u32::from(port),
        }
    }

    #[inline]
    pub fn v6(proto: u8, addr: Ipv6Addr, port: u16) -> Self {
        FlowKey {
            addr: u128::from(addr),
            tag: TAG_V6 | u32::from(proto) << 16 | u32::from(port),
        }
    }

    pub fn proto(&self) -> u8 {
        (self.tag >> 16) as u8
    }

    pub fn port(&self) -> u16 {
        self.tag as u16
    }

    /// The table key of a packet's client endpoint, read without validation: the endpoint
    /// of `(src, sport)` if `inbound(proto, dst, dport)` says the packet goes to a virtual
    /// service, else of `(dst, dport)` (a reply from a realserver). `None` for what is not
    /// TCP or UDP right after a plain IP header.
    #[inline]
    pub fn read(
        d: &[u8],
        inbound4: impl Fn(u8, Ipv4Addr, u16) -> bool,
        inbound6: impl Fn(u8, Ipv6Addr, u16) -> bool,
    ) -> Option<Self> {
        let version = d.first()? >> 4;
        let ports = |at: usize| -> Option<(u16, u16)> {
            let p = d.get(at..at + 4)?;
            Some((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ))
        };
        let l4 = |proto: u8| proto == ip_proto::TCP || proto == ip_proto::UDP;
        match version {
            4 => {
                let ihl = usize::from(d[0] & 0x0f) * 4;
                let proto = *d.get(9)?;
                if !l4(proto) || ihl < 20 {
                    return None;
                }
                let (sport, dport) = ports(ihl)?;
                let src = Ipv4Addr::from(<[u8; 4]>::try_from(&d[12..16]).ok()?);
                let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&d[16..20]).ok()?);
                Some(if inbound4(proto, dst, dport) {
                    FlowKey::v4(proto, src, sport)
                } else {
                    FlowKey::v4(proto, dst, dport)
                })
            }
            6 => {
                let proto = *d.get(6)?;
                if !l4(proto) {
                    return None;
                }
                let (sport, dport) = ports(40)?;
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&d[8..24]).ok()?);
                let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&d[24..40]).ok()?);
                Some(if inbound6(proto, dst, dport) {
                    FlowKey::v6(proto, src, sport)
                } else {
                    FlowKey::v6(proto, dst, dport)
                })
            }
            _ => None,
        }
    }

    pub fn is_v6(&self) -> bool {
        self.tag & TAG_V6 != 0
    }

    pub fn addr4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr as u32)
    }

    pub fn addr6(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }
}

/// The hashes of the last batch shown to `prefetch`, by position.
///
/// [`Hints::set`] records a position's key; [`Hints::hash`] then hashes the keys of each
/// family side by side (the connection tables' `hash_many`) and prefetches their buckets.
/// The keys waiting for their hash are kept here between batches, so that no batch pays for
/// clearing them.
pub(super) struct Hints {
    keys: [FlowKey; BATCH],
    hashes: [u32; BATCH],
    /// Positions whose hints can be taken: those recorded before the last [`Hints::hash`]
    /// (0: no batch shown, nothing to take).
    len: usize,
    /// Positions recorded since [`Hints::start`].
    shown: usize,
    /// Position of the packet `process` is at (`usize::MAX` before the first).
    at: usize,
    /// The IPv4 keys set since [`Hints::start`], as hash blocks, and their positions.
    pending4: Pending<2>,
    /// The same for IPv6.
    pending6: Pending<3>,
    /// Hashes of one family's pending keys, in their order.
    out: [u64; BATCH],
    /// Hints taken (tests check that the path they test is the hinted one).
    #[cfg(test)]
    pub taken: std::cell::Cell<u64>,
}

/// Keys of one family waiting for their hash: each as its `W` hash blocks, with its
/// position in the batch.
struct Pending<const W: usize> {
    blocks: [[u64; W]; BATCH],
    at: [u8; BATCH],
    n: usize,
}

// A u8 holds any position of a batch.
const _: () = assert!(BATCH <= 256);

impl<const W: usize> Pending<W> {
    fn new() -> Self {
        Pending {
            blocks: [[0; W]; BATCH],
            at: [0; BATCH],
            n: 0,
        }
    }

    #[inline]
    fn push(&mut self, i: usize, blocks: [u64; W]) {
        self.blocks[self.n] = blocks;
        self.at[self.n] = i as u8;
        self.n += 1;
    }

    /// Hashes the keys pushed (`hash_many`, into `out`), asks for each one's bucket
    /// (`prefetch`), records each hash at its key's position of `hashes`, and empties.
    #[inline]
    fn hash(
        &mut self,
        out: &mut [u64; BATCH],
        hashes: &mut [u32; BATCH],
        hash_many: impl FnOnce(&[[u64; W]], &mut [u64]),
        prefetch: impl Fn(u32),
    ) {
        let n = std::mem::take(&mut self.n);
        if n == 0 {
            return;
        }
        hash_many(&self.blocks[..n], &mut out[..n]);
        for (&i, &h) in self.at[..n].iter().zip(&out[..n]) {
            prefetch(h as u32);
            hashes[usize::from(i)] = h as u32;
        }
    }
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            keys: [FlowKey::default(); BATCH],
            hashes: [0; BATCH],
            len: 0,
            shown: 0,
            at: usize::MAX,
            pending4: Pending::new(),
            pending6: Pending::new(),
            out: [0; BATCH],
            #[cfg(test)]
            taken: Default::default(),
        }
    }
}

impl Hints {
    /// Forgets the previous batch: the next [`Hints::next`] is at position 0.
    #[inline]
    pub fn start(&mut self) {
        self.len = 0;
        self.shown = 0;
        self.at = usize::MAX;
        self.pending4.n = 0;
        self.pending6.n = 0;
    }

    /// Records position `i`'s key (`i < BATCH`, each position once per batch); its hash
    /// comes with [`Hints::hash`], and until then no hint of the batch can be taken.
    #[inline]
    pub fn set(&mut self, i: usize, key: FlowKey) {
        self.keys[i] = key;
        self.shown = self.shown.max(i + 1);
        if key.is_v6() {
            let b = ConnTable::<Ipv6Addr>::flow_blocks(key.proto(), key.addr6(), key.port());
            self.pending6.push(i, b);
        } else {
            let b = ConnTable::<Ipv4Addr>::flow_blocks(key.proto(), key.addr4(), key.port());
            self.pending4.push(i, b);
        }
    }

    /// Hashes the keys [`Hints::set`] recorded, each family's side by side in its table,
    /// and asks the CPU to start loading their buckets. An IPv6 key with no IPv6 table
    /// leaves no hint.
    #[inline]
    pub fn hash(&mut self, t4: &ConnTable<Ipv4Addr>, t6: Option<&ConnTable<Ipv6Addr>>) {
        let (out, hashes) = (&mut self.out, &mut self.hashes);
        self.pending4.hash(
            out,
            hashes,
            |m, o| t4.hash_many(m, o),
            |h| t4.prefetch_bucket(h),
        );
        match t6 {
            Some(t6) => {
                self.pending6.hash(
                    out,
                    hashes,
                    |m, o| t6.hash_many(m, o),
                    |h| t6.prefetch_bucket(h),
                );
            }
            None => {
                for &i in &self.pending6.at[..std::mem::take(&mut self.pending6.n)] {
                    self.keys[usize::from(i)] = FlowKey::default();
                }
            }
        }
        self.len = self.shown;
    }

    /// Clears position `i`: a packet with no hint (`i < BATCH`).
    #[inline]
    pub fn clear(&mut self, i: usize) {
        self.keys[i] = FlowKey::default();
        self.shown = self.shown.max(i + 1);
    }

    /// The key and hash recorded at position `i`, if any.
    #[inline]
    pub fn at(&self, i: usize) -> Option<(FlowKey, u32)> {
        (i < self.len && self.keys[i].proto() != 0).then(|| (self.keys[i], self.hashes[i]))
    }

    /// Moves to the next packet (called once per packet `process` is given).
    #[inline]
    pub fn next(&mut self) {
        self.at = self.at.wrapping_add(1);
    }

    /// The hash of `key` if the current packet's hint is for it.
    #[inline]
    pub fn hash_of(&self, key: FlowKey) -> Option<u32> {
        let i = self.at;
        let hit = i < self.len && self.keys[i] == key;
        #[cfg(test)]
        self.taken.set(self.taken.get() + u64::from(hit));
        hit.then(|| self.hashes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testkit::{tcp, udp6};
    use crate::wire::tcp::flags as tf;
    use std::net::{SocketAddrV4, SocketAddrV6};

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 0x100);

    fn is_vip4(_: u8, a: Ipv4Addr, port: u16) -> bool {
        a == VIP && port == 80
    }

    fn is_vip6(_: u8, a: Ipv6Addr, port: u16) -> bool {
        a == VIP6 && port == 53
    }

    #[test]
    fn reads_the_client_endpoint_of_either_direction_and_family() {
        let client = Ipv4Addr::new(10, 77, 1, 2);
        let rs = Ipv4Addr::new(10, 77, 2, 1);
        let v4 = SocketAddrV4::new;
        let to_vip = tcp(v4(client, 40000), v4(VIP, 80), tf::ACK, &[]);
        assert_eq!(
            FlowKey::read(&to_vip, is_vip4, is_vip6),
            Some(FlowKey::v4(ip_proto::TCP, client, 40000))
        );
        let reply = tcp(v4(rs, 8080), v4(client, 40000), tf::ACK, &[]);
        assert_eq!(
            FlowKey::read(&reply, is_vip4, is_vip6),
            Some(FlowKey::v4(ip_proto::TCP, client, 40000))
        );
        let client6: Ipv6Addr = "fd77::2".parse().unwrap();
        let v6 = |a, p| SocketAddrV6::new(a, p, 0, 0);
        let to_vip6 = udp6(v6(client6, 5353), v6(VIP6, 53), b"q");
        assert_eq!(
            FlowKey::read(&to_vip6, is_vip4, is_vip6),
            Some(FlowKey::v6(ip_proto::UDP, client6, 5353))
        );
        // Not TCP or UDP, truncated, or no IP at all: no key.
        let mut icmp = to_vip.clone();
        icmp[9] = ip_proto::ICMP;
        assert_eq!(FlowKey::read(&icmp, is_vip4, is_vip6), None);
        assert_eq!(FlowKey::read(&to_vip[..22], is_vip4, is_vip6), None);
        assert_eq!(FlowKey::read(&to_vip6[..42], is_vip4, is_vip6), None);
        assert_eq!(FlowKey::read(&[], is_vip4, is_vip6), None);
        assert_eq!(FlowKey::read(&[0x45], is_vip4, is_vip6), None);
    }

    #[test]
    fn a_hint_is_taken_only_by_its_own_packet() {
        use crate::conn::HashKey;
        let key = HashKey([1, 2]);
        let t4 = ConnTable::<Ipv4Addr>::new(1 << 20, key, 0).unwrap();
        let t6 = ConnTable::<Ipv6Addr>::new(1 << 20, key, 0).unwrap();
        let a = FlowKey::v4(ip_proto::TCP, Ipv4Addr::new(10, 77, 1, 2), 40000);
        let b = FlowKey::v4(ip_proto::TCP, Ipv4Addr::new(10, 77, 1, 3), 40000);
        let a6 = FlowKey::v6(ip_proto::TCP, "::ffff:10.77.1.2".parse().unwrap(), 40000);
        let hash4 = |k: FlowKey| t4.hash(k.proto(), k.addr4(), k.port());
        let mut h = Hints::default();
        assert_eq!(h.hash_of(a), None, "nothing shown yet");
        h.start();
        h.set(0, a);
        h.clear(1);
        h.set(2, b);
        h.set(3, a6);
        h.next();
        assert_eq!(h.hash_of(a), None, "recorded, not hashed yet");
        h.hash(&t4, Some(&t6));
        h.at = usize::MAX;
        h.next();
        assert_eq!(h.hash_of(a), Some(hash4(a)));
        assert_eq!(h.hash_of(b), None, "another packet at a's position");
        assert_eq!(h.hash_of(a6), None, "the same bits in the other family");
        h.next();
        assert_eq!(h.hash_of(a), None, "a position with no hint");
        h.next();
        assert_eq!(h.hash_of(b), Some(hash4(b)));
        h.next();
        assert_eq!(
            h.hash_of(a6),
            Some(t6.hash(a6.proto(), a6.addr6(), a6.port()))
        );
        h.next();
        assert_eq!(h.hash_of(b), None, "past the batch");
        h.start();
        h.next();
        assert_eq!(h.hash_of(a), None, "a new batch forgets the old one");
        // An IPv6 key with no IPv6 table leaves no hint; the IPv4 ones keep theirs.
        h.start();
        h.set(0, a6);
        h.set(1, a);
        h.hash(&t4, None);
        h.next();
        assert_eq!(h.hash_of(a6), None, "no IPv6 table");
        h.next();
        assert_eq!(h.hash_of(a), Some(hash4(a)));
    }
}
