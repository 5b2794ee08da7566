//! IPv6 through the director: NAT66 of TCP and UDP, ICMPv6 errors about tracked flows, and
//! echo requests to a virtual address.
//!
//! IPv6 flows live in a table of their own ([`Six`]), allocated when the first IPv6
//! service appears: an IPv4 entry stays at its 40 bytes. Scheduling, persistence, the
//! defenses' `admit`, IPVS's state table, timeouts, early drop, the per-service and
//! per-realserver counts, the per-source sketch, top talkers and blocks are the IPv4 path's
//! own code ([`Shard::choose`], [`step`], [`Shard::forget`], [`Shard::counted`],
//! [`Shard::blocked`]); a defense's tick scans this table after the IPv4 one
//! ([`crate::dataplane::defense::ServiceTable`]). What is IPv4-only so far, by rule
//! (docs/FORWARDING.md): the SYN proxy (config refuses `"on"`; with `"auto"` a queue that
//! falls behind sheds unknown sources' SYNs instead: [`shed`]), reassembly (fragments to a
//! virtual address are dropped as `fragment`) and the one-way methods. Connection sync is
//! the IPv4 path's too ([`Shard::sync_if_due6`], [`Shard::activate6`]).
//!
//! # Extension headers
//!
//! The chain is walked by the wire layer's rules ([`crate::wire::ipv6`]); a packet whose
//! chain breaks a rule is dropped, whoever it is for (`malformed` when it runs past the
//! packet, else `ip_options`: a truncated chain is what the kernel drops too, and the
//! director writes nothing it could not parse). A valid chain is kept: the transport header
//! is found after it and rewritten in place. A fragment to a virtual address or from a NAT
//! realserver is dropped (`fragment`); anybody else's passes.

use super::flow::{expire_in, kill_in, leaving, step, Chosen, Leaving, F_REPLIED, F_VERIFIED};
use super::*;
use crate::dataplane::service::Way;
use crate::wire::icmpv6::msg_type;
use crate::wire::ipv6::{ExtError, Ipv6Packet};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// A queue's IPv6 flows.
pub(super) struct Six {
    /// The table.
    pub table: ConnTable<Ipv6Addr>,
    /// The template controlling each slot (as [`Shard`]'s IPv4 column).
    pub links: Vec<u32>,
}

/// The share of a queue's `memory_limit` its IPv6 table gets, on top of it (allocated only
/// once an IPv6 service exists).
pub fn table_memory(memory_limit: usize) -> usize {
    memory_limit / 4
}

/// A TCP or UDP packet's addressing, as [`Shard::process6`] read it.
#[derive(Debug, Clone, Copy)]
struct L6 {
    proto: u8,
    src: SocketAddrV6,
    dst: SocketAddrV6,
    flags: u8,
    csum: Csum,
    /// Offset of the transport header.
    l4: usize,
    /// Length of the packet (fixed header + payload length).
    total: usize,
}

impl L6 {
    fn is_syn(&self) -> bool {
        self.proto == ip_proto::TCP && self.flags & (tf::SYN | tf::ACK) == tf::SYN
    }
}

/// The IPv6 table hash of client endpoint `client`: the one `prefetch` computed for this
/// packet if it did, else computed now.
#[inline]
fn hash6(hints: &Hints, six: &Six, proto: u8, client: SocketAddrV6) -> u32 {
    let (ip, port) = (*client.ip(), client.port());
    match hints.hash_of(FlowKey::v6(proto, ip, port)) {
        Some(h) => h,
        None => six.table.hash(proto, ip, port),
    }
}

fn v6(a: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(a, port, 0, 0)
}

