//! The in-memory backend: runs packets given as byte slices through a [`Pipeline`], for
//! tests and `ringvs replay`. It mirrors what the io_uring backend does around
//! [`Pipeline::process`] (headroom in front, the virtio-net header carried beside the packet,
//! no room for the header after too large a `prepend` → not sent) but allocates freely.
//! [`process_frame`] mirrors the AF_XDP backend the same way: the XDP program's decision, the
//! Ethernet header off, the pipeline, the next hop's header on (the same framing code).

use std::net::IpAddr;
use std::time::Instant;

use super::xdp::frame::{self, Framed, ETH};
use super::xdp::prog::{self, Endpoint};
use crate::dataplane::{Packet, Pipeline, Verdict, HEADROOM};
use crate::wire::vnet::{self, VnetHdr};

/// Free bytes after each packet, as a real buffer would have.
pub const TAILROOM: usize = 256;

/// Runs `packets` through `p` in order, then calls `poll` once. Returns, per packet, the bytes
/// the backend would write (`Some`) or `None` if the pipeline dropped it.
pub fn process_packets<P: Pipeline>(p: &mut P, packets: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    let out = packets
        .iter()
        .map(|data| run_one(p, None, data, 0).map(|(_, bytes)| bytes))
        .collect();
    p.poll(Instant::now());
    out
}

/// Like [`process_packets`] for a device with a virtio-net header: each packet comes with
/// its header (or `None`: no header, as if the device had none) and leaves with the header
/// the pipeline left in [`Packet::vnet`]. A forwarded packet whose `prepend` left fewer than
/// [`vnet::LEN`] bytes of headroom is reported as `None`, as the io_uring backend would
/// discard it.
pub fn process_packets_vnet<P: Pipeline>(
    p: &mut P,
    packets: &[(Option<VnetHdr>, &[u8])],
) -> Vec<Option<(Option<VnetHdr>, Vec<u8>)>> {
    let out = packets
        .iter()
        .map(|(hdr, data)| run_one(p, *hdr, data, vnet::LEN))
        .collect();
    p.poll(Instant::now());
    out
}

fn run_one<P: Pipeline>(
    p: &mut P,
    vnet: Option<VnetHdr>,
    data: &[u8],
    vnet_len: usize,
) -> Option<(Option<VnetHdr>, Vec<u8>)> {
    let mut buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
    let mut pkt = Packet::new(&mut buf, HEADROOM, data.len())?;
    pkt.vnet = vnet;
    match p.process(&mut pkt) {
        Verdict::Drop | Verdict::Consumed => None,
        Verdict::Forward if pkt.start() < vnet_len => None,
        Verdict::Forward => Some((pkt.vnet, pkt.data().to_vec())),
    }
}

/// What the AF_XDP backend does with one received Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameOutcome {
    /// The XDP program passes it to the kernel: ringvs never sees it.
    Kernel,
    /// The pipeline dropped it.
    Dropped,
    /// The pipeline kept what it needed of it: nothing sent, not a drop.
    Consumed,
    /// Too short, or forwarded without room for the Ethernet header: not sent.
    Discarded,
    /// Forwarded, but the destination has no next hop: not sent.
    NoNextHop,
    /// Sent: the whole frame, Ethernet header included.
    Sent(Vec<u8>),
}

/// Bytes in front of a received frame in an AF_XDP buffer (`XDP_PACKET_HEADROOM`).
pub const XDP_HEADROOM: usize = 256;

