#!/usr/bin/env bash
# Active-active behind ECMP (issue 14, docs/HA.md): three ringvs directors (LVS-DR, AF_XDP on
# one interface each) announce the VIP by BGP (BIRD 2) to a router namespace that installs it
# as one multipath route and hashes flows on L4 (fib_multipath_hash_policy=1). Every director
# schedules with sched-mh (Maglev, port hashed too) and has `sloppy = true`, so a connection the
# router moves to another director goes on there, to the same realserver. Each director's
# announcement follows `ringvs ha announce` (birdc enable/disable of a static route).
#
#   rec-cli 10.77.30.2 ─ rec-rt 10.77.30.1 │ 10.77.31.1 ─ rec-lan (bridge) ─┬─ rec-d1..3 10.77.31.11-13
#                        (BIRD, AS 65000, ECMP)                           └─ rec-rs1..3 10.77.31.21-23
#   VIP 10.77.100.100:8080: BGP routes via .11/.12/.13; realservers hold it on lo (DR) and
#   answer through the router, not the directors.
#
# 64 keep-alive flows (flows.py: one GET every 100 ms each, never reconnecting) run through
# three events:
#   1. graceful (5 s): SIGTERM to d3's ringvs (director.stop_delay = 2s): `ha announce`
#      withdraws its route at once, the data plane forwards on for 2 s, then stops;
#   2. death (13 s): d2's link goes down and every process in it is SIGKILLed (ringvs, BIRD,
#      the announcer): the router withdraws d2's route only when the BGP hold time (3 s) ends;
#   3. rejoin (20 s) and kill (26 s): d3's ringvs starts again and is announced once ready,
#      then it alone is SIGKILLed: its announcer, getting no answer, withdraws the route.
# Checks (PASS/FAIL with figures; the exit status is the verdict): the route starts with three
# next hops and loses d3's before d3's data plane stops; d2's is withdrawn within the hold
# time (+1 s of polling), d3's within 1 s of its ringvs's death; every one of the 64 flows
# answers every request to the end (no reset, no timeout); no flow waits over 1 s across the
# graceful stop; the flows d2 carried (its table before) each wait for the withdrawal and go
# on through d1 (sloppy entries there), the others wait at most 1 s; across the rejoin and
# the kill no flow waits over 2 s; new connections work at the start and the end.
#
#   bash examples/lab/test-ecmp.sh                    (as root; about 1.5 minutes)
#   SELFTEST_BREAK=1 bash examples/lab/test-ecmp.sh   (sloppy off: the moved flows must break, FAIL)
#
# Environment: RINGVS, RVS_LAB (default rec), LAB_DIR.
set -euo pipefail
RVS_LAB=${RVS_LAB:-rec}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds nginx bird birdc ethtool curl "$PYTHON"
ringvs_check_binary || exit 1

PASSES=0 FAILS=0
VERDICT_WIDTH=56
CLI=10.77.30.2
RT_C=10.77.30.1
RT_L=10.77.31.1
D_IPS=(10.77.31.11 10.77.31.12 10.77.31.13)
RS_IPS=(10.77.31.21 10.77.31.22 10.77.31.23)
RS_COUNT=3
PORT=8080
HOLD=3       # BGP hold time, seconds (keepalive 1 s)
STOP_DELAY=2 # director.stop_delay of every director
FLOWS=64
# The events, in seconds after the flows started, and how long the flows run.
T_GRACE=5 T_DEATH=13 T_REJOIN=20 T_KILL=26 RUN=34

lab_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${RVS_LAB}-(cli|rt|lan|d[123]|rs[123])\$" || true
}

