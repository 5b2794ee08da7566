//! Defense ticks off the queue's thread.
//!
//! ```text
//!   queue thread (packets)                        tick thread (one per queue, lazily)
//!   ──────────────────────                        ───────────────────────────────────
//!   second(): lend the instance ── Job ─────────▶ instance.tick(stats, Remote view)
//!   poll(): serve one scan       ◀── scan(start, count) ── the guest's `table.scan`
//!           (≤ MAX_SCAN_SLOTS)   ── entries ──────▶
//!   poll(): take the instance back ◀── Done ──── actions (≤ MAX_TICK_ACTIONS, the rest
//!           and apply the actions                counted), or the fault
//! ```
//!
//! Ownership: a lent [`DefenseInstance`] belongs to the tick thread from the [`Job`] until
//! it comes back in [`Done`]; meanwhile the slot has no instance ([`PolicySlot::lend`]) and
//! `admit` is answered by the host (counted as busy). The table stays the queue's: the tick
//! thread only ever sees entries the queue copied out for it, one scan per `poll`, so the
//! queue's own work per pass is bounded by [`ringvs_abi::MAX_SCAN_SLOTS`] slots and the
//! guest's work, however long, never holds the queue's packets.
//!
//! [`PolicySlot::lend`]: super::super::policy::PolicySlot::lend

use super::super::defense::{Answer, PluginDefense, Seen};
use super::super::policy::{ActionKind, ACTIONS};
use crate::plugin::{defense_types as dt, table_types as tt, DefenseInstance, Fault, TableView};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One defense's tick, for the tick thread.
pub(super) struct Job {
    /// Service slot and position of the defense in its list.
    pub at: (u16, usize),
    /// The slot's preparation (its identity when the instance comes back).
    pub prepared: Arc<PluginDefense>,
    /// The lent instance.
    pub inst: DefenseInstance,
    /// What the plugin is told.
    pub stats: dt::TickStats,
    /// The table's slots when the tick began (what `table.slots` answers).
    pub slots: u32,
    /// When the queue handed it over (the next second's come about a second later).
    pub sent: Instant,
}

/// A tick's outcome: the instance comes back with it.
pub(super) struct Done {
    /// As in the [`Job`].
    pub at: (u16, usize),
    /// As in the [`Job`].
    pub prepared: Arc<PluginDefense>,
    /// The instance lent.
    pub inst: DefenseInstance,
    /// The actions to apply, and those past the cap (counted by kind); or the fault.
    pub result: Result<Capped, Fault>,
    /// How long the tick ran.
    pub elapsed: Duration,
    /// The entries its scans returned (what its `drop-connections` may name), noted here
    /// rather than on the queue's thread.
    pub seen: Seen,
}

/// A tick's actions after the cap: at most [`ringvs_abi::MAX_TICK_ACTIONS`], and how many
/// of each kind were past it.
pub(super) struct Capped {
    /// The actions to check and apply.
    pub actions: Vec<dt::Action>,
    /// Refused for being past the cap, by [`ActionKind`].
    pub over: [u64; ACTIONS],
}

/// Caps a tick's actions (see [`Capped`]).
pub(super) fn cap(mut actions: Vec<dt::Action>) -> Capped {
    let mut over = [0u64; ACTIONS];
    for a in actions.iter().skip(ringvs_abi::MAX_TICK_ACTIONS) {
        over[ActionKind::of(a) as usize] += 1;
    }
    actions.truncate(ringvs_abi::MAX_TICK_ACTIONS);
    Capped { actions, over }
}

/// A scan the guest asked for: the job's service slot and defense, first slot, count.
pub(super) type Scan = ((u16, usize), u32, u32);

/// The queue's end of its tick thread.
pub(super) struct Ticker {
    name: String,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    done_tx: Sender<Done>,
    scans: Receiver<Scan>,
    scans_tx: Sender<Scan>,
    entries: Sender<Answer>,
    entries_rx: Receiver<Answer>,
    /// Ticks sent and not yet back.
    pub in_flight: usize,
}

impl Ticker {
    /// The queue's tick thread, to be started by its first job.
    pub fn new(queue: usize) -> Ticker {
        let (done_tx, done) = unbounded();
        // One scan at a time: the guest waits for its answer.
        let (scans_tx, scans) = bounded(1);
        let (entries, entries_rx) = bounded(1);
        Ticker {
            name: format!("ringvs-tick-{queue}"),
            jobs: None,
            done,
            done_tx,
            scans,
            scans_tx,
            entries,
            entries_rx,
            in_flight: 0,
        }
    }

