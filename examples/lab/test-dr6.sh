#!/usr/bin/env bash
# LVS-DR over IPv6 (forward = "dr" on [fd77:100::100]:8080) end to end in the netns lab, with
# real nginx realservers (examples/lab/dr6.toml: rr over three realservers, two queues, the
# same service over IPv4 beside it) and director.io = "af_xdp" (the switch topology: the
# director's drs is on the realservers' segment). Each realserver holds the virtual address on
# lo (an IPv6 address on lo is never advertised on eth0: Linux answers neighbour solicitations
# only for the receiving interface's own addresses); ringvs sends it the client's packet
# unchanged, in a frame to the MAC the kernel's neighbour discovery found; its replies leave
# from the virtual address by its default route and the director's kernel forwards them (the
# XDP program passes them: they are not from a realserver endpoint).
#
# Checks (each PASS/FAIL with its figures; the exit status is the verdict):
#   ringvs list shows [fd77:100::100]:8080 with each realserver forwarded by "Route";
#   the director's kernel learnt every realserver's MAC by neighbour discovery;
#   http spread: 30 requests with Connection: close, each answered, every realserver answering
#       some, each seeing the client's own IPv6 address;
#   wrk (Connection: close, 4 s): no socket errors, no non-2xx;
#   replies bypass the director: ringvs counted incoming packets only (outgoing 0), and the
#       AF_XDP queues sent at least as many frames as ringvs forwarded in;
#   a 1 MiB download intact (sha256);
#   UDP round-trips: 100 datagrams to [fd77:100::100]:5354, all answered from the virtual
#       address, by every realserver;
#   IPv4 beside it: the IPv4 service answers through the same programs and queues;
#   NAT66 beside it, on the same backend ([fd77:100::100]:80 to the realservers' :8080): 30
#       requests spread over every realserver, which saw the client's own address, a 1 MiB
#       download intact, and ringvs carried the replies (outgoing packets > 0);
#   ringvs stops cleanly and detaches its XDP programs.
#
#   bash examples/lab/test-dr6.sh                    (as root; bounded to about a minute)
#   SELFTEST_BREAK=1 bash examples/lab/test-dr6.sh   (realservers without the VIP6: must FAIL)
#
# Environment: RINGVS, RVS_LAB (default d6), LAB_DIR.
set -euo pipefail
RVS_LAB=${RVS_LAB:-d6}
LAB_IPV6=1
LAB_IO=af_xdp
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CONF=$LAB_SRC/dr6.toml
require_root
require_cmds curl nginx wrk ethtool "$PYTHON"
ringvs_check_binary || exit 1

PASSES=0 FAILS=0
VERDICT_WIDTH=40 # verdict and arith: lib.sh
PORT=8080
ECHO_PORT=5354

# vip_on_lo N: realserver N takes packets for both virtual addresses (IPv4 quiet about it, as
# test-dr.sh), and echoes UDP on the IPv6 one (SELFTEST_BREAK: it cannot bind, and logs why).
vip_on_lo() {
    local ns=rs$1
    ns_sysctl "$ns" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    in_ns "$ns" ip addr add "$VIP/32" dev lo
    if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
        in_ns "$ns" ip -6 addr add "$VIP6/128" dev lo nodad
    fi
    vip_echo_up "$1" "$VIP6" "$ECHO_PORT" || [[ ${SELFTEST_BREAK:-0} == 1 ]] ||
        die "the UDP echo on rs$1 did not bind [$VIP6]:$ECHO_PORT"
}

lab_trap
lab_up
lab_up_ipv6
start_servers
for ((i = 1; i <= RS_COUNT; i++)); do vip_on_lo "$i"; done
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then log "SELFTEST_BREAK: no realserver holds the VIP6; the test must fail"; fi

fwd_up ringvs || die "ringvs did not come up"
verdict 0 "ringvs up" "pid $RINGVS_PID, config $CONF, AF_XDP on dcli and $RS_IF"

list=$(ringvs_cli list 2>&1 || true)
printf '%s\n' "$list" >"$LAB_DIR/list-dr6.txt"
routes=$(grep -cE "^ *-> \[fd77:1::[123]\]:8080 +Route" <<<"$list" || true)
verdict "$(ok_when '[[ $list =~ TCP\ +\[fd77:100::100\]:8080\ +rr ]] && ((routes == 3))')" \
    "list: [VIP6]:8080, Route per realserver" "$routes Route realservers listed"

