#!/usr/bin/env bash
# NAT66 in the netns lab: IPv6 services beside an IPv4 one (examples/lab/nat6.toml, two queues:
# the steering program keys IPv6 clients too), real nginx and a UDP echo on three realservers,
# curl, wrk and UDP probes from the client. Prints every check as PASS/FAIL with its figures;
# the exit status is the verdict.
#
#   sudo bash examples/lab/test-nat6.sh
#
# For each of ROUTES=manual (the documented `ip -6` recipe) and ROUTES=auto (ringvs installs
# the IPv6 routes itself):
#   http spread: 30 requests with Connection: close to http://[fd77:100::100]/, each answered,
#       every realserver answering some;
#   client address: the realservers' access logs show the client's own IPv6 address (NAT66,
#       no SNAT);
#   wrk keep-alive: 4 s of wrk over IPv6, zero socket errors, zero non-2xx;
#   1 MiB download: byte-identical (sha256) over IPv6;
#   udp: 200 datagrams to [fd77:100::100]:53, each from its own socket, all answered, by >= 2
#       realservers;
#   IPv4 beside it: a request to the IPv4 VIP is answered (both tables in one queue);
#   ringvs list: the service shows as `TCP  [fd77:100::100]:80 wlc` with `Masq` servers;
#   the traffic went through ringvs (its IPv6 table held the connections: `ringvs list`
#       counted them) and the director's conntrack stayed empty;
# and with auto routes, the IPv6 routes exist while ringvs runs and are gone after it stops.
#
# Environment: RVS_LAB (default r6), LAB_DIR, RINGVS, SELFTEST_BREAK=1 (stop rs3's nginx
# before the spread check: the test must then fail).
set -euo pipefail
RVS_LAB=${RVS_LAB:-r6}
LAB_IPV6=1
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CONF=$LAB_SRC/nat6.toml
LAB_TOPO=bridge
require_root
require_cmds wrk curl nginx
ringvs_check_binary || {
    echo "FAIL  ringvs binary present: $RINGVS"
    exit 1
}

lab_trap
lab_up
lab_up_ipv6
start_servers

# curl6 PATH ARGS...: curl from the client to the IPv6 VIP.
curl6() {
    local path=$1
    shift
    ip netns exec "$(ns_name cli)" curl -sS -g --connect-timeout 3 --max-time 20 "$@" "http://[$VIP6]$path"
}

# routes6_gone: no IPv6 route to VIP6 through the device, no IPv6 rule for the reply table.
routes6_gone() {
    ! in_ns dir ip -6 route show 2>/dev/null | grep -q "$VIP6" &&
        ! in_ns dir ip -6 rule show 2>/dev/null | grep -q "lookup $RVS_TABLE"
}

