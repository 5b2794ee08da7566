//! ICMP through the director: errors about tracked flows translated, echo requests to a
//! virtual address answered, the rest dropped or passed.

use super::*;

impl Shard {
    /// An ICMP message (of either version) the director has nothing to do with: dropped if
    /// it is for a virtual address (`to_vip`), else passed.
    #[inline]
    pub(super) fn icmp_unrelated(&mut self, to_vip: bool) -> Verdict {
        if to_vip {
            self.drop(DropReason::IcmpOther)
        } else {
            self.pass()
        }
    }

    /// ICMP: errors about tracked flows are translated; echo requests to a virtual address
    /// are answered; anything else to a virtual address is dropped, the rest passes.
    pub(super) fn icmp(&mut self, data: &mut [u8], ihl: usize, dst: Ipv4Addr) -> Verdict {
        use crate::wire::icmpv4::msg_type;
        let to_vip = self.snap.is_vip(dst);
        let icmp = &data[ihl..];
        let Ok(msg) = crate::wire::Icmpv4Packet::new_checked(icmp) else {
            return self.drop(DropReason::Malformed);
        };
        let ty = msg.msg_type();
        // IPVS relates only these errors to connections (ip_vs_in_icmp).
        let related = matches!(
            ty,
            msg_type::DEST_UNREACHABLE | msg_type::SOURCE_QUENCH | msg_type::TIME_EXCEEDED
        );
        let echo = ty == msg_type::ECHO_REQUEST && msg.code() == 0 && to_vip;
        if !related && !echo {
            return self.icmp_unrelated(to_vip);
        }
        if !msg.verify_checksum() {
            return self.drop(DropReason::BadChecksum);
        }
        if echo {
            nat::echo_reply(data, ihl);
            self.counters.echo_replies += 1;
            return Verdict::Forward;
        }
        let Some(q) = nat::quoted(icmp) else {
            return self.icmp_unrelated(to_vip);
        };
        // About a packet the director sent to a client (VIP → client): the client side
        // complains; send it to the realserver that sent the original.
        if let Some(svc) = self.snap.service_at(q.proto, *q.src.ip(), q.src.port()) {
            let client = q.dst;
            let hash = self.table.hash(q.proto, *client.ip(), client.port());
            if let Some(id) = self
                .table
                .lookup(hash, q.proto, *client.ip(), client.port(), |e| e.svc == svc)
            {
                let c = self.table.get(id);
                if let Some(to) = self.snap.dest_addr(c.dest) {
                    if c.flags & crate::conn::F_PROXIED != 0 {
                        if let Some(l4) = nat::quoted_l4_mut(&mut data[ihl..]) {
                            SynProxy::quoted(l4, c, true);
                        }
                    }
                    nat::translate_icmp(data, ihl, Side::Src, to);
                    self.counters.icmp_translated += 1;
                    return Verdict::Forward;
                }
            }
            return self.drop(DropReason::IcmpNoConn);
        }
        // About a packet the director sent to a realserver (client → RIP): the server side
        // complains; send it to the client as if from the virtual address.
        let client = q.src;
        let hash = self.table.hash(q.proto, *client.ip(), client.port());
        let snap = &self.snap;
        if let Some(id) = self
            .table
            .lookup(hash, q.proto, *client.ip(), client.port(), |e| {
                snap.dest_addr(e.dest) == Some(q.dst)
            })
        {
            let c = self.table.get(id);
            if let Some(vip) = self.snap.service(c.svc).and_then(Service::vip4) {
                if c.flags & crate::conn::F_PROXIED != 0 {
                    if let Some(l4) = nat::quoted_l4_mut(&mut data[ihl..]) {
                        SynProxy::quoted(l4, c, false);
                    }
                }
                nat::translate_icmp(data, ihl, Side::Dst, vip);
                self.counters.icmp_translated += 1;
                return Verdict::Forward;
            }
        }
        if self.snap.is_vip(dst) || self.snap.is_realserver(q.proto, *q.dst.ip(), q.dst.port()) {
            return self.drop(DropReason::IcmpNoConn);
        }
        self.pass()
    }
}
