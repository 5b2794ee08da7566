#!/usr/bin/env python3
"""UDP round-trip probe for the ringvs netns lab (stdlib only).

Sends COUNT datagrams to HOST:PORT, each from its own socket (so each one is a
new flow for the forwarder to schedule), and checks that every answer is
``b"<server>:" + the payload sent``.  Work is done in batches with a deadline
per batch, so the probe is bounded in time even if nothing answers.

Prints one line: ``SENT ANSWERED BAD SERVERS``, where SERVERS is
``rs1=67,rs2=67,rs3=66`` (or ``-`` when nothing answered).  Exit status 0
unless the arguments or the sockets fail.
"""

import argparse
import os
import select
import socket
import sys
import time
from collections import Counter


def run_batch(target, n, first, timeout, answers, servers, size=0):
    """Send n datagrams (ids first..first+n-1), collect answers; return bad count."""
    socks = {}
    bad = 0
    for i in range(first, first + n):
        s = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        payload = f"probe-{os.getpid()}-{i}-{os.urandom(4).hex()}".encode()
        # Padded to SIZE bytes (over the path's MTU the datagram goes in fragments, its
        # echo too).
        if size > len(payload):
            payload += (bytes(range(256)) * (size // 256 + 1))[: size - len(payload)]
        s.sendto(payload, target)
        socks[s.fileno()] = (s, payload)
    deadline = time.monotonic() + timeout
    poller = select.poll()
    for fd in socks:
        poller.register(fd, select.POLLIN)
    pending = set(socks)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            s, payload = socks[fd]
            try:
                data, _peer = s.recvfrom(65535)
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                bad += 1
            else:
                name, sep, echoed = data.partition(b":")
                if sep and echoed == payload and name:
                    answers.append(fd)
                    servers[name.decode(errors="replace")] += 1
                else:
                    bad += 1
            poller.unregister(fd)
            pending.discard(fd)
    for s, _ in socks.values():
        s.close()
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT, e.g. 10.77.100.100:53 or [fd77:100::100]:53")
    ap.add_argument("--count", type=int, default=200, help="datagrams to send")
    ap.add_argument("--batch", type=int, default=50, help="datagrams in flight at once")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds to wait per batch")
    ap.add_argument("--size", type=int, default=0, help="pad each datagram to this many bytes")
    args = ap.parse_args()
    host, _, port = args.target.rpartition(":")
    target = (host.strip("[]"), int(port))

    answers, servers, bad, sent = [], Counter(), 0, 0
    while sent < args.count:
        n = min(args.batch, args.count - sent)
        bad += run_batch(target, n, sent, args.timeout, answers, servers, args.size)
        sent += n
    spread = ",".join(f"{k}={v}" for k, v in sorted(servers.items())) or "-"
    print(sent, len(answers), bad, spread)
    return 0


if __name__ == "__main__":
    sys.exit(main())
