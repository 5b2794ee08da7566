//! The connection table: fixed-size entries in one slab, a keyed hash over the client
//! endpoint, a hashed timer wheel, and a hard memory budget.
//!
//! # Layout
//!
//! Every connection is one [`Conn`] in a preallocated slab (its pages are touched only as the
//! table fills) and is reachable through one chain of a bucket array. The chain is keyed by
//! `(protocol, client address, client port)` only: a client's packets (source endpoint) and a
//! realserver's replies (destination endpoint) name the same client endpoint, so one hash
//! serves both directions. The caller disambiguates with a predicate (the service for
//! inbound packets, the realserver for replies).
//!
//! # Hash flooding
//!
//! The hash is SipHash-1-3 under a 128-bit key drawn at start, so nobody outside can choose
//! addresses and ports that pile into one bucket (LVS HOWTO §33.15 shows the IPVS formula
//! that allowed exactly that).
//!
//! # Expiry
//!
//! A hashed timer wheel of [`WHEEL_SLOTS`] slots of one tick ([`TICKS_PER_SEC`] per second).
//! Refreshing a connection only stores its new expiry; the entry moves to another slot only
//! when its deadline moves *earlier* (a state change to a shorter timeout). When a slot comes
//! due, entries whose deadline has not yet passed are relinked further on. The work per tick
//! is proportional to the entries due, never a scan of the table.
//!
//! # The clock wraps
//!
//! A [`Tick`] is a `u32` that wraps after 2^32 ticks (13.6 years at [`TICKS_PER_SEC`]), as
//! the kernel's jiffies do: a wider clock would grow every entry by 8 bytes. Deadlines are
//! therefore compared with [`reached`] and measured with [`ticks_left`], never with `<` or
//! `-`; both are right while a deadline lies less than 2^31 ticks (6.8 years) from the
//! present. Nothing is scheduled that far ahead, and a clock that jumps further in one step
//! (only a replayed capture can) moves in steps of at most [`MAX_STEP`].

use super::state::{State, STATES};
use core::fmt;
use core::hash::Hasher;
use core::mem::size_of;
use siphasher::sip::SipHasher13;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Timer ticks per second.
pub const TICKS_PER_SEC: u32 = 10;
/// Slots of the timer wheel (a span of 409.6 s at 10 ticks per second).
pub const WHEEL_SLOTS: usize = 4096;

/// A point in time, in ticks since the data plane started, modulo 2^32 (see "The clock
/// wraps" above).
pub type Tick = u32;

/// The largest step the clock may take in one move: half the span within which [`reached`]
/// is right, so that every deadline set before a step is seen as reached after it.
pub const MAX_STEP: Tick = 1 << 30;

/// True once `now` has reached `deadline` on the wrapping clock (the kernel's
/// `time_after_eq(now, deadline)`).
#[inline]
pub fn reached(now: Tick, deadline: Tick) -> bool {
    // Two's complement: the difference is non-negative as an i32 while `now` lies at most
    // 2^31 - 1 ticks after `deadline`.
    now.wrapping_sub(deadline) as i32 >= 0
}

/// Ticks from `now` until `deadline`, zero once it is reached.
#[inline]
pub fn ticks_left(deadline: Tick, now: Tick) -> Tick {
    if reached(now, deadline) {
        0
    } else {
        deadline.wrapping_sub(now)
    }
}

const NIL: u32 = u32::MAX;

/// An address family the table can hold: IPv4 entries stay small, IPv6 ones get a table of
/// their own with wider entries.
pub trait FlowAddr: Copy + Eq + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Feeds the address to the keyed hasher.
    fn hash_into(&self, h: &mut SipHasher13, port: u16, proto: u8);
    /// SipHash-1-3 of `(address, port, protocol)` under `key`.
    #[inline]
    fn keyed_hash(&self, key: &HashKey, port: u16, proto: u8) -> u64 {
        let mut h = SipHasher13::new_with_keys(key.0[0], key.0[1]);
        self.hash_into(&mut h, port, proto);
        h.finish()
    }
    /// The unspecified address, for free entries.
    fn unspecified() -> Self;
    /// The address if it is IPv4 (what the IPv4-only parts of the director — the per-source
    /// sketch, the SYN proxy — take).
    fn v4(self) -> Option<Ipv4Addr>;
    /// The address as a `std` address of either family.
    fn ip(self) -> std::net::IpAddr;
}

