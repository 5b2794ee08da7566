#!/usr/bin/env bash
# Active-backup with real keepalived (issue 14, docs/HA.md): two ringvs directors (NAT, TUN
# I/O) sync their connections over UDP; keepalived runs VRRP only, for the clients' gateway
# 10.77.20.1 and the realservers' gateway 10.77.21.254 (one sync group), tracks ringvs with
# `ringvs status`, and tells ringvs its role with `ringvs ha master|backup`.
#
#   rha-cli 10.77.20.2 ─ rha-swc (bridge) ─┬─ rha-d1 10.77.20.11 │ 10.77.21.11 ─┬─ rha-swr (bridge) ─ rha-rs1..3 10.77.21.1-3
#                                          └─ rha-d2 10.77.20.12 │ 10.77.21.12 ─┘
#   VIP 10.77.100.100:80 (routed by the client to 10.77.20.1); sync on 10.77.21.1x:8848
#   IPv6 beside it: client fd77:20::2, gateways fd77:20::1 and fd77:21::fe (keepalived's
#   excluded addresses of the same instances), directors fd77:2x::1x, realservers fd77:21::1-3,
#   VIP6 [fd77:100::100]:80 (NAT66)
#
# Two failovers, each under load: a 512 MiB download (curl, rate-limited so that it spans the
# failover) and a wrk keep-alive load, both started before, plus a new connection every 20 ms,
# and over IPv6 a 160 MiB download and a keep-alive flow:
#   1. SIGKILL of the master's ringvs (its keepalived's track script fails: FAULT);
#   2. the master's keepalived stopped (it hands over at once), after the killed ringvs was
#      restarted as backup and got the master's table in a bulk transfer.
# Checks (PASS/FAIL with figures; the exit status is the verdict): the downloads complete
# intact (sha256; IPv4 and IPv6), wrk's established connections see no error, four keep-alive
# flows (and one over IPv6) of 10
# requests a second answer every request (none stuck past 5 s), new connections resume within
# 3 VRRP advert intervals (the gap in ms is printed), the new master's role is master, the
# backup held the master's connections before the failover, and the rejoined director got a
# bulk transfer. Before the failovers, hostile sync messages (forged, replayed, truncated,
# another magic, version or count; sync_attack.py with scapy from a realserver's namespace,
# built from genuine ones captured on the backup) are each counted under their reason and
# none is taken.
#
#   bash examples/lab/test-ha.sh                    (as root; about 1.5 minutes)
#   SELFTEST_BREAK=1 bash examples/lab/test-ha.sh   (sync off: the flows must break, FAIL)
#
# Environment: RINGVS, RVS_LAB (default rha), LAB_DIR.
set -euo pipefail
RVS_LAB=${RVS_LAB:-rha}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds curl nginx wrk keepalived sha256sum "$PYTHON"
ringvs_check_binary || exit 1

PASSES=0 FAILS=0
VERDICT_WIDTH=52
CLI=10.77.20.2
GW_C=10.77.20.1
GW_R=10.77.21.254
D_C=(10.77.20.11 10.77.20.12)
D_R=(10.77.21.11 10.77.21.12)
RS_IPS=(10.77.21.1 10.77.21.2 10.77.21.3)
RS_COUNT=3
SYNC_PORT=8848
ADVERT=1             # VRRP advert interval, seconds
LOAD=16              # seconds of load per failover
KILL_AT=5            # seconds into the load
RATE=${HA_RATE:-40M} # the download's rate: 512 MiB take ~13 s
CLI6=fd77:20::2
GW_C6=fd77:20::1
GW_R6=fd77:21::fe
D_C6=(fd77:20::11 fd77:20::12)
D_R6=(fd77:21::11 fd77:21::12)
RS_IPS6=(fd77:21::1 fd77:21::2 fd77:21::3)
VIP6=fd77:100::100
RATE6=${HA_RATE6:-10M} # the IPv6 download's: 160 MiB take ~16 s
LAB_IPV6=1             # nginx listens on [::]:8080 too (lib.sh)
# Debian's python3-scapy is for Debian's python3 (a pyenv python3 first on PATH lacks it).
SCAPY_PYTHON=${SCAPY_PYTHON:-$(if [[ -x /usr/bin/python3 ]]; then echo /usr/bin/python3; else echo "$PYTHON"; fi)}
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# The lab's namespaces (lib.sh's lab_down removes these).
lab_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${RVS_LAB}-(cli|swc|swr|d[12]|rs[0-9]+)\$" || true
}

