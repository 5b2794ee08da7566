//! A service's persistence plugin in one queue: the [`PolicySlot`] whose instance answers
//! `affinity` for new flows. The templates themselves are the host's ([`super::templates`]),
//! so replacing the instance — a reload that swaps the plugin, or a fresh one after a fault —
//! loses nothing.
//!
//! Without an answer (the instance poisoned, or not yet delivered) the flow is scheduled
//! normally, as if the service were not persistent, and the fallback is counted.

use super::policy::{Ctx, Func, PolicySlot, Prepared};
use crate::plugin::{flow, PersistenceInstance};
use std::net::SocketAddr;

/// A persistence plugin prepared for a snapshot; its extra is the configuration its
/// instances were given (the service's `persistence.config`, flattened).
pub type PluginPersist = Prepared<PersistenceInstance, Vec<(String, String)>>;

/// A service's persistence in one queue.
pub type PersistSlot = PolicySlot<PersistenceInstance, Vec<(String, String)>>;

/// The affinity key of a new flow, or `None` (not persistent: no key, or no usable
/// instance).
#[inline]
pub fn affinity(
    slot: &mut PersistSlot,
    proto: u8,
    client: SocketAddr,
    vip: SocketAddr,
    ctx: &mut Ctx<'_>,
) -> Option<u64> {
    let flow = flow(proto, client, vip);
    slot.call(Func::Affinity, ctx, |i| i.affinity(&flow))
        .flatten()
}
