#!/usr/bin/env python3
"""A legitimate client during a flood: open-loop HTTP GETs against one address.

    http_probe.py HOST:PORT --seconds 25 --rate 20 [--deadline 2] [--path /] [--source ADDR[,ADDR…]]

HOST is an IPv4 address or an IPv6 one in brackets ([fd77:100::100]:80).

Starts `rate` requests per second on a fixed schedule for `seconds` (a slow request never
delays the next one: each runs in its own thread), each on a new TCP connection with
`Connection: close`. A request succeeds when the whole response arrives with status 200 within
`deadline` seconds of its start (connect included, so a lost SYN that the kernel retransmits
after 1 s still counts if the answer comes in time).

Prints one JSON object: started, ok (200 within the deadline), late (200 after it), failed,
errors by kind, and latency percentiles of the successful requests in milliseconds.

With several --source addresses, request i binds to the i-th (round robin): as many addresses
as requests make every request a client the director has never seen.

With --keepalive it is instead one established flow: a single connection, opened first, that
sends `rate` requests a second (HTTP/1.1 keep-alive) and never reconnects. Any error ends it,
so "ok" equal to "started" proves that flow survived the whole run.
"""

import argparse
import json
import socket
import threading
import time

# Successful requests slower than this are listed in "slow" as [seconds after the start, ms]
# (the first SLOW_KEPT of them), to tell when in a run they happened.
SLOW_S = 0.1
SLOW_KEPT = 20


def host_header(host):
    """The Host header's value: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def one(host, port, path, source, deadline, give_up, results, lock, t0):
    start = time.monotonic()
    kind = None
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            if source:
                s.bind((source, 0))
            s.settimeout(give_up)
            s.connect((host, port))
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host_header(host)}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while True:
                left = give_up - (time.monotonic() - start)
                if left <= 0:
                    raise socket.timeout()
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        if not data.startswith(b"HTTP/1.1 200") and not data.startswith(b"HTTP/1.0 200"):
            kind = "status " + data[:12].decode(errors="replace").split(" ")[-1]
    except socket.timeout:
        kind = "timeout"
    except ConnectionRefusedError:
        kind = "refused"
    except ConnectionResetError:
        kind = "reset"
    except OSError as e:
        kind = f"oserror {e.errno}"
    took = time.monotonic() - start
    with lock:
        if kind is None and took <= deadline:
            results["ok"] += 1
            results["lat"].append(took)
            if took > SLOW_S and len(results["slow"]) < SLOW_KEPT:
                results["slow"].append([round(start - t0, 2), round(took * 1000, 1)])
        elif kind is None:
            results["late"] += 1
        else:
            results["failed"] += 1
            results["errors"][kind] = results["errors"].get(kind, 0) + 1


def keepalive(host, port, path, seconds, rate, deadline):
    """One connection, `rate` requests a second for `seconds`; stops at the first error."""
    res = {"started": 0, "ok": 0, "late": 0, "failed": 0, "errors": {}, "lat": []}
    req = f"GET {path} HTTP/1.1\r\nHost: {host_header(host)}\r\n\r\n".encode()
    try:
        s = socket.create_connection((host, port), timeout=deadline * 2.5)
    except OSError as e:
        res["started"] = 1
        res["failed"] = 1
        res["errors"]["connect " + type(e).__name__] = 1
        return res
    s.settimeout(deadline * 2.5)
    f = s.makefile("rb")
    t0 = time.monotonic()
    n = int(seconds * rate)
    for i in range(n):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        res["started"] += 1
        start = time.monotonic()
        try:
            s.sendall(req)
            status = f.readline()
            length = None
            while True:
                line = f.readline()
                if not line:
                    raise ConnectionResetError("closed by peer")
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if length is None:
                raise ValueError("no Content-Length")
            if len(f.read(length)) != length:
                raise ConnectionResetError("short body")
            if b" 200 " not in status:
                raise ValueError("status " + status.decode("latin-1").strip())
        except (OSError, ValueError) as e:
            res["failed"] += 1
            res["errors"][type(e).__name__ + " " + str(e)[:60]] = 1
            break
        took = time.monotonic() - start
        if took <= deadline:
            res["ok"] += 1
            res["lat"].append(took)
        else:
            res["late"] += 1
    s.close()
    res["planned"] = n
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=float, default=20.0, help="requests started per second")
    ap.add_argument("--deadline", type=float, default=2.0, help="seconds for a success")
    ap.add_argument("--path", default="/")
    ap.add_argument("--source", default=None, help="source address(es) to bind, comma-separated")
    ap.add_argument("--keepalive", action="store_true", help="one established flow instead")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    host = host.strip("[]")  # an IPv6 address is written [ADDR]:PORT
    port = int(port)
    if a.seconds <= 0 or a.rate <= 0 or a.deadline <= 0:
        ap.error("--seconds, --rate and --deadline must be positive")
    if a.keepalive:
        report(keepalive(host, port, a.path, a.seconds, a.rate, a.deadline))
        return
    # A request is abandoned a little after its deadline, so "late" can be told from "failed".
    give_up = a.deadline * 2.5
    sources = a.source.split(",") if a.source else [None]
    results = {"ok": 0, "late": 0, "failed": 0, "errors": {}, "lat": [], "slow": []}
    lock = threading.Lock()
    threads = []
    t0 = time.monotonic()
    n = int(a.seconds * a.rate)
    for i in range(n):
        due = t0 + i / a.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = threading.Thread(
            target=one,
            args=(host, port, a.path, sources[i % len(sources)], a.deadline, give_up, results, lock, t0),
            daemon=True,
        )
        t.start()
        threads.append(t)
    for t in threads:
        t.join(give_up + 1)
    results["started"] = n
    report(results)


def report(results):
    """Prints `results` as JSON, its latencies summarised."""
    lat = sorted(results.pop("lat"))
    n = results["started"]

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None

    results["ok_pct"] = round(100.0 * results["ok"] / n, 2) if n else 0.0
    results["ms_p50"] = pct(50)
    results["ms_p99"] = pct(99)
    results["ms_max"] = round(lat[-1] * 1000, 1) if lat else None
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
