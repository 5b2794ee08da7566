#!/usr/bin/env python3
"""Hostile connection-sync messages (docs/HA.md), sent with scapy from another namespace.

    sync_attack.py --pcap CAPTURE --to 10.77.21.12:8848 --spoof 10.77.21.11

CAPTURE holds genuine sync messages (tcpdump on the receiver); the first one that carries
entries (else the first one) is the sample. Sent, each from the spoofed source address:

  replay     the sample as captured, twice
  length     the sample cut by one byte; its first 40 bytes; 10 bytes
  mac        the sample with one bit of an entry (or of its header) flipped; the sample
             signed again with another key
  magic      the sample with another magic
  version    the sample with version 2
  oversized  the sample claiming 51 entries

Prints one JSON object: the number sent per reason, which `ringvs ha status` must count
under the same reasons (`rejected`), and the sample's kind and entry count.
"""

import argparse
import hashlib
import hmac
import json
import os
import struct

from scapy.all import IP, UDP, Raw, rdpcap, send  # noqa: E402  (scapy's usual import)

HEADER = 28
MAC = 32


def sample(pcap):
    msgs = []
    for p in rdpcap(pcap):
        if UDP in p and bytes(p[UDP].payload)[:4] == b"RVSY":
            msgs.append(bytes(p[UDP].payload))
    if not msgs:
        raise SystemExit(f"no sync message in {pcap}")
    with_entries = [m for m in msgs if struct.unpack("!H", m[6:8])[0] > 0]
    return (with_entries or msgs)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--to", required=True, help="HOST:PORT of the receiver")
    ap.add_argument("--spoof", required=True, help="source address to send from")
    a = ap.parse_args()
    host, port = a.to.rsplit(":", 1)
    port = int(port)
    m = sample(a.pcap)
    count = struct.unpack("!H", m[6:8])[0]
    body = m[:-MAC]

    flipped = bytearray(m)
    flipped[HEADER + 4 if count else 20] ^= 0x01
    other_key = os.urandom(32)
    resigned = body + hmac.new(other_key, body, hashlib.sha256).digest()
    bad_magic = b"RVSX" + m[4:]
    bad_version = m[:4] + b"\x02" + m[5:]
    oversized = m[:6] + struct.pack("!H", 51) + m[8:]

    sent = {
        "replay": [m, m],
        "length": [m[:-1], m[:40], m[:10]],
        "mac": [bytes(flipped), resigned],
        "magic": [bad_magic],
        "version": [bad_version],
        "oversized": [oversized],
    }
    for msgs in sent.values():
        for x in msgs:
            send(IP(src=a.spoof, dst=host) / UDP(sport=port, dport=port) / Raw(x), verbose=False)
    print(
        json.dumps(
            {
                "sent": {k: len(v) for k, v in sent.items()},
                "sample_kind": m[5],
                "sample_entries": count,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
