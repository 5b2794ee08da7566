//! The policy seam: one plugin of one service in one queue, its lifecycle written once.
//!
//! ```text
//!   control plane                                   queue (data plane)
//!   ─────────────                                   ──────────────────
//!   Prepared<I>: plugin + one ready ──snapshot──▶  PolicySlot<I>
//!   instance per queue                              active ─── call ──▶ Ok: answer
//!                                                     │ fault: poison ──▶ Retire(active)
//!   backoff, then a fresh instance ◀── Need ──────────┘                   Need(role, fault)
//!          └──────────── Control::Fresh(role, Instance) ──▶ deliver ─▶ active
//!                                                   previous (the instance a swap replaced):
//!                                                     the first fallback; state handed over
//!                                                     at the swap (export → import)
//! ```
//!
//! A [`PolicySlot`] holds what the control plane prepared for a service's policy (its
//! identity across snapshots), the active instance, the instance it replaced (kept as the
//! first fallback by kinds that want one, [`Policy::KEEPS_PREVIOUS`]) and whether a fresh
//! instance has been asked for. Its methods are the lifecycle: [`PolicySlot::sync`] with a
//! snapshot (keep, replace with state handover, or give back), [`PolicySlot::call`] (active,
//! then previous; a fault poisons), [`PolicySlot::deliver`] (a fresh instance after a
//! fault). Every instance that leaves the data path goes back to the control plane as a
//! typed [`Instance`] in [`PluginEvent::Retire`], to be dropped off the packet path.
//!
//! Schedulers ([`super::sched`]), persistence ([`super::persist`]) and defenses
//! ([`super::defense`]) are thin wrappers: what is theirs is what they decide with the
//! answer (a built-in fallback, a template, a level). A new kind of policy implements
//! [`Policy`] for its instance, adds a variant to [`Instance`] and [`Role`], and uses a slot.

mod stats;

pub use stats::{
    reserve_touched, ActionKind, Func, PluginCounters, PluginStats, ACTIONS, FUNCS, MAX_SAMPLES,
};

use crate::plugin::{DefenseInstance, Fault, PersistenceInstance, Plugin, SchedulerInstance};
use crossbeam_channel::Sender;
use std::sync::{Arc, Mutex};

/// Which policy of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Its scheduler.
    Scheduler,
    /// Its persistence plugin.
    Persistence,
    /// Its defense at this position of the service's list.
    Defense(usize),
}

/// A plugin instance of any kind, as it travels between the control plane and a queue.
pub enum Instance {
    /// A scheduler's.
    Scheduler(SchedulerInstance),
    /// A persistence plugin's.
    Persistence(PersistenceInstance),
    /// A defense's.
    Defense(DefenseInstance),
}

impl Instance {
    /// The plugin it is an instance of.
    pub fn plugin(&self) -> &Arc<Plugin> {
        match self {
            Instance::Scheduler(i) => &i.plugin,
            Instance::Persistence(i) => &i.plugin,
            Instance::Defense(i) => &i.plugin,
        }
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Instance::Scheduler(_) => "Scheduler",
            Instance::Persistence(_) => "Persistence",
            Instance::Defense(_) => "Defense",
        };
        write!(f, "{kind}({})", self.plugin().name)
    }
}

/// A plugin instance a [`PolicySlot`] can hold.
pub trait Policy: Sized + Send + 'static {
    /// Whether the instance a swap replaces stays as the first fallback (schedulers: a
    /// flow must get a server) or is given back (persistence and defenses fall back to
    /// "no opinion").
    const KEEPS_PREVIOUS: bool;
    /// The plugin it is an instance of.
    fn plugin(&self) -> &Arc<Plugin>;
    /// Private state for a successor (`export-state`); none by default.
    fn export_state(&mut self) -> Result<Vec<u8>, Fault> {
        Ok(Vec::new())
    }
    /// State of a predecessor (`import-state`): a refusal means "start fresh", a fault
    /// poisons. Ignored by default.
    fn import_state(&mut self, _state: &[u8]) -> Result<(), Fault> {
        Ok(())
    }
    /// As a typed event payload.
    fn into_instance(self) -> Instance;
}

impl Policy for SchedulerInstance {
    const KEEPS_PREVIOUS: bool = true;
    fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
    fn export_state(&mut self) -> Result<Vec<u8>, Fault> {
        SchedulerInstance::export_state(self)
    }
    fn import_state(&mut self, state: &[u8]) -> Result<(), Fault> {
        SchedulerInstance::import_state(self, state).map(|_refused_or_not| ())
    }
    fn into_instance(self) -> Instance {
        Instance::Scheduler(self)
    }
}

