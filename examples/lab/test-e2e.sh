#!/usr/bin/env bash
# End-to-end test of the director in the netns lab. Prints every check as PASS/FAIL with its
# figures; the exit status is the verdict.
#
#   sudo bash examples/lab/test-e2e.sh             # ringvs (target/release/ringvs), manual and auto routes
#   sudo FWD=nft bash examples/lab/test-e2e.sh     # the same checks through kernel nftables DNAT
#   sudo LAB_IO=af_xdp bash examples/lab/test-e2e.sh   # ringvs with director.io = "af_xdp"
#
# Checks, for each forwarder set-up:
#   http keep-alive / http close: a wrk run through the VIP has zero socket errors, zero non-2xx
#       responses, every realserver served some of its requests and connections (nginx's
#       connection serial, in the access logs), with Connection: close >= 15 % of them, and a
#       request right after the run is answered. The keep-alive run's 32 connections are not
#       held to a share: wlc weighs a half-open connection 1/256 of an established one, so how
#       32 simultaneous connects split follows handshake timing (4/13/15 measured), and how many
#       requests each carries follows how much CPU each nginx got;
#   client address: the realservers saw the client's own address (NAT, no SNAT);
#   1 MiB download: 6 parallel downloads of /1m.bin are byte-identical (sha256) to the file, and
#       at least 2 realservers served them;
#   udp: 200 datagrams to VIP:53, each from its own socket, all answered with the right payload,
#       by >= 2 realservers;
# and for ringvs: (TUN, manual routes) a tcpdump capture of 60 HTTP connections and 99 UDP
# flows is whole and `ringvs replay --compare` (rr against mh + persist-netmask) on it accounts
# for every flow (check_replay); the traffic went through ringvs0 (device counters), the director's conntrack
# stayed empty, ringvs exits 0 within 5 s of SIGTERM, and with routes = "auto" the routes
# exist while it runs and are gone after it stops.
#
# With LAB_IO=af_xdp (switch topology: the director's own interfaces dcli and drs, each with
# as many queues as ringvs runs) the same traffic checks run for each queue count of
# E2E_XDP_QUEUES (default "1 2": one queue, and two with frames handed between queues), plus:
# `ringvs check` validates the AF_XDP set-up (and names a missing interface), the traffic went
# through ringvs (its packet counters), no XDP program is left on the interfaces after a clean
# stop, nor after SIGKILL, and ringvs starts again right after the kill.
#
# Environment: FWD=ringvs|nft, LAB_IO=tun|af_xdp, E2E_XDP_QUEUES, E2E_SECONDS (each wrk run,
# default 5), RINGVS, CONF, RVS_LAB,
# LAB_DIR, SELFTEST_BREAK=1 (stop rs3's nginx in the middle of the first wrk run: the test
# must then fail).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FWD=${FWD:-ringvs}
E2E_SECONDS=${E2E_SECONDS:-5}
MIN_SHARE=15 # percent of a Connection: close run's connections every realserver must get
case $FWD in nft | ringvs) ;; *) die "FWD must be nft or ringvs (got '$FWD')" ;; esac
case $LAB_IO in tun | af_xdp) ;; *) die "LAB_IO must be tun or af_xdp (got '$LAB_IO')" ;; esac
if [[ $LAB_IO == af_xdp && $FWD != ringvs ]]; then die "LAB_IO=af_xdp tests ringvs (FWD=ringvs)"; fi
E2E_XDP_QUEUES=${E2E_XDP_QUEUES:-1 2}
require_root
require_cmds wrk curl nginx iperf3 nft tcpdump
if [[ $FWD == ringvs ]]; then
    # Fail fast, before bringing up the lab.
    ringvs_check_binary || {
        echo "FAIL  ringvs binary present: $RINGVS"
        exit 1
    }
fi

PASSES=0 FAILS=0
VERDICT_WIDTH=42 # verdict, ok_if and arith: lib.sh

