//! What a plugin's store holds: the host state of one instance (its memory limiter, the
//! connection table lent to a defense's tick, the epoch counters of its deadline) and the
//! host side of the WIT imports. Below both the engine (`runtime`, whose linkers are typed
//! by it) and the instances (`instance`).

use super::bindings::{defense, log, types};
use ringvs_abi::{MAX_LOG_BYTES, MAX_LOG_PER_SEC};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Engine, ResourceLimiter, Store};

/// Memory limit of one instance; remembers whether it had to refuse growth.
pub(super) struct Limits {
    memory: usize,
    /// Growth was refused (the fault is a memory fault, not a trap).
    pub(super) denied: bool,
    /// Linear memory this store has grown to, and the runtime-wide total it counts in.
    grown: usize,
    total: Arc<AtomicUsize>,
}

impl Drop for Limits {
    fn drop(&mut self) {
        self.total.fetch_sub(self.grown, Ordering::Relaxed);
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.denied = true;
            // Trap at once rather than let the guest limp on without memory.
            wasmtime::bail!(
                "memory limit of {} bytes reached (wanted {desired})",
                self.memory
            );
        }
        let more = desired.saturating_sub(current);
        self.grown += more;
        self.total.fetch_add(more, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > 100_000 {
            self.denied = true;
            wasmtime::bail!("table limit reached (wanted {desired} elements)");
        }
        Ok(true)
    }
}

/// What a defense plugin may see of the connection table during its tick.
pub trait TableView {
    /// Slots the scan ranges over.
    fn slots(&self) -> u32;
    /// Live entries among `start .. start + count` (wrapping).
    fn scan(&self, start: u32, count: u32) -> Vec<defense::ringvs::plugin::table::Entry>;
}

