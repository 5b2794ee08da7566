#!/usr/bin/env bash
# LVS-TUN (forward = "tun", IPIP, then GUE) end to end in the netns lab, with real nginx
# realservers (examples/lab/tun.toml: rr over three realservers, two queues). Each realserver
# holds the virtual address on tunl0 and decapsulates IPIP and GUE (port 6080): with the
# kernel's ipip and fou modules where the kernel has them, else with
# examples/lab/ipip_decap.py (the lab VM's kernel has neither). Its
# replies go to the client directly: an ip rule in the director's namespace routes packets
# from the virtual address past ringvs (the kernel forwards them), as a realserver's own
# gateway would in production.
#
# Checks (each PASS/FAIL with its figures; the exit status is the verdict):
#   ringvs list shows each realserver forwarded by "Tunnel", ringvs found a tunnel source;
#   wrk (Connection: close, 5 s): no errors, every realserver served, each saw the client's
#       own address, and ringvs forwarded only the client's half (outgoing packets 0);
#   a 1 MiB download from the realservers is intact (replies bypass the director);
#   UDP round-trips: 100 datagrams to 10.77.100.100:5354, all answered from the virtual
#       address, by every realserver;
#   an upload of full-size segments: 1500-byte packets do not fit the 1500-byte path with 20
#       more bytes, so the client gets ICMP fragmentation-needed (1480) from ringvs, lowers
#       its path MTU and the upload completes;
#   ringvs stops cleanly;
#   the same service with tunnel = "gue": requests answered by every realserver, the
#       realservers received them as UDP (GUE port 6080), a 1 MiB download intact.
#
#   bash examples/lab/test-tun.sh                    (as root; bounded to about a minute)
#   SELFTEST_BREAK=1 bash examples/lab/test-tun.sh   (realservers do not decapsulate: must FAIL)
#
# Environment: RINGVS, RVS_LAB, LAB_DIR.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds curl nginx iperf3 wrk ethtool "$PYTHON"
ringvs_check_binary || exit 1

PASSES=0 FAILS=0
VERDICT_WIDTH=40 # verdict and arith: lib.sh
PORT=8080
GUE_PORT=6080
ECHO_PORT=5354
DECAP_MODE=""

# tunl0_up N: realserver N takes IPIP packets for the virtual address on tunl0.
tunl0_up() {
    local ns=rs$1 d=$LAB_DIR/rs$1
    if in_ns "$ns" ip link show tunl0 >/dev/null 2>&1; then
        DECAP_MODE=kernel
        in_ns "$ns" ip fou add port "$GUE_PORT" gue || die "ip fou add port $GUE_PORT gue failed in $(ns_name "$ns")"
    else
        DECAP_MODE=userspace
        if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
            ip netns exec "$(ns_name "$ns")" "$PYTHON" "$LAB_SRC/ipip_decap.py" --dev tunl0 \
                --gue-port "$GUE_PORT" --pidfile "$d/ipip_decap.pid" </dev/null >"$d/ipip_decap.log" 2>&1 &
        else
            # The self-test: a tunl0 that nobody feeds.
            in_ns "$ns" ip tuntap add dev tunl0 mode tun
        fi
        wait_until 5 in_ns "$ns" ip link show tunl0 || die "tunl0 did not appear in $(ns_name "$ns")"
    fi
    in_ns "$ns" ip addr add "$VIP/32" dev tunl0
    in_ns "$ns" ip link set tunl0 up
    # The inner packets come from the client on tunl0, the replies leave by eth0.
    ns_sysctl "$ns" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.tunl0.rp_filter=0
    vip_echo_up "$1" "$VIP" "$ECHO_PORT" || die "the UDP echo on rs$1 did not bind $VIP:$ECHO_PORT"
    # The client's upload must keep full-size segments (no TSO or checksum offload on the
    # way to the director: see tun.toml).
    in_ns cli ethtool -K cli0 tx off >/dev/null 2>&1 || true
}

lab_trap
lab_up
start_servers
for ((i = 1; i <= RS_COUNT; i++)); do tunl0_up "$i"; done
log "realservers decapsulate IPIP in the $DECAP_MODE"
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then log "SELFTEST_BREAK: nothing decapsulates; the test must fail"; fi

CONF=$LAB_SRC/tun.toml fwd_up ringvs || die "ringvs did not come up"
# Replies from the virtual address bypass ringvs (before the lab's rule into ringvs0).
in_ns dir ip rule add iif "$RS_IF" from "$VIP" lookup main pref 999
verdict 0 "ringvs up" "pid $RINGVS_PID, config $LAB_SRC/tun.toml"

forwards=$(web_json "' '.join(d['forward'] for d in s['servers'])")
src=$(grep -o 'tunnel_source[^,]*' "$LAB_DIR/ringvs.log" | tail -n 1 || true)
verdict "$([[ $forwards == "Tunnel Tunnel Tunnel" ]] && echo 0 || echo 1)" "list: Tunnel per realserver" \
    "forward: ${forwards:-?}; ${src:-tunnel source not logged}"