ecmp_up() {
    [[ $RVS_LAB =~ ^[a-z0-9]{1,8}$ ]] || die "RVS_LAB must be 1-8 lowercase letters/digits"
    lab_down
    lab_reset_dir
    local n i
    for n in cli rt lan d1 d2 d3 rs1 rs2 rs3; do
        ip netns add "$(ns_name "$n")"
        in_ns "$n" ip link set lo up
        ns_sysctl "$n" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    in_ns lan ip link add br0 type bridge
    in_ns lan ip link set br0 up
    veth cli cli0 rt c0
    in_ns cli ip addr add "$CLI/24" dev cli0
    in_ns cli ip route add default via "$RT_C"
    # The router hashes a forwarded packet by the hash it arrives with when the sender's
    # stack set one (fib_multipath_hash_policy 1 takes skb->l4_hash as is), and between
    # namespaces the client's socket hash arrives too; Linux TCP draws a new one at each
    # retransmission timeout (txrehash), which would move a stalled flow to a random director
    # at each retry: not what a router on another machine does.
    ns_sysctl cli net.core.txrehash=0
    in_ns rt ip addr add "$RT_C/24" dev c0
    veth rt l0 lan prt
    in_ns lan ip link set prt master br0
    in_ns rt ip addr add "$RT_L/24" dev l0
    ns_sysctl rt net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
    for i in 1 2 3; do
        veth "d$i" eth0 lan "pd$i"
        in_ns lan ip link set "pd$i" master br0
        # What reaches an XDP program must carry its full checksum (lib.sh, lab_tx_csum): the
        # bridge computes it for what it forwards to a director.
        in_ns lan ethtool -K "pd$i" tx off >/dev/null
        in_ns "d$i" ip addr add "${D_IPS[i - 1]}/24" dev eth0
        in_ns "d$i" ip route add default via "$RT_L"
        veth "rs$i" eth0 lan "prs$i"
        in_ns lan ip link set "prs$i" master br0
        in_ns "rs$i" ip addr add "${RS_IPS[i - 1]}/24" dev eth0
        in_ns "rs$i" ip route add default via "$RT_L"
        ns_sysctl "rs$i" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        in_ns "rs$i" ip addr add "$VIP/32" dev lo
    done
    log "lab up: client $CLI via router $RT_C/$RT_L; directors ${D_IPS[*]}; realservers ${RS_IPS[*]} (DR, VIP on lo); VIP $VIP:$PORT"
}

servers_up() {
    local i d
    for i in 1 2 3; do
        d=$LAB_DIR/rs$i
        write_nginx_conf "$i"
        in_ns "rs$i" nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" >"$d/nginx.out" 2>&1 ||
            die "nginx failed on rs$i"
    done
    for i in 1 2 3; do wait_until 10 listening "rs$i" tcp "$PORT" || die "nginx on rs$i not listening"; done
}

bird_sock() { echo "$LAB_DIR/$1/bird.ctl"; }
bird_up() { # bird_up NS: BIRD 2 in namespace NS with $LAB_DIR/NS/bird.conf
    local d=$LAB_DIR/$1
    ip netns exec "$(ns_name "$1")" bird -f -c "$d/bird.conf" -s "$(bird_sock "$1")" -P "$d/bird.pid" \
        </dev/null >>"$d/bird.log" 2>&1 &
    disown $!
    wait_until 5 birdc -s "$(bird_sock "$1")" show status >/dev/null 2>&1 || {
        log_tail "$d/bird.log"
        die "BIRD did not start in $1"
    }
}

router_up() {
    mkdir -p "$LAB_DIR/rt"
    {
        cat <<EOF
# generated by examples/lab/test-ecmp.sh: the ECMP router (docs/HA.md)
log stderr all;
router id $RT_L;
protocol device { scan time 10; }
protocol kernel {
    ipv4 { import none; export all; };
    merge paths on;   # one multipath route from the directors' equal routes
}
template bgp director {
    local $RT_L as 65000;
    hold time $HOLD; keepalive time 1; connect retry time 1;
    ipv4 { import where net = $VIP/32; export none; };
}
EOF
        for i in 1 2 3; do printf 'protocol bgp d%s from director { neighbor %s as 65001; }\n' "$i" "${D_IPS[i - 1]}"; done
    } >"$LAB_DIR/rt/bird.conf"
    bird_up rt
}

