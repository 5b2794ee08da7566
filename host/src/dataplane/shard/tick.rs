//! A queue's once-a-second work: top talkers, each defense's tick, and the actions it asks
//! for, checked before they apply.

use super::super::blocks::Block;
use super::super::defense::{block_request, effective_table, prefix, wit_ip, ServiceTable};
use super::super::policy::{ActionKind, Ctx, Func, PluginEvent};
use super::super::stats::DefenseStatus;
use super::proxy::Mode as ProxyMode;
use super::Shard;
use crate::conn::{ConnId, State, TICKS_PER_SEC};
use crate::plugin::defense_types as dt;
use std::sync::Arc;

impl Shard {
    /// Once a second: hand over the top talkers, run the defenses' ticks, apply what they
    /// ask (after checking it).
    pub(super) fn second(&mut self) {
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
        let mut todo: Vec<(u16, usize, Vec<dt::Action>)> = Vec::new();
        let queues = self.cfg.queues.max(1) as u32;
        for (svc, rt) in self.svcs.iter_mut().enumerate() {
            let Some(rt) = rt.as_mut() else { continue };
            for (i, slot) in rt.defenses.iter_mut().enumerate() {
                slot.acted = false;
                slot.refused_last = std::mem::take(&mut slot.refusing);
                if !slot.slot.healthy() {
                    continue;
                }
                let stats = dt::TickStats {
                    now: self.tick_sec,
                    queues,
                    level: slot.level,
                    entries: self.table.len() as u64,
                    capacity: self.table.capacity() as u64,
                    memory: self.table.memory_bytes() as u64,
                    memory_limit: self.cfg.memory_limit as u64,
                    system_available: self.system_available,
                    by_state: self.table.by_state().to_vec(),
                    new_flows: attempts - a0,
                    packets: packets - p0,
                    top_sources: top.clone(),
                };
                let view = ServiceTable {
                    table: &self.table,
                    svc: svc as u16,
                    now: self.now,
                    timeouts: rt.timeouts,
                };
                let mut ctx = Ctx {
                    stats: &mut self.plugin_stats,
                    events: self.cfg.events.as_ref(),
                };
                // A fault: "no defense action"; the instance is replaced later.
                match slot
                    .slot
                    .call_active(Func::Tick, &mut ctx, |inst| inst.tick(&stats, Some(&view)))
                {
                    Some(actions) if !actions.is_empty() => todo.push((svc as u16, i, actions)),
                    _ => {}
                }
            }
        }
        for (svc, i, actions) in todo {
            // The host's work for one defense's tick is bounded (see the WIT): at most
            // MAX_TICK_ACTIONS actions, MAX_TICK_DROPS connection ids and MAX_TICK_SCAN
            // slots scanned; the rest is refused and counted.
            let mut budget = TickBudget {
                drops: ringvs_abi::MAX_TICK_DROPS,
                scan: ringvs_abi::MAX_TICK_SCAN,
            };
            // Past the cap, only counted (in bulk, below).
            let mut over = [0u64; crate::dataplane::policy::ACTIONS];
            for a in actions.iter().skip(ringvs_abi::MAX_TICK_ACTIONS) {
                over[ActionKind::of(a) as usize] += 1;
            }
            if let Some(slot) = self.svcs[svc as usize]
                .as_ref()
                .and_then(|rt| rt.defenses.get(i))
            {
                let c = self.plugin_stats.defense(&slot.plugin().name);
                for (r, n) in c.refused.iter_mut().zip(over) {
                    *r += n;
                }
            }
            for a in actions.into_iter().take(ringvs_abi::MAX_TICK_ACTIONS) {
                let kind = ActionKind::of(&a);
                let ok = self.apply(svc, i, a, &mut budget);
                if let Some(slot) = self.svcs[svc as usize]
                    .as_mut()
                    .and_then(|rt| rt.defenses.get_mut(i))
                {
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
            }
            if let Some(rt) = self.svcs[svc as usize].as_mut() {
                (rt.table, rt.timeouts) = effective_table(&rt.defenses, &rt.own);
            }
        }
        // The SYN proxy is held on while any defense of the service asks for it (defenses
        // removed by a reload no longer do).
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

    /// Applies one action of defense `i` of service `svc` if it is allowed and within what
    /// is left of the tick's `budget`; false if it is refused.
    fn apply(&mut self, svc: u16, i: usize, a: dt::Action, budget: &mut TickBudget) -> bool {
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
            dt::Action::DropConnections(ids) => {
                if ids.len() > budget.drops {
                    return false;
                }
                budget.drops -= ids.len();
                let valid = ids
                    .iter()
                    .all(|&id| self.table.entry_at(id).is_some_and(|(_, c)| c.svc == svc));
                if valid {
                    for id in ids {
                        if let Some((cid, _)) = self.table.entry_at(id) {
                            self.kill(cid);
                        }
                    }
                }
                valid
            }
            dt::Action::DropEmbryonic(n) => {
                let by_state = self.table.by_state();
                let embryonic =
                    by_state[State::SynRecv as usize] + by_state[State::SynAck as usize];
                if n == 0 || n > embryonic {
                    return false;
                }
                let slots = self.table.slots();
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let start = (self.rng % slots.max(1) as u64) as u32;
                let scan = slots.min(budget.scan);
                budget.scan -= scan;
                let mut victims: Vec<ConnId> = Vec::with_capacity(n.min(scan) as usize);
                for k in 0..scan {
                    if victims.len() == n as usize {
                        break;
                    }
                    if let Some((id, c)) = self.table.entry_at((start + k) % slots) {
                        if c.svc == svc && matches!(c.state, State::SynRecv | State::SynAck) {
                            victims.push(id);
                        }
                    }
                }
                for id in victims {
                    self.kill(id);
                }
                true
            }
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
                if !Arc::make_mut(&mut self.blocks).insert(svc, req.addr, req.len, block) {
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
                Arc::make_mut(&mut self.blocks).remove(svc, addr, len);
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

/// What is left of the host's work for one defense's tick.
struct TickBudget {
    /// Connection ids `drop-connections` may still name.
    drops: usize,
    /// Table slots `drop-embryonic` may still visit.
    scan: u32,
}