impl FlowAddr for Ipv4Addr {
    #[inline]
    fn hash_into(&self, h: &mut SipHasher13, port: u16, proto: u8) {
        h.write_u64(v4_word(*self, port, proto));
    }
    #[inline]
    fn keyed_hash(&self, key: &HashKey, port: u16, proto: u8) -> u64 {
        super::sip::one_word(key, v4_word(*self, port, proto))
    }
    fn unspecified() -> Self {
        Ipv4Addr::UNSPECIFIED
    }
    #[inline]
    fn v4(self) -> Option<Ipv4Addr> {
        Some(self)
    }
    #[inline]
    fn ip(self) -> std::net::IpAddr {
        self.into()
    }
}

impl FlowAddr for Ipv6Addr {
    #[inline]
    fn hash_into(&self, h: &mut SipHasher13, port: u16, proto: u8) {
        let a = u128::from_be_bytes(self.octets());
        h.write_u64(a as u64);
        h.write_u64((a >> 64) as u64);
        h.write_u32((port as u32) << 16 | proto as u32);
    }
    fn unspecified() -> Self {
        Ipv6Addr::UNSPECIFIED
    }
    #[inline]
    fn v4(self) -> Option<Ipv4Addr> {
        None
    }
    #[inline]
    fn ip(self) -> std::net::IpAddr {
        self.into()
    }
}

#[inline]
fn v4_word(a: Ipv4Addr, port: u16, proto: u8) -> u64 {
    (u32::from_be_bytes(a.octets()) as u64) << 32 | (port as u64) << 16 | proto as u64
}

/// The secret key of the connection hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey(pub [u64; 2]);

impl HashKey {
    /// A key from the operating system's random source.
    pub fn random() -> HashKey {
        let mut b = [0u8; 16];
        // getrandom only fails without any entropy source at all; a fixed key would silently
        // reopen the hash-flooding hole, so fall back to time and address noise instead.
        if getrandom::fill(&mut b).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let noise = &b as *const _ as usize as u128;
            b = (t ^ noise.rotate_left(64)).to_le_bytes();
        }
        let (k0, k1) = b.split_at(8);
        HashKey([
            u64::from_le_bytes(k0.try_into().unwrap_or_default()),
            u64::from_le_bytes(k1.try_into().unwrap_or_default()),
        ])
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// Handle of a live connection in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u32);

impl ConnId {
    /// The slab index.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Flag: counted in `InActConn` (IPVS `IP_VS_CONN_F_INACTIVE`); new connections start so.
pub const F_INACTIVE: u8 = 1;
/// Flag: no reply seen yet; state transitions use the input-only rows
/// (IPVS `IP_VS_CONN_F_NOOUTPUT`).
pub const F_NOOUTPUT: u8 = 2;
/// Flag: scheduled through a persistence template.
pub const F_PERSISTENT: u8 = 4;
/// Flag: opened by the SYN proxy; sequence numbers (and timestamps) are translated with the
/// words in [`Conn::proxy`].
pub const F_PROXIED: u8 = 8;
/// Flag: opened by the SYN proxy, the realserver's SYN-ACK not seen yet.
pub const F_PROXY_OPENING: u8 = 16;
/// Flag: the entry is in use (cleared on free entries).
const F_LIVE: u8 = 0x80;

/// One tracked connection. The client endpoint and protocol are fixed for its life (they
/// are its hash key); the rest is state the data plane updates.
#[derive(Clone, Copy)]
pub struct Conn<A: FlowAddr> {
    caddr: A,
    cport: u16,
    proto: u8,
    /// Current state.
    pub state: State,
    /// Service slot.
    pub svc: u16,
    /// `F_*` flags.
    pub flags: u8,
    /// Free for the data plane (e.g. the state-table generation); zero on insert.
    pub aux: u8,
    /// Destination (realserver) slot.
    pub dest: u32,
    /// Packets seen from the client (saturating): drop_entry's "few packets" test.
    pub in_pkts: u32,
    /// The SYN proxy's words for a [`F_PROXIED`] connection (zero otherwise): while
    /// [`F_PROXY_OPENING`], the cookie sent to the client and the timestamp it echoed; then
    /// the sequence and timestamp offsets between the two halves.
    pub proxy: [u32; 2],
    expires: Tick,
    sched: Tick,
    hnext: u32,
    tnext: u32,
    tprev: u32,
}

impl<A: FlowAddr> Conn<A> {
    /// Client address.
    #[inline]
    pub fn caddr(&self) -> A {
        self.caddr
    }
    /// Client port.
    #[inline]
    pub fn cport(&self) -> u16 {
        self.cport
    }
    /// IP protocol number.
    #[inline]
    pub fn proto(&self) -> u8 {
        self.proto
    }
    /// The tick at which the connection expires unless refreshed.
    #[inline]
    pub fn expires(&self) -> Tick {
        self.expires
    }
    /// True if in the live set.
    #[inline]
    fn live(&self) -> bool {
        self.flags & F_LIVE != 0
    }
    fn vacant() -> Self {
        Conn {
            caddr: A::unspecified(),
            cport: 0,
            proto: 0,
            state: State::None,
            svc: 0,
            flags: 0,
            aux: 0,
            dest: 0,
            in_pkts: 0,
            proxy: [0; 2],
            expires: 0,
            sched: NIL,
            hnext: NIL,
            tnext: NIL,
            tprev: NIL,
        }
    }
}

impl<A: FlowAddr> fmt::Debug for Conn<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("proto", &self.proto)
            .field("client", &format_args!("{}:{}", self.caddr, self.cport))
            .field("svc", &self.svc)
            .field("dest", &self.dest)
            .field("state", &self.state)
            .field("flags", &self.flags)
            .field("expires", &self.expires)
            .finish()
    }
}

