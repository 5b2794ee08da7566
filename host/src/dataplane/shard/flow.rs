//! The packet path of tracked flows: a client's packet to a virtual service (inbound), a
//! realserver's reply (outbound), new flows (admit, persist, schedule, insert — or the SYN
//! proxy's cookie), state transitions, expiry and early drop.
//!
//! # Early drop
//!
//! When the table (or the service's `max_conns` share) is full, a new flow evicts the least
//! valuable of [`crate::conn::EVICT_SAMPLE`] entries read from a random slot, as conntrack's
//! `early_drop` does, instead of being refused: first entries that never completed a
//! handshake or never saw a reply, then closing ones, then idle ones with few packets
//! ([`Evicted`]). Established connections that talk are never evicted for a new flow.
//!
//! # Evidence
//!
//! A source counts toward blocking (the per-source sketch and the top talkers that defenses
//! read) only once it is proven real: a TCP handshake completed, or a valid SYN-proxy
//! cookie. A flood of SYNs spoofing somebody's address cannot get them refused. UDP has no
//! handshake: its sources count when they send.

use super::*;
use crate::conn::{ticks_left, Conn, FlowAddr, F_PROXIED, F_PROXY_OPENING};
use crate::dataplane::service::Way;
use crate::dataplane::stats::{Evicted, FEW_PACKETS, IDLE_TICKS};
use crate::dataplane::synproxy::{Seg, SynProxy};
use crate::dataplane::tunnel::{self, NotSent};
use std::net::{IpAddr, SocketAddr};

/// Flag: the entry saw a packet from its realserver.
pub(super) const F_REPLIED: u8 = 32;
/// Flag: the entry's source is proven real (counted in the per-source sketch).
pub(super) const F_VERIFIED: u8 = 64;

/// A new flow's realserver, as [`Shard::choose`] picked it.
pub(super) struct Chosen {
    /// Its slot.
    pub dest: u32,
    /// Its shared state.
    pub state: Arc<DestState>,
    /// The template that controls the connection, if persistent.
    pub link: Option<TemplateId>,
    /// The new entry's flags.
    pub flags: u8,
}

impl Chosen {
    /// The new entry of a connection from `client` (address, port) of service `svc`.
    #[inline]
    pub(super) fn conn<A: FlowAddr>(
        &self,
        proto: u8,
        client: (A, u16),
        svc: u16,
        state: State,
    ) -> NewConn<A> {
        NewConn {
            proto,
            caddr: client.0,
            cport: client.1,
            svc,
            dest: self.dest,
            state,
            flags: self.flags,
        }
    }
}

/// A TCP or UDP packet's addressing, as [`Shard::process`] read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct L4 {
    /// IP protocol.
    pub proto: u8,
    /// Source endpoint.
    pub src: SocketAddrV4,
    /// Destination endpoint.
    pub dst: SocketAddrV4,
    /// TCP flags (0 for UDP).
    pub flags: u8,
    /// State of the transport checksum.
    pub csum: Csum,
    /// IP total length (bytes after it are padding).
    pub total: usize,
}

impl L4 {
    fn is_tcp(&self) -> bool {
        self.proto == ip_proto::TCP
    }

    /// A SYN without ACK.
    fn is_syn(&self) -> bool {
        self.is_tcp() && self.flags & (tf::SYN | tf::ACK) == tf::SYN
    }
}

/// What a TCP segment did to an entry (see [`step`]).
pub(super) struct Stepped {
    /// The new state, if it changed (to be set through the table, which counts states).
    pub changed: Option<State>,
    /// The timeout of the state it is in now.
    pub timeout: Tick,
    /// The client just completed a handshake: it is proven real.
    pub verified: bool,
}

/// Applies a TCP segment going `dir` with `flags` to entry `c` of a service whose runtime
/// is `rt`: IPVS's state table (the input-only rows for an entry that never saw its
/// realserver), the active/inactive flip of its realserver's counts, the proof of a real
/// client. The state itself is left for the caller to set through its table.
///
/// The usual segment (most of an established flow's) changes nothing but the timer: that
/// case is decided inline ([`unchanged`]); every other goes through [`step_changing`].
#[inline]
pub(super) fn step<A: FlowAddr>(
    rt: &SvcRt,
    dests: &[Option<Arc<DestState>>],
    c: &mut Conn<A>,
    dir: Direction,
    flags: u8,
) -> Stepped {
    match unchanged(rt, c, dir, flags) {
        Some(timeout) => Stepped {
            changed: None,
            timeout,
            verified: false,
        },
        None => step_changing(rt, dests, c, dir, flags),
    }
}

/// The timeout of entry `c` after a TCP segment going `dir` with `flags` that leaves its
/// flags and state as they are (what [`step`] would find), or `None` if the segment
/// changes either.
#[inline(always)]
pub(super) fn unchanged<A: FlowAddr>(
    rt: &SvcRt,
    c: &Conn<A>,
    dir: Direction,
    flags: u8,
) -> Option<Tick> {
    // The flags stay: the entry has seen its realserver, and either the segment comes from
    // the client or the entry already knows it was replied to.
    if c.flags & crate::conn::F_NOOUTPUT != 0
        || (dir == Direction::Output && c.flags & F_REPLIED == 0)
    {
        return None;
    }
    let new = match Event::from_tcp_flags(flags) {
        Some(ev) => rt.table.next(dir, ev, c.state),
        None => c.state,
    };
    (new == c.state).then(|| rt.timeouts[new as usize])
}

