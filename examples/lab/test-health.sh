#!/usr/bin/env bash
# Health checks under load, in the netns lab (examples/lab/health.toml: HTTP GET /health.html
# every 1 s, timeout 500 ms, fall 3, rise 2, on_fail quiesce). Prints every check as
# PASS/FAIL with its figures, then the failover figures; the exit status is the verdict.
#
#   sudo bash examples/lab/test-health.sh       (about 40 s; RVS_LAB, LAB_DIR, RINGVS as in lib.sh)
#
# 1. start: every realserver is pending until its first check passes, then up.
# 2. failover: under wrk (Connection: close, a new flow per request), nginx on rs3 stops.
#    Within the detection window (fall × interval + timeout) the checker declares rs3 down
#    (the time of its log line: polling `ringvs list` through `ip netns exec` adds up to a
#    second on a busy 2-core machine), `ringvs list` shows it, and not before fall checks
#    could have failed; ringvs_backend_up for rs3 turns 0. Errors
#    inside the window are expected (nginx resets what it held, and flows scheduled before
#    the verdict are refused) and are only reported. After the window: a wrk run with zero
#    errors and zero non-2xx, and no new flow scheduled to rs3 (its connection counter in
#    `ringvs list --stats` does not move).
# 3. recovery: nginx on rs3 starts again under wrk; within the rise window rs3 is up, wrk has
#    zero errors, and rs3 serves client requests again.
# 4. quiesce keeps flows: with 6 keep-alive connections open, the health page of the server
#    holding most of them disappears (HTTP 404). It goes down, gets no new flow, but its open
#    connections are still served (its access log keeps growing) and wrk sees zero errors.
#
# SELFTEST_BREAK=1 removes the health check from the config before starting ringvs: the
# failover checks must then fail (proves the test can fail).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# lib.sh defaults CONF to lab.toml; this test runs on its own config (HEALTH_CONF to change it).
CONF=${HEALTH_CONF:-$LAB_SRC/health.toml}
require_root
require_cmds wrk curl nginx "$PYTHON"
ringvs_check_binary || {
    echo "FAIL  ringvs binary present: $RINGVS"
    exit 1
}

PASSES=0 FAILS=0
VERDICT_WIDTH=40 # verdict and arith: lib.sh
now_ms() { date +%s%3N; }
secs() { # secs MS ("never" for -1)
    if (($1 < 0)); then printf 'never'; else printf '%d.%03d s' $(($1 / 1000)) $(($1 % 1000)); fi
}

# The check settings, read from the config so that the bounds follow it.
read -r INTERVAL_MS TIMEOUT_MS RISE FALL < <("$PYTHON" - "$CONF" <<'EOF'
import re, sys, tomllib
h = tomllib.load(open(sys.argv[1], "rb"))["service"][0]["health"]
def ms(v):
    if isinstance(v, int):
        return v * 1000
    n, u = re.fullmatch(r"(\d+)\s*(ms|s|m)?", v).groups()
    return int(n) * {"ms": 1, "s": 1000, "m": 60000, None: 1000}[u]
print(ms(h.get("interval", "2s")), ms(h.get("timeout", "1s")), h.get("rise", 2), h.get("fall", 3))
EOF
)
WINDOW_MS=$((FALL * INTERVAL_MS + TIMEOUT_MS))
RISE_MS=$((RISE * INTERVAL_MS))
WEB_RS=("${RS_IPS[@]/%/:8080}")

# server_state N: "HEALTH CONNS" of realserver rsN in service web (CONNS: its scheduled
# connections, `ringvs list --stats`). "? ?" when the daemon does not answer.
server_state() {
    ringvs_cli list --json 2>/dev/null | "$PYTHON" -c '
import json, sys
addr = sys.argv[1]
try:
    l = json.load(sys.stdin)
    s = [s for v in l["services"] if v["name"] == "web" for s in v["servers"] if s["addr"] == addr][0]
    print(s["health"], s["stats"]["conns"])
except Exception:
    print("? ?")
' "${WEB_RS[$1 - 1]}"
}
health_is() { # health_is N STATE
    local h c
    read -r h c < <(server_state "$1")
    [[ $h == "$2" ]]
}
conns_of() {
    local h c
    read -r h c < <(server_state "$1")
    echo "$c"
}
backend_up() { metric "ringvs_backend_up{service=\"web\",server=\"${WEB_RS[$1 - 1]}\"}"; }
backend_up_is() { [[ $(backend_up "$1") == "$2" ]]; }