# New connections, one per request.
http_close_check tun-close "http through the tunnel" "$PORT"

IN="" OUT=""
one_way() {
    IN=$(metric ringvs_incoming_packets_total || true)
    OUT=$(metric ringvs_outgoing_packets_total || true)
    [[ $IN =~ ^[0-9]+$ && $OUT =~ ^[0-9]+$ ]] && ((IN > WRK_REQUESTS && OUT == 0))
}
ok=0
wait_until 5 one_way || ok=1
verdict "$ok" "replies bypass the director" "ringvs incoming packets ${IN:-?}, outgoing ${OUT:-?} (want > requests, 0)"

# Replies straight from the realservers: a 1 MiB download.
download_check "1 MiB download intact" "$PORT"

udp_roundtrip_check "udp round-trips through the tunnel" "$VIP" "$ECHO_PORT"

# Full-size segments from the client: too big for the tunnel, the client learns 1480.
head -c 262144 /dev/urandom >"$LAB_DIR/tun-up.bin"
in_ns cli ip route flush cache 2>/dev/null || true
code=$(ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 20 -H 'Expect:' \
    --data-binary @"$LAB_DIR/tun-up.bin" -o /dev/null -w '%{http_code}' \
    "http://$VIP:$PORT/upload" 2>>"$LAB_DIR/curl.err") || code=000
# The exported counters are refreshed once a second.
too_big=""
some_too_big() {
    too_big=$(metric ringvs_tunnel_too_big_total || true)
    [[ $too_big =~ ^[0-9]+$ ]] && ((too_big > 0))
}
wait_until 5 some_too_big || true
pmtu=$(in_ns cli ip route get "$VIP" 2>/dev/null | grep -o 'mtu [0-9]*' || true)
verdict "$([[ $code == 200 && $too_big =~ ^[0-9]+$ ]] && ((too_big > 0)) && [[ $pmtu == "mtu 1480" ]] && echo 0 || echo 1)" \
    "too big: fragmentation-needed" "upload of 256 KiB: HTTP $code; ringvs_tunnel_too_big_total ${too_big:-absent}; client's route to the VIP: ${pmtu:-no mtu learned}"

fwd_down
verdict "$([[ $RINGVS_EXIT == "exit 0" ]] && echo 0 || echo 1)" "clean stop on SIGTERM" "$RINGVS_EXIT"

# GUE: the same service, UDP to port 6080 and a GUE header in front of the client's packet.
udp_in() { # udp_in N: UDP datagrams realserver N's kernel delivered
    in_ns "rs$1" cat /proc/net/snmp | awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ { print $2; exit }'
}
gue_conf=$LAB_DIR/tun-gue.toml
sed -e "s/^forward = \"tun\"$/forward = \"tun\"\ntunnel = \"gue\"\ntunnel_port = $GUE_PORT/" "$LAB_SRC/tun.toml" >"$gue_conf"
grep -q '^tunnel = "gue"$' "$gue_conf" || die "could not make $gue_conf"
declare -a UDP0
for ((i = 1; i <= RS_COUNT; i++)); do UDP0[i]=$(udp_in "$i"); done
CONF=$gue_conf fwd_up ringvs || die "ringvs (GUE) did not come up"
in_ns dir ip rule add iif "$RS_IF" from "$VIP" lookup main pref 999 2>/dev/null || true
hits_baseline
ok_codes=0
for ((r = 0; r < 30; r++)); do
    code=$(ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 5 -o /dev/null \
        -w '%{http_code}' "http://$VIP:$PORT/" 2>>"$LAB_DIR/curl.err") || code=000
    if [[ $code == 200 ]]; then ok_codes=$((ok_codes + 1)); fi
done
count_hits 'GET /index.html '
gue_in="" ok=0
for ((i = 1; i <= RS_COUNT; i++)); do
    n=$(($(udp_in "$i") - UDP0[i]))
    gue_in+="${gue_in:+ }rs$i=$n"
    ((HITS[i] > 0 && n >= 3 * HITS[i])) || ok=1
done
((ok_codes == 30)) || ok=1
verdict "$ok" "gue: http through the tunnel" "$ok_codes/30 answered; served $HITS_SPREAD; UDP datagrams received by the realservers: $gue_in (want >= 3 per request)"
download_check "gue: 1 MiB download intact" "$PORT"
fwd_down
vip_echo_down
for ((i = 1; i <= RS_COUNT; i++)); do
    pid=$(cat "$LAB_DIR/rs$i/ipip_decap.pid" 2>/dev/null || true)
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
done

echo
if ((FAILS > 0)); then
    echo "test-tun: FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-tun: PASSED — $PASSES checks"
