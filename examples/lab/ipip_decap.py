#!/usr/bin/env python3
"""An LVS-TUN realserver's IPIP and GUE decapsulation in userspace, for kernels built
without the ipip and fou modules (CONFIG_NET_IPIP, CONFIG_NET_FOU), as the lab's VM kernel is.

It does what the kernel's fallback device tunl0 does: every IPv4-in-IPv4 packet (protocol
4) that reaches this namespace is stripped of its outer header and handed to the kernel
again on a TUN device (named --dev, default tunl0), where the virtual address is configured;
the kernel delivers it to the local socket, whose reply leaves by the normal route (not
through the director's tunnel). A raw socket of protocol 4 receives the packets (and keeps
the kernel from answering protocol-unreachable). Inner packets must carry complete
checksums: the lab turns checksum offload off on the client and runs the director without
offload. With --gue-port, GUE (what `ip fou add port PORT gue` takes) is read from a UDP
socket on that port too: version 0, no options, protocol 4 inside.

With --ipv6 it takes IPv6-in-IPv6 too (next header 41, what the kernel's ip6tnl0 takes,
CONFIG_IPV6_TUNNEL) and IPv4-in-IPv6 (next header 4), from raw IPv6 sockets (which hand over
the payload without the outer header), IPv6-in-IPv4 (protocol 41, what sit0 takes), and GUE
over IPv6 on the same port; the inner packet's version must be what the outer header
announces. A GUE datagram over IPv6 reaches the socket only with a right UDP checksum (the
kernel checks it).

    ip netns exec NS python3 ipip_decap.py --dev tunl0 [--gue-port 6080] [--ipv6] --pidfile FILE
"""
import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41


def gue_inner(pkt):
    """The inner packet of a GUE datagram: version 0, no control, no options."""
    if len(pkt) >= 4 and pkt[0] >> 6 == 0 and pkt[0] & 0x1F == 0 and pkt[1] in (IPPROTO_IPIP, IPPROTO_IPV6):
        return pkt[4:], 4 if pkt[1] == IPPROTO_IPIP else 6
    return b"", 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", default="tunl0")
    ap.add_argument("--pidfile")
    ap.add_argument("--gue-port", type=int)
    ap.add_argument("--ipv6", action="store_true", help="take IPv6-in-IPv6 and GUE over IPv6 too")
    args = ap.parse_args()

    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", args.dev.encode(), IFF_TUN | IFF_NO_PI))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    gue = None
    if args.gue_port:
        gue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gue.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        gue.bind(("0.0.0.0", args.gue_port))
    raw6 = raw6_4 = raw4_6 = gue6 = None
    if args.ipv6:
        raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPV6)
        raw6_4 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPIP)
        raw4_6 = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPV6)
        for x in (raw6, raw6_4, raw4_6):
            x.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if args.gue_port:
            gue6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            gue6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            gue6.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            gue6.bind(("::", args.gue_port))
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"ipip_decap: {args.dev} up", flush=True)
    seen = bad = 0
    socks = [x for x in (raw, gue, raw6, raw6_4, raw4_6, gue6) if x is not None]
    while True:
        for s in select.select(socks, [], [])[0]:
            pkt = s.recv(65535)
            seen += 1
            if s is raw:
                # IPv4 outside: IPv4 inside (protocol 4); the outer header is handed over.
                inner, want = pkt[(pkt[0] & 0x0F) * 4:], 4
            elif s is raw6:
                # IPv6 outside, next header 41: the payload alone is handed over.
                inner, want = pkt, 6
            elif s is raw6_4:
                inner, want = pkt, 4
            elif s is raw4_6:
                inner, want = pkt[(pkt[0] & 0x0F) * 4:], 6
            else:
                inner, want = gue_inner(pkt)
            if want == 0 or len(inner) < (20 if want == 4 else 40) or inner[0] >> 4 != want:
                bad += 1
                print(f"ipip_decap: not IPv{want or '?'} inside ({bad} of {seen})", flush=True)
                continue
            os.write(tun, inner)


if __name__ == "__main__":
    main()
