//! A queue's side of connection sync (`crate::sync`, docs/HA.md).
//!
//! **Sending.** A connection is queued for the peers when its client's packets reach
//! `sync.threshold` and every `sync.period` after (IPVS's rule: a SYN flood's half-open
//! entries are never sent), and on every TCP state change after that (so that a peer ends
//! it when this director does). SYN-proxied connections are not sent: their sequence
//! offsets are not in the format. A connection that a persistence template controls takes
//! its template along (in a templates message): IPVS syncs a connection's controlling
//! template with it, so a persistent client's next connection after a failover goes to the
//! same realserver, and the template is refreshed at the peers as long as its flows live.
//!
//! **Receiving.** An entry names its service and realserver by address; a queue takes it
//! only if it has both. A new entry is *held*: in the table, forwarding if a packet of its
//! flow arrives (the VIP moved before `ringvs ha master` ran), but not counted in its
//! realserver's connections, which schedulers read, until a packet uses it or the director
//! becomes master ([`Shard::promote_held`]). A held entry is marked by [`AUX_HELD`] in
//! [`Conn::aux`], which only SYN-proxied connections use otherwise.
//!
//! An update for a connection this queue already has changes its state, timer and
//! realserver if the entry is held or this director is a backup; a live connection of a
//! master or active director is its own (its packets decide).
//!
//! A template goes into the director's shared store ([`TemplateStore::adopt`]) if the
//! service is persistent here and has the realserver; it is not held (templates count in no
//! scheduler's numbers): it sends new flows of its key to its realserver at once, for the
//! time the sender had left (at most the service's persistence timeout). A template that
//! controls connections here is this director's own unless it is a backup.
//!
//! [`TemplateStore::adopt`]: crate::dataplane::templates::TemplateStore::adopt

use super::Shard;
use crate::config::SyncRole;
use crate::conn::{ConnId, NewConn, State, F_INACTIVE, F_NOOUTPUT, F_PROXIED, TICKS_PER_SEC};
use crate::dataplane::templates::TemplateId;
use crate::sync::Entry;
use crate::wire::ip_proto;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::Relaxed;

/// [`Conn::aux`](crate::conn::Conn::aux) bit of a held entry (never set with `F_PROXIED`).
pub(super) const AUX_HELD: u8 = 0x80;

/// Slots a bulk dump visits per call (bounded work per `poll`).
pub const DUMP_SLOTS: u32 = 16_384;

/// True if `c` is held (received by sync, not yet counted).
#[inline]
pub(super) fn held<A: crate::conn::FlowAddr>(c: &crate::conn::Conn<A>) -> bool {
    c.flags & F_PROXIED == 0 && c.aux & AUX_HELD != 0
}

impl Shard {
    /// Queues connection `id` for the peers if its packet count or a state change makes it
    /// due (see the module docs); `changed`: its TCP state just changed.
    #[inline]
    pub(super) fn sync_if_due(&mut self, id: ConnId, changed: bool) {
        let Some(s) = &self.cfg.sync else { return };
        let c = self.table.get(id);
        let due = if changed {
            c.in_pkts >= s.link.threshold
        } else {
            s.link.due(c.in_pkts)
        };
        if !due || c.flags & F_PROXIED != 0 {
            return;
        }
        if let Some(e) = self.entry_of(id) {
            s.send(e);
        }
        if let Some(e) = self.template_of(id) {
            s.send(e);
        }
    }

    /// The template that controls connection `id`, as sync carries it, if any.
    fn template_of(&self, id: ConnId) -> Option<Entry> {
        let link = *self.links.get(id.index() as usize)?;
        let t = self.cfg.templates.info(TemplateId(link.checked_sub(1)?))?;
        let c = self.table.get(id);
        let vip = self.snap.service(t.svc)?.vip4()?;
        let server = self.snap.dest_addr(t.dest)?;
        let mut left = crate::conn::ticks_left(t.expires, self.now);
        if t.controls > 0 {
            // It lives while it controls connections (IPVS re-arms its timer): at least a
            // whole timeout at the peers, whose copies control nothing.
            let timeout = self.svcs.get(t.svc as usize)?.as_ref()?.persist_timeout;
            left = left.max(timeout);
        }
        Some(Entry {
            proto: c.proto(),
            state: State::None,
            template: Some(t.key),
            client: SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            vip,
            server,
            expires_in: left.div_ceil(TICKS_PER_SEC).max(1),
        })
    }

