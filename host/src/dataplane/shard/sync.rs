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
use crate::conn::{
    Conn, ConnId, ConnTable, FlowAddr, NewConn, State, F_INACTIVE, F_NOOUTPUT, F_PROXIED,
    TICKS_PER_SEC,
};
use crate::dataplane::service::DestState;
use crate::dataplane::templates::TemplateId;
use crate::sync::Entry;
use crate::wire::ip_proto;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// [`Conn::aux`](crate::conn::Conn::aux) bit of a held entry (never set with `F_PROXIED`).
pub(super) const AUX_HELD: u8 = 0x80;

/// Slots a bulk dump visits per call (bounded work per `poll`).
pub const DUMP_SLOTS: u32 = 16_384;

/// True if `c` is held (received by sync, not yet counted).
#[inline]
pub(super) fn held<A: FlowAddr>(c: &Conn<A>) -> bool {
    c.flags & F_PROXIED == 0 && c.aux & AUX_HELD != 0
}

/// True if connection `c` is due to be sent (see the module docs); `changed`: its TCP state
/// just changed.
#[inline]
fn due<A: FlowAddr>(link: &crate::sync::Link, c: &Conn<A>, changed: bool) -> bool {
    let due = if changed {
        c.in_pkts >= link.threshold
    } else {
        link.due(c.in_pkts)
    };
    due && c.flags & F_PROXIED == 0
}

/// Marks held connection `c` live: counted in its realserver's connections. False if it was
/// not held.
#[inline]
fn unhold<A: FlowAddr>(c: &mut Conn<A>, dests: &[Option<Arc<DestState>>]) -> bool {
    if !held(c) {
        return false;
    }
    c.aux &= !AUX_HELD;
    if let Some(Some(d)) = dests.get(c.dest as usize) {
        d.bind(c.flags & F_INACTIVE == 0);
    }
    true
}

impl Shard {
    /// Queues IPv4 connection `id` for the peers if its packet count or a state change makes
    /// it due (see the module docs); `changed`: its TCP state just changed.
    #[inline]
    pub(super) fn sync_if_due(&self, id: ConnId, changed: bool) {
        let Some(s) = &self.cfg.sync else { return };
        let c = self.table.get(id);
        if due(&s.link, c, changed) {
            self.send_conn(c, self.links.get(id.index() as usize).copied());
        }
    }

    /// The same for IPv6 connection `id`.
    #[inline]
    pub(super) fn sync_if_due6(&self, id: ConnId, changed: bool) {
        let (Some(s), Some(six)) = (&self.cfg.sync, &self.six) else {
            return;
        };
        let c = six.table.get(id);
        if due(&s.link, c, changed) {
            self.send_conn(c, six.links.get(id.index() as usize).copied());
        }
    }

    /// Queues connection `c` (`link`: its entry of its table's link column) and the
    /// template that controls it for the peers.
    #[inline(never)]
    fn send_conn<A: FlowAddr>(&self, c: &Conn<A>, link: Option<u32>) {
        let Some(s) = &self.cfg.sync else { return };
        if let Some(e) = self.entry_of(c) {
            s.send(e);
        }
        if let Some(e) = link.and_then(|l| self.template_of(l, c.proto())) {
            s.send(e);
        }
    }

    /// The template of link `link` (a link column's entry: its id + 1) as sync carries it,
    /// if any; `proto`: its connection's.
    fn template_of(&self, link: u32, proto: u8) -> Option<Entry> {
        let t = self.cfg.templates.info(TemplateId(link.checked_sub(1)?))?;
        let vip = self.snap.service(t.svc)?.vip;
        let server = self.snap.dest_sock(t.dest)?;
        let mut left = crate::conn::ticks_left(t.expires, self.now);
        if t.controls > 0 {
            // It lives while it controls connections (IPVS re-arms its timer): at least a
            // whole timeout at the peers, whose copies control nothing.
            let timeout = self.svcs.get(t.svc as usize)?.as_ref()?.persist_timeout;
            left = left.max(timeout);
        }
        Some(Entry {
            proto,
            state: State::None,
            template: Some(t.key),
            client: Entry::NO_CLIENT,
            vip,
            server,
            expires_in: left.div_ceil(TICKS_PER_SEC).max(1),
        })
    }

