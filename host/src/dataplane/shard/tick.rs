//! A queue's once-a-second work: top talkers, each defense's tick (on the queue's tick
//! thread, see [`super::ticker`]), and the actions it asks for, checked before they apply.

use super::super::blocks::Block;
use super::super::defense::{block_request, effective_table, prefix, Seen, ServiceTable};
use super::super::policy::{ActionKind, Ctx, Func, Instance, PluginEvent};
use super::super::stats::DefenseStatus;
use super::proxy::Mode as ProxyMode;
use super::ticker::{cap, Capped, Done, Job, Ticker};
use super::Shard;
use crate::conn::{State, TICKS_PER_SEC};
use crate::plugin::defense_types as dt;
use crate::plugin::wit_ip;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

impl Shard {
    /// Once a second: hand over the top talkers and start each defense's tick: on the
    /// queue's tick thread ([`ShardConfig::tick_thread`], the daemon), or here and now
    /// (tests, replay). What a tick asks is checked and applied when it is back
    /// ([`Shard::tick_done`]).
    ///
    /// [`ShardConfig::tick_thread`]: super::ShardConfig::tick_thread
    pub(super) fn second(&mut self) {
        self.own_blocks.expire(self.now);
        if let Ok(mut r) = self.shared.report.lock() {
            r.top = self.top.take();
        }
        let (attempts, packets) = (
            self.counters.attempts,
            self.counters.total.in_pkts + self.counters.total.out_pkts,
        );
        let (a0, p0) = std::mem::replace(&mut self.tick_base, (attempts, packets));
        let top: Vec<dt::SourceRate> = self
            .director_top
            .iter()
            .take(ringvs_abi::MAX_TOP_SOURCES)
            .map(|s| dt::SourceRate {
                addr: wit_ip(s.addr),
                new_flows: s.new_flows,
                packets: s.packets,
            })
            .collect();
        let queues = self.cfg.queues.max(1) as u32;
        // Both tables, as the report counts them.
        let (tables, slots) = (self.tables(), self.slots());
        let mut jobs = Vec::new();
        for (svc, rt) in self.svcs.iter_mut().enumerate() {
            let Some(rt) = rt.as_mut() else { continue };
            for (i, slot) in rt.defenses.iter_mut().enumerate() {
                if slot.slot.lent() {
                    // Its last tick is still running: this second's is skipped.
                    continue;
                }
                slot.acted = false;
                slot.refused_last = std::mem::take(&mut slot.refusing);
                let Some(inst) = slot.slot.lend() else {
                    continue;
                };
                jobs.push(Job {
                    at: (svc as u16, i),
                    prepared: slot.slot.prepared().clone(),
                    inst,
                    stats: dt::TickStats {
                        now: self.tick_sec,
                        queues,
                        level: slot.level,
                        entries: tables.entries,
                        capacity: tables.capacity,
                        memory: tables.memory_bytes,
                        memory_limit: tables.memory_limit,
                        system_available: self.system_available,
                        by_state: tables.by_state.to_vec(),
                        new_flows: attempts - a0,
                        packets: packets - p0,
                        top_sources: top.clone(),
                    },
                    slots,
                    sent: Instant::now(),
                });
            }
        }
        for job in jobs {
            let job = match self.ticker.as_mut() {
                Some(t) => match t.send(job) {
                    None => continue,
                    // No tick thread: the tick runs here.
                    Some(job) => job,
                },
                None => job,
            };
            let done = self.tick_here(job);
            self.tick_done(done);
            self.apply_pending(usize::MAX);
        }
        self.defenses_changed();
    }

    /// Runs a tick on the queue's thread, the table lent to the plugin for its duration.
    fn tick_here(&mut self, mut job: Job) -> Done {
        let (svc, _) = job.at;
        let timeouts = self.svcs[svc as usize]
            .as_ref()
            .map_or([0; crate::conn::state::STATES], |rt| rt.timeouts);
        let seen = RefCell::new(Seen::default());
        let view = ServiceTable {
            table: &self.table,
            six: self.six.as_ref().map(|s| &s.table),
            svc,
            now: self.now,
            timeouts,
            seen: Some(&seen),
        };
        let t = Instant::now();
        let result = job.inst.tick(&job.stats, Some(&view)).map(cap);
        Done {
            at: job.at,
            prepared: job.prepared,
            inst: job.inst,
            result,
            elapsed: t.elapsed(),
            seen: seen.into_inner(),
        }
    }