/// A table view lent to the store for the duration of one call (see [`with_table`]).
pub(super) struct Lent(*const (dyn TableView + 'static));

// Safety: the pointer is set only by `with_table`, for the duration of a call made on the
// thread that owns both the store and the table, and cleared before it returns or unwinds.
unsafe impl Send for Lent {}

/// A plugin's `log` messages, over all its instances: kept by level (`error` … `trace`), and
/// dropped by the per-instance rate limit (`ringvs_plugin_log_messages_total`,
/// `ringvs_plugin_log_dropped_total`). Touched only when the plugin logs.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Messages written, by level in WIT order.
    pub written: [AtomicU64; 5],
    /// Messages dropped over the rate limit.
    pub dropped: AtomicU64,
}

impl LogCounters {
    /// The label of each level, in the order of `written`.
    pub const LEVELS: [&'static str; 5] = ["error", "warn", "info", "debug", "trace"];
}

/// One instance's `log` budget: [`MAX_LOG_PER_SEC`] messages per second (a fixed window).
pub(super) struct LogBudget {
    plugin: Arc<str>,
    counters: Arc<LogCounters>,
    window: Instant,
    used: u32,
    /// Dropped since the last message written (that message says so).
    dropped: u64,
}

impl LogBudget {
    pub(super) fn new(plugin: Arc<str>, counters: Arc<LogCounters>) -> LogBudget {
        LogBudget {
            plugin,
            counters,
            window: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    /// Writes or drops one message at `now`.
    fn log(&mut self, level: log::Level, message: &str, now: Instant) {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used >= MAX_LOG_PER_SEC {
            self.dropped += 1;
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.used += 1;
        let mut end = message.len().min(MAX_LOG_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let (plugin, dropped) = (&*self.plugin, std::mem::take(&mut self.dropped));
        match level {
            log::Level::Error => tracing::error!(plugin, dropped, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, dropped, "{message}"),
            log::Level::Info => tracing::info!(plugin, dropped, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, dropped, "{message}"),
            log::Level::Trace => tracing::trace!(plugin, dropped, "{message}"),
        }
        self.counters.written[level as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `f` on `store` with `table` lent to its host state (what a defense's tick may scan)
/// and takes it back when `f` returns *or unwinds*. The store's type cannot name the
/// table's lifetime, so the reference is kept as a pointer with the lifetime erased; a drop
/// guard, not a line after the call, clears it, so a panic cannot leave it dangling.
pub(super) fn with_table<R>(
    store: &mut Store<HostState>,
    table: Option<&dyn TableView>,
    f: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    /// Clears the lent table when dropped.
    struct Loan<'s>(&'s mut Store<HostState>);
    impl Drop for Loan<'_> {
        fn drop(&mut self) {
            self.0.data_mut().table = None;
        }
    }
    let lent = table.map(|t| {
        let p: *const (dyn TableView + '_) = t;
        // Safety: only the lifetime bound of the trait object changes (same layout). The
        // pointer is dereferenced (`HostState::view`) only inside `f`, while `table` is
        // borrowed for this whole function, and `Loan` clears it before this returns or
        // unwinds.
        Lent(unsafe {
            std::mem::transmute::<*const (dyn TableView + '_), *const (dyn TableView + 'static)>(p)
        })
    });
    store.data_mut().table = lent;
    let loan = Loan(store);
    f(&mut *loan.0)
}

/// Per-store host state.
pub struct HostState {
    pub(super) limits: Limits,
    /// The table a defense's tick may scan, lent for that call only.
    pub(super) table: Option<Lent>,
    /// Epoch boundaries crossed while the guest ran in the current call.
    pub(super) crossings: u64,
    /// Crossings allowed before the call is stopped (its deadline, in epochs).
    pub(super) allowed: u64,
    /// Its `log` rate limit.
    pub(super) log: LogBudget,
}

impl HostState {
    fn new(memory: usize, total: Arc<AtomicUsize>, log: LogBudget) -> HostState {
        HostState {
            limits: Limits {
                memory,
                denied: false,
                grown: 0,
                total,
            },
            table: None,
            crossings: 0,
            allowed: 0,
            log,
        }
    }

    fn view(&self) -> Option<&dyn TableView> {
        // Safety: see `Lent`: the pointee outlives the call in which this runs.
        self.table.as_ref().map(|l| unsafe { &*l.0 })
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        self.log.log(level, &message, Instant::now());
    }
}

impl defense::ringvs::plugin::table::Host for HostState {
    fn slots(&mut self) -> u32 {
        self.view().map_or(0, |t| t.slots())
    }

    fn scan(&mut self, start: u32, count: u32) -> Vec<defense::ringvs::plugin::table::Entry> {
        // Bound the work, and the list built, of one call.
        self.view().map_or_else(Vec::new, |t| {
            t.scan(start, count.min(ringvs_abi::MAX_SCAN_SLOTS))
        })
    }
}

/// Slack for preemptions: a thread descheduled while the guest runs sees one crossing per
/// preemption, however long it lasted.
const PREEMPTION_SLACK: u64 = 2;

/// A fresh store on `engine` whose instance may have `memory` bytes of linear memory.
pub(super) fn new_store(
    engine: &Engine,
    memory: usize,
    total: Arc<AtomicUsize>,
    log: LogBudget,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(memory, total, log));
    store.limiter(|s| &mut s.limits);
    // The deadline counts epoch boundaries the guest is seen running across, not wall-clock
    // time: the guest checks the epoch on function entry and loop back-edges, so a thread
    // preempted for 20 ms between two checks crosses once, while a loop running for 20 ms
    // crosses twenty times. A wall-clock deadline killed healthy 1 µs calls on a loaded
    // two-core machine (lab, test-swap.sh).
    store.epoch_deadline_callback(|mut cx| {
        let s = cx.data_mut();
        s.crossings += 1;
        if s.crossings > s.allowed + PREEMPTION_SLACK {
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            Ok(wasmtime::UpdateDeadline::Continue(1))
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Records the largest count a scan asked it for.
    struct Counting(Cell<u32>);

    impl TableView for Counting {
        fn slots(&self) -> u32 {
            1 << 20
        }
        fn scan(&self, _start: u32, count: u32) -> Vec<defense::ringvs::plugin::table::Entry> {
            self.0.set(self.0.get().max(count));
            Vec::new()
        }
    }

    use defense::ringvs::plugin::table::Host as _;

    /// A table whose every read panics (as a bug in the host's view could).
    struct Panicking;

    impl TableView for Panicking {
        fn slots(&self) -> u32 {
            panic!("the table view panicked")
        }
        fn scan(&self, _: u32, _: u32) -> Vec<defense::ringvs::plugin::table::Entry> {
            Vec::new()
        }
    }

    #[test]
    fn one_scan_call_visits_a_bounded_number_of_slots() {
        let t = Counting(Cell::new(0));
        let log = LogBudget::new("p".into(), Arc::new(LogCounters::default()));
        let mut h = HostState::new(1 << 20, Arc::default(), log);
        h.table = Some(Lent(&t as &dyn TableView as *const _));
        h.scan(0, u32::MAX);
        assert_eq!(t.0.get(), ringvs_abi::MAX_SCAN_SLOTS);
        h.scan(7, 100);
        assert_eq!(t.0.get(), ringvs_abi::MAX_SCAN_SLOTS, "smaller counts pass");
        h.table = None;
    }

    #[test]
    fn log_keeps_ten_a_second_per_instance_and_counts_the_rest() {
        let counters = Arc::new(LogCounters::default());
        let mut b = LogBudget::new("p".into(), counters.clone());
        let t0 = b.window;
        for i in 0..25 {
            b.log(log::Level::Info, "hello", t0 + Duration::from_millis(i));
        }
        assert_eq!(counters.written[2].load(Ordering::Relaxed), 10);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 15);
        assert_eq!(b.dropped, 15, "the next message written says so");
        // The next second: a new budget; the first message carries the dropped count.
        b.log(log::Level::Warn, "again", t0 + Duration::from_millis(1000));
        assert_eq!(counters.written[1].load(Ordering::Relaxed), 1);
        assert_eq!(b.dropped, 0);
        // Another instance of the same plugin has its own budget, the same counters.
        let mut other = LogBudget::new("p".into(), counters.clone());
        other.log(log::Level::Error, &"é".repeat(2000), other.window);
        assert_eq!(counters.written[0].load(Ordering::Relaxed), 1);
    }

    /// Issue 11: the table lent to a tick was cleared by a line after the call, which a panic
    /// skipped, leaving the store with a pointer to a table that was about to go away.
    #[test]
    fn a_panic_during_the_loan_takes_the_table_back() {
        let engine = Engine::default();
        let mut store = new_store(
            &engine,
            1 << 20,
            Arc::new(AtomicUsize::new(0)),
            LogBudget::new("p".into(), Arc::new(LogCounters::default())),
        );
        {
            let table = Panicking;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_table(&mut store, Some(&table), |s| s.data_mut().slots())
            }));
            assert!(r.is_err());
        }
        assert!(store.data().table.is_none(), "the table is still lent");
        assert_eq!(store.data_mut().slots(), 0);
        // And when the call returns normally.
        struct Empty;
        impl TableView for Empty {
            fn slots(&self) -> u32 {
                7
            }
            fn scan(&self, _: u32, _: u32) -> Vec<defense::ringvs::plugin::table::Entry> {
                Vec::new()
            }
        }
        assert_eq!(
            with_table(&mut store, Some(&Empty), |s| s.data_mut().slots()),
            7
        );
        assert!(store.data().table.is_none());
    }
}