director_up() { # director_up N: ringvs, BIRD and the announcer of director N
    local i=$1 d=$LAB_DIR/d$1 sloppy=true
    [[ ${SELFTEST_BREAK:-0} == 1 ]] && sloppy=false
    mkdir -p "$d"
    cat >"$d/ringvs.toml" <<EOF
# generated by examples/lab/test-ecmp.sh for director d$i
[director]
io = "af_xdp"
interfaces = ["eth0"]
queues = 1
conn_memory_limit = "32MiB"
admin_socket = "$d/admin.sock"
metrics_listen = "127.0.0.1:9406"
stop_delay = "${STOP_DELAY}s"

[plugins.mh]
config = { port = true }

[[service]]
name = "web"
vip = "$VIP:$PORT"
proto = "tcp"
forward = "dr"
scheduler = "mh"
sloppy = $sloppy
$(for a in "${RS_IPS[@]}"; do printf '[[service.server]]\naddr = "%s"\n' "$a"; done)
EOF
    cat >"$d/bird.conf" <<EOF
# generated by examples/lab/test-ecmp.sh for director d$i
log stderr all;
router id ${D_IPS[i - 1]};
protocol device { scan time 10; }
# The announcement: enabled and disabled by \`ringvs ha announce\` only.
protocol static vip {
    disabled;
    ipv4;
    route $VIP/32 blackhole;
}
protocol bgp uplink {
    local ${D_IPS[i - 1]} as 65001;
    neighbor $RT_L as 65000;
    hold time $HOLD; keepalive time 1; connect retry time 1;
    ipv4 { import none; export where proto = "vip"; };
}
EOF
    ip netns exec "$(ns_name "d$i")" "$RINGVS" run -c "$d/ringvs.toml" </dev/null >>"$d/ringvs.log" 2>&1 &
    echo $! >"$d/ringvs.pid"
    disown $!
    wait_until 15 "$RINGVS" status -s "$d/admin.sock" >/dev/null 2>&1 || {
        log_tail "$d/ringvs.log"
        die "ringvs on d$i did not come up"
    }
    bird_up "d$i"
    ip netns exec "$(ns_name "d$i")" "$RINGVS" ha announce -s "$d/admin.sock" --interval 0.2 \
        --up "birdc -s $(bird_sock "d$i") enable vip" --down "birdc -s $(bird_sock "d$i") disable vip" \
        </dev/null >>"$d/announce.log" 2>&1 &
    echo $! >"$d/announce.pid"
    disown $!
}