    /// Between two batches: answers one scan the tick thread waits for, takes the ticks
    /// that came back, and goes on applying their actions for [`WORK_PER_POLL`]. Nothing to
    /// do (one branch) while no tick is out.
    pub(super) fn serve_ticks(&mut self) {
        let Some(t) = self
            .ticker
            .as_ref()
            .filter(|t| t.in_flight > 0 || !self.applying.is_empty())
        else {
            return;
        };
        if let Some(((svc, _), start, count)) = t.scan_wanted() {
            let answer = match self.svcs.get(svc as usize).and_then(Option::as_ref) {
                Some(rt) => ServiceTable {
                    table: &self.table,
                    six: self.six.as_ref().map(|s| &s.table),
                    svc,
                    now: self.now,
                    timeouts: rt.timeouts,
                    seen: None,
                }
                .scan_clients(start, count.min(ringvs_abi::MAX_SCAN_SLOTS)),
                None => Default::default(),
            };
            t.answer(answer);
        }
        let mut any = false;
        while let Some(done) = self.ticker.as_mut().and_then(Ticker::finished) {
            self.tick_done(done);
            any = true;
        }
        if self.apply_pending(WORK_PER_POLL) || any {
            self.defenses_changed();
        }
    }

    /// A tick is back: the instance returns to its slot (or goes back to the control plane
    /// if the slot changed meanwhile), and its actions are checked and applied.
    fn tick_done(&mut self, done: Done) {
        let (svc, i) = done.at;
        let seen = done.seen;
        let mut ctx = Ctx {
            stats: &mut self.plugin_stats,
            events: self.cfg.events.as_ref(),
        };
        let slot = self.svcs[svc as usize]
            .as_mut()
            .and_then(|rt| rt.defenses.get_mut(i))
            .filter(|d| Arc::ptr_eq(d.slot.prepared(), &done.prepared));
        let Some(slot) = slot else {
            ctx.retire_any(Instance::Defense(done.inst));
            return;
        };
        let name = slot.plugin().name.clone();
        let Some(Capped { actions, over }) = slot.slot.take_back(
            &done.prepared,
            done.inst,
            (Func::Tick, done.elapsed),
            done.result,
            &mut ctx,
        ) else {
            return;
        };
        // The host's work for one defense's tick is bounded (see the WIT): at most
        // MAX_TICK_ACTIONS actions (the rest were counted in `over`), MAX_TICK_DROPS
        // connection ids and MAX_TICK_SCAN slots scanned; the rest is refused and counted.
        let c = self.plugin_stats.defense(&name);
        for (r, n) in c.refused.iter_mut().zip(over) {
            *r += n;
        }
        self.applying.push_back(Applying {
            at: done.at,
            prepared: done.prepared,
            actions: actions.into_iter(),
            current: None,
            budget: TickBudget {
                drops: ringvs_abi::MAX_TICK_DROPS,
                scan: ringvs_abi::MAX_TICK_SCAN,
                seen,
            },
        });
    }