# checker_ms WHAT N T0_MS: ms from T0_MS (this machine's clock, `now_ms`) to the first
# "realserver WHAT" (UP or DOWN) the daemon logged for rsN at or after T0_MS: the checker's own
# verdict time, free of the polling in wait_health. -1 when there is none.
checker_ms() {
    "$PYTHON" - "$LAB_DIR/ringvs.log" "$1" "${WEB_RS[$2 - 1]}" "$3" <<'EOF'
import datetime, re, sys
path, what, server, t0 = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = -1
for line in open(path, errors="replace"):
    if f"realserver {what}" not in line or f" server={server} " not in line + " ":
        continue
    m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if not m:
        continue
    t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    ms = int(t.timestamp() * 1000) - t0
    if ms >= 0:
        out = ms
        break
print(out)
EOF
}

# busiest: "N ACTIVE" for the realserver of service web holding the most ESTABLISHED
# connections.
busiest() {
    ringvs_cli list --json 2>/dev/null | "$PYTHON" -c '
import json, sys
addrs = sys.argv[1:]
l = json.load(sys.stdin)
act = {s["addr"]: s["active"] for v in l["services"] if v["name"] == "web" for s in v["servers"]}
i = max(range(len(addrs)), key=lambda i: act.get(addrs[i], 0))
print(i + 1, act.get(addrs[i], 0))
' "${WEB_RS[@]}"
}

# wait_health N STATE DEADLINE_MS: polls every 100 ms; prints the ms it took, fails after the
# deadline.
wait_health() {
    local t0 t
    t0=$(now_ms)
    while ! health_is "$1" "$2"; do
        t=$(now_ms)
        ((t - t0 < $3)) || return 1
        sleep 0.1
    done
    echo $(($(now_ms) - t0))
}

start_nginx() { # start_nginx N: the realserver's nginx again, with the config lib.sh wrote
    local d=$LAB_DIR/rs$1
    in_ns "rs$1" nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" >>"$d/nginx.out" 2>&1 ||
        die "nginx failed to start again on rs$1"
}

client_hits() { # client_hits N: client requests rsN logged since hits_baseline
    access_lines "$1" | grep -c "^$CLI_IP " || true
}

lab_trap
lab_up
start_servers
for ((i = 1; i <= RS_COUNT; i++)); do echo ok >"$LAB_DIR/rs$i/html/health.html"; done
if [[ ${SELFTEST_BREAK:-0} == 1 ]]; then
    log "SELFTEST_BREAK: running without health checks; the failover checks must fail"
    sed '/^health = /d' "$CONF" >"$LAB_DIR/health-broken.toml"
    CONF=$LAB_DIR/health-broken.toml
fi

# 1. start ------------------------------------------------------------------------------------
T_RUN=$(now_ms)
fwd_up ringvs || die "ringvs did not come up"
up=0
for ((i = 1; i <= RS_COUNT; i++)); do
    if wait_health "$i" up 10000 >/dev/null; then up=$((up + 1)); fi
done
T_ALL_UP=$(($(now_ms) - T_RUN))
verdict "$(arith "up == RS_COUNT")" "start: every server checked and up" \
    "$up/$RS_COUNT up, $(secs "$T_ALL_UP") after ringvs was started"
ringvs_cli list

# 2. failover under load -----------------------------------------------------------------------
wrk_run baseline 3 -t2 -c16 -H 'Connection: close' || die "baseline wrk failed"
verdict "$(arith "WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0 && WRK_REQUESTS > 0")" "baseline: all servers up, no errors" \
    "$WRK_REQUESTS requests ($WRK_RPS/s), socket errors $WRK_SOCK_ERRORS, non-2xx $WRK_NON2XX"

WINDOW_SECS=$(((WINDOW_MS + 999) / 1000 + 1))
wrk_start window "$WINDOW_SECS" / -t2 -c16 -H 'Connection: close' --timeout 2s
window_pid=$WRK_PID
sleep 0.3
T_STOP=$(now_ms)
stop_nginx 3
if wait_health 3 down $((WINDOW_MS + 5000)) >/dev/null; then
    DETECT_MS=$(($(now_ms) - T_STOP))
else
    DETECT_MS=-1
