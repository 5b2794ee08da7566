#!/usr/bin/env python3
"""Long-lived flows across a failover: do established connections live through it?

    flows.py HOST:PORT --flows 64 --seconds 20 [--every 0.1] [--timeout 15] [--ready FILE]

Opens `flows` HTTP/1.1 keep-alive connections (all of them before the run starts; a connection
that cannot be opened within 5 s fails the run), then on each sends a GET every `every`
seconds for `seconds` and reads the whole answer (Content-Length). A flow never reconnects: a
reset, a close, a bad answer or no answer within `timeout` seconds ends it as failed. Touches
FILE once every connection is open (the lab starts its failover after that), writing into it
the wall-clock time (seconds since the epoch) the run's clock starts from, so the lab can place
its events on the same clock as the gaps.

Prints one JSON object: flows, opened, ok (flows that answered every request to the end),
failed, errors by kind, the largest gap (ms between two answers of one flow) over all flows,
and per flow: its local port, requests answered, largest gap in ms and when it began (seconds
from the start of the run), every gap of 300 ms or more as [start, ms], and its error, if any. Exit status 0 whatever happened: the lab
decides.
"""

import argparse
import json
import os
import socket
import threading
import time

# Gaps of at least this many ms are listed per flow as [start (s from the run's start), ms],
# the first GAPS_KEPT of them.
GAP_LISTED_MS = 300
GAPS_KEPT = 50


def read_answer(s, buf):
    """One HTTP answer off `s` (`buf`: bytes already read); returns (status line, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return lines[0], rest[length:]


def flow(i, s, host, args, t0, out):
    r = {"port": s.getsockname()[1], "ok": 0, "gap_ms": 0.0, "gap_at": 0.0, "gaps": [], "error": None}
    out[i] = r
    last = time.monotonic()
    buf = b""
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    s.settimeout(args.timeout)
    try:
        while True:
            start = time.monotonic()
            if start - t0 >= args.seconds:
                break
            s.sendall(req)
            status, buf = read_answer(s, buf)
            if not status.startswith(b"HTTP/1.1 200"):
                raise ValueError(status.decode(errors="replace"))
            now = time.monotonic()
            r["ok"] += 1
            gap = (now - last) * 1000
            if gap > r["gap_ms"]:
                r["gap_ms"], r["gap_at"] = round(gap, 1), round(last - t0, 2)
            if gap >= GAP_LISTED_MS and len(r["gaps"]) < GAPS_KEPT:
                r["gaps"].append([round(last - t0, 2), round(gap, 1)])
            last = now
            time.sleep(max(0.0, args.every - (now - start)))
    except socket.timeout:
        r["error"] = "timeout"
    except ConnectionResetError:
        r["error"] = "reset"
    except (OSError, ValueError) as e:
        r["error"] = type(e).__name__ + ": " + str(e)
    finally:
        s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("--flows", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--ready")
    args = p.parse_args()
    host, port = args.target.rsplit(":", 1)
    socks, errors = [], {}
    for _ in range(args.flows):
        try:
            socks.append(socket.create_connection((host, int(port)), timeout=5))
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    out = [None] * len(socks)
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=flow, args=(i, s, host, args, t0, out), daemon=True)
        for i, s in enumerate(socks)
    ]
    for t in threads:
        t.start()
    if args.ready:
        # The run's start on the wall clock, written whole (a reader never sees it half done).
        epoch_t0 = time.time() - (time.monotonic() - t0)
        with open(args.ready + ".tmp", "w") as f:
            f.write(f"{epoch_t0:.6f}\n")
        os.replace(args.ready + ".tmp", args.ready)
    for t in threads:
        t.join(args.seconds + args.timeout + 5)
    done = [r for r in out if r is not None]
    for r in done:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    print(
        json.dumps(
            {
                "flows": args.flows,
                "opened": len(socks),
                "ok": sum(1 for r in done if not r["error"]),
                "failed": args.flows - sum(1 for r in done if not r["error"]),
                "errors": errors,
                "max_gap_ms": max((r["gap_ms"] for r in done), default=0),
                "per_flow": done,
            }
        )
    )


if __name__ == "__main__":
    main()