nexthops() { # the router's next hops for the VIP, space-separated
    in_ns rt ip -o route show "$VIP/32" 2>/dev/null | grep -oE 'via [0-9.]+' | awk '{print $2}' | sort | tr '\n' ' ' | sed 's/ $//'
}
nexthops_are() { [[ $(nexthops) == "$1" ]]; }
metric_of() { # metric_of N NAME: a counter of director N
    in_ns "d$1" curl -s --max-time 2 "http://127.0.0.1:9406/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}
ports_of() { # ports_of N: the client ports of the flows director N carries now: its entries
    # of the client's that saw a packet within the last 2 s (a flow the router moved away
    # leaves an entry behind, ageing from the established timeout, 900 s)
    "$RINGVS" list --connections --json --max 10000 -s "$LAB_DIR/d$1/admin.sock" 2>/dev/null |
        "$PYTHON" -c "import json,sys; print(' '.join(sorted(c['source'].rsplit(':',1)[1] for c in json.load(sys.stdin)['conns'] if c['source'].startswith('$CLI:') and c['state'] == 'ESTABLISHED' and c['expire_secs'] >= 898)))"
}
new_conns_ok() { # 20 new connections, each answered
    local k
    for ((k = 0; k < 20; k++)); do
        in_ns cli curl -sf -o /dev/null --max-time 2 "http://$VIP:$PORT/" || return 1
    done
}

lab_trap
ecmp_up
servers_up
router_up
for i in 1 2 3; do director_up "$i"; done
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then log "SELFTEST_BREAK=1: sloppy off; the flows the router moves must break, the test must FAIL"; fi

ALL="${D_IPS[*]}"
ok=0
wait_until 20 nexthops_are "$ALL" || ok=1
verdict "$ok" "the router has 3 next hops for the VIP" "$(nexthops) (want $ALL)"
if ((ok != 0)); then
    in_ns rt birdc -s "$(bird_sock rt)" show protocols >&2 || true
    die "no ECMP route: nothing to test"
fi
ok=0
wait_until 5 new_conns_ok || ok=1
verdict "$ok" "new connections through the VIP" "20 in a row"

RESULT=$LAB_DIR/flows.json READY=$LAB_DIR/flows.ready
ip netns exec "$(ns_name cli)" "$PYTHON" "$LAB_SRC/flows.py" "$VIP:$PORT" --flows "$FLOWS" \
    --seconds "$RUN" --ready "$READY" >"$RESULT" 2>"$LAB_DIR/flows.err" &
FLOWS_PID=$!
wait_until 10 test -s "$READY" || die "flows.py did not open its connections: $(cat "$LAB_DIR/flows.err")"
# flows.py's clock (its gaps start on it), on the wall clock: the events are timed against it
# to the millisecond (bash's $SECONDS is whole seconds and would place them up to 1 s early).
T0=$(<"$READY")

gap_text() { # gap_text MS: flows.py lists gaps of 300 ms or more only
    if [[ $1 == 0 ]]; then echo "none of 300 ms or more"; else echo "largest gap $1 ms"; fi
}
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
since_t0() { # since_t0 [T]: seconds from flows.py's start to T (epoch seconds; default now)
    awk -v t0="$T0" -v t="${1:-$(date +%s.%N)}" 'BEGIN { printf "%.3f", t - t0 }'
}
sleep_until() { # sleep_until S: until S seconds after the flows started
    local left
    left=$(awk -v s="$1" -v now="$(since_t0)" 'BEGIN { l = s - now; if (l < 0) l = 0; printf "%.3f", l }')
    sleep "$left"
}

# 1. graceful stop of d3.
sleep_until "$T_GRACE"
held3=$(ports_of 3 | wc -w)
D3_PID=$(cat "$LAB_DIR/d3/ringvs.pid")
t_term=$(date +%s.%N)
kill -TERM "$D3_PID"
E_GRACE=$(since_t0 "$t_term")
ok=0
wait_until 2 nexthops_are "${D_IPS[0]} ${D_IPS[1]}" || ok=1
t_wd=$(date +%s.%N)
alive=1
pid_alive "$D3_PID" || alive=0
GRACE_MS=$(ms_between "$t_term" "$t_wd")
verdict "$([[ $ok == 0 && $alive == 1 ]] && echo 0 || echo 1)" "graceful: withdrawn before the data plane stops" \
    "route $(nexthops) after $GRACE_MS ms; d3's ringvs still forwarding: $alive (it carried $held3 flows); stop_delay ${STOP_DELAY}s"
wait_until $((STOP_DELAY + 3)) pid_gone "$D3_PID" || warn "d3's ringvs still runs after stop_delay"

# 2. death of d2.
sleep_until "$T_DEATH"
PORTS2=$(ports_of 2)
held2=$(wc -w <<<"$PORTS2")
t_kill=$(date +%s.%N)
E_DEATH=$(since_t0 "$t_kill")
in_ns d2 ip link set eth0 down
# shellcheck disable=SC2046 # the namespace's pids, one word each
kill -KILL $(ip netns pids "$(ns_name d2)") 2>/dev/null || true
ok=0
wait_until $((HOLD + 1)) nexthops_are "${D_IPS[0]}" || ok=1
WD_MS=$(ms_between "$t_kill" "$(date +%s.%N)")
verdict "$ok" "death: d2 withdrawn within the hold time" "after $WD_MS ms (hold time ${HOLD} s, polled every 0.1 s); route $(nexthops)"

# 3. d3 rejoins (its announcer never stopped), then its ringvs alone is SIGKILLed.
sleep_until "$T_REJOIN"
ip netns exec "$(ns_name d3)" "$RINGVS" run -c "$LAB_DIR/d3/ringvs.toml" </dev/null >>"$LAB_DIR/d3/ringvs.log" 2>&1 &
D3_PID=$!
disown $!
t_start=$(date +%s.%N)
E_REJOIN=$(since_t0 "$t_start")
ok=0
wait_until 10 nexthops_are "${D_IPS[0]} ${D_IPS[2]}" || ok=1
verdict "$ok" "rejoin: d3 announced once ready" "route $(nexthops) $(ms_between "$t_start" "$(date +%s.%N)") ms after its ringvs started"
sleep_until "$T_KILL"
held3b=$(ports_of 3 | wc -w)
sloppy3=$(($(metric_of 3 ringvs_sloppy_entries_total || echo 0) + 0))
t_kill=$(date +%s.%N)
kill -KILL "$D3_PID"
ok=0
wait_until 2 nexthops_are "${D_IPS[0]}" || ok=1
KILL_MS=$(ms_between "$t_kill" "$(date +%s.%N)")
verdict "$(ok_when "(( ok == 0 && KILL_MS <= 1000 ))")" "ringvs killed: its announcer withdraws within 1 s" \
    "after $KILL_MS ms (--interval 0.2); d3 had taken up $sloppy3 flows (sloppy) and carried $held3b"

wait "$FLOWS_PID" || true
[[ -s $RESULT ]] || die "flows.py printed nothing: $(cat "$LAB_DIR/flows.err")"
read -r opened okf failed errors < <("$PYTHON" -c "
import json; r=json.load(open('$RESULT'))
print(r['opened'], r['ok'], r['failed'], json.dumps(r['errors']).replace(' ',''))")
verdict "$(arith "opened == FLOWS && okf == FLOWS")" "all $FLOWS flows answered every request to the end" \
    "opened $opened, ok $okf, failed $failed, errors $errors"

# Gaps (flows.py lists each of 300 ms or more with its start), event by event, each window
# opening half a second before its event as it happened on flows.py's clock: the graceful
# stop none over 1 s; the death: the flows d2 carried wait for the withdrawal, the others not
# over 1 s; d3's rejoin and kill: none over 2 s (the withdrawal, then TCP's retransmission).
log "events on the flows' clock: graceful ${E_GRACE} s, death ${E_DEATH} s, rejoin ${E_REJOIN} s"
read -r grace_gap moved moved_min kept_gap late_gap < <("$PYTHON" -c "
import json; r=json.load(open('$RESULT')); d2=set('$PORTS2'.split())
def worst(fs, a, b): return max((g[1] for f in fs for g in f['gaps'] if a <= g[0] < b), default=0)
m=[f for f in r['per_flow'] if str(f['port']) in d2]; k=[f for f in r['per_flow'] if str(f['port']) not in d2]
print(worst(r['per_flow'], $E_GRACE - 0.5, $E_DEATH - 0.5), len(m),
      min((worst([f], $E_DEATH - 0.5, $E_REJOIN) for f in m), default=0),
      worst(k, $E_DEATH - 0.5, $E_REJOIN), worst(r['per_flow'], $E_REJOIN, 1e9))")
verdict "$(ok_when "(( held3 > 0 && ${grace_gap%.*} <= 1000 ))")" "graceful: no flow waited over 1 s" \
    "$(gap_text "$grace_gap") (d3 carried $held3 flows)"
sloppy=$(($(metric_of 1 ringvs_sloppy_entries_total || echo 0) + 0))
# The death must have hit them (each waited a second at least: the test's regime), and each
# went on through d1 (the whole-run check above), taken up there by sloppy.
verdict "$(ok_when "(( held2 > 0 && moved == held2 && sloppy >= held2 && ${moved_min%.*} >= 1000 ))")" \
    "death: d2's flows went on through the survivors" \
    "d2 carried $held2 flows ($moved found in flows.py's), every one answered to the end, each after a gap of ${moved_min} ms or more (the withdrawal's); d1's sloppy entries $sloppy"
verdict "$(ok_when "(( ${kept_gap%.*} <= 1000 ))")" "death: the other flows waited at most 1 s" "$(gap_text "$kept_gap") over $((FLOWS - moved)) flows"
verdict "$(ok_when "(( held3b > 0 && ${late_gap%.*} <= 2000 ))")" "rejoin and kill: no flow waited over 2 s" \
    "$(gap_text "$late_gap") (d3 carried $held3b flows when killed)"
ok=0
wait_until 5 new_conns_ok || ok=1
verdict "$ok" "new connections after every event" "20 in a row through d1"

echo
log "figures: graceful withdrawal after $GRACE_MS ms (before the stop); death withdrawn after $WD_MS ms; ringvs killed withdrawn after $KILL_MS ms; flows $okf/$FLOWS kept"
if ((FAILS > 0)); then
    log "$FAILS check(s) FAILED, $PASSES passed (logs in $LAB_DIR)"
    exit 1
fi
log "all $PASSES checks passed"