fi
DECIDED_MS=$(checker_ms DOWN 3 "$T_STOP")
METRIC_MS=-1
if wait_until 5 backend_up_is 3 0; then METRIC_MS=$(($(now_ms) - T_STOP)); fi
wrk_wait window "$window_pid" || die "window wrk failed"
IN_REQUESTS=$WRK_REQUESTS IN_ERRORS=$WRK_SOCK_ERRORS IN_DETAIL=$WRK_ERRORS_DETAIL IN_NON2XX=$WRK_NON2XX
verdict "$(arith "DECIDED_MS >= 0 && DECIDED_MS <= WINDOW_MS && DETECT_MS >= 0")" "failover: rs3 down within the window" \
    "checker's DOWN $(secs "$DECIDED_MS") after nginx stopped (window $(secs "$WINDOW_MS")); shown down in \`ringvs list\` after $(secs "$DETECT_MS") of polling"
verdict "$(arith "DECIDED_MS >= (FALL - 1) * INTERVAL_MS - TIMEOUT_MS")" "failover: not before $FALL failed checks" \
    "$(secs "$DECIDED_MS") >= $((FALL - 1)) intervals less one timeout, for a check under way at the stop ($(secs $(((FALL - 1) * INTERVAL_MS - TIMEOUT_MS))))"
verdict "$(arith "METRIC_MS >= 0")" "failover: ringvs_backend_up is 0" \
    "ringvs_backend_up{server=\"${WEB_RS[2]}\"} = $(backend_up 3), $(secs "$METRIC_MS") after the stop"

conns0=$(conns_of 3)
hits_baseline
wrk_run after 5 -t2 -c16 -H 'Connection: close' || die "after-window wrk failed"
conns1=$(conns_of 3)
count_hits "^$CLI_IP "
new_flows=$((conns1 - conns0))
verdict "$(arith "WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0 && WRK_REQUESTS > 0")" "after the window: zero errors" \
    "$WRK_REQUESTS requests ($WRK_RPS/s), socket errors $WRK_SOCK_ERRORS${WRK_ERRORS_DETAIL:+ ($WRK_ERRORS_DETAIL)}, non-2xx $WRK_NON2XX"
verdict "$(arith "new_flows == 0 && HITS[1] > 0 && HITS[2] > 0")" "after the window: no flow to rs3" \
    "new flows scheduled to rs3: $new_flows ($conns0 -> $conns1); served: $HITS_SPREAD"
AFTER_REQUESTS=$WRK_REQUESTS AFTER_ERRORS=$((WRK_SOCK_ERRORS + WRK_NON2XX))
refused=$(metric "ringvs_health_checks_total{service=\"web\",server=\"${WEB_RS[2]}\",result=\"refused\"}")
verdict "$(arith "${refused:-0} >= FALL")" "failover: refused checks counted" \
    "ringvs_health_checks_total{server=\"${WEB_RS[2]}\",result=\"refused\"} = ${refused:-absent}"
ringvs_cli list

# 3. recovery ----------------------------------------------------------------------------------
RECOVER_SECS=$(((RISE_MS + 999) / 1000 + 4))
wrk_start recover "$RECOVER_SECS" / -t2 -c16 -H 'Connection: close' --timeout 2s
recover_pid=$WRK_PID
sleep 0.3
T_START=$(now_ms)
start_nginx 3
if wait_health 3 up $((RISE_MS + 5000)) >/dev/null; then
    RECOVER_MS=$(($(now_ms) - T_START))
else
    RECOVER_MS=-1
fi
RECOVER_DECIDED_MS=$(checker_ms UP 3 "$T_START")
hits_baseline
wrk_wait recover "$recover_pid" || die "recovery wrk failed"
rs3_hits=$(client_hits 3)
verdict "$(arith "RECOVER_DECIDED_MS >= 0 && RECOVER_DECIDED_MS <= RISE_MS + TIMEOUT_MS && RECOVER_MS >= 0")" "recovery: rs3 up within the rise window" \
    "checker's UP $(secs "$RECOVER_DECIDED_MS") after nginx started (rise window $(secs "$RISE_MS") + one check's timeout); shown up in \`ringvs list\` after $(secs "$RECOVER_MS") of polling"
verdict "$(arith "RECOVER_DECIDED_MS < 0 || RECOVER_DECIDED_MS >= (RISE - 1) * INTERVAL_MS - TIMEOUT_MS")" "recovery: not before $RISE passed checks" \
    "$(secs "$RECOVER_DECIDED_MS") >= $((RISE - 1)) interval(s) less one timeout"