impl Shard {
    /// Makes the IPv6 table exist once the snapshot has an IPv6 service (never freed: its
    /// entries may outlive the service), with a link column if a service is persistent.
    pub(super) fn sync_six(&mut self, snap: &Snapshot) {
        if self.six.is_none() && snap.any_ipv6() {
            let budget = table_memory(self.cfg.memory_limit);
            match ConnTable::new(budget, self.cfg.hash_key, self.now) {
                Ok(table) => {
                    self.six = Some(Box::new(Six {
                        table,
                        links: Vec::new(),
                    }))
                }
                Err(e) => {
                    tracing::error!(queue = self.cfg.id, "no IPv6 table: {e}");
                }
            }
        }
        let persistent = snap
            .services()
            .any(|s| s.vip.is_ipv6() && s.persistence.is_some());
        if let Some(six) = self.six.as_mut() {
            if persistent && six.links.is_empty() {
                six.links = vec![0; six.table.capacity()];
            }
        }
    }

    /// An IPv6 packet (see the module docs). Never inlined into [`Shard::process`]: the IPv4
    /// path stays as small as it was.
    #[inline(never)]
    pub(super) fn process6(&mut self, pkt: &mut Packet<'_>, csum: Csum) -> Verdict {
        let data = pkt.data();
        let Ok(ip) = Ipv6Packet::new_checked(data) else {
            return self.drop(DropReason::Malformed);
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let total = crate::wire::ipv6::HEADER_LEN + usize::from(ip.payload_len());
        let ours = self.snap.is_vip6(dst) || self.snap.is_nat_realserver_addr6(src);
        let ul = match ip.upper_layer() {
            Ok(ul) => ul,
            Err(ExtError::Truncated) => return self.drop(DropReason::Malformed),
            Err(_) => return self.drop(DropReason::IpOptions),
        };
        if ul.fragment.is_some() {
            return if ours {
                self.drop(DropReason::Fragment)
            } else {
                self.pass()
            };
        }
        let data = &data[..total];
        let (sport, dport, flags) = match ul.protocol {
            ip_proto::TCP => {
                let Ok(t) = TcpPacket::new_checked(&data[ul.offset..]) else {
                    return self.drop(DropReason::Malformed);
                };
                if !tcp_flags_sane(t.flags()) {
                    return self.drop(DropReason::TcpFlags);
                }
                (t.src_port(), t.dst_port(), t.flags())
            }
            ip_proto::UDP => {
                let Ok(u) = UdpPacket::new_checked(&data[ul.offset..]) else {
                    return self.drop(DropReason::Malformed);
                };
                (u.src_port(), u.dst_port(), 0)
            }
            ip_proto::ICMPV6 => {
                return self.icmp6(&mut pkt.data_mut()[..total], ul.offset, dst);
            }
            _ => {
                return if self.snap.is_vip6(dst) {
                    self.drop(DropReason::UnknownProto)
                } else {
                    self.pass()
                };
            }
        };
        let l6 = L6 {
            proto: ul.protocol,
            src: v6(src, sport),
            dst: v6(dst, dport),
            flags,
            csum,
            l4: ul.offset,
            total,
        };
        if let Some(svc) = self.snap.service_at6(l6.proto, dst, dport) {
            return self.inbound6(pkt, l6, svc);
        }
        if self.snap.is_vip6(dst) {
            return self.drop(DropReason::NoService);
        }
        self.outbound6(pkt, l6)
    }

    /// Client → IPv6 virtual service.
    fn inbound6(&mut self, pkt: &mut Packet<'_>, l6: L6, svc: u16) -> Verdict {
        let (proto, client) = (l6.proto, l6.src);
        let Some(six) = self.six.as_ref() else {
            return self.drop(DropReason::TableFull);
        };
        let hash = hash6(&self.hints, six, proto, client);
        let found = six
            .table
            .lookup(hash, proto, *client.ip(), client.port(), |e| e.svc == svc)
            .map(|id| (id, *six.table.get(id)));
        let is_syn = l6.is_syn();
        self.top.packet(*client.ip());
        let blocked = self.blocked(svc, *client.ip());
        if blocked == Some(BlockMode::Drop) {
            return self.drop(DropReason::Blocked);
        }
        let id = match found {
            Some((id, c)) => {
                self.activate6(id);
                if self.restarts(&c, is_syn) {
                    self.kill6(id);
                    if !is_syn && proto != ip_proto::UDP {
                        return self.drop(DropReason::DestRemoved);
                    }
                    match self.start_flow6(hash, proto, client, svc, blocked) {
                        Ok(id) => id,
                        Err(r) => return self.drop(r),
                    }
                } else {
                    id
                }
            }
            None if proto == ip_proto::TCP && !is_syn => return self.drop(DropReason::NoConn),
            None => {
                if proto == ip_proto::UDP && !self.udp_admit(svc) {
                    return self.drop(DropReason::FloodLimit);
                }
                if is_syn && self.sheds6(svc) {
                    // The SYN's sequence number tells its retransmission from a flood's SYN.
                    let isn = pkt
                        .data()
                        .get(l6.l4 + 4..l6.l4 + 8)
                        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap_or_default()));
                    if !self.shed.admit6(client.ip(), client.port(), isn) {
                        return self.drop(DropReason::Overload);
                    }
                }
                match self.start_flow6(hash, proto, client, svc, blocked) {
                    Ok(id) => id,
                    Err(r) => return self.drop(r),
                }
            }
        };
        let Some(six) = self.six.as_mut() else {
            return self.drop(DropReason::TableFull);
        };
        let Some(rt) = self.svcs.get(svc as usize).and_then(Option::as_ref) else {
            return self.drop(DropReason::NoService);
        };
        let c = six.table.get_mut(id);
        c.in_pkts = c.in_pkts.saturating_add(1);
        let (mut changed, mut verified) = (false, false);
        if proto == ip_proto::TCP {
            let s = step(rt, &self.dests, c, Direction::Input, l6.flags);
            verified = s.verified;
            if let Some(new) = s.changed {
                six.table.set_state(id, new);
                changed = true;
            }
            six.table.set_expiry(id, self.now.wrapping_add(s.timeout));
        } else {
            let t = if c.flags & F_REPLIED != 0 {
                rt.timeouts[State::Udp as usize]
            } else {
                rt.udp_unreplied
            };
            six.table.set_expiry(id, self.now.wrapping_add(t));
        }
        let dest = six.table.get(id).dest;
        if verified {
            self.shed.know6(client.ip());
            self.counted(*client.ip());
        }
        if self.cfg.sync.is_some() {
            self.sync_if_due6(id, changed);
        }
        match self.snap.dest_way(dest) {
            Way::Nat => {}
            // Either family: a tunnel may carry IPv6 to an IPv4 realserver.
            Way::Tunnel(t) => {
                let Some(rip) = self.snap.dest_ip(dest) else {
                    return self.drop(DropReason::NoServer);
                };
                return self.tunnel(pkt, svc, dest, t, rip, hash);
            }
            Way::Route => {
                // LVS-DR: unchanged, to the realserver's MAC (the L2 backend frames it).
                let Some(rip) = self.snap.dest_ip(dest) else {
                    return self.drop(DropReason::NoServer);
                };
                pkt.next_hop = Some(rip);
                self.count_in(svc, dest, l6.total);
                return Verdict::Forward;
            }
        }
        let Some(to) = self.snap.dest_addr6(dest) else {
            return self.drop(DropReason::NoServer);
        };
        let data = &mut pkt.data_mut()[..l6.total];
        nat::rewrite6(data, l6.l4, proto, Side::Dst, to, l6.csum);
        self.count_in(svc, dest, l6.total);
        Verdict::Forward
    }

    /// A new-flow attempt, as [`Shard::start_flow`] for IPv4: refused for a tarpitted
    /// source, else made; a UDP source counts at once (there is no handshake to wait for), a
    /// TCP one once its handshake completes.
    fn start_flow6(
        &mut self,
        hash: u32,
        proto: u8,
        client: SocketAddrV6,
        svc: u16,
        blocked: Option<BlockMode>,
    ) -> Result<ConnId, DropReason> {
        self.counters.attempts += 1;
        if blocked == Some(BlockMode::Tarpit) {
            return Err(DropReason::Tarpit);
        }
        let counted = proto != ip_proto::TCP;
        let a = *client.ip();
        if counted {
            self.top.new_flow(a);
            self.cfg.sources.attempt(a);
        }
        let id = self.new_flow6(hash, proto, client, svc)?;
        if counted {
            if let Some(six) = self.six.as_mut() {
                six.table.get_mut(id).flags |= F_VERIFIED;
            }
            self.cfg.sources.created(a);
        }
        Ok(id)
    }

    /// A new IPv6 flow: room in the IPv6 table (and the service's share), then the IPv4
    /// path's admission, persistence and scheduling.
    fn new_flow6(
        &mut self,
        hash: u32,
        proto: u8,
        client: SocketAddrV6,
        svc: u16,
    ) -> Result<ConnId, DropReason> {
        self.room_for(svc, true)?;
        let chosen: Chosen = self.choose(svc, proto, SocketAddr::V6(client))?;
        let (state, timeout) = self.first_state(svc, proto);
        let now = self.now;
        let six = self.six.as_mut().ok_or(DropReason::TableFull)?;
        let conn = chosen.conn(proto, (*client.ip(), client.port()), svc, state);
        let inserted = six.table.insert(hash, conn, now.wrapping_add(timeout));
        let id = self.inserted(inserted, &chosen)?;
        if let (Some(t), Some(six)) = (chosen.link, self.six.as_mut()) {
            six.links[id.index() as usize] = t.0 + 1;
        }
        self.bound(svc, &chosen);
        Ok(id)
    }

    /// True if SYNs for service `svc` from unknown sources are shed while the queue falls
    /// behind (see `SvcRt::shed6`).
    #[inline]
    fn sheds6(&self, svc: u16) -> bool {
        self.svcs
            .get(svc as usize)
            .and_then(Option::as_ref)
            .is_some_and(|rt| rt.shed6)
    }

    /// Removes an IPv6 connection now.
    pub(super) fn kill6(&mut self, id: ConnId) {
        if let Some(six) = self.six.as_mut() {
            kill_in(&mut six.table, &mut six.links, id, leaving!(self));
        }
    }

    /// Expires the IPv6 table's due entries (every tick).
    pub(super) fn expire6(&mut self) {
        if let Some(six) = self.six.as_mut() {
            let n = expire_in(&mut six.table, &mut six.links, self.now, leaving!(self));
            self.counters.expired += n as u64;
        }
    }

    /// Realserver → client over IPv6, if it belongs to a tracked connection.
    fn outbound6(&mut self, pkt: &mut Packet<'_>, l6: L6) -> Verdict {
        let (proto, server, client) = (l6.proto, l6.src, l6.dst);
        let (snap, hints) = (&self.snap, &self.hints);
        let found = self.six.as_mut().and_then(|six| {
            let hash = hash6(hints, six, proto, client);
            six.table
                .lookup(hash, proto, *client.ip(), client.port(), |e| {
                    snap.dest_addr6(e.dest) == Some(server)
                })
                .map(|id| (id, *six.table.get(id)))
        });
        let Some((id, c)) = found else {
            if self.snap.is_realserver6(proto, *server.ip(), server.port()) {
                return self.drop(DropReason::StaleReply);
            }
            if self.snap.is_vip6(*client.ip()) {
                return self.drop(DropReason::NoService);
            }
            return self.pass();
        };
        // A synced entry that a reply uses: this director forwards it now.
        self.activate6(id);
        let (svc, dest) = (c.svc, c.dest);
        let Some(vip) = self.snap.service(svc).and_then(Service::vip6) else {
            return self.drop(DropReason::NoService);
        };
        let Some(rt) = self.svcs.get(svc as usize).and_then(Option::as_ref) else {
            return self.drop(DropReason::NoService);
        };
        let Some(six) = self.six.as_mut() else {
            return self.drop(DropReason::NoService);
        };
        let c = six.table.get_mut(id);
        if proto == ip_proto::TCP {
            let s = step(rt, &self.dests, c, Direction::Output, l6.flags);
            if let Some(new) = s.changed {
                six.table.set_state(id, new);
            }
            six.table.set_expiry(id, self.now.wrapping_add(s.timeout));
            if s.changed.is_some() && self.cfg.sync.is_some() {
                self.sync_if_due6(id, true);
            }
        } else {
            c.flags |= F_REPLIED;
            let t = rt.timeouts[State::Udp as usize];
            six.table.set_expiry(id, self.now.wrapping_add(t));
        }
        let data = &mut pkt.data_mut()[..l6.total];
        nat::rewrite6(data, l6.l4, proto, Side::Src, vip, l6.csum);
        self.count_out(svc, dest, l6.total);
        Verdict::Forward
    }

    /// ICMPv6 (`at`: offset of the message): errors about tracked flows are translated,
    /// echo requests to a virtual address answered, anything else to a virtual address
    /// dropped, the rest (neighbour discovery, routers' messages) passes.
    fn icmp6(&mut self, data: &mut [u8], at: usize, dst: Ipv6Addr) -> Verdict {
        let to_vip = self.snap.is_vip6(dst);
        let Ok(msg) = crate::wire::Icmpv6Packet::new_checked(&data[at..]) else {
            return self.drop(DropReason::Malformed);
        };
        let ty = msg.msg_type();
        let related = matches!(
            ty,
            msg_type::DEST_UNREACHABLE
                | msg_type::PACKET_TOO_BIG
                | msg_type::TIME_EXCEEDED
                | msg_type::PARAM_PROBLEM
        );
        let echo = ty == msg_type::ECHO_REQUEST && msg.code() == 0 && to_vip;
        if !related && !echo {
            return self.icmp_unrelated(to_vip);
        }
        let ip = Ipv6Packet::new_unchecked(&data[..]);
        if !msg.verify_checksum(ip.src_addr(), ip.dst_addr()) {
            return self.drop(DropReason::BadChecksum);
        }
        if echo {
            nat::echo_reply6(data, at);
            self.counters.echo_replies += 1;
            return Verdict::Forward;
        }
        let Some(q) = nat::quoted6(&data[at..]) else {
            return self.icmp_unrelated(to_vip);
        };
        // About a packet the director sent to a client (VIP → client): to the realserver.
        // About a packet the director sent to a realserver (client → RIP): to the client,
        // from the virtual address.
        let (client, side, svc) = match self.snap.service_at6(q.proto, *q.src.ip(), q.src.port()) {
            Some(svc) => (q.dst, Side::Src, Some(svc)),
            None => (q.src, Side::Dst, None),
        };
        let snap = &self.snap;
        let found = self.six.as_ref().and_then(|six| {
            let hash = six.table.hash(q.proto, *client.ip(), client.port());
            six.table
                .lookup(hash, q.proto, *client.ip(), client.port(), |e| match svc {
                    Some(s) => e.svc == s,
                    None => snap.dest_addr6(e.dest) == Some(q.dst),
                })
                .map(|id| *six.table.get(id))
        });
        let to = found.and_then(|c| match side {
            Side::Src => self.snap.dest_addr6(c.dest),
            Side::Dst => self.snap.service(c.svc).and_then(Service::vip6),
        });
        if let Some(to) = to {
            nat::translate_icmp6(data, at, &q, side, to);
            self.counters.icmp_translated += 1;
            return Verdict::Forward;
        }
        if svc.is_some() || to_vip || self.snap.is_realserver6(q.proto, *q.dst.ip(), q.dst.port()) {
            return self.drop(DropReason::IcmpNoConn);
        }
        self.pass()
    }
}