    /// Connection `id` as sync carries it.
    fn entry_of(&self, id: ConnId) -> Option<Entry> {
        let c = self.table.get(id);
        let vip = self.snap.service(c.svc)?.vip4()?;
        let server = self.snap.dest_addr(c.dest)?;
        let left = crate::conn::ticks_left(c.expires(), self.now);
        Some(Entry {
            proto: c.proto(),
            state: c.state,
            template: None,
            client: SocketAddrV4::new(c.caddr(), c.cport()),
            vip,
            server,
            expires_in: left.div_ceil(TICKS_PER_SEC).max(1),
        })
    }

    /// A held entry that a packet uses, or every held one on takeover: counted in its
    /// realserver's connections from now on.
    #[inline]
    pub(super) fn activate(&mut self, id: ConnId) {
        let c = self.table.get_mut(id);
        if !held(c) {
            return;
        }
        c.aux &= !AUX_HELD;
        let active = c.flags & F_INACTIVE == 0;
        if let Some(Some(d)) = self.dests.get(c.dest as usize) {
            d.bind(active);
        }
        self.held = self.held.saturating_sub(1);
    }

    /// The director became master: every held entry goes live.
    pub(super) fn promote_held(&mut self) {
        if self.held == 0 {
            return;
        }
        for i in 0..self.table.slots() {
            if let Some((id, c)) = self.table.entry_at(i) {
                if held(c) {
                    self.activate(id);
                }
            }
        }
    }

    /// Takes what a peer sent (see the module docs). Returns how many entries were taken.
    pub(super) fn apply_synced(&mut self, entries: &[Entry]) -> u64 {
        let Some(link) = self.cfg.sync.as_ref().map(|s| s.link.clone()) else {
            return 0;
        };
        let backup = link.role() == SyncRole::Backup;
        let mut taken = 0;
        for e in entries {
            let done = match e.template {
                Some(key) => self.apply_template(e, key, backup),
                None => self.apply_one(e, backup),
            };
            if done.is_none() {
                link.stats.ignored.fetch_add(1, Relaxed);
            } else {
                taken += 1;
            }
        }
        link.stats.applied.fetch_add(taken, Relaxed);
        taken
    }

    fn apply_template(&mut self, e: &Entry, key: u64, backup: bool) -> Option<()> {
        let svc = self.snap.service_at(e.proto, *e.vip.ip(), e.vip.port())?;
        let service = self.snap.service(svc)?;
        let dest = service.dests.iter().find(|d| d.addr == e.server.into())?;
        let rt = self.svcs.get(svc as usize)?.as_ref()?;
        // Not persistent here: the template would send nothing anywhere.
        rt.persist.as_ref()?;
        let ticks = e
            .expires_in
            .min(rt.persist_timeout / TICKS_PER_SEC.max(1) + 1)
            .saturating_mul(TICKS_PER_SEC)
            .min(crate::conn::MAX_STEP);
        let taken =
            self.cfg
                .templates
                .adopt(svc, key, dest.id, &dest.state, (self.now, ticks), !backup);
        taken.ok()?.then_some(())
    }

