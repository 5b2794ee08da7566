//! Built-in schedulers, native and statically dispatched (smoltcp's `AnyController`): the
//! director forwards with no plugin loaded, and they take over when a plugin fails.
//!
//! They read the same packed load view a plugin is handed ([`ringvs_abi::Load`]: weight,
//! active, inactive per realserver, weight 0 for one that may not take new flows), so the
//! fallback and a plugin decide from the same numbers, and this module knows nothing of the
//! data plane.

mod rr;
mod wlc;

pub use rr::RoundRobin;
pub use wlc::WeightedLeastConn;

use ringvs_abi::Load;

/// The names of the built-in schedulers: the one list config validation and the data
/// plane both use.
pub const NAMES: &[&str] = &["rr", "wlc"];

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

    /// wlc, the last fallback of every service.
    pub fn wlc() -> Builtin {
        Builtin::Wlc(WeightedLeastConn)
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Rr(_) => "rr",
            Builtin::Wlc(_) => "wlc",
        }
    }

    /// Picks a realserver for a new flow: an index into `load`, or `None` if none is
    /// available (every weight 0: quiesced, removed, down or overloaded).
    #[inline]
    pub fn pick(&mut self, load: Load<'_>) -> Option<usize> {
        match self {
            Builtin::Rr(s) => s.pick(load),
            Builtin::Wlc(s) => s.pick(load),
        }
    }
}

#[cfg(test)]
mod tests;
