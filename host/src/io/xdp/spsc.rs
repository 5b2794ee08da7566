//! A bounded single-producer single-consumer ring of `u64`s between two queue threads: how a
//! frame that arrived on the wrong queue reaches the queue that owns its flow, and how a
//! frame goes back to the queue whose share of the UMEM it belongs to.
//!
//! The producer and consumer halves are separate values (neither is `Clone`), so the one
//! producer and one consumer rule is kept by ownership. Each half caches the other's index
//! and reads it again only when the ring looks full (producer) or empty (consumer).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// An index on its own cache line, so that the producer's and the consumer's writes do not
/// contend.
#[repr(align(64))]
struct Padded(AtomicUsize);

struct Shared {
    slots: Box<[UnsafeCell<u64>]>,
    mask: usize,
    /// Next slot the consumer reads.
    head: Padded,
    /// Next slot the producer writes.
    tail: Padded,
}

// Safety: a slot is written only by the producer while it is free (between head and
// head + capacity, outside [head, tail)) and read only by the consumer once published (in
// [head, tail)); the indexes are atomics with release/acquire ordering.
unsafe impl Sync for Shared {}
// Safety: as above; the slots hold plain integers.
unsafe impl Send for Shared {}

/// The writing half.
pub struct Producer {
    ring: Arc<Shared>,
    tail: usize,
    head_cache: usize,
}

/// The reading half.
pub struct Consumer {
    ring: Arc<Shared>,
    head: usize,
    tail_cache: usize,
}

/// A ring of at least `capacity` entries (rounded up to a power of two).
pub fn ring(capacity: usize) -> (Producer, Consumer) {
    let cap = capacity.max(2).next_power_of_two();
    let ring = Arc::new(Shared {
        slots: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
        mask: cap - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            head_cache: 0,
        },
        Consumer {
            ring,
            head: 0,
            tail_cache: 0,
        },
    )
}

impl Producer {
    /// Writes `v`; visible to the consumer after [`Producer::publish`]. False if full.
    #[inline]
    pub fn push(&mut self, v: u64) -> bool {
        let cap = self.ring.mask + 1;
        if self.tail.wrapping_sub(self.head_cache) >= cap {
            self.head_cache = self.ring.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) >= cap {
                return false;
            }
        }
        // Safety: the slot is outside [head, tail): the consumer does not read it, and only
        // this (single) producer writes.
        unsafe { *self.ring.slots[self.tail & self.ring.mask].get() = v };
        self.tail = self.tail.wrapping_add(1);
        true
    }

    /// Makes everything pushed so far visible.
    #[inline]
    pub fn publish(&self) {
        self.ring.tail.0.store(self.tail, Ordering::Release);
    }
}

impl Consumer {
    /// The next entry, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<u64> {
        if self.head == self.tail_cache {
            self.tail_cache = self.ring.tail.0.load(Ordering::Acquire);
            if self.head == self.tail_cache {
                return None;
            }
        }
        // Safety: the slot is in [head, tail), published by the producer's release store
        // that the acquire load above observed; only this (single) consumer reads it.
        let v = unsafe { *self.ring.slots[self.head & self.ring.mask].get() };
        self.head = self.head.wrapping_add(1);
        Some(v)
    }

    /// Gives the slots popped so far back to the producer.
    #[inline]
    pub fn release(&self) {
        self.ring.head.0.store(self.head, Ordering::Release);
    }

    /// True if nothing is published beyond what was popped.
    pub fn is_empty(&self) -> bool {
        self.head == self.ring.tail.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_drains_and_wraps() {
        let (mut p, mut c) = ring(4);
        for round in 0..3u64 {
            for i in 0..4 {
                assert!(p.push(round * 10 + i));
            }
            assert!(!p.push(99), "full at capacity");
            assert_eq!(c.pop(), None, "nothing visible before publish");
            p.publish();
            for i in 0..4 {
                assert_eq!(c.pop(), Some(round * 10 + i));
            }
            assert_eq!(c.pop(), None);
            assert!(!p.push(99), "still full until the consumer releases");
            c.release();
        }
    }

    #[test]
    fn two_threads_see_every_value_in_order() {
        let (mut p, mut c) = ring(64);
        let n = 200_000u64;
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                if p.push(i) {
                    i += 1;
                    if i % 7 == 0 {
                        p.publish();
                    }
                } else {
                    p.publish();
                    std::hint::spin_loop();
                }
            }
            p.publish();
        });
        let mut want = 0;
        while want < n {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, want);
                    want += 1;
                }
                None => {
                    c.release();
                    std::hint::spin_loop();
                }
            }
        }
        t.join().unwrap();
    }
}