/// What a new entry starts with.
#[derive(Debug, Clone, Copy)]
pub struct NewConn<A> {
    /// IP protocol.
    pub proto: u8,
    /// Client address.
    pub caddr: A,
    /// Client port.
    pub cport: u16,
    /// Service slot.
    pub svc: u16,
    /// Destination slot.
    pub dest: u32,
    /// Initial state.
    pub state: State,
    /// Initial flags.
    pub flags: u8,
}

/// The table is at its memory budget; the new flow is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection table is at its memory limit")
    }
}

impl std::error::Error for Full {}

/// Error creating a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetTooSmall {
    /// The budget asked for.
    pub limit: usize,
    /// The least budget that holds a useful table.
    pub minimum: usize,
}

impl fmt::Display for BudgetTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conn_memory_limit of {} bytes is too small: at least {} bytes are needed",
            self.limit, self.minimum
        )
    }
}

impl std::error::Error for BudgetTooSmall {}

/// Most entries [`ConnTable::evict`] looks at for one new flow.
pub const EVICT_SAMPLE: u32 = 32;

/// The least number of entries a table is built for.
const MIN_ENTRIES: usize = 64;

/// A connection table for one address family, owned by one data-plane thread.
pub struct ConnTable<A: FlowAddr> {
    entries: Vec<Conn<A>>,
    buckets: Vec<u32>,
    mask: u32,
    capacity: u32,
    free: u32,
    len: u32,
    key: HashKey,
    wheel: Box<[u32; WHEEL_SLOTS]>,
    wheel_now: Tick,
    by_state: [u32; STATES],
}

impl ConnTable<Ipv4Addr> {
    /// The message [`ConnTable::hash_many`] hashes for client endpoint `(proto, caddr,
    /// cport)`, as SipHash's blocks.
    #[inline]
    pub fn flow_blocks(proto: u8, caddr: Ipv4Addr, cport: u16) -> [u64; 2] {
        super::sip::word_blocks(v4_word(caddr, cport, proto))
    }