# The realservers were resolved before the program was attached (neighbour discovery by the
# director's kernel, asked by ringvs).
neigh=""
all_resolved() {
    neigh=$(in_ns dir ip -6 neigh show dev "$RS_IF" 2>/dev/null | grep -E '^fd77:1::[123] .*lladdr' || true)
    (($(grep -c . <<<"$neigh") == RS_COUNT))
}
ok=0
wait_until 5 all_resolved || ok=1
verdict "$ok" "neighbour discovery: every realserver" "$(grep -c . <<<"$neigh") of $RS_COUNT realservers with a MAC on $RS_IF"

http_spread "http by direct routing over IPv6"

out=$LAB_DIR/wrk-dr6.txt rc=0
ip netns exec "$(ns_name cli)" timeout 30 wrk --timeout 2s -d 4s -c 16 -t 2 -H "Connection: close" \
    "http://[$VIP6]:$PORT/" </dev/null >"$out" 2>&1 &
wait $! || rc=$?
wrk_parse dr6 "$out" "$rc" || true
verdict "$(ok_when '[[ -n $WRK_REQUESTS ]] && ((WRK_REQUESTS > 100 && WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0))')" \
    "wrk: new connections over IPv6" \
    "${WRK_REQUESTS:-?} requests, ${WRK_RPS:-?}/s, socket errors ${WRK_SOCK_ERRORS:-?}, non-2xx ${WRK_NON2XX:-?}"

IN="" OUT="" TX=""
one_way() {
    local body
    body=$(in_ns dir curl -s --max-time 5 "http://127.0.0.1:9406/metrics") || return 1
    IN=$(awk '$1 == "ringvs_incoming_packets_total" { print $2 }' <<<"$body")
    OUT=$(awk '$1 == "ringvs_outgoing_packets_total" { print $2 }' <<<"$body")
    TX=$(awk '$1 ~ /^ringvs_io_packets_total[{].*direction="tx"/ { s += $2 } END { printf "%d", s }' <<<"$body")
    [[ $IN =~ ^[0-9]+$ && $OUT =~ ^[0-9]+$ ]] && ((${WRK_REQUESTS:-0} > 0 && IN > WRK_REQUESTS && OUT == 0 && TX >= IN))
}
ok=0
wait_until 5 one_way || ok=1
verdict "$ok" "replies bypass the director" \
    "ringvs incoming packets ${IN:-?}, outgoing ${OUT:-?}; AF_XDP frames sent ${TX:-?} (want incoming > requests, outgoing 0, sent >= incoming)"

download6 "1 MiB download intact over IPv6"

udp_roundtrip_check "udp round-trips by direct routing" "[$VIP6]" "$ECHO_PORT"

body=$(ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 10 -H 'Connection: close' \
    "http://$VIP:$PORT/" 2>>"$LAB_DIR/curl.err" || true)
verdict "$(ok_when '[[ $body == *"<h1>rs"* ]]')" "IPv4 beside it" "http://$VIP:$PORT/: $(grep -o '<h1>rs[0-9]</h1>' <<<"$body" || echo 'no answer')"

# NAT66 through the same XDP programs: the replies come back to ringvs.
PORT=80
http_spread "NAT66 beside it"
out0=$(metric ringvs_outgoing_packets_total || echo 0)
download6 "NAT66: 1 MiB download intact"
out1=""
replies_counted() {
    out1=$(metric ringvs_outgoing_packets_total || true)
    [[ $out1 =~ ^[0-9]+$ ]] && ((out1 > ${out0:-0}))
}
ok=0
wait_until 5 replies_counted || ok=1
verdict "$ok" "NAT66: replies through ringvs" "ringvs outgoing packets ${out0:-?} → ${out1:-?}"
PORT=8080

fwd_down
ok=0
[[ $RINGVS_EXIT == "exit 0" ]] || ok=1
xdp_detached || ok=1
verdict "$ok" "clean stop, XDP detached" "$RINGVS_EXIT"

vip_echo_down

echo
if ((FAILS > 0)); then
    echo "test-dr6: FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-dr6: PASSED — $PASSES checks"
