//! A queue's once-a-second work: top talkers, each defense's tick, and the actions it asks
//! for, checked before they apply.

use super::super::blocks::Block;
use super::super::defense::{block_request, effective_table, prefix, wit_ip, ServiceTable};
use super::super::policy::{ActionKind, Ctx, Func, PluginEvent};
use super::super::stats::DefenseStatus;
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
            .take(16)
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
            for a in actions {
                let kind = ActionKind::of(&a);
                let ok = self.apply(svc, i, a);
                if let Some(slot) = self.svcs[svc as usize]
                    .as_mut()
                    .and_then(|rt| rt.defenses.get_mut(i))
                {
                    let c = self.plugin_stats.defense(&slot.plugin().name);
                    if ok {
                        c.actions[kind as usize] += 1;
                        slot.acted |= !matches!(
                            kind,
                            ActionKind::SetLevel | ActionKind::DropRate | ActionKind::Unblock
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

    /// Applies one action of defense `i` of service `svc` if it is allowed; false if it is
    /// refused.
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
            dt::Action::DropConnections(ids) => {
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
                let mut victims: Vec<ConnId> = Vec::with_capacity(n as usize);
                for k in 0..slots {
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
                let Some(req) = block_request(&b) else {
                    return false;
                };
                let until = self
                    .now
                    .saturating_add(req.secs.saturating_mul(TICKS_PER_SEC));
                Arc::make_mut(&mut self.blocks).insert(
                    req.addr,
                    req.len,
                    Block {
                        until,
                        mode: req.mode,
                        by: by.clone(),
                    },
                );
                if let Some(tx) = &self.cfg.events {
                    let _ = tx.send(PluginEvent::Block { req, by });
                }
                true
            }
            dt::Action::Unblock(p) => {
                let Some((addr, len)) = prefix(&p) else {
                    return false;
                };
                Arc::make_mut(&mut self.blocks).remove(addr, len);
                if let Some(tx) = &self.cfg.events {
                    let _ = tx.send(PluginEvent::Unblock { addr, len });
                }
                true
            }
        }
    }
}
