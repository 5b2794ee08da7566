#!/usr/bin/env bash
# Persistence (ipvsadm -p 6 -M 255.255.255.0) end to end in the netns lab, through ringvs with
# the persist-netmask plugin (examples/lab/persist.toml: built-in wlc, two queues, so one
# network's connections land on both queues and meet one shared template store). The client
# namespace gets extra addresses in three /24s (10.77.30.0/24 = A, 10.77.31.0/24 = B,
# 10.77.32.0/24 = C); curl sends requests from them with --interface, one new connection per
# request.
#
# Checks (each PASS/FAIL with its figures; the exit status is the verdict):
#   ringvs list shows the service as "persistent 6 mask 255.255.255.0";
#   every request from network A was served by one realserver (nginx access logs), same for B,
#       and A and B went to different realservers (B's first flow is scheduled while A's
#       closed connections still load A's realserver: wlc spreads them);
#   ringvs list --persistent-conn / --json: PersistConn 1 on A's and on B's realserver, and
#       the persistent connections are not counted as ActiveConn/InActConn;
#   ringvs list --connections lists the templates as ipvsadm -Lnc does (10.77.30.0:0, NONE);
#   ringvs_backend_connections_persistent{service="web",server=A's} is 1;
#   after 6 s without a flow (and the closed connections gone) the templates expire; one
#       request from C then loads the first realserver (wlc's pick when all are idle, where A
#       was), and A's next request is scheduled afresh, to another realserver.
#
#   bash examples/lab/test-persist.sh                    (as root; bounded to about a minute)
#   SELFTEST_BREAK=1 bash examples/lab/test-persist.sh   (persistence removed: must FAIL)
#
# Environment: RINGVS, RVS_LAB, LAB_DIR, PERSIST_REQUESTS (per address, default 4).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds curl nginx iperf3 "$PYTHON"
ringvs_check_binary || exit 1
PLUGIN_DIR=${CARGO_TARGET_DIR:-$LAB_ROOT/target}/wasm32-wasip2/plugin
[[ -f $PLUGIN_DIR/persist_netmask.wasm ]] || die "$PLUGIN_DIR/persist_netmask.wasm is missing: run bash scripts/build-plugins.sh"

NET_A=10.77.30
NET_B=10.77.31
NET_C=10.77.32
HOSTS=(11 12 13)
REQUESTS=${PERSIST_REQUESTS:-4}

PASSES=0 FAILS=0
VERDICT_WIDTH=44 # verdict and arith: lib.sh

# client_nets_up: the extra client addresses, and the director's route back to them.
client_nets_up() {
    local net h
    for net in "$NET_A" "$NET_B" "$NET_C"; do
        for h in "${HOSTS[@]}"; do
            in_ns cli ip addr add "$net.$h/32" dev cli0
        done
        in_ns dir ip route replace "$net.0/24" via "$CLI_IP" dev dcli
    done
}

# get_from ADDR: one request to the VIP from client address ADDR (a new connection).
get_from() {
    ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 10 \
        --interface "$1" -o /dev/null -w '%{http_code}' "http://$VIP/" 2>>"$LAB_DIR/curl.err"
}

# served_by NET: after requests from NET.x, sets SERVED ("rs1=0 rs2=8 rs3=0"), SERVED_N (how
# many realservers served NET) and SERVED_BY (the index of the last one that did).
served_by() {
    local net=$1 i n
    SERVED="" SERVED_N=0 SERVED_BY=0
    for ((i = 1; i <= RS_COUNT; i++)); do
        n=$(access_lines "$i" | grep -c "^${net//./\\.}\\." || true)
        SERVED+="${SERVED:+ }rs$i=$n"
        if ((n > 0)); then
            SERVED_N=$((SERVED_N + 1))
            SERVED_BY=$i
        fi
    done
}

# requests NET: REQUESTS requests from each host address of NET, interleaved; sets OK_CODES.
requests() {
    local net=$1 r h code
    OK_CODES=0
    for ((r = 0; r < REQUESTS; r++)); do
        for h in "${HOSTS[@]}"; do
            code=$(get_from "$net.$h") || code=000
            if [[ $code == 200 ]]; then OK_CODES=$((OK_CODES + 1)); fi
        done
    done
}

persist_total() { web_json "sum(d['persistent'] for d in s['servers'])"; }
no_templates() { [[ $(persist_total) == 0 ]]; }

lab_trap
lab_up
start_servers
client_nets_up

# A copy of the config (for the self-test, without persistence).
conf=$LAB_DIR/persist.toml
cp "$LAB_SRC/persist.toml" "$conf"
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then
    log "SELFTEST_BREAK: the web service loses its persistence; the test must fail"
    sed -i '/^persistence = /d' "$conf"
