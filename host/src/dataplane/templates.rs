//! Persistence templates (IPVS's connection templates, `ip_vs_sched_persist`), shared by every
//! queue.
//!
//! A template maps `(service, affinity key)` to a realserver for the service's
//! `persistence.timeout`. Flows are steered to queues by a hash of their own 5-tuple, so the
//! clients of one network land on every queue: the templates must be visible to all of them.
//! They live here, in one store shared by the queues, and are touched **only on the new-flow
//! path** (a lookup, a refresh, a new template), when a connection a template controls ends,
//! and by a once-a-second sweep — never for a packet of an established flow.
//!
//! # Semantics (IPVS)
//!
//! - A new flow of a persistent service with key `k` looks up `(svc, k)`. A template is
//!   *valid* if its realserver is still in the service (not removed), not marked down by a
//!   health check, and — with `expire_quiescent_template` — has a weight above 0
//!   (`ip_vs_check_template`). A valid template sends the flow to its realserver, counts the
//!   flow in its `n_control` and is refreshed to `now + timeout`. An invalid one is unhashed
//!   (no flow finds it again) and the flow is scheduled: a new template is made for the pick.
//! - A template does not expire while it controls connections (`n_control > 0`, IPVS re-arms
//!   the timer instead of freeing it). It expires once its timeout has passed *and* its last
//!   connection has ended.
//! - A template counts in its realserver's `PersistConn` (`persistconns`), never in
//!   `ActiveConn`/`InActConn`, so it takes no part in thresholds or least-connection
//!   scheduling.
//! - ringvs, unlike IPVS, also respects the upper threshold for persistent clients: a valid
//!   template whose realserver is overloaded ([`Bind::Busy`]) lets the flow be scheduled
//!   elsewhere *without* persistence, and keeps the template, so the client returns to its
//!   realserver once that is below its lower threshold. (IPVS sends persistent flows to an
//!   overloaded realserver; `DEST_F_OVERLOAD` only stops its schedulers.)
//!
//! # Layout and memory
//!
//! [`STRIPES`] stripes, each a `Mutex` over a fixed slab of [`TemplateStore::ENTRY_BYTES`]-byte
//! entries chained from a bucket array, as the connection table. A keyed SipHash of
//! `(svc, key)` picks the stripe and the bucket (the key is the operator's clients' addresses
//! in disguise: unkeyed, they could pile into one chain). The budget is
//! `director.template_memory_limit`, split evenly over the stripes and reserved (not touched)
//! at start; a stripe that is full first frees its expired templates, then refuses the new
//! template: the flow is dropped as `template_full` (IPVS drops a flow whose template cannot
//! be allocated) and counted in [`TemplateStore::refused`]. A connection controlled by a
//! template keeps the template's [`TemplateId`] in its queue's link column (4 bytes per
//! connection slot, see `Shard`), which is how `n_control` goes down when it ends.

use super::service::{DestState, DEST_F_DOWN, DEST_F_OVERLOAD, DEST_F_REMOVED};
use crate::conn::{reached, HashKey, Tick};
use core::hash::Hasher;
use siphasher::sip::SipHasher13;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Stripes (independent locks) of the store.
pub const STRIPES: usize = 64;
/// Most entries one sweep looks at per stripe (a stripe lock is held for at most this many).
pub const SWEEP_BUDGET: usize = 32_768;
/// Least entries per stripe.
const MIN_PER_STRIPE: usize = 4;
const NIL: u32 = u32::MAX;
const F_LIVE: u8 = 1;
const F_HASHED: u8 = 2;

/// A template's slot: what a controlled connection keeps to release it when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateId(pub u32);

/// The outcome of a lookup for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// A valid template sends the flow to realserver slot `dest`; the flow is now one of
    /// the connections it controls (release it with [`TemplateStore::release`]).
    Bound {
        /// The template.
        id: TemplateId,
        /// Its realserver's slot.
        dest: u32,
    },
    /// A valid template exists but its realserver is over its upper threshold: schedule the
    /// flow normally, without persistence; the template stays.
    Busy,
    /// No valid template: schedule the flow and make one.
    Missing,
}

