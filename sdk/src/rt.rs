//! What the export macros expand to: the instance's state and the glue between the
//! generated bindings and the traits. On wasm (without the `std` feature) also the runtime a
//! `no_std` plugin needs: the allocator, `cabi_realloc` and a panic handler that traps.

use crate::__wit::def::exports::ringvs::plugin::defense as wd;
use crate::__wit::def::ringvs::plugin::table as wt;
use crate::__wit::types;
use crate::defense::{
    Action, BlockMode, Entry, Prefix, SourceRate, SourceStats, TcpState, TickStats, Verdict,
};
use crate::flow::{ip_from_wit, ip_to_wit};
use crate::{Config, Defense, Flow, Persistence, Scheduler, ServerInfo, Servers};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

/// `s` as an array of its `N` bytes (`N` = `s.len()`), for the ident custom section that
/// [`crate::__ident!`] puts in every plugin.
pub const fn ident_bytes<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// The plugin's crate name and version, `"NAME VERSION"`, in the custom section
/// `ringvs_abi::IDENT_SECTION` of the component: what `ringvs plugin list --available` shows.
/// Every export macro expands it once, in the plugin's crate (so `CARGO_PKG_*` are the
/// plugin's).
#[doc(hidden)]
#[macro_export]
macro_rules! __ident {
    () => {
        #[unsafe(link_section = "ringvs-plugin")]
        #[used]
        static __RINGVS_PLUGIN_IDENT: [u8; concat!(
            env!("CARGO_PKG_NAME"),
            " ",
            env!("CARGO_PKG_VERSION")
        )
        .len()] = $crate::rt::ident_bytes(concat!(
            env!("CARGO_PKG_NAME"),
            " ",
            env!("CARGO_PKG_VERSION")
        ));
    };
}

/// The plugin instance's state.
///
/// A component instance runs one call at a time on one thread (wasm32 without threads), so
/// plain interior mutability is enough; the `Sync` impl only lets it live in a `static`.
pub struct Slot<T>(UnsafeCell<Option<T>>);

// Safety: see the type's documentation: never entered concurrently.
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    /// An empty slot.
    pub const fn new() -> Slot<T> {
        Slot(UnsafeCell::new(None))
    }

    /// Runs `f` on the state, creating it with `make` if there is none yet.
    pub fn with<R>(&self, make: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R {
        // Safety: calls into an instance never overlap (type documentation); this is the
        // only place the cell is borrowed and the borrow ends before returning.
        let cell = unsafe { &mut *self.0.get() };
        f(cell.get_or_insert_with(make))
    }

    /// Replaces the state.
    pub fn set(&self, v: T) {
        // Safety: as in `with`.
        unsafe { *self.0.get() = Some(v) };
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::new()
    }
}

/// A scheduler instance and the realservers it was last told about.
pub struct SchedState<T> {
    inst: T,
    servers: Vec<ServerInfo>,
}

impl<T: Default> Default for SchedState<T> {
    fn default() -> Self {
        SchedState {
            inst: T::default(),
            servers: Vec::new(),
        }
    }
}

/// `scheduler.init`.
pub fn sched_init<T: Scheduler>(
    slot: &Slot<SchedState<T>>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    let mut inst = T::default();
    inst.configure(&Config::new(config))?;
    slot.set(SchedState {
        inst,
        servers: Vec::new(),
    });
    Ok(())
}

/// `scheduler.servers-changed`.
pub fn sched_servers_changed<T: Scheduler>(
    slot: &Slot<SchedState<T>>,
    servers: Vec<types::Server>,
) {
    slot.with(SchedState::default, |st| {
        st.servers = servers
            .into_iter()
            .map(|s| ServerInfo {
                addr: ip_from_wit(s.addr),
                port: s.port,
                weight: s.weight,
            })
            .collect();
        st.inst.servers_changed(&st.servers);
    })
}

