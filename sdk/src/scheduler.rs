//! Schedulers: pick a realserver for each new flow.

use crate::{Config, Flow};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

/// A realserver's identity, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerInfo {
    /// Its address.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its configured weight.
    pub weight: u32,
}

/// One realserver as a `pick` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server<'a> {
    /// Its index: what `pick` returns to choose it.
    pub index: usize,
    /// Its current weight; 0 means it must not get new flows.
    pub weight: u32,
    /// Connections in ESTABLISHED (IPVS `activeconns`).
    pub active: u32,
    /// Connections in other states and UDP flows (IPVS `inactconns`).
    pub inactive: u32,
    /// Its identity, from the last `servers_changed`.
    pub info: Option<&'a ServerInfo>,
}

impl Server<'_> {
    /// IPVS's load estimate (`ip_vs_dest_conn_overhead`): active × 256 + inactive.
    pub fn overhead(&self) -> u64 {
        self.load().overhead()
    }

    /// True if it may get new flows (weight above 0).
    pub fn is_available(&self) -> bool {
        self.weight > 0
    }

    fn load(&self) -> ringvs_abi::Server {
        ringvs_abi::Server {
            index: self.index,
            weight: self.weight,
            active: self.active,
            inactive: self.inactive,
        }
    }
}

/// The service's realservers with their current weights and connection counts: the host's
/// packed load ([`ringvs_abi::Load`], the view the director's built-in schedulers use too)
/// with the identities last given by `servers_changed`.
#[derive(Debug, Clone, Copy)]
pub struct Servers<'a> {
    load: ringvs_abi::Load<'a>,
    info: &'a [ServerInfo],
}

impl<'a> Servers<'a> {
    /// A view over the host's packed load (weight, active, inactive per server) and the
    /// identities last given by `servers_changed`.
    pub fn new(load: &'a [u32], info: &'a [ServerInfo]) -> Servers<'a> {
        Servers {
            load: ringvs_abi::Load::new(load),
            info,
        }
    }

    fn with_info(&self, s: ringvs_abi::Server) -> Server<'a> {
        Server {
            index: s.index,
            weight: s.weight,
            active: s.active,
            inactive: s.inactive,
            info: self.info.get(s.index),
        }
    }

    /// Number of realservers.
    pub fn len(&self) -> usize {
        self.load.len()
    }

    /// True if the service has none.
    pub fn is_empty(&self) -> bool {
        self.load.is_empty()
    }

    /// Realserver `i`.
    pub fn get(&self, i: usize) -> Option<Server<'a>> {
        self.load.get(i).map(|s| self.with_info(s))
    }

    /// Every realserver, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = Server<'a>> + 'a {
        let this = *self;
        self.load.iter().map(move |s| this.with_info(s))
    }

    /// The realservers that may get new flows (weight above 0).
    pub fn available(&self) -> impl Iterator<Item = Server<'a>> + 'a {
        self.iter().filter(|s| s.weight > 0)
    }

    /// The index of the available realserver with the least `cost`; the first in
    /// configuration order on a tie (IPVS takes a later one only if strictly less). `None`
    /// when none is available. IPVS's lc: `least(Server::overhead)`.
    pub fn least(&self, cost: impl Fn(&Server<'a>) -> u64) -> Option<usize> {
        self.load.least(|s| cost(&self.with_info(*s)))
    }

    /// The index of the available realserver with the least `cost / weight`, compared as
    /// IPVS does without dividing (`c1 × w2 > c2 × w1`, in 128 bits so that no weight or
    /// cost overflows); the first in configuration order on a tie. IPVS's wlc:
    /// `least_per_weight(Server::overhead)`; sed and nq: `|s| s.active as u64 + 1`.
    pub fn least_per_weight(&self, cost: impl Fn(&Server<'a>) -> u64) -> Option<usize> {
        self.load.least_per_weight(|s| cost(&self.with_info(*s)))
    }
}

/// A scheduler (IPVS `struct ip_vs_scheduler`). One instance runs per director queue.
///
/// The director calls `pick` for each new flow of a service that uses the scheduler, with
/// the service's realservers, their current weights and connection counts. The host keeps
/// the counts; a scheduler keeps only what it needs of its own (a cursor, a table).
pub trait Scheduler: Default + 'static {
    /// Takes the operator's configuration. Default: accepts an empty one, refuses any key.
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&[])
    }

    /// The service's realservers changed (indices in later `pick`s refer to this list).
    /// Default: nothing (the SDK keeps the list for [`Server::info`]).
    fn servers_changed(&mut self, _servers: &[ServerInfo]) {}

    /// Picks a realserver for a new flow: the index of one with weight above 0, or `None`.
    fn pick(&mut self, flow: &Flow, servers: &Servers) -> Option<usize>;

    /// Private state for a successor in a hot swap. Default: none.
    fn export_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// State from a predecessor. Default: ignored.
    fn import_state(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Exports a [`Scheduler`] as the plugin's `ringvs:plugin/scheduler` interface.
///
/// The type must implement `Scheduler` (and so `Default`); a missing or wrong impl is a
/// compile error at the macro call.
#[macro_export]
macro_rules! export_scheduler {
    ($t:ty) => {
        // On every target: the type must implement the trait (a clear error at this call).
        const _: fn() = || {
            fn __must_implement<T: $crate::Scheduler>() {}
            __must_implement::<$t>();
        };
        // The export glue exists only in the component (its export names are not valid
        // symbol names for a native shared library).
        #[cfg(target_family = "wasm")]
        const _: () = {
            use $crate::__wit::sched::exports::ringvs::plugin::scheduler as __s;
            use $crate::__wit::types as __t;
            $crate::__ident!();
            struct __RingvsScheduler;
            static __STATE: $crate::rt::Slot<$crate::rt::SchedState<$t>> = $crate::rt::Slot::new();
            impl __s::Guest for __RingvsScheduler {
                fn init(
                    config: $crate::__wit::types::Config,
                ) -> Result<(), $crate::prelude::String> {
                    $crate::rt::sched_init::<$t>(&__STATE, config)
                }
                fn servers_changed(servers: $crate::prelude::Vec<__t::Server>) {
                    $crate::rt::sched_servers_changed::<$t>(&__STATE, servers)
                }
                fn pick(flow: __t::Flow, load: $crate::prelude::Vec<u32>) -> Option<u32> {
                    $crate::rt::sched_pick::<$t>(&__STATE, flow, &load)
                }
                fn export_state() -> $crate::prelude::Vec<u8> {
                    $crate::rt::sched_export::<$t>(&__STATE)
                }
                fn import_state(
                    state: $crate::prelude::Vec<u8>,
                ) -> Result<(), $crate::prelude::String> {
                    $crate::rt::sched_import::<$t>(&__STATE, &state)
                }
            }
    $crate::__wit::sched::export!(__RingvsScheduler with_types_in $crate::__wit::sched);
        };
    };
}