/// The store is at its memory budget: the template was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A template as `ringvs list --connections` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Service slot.
    pub svc: u16,
    /// The affinity key.
    pub key: u64,
    /// Realserver slot.
    pub dest: u32,
    /// Tick at which it expires (if it controls no connection by then).
    pub expires: Tick,
    /// Connections it controls.
    pub controls: u32,
}

/// Occupancy of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemplateStats {
    /// Live templates (including invalidated ones that still control connections).
    pub entries: u64,
    /// Most templates the budget allows.
    pub capacity: u64,
    /// Bytes used: live entries and the bucket arrays.
    pub memory_bytes: u64,
    /// Bytes the store uses full (what the budget is checked against).
    pub memory_limit: u64,
    /// Templates refused at the budget.
    pub refused: u64,
}

struct Tpl {
    key: u64,
    dest: Option<Arc<DestState>>,
    svc: u16,
    flags: u8,
    dest_id: u32,
    expires: Tick,
    n_control: u32,
    next: u32,
}

// Templates stay as small as connection entries (the budget's arithmetic assumes it).
const _: () = assert!(TemplateStore::ENTRY_BYTES <= 40);

impl Tpl {
    const VACANT: Tpl = Tpl {
        key: 0,
        dest: None,
        svc: 0,
        flags: 0,
        dest_id: 0,
        expires: 0,
        n_control: 0,
        next: NIL,
    };
}

struct Stripe {
    entries: Vec<Tpl>,
    /// Chain heads, index + 1 (0: empty).
    buckets: Box<[u32]>,
    free: u32,
    len: u32,
    /// Where the next sweep continues.
    cursor: u32,
}

/// The persistence templates of every service, shared by the queues.
pub struct TemplateStore {
    stripes: Box<[Mutex<Stripe>]>,
    per_stripe: u32,
    mask: u32,
    key: HashKey,
    expire_quiescent: AtomicBool,
    refused: AtomicU64,
}

impl std::fmt::Debug for TemplateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateStore")
            .field("capacity", &(self.per_stripe as usize * STRIPES))
            .finish()
    }
}

impl Default for TemplateStore {
    /// A store of 1 MiB with a random key (tests, replay).
    fn default() -> Self {
        TemplateStore::new(1 << 20, HashKey::random()).expect("1 MiB holds templates")
    }
}

/// The budget cannot hold a useful store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateBudgetTooSmall {
    /// The least budget.
    pub minimum: usize,
}

impl std::fmt::Display for TemplateBudgetTooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "template_memory_limit is too small: at least {} bytes are needed",
            self.minimum
        )
    }
}

impl std::error::Error for TemplateBudgetTooSmall {}