/// [`step`] for a segment [`unchanged`] does not decide (it gives the same result for any
/// segment), out of the packet path.
#[inline(never)]
fn step_changing<A: FlowAddr>(
    rt: &SvcRt,
    dests: &[Option<Arc<DestState>>],
    c: &mut Conn<A>,
    dir: Direction,
    flags: u8,
) -> Stepped {
    let dir = if c.flags & crate::conn::F_NOOUTPUT != 0 {
        if dir == Direction::Output {
            c.flags &= !crate::conn::F_NOOUTPUT;
            Direction::Output
        } else {
            Direction::InputOnly
        }
    } else {
        dir
    };
    if dir == Direction::Output {
        c.flags |= F_REPLIED;
    }
    let old = c.state;
    let new = match Event::from_tcp_flags(flags) {
        Some(ev) => rt.table.next(dir, ev, old),
        None => old,
    };
    let timeout = rt.timeouts[new as usize];
    if new == old {
        return Stepped {
            changed: None,
            timeout,
            verified: false,
        };
    }
    let was_active = c.flags & F_INACTIVE == 0;
    let active = new.is_active();
    if was_active != active {
        if active {
            c.flags &= !F_INACTIVE;
        } else {
            c.flags |= F_INACTIVE;
        }
        if let Some(Some(d)) = dests.get(c.dest as usize) {
            if !super::sync::held(c) {
                d.counters.flip(active);
            }
        }
    }
    let verified = new == State::Established
        && c.flags & (F_REPLIED | F_VERIFIED) == F_REPLIED
        && dir != Direction::Output;
    if verified {
        c.flags |= F_VERIFIED;
    }
    Stepped {
        changed: Some(new),
        timeout,
        verified,
    }
}

/// The early-drop class of an entry (lower goes first), or `None` if a new flow may not
/// evict it.
#[inline]
pub(super) fn evict_class<A: FlowAddr>(
    c: &Conn<A>,
    now: Tick,
    timeouts: Option<&[Tick; STATES]>,
) -> Option<u8> {
    if c.flags & F_PROXY_OPENING != 0 {
        // A proven client waiting a moment for its realserver.
        return None;
    }
    let unreplied = if c.proto() == ip_proto::TCP {
        matches!(
            c.state,
            State::None | State::SynRecv | State::SynAck | State::SynSent
        )
    } else {
        c.flags & F_REPLIED == 0
    };
    if unreplied {
        return Some(Evicted::Unreplied as u8);
    }
    // A UDP exchange of one datagram and its answer (DNS-like) is over.
    let udp_done = c.proto() == ip_proto::UDP && c.in_pkts <= 1;
    if c.state.is_closing() || udp_done {
        return Some(Evicted::Closing as u8);
    }
    let full = timeouts.map_or(0, |t| t[c.state as usize]);
    let idle = full.saturating_sub(ticks_left(c.expires(), now));
    (idle >= IDLE_TICKS && c.in_pkts <= FEW_PACKETS).then_some(Evicted::Idle as u8)
}

/// What must follow an entry out of either table, borrowed from the shard beside the
/// table itself ([`leaving!`] makes one).
pub(super) struct Leaving<'a> {
    pub dests: &'a [Option<Arc<DestState>>],
    pub cfg: &'a ShardConfig,
    pub svc_conns: &'a mut [u32],
    pub held: &'a mut u64,
    pub proxy: &'a mut SynProxy,
    pub snap: &'a Snapshot,
}

/// A [`Leaving`] of the shard `$s` (its fields borrowed one by one, so that a table and its
/// link column may be borrowed beside it).
macro_rules! leaving {
    ($s:ident) => {
        Leaving {
            dests: &$s.dests,
            cfg: &$s.cfg,
            svc_conns: &mut $s.svc_conns,
            held: &mut $s.held,
            proxy: &mut $s.proxy,
            snap: &$s.snap,
        }
    };
}
pub(super) use leaving;

impl Leaving<'_> {
    /// Everything that must follow an entry out of its table (expired, evicted or killed):
    /// the realserver's and the source's counts, the persistence template (`links`: the
    /// table's link column), the service's count, and an opening proxied connection's
    /// stash (its client reset if it timed out).
    pub(super) fn forget<A: FlowAddr>(
        &mut self,
        links: &mut [u32],
        id: ConnId,
        c: &Conn<A>,
        timed_out: bool,
    ) {
        if super::sync::held(c) {
            *self.held = self.held.saturating_sub(1);
        } else if let Some(Some(d)) = self.dests.get(c.dest as usize) {
            d.unbind(c.flags & F_INACTIVE == 0);
        }
        if c.flags & F_PERSISTENT != 0 {
            release_link(links, &self.cfg.templates, id);
        }
        if c.flags & F_VERIFIED != 0 {
            self.cfg.sources.ended(c.caddr());
        }
        if let Some(n) = self.svc_conns.get_mut(c.svc as usize) {
            *n = n.saturating_sub(1);
        }
        // Only IPv4 connections are proxied.
        if let (true, Some(a)) = (c.flags & F_PROXY_OPENING != 0, c.caddr().v4()) {
            let vip = timed_out
                .then(|| self.snap.service(c.svc).and_then(Service::vip4))
                .flatten();
            let client = SocketAddrV4::new(a, c.cport());
            self.proxy.abandoned(id.index(), client, c.proxy[0], vip);
        }
    }
}

/// Expires the due entries of `table` (`links`: its link column); how many went.
pub(super) fn expire_in<A: FlowAddr>(
    table: &mut ConnTable<A>,
    links: &mut [u32],
    now: Tick,
    mut l: Leaving<'_>,
) -> usize {
    table.advance(now, EXPIRE_BUDGET, |id, c| l.forget(links, id, c, true))
}

/// Removes entry `id` of `table` now, fixing the counts that follow it.
pub(super) fn kill_in<A: FlowAddr>(
    table: &mut ConnTable<A>,
    links: &mut [u32],
    id: ConnId,
    mut l: Leaving<'_>,
) {
    let c = table.remove(id);
    l.forget(links, id, &c, false);
}