verdict "$(arith "WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0 && rs3_hits > 0")" "recovery: zero errors, rs3 serves again" \
    "$WRK_REQUESTS requests, socket errors $WRK_SOCK_ERRORS, non-2xx $WRK_NON2XX; rs3 served $rs3_hits client requests after it came up"
verdict "$(ok=1; wait_until 3 backend_up_is 3 1 && ok=0; echo $ok)" "recovery: ringvs_backend_up is 1" \
    "ringvs_backend_up{server=\"${WEB_RS[2]}\"} = $(backend_up 3)"

# 4. quiesce keeps existing flows --------------------------------------------------------------
KA_SECS=$(((WINDOW_MS + 999) / 1000 + 5))
hits_baseline
wrk_start keepalive "$KA_SECS" / -t1 -c6 --timeout 2s
ka_pid=$WRK_PID
sleep 1
# Quiesce the server holding the most of the 6 connections: wlc sends them by load, and the
# servers' loads differ here (rs3 restarted with fewer TIME_WAIT entries), so one server may
# hold none.
read -r Q Q_ACTIVE < <(busiest) || true
[[ ${Q:-} =~ ^[0-9]+$ ]] && ((Q >= 1 && Q <= RS_COUNT)) || Q=2 Q_ACTIVE="?"
rm -f "$LAB_DIR/rs$Q/html/health.html"
if wait_health "$Q" down $((WINDOW_MS + 5000)) >/dev/null; then q_down=0; else q_down=1; fi
conns0=$(conns_of "$Q")
before=$(client_hits "$Q")
sleep 2
during=$(($(client_hits "$Q") - before))
wrk_wait keepalive "$ka_pid" || die "keep-alive wrk failed"
conns1=$(conns_of "$Q")
verdict "$q_down" "quiesce: down on HTTP 404" "rs$Q, holding $Q_ACTIVE of the 6 keep-alive connections:$(ringvs_cli list | grep "${WEB_RS[Q - 1]}" | tr -s ' ')"
verdict "$(arith "during > 0 && conns1 == conns0 && WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0")" "quiesce: open flows kept, no new ones" \
    "rs$Q served $during requests on its open connections in 2 s while down; new flows to it: $((conns1 - conns0)); wrk: $WRK_REQUESTS requests, socket errors $WRK_SOCK_ERRORS, non-2xx $WRK_NON2XX"
echo ok >"$LAB_DIR/rs$Q/html/health.html"
verdict "$(ok=1; wait_health "$Q" up $((RISE_MS + 5000)) >/dev/null && ok=0; echo $ok)" "quiesce: back up" "rs$Q: health page restored"

fwd_down
verdict "$([[ $RINGVS_EXIT == "exit 0" ]] && echo 0 || echo 1)" "clean stop on SIGTERM" "$RINGVS_EXIT (want exit 0 within 5 s)"
grep -E 'realserver (UP|DOWN)' "$LAB_DIR/ringvs.log" | sed 's/^/    log: /' | tail -n 12 || true

echo
echo "failover figures (interval $INTERVAL_MS ms, timeout $TIMEOUT_MS ms, fall $FALL, rise $RISE; detection window $(secs "$WINDOW_MS"), rise window $(secs "$RISE_MS"))"
echo "  all servers up after start:         $(secs "$T_ALL_UP")"
echo "  nginx stop -> checker's DOWN:       $(secs "$DECIDED_MS") (its log line)"
echo "  nginx stop -> DOWN in ringvs list:  $(secs "$DETECT_MS")"
echo "  nginx stop -> ringvs_backend_up 0:  $(secs "$METRIC_MS") (metrics refresh once a second)"
echo "  errors inside the window:           $((IN_ERRORS + IN_NON2XX)) of $IN_REQUESTS requests${IN_DETAIL:+ ($IN_DETAIL)}"
echo "  errors after the window:            $AFTER_ERRORS of $AFTER_REQUESTS requests"
echo "  new flows to rs3 while down:        $new_flows"
echo "  nginx start -> checker's UP:        $(secs "$RECOVER_DECIDED_MS") (its log line)"
echo "  nginx start -> UP in ringvs list:   $(secs "$RECOVER_MS")"
echo
if ((FAILS > 0)); then
    echo "test-health: FAILED — $FAILS failed, $PASSES passed"
    exit 1
fi
echo "test-health: PASSED — $PASSES checks"