    /// Hands a tick to the thread (started now if it is not yet). The job comes back if no
    /// thread could take it (none could be started).
    pub fn send(&mut self, job: Job) -> Option<Job> {
        if self.jobs.is_none() {
            let (tx, rx) = unbounded::<Job>();
            let (done, scans, entries) = (
                self.done_tx.clone(),
                self.scans_tx.clone(),
                self.entries_rx.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || {
                    off_the_queues_cpu();
                    run(rx, done, scans, entries)
                });
            if spawned.is_err() {
                return Some(job);
            }
            self.jobs = Some(tx);
        }
        let tx = self.jobs.as_ref().expect("started above");
        if let Err(e) = tx.send(job) {
            return Some(e.into_inner());
        }
        self.in_flight += 1;
        None
    }

    /// The scan the tick thread waits for, if any.
    pub fn scan_wanted(&self) -> Option<Scan> {
        self.scans.try_recv().ok()
    }

    /// Answers the scan taken with [`Ticker::scan_wanted`].
    pub fn answer(&self, entries: Answer) {
        let _ = self.entries.try_send(entries);
    }

    /// A finished tick, if any.
    pub fn finished(&mut self) -> Option<Done> {
        let d = self.done.try_recv().ok()?;
        self.in_flight -= 1;
        Some(d)
    }
}

/// The tick thread: runs each job's tick against a view of the table that the queue
/// serves, and sends the outcome back; ends when the queue drops its [`Ticker`].
///
/// Ticks come once a second. Around the time the next ones are due (a second after the last
/// were sent) the thread looks for them every [`WATCH_EVERY`] instead of sleeping in the
/// channel: a send to a sleeping receiver makes the queue's thread wake it (a futex wake and
/// an inter-processor interrupt, 10 to 100 µs in a VM, measured), a send to a watching one
/// costs the queue nothing but the push. Outside that window it sleeps in the channel.
fn run(jobs: Receiver<Job>, done: Sender<Done>, scans: Sender<Scan>, entries: Receiver<Answer>) {
    let mut due: Option<Instant> = None;
    loop {
        let mut job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                match due {
                    // Early (a tick after a reload, a test's clock): taken at once.
                    Some(t) if now + WATCH_EVERY < t => {
                        match jobs.recv_timeout(t - now - WATCH_EVERY) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Timeout) => continue,
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    Some(t) if now < t + WATCH_LATE => {
                        std::thread::sleep(WATCH_EVERY);
                        continue;
                    }
                    _ => match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                }
            }
        };
        due = Some(job.sent + Duration::from_secs(1));
        let view = Remote {
            at: job.at,
            slots: job.slots,
            scans: &scans,
            entries: &entries,
            seen: RefCell::default(),
        };
        let t = Instant::now();
        let result = job.inst.tick(&job.stats, Some(&view)).map(cap);
        let back = Done {
            at: job.at,
            prepared: job.prepared,
            inst: job.inst,
            result,
            elapsed: t.elapsed(),
            seen: view.seen.into_inner(),
        };
        if done.send(back).is_err() {
            break;
        }
    }
}

/// The tick thread starts with its queue's CPU affinity (it is started from the queue's
/// thread). A queue pinned to one CPU (the daemon pins each queue when there are several)
/// would have its own ticks preempt it there: the tick thread moves to every other online
/// CPU instead. An affinity of several CPUs is left as it is.
fn off_the_queues_cpu() {
    // Safety: `set` is a plain bitmask owned by this frame, initialised by
    // sched_getaffinity for this thread (pid 0) before it is read; sched_setaffinity only
    // reads it. Neither call touches any other memory.
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut set) != 0 || libc::CPU_COUNT(&set) != 1 {
            return;
        }
        let online = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        if online <= 1 {
            return;
        }
        let mine = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap_or(0);
        let mut others: libc::cpu_set_t = std::mem::zeroed();
        for c in (0..online as usize).filter(|&c| c != mine) {
            libc::CPU_SET(c, &mut others);
        }
        libc::sched_setaffinity(0, size, &others);
    }
}

/// How often the tick thread looks for the ticks it expects.
const WATCH_EVERY: Duration = Duration::from_micros(500);
/// How long after they are due it keeps looking before it sleeps in the channel.
const WATCH_LATE: Duration = Duration::from_millis(50);

/// The table as the tick thread sees it: each scan is a request the queue answers between
/// two batches of packets; an empty answer once the queue is gone. The entries returned are
/// noted in `seen`.
struct Remote<'a> {
    at: (u16, usize),
    slots: u32,
    scans: &'a Sender<Scan>,
    entries: &'a Receiver<Answer>,
    seen: RefCell<Seen>,
}

impl TableView for Remote<'_> {
    fn slots(&self) -> u32 {
        self.slots
    }

    fn scan(&self, start: u32, count: u32) -> Vec<tt::Entry> {
        if self.scans.send((self.at, start, count)).is_err() {
            return Vec::new();
        }
        let answer = self.entries.recv().unwrap_or_default();
        self.seen.borrow_mut().note(&answer);
        answer.0
    }
}