    /// Connection `c` as sync carries it.
    fn entry_of<A: FlowAddr>(&self, c: &Conn<A>) -> Option<Entry> {
        let vip = self.snap.service(c.svc)?.vip;
        let server = self.snap.dest_sock(c.dest)?;
        let left = crate::conn::ticks_left(c.expires(), self.now);
        Some(Entry {
            proto: c.proto(),
            state: c.state,
            template: None,
            client: SocketAddr::new(c.caddr().ip(), c.cport()),
            vip,
            server,
            expires_in: left.div_ceil(TICKS_PER_SEC).max(1),
        })
    }

    /// A held IPv4 entry that a packet uses: counted in its realserver's connections from
    /// now on.
    #[inline]
    pub(super) fn activate(&mut self, id: ConnId) {
        if unhold(self.table.get_mut(id), &self.dests) {
            self.held = self.held.saturating_sub(1);
        }
    }

    /// The same for an IPv6 one (nothing to look at while nothing is held).
    #[inline]
    pub(super) fn activate6(&mut self, id: ConnId) {
        if self.held == 0 {
            return;
        }
        let Some(six) = self.six.as_mut() else { return };
        if unhold(six.table.get_mut(id), &self.dests) {
            self.held = self.held.saturating_sub(1);
        }
    }

    /// The director became master: every held entry, of both tables, goes live.
    pub(super) fn promote_held(&mut self) {
        if self.held == 0 {
            return;
        }
        let mut n = 0;
        for i in 0..self.table.slots() {
            if let Some((id, _)) = self.table.entry_at(i) {
                n += u64::from(unhold(self.table.get_mut(id), &self.dests));
            }
        }
        if let Some(six) = self.six.as_mut() {
            for i in 0..six.table.slots() {
                if let Some((id, _)) = six.table.entry_at(i) {
                    n += u64::from(unhold(six.table.get_mut(id), &self.dests));
                }
            }
        }
        self.held = self.held.saturating_sub(n);
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

    /// The service at `vip` for `proto`, either family.
    fn service_by(&self, proto: u8, vip: SocketAddr) -> Option<u16> {
        match vip {
            SocketAddr::V4(a) => self.snap.service_at(proto, *a.ip(), a.port()),
            SocketAddr::V6(a) => self.snap.service_at6(proto, *a.ip(), a.port()),
        }
    }

    fn apply_template(&mut self, e: &Entry, key: u64, backup: bool) -> Option<()> {
        let svc = self.service_by(e.proto, e.vip)?;
        let service = self.snap.service(svc)?;
        let dest = service.dests.iter().find(|d| d.addr == e.server)?;
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
        let svc = self.service_by(e.proto, e.vip)?;
        let service = self.snap.service(svc)?;
        let dest = service.dests.iter().find(|d| d.addr == e.server)?;
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
        let taking = Taking {
            e,
            svc,
            dest: did,
            flags: super::flow::F_REPLIED | if two_way { 0 } else { F_NOOUTPUT },
            expires: self.now.wrapping_add(ticks),
            backup,
        };
        let inserted = match e.client {
            SocketAddr::V4(c) => taking.put_into(&mut self.table, &self.dests, *c.ip(), c.port()),
            SocketAddr::V6(c) => {
                let six = self.six.as_mut()?;
                taking.put_into(&mut six.table, &self.dests, *c.ip(), c.port())
            }
        }?;
        if inserted {
            self.held += 1;
            if let Some(n) = self.svc_conns.get_mut(svc as usize) {
                *n += 1;
            }
        }
        Some(())
    }

    /// Up to [`DUMP_SLOTS`] slots of the tables (the IPv4 table's, then the IPv6 one's)
    /// from `from` as entries for a bulk transfer (connections past their handshake; not
    /// SYN-proxied ones), and where to go on (`None`: the end).
    pub(super) fn dump(&self, from: u32) -> (Vec<Entry>, Option<u32>) {
        let four = self.table.slots();
        let six = self.six.as_ref().map_or(0, |s| s.table.slots());
        let end = from
            .saturating_add(DUMP_SLOTS)
            .min(four.saturating_add(six));
        let mut d = Dump::default();
        if from < four {
            self.dump_in(&mut d, &self.table, &self.links, from..end.min(four));
        }
        if let Some(s) = self.six.as_ref().filter(|_| end > four) {
            self.dump_in(
                &mut d,
                &s.table,
                &s.links,
                from.max(four) - four..end - four,
            );
        }
        d.out.append(&mut d.templates);
        (d.out, (end < four.saturating_add(six)).then_some(end))
    }

    /// [`Shard::dump`]'s walk of one table's `slots`.
    fn dump_in<A: FlowAddr>(
        &self,
        d: &mut Dump,
        table: &ConnTable<A>,
        links: &[u32],
        slots: std::ops::Range<u32>,
    ) {
        for i in slots {
            let Some((id, c)) = table.entry_at(i) else {
                continue;
            };
            let embryonic = matches!(c.state, State::None | State::SynRecv | State::SynAck);
            if embryonic || c.flags & F_PROXIED != 0 {
                continue;
            }
            d.out.extend(self.entry_of(c));
            // The templates that control them, once each, after them (a message carries
            // one kind).
            if let Some(&l) = links.get(id.index() as usize) {
                if d.seen.insert(l) {
                    d.templates.extend(self.template_of(l, c.proto()));
                }
            }
        }
    }
}

/// A bulk transfer's step under way: connections, then their templates.
#[derive(Default)]
struct Dump {
    out: Vec<Entry>,
    templates: Vec<Entry>,
    seen: std::collections::HashSet<u32>,
}

/// A received connection on its way into its table.
struct Taking<'a> {
    e: &'a Entry,
    svc: u16,
    dest: u32,
    /// Flags of a new entry (besides `F_INACTIVE`).
    flags: u8,
    expires: crate::conn::Tick,
    backup: bool,
}