fi
CONF=$conf fwd_up ringvs || die "ringvs did not come up"
verdict 0 "ringvs up" "pid $RINGVS_PID, config $conf"

listing=$(ringvs_cli list)
line=$(grep '^TCP  10.77.100.100:80' <<<"$listing" || true)
verdict "$([[ $line == *"persistent 6 mask 255.255.255.0"* ]] && echo 0 || echo 1)" \
    "list: persistent flag" "service line: '${line:-none}'"

# Network A, then at once network B: each request a new connection, from three hosts each.
hits_baseline
requests "$NET_A"
ok_a=$OK_CODES
requests "$NET_B"
ok_b=$OK_CODES
count_hits .
served_by "$NET_A"
a_by=$SERVED_BY
verdict "$(arith "ok_a == REQUESTS * ${#HOSTS[@]} && SERVED_N == 1")" "network A sticks to one realserver" \
    "$ok_a/$((REQUESTS * ${#HOSTS[@]})) answered 200 from $NET_A.{${HOSTS[*]}}; served by $SERVED"
served_by "$NET_B"
b_by=$SERVED_BY
verdict "$(arith "ok_b == REQUESTS * ${#HOSTS[@]} && SERVED_N == 1")" "network B sticks to one realserver" \
    "$ok_b/$((REQUESTS * ${#HOSTS[@]})) answered 200 from $NET_B.{${HOSTS[*]}}; served by $SERVED"
verdict "$(arith "a_by != b_by && a_by > 0 && b_by > 0")" "a new network is scheduled (spread)" \
    "A on rs$a_by, B on rs$b_by"

# What operators see.
pc=$(ringvs_cli list --persistent-conn)
per=$(web_json "' '.join(str(d['persistent']) for d in s['servers'])")
read -r -a per_arr <<<"$per"
ok=1
if ((a_by > 0 && b_by > 0)) && [[ ${per_arr[a_by - 1]:-0} == 1 && ${per_arr[b_by - 1]:-0} == 1 ]]; then ok=0; fi
[[ $pc == *PersistConn* ]] || ok=1
verdict "$ok" "list --persistent-conn: PersistConn" "per realserver: ${per:-?} (want 1 on rs$a_by and rs$b_by)"
conns=$(ringvs_cli list --connections)
tpl_a=$(grep -cE "^TCP [0-9:]+ +NONE +$NET_A\\.0:0 +10\\.77\\.100\\.100:80 +10\\.77\\.1\\.$a_by:8080" <<<"$conns" || true)
tpl_b=$(grep -cE "^TCP [0-9:]+ +NONE +$NET_B\\.0:0 " <<<"$conns" || true)
verdict "$(arith "$tpl_a == 1 && $tpl_b == 1")" "list --connections: templates" \
    "$(grep -E "NONE +10\\.77\\.3[01]\\.0:0" <<<"$conns" | tr -s ' ' | paste -sd';' || echo none)"
m=""
series="ringvs_backend_connections_persistent{service=\"web\",server=\"10.77.1.$a_by:8080\"}"
for _ in $(seq 30); do
    m=$(metric "$series" || true)
    [[ $m == 1 ]] && break
    sleep 0.2
done
verdict "$([[ $m == 1 ]] && echo 0 || echo 1)" "metric persistent conns" "$series = ${m:-absent}"

# No more flows: the closed connections leave the director's table (2 s), then the templates
# expire (6 s after the last flow). Then C loads the realserver wlc picks when all are idle,
# and a new request from A is scheduled afresh: to another realserver than before.
t0=$SECONDS
if wait_until 30 no_templates; then waited=$((SECONDS - t0)); else waited="> 30"; fi
verdict "$([[ $waited != "> 30" ]] && echo 0 || echo 1)" "templates expire without flows" \
    "PersistConn back to 0 after ${waited} s (timeout 6 s, TIME_WAIT 2 s)"
hits_baseline
code_c=$(get_from "$NET_C.${HOSTS[0]}") || code_c=000
code=$(get_from "$NET_A.${HOSTS[0]}") || code=000
count_hits .
served_by "$NET_C"
c_by=$SERVED_BY
served_by "$NET_A"
verdict "$(arith "SERVED_N == 1 && SERVED_BY != a_by && c_by == a_by")" "network A rescheduled after expiry" \
    "HTTP $code_c from C, served by rs$c_by; HTTP $code from A, served by rs$SERVED_BY (was rs$a_by)"

fwd_down
verdict "$([[ $RINGVS_EXIT == "exit 0" ]] && echo 0 || echo 1)" "clean stop on SIGTERM" "$RINGVS_EXIT"

echo
if ((FAILS > 0)); then
    echo "test-persist: FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-persist: PASSED — $PASSES checks"