    /// Applies the actions of the ticks that came back, in order, for at most `work` units
    /// of the queue's time (see [`WORK_PER_POLL`]); an action that needs more goes on at the
    /// next call. An action whose defense's slot changed since (a reload) is dropped. True
    /// if anything was done.
    fn apply_pending(&mut self, mut work: usize) -> bool {
        let mut any = false;
        while let Some(mut job) = self.applying.pop_front() {
            any = true;
            let (svc, i) = job.at;
            let same = self.svcs[svc as usize]
                .as_ref()
                .and_then(|rt| rt.defenses.get(i))
                .is_some_and(|d| Arc::ptr_eq(d.slot.prepared(), &job.prepared));
            if !same {
                continue;
            }
            while work > 0 {
                let (kind, step) = match job.current.take() {
                    Some(going) => going,
                    None => match job.actions.next() {
                        Some(a) => (ActionKind::of(&a), Step::Begin(a)),
                        None => break,
                    },
                };
                let ok = match self.step(svc, i, step, &mut job.budget, &mut work) {
                    Progress::Pending(step) => {
                        job.current = Some((kind, step));
                        break;
                    }
                    Progress::Done(ok) => ok,
                };
                let Some(slot) = self.svcs[svc as usize]
                    .as_mut()
                    .and_then(|rt| rt.defenses.get_mut(i))
                else {
                    break;
                };
                let c = self.plugin_stats.defense(&slot.plugin().name);
                if ok {
                    c.actions[kind as usize] += 1;
                    slot.acted |= !matches!(
                        kind,
                        ActionKind::SetLevel
                            | ActionKind::DropRate
                            | ActionKind::Unblock
                            | ActionKind::SynProxy
                    );
                } else {
                    c.refused[kind as usize] += 1;
                }
            }
            if let Some(rt) = self.svcs[svc as usize].as_mut() {
                (rt.table, rt.timeouts) = effective_table(&rt.defenses, &rt.own);
            }
            if job.current.is_some() || job.actions.len() > 0 {
                self.applying.push_front(job);
                break;
            }
        }
        any
    }

    /// One step of an action of defense `i` of service `svc`, within what is left of the
    /// tick's `budget` and of this call's `work`. `drop-connections` (each id checked, then
    /// each entry dropped) and `drop-embryonic` (slots visited, entries dropped) go in as
    /// many steps as their work takes; the others take one.
    fn step(
        &mut self,
        svc: u16,
        i: usize,
        step: Step,
        budget: &mut TickBudget,
        work: &mut usize,
    ) -> Progress {
        match step {
            Step::Begin(dt::Action::DropConnections(ids)) => {
                *work = work.saturating_sub(cost::ACTION);
                if ids.len() > budget.drops {
                    return Progress::Done(false);
                }
                budget.drops -= ids.len();
                let found = Vec::with_capacity(ids.len());
                self.step(svc, i, Step::Check { ids, found }, budget, work)
            }
            // Every id must be an entry of the service this tick's scans returned; each is
            // kept with the client it had.
            Step::Check { ids, mut found } => {
                while let Some(&id) = ids.get(found.len()) {
                    if *work < cost::CHECK {
                        return Progress::Pending(Step::Check { ids, found });
                    }
                    *work -= cost::CHECK;
                    let Some(client) = budget.seen.get(id) else {
                        return Progress::Done(false);
                    };
                    found.push((id, client));
                }
                self.step(svc, i, Step::Drop { found, next: 0 }, budget, work)
            }
            // One that has gone since (expired, evicted, its slot another flow's now: the
            // tick ran while the queue went on) is skipped.
            Step::Drop { found, mut next } => {
                while let Some(&(id, client)) = found.get(next) {
                    if *work < cost::DROP {
                        return Progress::Pending(Step::Drop { found, next });
                    }
                    *work -= cost::DROP;
                    next += 1;
                    self.kill_at(id, |s, _, c| s == svc && c == client);
                }
                Progress::Done(true)
            }
            Step::Begin(dt::Action::DropEmbryonic(n)) => {
                *work = work.saturating_sub(cost::ACTION);
                let by_state = self.tables().by_state;
                let embryonic =
                    by_state[State::SynRecv as usize] + by_state[State::SynAck as usize];
                if n == 0 || n > embryonic {
                    return Progress::Done(false);
                }
                let slots = self.slots();
                let at = (self.random() % slots.max(1) as u64) as u32;
                let left = slots.min(budget.scan);
                budget.scan -= left;
                let step = Step::Embryonic { at, left, want: n };
                self.step(svc, i, step, budget, work)
            }
            Step::Embryonic {
                mut at,
                mut left,
                mut want,
            } => {
                let slots = self.slots().max(1);
                while left > 0 && want > 0 {
                    if *work < cost::VISIT + cost::DROP {
                        return Progress::Pending(Step::Embryonic { at, left, want });
                    }
                    *work -= cost::VISIT;
                    left -= 1;
                    let embryonic =
                        |s, state, _| s == svc && matches!(state, State::SynRecv | State::SynAck);
                    if self.kill_at(at % slots, embryonic) {
                        *work -= cost::DROP;
                        want -= 1;
                    }
                    at = (at + 1) % slots;
                }
                Progress::Done(true)
            }
            Step::Begin(a) => {
                *work = work.saturating_sub(cost::ACTION);
                Progress::Done(self.apply(svc, i, a))
            }
        }
    }