/// Early drop in `table`: evicts the least valuable entry of a sample from slot `start` (of
/// service `svc` only, if given); the class of the one that went.
pub(super) fn evict_in<A: FlowAddr>(
    table: &mut ConnTable<A>,
    links: &mut [u32],
    (start, now): (u32, Tick),
    svc: Option<u16>,
    svcs: &[Option<SvcRt>],
    mut l: Leaving<'_>,
) -> Option<u8> {
    table.evict(
        start,
        Evicted::Idle as u8,
        |c| {
            if svc.is_some_and(|s| s != c.svc) {
                return None;
            }
            let timeouts = svcs
                .get(c.svc as usize)
                .and_then(Option::as_ref)
                .map(|rt| &rt.timeouts);
            evict_class(c, now, timeouts)
        },
        |id, c| l.forget(links, id, c, false),
    )
}

impl Shard {
    pub(super) fn expire(&mut self) {
        let n = expire_in(&mut self.table, &mut self.links, self.now, leaving!(self));
        self.counters.expired += n as u64;
        // Once a second, this queue's share of the template store.
        let sec = (self.now / TICKS_PER_SEC) as u64;
        if sec != self.swept_sec {
            self.swept_sec = sec;
            let queues = self.cfg.queues.max(1);
            self.cfg.templates.sweep(self.now, self.cfg.id, queues);
        }
    }

    /// The queue's next pseudo-random number (xorshift64: where early drop and
    /// `drop-embryonic` start looking).
    pub(super) fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Removes a connection now, fixing the counts that follow it.
    pub(super) fn kill(&mut self, id: ConnId) {
        kill_in(&mut self.table, &mut self.links, id, leaving!(self));
    }

    /// Early drop in the table of a family (`v6`): evicts the least valuable sampled entry
    /// (of service `svc` only, if given). True if one went.
    fn evict(&mut self, svc: Option<u16>, v6: bool) -> bool {
        let at = (self.random() as u32, self.now);
        let class = if v6 {
            let Some(six) = self.six.as_mut() else {
                return false;
            };
            let (table, links) = (&mut six.table, &mut six.links);
            evict_in(table, links, at, svc, &self.svcs, leaving!(self))
        } else {
            let (table, links) = (&mut self.table, &mut self.links);
            evict_in(table, links, at, svc, &self.svcs, leaving!(self))
        };
        match class {
            Some(c) => {
                self.counters.evictions[c as usize] += 1;
                true
            }
            None => false,
        }
    }

    /// Applies a TCP segment to a connection's state and refreshes its timer. A client
    /// whose handshake completes here is proven real (see the module docs).
    #[inline(always)]
    pub(super) fn tcp_step(&mut self, id: ConnId, svc: u16, dir: Direction, flags: u8) {
        if let Some(Some(rt)) = self.svcs.get(svc as usize) {
            if let Some(t) = unchanged(rt, self.table.get(id), dir, flags) {
                self.table.set_expiry(id, self.now.wrapping_add(t));
                return;
            }
        }
        self.tcp_step_changing(id, svc, dir, flags);
    }

    /// [`Shard::tcp_step`] for a segment that [`unchanged`] does not decide, out of the packet
    /// path.
    #[inline(never)]
    fn tcp_step_changing(&mut self, id: ConnId, svc: u16, dir: Direction, flags: u8) {
        let Some(rt) = self.svcs.get(svc as usize).and_then(Option::as_ref) else {
            return;
        };
        let c = self.table.get_mut(id);
        let s = step_changing(rt, &self.dests, c, dir, flags);
        if s.verified {
            let a = c.caddr();
            self.verified(a);
        }
        if let Some(new) = s.changed {
            self.table.set_state(id, new);
            self.table.set_expiry(id, self.now.wrapping_add(s.timeout));
            self.sync_if_due(id, true);
            return;
        }
        self.table.set_expiry(id, self.now.wrapping_add(s.timeout));
    }

    /// A source proved real: it counts toward its rates and the top talkers.
    #[inline]
    fn verified(&mut self, a: Ipv4Addr) {
        self.shed.know(a);
        self.counted(a);
    }

    /// A connection from `a` counts: a new flow (the top talkers, the sketch's rate) and a
    /// live one (the sketch's concurrency, until `forget`).
    #[inline]
    pub(super) fn counted<A: FlowAddr>(&mut self, a: A) {
        self.top.new_flow(a.ip());
        self.cfg.sources.attempt(a);
        self.cfg.sources.created(a);
    }

    /// The block of service `svc` on source `a` now, if any (the queue's own list first).
    #[inline]
    pub(super) fn blocked(&self, svc: u16, a: impl Into<IpAddr>) -> Option<BlockMode> {
        if self.blocks.is_empty() && self.own_blocks.is_empty() {
            return None;
        }
        let a = a.into();
        self.own_blocks
            .lookup(svc, a, self.now)
            .or_else(|| self.blocks.lookup(svc, a, self.now))
            .map(|b| b.mode)
    }

    /// A new-flow attempt: refused for a tarpitted source, else admitted and scheduled.
    /// `proven`: a valid SYN-proxy cookie came with it (the source counts at once); a UDP
    /// source counts when it sends (there is no handshake to wait for).
    #[inline]
    pub(super) fn start_flow(
        &mut self,
        hash: u32,
        proto: u8,
        client: SocketAddrV4,
        svc: u16,
        blocked: Option<BlockMode>,
        proven: bool,
    ) -> Result<ConnId, DropReason> {
        self.counters.attempts += 1;
        if let Some(rt) = self.svcs.get_mut(svc as usize).and_then(Option::as_mut) {
            rt.proxy.syns += u32::from(proto == ip_proto::TCP && !proven);
        }
        if blocked == Some(BlockMode::Tarpit) {
            return Err(DropReason::Tarpit);
        }
        let counted = proven || proto != ip_proto::TCP;
        if proven {
            self.shed.know(*client.ip());
        }
        if counted {
            self.top.new_flow(*client.ip());
            self.cfg.sources.attempt(*client.ip());
        }
        let id = self.new_flow(hash, proto, client, svc)?;
        if counted {
            self.table.get_mut(id).flags |= F_VERIFIED;
            self.cfg.sources.created(*client.ip());
        }
        Ok(id)
    }

