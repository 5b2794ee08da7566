#!/usr/bin/env bash
# LVS-TUN over IPv6 (forward = "tun": IPv6-in-IPv6, then GUE over IPv6) end to end in the netns
# lab, with real nginx realservers (examples/lab/tun6.toml: rr over three realservers, two
# queues). Each realserver holds the virtual address fd77:100::100 on tunl0 and decapsulates:
# the lab kernel has no ip6_tunnel or fou module, so examples/lab/ipip_decap.py --ipv6 does it
# (a raw IPv6 socket of next header 41 and a GUE socket on port 6080, independent of ringvs's
# encoder). Replies go to the client directly: an ip -6 rule in the director's namespace
# routes packets from the virtual address past ringvs, as a realserver's own gateway would.
#
# Checks (each PASS/FAIL with its figures; the exit status is the verdict):
#   ringvs list shows [fd77:100::100]:8080 with each realserver forwarded by "Tunnel", and
#       ringvs found an IPv6 tunnel source;
#   http spread: 30 requests with Connection: close, each answered, every realserver answering
#       some, each seeing the client's own address;
#   wrk (Connection: close, 4 s): no socket errors, no non-2xx;
#   replies bypass the director: ringvs counted incoming packets only (outgoing 0);
#   a 1 MiB download intact (sha256);
#   UDP round-trips: 100 datagrams to [fd77:100::100]:5354, all answered from the virtual
#       address, by every realserver;
#   an upload of full-size segments: a 1500-byte packet does not fit the 1500-byte path with
#       40 more bytes, so the client gets ICMPv6 packet-too-big (1460) from ringvs, lowers its
#       path MTU and the upload completes;
#   ringvs stops cleanly;
#   GUE over IPv6 (tunnel = "gue"): requests answered by every realserver, which received them
#       as UDP over IPv6 (port 6080, the kernel checked each UDP checksum), a 1 MiB download
#       intact;
#   mixed families: 4in6 (the IPv4 VIP to the IPv6 realservers) and 6in4 (the IPv6 VIP to the
#       IPv4 ones): http spread with the client's address kept, a 1 MiB download, no packet
#       out of ringvs.
#
#   bash examples/lab/test-tun6.sh                    (as root; bounded to about a minute)
#   SELFTEST_BREAK=1 bash examples/lab/test-tun6.sh   (realservers do not decapsulate: must FAIL)
#
# Environment: RINGVS, RVS_LAB (default t6), LAB_DIR.
set -euo pipefail
RVS_LAB=${RVS_LAB:-t6}
LAB_IPV6=1
LAB_TOPO=bridge
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CONF=$LAB_SRC/tun6.toml
require_root
require_cmds curl nginx wrk ethtool "$PYTHON"
ringvs_check_binary || exit 1

PASSES=0 FAILS=0
VERDICT_WIDTH=40 # verdict and arith: lib.sh
PORT=8080
ECHO_PORT=5354
GUE_PORT=6080

# tunl0_up6 N: realserver N takes IPv6-in-IPv6 and GUE for the virtual address on tunl0, and
# echoes UDP on the virtual address.
tunl0_up6() {
    local ns=rs$1 d=$LAB_DIR/rs$1
    if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
        ip netns exec "$(ns_name "$ns")" "$PYTHON" "$LAB_SRC/ipip_decap.py" --dev tunl0 --ipv6 \
            --gue-port "$GUE_PORT" --pidfile "$d/ipip_decap.pid" </dev/null >"$d/ipip_decap.log" 2>&1 &
    else
        # The self-test: a tunl0 that nobody feeds.
        in_ns "$ns" ip tuntap add dev tunl0 mode tun
    fi
    wait_until 5 in_ns "$ns" ip link show tunl0 || die "tunl0 did not appear in $(ns_name "$ns")"
    ns_sysctl "$ns" net.ipv6.conf.tunl0.disable_ipv6=0
    in_ns "$ns" ip -6 addr add "$VIP6/128" dev tunl0 nodad
    # The IPv4 address too, for the mixed-family phase (IPv4 inside IPv6).
    in_ns "$ns" ip addr add "$VIP/32" dev tunl0
    in_ns "$ns" ip link set tunl0 up
    ns_sysctl "$ns" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.tunl0.rp_filter=0
    vip_echo_up "$1" "$VIP6" "$ECHO_PORT" || die "the UDP echo on rs$1 did not bind [$VIP6]:$ECHO_PORT"
    # The client's upload must keep full-size segments (no TSO or checksum offload on the
    # way to the director: see tun6.toml).
    in_ns cli ethtool -K cli0 tx off >/dev/null 2>&1 || true
}