fn lock(m: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    // A panic while holding a stripe cannot leave it half-updated in a way later calls
    // trip over (every update is a few plain stores): keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TemplateStore {
    /// Bytes one template occupies in its slab.
    pub const ENTRY_BYTES: usize = core::mem::size_of::<Tpl>();

    /// A store whose slabs and bucket arrays fit in `memory_limit` bytes (reserved, not
    /// touched), hashed under `key`.
    pub fn new(memory_limit: usize, key: HashKey) -> Result<TemplateStore, TemplateBudgetTooSmall> {
        let per = memory_limit / STRIPES;
        let even = per / (Self::ENTRY_BYTES + 4);
        if even < MIN_PER_STRIPE {
            return Err(TemplateBudgetTooSmall {
                minimum: STRIPES * MIN_PER_STRIPE * (Self::ENTRY_BYTES + 4),
            });
        }
        let nbuckets = 1usize << (usize::BITS - 1 - even.leading_zeros());
        let cap = ((per - nbuckets * 4) / Self::ENTRY_BYTES).min((u32::MAX as usize - 1) / STRIPES);
        let stripes = (0..STRIPES)
            .map(|_| {
                Mutex::new(Stripe {
                    entries: Vec::with_capacity(cap),
                    buckets: vec![0u32; nbuckets].into_boxed_slice(),
                    free: NIL,
                    len: 0,
                    cursor: 0,
                })
            })
            .collect();
        Ok(TemplateStore {
            stripes,
            per_stripe: cap as u32,
            mask: (nbuckets - 1) as u32,
            key,
            expire_quiescent: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        })
    }

    /// IPVS `expire_quiescent_template`: templates of weight-0 realservers are invalid.
    pub fn set_expire_quiescent(&self, on: bool) {
        self.expire_quiescent.store(on, Relaxed);
    }

    /// Whether `expire_quiescent_template` is on.
    pub fn expire_quiescent(&self) -> bool {
        self.expire_quiescent.load(Relaxed)
    }

    /// Templates refused at the budget so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Most templates the budget allows.
    pub fn capacity(&self) -> usize {
        self.per_stripe as usize * STRIPES
    }

    #[inline]
    fn hash(&self, svc: u16, key: u64) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.key.0[0], self.key.0[1]);
        h.write_u64(key);
        h.write_u16(svc);
        h.finish()
    }

    #[inline]
    fn place(&self, svc: u16, key: u64) -> (usize, usize) {
        let h = self.hash(svc, key);
        (
            h as usize % STRIPES,
            ((h >> 32) as u32 & self.mask) as usize,
        )
    }

    /// Looks up the template of `(svc, key)` for a new flow at `now`: see [`Bind`]. A bound
    /// template is refreshed to `now + timeout` (ticks).
    pub fn find(&self, svc: u16, key: u64, now: Tick, timeout: Tick) -> Bind {
        let (si, b) = self.place(svc, key);
        let mut s = lock(&self.stripes[si]);
        self.find_in(&mut s, si, b, svc, key, now, timeout)
    }

    /// Makes the template of `(svc, key)` point at realserver `dest` (slot `dest_id`), bound
    /// to the new flow, unless another queue made a valid one meanwhile: that one is used
    /// then (its [`Bind`] is returned). Fails when the budget is used up.
    pub fn create(
        &self,
        svc: u16,
        key: u64,
        dest_id: u32,
        dest: &Arc<DestState>,
        now: Tick,
        timeout: Tick,
    ) -> Result<Bind, Full> {
        let (si, b) = self.place(svc, key);
        let mut s = lock(&self.stripes[si]);
        match self.find_in(&mut s, si, b, svc, key, now, timeout) {
            Bind::Missing => {}
            other => return Ok(other),
        }
        let i = self.insert(
            &mut s,
            b,
            Tpl {
                key,
                dest: Some(dest.clone()),
                svc,
                flags: F_LIVE | F_HASHED,
                dest_id,
                expires: now.wrapping_add(timeout),
                n_control: 1,
                next: NIL,
            },
            now,
        )?;
        Ok(Bind::Bound {
            id: TemplateId(si as u32 * self.per_stripe + i),
            dest: dest_id,
        })
    }

    /// A connection the template controlled has ended. An invalidated template that
    /// controls nothing more is freed at once (nothing can find it any more).
    pub fn release(&self, id: TemplateId) {
        let (si, i) = ((id.0 / self.per_stripe) as usize, id.0 % self.per_stripe);
        let Some(m) = self.stripes.get(si) else {
            return;
        };
        let mut s = lock(m);
        let Some(t) = s.entries.get_mut(i as usize) else {
            return;
        };
        if t.flags & F_LIVE == 0 {
            return;
        }
        t.n_control = t.n_control.saturating_sub(1);
        if t.n_control == 0 && t.flags & F_HASHED == 0 {
            Self::free(&mut s, i);
        }
    }

    /// Frees the expired templates (timeout passed, no connection left) of the stripes
    /// `part, part + parts, …`, looking at most at [`SWEEP_BUDGET`] entries of each. Each
    /// queue sweeps its share once a second. Returns the templates freed.
    pub fn sweep(&self, now: Tick, part: usize, parts: usize) -> usize {
        let mut n = 0;
        for si in (part % parts.max(1)..STRIPES).step_by(parts.max(1)) {
            let mut s = lock(&self.stripes[si]);
            n += self.sweep_stripe(&mut s, now, SWEEP_BUDGET);
        }
        n
    }

    /// Occupancy (locks each stripe briefly).
    pub fn stats(&self) -> TemplateStats {
        let mut entries = 0u64;
        let mut buckets = 0u64;
        for m in self.stripes.iter() {
            let s = lock(m);
            entries += s.len as u64;
            buckets += s.buckets.len() as u64;
        }
        TemplateStats {
            entries,
            capacity: self.capacity() as u64,
            memory_bytes: entries * Self::ENTRY_BYTES as u64 + buckets * 4,
            memory_limit: self.capacity() as u64 * Self::ENTRY_BYTES as u64 + buckets * 4,
            refused: self.refused(),
        }
    }

    /// Up to `max` templates that flows can still find (for listings).
    pub fn list(&self, max: usize) -> Vec<TemplateInfo> {
        let mut out = Vec::new();
        for m in self.stripes.iter() {
            let s = lock(m);
            for t in &s.entries {
                if out.len() >= max {
                    return out;
                }
                if t.flags & F_HASHED != 0 {
                    out.push(TemplateInfo {
                        svc: t.svc,
                        key: t.key,
                        dest: t.dest_id,
                        expires: t.expires,
                        controls: t.n_control,
                    });
                }
            }
        }
        out
    }

    /// Template `id` as sync sends it with a connection it controls, if flows can still
    /// find it (not invalidated, not freed).
    pub fn info(&self, id: TemplateId) -> Option<TemplateInfo> {
        let (si, i) = ((id.0 / self.per_stripe) as usize, id.0 % self.per_stripe);
        let s = lock(self.stripes.get(si)?);
        let t = s.entries.get(i as usize)?;
        (t.flags & F_HASHED != 0).then_some(TemplateInfo {
            svc: t.svc,
            key: t.key,
            dest: t.dest_id,
            expires: t.expires,
            controls: t.n_control,
        })
    }

    /// A template a peer director sent (connection sync): `(svc, key)` → realserver `dest`
    /// (slot `dest_id`) for `ttl` ticks from `now`. A template already here is repointed
    /// and given the peer's expiry, unless `keep_live` and it controls connections here (this director
    /// decides its own then). Returns whether it was taken; refused at the budget as
    /// [`TemplateStore::create`] is.
    pub fn adopt(
        &self,
        svc: u16,
        key: u64,
        dest_id: u32,
        dest: &Arc<DestState>,
        (now, ttl): (Tick, Tick),
        keep_live: bool,
    ) -> Result<bool, Full> {
        let expires = now.wrapping_add(ttl);
        let (si, b) = self.place(svc, key);
        let mut s = lock(&self.stripes[si]);
        let mut i = s.buckets[b].wrapping_sub(1);
        while i != NIL {
            let t = &s.entries[i as usize];
            if t.key == key && t.svc == svc {
                break;
            }
            i = t.next;
        }
        if i != NIL {
            let t = &mut s.entries[i as usize];
            if keep_live && t.n_control > 0 {
                return Ok(false);
            }
            if t.dest_id != dest_id || t.dest.as_ref().is_none_or(|d| !Arc::ptr_eq(d, dest)) {
                if let Some(old) = t.dest.replace(dest.clone()) {
                    old.counters.template(false);
                }
                dest.counters.template(true);
                t.dest_id = dest_id;
            }
            t.expires = expires;
            return Ok(true);
        }
        self.insert(
            &mut s,
            b,
            Tpl {
                key,
                dest: Some(dest.clone()),
                svc,
                flags: F_LIVE | F_HASHED,
                dest_id,
                expires,
                n_control: 0,
                next: NIL,
            },
            now,
        )?;
        Ok(true)
    }

    /// Puts `t` in a free slot of stripe `s`, at the head of bucket `b`'s chain, counted in
    /// its realserver's templates. A full stripe first frees what has expired at `now`;
    /// still full, the template is refused (and counted).
    fn insert(&self, s: &mut Stripe, b: usize, mut t: Tpl, now: Tick) -> Result<u32, Full> {
        let i = match self.alloc(s) {
            Some(i) => i,
            None => {
                self.sweep_stripe(s, now, usize::MAX);
                self.alloc(s).ok_or_else(|| {
                    self.refused.fetch_add(1, Relaxed);
                    Full
                })?
            }
        };
        t.next = s.buckets[b].wrapping_sub(1);
        if let Some(d) = &t.dest {
            d.counters.template(true);
        }
        s.entries[i as usize] = t;
        s.buckets[b] = i + 1;
        s.len += 1;
        Ok(i)
    }

    #[allow(clippy::too_many_arguments)]
    fn find_in(
        &self,
        s: &mut Stripe,
        si: usize,
        b: usize,
        svc: u16,
        key: u64,
        now: Tick,
        timeout: Tick,
    ) -> Bind {
        let mut i = s.buckets[b].wrapping_sub(1);
        while i != NIL {
            let t = &s.entries[i as usize];
            if t.key == key && t.svc == svc {
                break;
            }
            i = t.next;
        }
        if i == NIL {
            return Bind::Missing;
        }
        let t = &s.entries[i as usize];
        if t.n_control == 0 && reached(now, t.expires) {
            // Expired; the sweep has not come by yet.
            Self::unhash(s, b, i);
            Self::free(s, i);
            return Bind::Missing;
        }
        let flags = t.dest.as_ref().map_or(DEST_F_REMOVED, |d| d.flags());
        let quiesced = self.expire_quiescent() && t.dest.as_ref().is_none_or(|d| d.weight() == 0);
        if flags & (DEST_F_REMOVED | DEST_F_DOWN) != 0 || quiesced {
            // IPVS ip_vs_check_template: invalidate it; it lives on (unfindable) while it
            // controls connections.
            Self::unhash(s, b, i);
            if s.entries[i as usize].n_control == 0 {
                Self::free(s, i);
            }
            return Bind::Missing;
        }
        if flags & DEST_F_OVERLOAD != 0 {
            return Bind::Busy;
        }
        let t = &mut s.entries[i as usize];
        t.n_control += 1;
        t.expires = now.wrapping_add(timeout);
        Bind::Bound {
            id: TemplateId(si as u32 * self.per_stripe + i),
            dest: t.dest_id,
        }
    }

    fn alloc(&self, s: &mut Stripe) -> Option<u32> {
        if s.free != NIL {
            let i = s.free;
            s.free = s.entries[i as usize].next;
            Some(i)
        } else if s.entries.len() < self.per_stripe as usize {
            s.entries.push(Tpl::VACANT);
            Some((s.entries.len() - 1) as u32)
        } else {
            None
        }
    }

    /// Takes entry `i` out of bucket `b`'s chain (it stays live).
    fn unhash(s: &mut Stripe, b: usize, i: u32) {
        let next = s.entries[i as usize].next;
        if s.buckets[b].wrapping_sub(1) == i {
            s.buckets[b] = next.wrapping_add(1);
        } else {
            let mut p = s.buckets[b].wrapping_sub(1);
            while p != NIL {
                let pn = s.entries[p as usize].next;
                if pn == i {
                    s.entries[p as usize].next = next;
                    break;
                }
                p = pn;
            }
        }
        let t = &mut s.entries[i as usize];
        t.flags &= !F_HASHED;
        t.next = NIL;
    }

    /// Frees entry `i` (unhashed already), uncounting it from its realserver.
    fn free(s: &mut Stripe, i: u32) {
        let t = std::mem::replace(&mut s.entries[i as usize], Tpl::VACANT);
        if let Some(d) = t.dest {
            d.counters.template(false);
        }
        s.entries[i as usize].next = s.free;
        s.free = i;
        s.len -= 1;
    }

    fn sweep_stripe(&self, s: &mut Stripe, now: Tick, budget: usize) -> usize {
        let n = s.entries.len();
        if n == 0 {
            return 0;
        }
        let mut freed = 0;
        let mut i = (s.cursor as usize) % n;
        for _ in 0..budget.min(n) {
            let t = &s.entries[i];
            if t.flags & F_HASHED != 0 && t.n_control == 0 && reached(now, t.expires) {
                let (_, b) = self.place(t.svc, t.key);
                Self::unhash(s, b, i as u32);
                Self::free(s, i as u32);
                freed += 1;
            }
            i = (i + 1) % n;
        }
        s.cursor = i as u32;
        freed
    }
}

#[cfg(test)]
mod tests;
