#!/usr/bin/env bash
# LVS-DR (forward = "dr") end to end in the netns lab, with real nginx realservers
# (examples/lab/dr.toml: rr over three realservers, two queues) and director.io = "af_xdp"
# (the switch topology: the director's drs is on the realservers' segment). Each realserver
# holds the virtual address on lo and does not answer ARP for it (arp_ignore = 1,
# arp_announce = 2, as LVS-DR realservers are set up); ringvs sends it the client's packet
# unchanged, in a frame to its MAC; its replies leave from the virtual address by its default
# route and the director's kernel forwards them (the XDP program passes them: they are not
# from a realserver endpoint).
#
# Checks (each PASS/FAIL with its figures; the exit status is the verdict):
#   ringvs list shows each realserver forwarded by "Route";
#   wrk (Connection: close, 5 s): no errors, every realserver served, each saw the client's
#       own address, and ringvs forwarded only the client's half (outgoing packets 0; the AF_XDP
#       queues sent as many packets as ringvs forwarded in);
#   a 1 MiB download from the realservers is intact;
#   UDP round-trips: 100 datagrams to 10.77.100.100:5354, all answered from the virtual
#       address, by every realserver;
#   ringvs stops cleanly and detaches its XDP programs.
#
#   bash examples/lab/test-dr.sh                    (as root; bounded to about a minute)
#   SELFTEST_BREAK=1 bash examples/lab/test-dr.sh   (realservers without the VIP: must FAIL)
#
# Environment: RINGVS, RVS_LAB, LAB_DIR.
set -euo pipefail
LAB_IO=af_xdp
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds curl nginx iperf3 wrk "$PYTHON"
ringvs_check_binary || exit 1

PASSES=0 FAILS=0
VERDICT_WIDTH=40 # verdict and arith: lib.sh
PORT=8080
ECHO_PORT=5354

# vip_on_lo N: realserver N takes packets for the virtual address, and keeps quiet about it.
vip_on_lo() {
    local ns=rs$1
    ns_sysctl "$ns" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
        in_ns "$ns" ip addr add "$VIP/32" dev lo
    fi
    # An echo bound to the virtual address answers from it (SELFTEST_BREAK: it cannot bind).
    vip_echo_up "$1" "$VIP" "$ECHO_PORT" || [[ ${SELFTEST_BREAK:-0} == 1 ]] ||
        die "the UDP echo on rs$1 did not bind $VIP:$ECHO_PORT"
}

lab_trap
lab_up
start_servers
for ((i = 1; i <= RS_COUNT; i++)); do vip_on_lo "$i"; done
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then log "SELFTEST_BREAK: no realserver holds the VIP; the test must fail"; fi

CONF=$LAB_SRC/dr.toml fwd_up ringvs || die "ringvs did not come up"
verdict 0 "ringvs up" "pid $RINGVS_PID, config $LAB_SRC/dr.toml, AF_XDP on dcli and $RS_IF"

forwards=$(web_json "' '.join(d['forward'] for d in s['servers'])")
verdict "$([[ $forwards == "Route Route Route" ]] && echo 0 || echo 1)" "list: Route per realserver" "forward: ${forwards:-?}"

http_close_check dr-close "http by direct routing" "$PORT"

IN="" OUT="" TX=""
one_way() {
    local body
    body=$(in_ns dir curl -s --max-time 5 "http://127.0.0.1:9406/metrics") || return 1
    IN=$(awk '$1 == "ringvs_incoming_packets_total" { print $2 }' <<<"$body")
    OUT=$(awk '$1 == "ringvs_outgoing_packets_total" { print $2 }' <<<"$body")
    TX=$(awk '$1 ~ /^ringvs_io_packets_total[{].*direction="tx"/ { s += $2 } END { printf "%d", s }' <<<"$body")
    [[ $IN =~ ^[0-9]+$ && $OUT =~ ^[0-9]+$ ]] && ((IN > ${WRK_REQUESTS:-0} && OUT == 0 && TX >= IN))
}
ok=0
wait_until 5 one_way || ok=1
verdict "$ok" "replies bypass the director" \
    "ringvs incoming packets ${IN:-?}, outgoing ${OUT:-?}; AF_XDP frames sent ${TX:-?} (want incoming > requests, outgoing 0, sent >= incoming)"

download_check "1 MiB download intact" "$PORT"

udp_roundtrip_check "udp round-trips by direct routing" "$VIP" "$ECHO_PORT"

vip_echo_down
fwd_down
ok=0
[[ $RINGVS_EXIT == "exit 0" ]] || ok=1
xdp_detached || ok=1
verdict "$ok" "clean stop, XDP detached" "$RINGVS_EXIT"

echo
if ((FAILS > 0)); then
    echo "test-dr: FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-dr: PASSED — $PASSES checks"
