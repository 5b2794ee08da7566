#!/usr/bin/env bash
# Soak, in the netns lab: SOAK_MINUTES (30) of mixed traffic against one running daemon —
# wrk keep-alive and wrk Connection: close on the web service, UDP round trips on the dns
# service, a modest spoofed SYN flood (SOAK_FLOOD_PPS, 2000 a second, random sources) — while
# every minute the web scheduler is swapped (`ringvs plugin swap`), the config is edited and
# reloaded (`ringvs reload`), and every other minute rs3's health check flaps (quiesced, then
# back). Every 10 s it samples the daemon's RSS, open descriptors and table entries.
#
# It passes when legitimate clients saw no error at all (wrk socket errors and non-2xx, UDP
# answers) and, over the second half of the run (after warm-up), RSS, descriptors and entries
# stay flat: the least-squares slope of RSS under 1 MiB per 10 minutes, of descriptors under
# 1 per 10 minutes, of entries under 5 % of their mean per 10 minutes. With SOAK_MINUTES
# under 10 (a smoke) the slopes are reported, not judged.
#
#   bash examples/lab/soak.sh                    (as root; 30 minutes; not in CI)
#   SOAK_MINUTES=2 bash examples/lab/soak.sh     (a smoke)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds hping3 wrk curl "$PYTHON"
ringvs_check_binary || exit 1

MINUTES=${SOAK_MINUTES:-30}
FLOOD_PPS=${SOAK_FLOOD_PPS:-2000}
VERDICT_WIDTH=34
check() { verdict "$2" "$1" "$3"; }

lab_trap
lab_up
start_servers
for ((i = 1; i <= RS_COUNT; i++)); do echo ok >"$LAB_DIR/rs$i/html/health.html"; done
conf=$LAB_DIR/soak.toml
# The lab's config, the web service health-checked (a failing realserver is quiesced).
sed 's|^scheduler = "sched-wlc"|&\nhealth = { check = "http", path = "/health.html", expect = 200, interval = "1s", timeout = "500ms", rise = 2, fall = 2, on_fail = "quiesce" }|' \
    "$LAB_SRC/lab.toml" >"$conf"
grep -q 'check = "http"' "$conf" || die "could not add the health check to $conf"
CONF=$conf fwd_up ringvs || die "ringvs did not come up"

samples=$LAB_DIR/soak-samples.txt
: >"$samples"
sample() { # seconds since start, RSS KiB, descriptors, entries
    local rss fds entries
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$RINGVS_PID/status")
    fds=$(find "/proc/$RINGVS_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    entries=$(in_ns dir curl -s --max-time 5 "http://127.0.0.1:9406/metrics" |
        awk '$1 ~ /^ringvs_conntable_entries\{/ { s += $2 } END { print s + 0 }')
    echo "$(($(date +%s) - T0)) $rss $fds $entries" >>"$samples"
}

T0=$(date +%s)
END=$((T0 + MINUTES * 60))
# The flood, bounded by the run's length.
in_ns cli timeout $((MINUTES * 60 + 5)) hping3 -S -p 80 -i "u$((1000000 / FLOOD_PPS))" --rand-source \
    "$VIP" >"$LAB_DIR/soak-hping.txt" 2>&1 &
flood_pid=$!