    /// Makes room for one more entry of service `svc` in the table of its family (`v6`):
    /// within its `max_conns` share (by evicting one of its own entries) and within the
    /// table (early drop).
    pub(super) fn room_for(&mut self, svc: u16, v6: bool) -> Result<(), DropReason> {
        let limit = self
            .svcs
            .get(svc as usize)
            .and_then(Option::as_ref)
            .map_or(0, |rt| rt.max_conns);
        if limit > 0
            && self.svc_conns.get(svc as usize).copied().unwrap_or(0) >= limit
            && !self.evict(Some(svc), v6)
        {
            return Err(DropReason::MaxConns);
        }
        let full = if v6 {
            self.six
                .as_ref()
                .is_none_or(|s| s.table.len() >= s.table.capacity())
        } else {
            self.table.len() >= self.table.capacity()
        };
        if full && !self.evict(None, v6) {
            return Err(DropReason::TableFull);
        }
        Ok(())
    }

    /// A new flow for service `svc` from `client`: admit (defenses), persist (templates),
    /// schedule and insert. Returns the connection or the reason it was refused.
    pub(super) fn new_flow(
        &mut self,
        hash: u32,
        proto: u8,
        client: SocketAddrV4,
        svc: u16,
    ) -> Result<ConnId, DropReason> {
        self.room_for(svc, false)?;
        let chosen = self.choose(svc, proto, client.into())?;
        let (state, timeout) = self.first_state(svc, proto);
        let conn = chosen.conn(proto, (*client.ip(), client.port()), svc, state);
        let inserted = self
            .table
            .insert(hash, conn, self.now.wrapping_add(timeout));
        let id = self.inserted(inserted, &chosen)?;
        if let Some(t) = chosen.link {
            self.links[id.index() as usize] = t.0 + 1;
        }
        self.bound(svc, &chosen);
        Ok(id)
    }

    /// True if a packet (`is_syn`: a SYN) of entry `c` ends it before it goes on: a removed
    /// realserver's connection ends here if the director (`expire_nodest_conn`) or the
    /// removal (`--expire`) says so, and (IPVS conn_reuse_mode) a SYN on a closed entry
    /// starts a new connection, scheduled afresh.
    #[inline]
    pub(super) fn restarts<A: FlowAddr>(&self, c: &Conn<A>, is_syn: bool) -> bool {
        let flags = self
            .dests
            .get(c.dest as usize)
            .and_then(Option::as_ref)
            .map_or(DEST_F_REMOVED, |d| d.flags());
        let expire =
            flags & DEST_F_GONE != 0 && (self.cfg.expire_nodest_conn || flags & DEST_F_EXPIRE != 0);
        let reuse = is_syn && matches!(c.state, State::TimeWait | State::Close);
        reuse || expire
    }

    /// A new entry's first state and its timeout.
    #[inline]
    pub(super) fn first_state(&self, svc: u16, proto: u8) -> (State, Tick) {
        let Some(rt) = self.svcs.get(svc as usize).and_then(Option::as_ref) else {
            return (State::None, 0);
        };
        if proto == ip_proto::TCP {
            (State::None, rt.timeouts[State::None as usize])
        } else {
            (State::Udp, rt.udp_unreplied)
        }
    }

    /// The outcome of a table insert: on failure, the template the flow would have used is
    /// released.
    #[inline]
    pub(super) fn inserted(
        &self,
        r: Result<ConnId, crate::conn::Full>,
        chosen: &Chosen,
    ) -> Result<ConnId, DropReason> {
        r.map_err(|_| {
            if let Some(t) = chosen.link {
                self.cfg.templates.release(t);
            }
            DropReason::TableFull
        })
    }