impl Taking<'_> {
    /// Updates the connection of client `ip`:`port` in `table` (see the module docs) or
    /// inserts it held. `Some(true)`: inserted; `None`: not taken.
    fn put_into<A: FlowAddr>(
        &self,
        table: &mut ConnTable<A>,
        dests: &[Option<Arc<DestState>>],
        ip: A,
        port: u16,
    ) -> Option<bool> {
        let e = self.e;
        let (svc, did) = (self.svc, self.dest);
        let hash = table.hash(e.proto, ip, port);
        let inactive = if e.state.is_active() { 0 } else { F_INACTIVE };
        if let Some(id) = table.lookup(hash, e.proto, ip, port, |c| c.svc == svc) {
            let c = table.get(id);
            let is_held = held(c);
            if (!is_held && !self.backup) || c.flags & F_PROXIED != 0 {
                return None;
            }
            let (old_dest, was_active) = (c.dest, c.flags & F_INACTIVE == 0);
            if !is_held && (old_dest != did || was_active != e.state.is_active()) {
                if let Some(Some(d)) = dests.get(old_dest as usize) {
                    d.unbind(was_active);
                }
                if let Some(Some(d)) = dests.get(did as usize) {
                    d.bind(e.state.is_active());
                }
            }
            let c = table.get_mut(id);
            c.dest = did;
            c.flags = (c.flags & !F_INACTIVE) | inactive;
            table.set_state(id, e.state);
            table.set_expiry(id, self.expires);
            return Some(false);
        }
        if table.len() >= table.capacity() {
            return None;
        }
        let conn = NewConn {
            proto: e.proto,
            caddr: ip,
            cport: port,
            svc,
            dest: did,
            state: e.state,
            flags: inactive | self.flags,
        };
        let id = table.insert(hash, conn, self.expires).ok()?;
        table.get_mut(id).aux = AUX_HELD;
        Some(true)
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

    /// Held entries, all of them and the ESTABLISHED ones (a scan of both tables).
    pub fn held_entries(&self) -> (u64, u64) {
        let (mut all, mut established) = (0, 0);
        let six = self
            .six
            .iter()
            .flat_map(|s| s.table.iter().map(|(_, c)| (held(c), c.state)));
        for (h, state) in self
            .table
            .iter()
            .map(|(_, c)| (held(c), c.state))
            .chain(six)
        {
            if h {
                all += 1;
                established += u64::from(state == State::Established);
            }
        }
        (all, established)
    }
}