check_http() { # check_http SETUP MODE [WRK ARGS...]
    local setup=$1 mode=$2 breaker=""
    shift 2
    hits_baseline
    if [[ ${SELFTEST_BREAK:-0} == 1 && $mode == keep-alive ]]; then
        log "SELFTEST_BREAK: stopping rs3's nginx in the middle of the run"
        (
            sleep $((E2E_SECONDS / 2))
            stop_nginx 3
        ) &
        breaker=$!
    fi
    if ! wrk_run "$setup-$mode" "$E2E_SECONDS" -t2 -c32 "$@"; then
        verdict 1 "$setup: http $mode" "wrk did not complete (output above)"
        return
    fi
    if [[ -n $breaker ]]; then wait "$breaker" || true; fi
    # wrk does not count connections that never complete, so a forwarder that stops part-way
    # would look clean: also ask for one more page right after the run.
    count_hits .
    local after=answered
    curl_vip / -o /dev/null --max-time 3 2>/dev/null || after="NOT answered"
    local ok=0 i need="need >= $MIN_SHARE % each" conns=$HITS_CONNS_PCT
    ((WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0 && WRK_REQUESTS > 0)) || ok=1
    if [[ $mode == keep-alive ]]; then
        need="need >= 1 each" conns=$HITS_CONNS_SPREAD
    else
        ((HITS_CONNS_MIN_PCT >= MIN_SHARE)) || ok=1
    fi
    for ((i = 1; i <= RS_COUNT; i++)); do ((HITS[i] > 0 && HITS_CONNS[i] > 0)) || ok=1; done
    [[ $after == answered ]] || ok=1
    verdict "$ok" "$setup: http $mode" "$WRK_REQUESTS requests ($WRK_RPS/s), socket errors $WRK_SOCK_ERRORS${WRK_ERRORS_DETAIL:+ ($WRK_ERRORS_DETAIL)}, non-2xx $WRK_NON2XX; logged $HITS_TOTAL on $HITS_CONNS_TOTAL connections: $conns ($need), requests $HITS_PCT; a request after the run $after"
    CLIENTS_SEEN+="$HITS_CLIENTS "
}

check_client_address() {
    local seen
    seen=$(tr ' ' '\n' <<<"$CLIENTS_SEEN" | { grep . || true; } | sort -u | tr '\n' ' ')
    verdict "$(ok_if [ "${seen% }" == "$CLI_IP" ])" "$1: client address kept" "realservers saw: ${seen:-nothing}(want $CLI_IP only)"
}

check_download() {
    local setup=$1 n=6 i pids=() intact=0 got servers=0
    hits_baseline
    for ((i = 1; i <= n; i++)); do
        rm -f "$LAB_DIR/dl-$i.bin"
        ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 30 \
            -o "$LAB_DIR/dl-$i.bin" "http://$VIP/1m.bin" 2>>"$LAB_DIR/curl.err" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    for ((i = 1; i <= n; i++)); do
        got=$(sha256sum "$LAB_DIR/dl-$i.bin" 2>/dev/null | cut -d' ' -f1) || got=""
        if [[ $got == "$ONE_MIB_SHA" ]]; then intact=$((intact + 1)); fi
    done
    count_hits 'GET /1m.bin '
    local served=0
    for ((i = 1; i <= RS_COUNT; i++)); do
        if ((HITS[i] > 0)); then servers=$((servers + 1)); fi
        served=$((served + HITS[i]))
    done
    # No spread is asked of these 6: wlc rightly sends them all to the server with the fewest
    # inactive (TIME_WAIT) entries left by the runs before, which can be 6 fewer than the
    # others' (the http checks above check the spread).
    verdict "$(arith "intact == n && served == n")" "$setup: 1 MiB download intact" \
        "$intact/$n downloads match sha256 ${ONE_MIB_SHA:0:12}…; $served logged by the realservers, $servers of them ($HITS_SPREAD)"
}

check_udp() {
    local setup=$1
    if ! udp_probe 200; then
        verdict 1 "$setup: udp round trip" "udp_probe.py failed (output above)"
        return
    fi
    local ok=0
    ((UDP_SENT == 200 && UDP_ANSWERED == UDP_SENT && UDP_BAD == 0 && UDP_NSERVERS >= 2)) || ok=1
    verdict "$ok" "$setup: udp round trip" "$UDP_ANSWERED/$UDP_SENT answered, $UDP_BAD wrong, by $UDP_NSERVERS servers ($UDP_SERVERS)"
}

