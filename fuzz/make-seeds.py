#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora under fuzz/seeds/TARGET/ (committed; run again after
changing a target's input format). The packets are the data plane's corpus
(host/tests/corpus/*.bin); the shard seeds are the lab's flows in the shard target's
operation format (fuzz/src/shard.rs); the others are real configs, requests and captures."""
import glob, hashlib, hmac, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def out(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


packets = {os.path.basename(p)[:-4]: open(p, "rb").read()
           for p in sorted(glob.glob(os.path.join(ROOT, "host/tests/corpus/*.bin")))}

# wire: every corpus packet, and one behind a virtio-net header.
for name, p in packets.items():
    out("wire", name, p)
out("wire", "vnet-needs-csum", struct.pack("<BBHHHH", 1, 1, 54, 1448, 20, 16))
# IPv6 (host/src/wire/test_util.rs's Linux captures), and an extension-header chain:
# Destination options, Authentication, Fragment (first, more), Routing (segments left 0), UDP.
V6 = {
    "ipv6-syn": "600fff2c00280640fd770000000000000000000000000002fd770000000000000000000000000001"
                "c4e60050f709a00c00000000a002fd204aed0000020405a00402080afeadaa15000000000103030a",
    "ipv6-mld-hop-by-hop": "6000000000380001fe80000000000000989601fffe1f7e9cff020000000000000000000000000016"
                           "3a000502000001008f00d8df0000000204000000ff0200000000000000000001ff1f7e9c"
                           "04000000ff0200000000000000000001ff000002",
    "ipv6-port-unreachable": "600a155f003d3a40fd770000000000000000000000000001fd770000000000000000000000000002"
                             "0104978f000000006002fad0000d1140fd770000000000000000000000000002"
                             "fd770000000000000000000000000001b95214e9000df2d368656c6c6f",
    "ipv6-neighbour-solicitation": "6000000000203afffd770000000000000000000000000002ff0200000000000000000001ff000001"
                                   "87003af900000000fd7700000000000000000000000000010101a67679c1237a",
    "ipv6-neighbour-advertisement": "6000000000203afffd770000000000000000000000000001fd770000000000000000000000000002"
                                    "880024f5e0000000fd77000000000000000000000000000102010671febd7313",
}
for name, h in V6.items():
    out("wire", name, bytes.fromhex(h))
# A packet too big (Linux's, 1,280 bytes: its quote is cut short of the quoted length).
out("wire", "ipv6-packet-too-big",
    open(os.path.join(ROOT, "host/src/wire/captures/packet-too-big6.bin"), "rb").read())
chain = (bytes([51, 0, 1, 4, 0, 0, 0, 0]) + bytes([44, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1])
         + bytes([43, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]) + bytes([17, 0, 0, 0, 0, 0, 0, 0])
         + bytes([0x9c, 0x40, 0, 53, 0, 8, 0, 0]))
out("wire", "ipv6-extension-chain", bytes([0x60, 0, 0, 0]) + struct.pack(">HBB", len(chain), 60, 64)
    + bytes.fromhex("fd77" + "00" * 13 + "02") + bytes.fromhex("fd77" + "00" * 13 + "01") + chain)

# shard: operations (see fuzz/src/shard.rs).
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
FIX = 0x18          # make every checksum valid
Q2 = 0x20           # the second queue
VNET = 0x40         # a virtio-net header follows


V6 = 0x80           # in `kind`: the IPv6 flows (NAT66)


def built(kind, svc, who, flags, length=0, op=FIX | 2, edits=(), v6=0):
    b = bytes([op, v6 | (svc << 3) | kind, who, flags, length, len(edits)])
    for at, x in edits:
        b += bytes([at, x])
    return b


def flow(svc, who, tcp=True, op=FIX | 2, v6=0):
    """A client's flow to a service and both realservers' answers (one is the scheduled)."""
    if not tcp:
        return (built(0, svc, who, 0, 12, op, v6=v6) + built(3, svc, who, 0, 40, op, v6=v6)
                + built(3, svc, who | 32, 0, 40, op, v6=v6))
    return (built(0, svc, who, SYN, 0, op, v6=v6)
            + built(3, svc, who, SYN | ACK, 0, op, v6=v6) + built(3, svc, who | 32, SYN | ACK, 0, op, v6=v6)
            + built(0, svc, who, ACK, 0, op, v6=v6) + built(0, svc, who, ACK | PSH, 20, op, v6=v6)
            + built(3, svc, who, ACK | PSH, 60, op, v6=v6) + built(3, svc, who | 32, ACK | PSH, 60, op, v6=v6))


def close(svc, who):
    return (built(0, svc, who, FIN | ACK) + built(3, svc, who, FIN | ACK)
            + built(3, svc, who | 32, FIN | ACK) + built(0, svc, who, ACK))


def clock(centis):
    return bytes([4, centis])


def seconds(s):
    return bytes([6, s])


def change(a, b):
    return bytes([5, a, b])


def raw(p, op=FIX):
    return bytes([op]) + struct.pack(">H", len(p)) + p


def vnet(flags, gso, hdr_len, gso_size, start, off):
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, start, off)


lab = (flow(0, 0) + flow(0, 1) + flow(1, 2, tcp=False) + flow(2, 3) + flow(3, 4, tcp=False)
       + built(5, 0, 0, ACK, 40) + built(6, 0, 0, SYN, 40) + built(6, 0, 32, SYN, 40) + built(7, 0, 5, 0)
       + clock(100) + flow(0, 9) + close(0, 0) + clock(150) + seconds(70) + flow(0, 1))
for setup in range(8):
    out("shard", f"lab-scenario-{setup}", bytes([setup]) + lab)
    out("shard", f"small-two-queues-{setup}",
        bytes([setup | 16 | 32 | 8]) + lab.replace(bytes([FIX | 2]), bytes([FIX | Q2 | 2]))
        + change(0, 3) + flow(0, 6) + change(0, 4) + seconds(200) + flow(0, 7))
# The same flows over IPv6 (NAT66; the IPv6 services are web6 :80 and dns6 :53).
lab6 = bytearray(lab)
i = 0
while i < len(lab6):
    op = lab6[i]
    if op & 7 in (2, 3):
        lab6[i + 1] |= V6
        i += 6 + 2 * (lab6[i + 5] % 4)
    else:
        i += 2 if op & 7 in (4, 6) else 3
out("shard", "lab-ipv6-0", bytes([0]) + bytes(lab6))
# A device with virtio-net headers: partial checksums, a GSO super-packet.
hdr = vnet(1, 0, 0, 0, 20, 16)
gso = vnet(1, 1, 52, 1448, 20, 16)
out("shard", "vnet-partial", bytes([64 | 5]) + b"".join(
    built(k, 0, w, f, 30, op=FIX | VNET | 2) + hdr
    for (k, w, f) in [(0, 1, SYN), (3, 1, SYN | ACK), (3, 33, SYN | ACK), (0, 1, ACK), (0, 1, ACK | PSH)])
    + built(0, 0, 1, ACK | PSH, 63, op=FIX | VNET | 2) + gso + clock(100))
# Floods: many clients' SYNs into a small table, ticks of the defenses in between.
flood = b"".join(built(0, 0, w, SYN) for w in range(256)) + clock(120)
for setup in (5, 6, 7, 0):
    out("shard", f"flood-{setup}", bytes([setup | 16]) + (flood + flow(0, 1)) * 2)
# Connection sync (op 7): entries a peer sent taken by each queue, a held flow's packets,
# flows past the threshold queued for the peers, a dump, promotion, the role switched.
def sync_in(entries, q=0):
    return bytes([7, q << 2, len(entries) - 1]) + b"".join(
        bytes([a, b, c]) + struct.pack(">I", secs) for a, b, c, secs in entries)


def sync_op(b):
    return bytes([7, b])


synced = [(2, 1, 0, 900), (4, 1, 1, 900), (7, 1 << 4, 3, 300), (2 | 0x80, 0x81, 0x80, 60)]
# (The shard target reads 1 to 4 entries an op; a template, bit 6 of the first byte, alone.)
sync = (sync_in(synced) + sync_in([(2 | 0x40, 1, 1, 300)]) + sync_in(synced[:2], q=1) + built(0, 0, 1, ACK | PSH, 20)
        + built(3, 0, 1, ACK | PSH, 60) + flow(0, 5) + flow(1, 6, tcp=False) + sync_op(3)
        + sync_op(2 | 4) + sync_in([(10, 4, 1, 30)]) + sync_op(1) + sync_op(2) + flow(0, 9)
        + clock(200) + seconds(100) + sync_op(3))
for setup in (0, 32, 32 | 16, 4):
    out("shard", f"sync-{setup}", bytes([setup]) + sync)
# The same over IPv6 (bit 5 of an entry's third byte; with bit 7 its realserver is IPv4, as
# quic6's second): held flows of web6 and dns6, their packets both ways, a template, a dump.
synced6 = [(2, 1, 0x20, 900), (4, 1, 0x21, 900), (7, 1 << 4, 0x20, 300), (2 | 0x80, 0x31, 0xa0, 60)]
sync6 = (sync_in(synced6) + sync_in([(2 | 0x40, 1, 0x21, 300)]) + built(0, 0, 1, ACK | PSH, 20, v6=V6)
         + built(3, 0, 1, ACK | PSH, 60, v6=V6) + flow(0, 5, v6=V6) + flow(1, 6, tcp=False, v6=V6)
         + sync_op(3) + sync_op(2 | 4) + sync_in([(10, 4, 0x21, 30)]) + sync_op(1) + sync_op(2)
         + flow(0, 9, v6=V6) + clock(200) + seconds(100) + sync_op(3))
for setup in (0, 32, 32 | 16, 4):
    out("shard", f"sync6-{setup}", bytes([setup]) + sync6)
# The data plane's corpus packets, raw.
out("shard", "corpus-raw", bytes([0]) + b"".join(raw(p) for p in packets.values()))
out("shard", "corpus-raw-after-flows", bytes([1]) + lab + b"".join(raw(p) for p in packets.values()))

# admin: one request of each command, and the errors' neighbours.
for i, line in enumerate([
    '{"v":1,"cmd":"status"}', '{"v":1,"cmd":"list"}', '{"v":1,"cmd":"connections","max":10}',
    '{"v":1,"cmd":"reload","dry_run":true}', '{"v":1,"cmd":"save"}',
    '{"v":1,"cmd":"plugin-swap","service":"web","target":"sched-mh"}',
    '{"v":1,"cmd":"plugins"}', '{"v":1,"cmd":"top"}', '{"v":1,"cmd":"zero","service":"web"}',
    '{"v":1,"cmd":"server-add","service":"web","addr":"10.77.1.3:8080","weight":2,"upper":10,"lower":5,"forward":"tun"}',
    '{"v":1,"cmd":"server-remove","service":"web","addr":"10.77.1.3:8080","expire":true}',
    '{"v":1,"cmd":"service-add","name":"x","vip":"10.77.100.100:81","proto":"tcp","scheduler":"rr"}',
    '{"v":1,"cmd":"service-edit","name":"x","scheduler":"wlc","persistence":"300"}',
    '{"v":1,"cmd":"service-remove","name":"x","expire":true}',
    '{"v":1,"cmd":"server-weight","service":"web","addr":"10.77.1.1:8080","weight":0}',
    '{"v":2,"cmd":"status"}', '{"cmd":"status"}', '[1,2]', '{"v":1,"cmd":"nope"}',
]):
    out("admin", f"request-{i:02}", line.encode())

# config: the project's example configs, and one with environment overrides.
for p in sorted(glob.glob(os.path.join(ROOT, "examples/lab/*.toml"))
                + [os.path.join(ROOT, "examples/systemd/ringvs.toml"),
                   os.path.join(ROOT, "examples/custom-scheduler/slowstart.toml")]):
    out("config", os.path.basename(os.path.dirname(p)) + "-" + os.path.basename(p), open(p, "rb").read())
out("config", "lab-with-env", open(os.path.join(ROOT, "examples/lab/lab.toml"), "rb").read()
    + b"\n--env--\nDIRECTOR__QUEUES=2\nDIRECTOR__CONN_MEMORY_LIMIT=8MiB\nDIRECTOR__LOG_FORMAT=json\n")

# pcap: the replay tests' capture, classic pcap (Ethernet, raw IP) and pcapng.
for p in glob.glob(os.path.join(ROOT, "host/tests/captures/*")):
    out("pcap", os.path.basename(p), open(p, "rb").read())
pk = list(packets.values())[:8]


def classic(linktype, frames, nanos=False):
    magic = 0xa1b23c4d if nanos else 0xa1b2c3d4
    b = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        b += struct.pack("<IIII", 1700000000 + i, 500 * i, len(f), len(f)) + f
    return b


eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
out("pcap", "ethernet.pcap", classic(1, [eth + p for p in pk]))
out("pcap", "raw-nanos.pcap", classic(101, pk, nanos=True))
out("pcap", "truncated.pcap", classic(101, pk)[:-7])


def block(t, body):
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", t, n) + body + struct.pack("<I", n)


ng = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
ng += block(1, struct.pack("<HHI", 101, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9) + b"\0\0\0\0")
for i, p in enumerate(pk):
    ts = (1700000000 + i) * 10**9
    ng += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xffffffff, len(p), len(p)) + p)
out("pcap", "raw.pcapng", ng)

# sync: messages signed with the fuzz key (fuzz/src/lib.rs SYNC_KEY); a first byte 0 means
# "as received", 1 "sign the rest first".
SYNC_KEY = bytes.fromhex("5a" * 32)


def sync_msg(kind, seq, entries, sign=True):
    body = b"RVSY" + bytes([1, kind]) + struct.pack(">HIIQI", len(entries), 7, 1764900000, seq, 0)
    six = kind in (6, 7)  # 64-byte entries, 16-byte addresses (IPv4 ones mapped)
    for proto, state, flags, client, vip, rs, secs in entries:
        start = len(body)
        body += bytes([proto, state, flags, 6 if six else 4])

        def put(a, p):
            a = bytes(a)
            return (a if len(a) == 16 or not six else bytes(10) + b"\xff\xff" + a) + struct.pack(">H", p)
        if kind in (5, 7):  # a template: its 8-byte affinity key in `client`'s place
            body += struct.pack(">Q", client) + put(*vip) + put(*rs)
        else:
            body += put(*client) + put(*vip) + put(*rs) + b"\0\0"
        body += bytes(start + (60 if six else 24) - len(body)) + struct.pack(">I", secs)
    return body + (hmac.new(SYNC_KEY, body, hashlib.sha256).digest() if sign else b"")


tcp = (6, 1, 0, ((10, 77, 0, 2), 40000), ((10, 77, 100, 100), 80), ((10, 77, 1, 1), 8080), 900)
udp = (17, 11, 0, ((10, 77, 0, 2), 5300), ((10, 77, 100, 100), 53), ((10, 77, 1, 1), 5353), 300)
tpl = (6, 0, 1, 0x0a4d0000, ((10, 77, 100, 100), 80), ((10, 77, 1, 2), 8080), 360)
tpl_udp = (17, 0, 1, 0x0a4d0100, ((10, 77, 100, 100), 53), ((10, 77, 1, 1), 5353), 60)
out("sync", "entries", b"\0" + sync_msg(1, 1, [tcp, udp]))
out("sync", "templates", b"\0" + sync_msg(5, 7, [tpl, tpl_udp]))
out("sync", "full", b"\0" + sync_msg(1, 2, [tcp] * 50))
out("sync", "heartbeat", b"\0" + sync_msg(4, 3, []))
out("sync", "bulk", b"\0" + sync_msg(2, 4, []) )
out("sync", "unsigned-entries", b"\1" + sync_msg(1, 5, [tcp, udp], sign=False))
V6_CLIENT, V6_VIP = (0xfd, 0x77) + (0,) * 13 + (0x10,), (0xfd, 0x77, 1, 0) + (0,) * 10 + (1, 0)
tcp6 = (6, 1, 0, (V6_CLIENT, 40000), (V6_VIP, 80), ((0xfd, 0x77, 0, 1) + (0,) * 11 + (1,), 8080), 900)
udp6 = (17, 11, 0, (V6_CLIENT, 5300), (V6_VIP, 53), ((10, 77, 1, 3), 4433), 300)
tpl6 = (6, 0, 1, 0xfd77000000000010, (V6_VIP, 443), ((0xfd, 0x77, 0, 1) + (0,) * 11 + (2,), 443), 360)
out("sync", "entries6", b"\0" + sync_msg(6, 8, [tcp6, udp6]))
out("sync", "templates6", b"\0" + sync_msg(7, 9, [tpl6]))
out("sync", "forged", b"\0" + sync_msg(1, 6, [tcp])[:-1] + b"\0")
