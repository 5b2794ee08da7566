//! The packet path of tracked flows: a client's packet to a virtual service (inbound), a
//! realserver's reply (outbound), new flows (admit, persist, schedule, insert, or the SYN
//! proxy's cookie), state transitions, expiry and early drop.

use super::*;

impl Shard {
    pub(super) fn expire(&mut self) {
        let dests = &self.dests;
        let sources = &self.cfg.sources;
        let templates = &self.cfg.templates;
        let links = &mut self.links;
        let n = self.table.advance(self.now, EXPIRE_BUDGET, |id, c| {
            if let Some(Some(d)) = dests.get(c.dest as usize) {
                d.unbind(c.flags & F_INACTIVE == 0);
            }
            if c.flags & F_PERSISTENT != 0 {
                release_link(links, templates, id);
            }
            sources.ended(c.caddr());
        });
        self.counters.expired += n as u64;
        // Once a second, this queue's share of the template store.
        let sec = (self.now / TICKS_PER_SEC) as u64;
        if sec != self.swept_sec {
            self.swept_sec = sec;
            templates.sweep(self.now, self.cfg.id, self.cfg.queues.max(1));
        }
    }

    /// Removes a connection now, fixing the realserver's and the source's counts.
    pub(super) fn kill(&mut self, id: ConnId) {
        let c = self.table.remove(id);
        if let Some(Some(d)) = self.dests.get(c.dest as usize) {
            d.unbind(c.flags & F_INACTIVE == 0);
        }
        if c.flags & F_PERSISTENT != 0 {
            release_link(&mut self.links, &self.cfg.templates, id);
        }
        self.cfg.sources.ended(c.caddr());
    }

    /// Applies a TCP segment to a connection's state and refreshes its timer.
    #[inline]
    pub(super) fn tcp_step(&mut self, id: ConnId, svc: u16, dir: Direction, flags: u8) {
        let Some(rt) = self.svcs.get(svc as usize).and_then(Option::as_ref) else {
            return;
        };
        let c = self.table.get_mut(id);
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
        let old = c.state;
        let new = match Event::from_tcp_flags(flags) {
            Some(ev) => rt.table.next(dir, ev, old),
            None => old,
        };
        let timeout = rt.timeouts[new as usize];
        if new != old {
            let was_active = c.flags & F_INACTIVE == 0;
            let active = new.is_active();
            if was_active != active {
                if active {
                    c.flags &= !F_INACTIVE;
                } else {
                    c.flags |= F_INACTIVE;
                }
                if let Some(Some(d)) = self.dests.get(c.dest as usize) {
                    d.counters.flip(active);
                }
            }
            self.table.set_state(id, new);
        }
        self.table.set_expiry(id, self.now.saturating_add(timeout));
    }