# The service's address as a URL's host and the client's address the realservers must see:
# IPv6 unless a mixed-family phase changes them (curl6, http_spread, download6: lib.sh).
URL_HOST="[$VIP6]" CLIENT=$CLI_IP6

# mixed_conf VIP RS...: tun6.toml's director with one tunnelled web service.
mixed_conf() {
    local vip=$1 rs
    shift
    sed -n '/^\[\[service\]\]/q;p' "$LAB_SRC/tun6.toml"
    printf '[[service]]\nname = "web"\nvip = "%s"\nforward = "tun"\nscheduler = "rr"\n' "$vip"
    for rs in "$@"; do printf '\n[[service.server]]\naddr = "%s"\n' "$rs"; done
}

# mixed_phase LABEL CONF: a mixed-family tunnel's traffic checks.
mixed_phase() {
    local label=$1 conf=$2 in out
    CONF=$conf fwd_up ringvs || die "ringvs ($label) did not come up"
    manual_routes6_add || die "the manual IPv6 routing recipe failed"
    bypass_rule
    in_ns dir ip rule add iif "$RS_IF" from "$VIP" lookup main pref 999 2>/dev/null || true
    http_spread "$label: http through the tunnel"
    download6 "$label: 1 MiB download intact"
    sleep 1.2 # the exported counters are refreshed once a second
    in=$(metric ringvs_incoming_packets_total || true)
    out=$(metric ringvs_outgoing_packets_total || true)
    verdict "$(ok_when '[[ $in =~ ^[0-9]+$ && $out == 0 ]] && ((in > 30))')" "$label: replies bypass the director" \
        "ringvs incoming packets ${in:-?}, outgoing ${out:-?}"
    fwd_down
}

bypass_rule() { # replies from the virtual address go past ringvs
    in_ns dir ip -6 rule add iif "$RS_IF" from "$VIP6" lookup main pref 999 2>/dev/null || true
}

lab_trap
lab_up
lab_up_ipv6
start_servers
for ((i = 1; i <= RS_COUNT; i++)); do tunl0_up6 "$i"; done
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then log "SELFTEST_BREAK: nothing decapsulates; the test must fail"; fi

fwd_up ringvs || die "ringvs did not come up"
manual_routes6_add || die "the manual IPv6 routing recipe failed"
bypass_rule
verdict 0 "ringvs up" "pid $RINGVS_PID, config $CONF"
verdict "$(ok_if wait_until 5 ringvs_routes6_ok)" "VIP6 routed into ringvs" \
    "$(in_ns dir ip -6 route get "$VIP6" 2>&1 | sed -n 1p)"

list=$(ringvs_cli list 2>&1 || true)
printf '%s\n' "$list" >"$LAB_DIR/list-tun6.txt"
tunnels=$(grep -cE "^ *-> \[fd77:1::[123]\]:8080 +Tunnel" <<<"$list" || true)
src=$(grep -o 'tunnel_source6[^,]*' "$LAB_DIR/ringvs.log" | tail -n 1 || true)
verdict "$(ok_when '[[ $list =~ TCP\ +\[fd77:100::100\]:8080\ +rr ]] && ((tunnels == 3)) && [[ $src == *fd77:1::fe* ]]')" \
    "list: [VIP6]:8080, Tunnel per realserver" "$tunnels Tunnel realservers listed; ${src:-IPv6 tunnel source not logged}"

http_spread "http through the IPv6 tunnel"

out=$LAB_DIR/wrk-tun6.txt rc=0
ip netns exec "$(ns_name cli)" timeout 30 wrk --timeout 2s -d 4s -c 16 -t 2 -H "Connection: close" \
    "http://[$VIP6]:$PORT/" </dev/null >"$out" 2>&1 &
wait $! || rc=$?
wrk_parse tun6 "$out" "$rc" || true
verdict "$(ok_when '[[ -n $WRK_REQUESTS ]] && ((WRK_REQUESTS > 100 && WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0))')" \
    "wrk: new connections through the tunnel" \
    "${WRK_REQUESTS:-?} requests, ${WRK_RPS:-?}/s, socket errors ${WRK_SOCK_ERRORS:-?}, non-2xx ${WRK_NON2XX:-?}"

IN="" OUT=""
one_way() {
    IN=$(metric ringvs_incoming_packets_total || true)
    OUT=$(metric ringvs_outgoing_packets_total || true)
    [[ $IN =~ ^[0-9]+$ && $OUT =~ ^[0-9]+$ ]] && ((${WRK_REQUESTS:-0} > 0 && IN > WRK_REQUESTS && OUT == 0))
}
ok=0
wait_until 5 one_way || ok=1
verdict "$ok" "replies bypass the director" "ringvs incoming packets ${IN:-?}, outgoing ${OUT:-?} (want > requests, 0)"