run_checks() {
    local mode=$1 i body served="" n_served lines
    ROUTES=$mode
    fwd_up ringvs || die "ringvs did not come up ($mode routes)"
    if [[ $mode == manual ]]; then
        manual_routes6_add || die "the manual IPv6 routing recipe failed"
    fi
    verdict "$(ok_if wait_until 5 ringvs_routes6_ok)" "$mode: VIP6 and IPv6 replies routed" \
        "$(in_ns dir ip -6 route get "$VIP6" 2>&1 | head -n 1)"
    if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then stop_nginx 3; fi
    # Each run counts its own access-log lines (nginx appends: truncating keeps its file).
    for i in $(seq 1 "$RS_COUNT"); do : >"$LAB_DIR/rs$i/access.log"; done

    # http spread, Connection: close
    local answered=0
    declare -A by_rs=()
    for ((i = 0; i < 30; i++)); do
        body=$(curl6 / -H 'Connection: close' 2>>"$LAB_DIR/curl.err") || continue
        if [[ $body =~ \<h1\>(rs[0-9])\</h1\> ]]; then
            answered=$((answered + 1))
            by_rs[${BASH_REMATCH[1]}]=$((${by_rs[${BASH_REMATCH[1]}]:-0} + 1))
        fi
    done
    for i in $(printf '%s\n' "${!by_rs[@]}" | sort); do served+="$i=${by_rs[$i]} "; done
    n_served=${#by_rs[@]}
    verdict "$(arith "answered == 30 && n_served == RS_COUNT")" "$mode: http spread over IPv6" \
        "$answered/30 answered, ${served:-none}"

    # the client's own address reached the realservers
    lines=$(cat "$LAB_DIR"/rs*/access.log 2>/dev/null | grep -c "^$CLI_IP6 " || true)
    # ... and only from it: no line from another address (the director's, were it SNAT).
    local others
    others=$(cat "$LAB_DIR"/rs*/access.log 2>/dev/null | grep -vc "^$CLI_IP6 " || true)
    verdict "$(arith "lines >= 30 && others == 0")" "$mode: client address kept (no SNAT)" \
        "$lines access-log lines from $CLI_IP6, $others from elsewhere"

    # wrk keep-alive over IPv6
    local out=$LAB_DIR/wrk6-$mode.txt rc=0
    ip netns exec "$(ns_name cli)" timeout 30 wrk --timeout 2s -d 4s -c 16 -t 2 "http://[$VIP6]/" \
        </dev/null >"$out" 2>&1 &
    wait $! || rc=$?
    wrk_parse "wrk6-$mode" "$out" "$rc" || true
    verdict "$(ok_when '[[ -n $WRK_REQUESTS ]] && ((WRK_REQUESTS > 0 && WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0))')" \
        "$mode: wrk keep-alive over IPv6" \
        "${WRK_REQUESTS:-?} requests, ${WRK_RPS:-?}/s, socket errors ${WRK_SOCK_ERRORS:-?}, non-2xx ${WRK_NON2XX:-?}"

    # 1 MiB intact
    local dl=$LAB_DIR/dl6.bin got
    rm -f "$dl"
    curl6 /1m.bin -o "$dl" 2>>"$LAB_DIR/curl.err" || true
    got=$(sha256sum "$dl" 2>/dev/null | cut -d' ' -f1 || true)
    verdict "$(ok_when '[[ $got == "$ONE_MIB_SHA" ]]')" "$mode: 1 MiB download over IPv6" \
        "sha256 ${got:0:12}… (want ${ONE_MIB_SHA:0:12}…)"

    # UDP
    local uout=$LAB_DIR/udp6-$mode.txt sent=0 ans=0 bad=0 spread=- nsrv=0
    ip netns exec "$(ns_name cli)" timeout 60 "$PYTHON" "$LAB_SRC/udp_probe.py" "[$VIP6]:53" \
        --count 200 </dev/null >"$uout" 2>&1 || true
    read -r sent ans bad spread <"$uout" || true
    if [[ ${spread:--} != - ]]; then nsrv=$(tr ',' '\n' <<<"$spread" | grep -c .); fi
    verdict "$(arith "${sent:-0} == 200 && ${ans:-0} == 200 && ${bad:-1} == 0 && nsrv >= 2")" \
        "$mode: udp over IPv6" "${ans:-0}/${sent:-0} answered, ${bad:-?} bad, $spread"

    # IPv4 beside it
    body=$(curl_vip / 2>>"$LAB_DIR/curl.err" || true)
    verdict "$(ok_when '[[ $body == *"<h1>rs"* ]]')" "$mode: IPv4 service beside it" \
        "${body:0:40}"

    # ringvs list: the IPv6 service as ipvsadm writes it, Masq servers
    local list
    list=$(ringvs_cli list 2>&1 || true)
    printf '%s\n' "$list" >"$LAB_DIR/list6-$mode.txt"
    local masq
    masq=$(grep -cE "^ *-> \[fd77:1::[123]\]:8080 +Masq" <<<"$list" || true)
    verdict "$(ok_when '[[ $list =~ TCP\ +\[fd77:100::100\]:80\ +wlc ]] && ((masq == 3))')" \
        "$mode: ringvs list shows [VIP6]:80" "$masq Masq realservers listed"

    # The connections were ringvs's (its table), not the kernel's.
    local conns
    conns=$(ringvs_cli list --connections 2>/dev/null | grep -c "\[$CLI_IP6\]" || true)
    verdict "$(arith "conns > 0 && $(conntrack_count) == 0")" "$mode: through ringvs's IPv6 table" \
        "$conns IPv6 connections listed, conntrack $(conntrack_count)"

    fwd_down
    # Both queues carried the traffic (the steering program keys IPv6 clients): the reads
    # each queue logged when it stopped.
    local reads
    reads=$(grep -o 'queue stopped queue=[0-9]* stats=Tun(QueueStats { reads: [0-9]*' "$LAB_DIR/ringvs.log" |
        tail -n 2 | sed -E 's/.*queue=([0-9]+).*reads: ([0-9]+)/q\1=\2/' | tr '\n' ' ')
    local low
    low=$(grep -oE '=[0-9]+' <<<"$reads" | tr -d = | sort -n | head -n 1)
    verdict "$(arith "${low:-0} > 1000")" "$mode: both queues carried it" "reads ${reads:-none}"
    if [[ $mode == auto ]]; then
        verdict "$(ok_if routes6_gone)" "auto: IPv6 routes removed on exit" "$(in_ns dir ip -6 rule show | grep -c "lookup $RVS_TABLE" || true) rules left"
    else
        manual_routes6_del
    fi
}

run_checks manual
run_checks auto

echo "test-nat6: $PASSES passed, $FAILS failed"
((FAILS == 0))