    /// [`ConnTable::hash`] of many client endpoints at once (a batch's, given as
    /// [`ConnTable::flow_blocks`]): `out[i] as u32` is the hash of `m[i]`, computed side by
    /// side with vector instructions where the CPU has them.
    #[inline]
    pub fn hash_many(&self, m: &[[u64; 2]], out: &mut [u64]) {
        super::sip::many(&self.key, m, out);
    }
}

impl ConnTable<Ipv6Addr> {
    /// As the IPv4 table's: the blocks `hash_into` feeds the hasher (two address words and
    /// a 4-byte tail: 20 bytes).
    #[inline]
    pub fn flow_blocks(proto: u8, caddr: Ipv6Addr, cport: u16) -> [u64; 3] {
        let a = u128::from_be_bytes(caddr.octets());
        let tail = u64::from(u32::from(cport) << 16 | u32::from(proto));
        [a as u64, (a >> 64) as u64, 20u64 << 56 | tail]
    }

    /// As the IPv4 table's.
    #[inline]
    pub fn hash_many(&self, m: &[[u64; 3]], out: &mut [u64]) {
        super::sip::many(&self.key, m, out);
    }
}

impl<A: FlowAddr> ConnTable<A> {
    /// Bytes one entry occupies in the slab.
    pub const ENTRY_BYTES: usize = size_of::<Conn<A>>();

    /// Builds a table whose slab and bucket array together fit in `memory_limit` bytes.
    /// Memory is reserved, not touched: pages are used as the table fills.
    pub fn new(memory_limit: usize, key: HashKey, now: Tick) -> Result<Self, BudgetTooSmall> {
        let fixed = WHEEL_SLOTS * 4;
        let minimum = MIN_ENTRIES * (Self::ENTRY_BYTES + 4) + fixed;
        let room = memory_limit.saturating_sub(fixed);
        // Buckets: the largest power of two not above what an entry-plus-bucket split allows,
        // so chains average between one and two entries; the rest of the budget is slab.
        let even = room / (Self::ENTRY_BYTES + 4);
        if even < MIN_ENTRIES {
            return Err(BudgetTooSmall {
                limit: memory_limit,
                minimum,
            });
        }
        let nbuckets = 1usize << (usize::BITS - 1 - even.leading_zeros());
        let cap = ((room - nbuckets * 4) / Self::ENTRY_BYTES).min(NIL as usize - 1);
        let entries: Vec<Conn<A>> = Vec::with_capacity(cap);
        let buckets: Vec<u32> = vec![0; nbuckets];
        // Random lookups over megabytes of buckets and entries miss the TLB on every packet
        // with 4 KiB pages; ask for transparent huge pages (untouched memory stays unused).
        advise_huge_pages(entries.as_ptr() as usize, cap * Self::ENTRY_BYTES);
        advise_huge_pages(buckets.as_ptr() as usize, nbuckets * 4);
        Ok(ConnTable {
            entries,
            buckets,
            mask: (nbuckets - 1) as u32,
            capacity: cap as u32,
            free: NIL,
            len: 0,
            key,
            wheel: Box::new([NIL; WHEEL_SLOTS]),
            wheel_now: now,
            by_state: [0; STATES],
        })
    }

    /// Most entries the budget allows.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True if no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries per state.
    pub fn by_state(&self) -> &[u32; STATES] {
        &self.by_state
    }

    /// Bytes accounted to the table now: the live entries, the bucket array and the wheel.
    pub fn memory_bytes(&self) -> usize {
        self.len as usize * Self::ENTRY_BYTES + self.buckets.len() * 4 + WHEEL_SLOTS * 4
    }

    /// Bytes the table would use full: what the budget is checked against.
    pub fn memory_limit_bytes(&self) -> usize {
        self.capacity as usize * Self::ENTRY_BYTES + self.buckets.len() * 4 + WHEEL_SLOTS * 4
    }

    /// The bucket index hash of a client endpoint.
    #[inline]
    pub fn hash(&self, proto: u8, caddr: A, cport: u16) -> u32 {
        caddr.keyed_hash(&self.key, cport, proto) as u32
    }