    /// Slots of the slot space a defense's tick scans (see [`ServiceTable`]).
    fn slots(&self) -> u32 {
        super::super::defense::slots(&self.table, self.six.as_ref().map(|s| &s.table))
    }

    /// Removes the entry at slot `i` of the slot space a defense's tick scans (the IPv4
    /// table's slots, then the IPv6 table's) if `pick(service, state, client)` says so;
    /// true if it did.
    fn kill_at(&mut self, i: u32, pick: impl Fn(u16, State, (IpAddr, u16)) -> bool) -> bool {
        let n4 = self.table.slots();
        let found = if i < n4 {
            self.table
                .entry_at(i)
                .map(|(id, c)| (id, pick(c.svc, c.state, (c.caddr().into(), c.cport()))))
        } else {
            self.six
                .as_ref()
                .and_then(|six| six.table.entry_at(i - n4))
                .map(|(id, c)| (id, pick(c.svc, c.state, (c.caddr().into(), c.cport()))))
        };
        match found {
            Some((id, true)) if i < n4 => self.kill(id),
            Some((id, true)) => self.kill6(id),
            _ => return false,
        }
        true
    }

    /// After ticks: the SYN proxy is held on while any defense of the service asks for it
    /// (defenses removed by a reload no longer do), and the report shows each defense.
    fn defenses_changed(&mut self) {
        for rt in self.svcs.iter_mut().flatten() {
            rt.proxy.forced = rt.defenses.iter().any(|d| d.syn_proxy);
        }
        if let Ok(mut r) = self.shared.report.lock() {
            r.defenses = self
                .svcs
                .iter()
                .enumerate()
                .filter_map(|(svc, rt)| rt.as_ref().map(|rt| (svc, rt)))
                .flat_map(|(svc, rt)| {
                    rt.defenses.iter().map(move |s| DefenseStatus {
                        svc: svc as u16,
                        plugin: s.plugin().name.clone(),
                        level: s.level,
                        drop_rate: s.drop_rate,
                        active: s.active(),
                        healthy: s.slot.healthy(),
                    })
                })
                .collect();
        }
    }