# check_udp_large SETUP: 100 datagrams of 4,000 bytes to the UDP service, each from its own
# socket: over the veths' 1,500-byte MTU both the query and its echo travel in fragments (what
# a large DNS/EDNS answer does). Each must come back whole. Through ringvs, every query and
# every echo is a datagram it reassembled (ringvs_reassembled_total), fragments arriving at
# queue 0 and handed to the queue owning the flow. Not with director.io = "af_xdp": its
# 2 KiB frames hold no reassembled datagram (docs/HARDENING.md).
check_udp_large() {
    local setup=$1 before=0 after=0 ok=0 extra=""
    if [[ $FWD == ringvs && $LAB_IO == af_xdp ]]; then
        log "$setup: 4 KB UDP datagrams not checked with af_xdp (fragments are not reassembled there)"
        return
    fi
    if [[ $FWD == ringvs ]]; then before=$(metric ringvs_reassembled_total); fi
    if ! udp_probe 100 53 4000; then
        verdict 1 "$setup: 4 KB udp datagrams (fragmented both ways)" "udp_probe.py failed (output above)"
        return
    fi
    ((UDP_SENT == 100 && UDP_ANSWERED == UDP_SENT && UDP_BAD == 0)) || ok=1
    if [[ $FWD == ringvs ]]; then
        # The queues publish their counters once a second: wait for the last ones (5 s at most).
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            after=$(metric ringvs_reassembled_total)
            ((${after:-0} - ${before:-0} >= 2 * UDP_ANSWERED)) && break
            sleep 0.5
        done
        ((${after:-0} - ${before:-0} >= 2 * UDP_ANSWERED)) || ok=1
        extra="; ringvs reassembled $((${after:-0} - ${before:-0})) datagrams (want ≥ $((2 * UDP_ANSWERED)): each query and each echo)"
    fi
    verdict "$ok" "$setup: 4 KB udp datagrams (fragmented both ways)" \
        "$UDP_ANSWERED/$UDP_SENT echoed whole, $UDP_BAD wrong, by $UDP_NSERVERS servers ($UDP_SERVERS)$extra"
}

# check_replay SETUP: lab traffic, captured, then replayed with `ringvs replay --compare`.
# tcpdump (interface "any" of the client's namespace: Linux cooked v2) records REPLAY_HTTP
# requests, each on its own connection (Connection: close), and REPLAY_UDP datagrams, each
# from its own socket. The replay runs the capture through A, the lab's config with rr for
# web, and B, the same with the catalogue's mh and persist-netmask /24 for web. Checks:
# the capture is whole (tcpdump dropped nothing, it holds one SYN per connection nginx logged
# and every datagram sent); the replay exits 0 and its --json parses; A and B each report one
# new flow per connection and per UDP flow (client port) in the capture, all scheduled by both;
# rr spreads each service's flows within one flow of an even split; B keeps the client's
# /24 on one web server (every web flow after the first a persistence template hit).
REPLAY_HTTP=60 REPLAY_UDP=99
check_replay() {
    local setup=$1 cap=$LAB_DIR/e2e.pcap a=$LAB_DIR/replay-a.toml b=$LAB_DIR/replay-b.toml
    local codes=0 conns syns datagrams udps flows figures rc=0
    sed 's/^scheduler = "sched-wlc"$/scheduler = "rr"/' "$CONF" >"$a"
    sed 's/^scheduler = "sched-wlc"$/scheduler = "mh"\npersistence = { plugin = "persist-netmask", timeout = "300s", config = { netmask = "255.255.255.0" } }/' "$CONF" >"$b"
    if cmp -s "$CONF" "$a" || cmp -s "$CONF" "$b"; then
        verdict 1 "$setup: replay configs" "$CONF has no 'scheduler = \"sched-wlc\"' line to change"
        return
    fi
    hits_baseline
    if ! capture_start cli any "$cap" host "$VIP"; then
        verdict 1 "$setup: lab capture" "tcpdump did not start (output above)"
        return
    fi
    codes=$(curl_vip "/?[1-$REPLAY_HTTP]" -o /dev/null -w '%{http_code}\n' -H 'Connection: close' 2>>"$LAB_DIR/curl.err" | grep -c '^200$') || true
    udp_probe "$REPLAY_UDP" || true
    capture_stop
    count_hits .
    conns=$HITS_CONNS_TOTAL
    # The capture's flows: distinct client ports of the SYNs to VIP:80 (a retransmitted SYN
    # comes from the same port) and of the datagrams to VIP:53 (the kernel may give a new
    # socket the port of one closed before it: one flow, for the director as for the replay).
    syns=$(tcpdump -nr "$cap" "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst host $VIP and dst port 80" 2>/dev/null |
        { grep -oE "$CLI_IP\.[0-9]+ >" || true; } | sort -u | wc -l)
    datagrams=$(tcpdump -nr "$cap" "udp and dst host $VIP and dst port 53" 2>/dev/null |
        { grep -oE "$CLI_IP\.[0-9]+ >" || true; } | tee "$LAB_DIR/e2e-udp-ports.txt" | wc -l)
    udps=$(sort -u "$LAB_DIR/e2e-udp-ports.txt" | wc -l)
    verdict "$(arith "CAPTURE_DROPPED == 0 && codes == REPLAY_HTTP && conns == REPLAY_HTTP && syns == conns && UDP_ANSWERED == REPLAY_UDP && datagrams == UDP_SENT && udps > 0")" \
        "$setup: lab capture" "$(tcpdump -r "$cap" -c 1 2>&1 >/dev/null | grep -oE 'link-type [A-Z0-9_]+' || echo 'unreadable'), ${CAPTURE_PACKETS:-?} packets, ${CAPTURE_DROPPED:-?} dropped; $syns SYNs for $conns connections nginx logged ($codes/$REPLAY_HTTP answered 200); $datagrams datagrams for $UDP_SENT sent ($UDP_ANSWERED answered) from $udps client ports"
    flows=$((conns + udps))

    "$RINGVS" replay --compare "$a" "$b" "$cap" >"$LAB_DIR/replay-compare.txt" 2>&1 || rc=$?
    if ((rc == 0)); then "$RINGVS" replay --compare "$a" "$b" "$cap" --json >"$LAB_DIR/replay-compare.json" 2>&1 || rc=$?; fi
    sed 's/^/    | /' "$LAB_DIR/replay-compare.txt"
    figures=$("$PYTHON" - "$LAB_DIR/replay-compare.json" <<'PY'
import json, sys
try:
    c = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"--json output is not JSON: {e}")
spread = {}
for name, (a, b) in c["spread"]:
    spread.setdefault(name.split("/")[0], []).append((a, b))
rr = all(max(a for a, _ in s) - min(a for a, _ in s) <= 1 for s in spread.values())
web_b = [b for _, b in spread.get("web", [])]
one = sum(1 for b in web_b if b > 0) == 1
hits = c["persistence_hits"][1] == sum(web_b) - 1
fmt = lambda svc, i: "/".join(str(p[i]) for p in spread.get(svc, []))
print(c["new_flows"][0], c["new_flows"][1], c["common"], int(rr), int(one and hits),
      fmt("web", 0), fmt("dns", 0), fmt("web", 1), c["persistence_hits"][1])
PY
    ) || {
        verdict 1 "$setup: replay --compare" "exit $rc: $(tail -n 1 "$LAB_DIR/replay-compare.json" "$LAB_DIR/replay-compare.txt" 2>&1 || true)"
        return
    }
    local fa fb common rr one web_a dns_a web_b hits_b
    read -r fa fb common rr one web_a dns_a web_b hits_b <<<"$figures"
    verdict "$(arith "rc == 0 && fa == flows && fb == flows && common == flows")" "$setup: replay --compare: every flow" \
        "exit $rc, JSON parsed; new flows A $fa, B $fb, $common scheduled by both (want $flows: $conns TCP connections + $udps UDP flows)"
    verdict "$(arith "rr == 1")" "$setup: replay --compare: rr is even" \
        "A (rr) per server: web $web_a, dns $dns_a (want each service within 1 flow of an even split)"
    verdict "$(arith "one == 1")" "$setup: replay --compare: B persists" \
        "B (mh, persist-netmask /24) web per server: $web_b, $hits_b template hits (want one server, all but the first flow a hit)"
}

