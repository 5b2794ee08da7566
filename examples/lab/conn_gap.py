#!/usr/bin/env python3
"""New connections across a failover: how long could no new connection be made?

    conn_gap.py HOST:PORT --seconds 14 [--every 0.02] [--deadline 0.3] [--path /]

Starts an HTTP GET on a new connection every `every` seconds for `seconds` (each in its own
thread, so that a lost SYN never delays the next attempt). An attempt succeeds when the whole
200 answer arrives within `deadline` seconds of its start. Prints one JSON object: started,
ok, failed, and gap_ms: the longest time between the starts of two successive successful
attempts (the window in which a new connection could not be made, to within `every`); also
gap_from and gap_to, seconds from the start of the run.
"""

import argparse
import json
import socket
import threading
import time


def attempt(host, port, path, deadline, t0, out, lock, i):
    start = time.monotonic()
    ok = False
    try:
        with socket.create_connection((host, port), timeout=deadline) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while time.monotonic() - start < deadline:
                s.settimeout(max(0.001, deadline - (time.monotonic() - start)))
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.1 200") and time.monotonic() - start <= deadline
    except OSError:
        ok = False
    with lock:
        out[i] = (start - t0, ok)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--every", type=float, default=0.02)
    ap.add_argument("--deadline", type=float, default=0.3)
    ap.add_argument("--path", default="/")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    n = int(a.seconds / a.every)
    out = [None] * n
    lock = threading.Lock()
    threads = []
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i * a.every
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = threading.Thread(
            target=attempt, args=(host, int(port), a.path, a.deadline, t0, out, lock, i), daemon=True
        )
        t.start()
        threads.append(t)
    for t in threads:
        t.join(a.deadline + 2)
    done = [r for r in out if r is not None]
    oks = [t for t, ok in done if ok]
    gap, frm, to = 0.0, None, None
    for x, y in zip(oks, oks[1:]):
        if y - x > gap:
            gap, frm, to = y - x, x, y
    print(
        json.dumps(
            {
                "started": n,
                "ok": len(oks),
                "failed": len(done) - len(oks),
                "gap_ms": round(gap * 1000, 1),
                "gap_from": None if frm is None else round(frm, 3),
                "gap_to": None if to is None else round(to, 3),
                "first_ok": None if not oks else round(oks[0], 3),
                "last_ok": None if not oks else round(oks[-1], 3),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