download6 "1 MiB download intact"

udp_roundtrip_check "udp round-trips through the tunnel" "[$VIP6]" "$ECHO_PORT"

# Full-size segments from the client: too big for the tunnel, the client learns 1460.
head -c 262144 /dev/urandom >"$LAB_DIR/tun6-up.bin"
in_ns cli ip -6 route flush cache 2>/dev/null || true
code=$(curl6 /upload -H 'Expect:' --data-binary @"$LAB_DIR/tun6-up.bin" -o /dev/null \
    -w '%{http_code}' 2>>"$LAB_DIR/curl.err") || code=000
too_big=""
some_too_big() {
    too_big=$(metric ringvs_tunnel_too_big_total || true)
    [[ $too_big =~ ^[0-9]+$ ]] && ((too_big > 0))
}
wait_until 5 some_too_big || true
pmtu=$(in_ns cli ip -6 route get "$VIP6" 2>/dev/null | grep -o 'mtu [0-9]*' || true)
verdict "$(ok_when '[[ $code == 200 && $too_big =~ ^[0-9]+$ && $pmtu == "mtu 1460" ]] && ((too_big > 0))')" \
    "too big: packet-too-big" "upload of 256 KiB: HTTP $code; ringvs_tunnel_too_big_total ${too_big:-absent}; client's route to the VIP: ${pmtu:-no mtu learned}"

fwd_down
verdict "$(ok_when '[[ $RINGVS_EXIT == "exit 0" ]]')" "clean stop on SIGTERM" "$RINGVS_EXIT"

# GUE over IPv6: the same services, UDP to port 6080 and a GUE header in front.
udp6_in() { # udp6_in N: UDP datagrams over IPv6 realserver N's kernel delivered
    in_ns "rs$1" awk '$1 == "Udp6InDatagrams" { print $2 }' /proc/net/snmp6
}
gue_conf=$LAB_DIR/tun6-gue.toml
sed -e "s/^forward = \"tun\"$/forward = \"tun\"\ntunnel = \"gue\"\ntunnel_port = $GUE_PORT/" "$CONF" >"$gue_conf"
grep -q '^tunnel = "gue"$' "$gue_conf" || die "could not make $gue_conf"
declare -a UDP0
for ((i = 1; i <= RS_COUNT; i++)); do UDP0[i]=$(udp6_in "$i"); done
CONF=$gue_conf fwd_up ringvs || die "ringvs (GUE) did not come up"
manual_routes6_add || die "the manual IPv6 routing recipe failed"
bypass_rule
hits_baseline
ok_codes=0
for ((r = 0; r < 30; r++)); do
    code=$(curl6 / -o /dev/null -w '%{http_code}' 2>>"$LAB_DIR/curl.err") || code=000
    if [[ $code == 200 ]]; then ok_codes=$((ok_codes + 1)); fi
done
count_hits 'GET /index.html '
gue_in="" ok=0
for ((i = 1; i <= RS_COUNT; i++)); do
    n=$(($(udp6_in "$i") - UDP0[i]))
    gue_in+="${gue_in:+ }rs$i=$n"
    ((HITS[i] > 0 && n >= 3 * HITS[i])) || ok=1
done
((ok_codes == 30)) || ok=1
verdict "$ok" "gue6: http through the tunnel" "$ok_codes/30 answered; served $HITS_SPREAD; UDP/IPv6 datagrams received by the realservers: $gue_in (want >= 3 per request)"
download6 "gue6: 1 MiB download intact"
fwd_down

# Mixed families (IPVS since Linux 5.3): IPv4 clients to IPv6 realservers (IPv4 inside IPv6),
# then IPv6 clients to IPv4 realservers (IPv6 inside IPv4).
mixed_conf "$VIP:$PORT" "${RS_IPS6[@]}" >"$LAB_DIR/tun46.toml"
URL_HOST=$VIP CLIENT=$CLI_IP
mixed_phase "4in6" "$LAB_DIR/tun46.toml"
mixed_conf "[$VIP6]:$PORT" "${RS_IPS[@]}" >"$LAB_DIR/tun64.toml"
URL_HOST="[$VIP6]" CLIENT=$CLI_IP6
mixed_phase "6in4" "$LAB_DIR/tun64.toml"

vip_echo_down
for ((i = 1; i <= RS_COUNT; i++)); do
    pid=$(cat "$LAB_DIR/rs$i/ipip_decap.pid" 2>/dev/null || true)
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
done

echo
if ((FAILS > 0)); then
    echo "test-tun6: FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-tun6: PASSED — $PASSES checks"