# run_checks SETUP: the forwarder is up; run every traffic check through it.
run_checks() {
    local setup=$1 rx0 tx0 rx1 tx1 requests
    read -r rx0 tx0 < <(dev_packets)
    CLIENTS_SEEN=""
    check_http "$setup" keep-alive
    requests=$WRK_REQUESTS
    check_http "$setup" close -H 'Connection: close'
    requests=$((${requests:-0} + ${WRK_REQUESTS:-0}))
    check_client_address "$setup"
    check_download "$setup"
    check_udp "$setup"
    check_udp_large "$setup"
    # Once per run: the TUN run's first set-up (ringvs replays what went through it).
    if [[ $FWD == ringvs && $LAB_IO == tun && $ROUTES == manual ]]; then check_replay "$setup"; fi
    if [[ $FWD == ringvs ]]; then
        read -r rx1 tx1 < <(dev_packets)
        local through=$RVS_DEV
        if [[ $LAB_IO == af_xdp ]]; then through="AF_XDP (ringvs's counters)"; fi
        verdict "$(arith "rx1 - rx0 >= requests && tx1 - tx0 >= requests && requests > 0")" \
            "$setup: traffic through $through" "$((tx1 - tx0)) packets into ringvs, $((rx1 - rx0)) out, for $requests HTTP requests"
        local ct
        ct=$(conntrack_count)
        verdict "$(arith "ct == 0")" "$setup: director conntrack unused" "$ct tracked connections in $(ns_name dir) (want 0: no ct/NAT rules)"
    fi
}