ha_up() {
    [[ $RVS_LAB =~ ^[a-z0-9]{1,8}$ ]] || die "RVS_LAB must be 1-8 lowercase letters/digits"
    lab_down
    lab_reset_dir
    local n i
    for n in cli swc swr d1 d2 rs1 rs2 rs3; do
        ip netns add "$(ns_name "$n")"
        in_ns "$n" ip link set lo up
        ns_sysctl "$n" net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
            net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    done
    in_ns swc ip link add brc type bridge
    in_ns swr ip link add brr type bridge
    in_ns swc ip link set brc up
    in_ns swr ip link set brr up
    veth cli cli0 swc pcli
    in_ns swc ip link set pcli master brc
    in_ns cli ip addr add "$CLI/24" dev cli0
    in_ns cli ip route add default via "$GW_C"
    in_ns cli ip -6 addr add "$CLI6/64" dev cli0 nodad
    in_ns cli ip -6 route add default via "$GW_C6"
    ns_sysctl cli net.ipv4.tcp_tw_reuse=1 "net.ipv4.ip_local_port_range=1024 65535"
    for i in 1 2; do
        veth "d$i" c0 swc "pd$i"
        veth "d$i" r0 swr "pd$i"
        in_ns swc ip link set "pd$i" master brc
        in_ns swr ip link set "pd$i" master brr
        in_ns "d$i" ip addr add "${D_C[i - 1]}/24" dev c0
        in_ns "d$i" ip addr add "${D_R[i - 1]}/24" dev r0
        in_ns "d$i" ip -6 addr add "${D_C6[i - 1]}/64" dev c0 nodad
        in_ns "d$i" ip -6 addr add "${D_R6[i - 1]}/64" dev r0 nodad
        ns_sysctl "d$i" net.ipv6.conf.all.forwarding=1
        ns_sysctl "d$i" net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
            net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.c0.rp_filter=0 net.ipv4.conf.r0.rp_filter=0
        # While this director's ringvs is down (killed, or not yet started), what it would have
        # forwarded is dropped here, not routed un-NATed (a client would answer a realserver's
        # reply with a reset): docs/HA.md, "protective routes".
        in_ns "d$i" ip route add blackhole "$VIP/32" metric 100
        in_ns "d$i" ip rule add iif r0 lookup 78 pref 1001
        in_ns "d$i" ip route add blackhole default table 78
        in_ns "d$i" ip -6 route add blackhole "$VIP6/128" metric 100
        in_ns "d$i" ip -6 rule add iif r0 lookup 78 pref 1001
        in_ns "d$i" ip -6 route add blackhole default table 78
    done
    for i in 1 2 3; do
        veth "rs$i" eth0 swr "prs$i"
        in_ns swr ip link set "prs$i" master brr
        in_ns "rs$i" ip addr add "${RS_IPS[i - 1]}/24" dev eth0
        in_ns "rs$i" ip route add default via "$GW_R"
        in_ns "rs$i" ip -6 addr add "${RS_IPS6[i - 1]}/64" dev eth0 nodad
        in_ns "rs$i" ip -6 route add default via "$GW_R6"
    done
    log "lab up: client $CLI via $GW_C; directors ${D_C[*]} / ${D_R[*]}; realservers ${RS_IPS[*]} via $GW_R; VIP $VIP"
}

