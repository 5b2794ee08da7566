#!/usr/bin/env python3
"""UDP echo server for the ringvs netns lab (stdlib only).

Answers every datagram with ``NAME + b":" + payload``, so the client can tell
which realserver answered (e.g. ``b"rs2:hello"``).

    udp_echo.py --name rs2 [--bind 0.0.0.0] [--port 5353] [--pidfile FILE]
"""

import argparse
import os
import signal
import socket
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="server name put in front of each answer")
    ap.add_argument("--bind", default="0.0.0.0", help="address to listen on (\"::\": IPv6)")
    ap.add_argument("--port", type=int, default=5353, help="UDP port to listen on")
    ap.add_argument("--pidfile", help="write the process id here once listening")
    args = ap.parse_args()

    prefix = args.name.encode() + b":"
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.bind, args.port))
    if args.pidfile:
        with open(args.pidfile, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    while True:
        data, peer = sock.recvfrom(65535)
        try:
            sock.sendto(prefix + data, peer)
        except OSError as e:  # e.g. no route back: keep serving the others
            print(f"udp_echo {args.name}: sendto {peer}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
