#!/usr/bin/env python3
"""A slow stand-in for `ringvs run -c FILE`, to test the lab harness without ringvs.

NOT ringvs and not a benchmark (a few thousand packets per second). It implements the lab's
contract with the director so that the ringvs mode of run.sh / test-e2e.sh / bench.sh can be
exercised before ringvs forwards packets:

    RINGVS=examples/lab/stub_director.py bash examples/lab/test-e2e.sh

Contract (see README.md, "Plugging ringvs in"):
  * `run -c FILE`: reads [director] device / routes and the [[service]] tables of lab.toml;
  * creates the TUN device `director.device` (IFF_TUN | IFF_NO_PI), brings it up and keeps a
    queue attached (flags UP, LOWER_UP) until it exits;
  * LVS-NAT: client -> VIP:port becomes client -> RIP:port (round robin per new flow, any
    scheduler), replies RIP:port -> client become VIP:port -> client; everything else dropped;
  * with `director.routes = "auto"` installs `ip route replace VIP/32 dev DEV`, a rule
    `iif IFACE lookup 77` (IFACE: the interface routing to the first realserver) and
    `default dev DEV table 77`, and removes exactly those on exit;
  * exits 0 on SIGTERM or SIGINT.
Stdlib only (Python 3.11+ for tomllib). Linux, root.
"""

import fcntl
import ipaddress
import os
import signal
import struct
import subprocess
import sys
import tomllib

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
PROTOS = {"tcp": 6, "udp": 17}
TABLE, PREF = "77", "1000"


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def rewrite(pkt: bytearray, ihl: int, proto: int, src=None, sport=None, dst=None, dport=None):
    """Rewrite addresses/ports of an IPv4 TCP/UDP packet and recompute both checksums."""
    if src is not None:
        pkt[12:16] = src
    if dst is not None:
        pkt[16:20] = dst
    if sport is not None:
        pkt[ihl:ihl + 2] = struct.pack("!H", sport)
    if dport is not None:
        pkt[ihl + 2:ihl + 4] = struct.pack("!H", dport)
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", csum(bytes(pkt[:ihl])))
    off = ihl + (16 if proto == 6 else 6)
    pkt[off:off + 2] = b"\0\0"
    seg = bytes(pkt[ihl:])
    pseudo = bytes(pkt[12:20]) + struct.pack("!BBH", 0, proto, len(seg))
    c = csum(pseudo + seg)
    if proto == 17 and c == 0:
        c = 0xFFFF
    pkt[off:off + 2] = struct.pack("!H", c)


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] != "run" or sys.argv[2] not in ("-c", "--config"):
        print("usage: stub_director.py run -c FILE", file=sys.stderr)
        return 2
    with open(sys.argv[3], "rb") as f:
        conf = tomllib.load(f)
    dev = conf["director"]["device"]
    services = {}  # (proto, vip bytes, vport) -> [list of (rip bytes, rport)], rr index
    for svc in conf["service"]:
        host, port = svc["vip"].rsplit(":", 1)
        servers = []
        for s in svc["server"]:
            h, p = s["addr"].rsplit(":", 1)
            servers.append((ipaddress.IPv4Address(h).packed, int(p)))
        services[(PROTOS[svc["proto"]], ipaddress.IPv4Address(host).packed, int(port))] = [servers, 0]

    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    ip("link", "set", "dev", dev, "up")

    installed = []  # commands that undo what routes=auto did
    if conf["director"].get("routes") == "auto":
        vips = sorted({ipaddress.IPv4Address(vip).exploded for _, vip, _ in services})
        for v in vips:
            ip("route", "replace", f"{v}/32", "dev", dev)
            installed.append(["route", "del", f"{v}/32", "dev", dev])
        first_rip = ipaddress.IPv4Address(next(iter(services.values()))[0][0][0]).exploded
        iface = ip("route", "get", first_rip).stdout.split(" dev ")[1].split()[0]
        ip("rule", "add", "iif", iface, "lookup", TABLE, "pref", PREF)
        installed.append(["rule", "del", "iif", iface, "lookup", TABLE, "pref", PREF])
        ip("route", "replace", "default", "dev", dev, "table", TABLE)
        installed.append(["route", "flush", "table", TABLE])

    def stop(*_):
        for cmd in reversed(installed):
            ip(*cmd, check=False)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"stub_director: {dev} up, {len(services)} services, routes="
          f"{conf['director'].get('routes', 'manual')}", flush=True)

    fwd = {}  # (proto, client, cport, vip, vport) -> (rip, rport)
    rev = {}  # (proto, rip, rport, client, cport) -> (vip, vport)
    while True:
        pkt = bytearray(os.read(fd, 65536))
        if len(pkt) < 20 or pkt[0] >> 4 != 4:
            continue
        ihl = (pkt[0] & 15) * 4
        proto = pkt[9]
        if proto not in (6, 17) or len(pkt) < ihl + 8 or struct.unpack("!H", pkt[6:8])[0] & 0x3FFF:
            continue  # not TCP/UDP, or a fragment
        src, dst = bytes(pkt[12:16]), bytes(pkt[16:20])
        sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
        back = rev.get((proto, src, sport, dst, dport))
        if back:  # realserver -> client
            rewrite(pkt, ihl, proto, src=back[0], sport=back[1])
        else:
            key = (proto, src, sport, dst, dport)
            to = fwd.get(key)
            if to is None:
                svc = services.get((proto, dst, dport))
                if svc is None:
                    continue
                to = svc[0][svc[1] % len(svc[0])]
                svc[1] += 1
                fwd[key] = to
                rev[(proto, to[0], to[1], src, sport)] = (dst, dport)
            rewrite(pkt, ihl, proto, dst=to[0], dport=to[1])
        try:
            os.write(fd, pkt)
        except OSError as e:
            print(f"stub_director: write: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