    /// Applies one action of defense `i` of service `svc` that takes one step, if it is
    /// allowed; false if it is refused.
    fn apply(&mut self, svc: u16, i: usize, a: dt::Action) -> bool {
        let Some(slot) = self.svcs[svc as usize]
            .as_mut()
            .and_then(|rt| rt.defenses.get_mut(i))
        else {
            return false;
        };
        let by = slot.plugin().name.clone();
        match a {
            dt::Action::SetLevel(l) => {
                if (l as usize) < slot.levels().len() || l == 0 {
                    slot.level = l;
                    true
                } else {
                    false
                }
            }
            dt::Action::DropRate(r) => {
                slot.drop_rate = r;
                slot.drop_counter = r;
                true
            }
            // Applied in steps (see `step`).
            dt::Action::DropConnections(_) | dt::Action::DropEmbryonic(_) => false,
            dt::Action::Block(b) => {
                let Some(req) = block_request(svc, &b) else {
                    return false;
                };
                let until = self
                    .now
                    .saturating_add(req.secs.saturating_mul(TICKS_PER_SEC));
                let block = Block {
                    until,
                    mode: req.mode,
                    by: by.clone(),
                };
                // Into the queue's own list: the director's is shared (a change would copy
                // all of it); both together hold at most MAX_BLOCKS for the service.
                let new = !self.own_blocks.contains(svc, req.addr, req.len)
                    && !self.blocks.contains(svc, req.addr, req.len);
                let held = self.blocks.count(svc) + self.own_blocks.count(svc);
                if (new && held >= ringvs_abi::MAX_BLOCKS)
                    || !self.own_blocks.insert(svc, req.addr, req.len, block)
                {
                    return false;
                }
                if let Some(tx) = &self.cfg.events {
                    let _ = tx.send(PluginEvent::Block { req, by });
                }
                true
            }
            dt::Action::Unblock(p) => {
                let Some((addr, len)) = prefix(&p) else {
                    return false;
                };
                self.own_blocks.remove(svc, addr, len);
                if self.blocks.contains(svc, addr, len) {
                    Arc::make_mut(&mut self.blocks).remove(svc, addr, len);
                }
                if let Some(tx) = &self.cfg.events {
                    let _ = tx.send(PluginEvent::Unblock { svc, addr, len });
                }
                true
            }
            dt::Action::SynProxy(on) => {
                // Only "auto" defers to anyone; UDP services are never "auto" here.
                let auto = self.svcs[svc as usize]
                    .as_ref()
                    .is_some_and(|rt| rt.proxy.mode == ProxyMode::Auto);
                if auto {
                    if let Some(d) = self.svcs[svc as usize]
                        .as_mut()
                        .and_then(|rt| rt.defenses.get_mut(i))
                    {
                        d.syn_proxy = on;
                    }
                }
                auto
            }
        }
    }
}

/// How much of its time a queue gives the ticks that came back between two batches of
/// packets, in units of about one table slot visited (a few nanoseconds): about as much as
/// answering one scan ([`ringvs_abi::MAX_SCAN_SLOTS`] slots). The units each step costs are
/// in [`cost`]; the daemon's queues apply 64 one-step actions, or check 1024 ids, or drop
/// 128 entries, or visit 4096 slots between two batches.
const WORK_PER_POLL: usize = 4096;

/// What the steps of applying an action cost, in units of [`WORK_PER_POLL`].
mod cost {
    /// An action that takes one step (a block, a level), or the start of one that takes
    /// several.
    pub const ACTION: usize = 64;
    /// Checking one id of `drop-connections` against what the tick's scans returned.
    pub const CHECK: usize = 4;
    /// Dropping one entry.
    pub const DROP: usize = 32;
    /// Visiting one table slot.
    pub const VISIT: usize = 1;
}

/// An action being applied.
enum Step {
    /// Not begun.
    Begin(dt::Action),
    /// `drop-connections`: the ids past those `found` (checked, with their clients) still
    /// to check.
    Check {
        ids: Vec<u32>,
        found: Vec<(u32, (IpAddr, u16))>,
    },
    /// `drop-connections`, checked: entries from `next` on still to drop.
    Drop {
        found: Vec<(u32, (IpAddr, u16))>,
        next: usize,
    },
    /// `drop-embryonic`: `left` slots still to visit from `at`, `want` entries still to drop.
    Embryonic { at: u32, left: u32, want: u32 },
}

/// Where a [`Step`] left an action.
enum Progress {
    /// Applied (true) or refused.
    Done(bool),
    /// To go on with at the next call.
    Pending(Step),
}

/// A tick's actions being applied.
pub(super) struct Applying {
    /// Service slot and position of the defense.
    at: (u16, usize),
    /// The defense's preparation when it ticked (its slot's identity).
    prepared: Arc<super::super::defense::PluginDefense>,
    /// What is left to apply.
    actions: std::vec::IntoIter<dt::Action>,
    /// The action under way, if one is.
    current: Option<(ActionKind, Step)>,
    /// What is left of the tick's host work.
    budget: TickBudget,
}

/// What is left of the host's work for one defense's tick.
struct TickBudget {
    /// Connection ids `drop-connections` may still name.
    drops: usize,
    /// Table slots `drop-embryonic` may still visit.
    scan: u32,
    /// The entries the tick's scans returned (what `drop-connections` may name).
    seen: Seen,
}
