//! Built-in schedulers, native and statically dispatched (smoltcp's `AnyController`): the
//! director forwards with no plugin loaded, and they take over when a plugin fails.

mod rr;
mod wlc;

pub use rr::RoundRobin;
pub use wlc::WeightedLeastConn;

use crate::dataplane::service::Dest;

/// A built-in scheduler instance (one per service per queue).
#[derive(Debug, Clone)]
pub enum Builtin {
    /// Round robin (`rr`).
    Rr(RoundRobin),
    /// Weighted least-connection (`wlc`, IPVS's default).
    Wlc(WeightedLeastConn),
}

impl Builtin {
    /// The built-in called `name`.
    pub fn by_name(name: &str) -> Option<Builtin> {
        match name {
            "rr" => Some(Builtin::Rr(RoundRobin::default())),
            "wlc" => Some(Builtin::Wlc(WeightedLeastConn)),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Rr(_) => "rr",
            Builtin::Wlc(_) => "wlc",
        }
    }

    /// Picks a realserver for a new flow: an index into `dests`, or `None` if none is
    /// available (all quiesced, removed, down or overloaded).
    #[inline]
    pub fn pick(&mut self, dests: &[Dest]) -> Option<usize> {
        match self {
            Builtin::Rr(s) => s.pick(dests),
            Builtin::Wlc(s) => s.pick(dests),
        }
    }
}

#[cfg(test)]
mod tests;