/// `scheduler.pick`.
pub fn sched_pick<T: Scheduler>(
    slot: &Slot<SchedState<T>>,
    flow: types::Flow,
    load: &[u32],
) -> Option<u32> {
    slot.with(SchedState::default, |st| {
        let servers = Servers::new(load, &st.servers);
        st.inst.pick(&Flow::from(flow), &servers).map(|i| i as u32)
    })
}

/// `scheduler.export-state`.
pub fn sched_export<T: Scheduler>(slot: &Slot<SchedState<T>>) -> Vec<u8> {
    slot.with(SchedState::default, |st| st.inst.export_state())
}

/// `scheduler.import-state`.
pub fn sched_import<T: Scheduler>(slot: &Slot<SchedState<T>>, state: &[u8]) -> Result<(), String> {
    slot.with(SchedState::default, |st| st.inst.import_state(state))
}

/// `persistence.init`.
pub fn persist_init<T: Persistence>(
    slot: &Slot<T>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    let mut inst = T::default();
    inst.configure(&Config::new(config))?;
    slot.set(inst);
    Ok(())
}

/// `persistence.affinity`.
pub fn persist_affinity<T: Persistence>(slot: &Slot<T>, flow: types::Flow) -> Option<u64> {
    slot.with(T::default, |p| p.affinity(&Flow::from(flow)))
}

/// `persistence.export-state`.
pub fn persist_export<T: Persistence>(slot: &Slot<T>) -> Vec<u8> {
    slot.with(T::default, |p| p.export_state())
}

/// `persistence.import-state`.
pub fn persist_import<T: Persistence>(slot: &Slot<T>, state: &[u8]) -> Result<(), String> {
    slot.with(T::default, |p| p.import_state(state))
}

fn state_to_wit(s: TcpState) -> wt::TcpState {
    match s {
        TcpState::None => wt::TcpState::None,
        TcpState::Established => wt::TcpState::Established,
        TcpState::SynSent => wt::TcpState::SynSent,
        TcpState::SynRecv => wt::TcpState::SynRecv,
        TcpState::FinWait => wt::TcpState::FinWait,
        TcpState::TimeWait => wt::TcpState::TimeWait,
        TcpState::Close => wt::TcpState::Close,
        TcpState::CloseWait => wt::TcpState::CloseWait,
        TcpState::LastAck => wt::TcpState::LastAck,
        TcpState::Listen => wt::TcpState::Listen,
        TcpState::SynAck => wt::TcpState::Synack,
        // Not a column of the tables: the WIT reports UDP entries as `none`.
        TcpState::Udp => wt::TcpState::None,
    }
}

fn state_from_wit(s: wt::TcpState) -> TcpState {
    TcpState::ALL[..ringvs_abi::state::TCP_STATES]
        .iter()
        .copied()
        .find(|t| state_to_wit(*t) == s)
        .unwrap_or(TcpState::None)
}

fn prefix_to_wit(p: Prefix) -> wd::Prefix {
    wd::Prefix {
        addr: ip_to_wit(p.addr),
        len: p.len,
    }
}

/// The host's table, through the `ringvs:plugin/table` import.
struct HostTable;

impl crate::Table for HostTable {
    fn slots(&self) -> u32 {
        wt::slots()
    }

    fn scan(&self, start: u32, count: u32) -> Vec<Entry> {
        wt::scan(start, count)
            .into_iter()
            .map(|e| Entry {
                id: e.id,
                proto: e.proto,
                state: state_from_wit(e.state),
                packets: e.packets,
                expires_in: e.expires_in,
                idle: e.idle,
            })
            .collect()
    }
}

/// `defense.init`.
pub fn defense_init<T: Defense>(
    slot: &Slot<T>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    let mut inst = T::default();
    inst.configure(&Config::new(config))?;
    slot.set(inst);
    Ok(())
}

/// `defense.levels`.
pub fn defense_levels<T: Defense>(slot: &Slot<T>) -> Vec<wd::StateTable> {
    slot.with(T::default, |d| {
        d.levels()
            .into_iter()
            .map(|t| wd::StateTable {
                transitions: t.transitions.iter().map(|s| state_to_wit(*s)).collect(),
                timeouts: t.timeouts.to_vec(),
            })
            .collect()
    })
}