    /// Asks the CPU to start loading the bucket of `hash` (first pass of batch prefetching).
    #[inline]
    pub fn prefetch_bucket(&self, hash: u32) {
        prefetch_read(&self.buckets[(hash & self.mask) as usize] as *const u32 as *const u8);
    }

    /// Asks the CPU to start loading the first entry of `hash`'s chain (second pass: reads
    /// the bucket, which the first pass brought in): both its cache lines where it spans two
    /// (a 48-byte IPv4 entry does at one slab position in four).
    #[inline]
    pub fn prefetch_entry(&self, hash: u32) {
        let i = self.buckets[(hash & self.mask) as usize].wrapping_sub(1);
        if let Some(e) = self.entries.get(i as usize) {
            let first = e as *const Conn<A> as *const u8;
            prefetch_read(first);
            let last = first.wrapping_add(size_of::<Conn<A>>() - 1);
            if (first as usize) >> 6 != (last as usize) >> 6 {
                prefetch_read(last);
            }
        }
    }

    /// Finds the connection of client endpoint `(proto, caddr, cport)` (whose hash is `hash`)
    /// for which `pred` holds.
    #[inline]
    pub fn lookup(
        &self,
        hash: u32,
        proto: u8,
        caddr: A,
        cport: u16,
        mut pred: impl FnMut(&Conn<A>) -> bool,
    ) -> Option<ConnId> {
        let mut i = self.buckets[(hash & self.mask) as usize].wrapping_sub(1);
        while i != NIL {
            let e = &self.entries[i as usize];
            if e.cport == cport && e.caddr == caddr && e.proto == proto && pred(e) {
                return Some(ConnId(i));
            }
            i = e.hnext;
        }
        None
    }

    /// The entry of a live connection.
    #[inline]
    pub fn get(&self, id: ConnId) -> &Conn<A> {
        &self.entries[id.0 as usize]
    }

    /// The entry of a live connection, mutable (its key cannot change).
    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> &mut Conn<A> {
        &mut self.entries[id.0 as usize]
    }