impl Policy for PersistenceInstance {
    const KEEPS_PREVIOUS: bool = false;
    fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
    fn export_state(&mut self) -> Result<Vec<u8>, Fault> {
        PersistenceInstance::export_state(self)
    }
    fn import_state(&mut self, state: &[u8]) -> Result<(), Fault> {
        PersistenceInstance::import_state(self, state).map(|_refused_or_not| ())
    }
    fn into_instance(self) -> Instance {
        Instance::Persistence(self)
    }
}

impl Policy for DefenseInstance {
    const KEEPS_PREVIOUS: bool = false;
    fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
    fn into_instance(self) -> Instance {
        Instance::Defense(self)
    }
}

/// A policy prepared by the control plane for a snapshot: the plugin, what the kind needs
/// besides (a defense's levels, a persistence plugin's configuration), and one initialised
/// instance per queue, which each queue takes when it switches to the snapshot.
pub struct Prepared<I, X = ()> {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// What the kind needs besides.
    pub extra: X,
    instances: Mutex<Vec<Option<I>>>,
}

impl<I, X> Prepared<I, X> {
    /// A preparation with these per-queue instances.
    pub fn new(plugin: Arc<Plugin>, extra: X, instances: Vec<I>) -> Prepared<I, X> {
        Prepared {
            plugin,
            extra,
            instances: Mutex::new(instances.into_iter().map(Some).collect()),
        }
    }

    /// The instance prepared for `queue` (once).
    pub fn take(&self, queue: usize) -> Option<I> {
        self.instances
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(queue).and_then(Option::take))
    }
}

impl<I, X> std::fmt::Debug for Prepared<I, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({})", self.plugin.name)
    }
}

/// What a queue tells the control plane about plugins.
#[derive(Debug)]
pub enum PluginEvent {
    /// The queue has no usable instance of a service's policy (it was poisoned, or none
    /// was prepared for this queue) and wants a fresh one.
    Need {
        /// Which slot.
        at: SlotId,
        /// The plugin.
        plugin: Arc<Plugin>,
        /// What happened, if it was a fault.
        fault: Option<Fault>,
    },
    /// A defense asked to block a prefix (already applied in the asking queue).
    Block {
        /// The checked request.
        req: super::defense::BlockRequest,
        /// The plugin.
        by: Arc<str>,
    },
    /// A defense asked to lift a block.
    Unblock {
        /// The service whose defense asked.
        svc: u16,
        /// Prefix address.
        addr: std::net::IpAddr,
        /// Prefix length.
        len: u8,
    },
    /// An instance the queue no longer uses, to be dropped off the data path.
    Retire(Instance),
}

/// Where a slot is: queue, service and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId {
    /// Queue.
    pub shard: usize,
    /// Service slot.
    pub svc: u16,
    /// Which policy of the service.
    pub role: Role,
}

/// Where a slot reports: the queue's plugin accounting and its channel to the control plane
/// (`None` in tests and replay).
pub struct Ctx<'a> {
    /// Calls, faults, fallbacks.
    pub stats: &'a mut PluginStats,
    /// Events for the control plane.
    pub events: Option<&'a Sender<PluginEvent>>,
}

impl Ctx<'_> {
    fn retire<I: Policy>(&self, inst: I) {
        if let Some(tx) = self.events {
            let _ = tx.send(PluginEvent::Retire(inst.into_instance()));
        }
    }

    /// Gives an instance of any kind back to the control plane.
    pub fn retire_any(&self, inst: Instance) {
        if let Some(tx) = self.events {
            let _ = tx.send(PluginEvent::Retire(inst));
        }
    }
}

/// One policy of one service in one queue.
pub struct PolicySlot<I, X = ()> {
    prepared: Arc<Prepared<I, X>>,
    at: SlotId,
    active: Option<I>,
    previous: Option<I>,
    waiting: bool,
    /// The active instance is lent out ([`PolicySlot::lend`]) and not yet back.
    lent: bool,
}

impl<I: Policy, X> std::fmt::Debug for PolicySlot<I, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySlot")
            .field("plugin", &self.prepared.plugin.name)
            .field("at", &self.at)
            .field("active", &self.active.is_some())
            .field("previous", &self.previous.is_some())
            .field("waiting", &self.waiting)
            .field("lent", &self.lent)
            .finish()
    }
}