    /// Admits (defenses), persists (templates) and schedules a new flow of service `svc`
    /// from `client`.
    pub(super) fn choose(
        &mut self,
        svc: u16,
        proto: u8,
        client: SocketAddr,
    ) -> Result<Chosen, DropReason> {
        let snap = &self.snap;
        let service: &Service = snap.service(svc).ok_or(DropReason::NoService)?;
        let rt = self
            .svcs
            .get_mut(svc as usize)
            .and_then(Option::as_mut)
            .ok_or(DropReason::NoService)?;
        let mut ctx = Ctx {
            stats: &mut self.plugin_stats,
            events: self.cfg.events.as_ref(),
        };
        if !rt.defenses.is_empty() {
            let (new_flows, concurrent) = match client.ip() {
                IpAddr::V4(a) => self.cfg.sources.estimate(a),
                IpAddr::V6(a) => self.cfg.sources.estimate(a),
            };
            let source = crate::plugin::defense_types::SourceStats {
                new_flows,
                concurrent,
            };
            let flow = crate::plugin::flow(proto, client, service.vip);
            if !defense::admit(&mut rt.defenses, &flow, source, &mut ctx) {
                return Err(DropReason::Defense);
            }
        }
        // IPVS ip_vs_sched_persist: the persistence plugin names the flow's affinity key; a
        // valid template for it decides the realserver, else the scheduler does and a
        // template is made. Only here, on the new-flow path, are templates touched.
        let key = match rt.persist.as_mut() {
            Some(p) => persist::affinity(p, proto, client, service.vip, &mut ctx),
            None => None,
        };
        let templates = &self.cfg.templates;
        let (now, ttl) = (self.now, rt.persist_timeout);
        let pick = |sched: &mut SchedSlot, ctx: &mut Ctx<'_>| {
            sched
                .pick(proto, client, service.vip, &service.dests, ctx)
                .ok_or(DropReason::NoServer)
        };
        // The link column of the family's table.
        let links = if client.is_ipv4() {
            !self.links.is_empty()
        } else {
            self.six.as_ref().is_some_and(|s| !s.links.is_empty())
        };
        // `link`: the template that will control the connection.
        let (i, link) = match key {
            None => (pick(&mut rt.sched, &mut ctx)?, None),
            Some(key) => {
                let mut hit = true;
                let found = match templates.find(svc, key, now, ttl) {
                    Bind::Missing => {
                        hit = false;
                        let i = pick(&mut rt.sched, &mut ctx)?;
                        let d = &service.dests[i];
                        match templates.create(svc, key, d.id, &d.state, now, ttl) {
                            Ok(b) => (Some(i), b),
                            Err(_) => return Err(DropReason::TemplateFull),
                        }
                    }
                    b => (None, b),
                };
                match found {
                    (_, Bind::Bound { id, dest }) => {
                        match service.dests.iter().position(|d| d.id == dest) {
                            Some(i) if links => {
                                self.counters.persist_hits += u64::from(hit);
                                (i, Some(id))
                            }
                            // Not in this queue's snapshot yet (or no link column): not
                            // persistent this time.
                            _ => {
                                templates.release(id);
                                (pick(&mut rt.sched, &mut ctx)?, None)
                            }
                        }
                    }
                    (Some(i), _) => (i, None),
                    (None, _) => (pick(&mut rt.sched, &mut ctx)?, None),
                }
            }
        };
        let dest = &service.dests[i];
        Ok(Chosen {
            dest: dest.id,
            state: dest.state.clone(),
            link,
            flags: F_INACTIVE
                | if link.is_some() { F_PERSISTENT } else { 0 }
                // Its replies bypass the director: IPVS's input-only rows for good.
                | if dest.forward.two_way() {
                    0
                } else {
                    crate::conn::F_NOOUTPUT
                },
        })
    }

    /// Counts a new connection of service `svc` to its chosen realserver.
    #[inline]
    pub(super) fn bound(&mut self, svc: u16, chosen: &Chosen) {
        chosen.state.bind(false);
        if let Some(n) = self.svc_conns.get_mut(svc as usize) {
            *n += 1;
        }
        let did = chosen.dest as usize;
        self.svc_traffic[svc as usize].conns += 1;
        if let Some(t) = self.dest_traffic.get_mut(did) {
            t.conns += 1;
        }
        self.counters.total.conns += 1;
    }

    /// True if the SYN proxy answers new connections of service `svc` now (in `auto`
    /// mode, the table's half-open entries are checked first: see `ProxyRt`).
    #[inline]
    fn proxying(&mut self, svc: u16) -> bool {
        let by_state = self.table.by_state();
        let embryonic = u64::from(by_state[State::SynRecv as usize])
            + u64::from(by_state[State::SynAck as usize]);
        let capacity = self.table.capacity() as u64;
        self.svcs
            .get_mut(svc as usize)
            .and_then(Option::as_mut)
            .is_some_and(|rt| rt.proxy.check_embryonic(embryonic, capacity))
    }

    /// A new UDP flow of service `svc`: false if its flood guard holds it back.
    #[inline]
    pub(super) fn udp_admit(&mut self, svc: u16) -> bool {
        self.svcs
            .get_mut(svc as usize)
            .and_then(Option::as_mut)
            .is_none_or(|rt| rt.udp_guard.admit())
    }

    /// True if service `svc` takes connections up in their middle (`sloppy`).
    #[inline]
    fn sloppy(&self, svc: u16) -> bool {
        self.svcs
            .get(svc as usize)
            .and_then(Option::as_ref)
            .is_some_and(|rt| rt.sloppy)
    }

    /// True if cookies are checked for service `svc` (a TCP service whose proxy is not off).
    #[inline]
    fn cookies(&self, svc: u16) -> bool {
        self.svcs
            .get(svc as usize)
            .and_then(Option::as_ref)
            .is_some_and(|rt| rt.proxy.enabled())
    }

    /// A client's SYN answered by the proxy (no state).
    fn proxy_syn(&mut self, pkt: &mut Packet<'_>, l4: &L4, svc: u16) -> Verdict {
        let seg = Seg::read(&pkt.data()[..l4.total]);
        let Some(seg) = seg else {
            return self.drop(DropReason::Malformed);
        };
        if !self.shed.admit(*l4.src.ip()) {
            return self.drop(DropReason::Overload);
        }
        if let Some(rt) = self.svcs.get_mut(svc as usize).and_then(Option::as_mut) {
            rt.proxy.syns += 1;
            rt.proxy.cookies += 1;
        }
        self.counters.attempts += 1;
        if self.proxy.answer_syn(pkt, &seg) {
            Verdict::Forward
        } else {
            self.drop(DropReason::Malformed)
        }
    }

    /// An ACK for a connection the table does not know: a valid cookie opens a connection
    /// to a realserver (the ACK becomes the proxy's SYN to it), anything else is dropped.
    fn proxy_ack(
        &mut self,
        pkt: &mut Packet<'_>,
        l4: &L4,
        svc: u16,
        hash: u32,
        blocked: Option<BlockMode>,
    ) -> Verdict {
        let Some(seg) = Seg::read(&pkt.data()[..l4.total]) else {
            return self.drop(DropReason::Malformed);
        };
        let accepted = match self.proxy.check_ack(&seg) {
            Ok(a) => a,
            Err(_) => return self.drop(DropReason::NoConn),
        };
        if let Some(rt) = self.svcs.get_mut(svc as usize).and_then(Option::as_mut) {
            rt.proxy.verified += 1;
        }
        let id = match self.start_flow(hash, l4.proto, l4.src, svc, blocked, true) {
            Ok(id) => id,
            Err(r) => return self.drop(r),
        };
        let timeout = SynProxy::open_timeout();
        self.table.set_state(id, State::SynRecv);
        self.table.set_expiry(id, self.now.wrapping_add(timeout));
        let c = self.table.get_mut(id);
        c.in_pkts = 1;
        let Some(to) = self.snap.dest_addr(c.dest) else {
            self.kill(id);
            return self.drop(DropReason::NoServer);
        };
        let now = self.now;
        if self.proxy.open(
            pkt,
            &seg,
            &accepted,
            id.index(),
            self.table.get_mut(id),
            to,
            now,
        ) {
            self.count_in(svc, self.table.get(id).dest, pkt.len());
            Verdict::Forward
        } else {
            self.kill(id);
            self.drop(DropReason::Malformed)
        }
    }

    /// Counts a packet to a realserver.
    #[inline]
    pub(super) fn count_in(&mut self, svc: u16, dest: u32, len: usize) {
        let len = len as u64;
        let t = &mut self.svc_traffic[svc as usize];
        t.in_pkts += 1;
        t.in_bytes += len;
        if let Some(t) = self.dest_traffic.get_mut(dest as usize) {
            t.in_pkts += 1;
            t.in_bytes += len;
        }
        self.counters.total.in_pkts += 1;
        self.counters.total.in_bytes += len;
    }

    /// Counts a packet to a client.
    #[inline]
    pub(super) fn count_out(&mut self, svc: u16, dest: u32, len: usize) {
        let len = len as u64;
        let t = &mut self.svc_traffic[svc as usize];
        t.out_pkts += 1;
        t.out_bytes += len;
        if let Some(t) = self.dest_traffic.get_mut(dest as usize) {
            t.out_pkts += 1;
            t.out_bytes += len;
        }
        self.counters.total.out_pkts += 1;
        self.counters.total.out_bytes += len;
    }

    /// A client packet of a proxied connection still opening: its data kept for the
    /// realserver, or dropped (the client sends it again); a RST or FIN ends it.
    fn proxy_opening_client(&mut self, pkt: &mut Packet<'_>, l4: &L4, id: ConnId) -> Verdict {
        if l4.flags & (tf::RST | tf::FIN) != 0 {
            // The client gave up before the realserver answered.
            self.kill(id);
            return self.drop(DropReason::NoConn);
        }
        let Some(seg) = Seg::read(&pkt.data()[..l4.total]) else {
            return self.drop(DropReason::Malformed);
        };
        let isn = self.table.get(id).proxy[1];
        if self.proxy.client_while_opening(pkt, &seg, id.index(), isn) {
            Verdict::Consumed
        } else {
            self.drop(DropReason::ProxyOpening)
        }
    }

    /// The table hash of IPv4 client endpoint `client`: the one `prefetch` computed for
    /// this packet if it did, else computed now.
    #[inline(always)]
    fn hash4(&self, proto: u8, client: SocketAddrV4) -> u32 {
        let (ip, port) = (*client.ip(), client.port());
        match self.hints.hash_of(FlowKey::v4(proto, ip, port)) {
            Some(h) => h,
            None => self.table.hash(proto, ip, port),
        }
    }

    /// Client → virtual service.
    #[inline]
    pub(super) fn inbound(&mut self, pkt: &mut Packet<'_>, l4: L4, svc: u16) -> Verdict {
        let (proto, client) = (l4.proto, l4.src);
        let hash = self.hash4(proto, client);
        let found = self
            .table
            .lookup(hash, proto, *client.ip(), client.port(), |e| e.svc == svc);
        let is_syn = l4.is_syn();
        self.top.packet(*client.ip());
        let blocked = self.blocked(svc, *client.ip());
        if blocked == Some(BlockMode::Drop) {
            return self.drop(DropReason::Blocked);
        }
        let id = match found {
            Some(id) => {
                self.activate(id);
                let c = self.table.get(id);
                if c.flags & F_PROXY_OPENING != 0 {
                    return self.proxy_opening_client(pkt, &l4, id);
                }
                if self.restarts(c, is_syn) {
                    self.kill(id);
                    if !is_syn && proto != ip_proto::UDP {
                        return self.drop(DropReason::DestRemoved);
                    }
                    if is_syn && self.proxying(svc) {
                        return self.proxy_syn(pkt, &l4, svc);
                    }
                    match self.start_flow(hash, proto, client, svc, blocked, false) {
                        Ok(id) => id,
                        Err(r) => return self.drop(r),
                    }
                } else {
                    id
                }
            }
            None if is_syn && self.proxying(svc) => return self.proxy_syn(pkt, &l4, svc),
            None if l4.is_tcp() && !is_syn => {
                if l4.flags & (tf::ACK | tf::RST) == tf::ACK && self.cookies(svc) {
                    return self.proxy_ack(pkt, &l4, svc, hash, blocked);
                }
                // IPVS sloppy_tcp: a connection another director started (ECMP moved it
                // here) goes on; a RST has nothing to go on with.
                if l4.flags & tf::RST != 0 || !self.sloppy(svc) {
                    return self.drop(DropReason::NoConn);
                }
                match self.start_flow(hash, proto, client, svc, blocked, false) {
                    Ok(id) => {
                        self.counters.sloppy += 1;
                        id
                    }
                    Err(r) => return self.drop(r),
                }
            }
            None => {
                if proto == ip_proto::UDP && !self.udp_admit(svc) {
                    return self.drop(DropReason::FloodLimit);
                }
                match self.start_flow(hash, proto, client, svc, blocked, false) {
                    Ok(id) => id,
                    Err(r) => return self.drop(r),
                }
            }
        };
        if proto == ip_proto::TCP {
            self.tcp_step(id, svc, Direction::Input, l4.flags);
        } else if let Some(Some(rt)) = self.svcs.get(svc as usize) {
            let c = self.table.get(id);
            let t = if c.flags & F_REPLIED != 0 {
                rt.timeouts[State::Udp as usize]
            } else {
                rt.udp_unreplied
            };
            self.table.set_expiry(id, self.now.wrapping_add(t));
        }
        let c = self.table.get_mut(id);
        c.in_pkts = c.in_pkts.saturating_add(1);
        if self.cfg.sync.is_some() {
            self.sync_if_due(id, false);
        }
        let c = *self.table.get(id);
        let way = self.snap.dest_way(c.dest);
        if let Way::Tunnel(t) = way {
            // Either family: a tunnel may carry IPv4 to an IPv6 realserver.
            let Some(rip) = self.snap.dest_ip(c.dest) else {
                return self.drop(DropReason::NoServer);
            };
            return self.tunnel(pkt, svc, c.dest, t, rip, hash);
        }
        let Some(to) = self.snap.dest_addr(c.dest) else {
            return self.drop(DropReason::NoServer);
        };
        match way {
            Way::Nat | Way::Tunnel(_) => {}
            Way::Route => {
                // LVS-DR: unchanged, to the realserver's MAC (the L2 backend frames it).
                pkt.next_hop = Some((*to.ip()).into());
                self.count_in(svc, c.dest, l4.total);
                return Verdict::Forward;
            }
        }
        let data = &mut pkt.data_mut()[..l4.total];
        if c.flags & F_PROXIED != 0 {
            SynProxy::to_server(&mut data[IHL..], &c, l4.flags, l4.csum == Csum::Full);
        }
        nat::rewrite(data, IHL, proto, Side::Dst, to, l4.csum);
        self.count_in(svc, c.dest, l4.total);
        Verdict::Forward
    }

    /// LVS-TUN: the client's packet, unchanged, inside an IP header of `rip`'s family to
    /// realserver `rip` (see `dataplane::tunnel`).
    pub(super) fn tunnel(
        &mut self,
        pkt: &mut Packet<'_>,
        svc: u16,
        dest: u32,
        kind: crate::config::Tunnel,
        rip: IpAddr,
        hash: u32,
    ) -> Verdict {
        let len = pkt.len();
        self.tunnel_ident = self.tunnel_ident.wrapping_add(1);
        let (src, mtu) = match rip {
            IpAddr::V4(_) => (self.snap.tunnel_source().into(), self.snap.tunnel_mtu()),
            IpAddr::V6(_) => (self.snap.tunnel_source6().into(), self.snap.tunnel_mtu6()),
        };
        let outer = tunnel::Outer {
            tunnel: kind,
            src,
            rip,
            mtu,
            ident: self.tunnel_ident,
            entropy: hash,
        };
        match tunnel::encapsulate(pkt, &outer) {
            Ok(()) => {
                self.count_in(svc, dest, len);
                Verdict::Forward
            }
            Err(NotSent::TooBig) => {
                self.counters.tunnel_too_big += 1;
                Verdict::Forward
            }
            Err(NotSent::Gso) => self.drop(DropReason::TunnelGso),
            Err(NotSent::NoRoom) => self.drop(DropReason::Malformed),
        }
    }

    /// Realserver → client, if it belongs to a tracked connection.
    #[inline]
    pub(super) fn outbound(&mut self, pkt: &mut Packet<'_>, l4: L4) -> Verdict {
        let (proto, server, client) = (l4.proto, l4.src, l4.dst);
        let hash = self.hash4(proto, client);
        let snap = &self.snap;
        let found = self
            .table
            .lookup(hash, proto, *client.ip(), client.port(), |e| {
                snap.dest_addr(e.dest) == Some(server)
            });
        let Some(id) = found else {
            if self.snap.is_realserver(proto, *server.ip(), server.port()) {
                return self.drop(DropReason::StaleReply);
            }
            if self.snap.is_vip(*client.ip()) {
                // Passing it on would loop back into the device.
                return self.drop(DropReason::NoService);
            }
            return self.pass();
        };
        self.activate(id);
        let c = *self.table.get(id);
        let (svc, dest) = (c.svc, c.dest);
        let Some(vip) = self.snap.service(svc).and_then(Service::vip4) else {
            return self.drop(DropReason::NoService);
        };
        if c.flags & F_PROXIED != 0 && l4.flags & tf::SYN != 0 {
            return self.proxy_server_synack(pkt, &l4, id);
        }
        if c.flags & F_PROXY_OPENING != 0 {
            let ok = if l4.flags & tf::RST != 0 {
                let ok = self.proxy.server_refused(pkt, id.index(), &c, vip);
                self.kill(id);
                ok
            } else {
                // A bare ACK: the realserver still has an older connection of these
                // addresses (TIME_WAIT).
                let Some(seg) = Seg::read(&pkt.data()[..l4.total]) else {
                    return self.drop(DropReason::Malformed);
                };
                self.proxy
                    .server_stale(pkt, &seg, id.index(), client, self.now)
            };
            return if ok {
                Verdict::Forward
            } else {
                self.drop(DropReason::Malformed)
            };
        }
        if proto == ip_proto::TCP {
            self.tcp_step(id, svc, Direction::Output, l4.flags);
        } else if let Some(Some(rt)) = self.svcs.get(svc as usize) {
            let t = rt.timeouts[State::Udp as usize];
            self.table.get_mut(id).flags |= F_REPLIED;
            self.table.set_expiry(id, self.now.wrapping_add(t));
        }
        let data = &mut pkt.data_mut()[..l4.total];
        if c.flags & F_PROXIED != 0 {
            SynProxy::to_client(&mut data[IHL..], &c, l4.csum == Csum::Full);
        }
        nat::rewrite(data, IHL, proto, Side::Src, vip, l4.csum);
        self.count_out(svc, dest, l4.total);
        Verdict::Forward
    }

    /// A realserver's SYN-ACK on a proxied connection: the first opens it (the packet
    /// becomes the client's ACK, with the data kept from the client); a repeated one (our
    /// ACK was lost) is acknowledged again.
    fn proxy_server_synack(&mut self, pkt: &mut Packet<'_>, l4: &L4, id: ConnId) -> Verdict {
        if l4.flags & tf::ACK == 0 {
            return self.drop(DropReason::TcpFlags);
        }
        let Some(seg) = Seg::read(&pkt.data()[..l4.total]) else {
            return self.drop(DropReason::Malformed);
        };
        let client = l4.dst;
        let c = self.table.get_mut(id);
        if c.flags & F_PROXY_OPENING == 0 {
            let (svc, dest) = (c.svc, c.dest);
            if !self.proxy.reack(pkt, &seg, client) {
                return self.drop(DropReason::Malformed);
            }
            self.count_in(svc, dest, pkt.len());
            return Verdict::Forward;
        }
        if !self.proxy.server_synack(pkt, &seg, id.index(), c, client) {
            return self.drop(DropReason::Malformed);
        }
        // The connection is open on both sides: ESTABLISHED, active.
        c.flags |= F_REPLIED;
        let (svc, dest) = (c.svc, c.dest);
        let was_active = c.flags & F_INACTIVE == 0;
        if !was_active {
            c.flags &= !F_INACTIVE;
            if let Some(Some(d)) = self.dests.get(dest as usize) {
                d.counters.flip(true);
            }
        }
        self.table.set_state(id, State::Established);
        if let Some(rt) = self.svcs.get(svc as usize).and_then(Option::as_ref) {
            let t = rt.timeouts[State::Established as usize];
            self.table.set_expiry(id, self.now.wrapping_add(t));
        }
        self.count_in(svc, dest, pkt.len());
        Verdict::Forward
    }
}