    /// Adds a connection expiring at `expires`. `hash` is [`ConnTable::hash`] of its client
    /// endpoint. Fails when the budget is used up.
    pub fn insert(&mut self, hash: u32, c: NewConn<A>, expires: Tick) -> Result<ConnId, Full> {
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.entries[i as usize].hnext;
            i
        } else if self.entries.len() < self.capacity as usize {
            self.entries.push(Conn::vacant());
            (self.entries.len() - 1) as u32
        } else {
            return Err(Full);
        };
        let b = (hash & self.mask) as usize;
        let e = &mut self.entries[i as usize];
        *e = Conn {
            caddr: c.caddr,
            cport: c.cport,
            proto: c.proto,
            state: c.state,
            svc: c.svc,
            flags: c.flags | F_LIVE,
            aux: 0,
            dest: c.dest,
            in_pkts: 0,
            proxy: [0; 2],
            expires,
            sched: NIL,
            hnext: self.buckets[b].wrapping_sub(1),
            tnext: NIL,
            tprev: NIL,
        };
        self.buckets[b] = i + 1;
        self.len += 1;
        self.by_state[c.state as usize] += 1;
        self.link_timer(i, expires);
        Ok(ConnId(i))
    }

    /// Sets the state of a connection (keeps the per-state counts right).
    #[inline]
    pub fn set_state(&mut self, id: ConnId, state: State) {
        let e = &mut self.entries[id.0 as usize];
        self.by_state[e.state as usize] -= 1;
        self.by_state[state as usize] += 1;
        e.state = state;
    }

    /// Sets when a connection expires. Cheap when the deadline moves later (the common
    /// case): the entry stays in its wheel slot and is looked at again when that slot
    /// comes due.
    #[inline(always)]
    pub fn set_expiry(&mut self, id: ConnId, expires: Tick) {
        let e = &mut self.entries[id.0 as usize];
        e.expires = expires;
        // Relink when the deadline is now before the slot it waits in (or it waits in none).
        if e.sched == NIL || !reached(expires, e.sched) {
            self.relink_timer(id.0, expires);
        }
    }

    /// Moves entry `i` to the wheel slot of `expires` (the uncommon half of
    /// [`ConnTable::set_expiry`], kept out of the packet path).
    #[inline(never)]
    fn relink_timer(&mut self, i: u32, expires: Tick) {
        self.unlink_timer(i);
        self.link_timer(i, expires);
    }

    /// Removes a connection and returns its last contents.
    pub fn remove(&mut self, id: ConnId) -> Conn<A> {
        self.unlink_timer(id.0);
        self.remove_off_wheel(id.0)
    }

    /// Removes entry `i`, which is not linked into the wheel.
    fn remove_off_wheel(&mut self, i: u32) -> Conn<A> {
        let id = ConnId(i);
        let old = self.entries[i as usize];
        debug_assert!(old.live());
        let h = self.hash(old.proto, old.caddr, old.cport);
        let b = (h & self.mask) as usize;
        // Unlink from the bucket chain.
        let mut prev = NIL;
        let mut i = self.buckets[b].wrapping_sub(1);
        while i != NIL && i != id.0 {
            prev = i;
            i = self.entries[i as usize].hnext;
        }
        if i == id.0 {
            if prev == NIL {
                self.buckets[b] = old.hnext.wrapping_add(1);
            } else {
                self.entries[prev as usize].hnext = old.hnext;
            }
        }
        self.by_state[old.state as usize] -= 1;
        self.len -= 1;
        let e = &mut self.entries[id.0 as usize];
        *e = Conn::vacant();
        e.hnext = self.free;
        self.free = id.0;
        old
    }

    /// Advances the wheel to `now`, removing every connection whose deadline has passed and
    /// handing each to `expired` (to fix counters). Stops after `budget` removals so that
    /// one call stays short; the rest follow on the next call. Returns the removals.
    pub fn advance(
        &mut self,
        now: Tick,
        budget: usize,
        mut expired: impl FnMut(ConnId, &Conn<A>),
    ) -> usize {
        let mut removed = 0;
        // A clock that went back (it never does) is ignored; a jump past the wheel's span
        // walks the whole wheel once.
        if ticks_left(now, self.wheel_now) > WHEEL_SLOTS as u32 {
            self.wheel_now = now.wrapping_sub(WHEEL_SLOTS as u32);
        }
        while !reached(self.wheel_now, now) {
            let t = self.wheel_now.wrapping_add(1);
            let slot = t as usize % WHEEL_SLOTS;
            let mut i = core::mem::replace(&mut self.wheel[slot], NIL);
            while i != NIL {
                if removed == budget {
                    // Put the rest of the slot back; this tick is not finished.
                    self.entries[i as usize].tprev = NIL;
                    self.wheel[slot] = i;
                    return removed;
                }
                let e = &mut self.entries[i as usize];
                let next = e.tnext;
                e.tnext = NIL;
                e.tprev = NIL;
                e.sched = NIL;
                if reached(now, e.expires) {
                    let old = self.remove_off_wheel(i);
                    expired(ConnId(i), &old);
                    removed += 1;
                } else {
                    let exp = e.expires;
                    self.link_timer_from(i, exp, t);
                }
                i = next;
            }
            self.wheel_now = t;
        }
        removed
    }

    /// Early drop (conntrack's `early_drop`): makes room for a new flow by removing the least
    /// valuable of up to [`EVICT_SAMPLE`] entries, read from slab slot `start` on (the caller
    /// draws it at random, so nobody can aim at an entry). `class` ranks an entry: lower is
    /// less valuable, `None` never evicted; ties go to the entry closest to its expiry. The
    /// entry goes only if its class is at most `worst`; `evicted` fixes counters. Returns
    /// the class evicted. Bounded work: a few cache lines of the slab, never a scan.
    pub fn evict(
        &mut self,
        start: u32,
        worst: u8,
        mut class: impl FnMut(&Conn<A>) -> Option<u8>,
        mut evicted: impl FnMut(ConnId, &Conn<A>),
    ) -> Option<u8> {
        let n = self.entries.len() as u32;
        if n == 0 {
            return None;
        }
        // Closeness to expiry is measured from the wheel's present: deadlines wrap.
        let now = self.wheel_now;
        let mut best: Option<(u8, Tick, u32)> = None;
        for k in 0..EVICT_SAMPLE.min(n) {
            let i = (start.wrapping_add(k)) % n;
            let e = &self.entries[i as usize];
            if !e.live() {
                continue;
            }
            let Some(c) = class(e).filter(|c| *c <= worst) else {
                continue;
            };
            let left = ticks_left(e.expires, now);
            if best.is_none_or(|(bc, bx, _)| (c, left) < (bc, bx)) {
                best = Some((c, left, i));
                if c == 0 {
                    break;
                }
            }
        }
        let (c, _, i) = best?;
        let old = self.remove(ConnId(i));
        evicted(ConnId(i), &old);
        Some(c)
    }

    /// The live entry at slab index `index`, if there is one: for sampling scans
    /// (drop_entry) and listings.
    pub fn entry_at(&self, index: u32) -> Option<(ConnId, &Conn<A>)> {
        self.entries
            .get(index as usize)
            .filter(|e| e.live())
            .map(|e| (ConnId(index), e))
    }

    /// Number of slab slots ever used (the range of [`ConnTable::entry_at`]).
    pub fn slots(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Every live entry.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn<A>)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.live())
            .map(|(i, e)| (ConnId(i as u32), e))
    }

    /// Length of the longest bucket chain (for tests and the hash-flooding benchmark).
    pub fn longest_chain(&self) -> usize {
        let mut longest = 0;
        for &head in &self.buckets {
            let mut n = 0;
            let mut i = head.wrapping_sub(1);
            while i != NIL {
                n += 1;
                i = self.entries[i as usize].hnext;
            }
            longest = longest.max(n);
        }
        longest
    }

    fn link_timer(&mut self, i: u32, expires: Tick) {
        let from = self.wheel_now;
        self.link_timer_from(i, expires, from);
    }

    /// Links entry `i` into the slot of `expires`, clamped to the ticks after `from` that
    /// the wheel spans.
    fn link_timer_from(&mut self, i: u32, expires: Tick, from: Tick) {
        // On the wrapping clock: the distance from `from`, clamped to 1..=WHEEL_SLOTS - 1.
        let ahead = ticks_left(expires, from).clamp(1, WHEEL_SLOTS as u32 - 1);
        let mut sched = from.wrapping_add(ahead);
        if sched == NIL {
            // NIL marks an entry off the wheel: look at it one tick early instead (it is
            // relinked, its deadline is kept), or one late if early is `from` itself.
            sched = if ahead > 1 { NIL - 1 } else { 0 };
        }
        let slot = sched as usize % WHEEL_SLOTS;
        let head = self.wheel[slot];
        if head != NIL {
            self.entries[head as usize].tprev = i;
        }
        let e = &mut self.entries[i as usize];
        e.sched = sched;
        e.tnext = head;
        e.tprev = NIL;
        self.wheel[slot] = i;
    }

    fn unlink_timer(&mut self, i: u32) {
        let e = self.entries[i as usize];
        if e.sched == NIL {
            return;
        }
        if e.tprev == NIL {
            let slot = e.sched as usize % WHEEL_SLOTS;
            if self.wheel[slot] == i {
                self.wheel[slot] = e.tnext;
            }
        } else {
            self.entries[e.tprev as usize].tnext = e.tnext;
        }
        if e.tnext != NIL {
            self.entries[e.tnext as usize].tprev = e.tprev;
        }
        let e = &mut self.entries[i as usize];
        e.tnext = NIL;
        e.tprev = NIL;
        e.sched = NIL;
    }
}

#[inline(always)]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // Safety: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned part of `[addr, addr + len)`.
fn advise_huge_pages(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) & !(HUGE - 1);
    if end > start {
        // Safety: the range lies inside an allocation this table owns; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents. Failure is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

impl<A: FlowAddr> fmt::Debug for ConnTable<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("buckets", &self.buckets.len())
            .finish()
    }
}