    /// A new-flow attempt: counted for the source (rates, top talkers), refused for a
    /// tarpitted source, else admitted and scheduled.
    #[inline]
    pub(super) fn start_flow(
        &mut self,
        hash: u32,
        proto: u8,
        client: SocketAddrV4,
        svc: u16,
        blocked: Option<BlockMode>,
    ) -> Result<ConnId, DropReason> {
        self.top.new_flow(*client.ip());
        self.cfg.sources.attempt(*client.ip());
        self.counters.attempts += 1;
        if blocked == Some(BlockMode::Tarpit) {
            return Err(DropReason::Tarpit);
        }
        self.new_flow(hash, proto, client, svc)
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
            let (new_flows, concurrent) = self.cfg.sources.estimate(*client.ip());
            let source = crate::plugin::defense_types::SourceStats {
                new_flows,
                concurrent,
            };
            let flow = flow_v4(proto, client, service.vip);
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
        // `link`: the template that will control the connection.
        let (i, link) = match key {
            None => (pick(&mut rt.sched, &mut ctx)?, None),
            Some(key) => {
                let found = match templates.find(svc, key, now, ttl) {
                    Bind::Missing => {
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
                            Some(i) if !self.links.is_empty() => (i, Some(id)),
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
        let state = if proto == ip_proto::TCP {
            State::None
        } else {
            State::Udp
        };
        let timeout = rt.timeouts[state as usize];
        let inserted = self.table.insert(
            hash,
            NewConn {
                proto,
                caddr: *client.ip(),
                cport: client.port(),
                svc,
                dest: dest.id,
                state,
                flags: if link.is_some() {
                    F_INACTIVE | F_PERSISTENT
                } else {
                    F_INACTIVE
                },
            },
            self.now.saturating_add(timeout),
        );
        let id = match inserted {
            Ok(id) => id,
            Err(_) => {
                if let Some(t) = link {
                    templates.release(t);
                }
                return Err(DropReason::TableFull);
            }
        };
        if let Some(t) = link {
            self.links[id.index() as usize] = t.0 + 1;
        }
        dest.state.bind(false);
        self.cfg.sources.created(*client.ip());
        let did = dest.id as usize;
        self.svc_traffic[svc as usize].conns += 1;
        if let Some(t) = self.dest_traffic.get_mut(did) {
            t.conns += 1;
        }
        self.counters.total.conns += 1;
        Ok(id)
    }

    /// Client → virtual service.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn inbound(
        &mut self,
        data: &mut [u8],
        ihl: usize,
        proto: u8,
        client: SocketAddrV4,
        svc: u16,
        tcp_flags: u8,
        csum: Csum,
    ) -> Verdict {
        let hash = self.table.hash(proto, *client.ip(), client.port());
        let found = self
            .table
            .lookup(hash, proto, *client.ip(), client.port(), |e| e.svc == svc);
        let is_syn = proto == ip_proto::TCP && tcp_flags & (tf::SYN | tf::ACK) == tf::SYN;
        self.top.packet(*client.ip());
        let blocked = if self.blocks.is_empty() {
            None
        } else {
            self.blocks.lookup(*client.ip(), self.now).map(|b| b.mode)
        };
        if blocked == Some(BlockMode::Drop) {
            return self.drop(DropReason::Blocked);
        }
        let id = match found {
            Some(id) => {
                let c = self.table.get(id);
                // A removed realserver's connection ends here if the director
                // (`expire_nodest_conn`) or the removal (`--expire`) says so.
                let flags = self
                    .dests
                    .get(c.dest as usize)
                    .and_then(Option::as_ref)
                    .map_or(DEST_F_REMOVED, |d| d.flags());
                let expire = flags & DEST_F_GONE != 0
                    && (self.cfg.expire_nodest_conn || flags & DEST_F_EXPIRE != 0);
                // IPVS conn_reuse_mode: a SYN on a closed entry starts a new connection,
                // scheduled afresh.
                let reuse = is_syn && matches!(c.state, State::TimeWait | State::Close);
                if reuse || expire {
                    self.kill(id);
                    if !is_syn && proto != ip_proto::UDP {
                        return self.drop(DropReason::DestRemoved);
                    }
                    match self.start_flow(hash, proto, client, svc, blocked) {
                        Ok(id) => id,
                        Err(r) => return self.drop(r),
                    }
                } else {
                    id
                }
            }
            None => {
                if proto == ip_proto::TCP && !is_syn {
                    return self.drop(DropReason::NoConn);
                }
                match self.start_flow(hash, proto, client, svc, blocked) {
                    Ok(id) => id,
                    Err(r) => return self.drop(r),
                }
            }
        };
        if proto == ip_proto::TCP {
            self.tcp_step(id, svc, Direction::Input, tcp_flags);
        } else if let Some(Some(rt)) = self.svcs.get(svc as usize) {
            let t = rt.timeouts[State::Udp as usize];
            self.table.set_expiry(id, self.now.saturating_add(t));
        }
        let c = self.table.get_mut(id);
        c.in_pkts = c.in_pkts.saturating_add(1);
        let dest = c.dest;
        let Some(to) = self.snap.dest_addr(dest) else {
            return self.drop(DropReason::NoServer);
        };
        nat::rewrite(data, ihl, proto, Side::Dst, to, csum);
        let len = data.len() as u64;
        let t = &mut self.svc_traffic[svc as usize];
        t.in_pkts += 1;
        t.in_bytes += len;
        if let Some(t) = self.dest_traffic.get_mut(dest as usize) {
            t.in_pkts += 1;
            t.in_bytes += len;
        }
        self.counters.total.in_pkts += 1;
        self.counters.total.in_bytes += len;
        Verdict::Forward
    }

    /// Realserver → client, if it belongs to a tracked connection.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn outbound(
        &mut self,
        data: &mut [u8],
        ihl: usize,
        proto: u8,
        server: SocketAddrV4,
        client: SocketAddrV4,
        tcp_flags: u8,
        csum: Csum,
    ) -> Verdict {
        let hash = self.table.hash(proto, *client.ip(), client.port());
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
        let (svc, dest) = {
            let c = self.table.get(id);
            (c.svc, c.dest)
        };
        if proto == ip_proto::TCP {
            self.tcp_step(id, svc, Direction::Output, tcp_flags);
        } else if let Some(Some(rt)) = self.svcs.get(svc as usize) {
            let t = rt.timeouts[State::Udp as usize];
            self.table.set_expiry(id, self.now.saturating_add(t));
        }
        let Some(vip) = self.snap.service(svc).map(|s| s.vip) else {
            return self.drop(DropReason::NoService);
        };
        nat::rewrite(data, ihl, proto, Side::Src, vip, csum);
        let len = data.len() as u64;
        let t = &mut self.svc_traffic[svc as usize];
        t.out_pkts += 1;
        t.out_bytes += len;
        if let Some(t) = self.dest_traffic.get_mut(dest as usize) {
            t.out_pkts += 1;
            t.out_bytes += len;
        }
        self.counters.total.out_pkts += 1;
        self.counters.total.out_bytes += len;
        Verdict::Forward
    }
}

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