    fn apply_one(&mut self, e: &Entry, backup: bool) -> Option<()> {
        let svc = self.snap.service_at(e.proto, *e.vip.ip(), e.vip.port())?;
        let service = self.snap.service(svc)?;
        let dest = service.dests.iter().find(|d| d.addr == e.server.into())?;
        let (did, two_way) = (dest.id, dest.forward.two_way());
        let rt = self.svcs.get(svc as usize)?.as_ref()?;
        let timeout = if e.proto == ip_proto::UDP {
            rt.timeouts[State::Udp as usize]
        } else {
            rt.timeouts[e.state as usize]
        };
        let ticks = e
            .expires_in
            .min(timeout / TICKS_PER_SEC.max(1) + 1)
            .saturating_mul(TICKS_PER_SEC)
            .min(crate::conn::MAX_STEP);
        let expires = self.now.wrapping_add(ticks);
        let (ip, port) = (*e.client.ip(), e.client.port());
        let hash = self.table.hash(e.proto, ip, port);
        let inactive = if e.state.is_active() { 0 } else { F_INACTIVE };
        if let Some(id) = self.table.lookup(hash, e.proto, ip, port, |c| c.svc == svc) {
            let c = self.table.get(id);
            let is_held = held(c);
            if !is_held && !backup {
                return None;
            }
            if c.flags & F_PROXIED != 0 {
                return None;
            }
            let (old_dest, was_active) = (c.dest, c.flags & F_INACTIVE == 0);
            if !is_held && (old_dest != did || was_active != e.state.is_active()) {
                if let Some(Some(d)) = self.dests.get(old_dest as usize) {
                    d.unbind(was_active);
                }
                if let Some(Some(d)) = self.dests.get(did as usize) {
                    d.bind(e.state.is_active());
                }
            }
            let c = self.table.get_mut(id);
            c.dest = did;
            c.flags = (c.flags & !F_INACTIVE) | inactive;
            self.table.set_state(id, e.state);
            self.table.set_expiry(id, expires);
            return Some(());
        }
        if self.table.len() >= self.table.capacity() {
            return None;
        }
        let id = self
            .table
            .insert(
                hash,
                NewConn {
                    proto: e.proto,
                    caddr: ip,
                    cport: port,
                    svc,
                    dest: did,
                    state: e.state,
                    flags: inactive | super::flow::F_REPLIED | if two_way { 0 } else { F_NOOUTPUT },
                },
                expires,
            )
            .ok()?;
        self.table.get_mut(id).aux = AUX_HELD;
        self.held += 1;
        if let Some(n) = self.svc_conns.get_mut(svc as usize) {
            *n += 1;
        }
        Some(())
    }

    /// Up to [`DUMP_SLOTS`] slots of the table from `from` as entries for a bulk transfer
    /// (connections past their handshake; not SYN-proxied ones), and where to go on
    /// (`None`: the end).
    pub(super) fn dump(&self, from: u32) -> (Vec<Entry>, Option<u32>) {
        let end = from.saturating_add(DUMP_SLOTS).min(self.table.slots());
        let mut out = Vec::new();
        // The templates that control them, once each, after them (a message carries one kind).
        let mut templates = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in from..end {
            let Some((id, c)) = self.table.entry_at(i) else {
                continue;
            };
            let embryonic = matches!(c.state, State::None | State::SynRecv | State::SynAck);
            if embryonic || c.flags & F_PROXIED != 0 {
                continue;
            }
            out.extend(self.entry_of(id));
            if self
                .links
                .get(id.index() as usize)
                .is_some_and(|&l| seen.insert(l))
            {
                templates.extend(self.template_of(id));
            }
        }
        out.append(&mut templates);
        (out, (end < self.table.slots()).then_some(end))
    }
}

/// The same, for tests, benchmarks and the fuzz targets, which drive a queue without its
/// control channel.
impl Shard {
    /// Takes entries a peer sent, as `Control::Synced` does; how many were taken.
    pub fn take_synced(&mut self, entries: &[Entry]) -> u64 {
        self.apply_synced(entries)
    }

    /// Makes every held entry live, as `Control::Promote` does.
    pub fn promote(&mut self) {
        self.promote_held();
    }

    /// A bulk transfer's step, as `Control::SyncDump` answers it.
    pub fn sync_dump(&self, from: u32) -> (Vec<Entry>, Option<u32>) {
        self.dump(from)
    }

    /// Held entries, all of them and the ESTABLISHED ones (a scan of the table).
    pub fn held_entries(&self) -> (u64, u64) {
        let (mut all, mut established) = (0, 0);
        for (_, c) in self.table.iter() {
            if held(c) {
                all += 1;
                established += u64::from(c.state == State::Established);
            }
        }
        (all, established)
    }
}
