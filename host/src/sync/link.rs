//! What the queues and the sync thread ([`super::node`]) share: the role, IPVS's
//! `sync_threshold`/`sync_period`, the counters, and each queue's bounded way out.
//!
//! A queue never waits on sync: an entry it cannot queue (the sync thread is behind, or the
//! rate bound holds it) is counted in `queue_full` and dropped; the entry is sent again at its
//! next due packet or state change, and a peer that missed it still has the rest.

use super::{Entry, Reject};
use crate::config::SyncRole;
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

/// Entries a queue may have waiting for the sync thread.
pub const QUEUE_DEPTH: usize = 16_384;

/// Sync's counters (`ringvs ha status`, the `ringvs_sync_*` metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries the queues queued for sending.
    pub queued: AtomicU64,
    /// Entries a queue could not queue (the sync thread behind): not sent.
    pub queue_full: AtomicU64,
    /// Entries sent (each once per message, whatever the number of peers).
    pub sent_entries: AtomicU64,
    /// Messages sent, per peer (heartbeats and bulk transfers included).
    pub sent_messages: AtomicU64,
    /// Messages that could not be sent (the socket's error).
    pub send_errors: AtomicU64,
    /// Messages received and taken.
    pub received_messages: AtomicU64,
    /// Entries received in taken messages.
    pub received_entries: AtomicU64,
    /// Received entries the table took (new ones and updates).
    pub applied: AtomicU64,
    /// Received entries not taken: no such service or realserver here, a full table, or a
    /// connection of this director's own (`ringvs ha status` explains).
    pub ignored: AtomicU64,
    /// Messages refused, by [`Reject`] reason (in [`Reject::ALL`]'s order).
    pub rejected: [AtomicU64; Reject::ALL.len()],
    /// Peers' messages lost: sequence numbers that left the replay window untaken.
    pub lost: AtomicU64,
    /// Bulk transfers sent to peers that joined, and entries in them.
    pub bulk_sent: AtomicU64,
    /// Bulk transfers received complete.
    pub bulk_received: AtomicU64,
    /// The longest an entry waited in the sync thread before its message left, over the
    /// last second, microseconds (the sync lag on this side).
    pub lag_us: AtomicU64,
}

impl Stats {
    /// Counts a refused message.
    pub fn reject(&self, r: Reject) {
        if let Some(i) = Reject::ALL.iter().position(|x| *x == r) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }
}

/// Director-wide sync state.
#[derive(Debug)]
pub struct Link {
    role: AtomicU8,
    /// IPVS `sync_threshold`: an entry is first sent at its client's n-th packet.
    pub threshold: u32,
    /// IPVS `sync_period`: then again every `period` packets.
    pub period: u32,
    /// The counters.
    pub stats: Stats,
}

fn role_code(r: SyncRole) -> u8 {
    match r {
        SyncRole::Master => 0,
        SyncRole::Backup => 1,
        SyncRole::Active => 2,
    }
}

impl Link {
    /// A link starting in `role`.
    pub fn new(role: SyncRole, threshold: u32, period: u32) -> Link {
        Link {
            role: AtomicU8::new(role_code(role)),
            threshold: threshold.max(1),
            period: period.max(1),
            stats: Stats::default(),
        }
    }

    /// The current role.
    pub fn role(&self) -> SyncRole {
        match self.role.load(Relaxed) {
            0 => SyncRole::Master,
            2 => SyncRole::Active,
            _ => SyncRole::Backup,
        }
    }

    /// Sets the role (the queues are told to promote held entries separately).
    pub fn set_role(&self, r: SyncRole) {
        self.role.store(role_code(r), Relaxed);
    }

    /// True if an entry whose client has sent `in_pkts` packets is due to be sent: at the
    /// threshold, then every period (IPVS `ip_vs_sync_conn`'s v1 rule).
    #[inline]
    pub fn due(&self, in_pkts: u32) -> bool {
        in_pkts == self.threshold
            || (in_pkts > self.threshold && (in_pkts - self.threshold).is_multiple_of(self.period))
    }
}

/// One queue's end: the link and its way to the sync thread.
#[derive(Debug, Clone)]
pub struct QueueSync {
    /// The director's link.
    pub link: Arc<Link>,
    /// Bounded ([`QUEUE_DEPTH`]); never waited on.
    pub tx: Sender<Entry>,
}

impl QueueSync {
    /// Queues `e` for sending if this director's role sends; never waits.
    #[inline]
    pub fn send(&self, e: Entry) {
        if !self.link.role().sends() {
            return;
        }
        match self.tx.try_send(e) {
            Ok(()) => self.link.stats.queued.fetch_add(1, Relaxed),
            Err(_) => self.link.stats.queue_full.fetch_add(1, Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_the_threshold_then_every_period() {
        let l = Link::new(SyncRole::Master, 3, 50);
        let due: Vec<u32> = (0..200).filter(|n| l.due(*n)).collect();
        assert_eq!(due, [3, 53, 103, 153]);
        let l = Link::new(SyncRole::Master, 1, 1);
        assert!((1..10).all(|n| l.due(n)));
        assert!(!l.due(0));
    }

    #[test]
    fn a_backup_queues_nothing_and_a_full_queue_never_waits() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let q = QueueSync {
            link: Arc::new(Link::new(SyncRole::Backup, 3, 50)),
            tx,
        };
        let e = super::super::tests::sample_entry(1);
        q.send(e);
        assert!(rx.is_empty());
        q.link.set_role(SyncRole::Active);
        for _ in 0..5 {
            q.send(e);
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(q.link.stats.queued.load(Relaxed), 2);
        assert_eq!(q.link.stats.queue_full.load(Relaxed), 3);
    }
}
