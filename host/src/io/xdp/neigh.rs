//! Ethernet headers for transmitted packets, from the kernel's routing and neighbour tables.
//!
//! The AF_XDP queues send IP packets out of their sockets, so they must frame them as the
//! kernel would: the output interface and next hop of the route to the destination, and the
//! next hop's MAC from the neighbour table. [`Neighbours`] holds the answer per destination
//! address, shared by the queues; each queue keeps a direct-mapped cache of it
//! ([`NextHopCache`]), so an established flow's packet costs one array probe.
//!
//! A destination not known yet is asked for ([`Neighbours::want`]): the resolver thread asks
//! the kernel for the route, reads the neighbour table, and if the next hop has no usable
//! MAC asks the kernel to resolve it (ARP, as if a packet were waiting) and looks again a few
//! milliseconds later. Meanwhile the queue holds the packet (up to [`HOLD`] packets per
//! queue, for up to [`HOLD_TIME`], like the kernel's own queue of packets waiting for ARP)
//! and sends it once the answer is published ([`Neighbours::version`]); the data path never
//! makes a system call for it. The realservers are resolved when the services are set. Every second the resolver reads the neighbour table
//! again, so a changed MAC is followed, and each queue throws its cache away when an entry
//! changed ([`Neighbours::generation`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::netlink::{Iface, Netlink};

/// How a packet to one destination leaves: the interface slot (index into the queue's
/// sockets) and the Ethernet header to put in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Interface slot; [`UNREACHABLE`] if the route leaves through none of ringvs's
    /// interfaces (or there is none).
    pub slot: u8,
    /// Destination MAC, source MAC, the EtherType of the destination's family.
    pub hdr: [u8; 14],
}

/// [`NextHop::slot`] of a destination ringvs cannot reach through its interfaces.
pub const UNREACHABLE: u8 = u8::MAX;

/// Packets a queue holds for destinations being resolved.
pub const HOLD: usize = 256;

/// How long a held packet waits for its next hop before it is dropped.
pub const HOLD_TIME: Duration = Duration::from_secs(1);

/// Most destinations remembered; beyond this the table starts over (each queue's cache too).
pub const MAX_DESTINATIONS: usize = 1 << 20;

/// Where one destination goes, as the resolver keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    slot: u8,
    next_hop: IpAddr,
    hop: NextHop,
}

