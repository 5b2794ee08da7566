//! Persistence: map a new flow to an affinity key.

use crate::{Config, Flow};
use alloc::string::String;
use alloc::vec::Vec;

/// A persistence policy (`ipvsadm -p`). The host keeps the templates: flows with the same
/// key go to the same realserver while the template lives.
pub trait Persistence: Default + 'static {
    /// Takes the configuration (the service's `persistence.config`). Default: accepts an
    /// empty one, refuses any key.
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&[])
    }

    /// The affinity key of a new flow, or `None` if it is not persistent.
    fn affinity(&mut self, flow: &Flow) -> Option<u64>;

    /// Private state for a successor. Default: none.
    fn export_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// State from a predecessor. Default: ignored.
    fn import_state(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Exports a [`Persistence`] as the plugin's `ringvs:plugin/persistence` interface.
#[macro_export]
macro_rules! export_persistence {
    ($t:ty) => {
        // On every target: the type must implement the trait (a clear error at this call).
        const _: fn() = || {
            fn __must_implement<T: $crate::Persistence>() {}
            __must_implement::<$t>();
        };
        // The export glue exists only in the component (its export names are not valid
        // symbol names for a native shared library).
        #[cfg(target_family = "wasm")]
        const _: () = {
            use $crate::__wit::persist::exports::ringvs::plugin::persistence as __p;
            use $crate::__wit::types as __t;
            $crate::__ident!();
            struct __RingvsPersistence;
            static __STATE: $crate::rt::Slot<$t> = $crate::rt::Slot::new();
            impl __p::Guest for __RingvsPersistence {
                fn init(config: __t::Config) -> Result<(), $crate::prelude::String> {
                    $crate::rt::persist_init::<$t>(&__STATE, config)
                }
                fn affinity(flow: __t::Flow) -> Option<u64> {
                    $crate::rt::persist_affinity::<$t>(&__STATE, flow)
                }
                fn export_state() -> $crate::prelude::Vec<u8> {
                    $crate::rt::persist_export::<$t>(&__STATE)
                }
                fn import_state(state: $crate::prelude::Vec<u8>) -> Result<(), $crate::prelude::String> {
                    $crate::rt::persist_import::<$t>(&__STATE, &state)
                }
            }
            $crate::__wit::persist::export!(__RingvsPersistence with_types_in $crate::__wit::persist);
        };
    };
}