/// Runs `frame` through the AF_XDP backend's path without sockets: the XDP program's decision
/// ([`prog::classify`] with `has` answering for the endpoint map), the IP packet through `p`
/// in a buffer laid out as the backend's ([`XDP_HEADROOM`] in front), and the Ethernet header
/// `next_hop` gives for the forwarded packet's destination (as the neighbour table would).
pub fn process_frame<P: Pipeline>(
    p: &mut P,
    frame: &[u8],
    has: impl Fn(&Endpoint) -> bool,
    next_hop: impl Fn(IpAddr) -> Option<[u8; ETH]>,
) -> FrameOutcome {
    // The frame is addressed to the director: its destination is the interface's MAC.
    let mac: [u8; 6] = match frame.get(..6) {
        Some(m) => m.try_into().expect("6 bytes"),
        None => return FrameOutcome::Kernel,
    };
    if !prog::classify(frame, mac, has) {
        return FrameOutcome::Kernel;
    }
    let mut buf = vec![0u8; XDP_HEADROOM + frame.len() + TAILROOM];
    buf[XDP_HEADROOM..XDP_HEADROOM + frame.len()].copy_from_slice(frame);
    match frame::run(p, &mut buf, XDP_HEADROOM, frame.len()) {
        Framed::Dropped => FrameOutcome::Dropped,
        Framed::Consumed => FrameOutcome::Consumed,
        Framed::Discarded => FrameOutcome::Discarded,
        Framed::Forward { start, len, dst } => match next_hop(dst) {
            None => FrameOutcome::NoNextHop,
            Some(h) => {
                let at = frame::put_header(&mut buf, start, &h);
                FrameOutcome::Sent(buf[at..start + len].to_vec())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops packets starting with 0, prepends `prepend` bytes of 0xEE to the others and
    /// marks their vnet header; counts polls.
    struct Test {
        prepend: usize,
        polls: usize,
    }

    impl Pipeline for Test {
        fn process(&mut self, pkt: &mut Packet<'_>) -> Verdict {
            if pkt.data().first() == Some(&0) {
                return Verdict::Drop;
            }
            assert_eq!(pkt.headroom(), HEADROOM);
            if let Some(h) = pkt.vnet.as_mut() {
                h.flags |= vnet::F_DATA_VALID;
            }
            let Some(front) = pkt.prepend(self.prepend) else {
                return Verdict::Drop;
            };
            front[..self.prepend].fill(0xEE);
            Verdict::Forward
        }

        fn poll(&mut self, _now: Instant) -> bool {
            self.polls += 1;
            true
        }
    }

    #[test]
    fn forward_drop_and_poll() {
        let mut p = Test {
            prepend: 2,
            polls: 0,
        };
        let out = process_packets(&mut p, &[&[1, 2, 3], &[0, 9], &[]]);
        assert_eq!(
            out,
            vec![
                Some(vec![0xEE, 0xEE, 1, 2, 3]),
                None,
                Some(vec![0xEE, 0xEE])
            ]
        );
        assert_eq!(p.polls, 1);
    }

    #[test]
    fn vnet_header_travels_with_the_packet() {
        let mut p = Test {
            prepend: 0,
            polls: 0,
        };
        let hdr = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let out = process_packets_vnet(&mut p, &[(Some(hdr), &[4, 5]), (None, &[7])]);
        let want = VnetHdr {
            flags: vnet::F_NEEDS_CSUM | vnet::F_DATA_VALID,
            ..hdr
        };
        assert_eq!(
            out,
            vec![Some((Some(want), vec![4, 5])), Some((None, vec![7]))]
        );
        assert_eq!(p.polls, 1);
    }

    #[test]
    fn no_room_for_the_vnet_header() {
        let mut p = Test {
            prepend: HEADROOM - vnet::LEN + 1,
            polls: 0,
        };
        assert_eq!(process_packets_vnet(&mut p, &[(None, &[1])]), vec![None]);
        p.prepend = HEADROOM - vnet::LEN;
        let out = process_packets_vnet(&mut p, &[(None, &[1])]);
        assert_eq!(
            out[0].as_ref().map(|(_, d)| d.len()),
            Some(HEADROOM - vnet::LEN + 1)
        );
        // Without a header the whole headroom may be used.
        p.prepend = HEADROOM;
        assert_eq!(
            process_packets(&mut p, &[&[1]])[0].as_ref().map(Vec::len),
            Some(HEADROOM + 1)
        );
    }
}