ka_req=0 ka_err=0 close_req=0 close_err=0 udp_sent=0 udp_ok=0 swaps=0 reloads=0 flaps=0
minute=0
sched=sched-wlc
while (($(date +%s) < END)); do
    minute=$((minute + 1))
    secs=$((END - $(date +%s)))
    ((secs > 60)) && secs=60
    ((secs < 5)) && break
    wrk_start "ka-$minute" "$secs" / -t1 -c4 --timeout 2s
    ka=$WRK_PID
    wrk_start "close-$minute" "$secs" / -t1 -c4 -H 'Connection: close' --timeout 2s
    cl=$WRK_PID
    sample
    sleep 5
    # Swap the scheduler at run time, then edit the file the other way and reload.
    [[ $sched == sched-wlc ]] && sched=sched-rr || sched=sched-wlc
    ringvs_cli plugin swap web "$sched" >/dev/null && swaps=$((swaps + 1))
    sample
    if ((minute % 2 == 0)); then
        rm -f "$LAB_DIR/rs3/html/health.html"
        flaps=$((flaps + 1))
    fi
    sleep 10
    sample
    echo ok >"$LAB_DIR/rs3/html/health.html"
    if udp_probe 200; then
        udp_sent=$((udp_sent + UDP_SENT)) udp_ok=$((udp_ok + UDP_ANSWERED))
    else
        udp_sent=$((udp_sent + 200))
    fi
    [[ $sched == sched-wlc ]] && other=sched-rr || other=sched-wlc
    sed -i "s/^scheduler = \"sched-\(wlc\|rr\)\"/scheduler = \"$other\"/" "$conf"
    ringvs_cli reload >/dev/null && reloads=$((reloads + 1))
    sched=$other
    sleep 10
    sample
    wrk_wait "ka-$minute" "$ka" || true
    ka_req=$((ka_req + ${WRK_REQUESTS:-0})) ka_err=$((ka_err + ${WRK_SOCK_ERRORS:-1} + ${WRK_NON2XX:-0}))
    wrk_wait "close-$minute" "$cl" || true
    close_req=$((close_req + ${WRK_REQUESTS:-0})) close_err=$((close_err + ${WRK_SOCK_ERRORS:-1} + ${WRK_NON2XX:-0}))
    sample
    log "minute $minute: keep-alive $ka_req requests ($ka_err errors), close $close_req ($close_err), udp $udp_ok/$udp_sent; $(tail -1 "$samples")"
done
kill "$flood_pid" 2>/dev/null || true
wait "$flood_pid" 2>/dev/null || true

# Least-squares slopes over the second half, per 10 minutes; what the verdicts compare in
# whole numbers: RSS KiB, descriptors x100, entries' slope in hundredths of a percent of
# their mean.
read -r rss_mean rss_slope fd_slope ent_mean ent_slope n rss_i fd_i ent_i <<<"$("$PYTHON" - "$samples" <<'EOF'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
half = rows[len(rows) // 2:]
def slope(i):
    xs = [r[0] for r in half]; ys = [r[i] for r in half]
    n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs) or 1.0
    return my, sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 600
rm, rs = slope(1); _, fs = slope(2); em, es = slope(3)
print(f"{rm:.0f} {rs:.1f} {fs:.2f} {em:.0f} {es:.1f} {len(half)} "
      f"{round(rs)} {round(fs * 100)} {round(abs(es) / (em + 1) * 10000)}")
EOF
)"
judge=$((MINUTES >= 10))
check "keep-alive: no error" "$(arith "ka_req > 0 && ka_err == 0")" "$ka_req requests, $ka_err errors"
check "Connection: close: no error" "$(arith "close_req > 0 && close_err == 0")" "$close_req requests, $close_err errors"
check "UDP: every datagram answered" "$(arith "udp_sent > 0 && udp_ok == udp_sent")" "$udp_ok of $udp_sent"
check "swaps, reloads, flaps done" "$(arith "swaps == minute && reloads == minute && flaps == minute / 2")" \
    "$swaps swaps, $reloads reloads, $flaps health flaps in $minute minutes"
check "RSS flat" "$(arith "!judge || rss_i < 1024")" \
    "mean $((rss_mean / 1024)) MiB, slope $rss_slope KiB per 10 min over the last $n samples"
check "descriptors flat" "$(arith "!judge || fd_i < 100")" "slope $fd_slope per 10 min"
check "table entries flat" "$(arith "!judge || ent_i < 500")" \
    "mean $ent_mean, slope $ent_slope per 10 min"
log "samples (seconds RSS_KiB fds entries): $samples"

echo
if ((FAILS == 0)); then
    echo "soak ($MINUTES min): PASSED"
else
    echo "soak ($MINUTES min): FAILED ($FAILS)"
    exit 1
fi