const IHL: usize = crate::wire::ipv4::HEADER_LEN;

/// Releases the template that controlled connection `id` (it ended).
#[inline]
fn release_link(links: &mut [u32], templates: &TemplateStore, id: ConnId) {
    if let Some(l) = links.get_mut(id.index() as usize) {
        let t = std::mem::take(l);
        if t != 0 {
            templates.release(TemplateId(t - 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::state::TCP_STATES;
    use crate::conn::F_NOOUTPUT;

    /// The runtime a queue builds for the first of the test services, with `table` and a
    /// distinct timeout per state (so that the wrong state's cannot pass).
    fn rt(table: StateTable) -> SvcRt {
        let cfg = crate::config::from_str(crate::dataplane::testkit::TWO_SERVICES, "t.toml");
        let registry = crate::control::registry::Registry::new(&cfg.unwrap().services);
        let snap = Arc::new(registry.unwrap().snapshot());
        let mut shard = Shard::new(ShardConfig::test(1 << 20), snap, None).unwrap();
        let mut rt = shard.svcs.iter_mut().find_map(Option::take).unwrap();
        rt.table = table;
        rt.timeouts = std::array::from_fn(|i| 100 + i as Tick);
        rt
    }

    /// `unchanged` decides a segment only where the full step would change nothing but the
    /// timer, and gives the full step's timeout: every TCP state, every flag byte, every
    /// direction and every combination of the entry flags the step reads or writes, under
    /// IPVS's normal and secure_tcp tables.
    #[test]
    fn unchanged_decides_only_what_the_full_step_leaves_alone() {
        let mut table = ConnTable::<Ipv4Addr>::new(1 << 20, HashKey([1, 2]), 0).unwrap();
        let new = NewConn {
            proto: ip_proto::TCP,
            caddr: Ipv4Addr::new(10, 77, 0, 1),
            cport: 1000,
            svc: 0,
            dest: 0,
            state: State::None,
            flags: 0,
        };
        let id = table.insert(0, new, 100).unwrap();
        let live = table.get(id).flags;
        let mine = [F_INACTIVE, F_NOOUTPUT, F_REPLIED, F_VERIFIED];
        let (mut decided, mut total) = (0, 0);
        for states in [StateTable::NORMAL, StateTable::DOS] {
            let rt = rt(states);
            for s in 0..TCP_STATES as u8 {
                for combo in 0..1u8 << mine.len() {
                    let own = (0..mine.len())
                        .filter(|b| combo >> b & 1 != 0)
                        .fold(0, |f, b| f | mine[b]);
                    for dir in [Direction::Input, Direction::Output, Direction::InputOnly] {
                        for flags in 0..=u8::MAX {
                            let c = table.get_mut(id);
                            c.state = State::from_index(s).unwrap();
                            c.flags = live | own;
                            let before = (c.state, c.flags);
                            let quick = unchanged(&rt, c, dir, flags);
                            let full = step_changing(&rt, &[], c, dir, flags);
                            total += 1;
                            let Some(timeout) = quick else { continue };
                            decided += 1;
                            let what = format!("{before:?} {dir:?} flags {flags:#04x}");
                            assert_eq!(full.changed, None, "{what}");
                            assert!(!full.verified, "{what}");
                            assert_eq!(full.timeout, timeout, "{what}");
                            assert_eq!((c.state, c.flags), before, "{what}");
                        }
                    }
                }
            }
        }
        // The usual segment is the one decided inline: an established client's ACK.
        let c = table.get_mut(id);
        c.state = State::Established;
        c.flags = live | F_REPLIED | F_VERIFIED;
        let normal = rt(StateTable::NORMAL);
        let es = normal.timeouts[State::Established as usize];
        assert_eq!(unchanged(&normal, c, Direction::Input, tf::ACK), Some(es));
        assert_eq!(
            unchanged(&normal, c, Direction::Output, tf::ACK | tf::PSH),
            Some(es)
        );
        assert!(
            decided > 0 && decided < total,
            "{decided} of {total} decided inline"
        );
    }
}