impl<I: Policy, X> PolicySlot<I, X> {
    /// Makes `slot` match what a snapshot prepared: the same preparation keeps the slot
    /// (its instances, its state); a new one takes the instance prepared for this queue,
    /// which takes over the predecessor's private state (`export-state` → `import-state`;
    /// a fault poisons the new instance), the predecessor becoming the fallback or going
    /// back; `None` gives every instance back. Returns true if the slot changed.
    pub fn sync(
        slot: &mut Option<Self>,
        prepared: Option<&Arc<Prepared<I, X>>>,
        at: SlotId,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        let Some(p) = prepared else {
            if let Some(mut old) = slot.take() {
                old.give_back(ctx);
            }
            return false;
        };
        if let Some(s) = slot.as_mut().filter(|s| Arc::ptr_eq(&s.prepared, p)) {
            s.at = at;
            return false;
        }
        let mut new = PolicySlot {
            prepared: p.clone(),
            at,
            active: p.take(at.shard),
            previous: None,
            waiting: false,
            lent: false,
        };
        if let Some(mut old) = slot.take() {
            let mut import_fault = None;
            if let (Some(from), Some(to)) = (old.active.as_mut(), new.active.as_mut()) {
                let (oname, nname) = (from.plugin().name.clone(), to.plugin().name.clone());
                if let Ok(state) = ctx.stats.call(&oname, Func::State, || from.export_state()) {
                    if !state.is_empty() {
                        if let Err(f) = ctx
                            .stats
                            .call(&nname, Func::State, || to.import_state(&state))
                        {
                            import_fault = Some(f);
                        }
                    }
                }
            }
            if I::KEEPS_PREVIOUS && old.active.is_some() {
                new.previous = old.active.take();
            }
            old.give_back(ctx);
            if let Some(f) = import_fault {
                new.poison(f, ctx);
            }
        }
        if new.active.is_none() {
            new.request(None, ctx);
        }
        *slot = Some(new);
        true
    }

    /// What the control plane prepared (identity across snapshots, and the kind's extra).
    pub fn prepared(&self) -> &Arc<Prepared<I, X>> {
        &self.prepared
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.prepared.plugin
    }

    /// True if the active instance is usable (false while poisoned or not yet delivered;
    /// true while it is lent out).
    pub fn healthy(&self) -> bool {
        self.active.is_some() || self.lent
    }

    /// True while the active instance is lent out ([`PolicySlot::lend`]).
    pub fn lent(&self) -> bool {
        self.lent
    }

    /// Lends the active instance out for a call made elsewhere (a defense's tick on the
    /// queue's tick thread). Until it comes back ([`PolicySlot::take_back`]) calls are
    /// answered by the caller's fallback and counted as busy, and no fresh instance is asked
    /// for. `None` if there is no active instance or it is already lent.
    pub fn lend(&mut self) -> Option<I> {
        if self.lent {
            return None;
        }
        let inst = self.active.take()?;
        self.lent = true;
        Some(inst)
    }

    /// An instance lent for a call comes back with the call's outcome `r` (it took
    /// `elapsed`, timed or not). If the slot still waits for it (the same preparation, lent),
    /// it is active again, or, after a fault, given back and a fresh one asked for, as
    /// [`PolicySlot::call_active`] would; otherwise (the slot was replaced or given back
    /// meanwhile) it is given back and the answer ignored.
    pub fn take_back<T>(
        &mut self,
        prepared: &Arc<Prepared<I, X>>,
        inst: I,
        (func, elapsed): (Func, std::time::Duration),
        r: Result<T, Fault>,
        ctx: &mut Ctx<'_>,
    ) -> Option<T> {
        if !self.lent || !Arc::ptr_eq(&self.prepared, prepared) {
            ctx.retire(inst);
            return None;
        }
        self.lent = false;
        let name = inst.plugin().name.clone();
        ctx.stats.record(&name, func, elapsed, &r);
        match r {
            Ok(v) => {
                self.active = Some(inst);
                Some(v)
            }
            Err(fault) => {
                ctx.stats.fallback(&name);
                ctx.retire(inst);
                self.request(Some(fault), ctx);
                None
            }
        }
    }