servers_up() {
    mkdir -p "$LAB_DIR/www"
    truncate -s 512M "$LAB_DIR/www/big.bin"
    head -c 1048576 /dev/urandom >"$LAB_DIR/www/1m.bin"
    BIG_SHA=$(sha256sum "$LAB_DIR/www/big.bin" | cut -d' ' -f1)
    # The IPv6 download: big.bin's first 160 MiB (a range request).
    BIG6_SHA=$(head -c $((160 << 20)) "$LAB_DIR/www/big.bin" | sha256sum | cut -d' ' -f1)
    local i d
    for i in 1 2 3; do
        d=$LAB_DIR/rs$i
        write_nginx_conf "$i"
        in_ns "rs$i" nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" >"$d/nginx.out" 2>&1 ||
            die "nginx failed on rs$i"
    done
    for i in 1 2 3; do
        wait_until 10 listening "rs$i" tcp 8080 || die "nginx on rs$i not listening"
    done
}

sock() { echo "$LAB_DIR/d$1/admin.sock"; }
ha_cli() { # ha_cli N ARGS...: ringvs's CLI against director N
    local n=$1
    shift
    "$RINGVS" "$@" -s "$(sock "$n")"
}
ha_json() { # ha_json N KEY: one field of `ringvs ha status --json` of director N
    ha_cli "$1" ha status --json 2>/dev/null | "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

write_ringvs_conf() {
    local i=$1 peer=$((3 - $1)) sync=""
    mkdir -p "$LAB_DIR/d$i"
    if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
        sync="[director.sync]
id = $i
key = \"$KEY\"
listen = \"${D_R[i - 1]}:$SYNC_PORT\"
peers = [\"${D_R[peer - 1]}:$SYNC_PORT\"]
role = \"backup\""
    fi
    cat >"$LAB_DIR/d$i/ringvs.toml" <<EOF
# generated by examples/lab/test-ha.sh for director d$i
[director]
device = "ringvs0"
queues = 1
conn_memory_limit = "32MiB"
admin_socket = "$(sock "$i")"
metrics_listen = "off"
routes = "manual"
$sync

[[service]]
name = "web"
vip = "$VIP:80"
proto = "tcp"
forward = "nat"
scheduler = "wlc"
$(for a in "${RS_IPS[@]}"; do printf '[[service.server]]\naddr = "%s:8080"\n' "$a"; done)

# Persistent (ipvsadm -p 600 -M 255.255.255.0): sync carries its templates (sticky_*).
[[service]]
name = "sticky"
vip = "$VIP:81"
proto = "tcp"
forward = "nat"
scheduler = "rr"
persistence = { plugin = "persist-netmask", timeout = "600s", config = { netmask = "255.255.255.0" } }
$(for a in "${RS_IPS[@]}"; do printf '[[service.server]]\naddr = "%s:8080"\n' "$a"; done)

# NAT66: its connections are synced in IPv6 messages.
[[service]]
name = "web6"
vip = "[$VIP6]:80"
proto = "tcp"
forward = "nat"
scheduler = "wlc"
$(for a in "${RS_IPS6[@]}"; do printf '[[service.server]]\naddr = "[%s]:8080"\n' "$a"; done)
EOF
}

ringvs_up() { # ringvs_up N: start director N's ringvs, then its routes
    local i=$1 log=$LAB_DIR/d$1/ringvs.log
    ip netns exec "$(ns_name "d$i")" "$RINGVS" run -c "$LAB_DIR/d$i/ringvs.toml" </dev/null >>"$log" 2>&1 &
    echo $! >"$LAB_DIR/d$i/ringvs.pid"
    disown $! # killed on purpose: no job notice
    if ! wait_until 15 ha_cli "$i" status; then
        log_tail "$log"
        die "ringvs on d$i did not come up"
    fi
    in_ns "d$i" ip route replace "$VIP/32" dev ringvs0
    in_ns "d$i" ip rule del iif r0 lookup 77 pref 1000 2>/dev/null || true
    in_ns "d$i" ip rule add iif r0 lookup 77 pref 1000
    in_ns "d$i" ip route replace default dev ringvs0 table 77
    ns_sysctl "d$i" net.ipv4.conf.ringvs0.rp_filter=0
    # Metric 1: below the protective blackhole (100; IPv6 routes default to 1024).
    in_ns "d$i" ip -6 route replace "$VIP6/128" dev ringvs0 metric 1
    in_ns "d$i" ip -6 rule del iif r0 lookup 77 pref 1000 2>/dev/null || true
    in_ns "d$i" ip -6 rule add iif r0 lookup 77 pref 1000
    in_ns "d$i" ip -6 route replace default dev ringvs0 table 77
}

write_keepalived_conf() {
    local i=$1 prio=$((200 - 50 * $1)) r
    r=$RINGVS
    cat >"$LAB_DIR/d$i/keepalived.conf" <<EOF
# generated by examples/lab/test-ha.sh for director d$i (docs/HA.md explains it)
global_defs {
    router_id rha-d$i
    script_user root
    vrrp_garp_master_repeat 3
}
vrrp_script chk_ringvs {
    script "$r status -s $(sock "$i")"
    interval 1
    timeout 1
    fall 1
    rise 1
}
vrrp_sync_group ringvs {
    group {
        clients
        realservers
    }
    notify_master "$r ha master -s $(sock "$i")"
    notify_backup "$r ha backup -s $(sock "$i")"
    notify_fault "$r ha backup -s $(sock "$i")"
}
vrrp_instance clients {
    state BACKUP
    nopreempt
    interface c0
    virtual_router_id 77
    priority $prio
    advert_int $ADVERT
    virtual_ipaddress {
        $GW_C/24 dev c0
    }
    virtual_ipaddress_excluded {
        $GW_C6/64 dev c0
    }
    track_script {
        chk_ringvs
    }
}
vrrp_instance realservers {
    state BACKUP
    nopreempt
    interface r0
    virtual_router_id 78
    priority $prio
    advert_int $ADVERT
    virtual_ipaddress {
        $GW_R/24 dev r0
    }
    virtual_ipaddress_excluded {
        $GW_R6/64 dev r0
    }
    track_script {
        chk_ringvs
    }
}
EOF
}

keepalived_up() {
    local i=$1 d=$LAB_DIR/d$1
    ip netns exec "$(ns_name "d$i")" keepalived --vrrp --dont-fork --log-console --log-detail \
        --use-file="$d/keepalived.conf" --pid="$d/keepalived.pid" --vrrp_pid="$d/vrrp.pid" \
        --checkers_pid="$d/checkers.pid" </dev/null >>"$d/keepalived.log" 2>&1 &
    echo $! >"$d/keepalived.main"
}

has_addr() { in_ns "$1" ip -o addr show | grep -F " $2/" >/dev/null; }
role_is() { [[ $(ha_json "$1" role) == "$2" ]]; }

# failover NAME MASTER ACTION: load, ACTION on director MASTER at KILL_AT s, checks.
failover() {
    local name=$1 m=$2 action=$3 b=$((3 - $2)) dl=$LAB_DIR/dl-$1.bin
    log "failover '$name': $action on d$m while a 512 MiB download (at $RATE/s), wrk keep-alive and new connections run"
    ip netns exec "$(ns_name cli)" timeout 120 curl -s --limit-rate "$RATE" -o "$dl" \
        "http://$VIP/big.bin" </dev/null 2>"$LAB_DIR/curl-$name.err" &
    local curl_pid=$!
    local dl6=$LAB_DIR/dl6-$1.bin
    ip netns exec "$(ns_name cli)" timeout 120 curl -s -g --limit-rate "$RATE6" -o "$dl6" \
        -r 0-$(((160 << 20) - 1)) "http://[$VIP6]/big.bin" </dev/null 2>"$LAB_DIR/curl6-$name.err" &
    local curl6_pid=$!
    ip netns exec "$(ns_name cli)" timeout $((LOAD + 20)) "$PYTHON" "$LAB_SRC/http_probe.py" "$VIP6:80" \
        --keepalive --seconds "$LOAD" --rate 10 --deadline 2 </dev/null >"$LAB_DIR/keep6-$name.json" 2>&1 &
    local probe6=$!
    # Paced (5 ms between a connection's requests): a load, not a CPU hog on two cores.
    printf 'function delay()\n    return 5\nend\n' >"$LAB_DIR/pace.lua"
    wrk_start "$name" "$LOAD" / -t 1 -c 8 --timeout 10s -s "$LAB_DIR/pace.lua"
    local wrk_pid=$WRK_PID
    ip netns exec "$(ns_name cli)" timeout $((LOAD + 20)) "$PYTHON" "$LAB_SRC/conn_gap.py" "$VIP:80" \
        --seconds "$LOAD" </dev/null >"$LAB_DIR/gap-$name.json" 2>&1 &
    local gap_pid=$!
    # Four established flows of their own, 10 requests a second each: any error or a request
    # stuck past 5 s ends one (http_probe.py --keepalive).
    local k probes=()
    for k in 1 2 3 4; do
        ip netns exec "$(ns_name cli)" timeout $((LOAD + 20)) "$PYTHON" "$LAB_SRC/http_probe.py" "$VIP:80" \
            --keepalive --seconds "$LOAD" --rate 10 --deadline 2 </dev/null >"$LAB_DIR/keep-$name-$k.json" 2>&1 &
        probes+=($!)
    done
    local t0=$SECONDS
    sleep "$KILL_AT"
    local held lag
    held=$(ha_json "$b" held || echo 0)
    lag=$(ha_json "$m" lag_ms || echo ?)
    verdict "$(arith "${held:-0} > 0")" "$name: backup holds the master's flows" "$held entries held on d$b before the failover; sync lag on d$m ${lag} ms"
    verdict "$(ok_if pid_alive "$curl_pid")" "$name: download still running at the failover" "$(stat -c %s "$dl" 2>/dev/null || echo 0) bytes so far"
    case $action in
        kill-ringvs) kill -KILL "$(cat "$LAB_DIR/d$m/ringvs.pid")" ;;
        stop-keepalived) kill -TERM "$(cat "$LAB_DIR/d$m/keepalived.main")" ;;
    esac
    local at=$((SECONDS - t0))
    local rc=0 rc6=0
    wait "$curl_pid" || rc=$?
    wait "$curl6_pid" || rc6=$?
    wait "$probe6" || true
    wrk_wait "$name" "$wrk_pid" || true
    wait "$gap_pid" || true
    for k in "${probes[@]}"; do wait "$k" || true; done
    local sha=""
    if [[ -f $dl ]]; then sha=$(sha256sum "$dl" | cut -d' ' -f1); fi
    verdict "$(ok_when "[[ $rc == 0 && $sha == $BIG_SHA ]]")" "$name: 512 MiB download intact" \
        "curl status $rc, $(stat -c %s "$dl" 2>/dev/null || echo 0) bytes, sha256 ${sha:0:12}… (want ${BIG_SHA:0:12}…)"
    local sha6=""
    if [[ -f $dl6 ]]; then sha6=$(sha256sum "$dl6" | cut -d' ' -f1); fi
    verdict "$(ok_when "[[ $rc6 == 0 && $sha6 == $BIG6_SHA ]]")" "$name: IPv6 160 MiB download intact" \
        "curl status $rc6, $(stat -c %s "$dl6" 2>/dev/null || echo 0) bytes, sha256 ${sha6:0:12}… (want ${BIG6_SHA:0:12}…)"
    verdict "$(arith "${WRK_SOCK_ERRORS:-1} == 0 && ${WRK_NON2XX:-1} == 0 && ${WRK_REQUESTS:-0} > 0")" \
        "$name: wrk keep-alive: no errors" "${WRK_REQUESTS:-?} requests, errors: ${WRK_ERRORS_DETAIL:-none}, non-2xx ${WRK_NON2XX:-?}"
    local kept
    kept=$("$PYTHON" - "$LAB_DIR"/keep-"$name"-*.json <<'PY'
import json, sys
ok = 0
for f in sys.argv[1:]:
    try:
        r = json.load(open(f))
    except ValueError:
        continue
    ok += r["failed"] == 0 and r["ok"] + r["late"] == r["planned"]
print(ok)
PY
)
    verdict "$(arith "${kept:-0} == 4")" "$name: established flows kept" \
        "$kept of 4 keep-alive flows answered every request: $(cat "$LAB_DIR"/keep-"$name"-*.json | tr '\n' ' ')"
    local kept6
    kept6=$("$PYTHON" -c "
import json
r = json.load(open('$LAB_DIR/keep6-$name.json'))
print(int(r['failed'] == 0 and r['ok'] + r['late'] == r['planned']),
      'ok', r['ok'], 'late', r['late'], 'failed', r['failed'], 'of', r['planned'], r['errors'])" 2>/dev/null ||
        echo "0 no report: $(head -c 300 "$LAB_DIR/keep6-$name.json")")
    verdict "$(arith "${kept6%% *} == 1")" "$name: IPv6 established flow kept" \
        "requests ${kept6#* }"
    local gap
    gap=$("$PYTHON" -c "import json; print(json.load(open('$LAB_DIR/gap-$name.json'))['gap_ms'])" 2>/dev/null || echo 99999)
    verdict "$(ok_when "(( ${gap%.*} <= 3 * $ADVERT * 1000 ))")" "$name: new connections within 3 adverts" \
        "gap ${gap} ms (limit $((3 * ADVERT * 1000)) ms; $action at ${at} s): $(cat "$LAB_DIR/gap-$name.json")"
    verdict "$(ok_if wait_until 5 role_is "$b" master)" "$name: d$b is master" \
        "role $(ha_json "$b" role 2>/dev/null || echo ?), holds $GW_C: $(has_addr "d$b" "$GW_C" && echo yes || echo no)"
    rm -f "$dl" "$dl6"
}