lab_trap
lab_up
start_servers

# check_xdp_config: `ringvs check` accepts the AF_XDP set-up and refuses a missing interface.
check_xdp_config() {
    local out rc=0 envs
    envs=$(ringvs_env)
    lab_queues "$(ringvs_queues)" || true
    # shellcheck disable=SC2086 # $envs is a list of NAME=value words
    out=$(in_ns dir env $envs "$RINGVS" check -c "$CONF" 2>&1) || rc=$?
    verdict "$(ok_when '[ "$rc" == 0 ] && grep -q "^af_xdp: dcli" <<<"$out"')" "ringvs-xdp: ringvs check" \
        "$(grep '^af_xdp:' <<<"$out" || tail -n 2 <<<"$out")"
    rc=0
    # shellcheck disable=SC2086
    out=$(in_ns dir env $envs RINGVS_DIRECTOR__INTERFACES='[dcli,nosuch0]' "$RINGVS" check -c "$CONF" 2>&1) || rc=$?
    verdict "$(ok_when '[ "$rc" != 0 ] && grep -q "nosuch0 does not exist" <<<"$out"')" "ringvs-xdp: check names a missing interface" \
        "exit $rc: $(tail -n 1 <<<"$out")"
}

if [[ $FWD == nft ]]; then
    fwd_up nft || die "nft forwarder did not come up"
    run_checks nft
    fwd_down
elif [[ $LAB_IO == af_xdp ]]; then
    check_xdp_config
    for q in $E2E_XDP_QUEUES; do
        RINGVS_QUEUES=$q
        setup="ringvs-xdp/q$q"
        if ! fwd_up ringvs; then
            verdict 1 "$setup: ringvs up" "see the error and the log tail above (on stderr)"
            fwd_down
            break
        fi
        verdict 0 "$setup: ringvs up" "pid $RINGVS_PID, XDP on dcli and $RS_IF, $q queue(s)"
        run_checks "$setup"
        fwd_down
        verdict "$(ok_if [ "$RINGVS_EXIT" == "exit 0" ])" "$setup: clean stop on SIGTERM" "$RINGVS_EXIT (want exit 0 within 5 s)"
        verdict "$(ok_if xdp_detached)" "$setup: XDP detached on exit" "$(in_ns dir ip -o link show | grep -c ' xdp' || true) interface(s) with XDP left"
    done
    # A crash must not leave the program behind either: the BPF links die with the process.
    setup="ringvs-xdp/kill"
    if fwd_up ringvs; then
        kill -KILL "$RINGVS_PID"
        wait "$RINGVS_PID" 2>/dev/null || true
        RINGVS_PID=""
        LAB_FWD=""
        verdict "$(ok_if wait_until 5 xdp_detached)" "$setup: XDP detached after SIGKILL" \
            "$(in_ns dir ip -o link show | grep -c ' xdp' || true) interface(s) with XDP left"
        if fwd_up ringvs && curl_vip / -o /dev/null --max-time 3; then
            verdict 0 "$setup: starts again after the kill" "a request through the VIP answered"
        else
            verdict 1 "$setup: starts again after the kill" "see above"
        fi
        fwd_down
    else
        verdict 1 "$setup: ringvs up" "see above"
    fi
else
    for ROUTES in manual auto; do
        setup="ringvs/$ROUTES"
        if ! fwd_up ringvs; then
            verdict 1 "$setup: ringvs up" "see the error and the log tail above (on stderr)"
            fwd_down
            break # fail fast: the other routing mode would wait for the same device in vain
        fi
        verdict 0 "$setup: ringvs up" "pid $RINGVS_PID, $RVS_DEV UP, VIP and replies routed into it"
        run_checks "$setup"
        fwd_down
        verdict "$(ok_if [ "$RINGVS_EXIT" == "exit 0" ])" "$setup: clean stop on SIGTERM" "$RINGVS_EXIT (want exit 0 within 5 s)"
        if [[ $ROUTES == auto ]]; then
            verdict "$(ok_if auto_routes_gone)" "$setup: routes removed on exit" \
                "$(in_ns dir ip rule show | grep -c 'iif br-rs' || true) rules for iif br-rs, $(in_ns dir ip route show "$VIP/32" | grep -c . || true) routes for $VIP left"
        fi
    done
fi

echo
mode=$FWD
if [[ $LAB_IO == af_xdp ]]; then mode="$FWD, af_xdp"; fi
if ((FAILS > 0)); then
    echo "test-e2e ($mode): FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-e2e ($mode): PASSED — $PASSES checks"