/// The next hops of every destination the queues asked about.
#[derive(Debug)]
pub struct Neighbours {
    ifaces: Vec<Iface>,
    map: RwLock<HashMap<IpAddr, Entry>>,
    /// Bumped whenever an entry changes or goes away (not when one is added).
    generation: AtomicU64,
    /// Bumped whenever an entry is set (added or changed).
    version: AtomicU64,
    wanted: Mutex<Vec<IpAddr>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Neighbours {
    /// A table for the interfaces `ifaces` (slot = position).
    pub fn new(ifaces: Vec<Iface>) -> Neighbours {
        Neighbours {
            ifaces,
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            version: AtomicU64::new(0),
            wanted: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// The interfaces, by slot.
    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// The current generation (see the module docs).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Bumped whenever an entry is added or changed: queues holding packets for unresolved
    /// destinations look again when it moves.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The next hop of `dst`, if resolved.
    pub fn lookup(&self, dst: IpAddr) -> Option<NextHop> {
        self.map.read().ok()?.get(&dst).map(|e| e.hop)
    }

    /// Asks the resolver for `dst`.
    pub fn want(&self, dst: IpAddr) {
        if let Ok(mut w) = self.wanted.lock() {
            if w.len() < 4096 && !w.contains(&dst) {
                w.push(dst);
            }
        }
        self.wake.notify_one();
    }

    /// Resolves `dsts` before traffic needs them (the realservers), waiting up to `wait`.
    pub fn prime(&self, nl: &mut Netlink, dsts: &[IpAddr], wait: Duration) {
        let mut pending: Vec<IpAddr> = dsts.to_vec();
        let deadline = Instant::now() + wait;
        let mut asked = false;
        loop {
            let table = neigh_map(nl);
            pending.retain(|&d| !self.resolve_one(nl, &table, d, !asked));
            asked = true;
            if pending.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resolves `dst` against `table` (the neighbour table keyed by interface and address);
    /// if its next hop has no MAC yet and `ask`, asks the kernel to resolve it. True if `dst`
    /// now has an entry (possibly "unreachable").
    fn resolve_one(
        &self,
        nl: &mut Netlink,
        table: &HashMap<(u32, IpAddr), [u8; 6]>,
        dst: IpAddr,
        ask: bool,
    ) -> bool {
        let route = match nl.route_get(dst) {
            Ok(r) => r,
            Err(_) => return false,
        };
        let Some(route) = route else {
            self.set(dst, Entry::unreachable(dst));
            return true;
        };
        let Some(slot) = self.ifaces.iter().position(|i| i.index == route.oif) else {
            self.set(dst, Entry::unreachable(dst));
            return true;
        };
        match table.get(&(route.oif, route.next_hop)) {
            Some(mac) => {
                let hop = NextHop {
                    slot: slot as u8,
                    hdr: header(mac, &self.ifaces[slot].mac, dst.is_ipv6()),
                };
                self.set(
                    dst,
                    Entry {
                        slot: slot as u8,
                        next_hop: route.next_hop,
                        hop,
                    },
                );
                true
            }
            None => {
                if ask {
                    let _ = nl.resolve(route.oif, route.next_hop);
                }
                false
            }
        }
    }

    fn set(&self, dst: IpAddr, e: Entry) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.len() >= MAX_DESTINATIONS && !map.contains_key(&dst) {
            map.clear();
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(old) = map.insert(dst, e) {
            if old != e {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Every second: follows MAC changes of known next hops; forgets entries whose next
    /// hop lost its MAC (they are asked for again on their next packet).
    fn refresh(&self, nl: &mut Netlink) {
        let table = neigh_map(nl);
        let Ok(mut map) = self.map.write() else {
            return;
        };
        let mut changed = false;
        map.retain(|dst, e| {
            if e.slot == UNREACHABLE {
                return true;
            }
            let iface = &self.ifaces[usize::from(e.slot)];
            match table.get(&(iface.index, e.next_hop)) {
                Some(mac) => {
                    let hdr = header(mac, &iface.mac, dst.is_ipv6());
                    if hdr != e.hop.hdr {
                        e.hop.hdr = hdr;
                        changed = true;
                    }
                    true
                }
                None => {
                    changed = true;
                    false
                }
            }
        });
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Routes may change too: every so often, unreachable entries are forgotten (asked for
    /// again on their next packet).
    fn forget_unreachable(&self) {
        if let Ok(mut map) = self.map.write() {
            let before = map.len();
            map.retain(|_, e| e.slot != UNREACHABLE);
            if map.len() != before {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Stops [`Neighbours::run`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    /// The resolver thread's loop, until [`Neighbours::stop`]; `each_second` runs once a
    /// second (the local addresses).
    pub fn run(&self, mut nl: Netlink, mut each_second: impl FnMut()) {
        let mut pending: Vec<(IpAddr, Instant)> = Vec::new();
        let mut last_refresh = Instant::now();
        let mut last_forget = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let fresh: Vec<IpAddr> = {
                let Ok(w) = self.wanted.lock() else { return };
                let timeout = if pending.is_empty() {
                    Duration::from_millis(200)
                } else {
                    Duration::from_millis(5)
                };
                let (mut w, _) = match self.wake.wait_timeout_while(w, timeout, |w| {
                    w.is_empty() && !self.stop.load(Ordering::Acquire)
                }) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                std::mem::take(&mut *w)
            };
            let now = Instant::now();
            if !fresh.is_empty() || !pending.is_empty() {
                let table = neigh_map(&mut nl);
                for d in fresh {
                    if self.lookup(d).is_none()
                        && !pending.iter().any(|(p, _)| *p == d)
                        && !self.resolve_one(&mut nl, &table, d, true)
                    {
                        pending.push((d, now + Duration::from_secs(3)));
                    }
                }
                pending.retain(|&(d, until)| {
                    now < until && !self.resolve_one(&mut nl, &table, d, false)
                });
            }
            if now.duration_since(last_refresh) >= Duration::from_secs(1) {
                last_refresh = now;
                self.refresh(&mut nl);
                each_second();
            }
            if now.duration_since(last_forget) >= Duration::from_secs(10) {
                last_forget = now;
                self.forget_unreachable();
            }
        }
    }
}

impl Entry {
    fn unreachable(dst: IpAddr) -> Entry {
        Entry {
            slot: UNREACHABLE,
            next_hop: dst,
            hop: NextHop {
                slot: UNREACHABLE,
                hdr: [0; 14],
            },
        }
    }
}

/// The neighbour table as (interface, address) → MAC, entries with a usable MAC only.
fn neigh_map(nl: &mut Netlink) -> HashMap<(u32, IpAddr), [u8; 6]> {
    nl.neighbours()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.mac.map(|m| ((n.ifindex, n.addr), m)))
        .collect()
}

/// An Ethernet header: `dst`, `src`, IPv4 (or IPv6 if `v6`).
pub fn header(dst: &[u8; 6], src: &[u8; 6], v6: bool) -> [u8; 14] {
    let mut h = [0u8; 14];
    h[..6].copy_from_slice(dst);
    h[6..12].copy_from_slice(src);
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    h[12..].copy_from_slice(&ethertype.to_be_bytes());
    h
}

/// A queue's cache of [`Neighbours`]: direct-mapped, 4096 destinations, emptied when the
/// table's generation moves; and when it last asked for each missing destination, so a
/// stream of packets to an unresolved one asks once per 100 ms, not per packet.
pub struct NextHopCache {
    slots: Box<[(IpAddr, NextHop)]>,
    asked: Box<[(IpAddr, Instant)]>,
    generation: u64,
}

const CACHE_SLOTS: usize = 4096;

/// What an empty cache slot holds (never a destination).
const NOWHERE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The slot of `a` in a direct-mapped table of `CACHE_SLOTS` (an IPv6 address folded to 32
/// bits first).
#[inline]
fn cache_slot(a: IpAddr) -> usize {
    let w = match a {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            (x ^ (x >> 64) ^ (x >> 32) ^ (x >> 96)) as u32
        }
    };
    (w.wrapping_mul(0x9e37_79b1) >> 20) as usize & (CACHE_SLOTS - 1)
}

impl Default for NextHopCache {
    fn default() -> Self {
        let empty = NextHop {
            slot: UNREACHABLE,
            hdr: [0; 14],
        };
        let t0 = Instant::now();
        NextHopCache {
            slots: vec![(NOWHERE, empty); CACHE_SLOTS].into_boxed_slice(),
            asked: vec![(NOWHERE, t0); CACHE_SLOTS].into_boxed_slice(),
            generation: 0,
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Send it with this header out of this slot.
    Via(NextHop),
    /// Not resolved yet (asked for).
    Unknown,
    /// No route through ringvs's interfaces.
    Unreachable,
}

impl NextHopCache {
    /// The next hop of `dst`.
    #[inline]
    pub fn get(&mut self, table: &Neighbours, dst: IpAddr) -> Hop {
        let g = table.generation();
        if g != self.generation {
            self.generation = g;
            for s in self.slots.iter_mut() {
                s.0 = NOWHERE;
            }
        }
        let a = dst;
        let i = cache_slot(a);
        let (k, hop) = self.slots[i];
        let hop = if k == a && a != NOWHERE {
            hop
        } else {
            match table.lookup(dst) {
                Some(hop) => {
                    self.slots[i] = (a, hop);
                    hop
                }
                None => {
                    let now = Instant::now();
                    let (ka, at) = self.asked[i];
                    if ka != a || now.duration_since(at) > Duration::from_millis(100) {
                        self.asked[i] = (a, now);
                        table.want(dst);
                    }
                    return Hop::Unknown;
                }
            }
        };
        if hop.slot == UNREACHABLE {
            Hop::Unreachable
        } else {
            Hop::Via(hop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32) -> Iface {
        Iface {
            name: format!("if{index}"),
            index,
            mac: [2, 0, 0, 0, 0, index as u8],
            mtu: 1500,
            rx_queues: 1,
        }
    }

    #[test]
    fn cache_follows_the_table() {
        for (dst, far) in [
            (IpAddr::from([10, 77, 0, 2]), IpAddr::from([192, 0, 2, 1])),
            ("fd77:1::1".parse().unwrap(), "2001:db8::1".parse().unwrap()),
        ] {
            let t = Neighbours::new(vec![iface(7)]);
            let mut c = NextHopCache::default();
            assert_eq!(c.get(&t, dst), Hop::Unknown);
            assert_eq!(t.wanted.lock().unwrap().as_slice(), &[dst], "asked once");
            assert_eq!(c.get(&t, dst), Hop::Unknown);
            assert_eq!(t.wanted.lock().unwrap().len(), 1, "not asked again at once");
            let e = |mac: u8| Entry {
                slot: 0,
                next_hop: dst,
                hop: NextHop {
                    slot: 0,
                    hdr: header(&[2, 0, 0, 0, 0, mac], &[2, 0, 0, 0, 0, 7], dst.is_ipv6()),
                },
            };
            t.set(dst, e(1));
            assert_eq!(c.get(&t, dst), Hop::Via(e(1).hop));
            let g = t.generation();
            t.set(dst, e(2));
            assert_ne!(t.generation(), g, "a changed MAC moves the generation");
            assert_eq!(c.get(&t, dst), Hop::Via(e(2).hop), "the cache follows");
            t.set(far, Entry::unreachable(far));
            assert_eq!(c.get(&t, far), Hop::Unreachable);
            let ethertype = if dst.is_ipv6() {
                [0x86, 0xdd]
            } else {
                [0x08, 0x00]
            };
            assert_eq!(e(1).hop.hdr[12..], ethertype);
        }
    }

    /// An IPv6 destination and the IPv4 one whose bits it shares never answer for each
    /// other, and the unspecified address is never a cached destination.
    #[test]
    fn families_do_not_share_cache_slots() {
        let t = Neighbours::new(vec![iface(7)]);
        let mut c = NextHopCache::default();
        let v4 = IpAddr::from([10, 77, 0, 2]);
        let v6 = IpAddr::V6(std::net::Ipv4Addr::new(10, 77, 0, 2).to_ipv6_mapped());
        let hop = |m: u8, v6: bool| NextHop {
            slot: 0,
            hdr: header(&[2, 0, 0, 0, 0, m], &[2, 0, 0, 0, 0, 7], v6),
        };
        t.set(
            v4,
            Entry {
                slot: 0,
                next_hop: v4,
                hop: hop(1, false),
            },
        );
        assert_eq!(c.get(&t, v4), Hop::Via(hop(1, false)));
        assert_eq!(c.get(&t, v6), Hop::Unknown, "not the IPv4 entry");
        assert_eq!(c.get(&t, NOWHERE), Hop::Unknown);
    }
}