# sticky_ask N: N new connections from the client to the persistent service; prints the
# realserver (rsK) each answer came from.
sticky_ask() {
    local k
    for ((k = 0; k < $1; k++)); do
        in_ns cli curl -s --max-time 3 "http://$VIP:81/" </dev/null | grep -o 'rs[0-9]</h1>' | cut -c1-3 |
            grep . || echo none
    done | tr '\n' ' '
}

# sticky_pin: the client's network is pinned to one realserver on the master (d1), which is
# then quiesced (weight 0) on both directors; sets PINNED (rsK) and PINNED_ADDR.
sticky_pin() {
    local got i tpl
    got=$(sticky_ask 3)
    PINNED=${got%% *}
    verdict "$(ok_when "[[ '$got' == '$PINNED $PINNED $PINNED ' && $PINNED == rs[123] ]]")" \
        "persistent client pinned on d1" "answers: $got"
    local k=1
    if [[ $PINNED == rs[123] ]]; then k=${PINNED#rs}; fi
    PINNED_ADDR=${RS_IPS[k - 1]}:8080
    for i in 1 2; do ha_cli "$i" server weight sticky "$PINNED_ADDR" 0 >/dev/null || true; done
    # Its template reached the backup with the connections (synced at their third packet).
    wait_until 5 eval '(( $(sticky_templates 2) >= 1 ))' || true
    tpl=$(sticky_templates 2 || echo ?)
    verdict "$(ok_when "[[ '$tpl' == 1 ]]")" "the backup holds the client's template" \
        "PersistConn of $PINNED_ADDR on d2: $tpl"
}

# sticky_templates N: PersistConn of the pinned realserver in director N's sticky service.
sticky_templates() {
    ha_cli "$1" list --json | "$PYTHON" -c "
import json, sys
l = json.load(sys.stdin)
print(sum(s['persistent'] for v in l['services'] if v['name'] == 'sticky'
          for s in v['servers'] if s['addr'] == '$PINNED_ADDR'))"
}

# sticky_after: after the takeover, the persistent client still reaches its (quiesced)
# realserver through d2: the template came by sync (rr alone would pick another).
sticky_after() {
    local got
    got=$(sticky_ask 3)
    verdict "$(ok_when "[[ '$got' == '$PINNED $PINNED $PINNED ' ]]")" \
        "persistent client kept its realserver across the failover" "answers via d2: $got (want $PINNED, quiesced)"
    ha_cli 2 server weight sticky "$PINNED_ADDR" 1 >/dev/null || true
}

# attack: hostile sync messages from a realserver's namespace (sync_attack.py, scapy), built
# from genuine ones captured on d2: each counted under its reason, none taken.
attack() {
    local cap=$LAB_DIR/sync.pcap k
    (in_ns d2 timeout 3 tcpdump -i r0 -U -w "$cap" "udp dst port $SYNC_PORT and src host ${D_R[0]}" \
        </dev/null >"$LAB_DIR/tcpdump-sync.log" 2>&1 || true) &
    local tp=$!
    sleep 0.5
    for k in 1 2 3 4 5; do in_ns cli curl -s -o /dev/null --max-time 2 "http://$VIP/" || true; done
    wait "$tp" || true
    sleep 1.5 # what the curls' connections sent has arrived
    ha_cli 2 ha status --json >"$LAB_DIR/attack-before.json"
    ip netns exec "$(ns_name rs1)" "$SCAPY_PYTHON" "$LAB_SRC/sync_attack.py" --pcap "$cap" \
        --to "${D_R[1]}:$SYNC_PORT" --spoof "${D_R[0]}" </dev/null >"$LAB_DIR/attack.json" 2>"$LAB_DIR/attack.err" || {
        log_tail "$LAB_DIR/attack.err"
    }
    sleep 1
    ha_cli 2 ha status --json >"$LAB_DIR/attack-after.json"
    local res
    res=$("$PYTHON" - "$LAB_DIR/attack.json" "$LAB_DIR/attack-before.json" "$LAB_DIR/attack-after.json" <<'PY'
import json, sys
try:
    sent = json.load(open(sys.argv[1]))
except ValueError:
    print("FAIL no attack report"); sys.exit()
b, a = (json.load(open(f)) for f in sys.argv[2:4])
counted = {r: a["rejected"][r] - b["rejected"].get(r, 0) for r in a["rejected"]}
want = {r: sent["sent"].get(r, 0) for r in counted}
same = all(a[k] == b[k] for k in ("applied", "held", "received_entries"))
ok = counted == want and same and sum(want.values()) > 0
print("OK" if ok else "FAIL", "counted", {k: v for k, v in counted.items() if v},
      "sent", sent["sent"], "sample kind", sent["sample_kind"], "entries", sent["sample_entries"],
      "taken/held before", b["applied"], b["held"], "after", a["applied"], a["held"])
PY
)
    verdict "$(ok_when "[[ '${res%% *}' == OK ]]")" "hostile sync messages counted, none taken" "${res#* }"
}

lab_trap
ha_up
servers_up
for i in 1 2; do
    write_ringvs_conf "$i"
    ringvs_up "$i"
    write_keepalived_conf "$i"
done
keepalived_up 1
keepalived_up 2
wait_until 10 has_addr d1 "$GW_C" || {
    log_tail "$LAB_DIR/d1/keepalived.log"
    die "d1 did not become VRRP master"
}
if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
    wait_until 5 role_is 1 master || die "keepalived's notify_master did not make d1's ringvs master"
fi
wait_until 10 in_ns cli curl -sf -o /dev/null --max-time 1 "http://$VIP/" || die "no HTTP through the VIP"
wait_until 10 in_ns cli curl -sf -g -o /dev/null --max-time 1 "http://[$VIP6]/" || die "no HTTP through the VIP6"
log "d1 is master; HTTP through $VIP and [$VIP6] works"
if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then attack; fi

if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then sticky_pin; fi
failover kill-ringvs 1 kill-ringvs
if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then sticky_after; fi

# d1 comes back as backup; d2 (master) sends it its table.
ringvs_up 1
if [[ ${SELFTEST_BREAK:-0} != 1 ]]; then
    verdict "$(ok_if wait_until 10 eval '(( $(ha_json 1 bulk_received) >= 1 ))')" "rejoined d1 got d2's table in bulk" \
        "bulk transfers received: $(ha_json 1 bulk_received), held $(ha_json 1 held), d2 bulk sent $(ha_json 2 bulk_sent)"
fi
wait_until 10 eval '[[ $(ha_json 1 role) == backup ]]' || true
failover stop-keepalived 2 stop-keepalived

for i in 1 2; do
    if ha_cli "$i" ha status >"$LAB_DIR/d$i/ha-status.txt" 2>&1; then
        sed "s/^/    d$i | /" "$LAB_DIR/d$i/ha-status.txt" >&2
    fi
done
printf '\n[lab] HA: %d passed, %d failed\n' "$PASSES" "$FAILS" >&2
((FAILS == 0))