/// `defense.admit`.
pub fn defense_admit<T: Defense>(
    slot: &Slot<T>,
    flow: types::Flow,
    source: wd::SourceStats,
) -> wd::Verdict {
    let s = SourceStats {
        new_flows: source.new_flows,
        concurrent: source.concurrent,
    };
    match slot.with(T::default, |d| d.admit(&Flow::from(flow), &s)) {
        Verdict::Accept => wd::Verdict::Accept,
        Verdict::Drop => wd::Verdict::Drop,
    }
}

/// `defense.tick`.
pub fn defense_tick<T: Defense>(slot: &Slot<T>, st: wd::TickStats) -> Vec<wd::Action> {
    let stats = TickStats {
        now: st.now,
        queues: st.queues,
        level: st.level,
        entries: st.entries,
        capacity: st.capacity,
        memory: st.memory,
        memory_limit: st.memory_limit,
        system_available: st.system_available,
        by_state: st.by_state,
        new_flows: st.new_flows,
        packets: st.packets,
        top_sources: st
            .top_sources
            .into_iter()
            .map(|s| SourceRate {
                addr: ip_from_wit(s.addr),
                new_flows: s.new_flows,
                packets: s.packets,
            })
            .collect(),
    };
    slot.with(T::default, |d| d.tick(&stats, &HostTable))
        .into_iter()
        .map(|a| match a {
            Action::SetLevel(l) => wd::Action::SetLevel(l),
            Action::DropConnections(ids) => wd::Action::DropConnections(ids),
            Action::DropEmbryonic(n) => wd::Action::DropEmbryonic(n),
            Action::DropRate(r) => wd::Action::DropRate(r),
            Action::Block { prefix, secs, mode } => wd::Action::Block(wd::Block {
                prefix: prefix_to_wit(prefix),
                secs,
                mode: match mode {
                    BlockMode::Drop => wd::BlockMode::Drop,
                    BlockMode::Tarpit => wd::BlockMode::Tarpit,
                },
            }),
            Action::Unblock(p) => wd::Action::Unblock(prefix_to_wit(p)),
            Action::SynProxy(on) => wd::Action::SynProxy(on),
        })
        .collect()
}

#[cfg(all(target_family = "wasm", not(feature = "std")))]
mod wasm {
    //! The runtime of a `no_std` plugin.

    use alloc::alloc::{alloc, realloc, Layout};

    #[global_allocator]
    static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    // Without std there is no wasi-libc, whose memcmp/bcmp the compiler calls for slice and
    // string comparisons; compiler_builtins only supplies them where no libc is expected.

    /// `memcmp(3)`.
    ///
    /// # Safety
    /// `a` and `b` are valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        for i in 0..n {
            // Safety: i < n, within both regions.
            let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
            if x != y {
                return x as i32 - y as i32;
            }
        }
        0
    }

    /// `bcmp(3)`: like `memcmp`, only equality matters.
    ///
    /// # Safety
    /// As `memcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // Safety: forwarded contract.
        unsafe { memcmp(a, b, n) }
    }

    /// A panic traps the instance; the host falls back and counts it.
    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        core::arch::wasm32::unreachable()
    }

    /// The canonical ABI's allocator, which std would otherwise provide on wasm32-wasip2.
    ///
    /// # Safety
    /// Called by the component runtime with a pointer and size it got from this function
    /// before (or null and zero), and a power-of-two alignment.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn cabi_realloc(
        old: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        if new_len == 0 {
            return align as *mut u8;
        }
        // Safety: the layout comes from the runtime as described above; a zero old length
        // means a fresh allocation.
        let p = unsafe {
            if old_len == 0 {
                alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                realloc(
                    old,
                    Layout::from_size_align_unchecked(old_len, align),
                    new_len,
                )
            }
        };
        if p.is_null() {
            core::arch::wasm32::unreachable()
        }
        p
    }
}