    /// Asks the active instance, then the previous one. A fault of the active instance
    /// poisons it (given back, a fresh one asked for); a fault of the previous one gives it
    /// back. `None`: no instance answered, and the fallback is counted — the caller decides
    /// without the plugin.
    #[inline]
    pub fn call<T>(
        &mut self,
        func: Func,
        ctx: &mut Ctx<'_>,
        mut f: impl FnMut(&mut I) -> Result<T, Fault>,
    ) -> Option<T> {
        if let Some(inst) = self.active.as_mut() {
            let t = ctx.stats.start();
            let r = f(inst);
            ctx.stats.finish(&inst.plugin().name, func, t, &r);
            match r {
                Ok(v) => return Some(v),
                Err(fault) => self.poison(fault, ctx),
            }
        } else if self.lent {
            // Busy elsewhere (its tick): the caller decides, and nobody is poisoned.
            ctx.stats.busy(&self.prepared.plugin.name);
            return None;
        } else {
            self.request(None, ctx);
        }
        ctx.stats.fallback(&self.prepared.plugin.name);
        if let Some(prev) = self.previous.as_mut() {
            let t = ctx.stats.start();
            let r = f(prev);
            ctx.stats.finish(&prev.plugin().name, func, t, &r);
            match r {
                Ok(v) => return Some(v),
                Err(_) => {
                    // The fallback failed too: given back, no replacement asked for.
                    if let Some(p) = self.previous.take() {
                        ctx.retire(p);
                    }
                }
            }
        }
        None
    }

    /// Asks the active instance only (no fallback to count: a defense's tick). A fault
    /// poisons it and counts a fallback. `None` if it did not answer.
    pub fn call_active<T>(
        &mut self,
        func: Func,
        ctx: &mut Ctx<'_>,
        f: impl FnOnce(&mut I) -> Result<T, Fault>,
    ) -> Option<T> {
        let inst = self.active.as_mut()?;
        let name = inst.plugin().name.clone();
        match ctx.stats.call(&name, func, || f(inst)) {
            Ok(v) => Some(v),
            Err(fault) => {
                ctx.stats.fallback(&name);
                self.poison(fault, ctx);
                None
            }
        }
    }

    /// Tells every instance something (a scheduler's new server list): a fault of the
    /// active one poisons it, of the previous one gives it back.
    pub fn tell(
        &mut self,
        func: Func,
        ctx: &mut Ctx<'_>,
        mut f: impl FnMut(&mut I) -> Result<(), Fault>,
    ) {
        if let Some(inst) = self.active.as_mut() {
            let name = inst.plugin().name.clone();
            if let Err(fault) = ctx.stats.call(&name, func, || f(inst)) {
                self.poison(fault, ctx);
            }
        }
        if let Some(prev) = self.previous.as_mut() {
            let name = prev.plugin().name.clone();
            if ctx.stats.call(&name, func, || f(prev)).is_err() {
                if let Some(p) = self.previous.take() {
                    ctx.retire(p);
                }
            }
        }
    }

    /// Takes a fresh instance (after a fault) if the slot has none and it is of the slot's
    /// plugin; otherwise gives it back. True if taken.
    pub fn deliver(&mut self, inst: I, ctx: &mut Ctx<'_>) -> bool {
        if self.active.is_none() && !self.lent && Arc::ptr_eq(inst.plugin(), &self.prepared.plugin)
        {
            self.active = Some(inst);
            self.waiting = false;
            true
        } else {
            ctx.retire(inst);
            false
        }
    }

    /// Poisons the active instance: given back, a fresh one asked for.
    fn poison(&mut self, fault: Fault, ctx: &mut Ctx<'_>) {
        if let Some(inst) = self.active.take() {
            ctx.retire(inst);
            self.request(Some(fault), ctx);
        }
    }

    /// Asks the control plane for a fresh instance, once until it comes.
    fn request(&mut self, fault: Option<Fault>, ctx: &mut Ctx<'_>) {
        if self.waiting {
            return;
        }
        if let Some(tx) = ctx.events {
            self.waiting = true;
            let _ = tx.send(PluginEvent::Need {
                at: self.at,
                plugin: self.prepared.plugin.clone(),
                fault,
            });
        }
    }

    /// Gives every instance back (the service no longer uses this policy).
    pub fn give_back(&mut self, ctx: &mut Ctx<'_>) {
        for inst in [self.active.take(), self.previous.take()]
            .into_iter()
            .flatten()
        {
            ctx.retire(inst);
        }
        self.waiting = false;
        // A lent instance is given back when it returns (the slot no longer waits for it).
        self.lent = false;
    }
}
