//! Per-realserver connection counts, shared by all data-plane threads.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// IPVS's per-destination counts (`activeconns`, `inactconns`, `persistconns`).
///
/// Updated only when a connection is created, changes between ESTABLISHED and another state,
/// or ends: never per packet of an established flow.
#[derive(Debug, Default)]
pub struct DestCounters {
    active: AtomicU32,
    inactive: AtomicU32,
    persistent: AtomicU32,
}

impl DestCounters {
    /// Connections in ESTABLISHED (`ActiveConn`).
    pub fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// Connections in any other state, and UDP flows (`InActConn`).
    pub fn inactive(&self) -> u32 {
        self.inactive.load(Relaxed)
    }

    /// Persistence templates pointing here (`PersistConn`).
    pub fn persistent(&self) -> u32 {
        self.persistent.load(Relaxed)
    }

    /// IPVS's load estimate `ip_vs_dest_conn_overhead`: active × 256 + inactive.
    pub fn overhead(&self) -> u64 {
        ((self.active() as u64) << 8) + self.inactive() as u64
    }

    /// A connection was bound here, counted as active or not.
    pub fn bind(&self, active: bool) {
        if active {
            self.active.fetch_add(1, Relaxed);
        } else {
            self.inactive.fetch_add(1, Relaxed);
        }
    }

    /// A connection bound here ended.
    pub fn unbind(&self, active: bool) {
        let c = if active { &self.active } else { &self.inactive };
        // Never wrap below zero, whatever the order of events.
        let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }

    /// A connection moved between active and inactive.
    pub fn flip(&self, now_active: bool) {
        self.unbind(!now_active);
        self.bind(now_active);
    }

    /// A persistence template was created (`true`) or expired (`false`).
    pub fn template(&self, created: bool) {
        if created {
            self.persistent.fetch_add(1, Relaxed);
        } else {
            let _ = self
                .persistent
                .fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
        }
    }
}
