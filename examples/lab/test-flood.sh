#!/usr/bin/env bash
# SYN floods in the netns lab, each bounded in time, each while legitimate clients go on:
#
#   a. `hping3 -S --flood --rand-source` at the VIP, four times: through ringvs with no
#      defense, with secure-tcp + drop-entry, with synauth + secure-tcp + drop-entry, and
#      through kernel nftables DNAT.
#      A prober opens 20 new connections a second (each must get its page within 2 s) and one
#      keep-alive connection, opened before the flood, asks for a page 10 times a second.
#   b. a single-source flood (`hping3 -S --flood -a 10.77.0.66`): defense-ratelimit must block
#      it while the prober, from another address, is served as usual.
#   c. a random-source flood during which the web service's defenses are swapped twice by
#      `ringvs reload` (synauth stays): the keep-alive connection and a download started
#      before must survive, and the legitimate clients go on being served.
#
# Checks: with defenses ≥ 99 % of the prober's requests succeed within 2 s; ringvs stays alive
# with its resident memory under (memory before the flood + conn_memory_limit); no established
# flow is lost. Every run reports entries by state, drops by reason and the flood's packets.
#
#   bash examples/lab/test-flood.sh      (as root; about four minutes)
#   FLOOD_SECONDS=30 bash examples/lab/test-flood.sh
#
# The flood's sources are random addresses, but its packets go only to the VIP inside the lab's
# namespaces, and the director has no route out of them: answers to spoofed sources die there.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
require_cmds hping3 conntrack nft curl "$PYTHON"
ringvs_check_binary || exit 1
PLUGIN_DIR=${CARGO_TARGET_DIR:-$LAB_ROOT/target}/wasm32-wasip2/plugin
for p in sched_wlc defense_synauth defense_secure_tcp defense_drop_entry defense_ratelimit; do
    [[ -f $PLUGIN_DIR/$p.wasm ]] || die "$PLUGIN_DIR/$p.wasm is missing: run bash scripts/build-plugins.sh"
done

FLOOD_SECS=${FLOOD_SECONDS:-22}
((FLOOD_SECS >= 20 && FLOOD_SECS <= 120)) || die "FLOOD_SECONDS must be 20-120 (got $FLOOD_SECS)"
PROBE_RATE=20            # new connections a second from the legitimate client
KEEP_RATE=10             # requests a second on the keep-alive connection
FLOOD_SRC=10.77.0.66     # the single-source flood's address (on the client's interface)
DOWNLOAD_RATE=4M         # the long download in run c, bytes a second (curl --limit-rate)

VERDICT_WIDTH=40
check() { verdict "$2" "$1" "$3"; } # check NAME OK(0/1) DETAIL: lib.sh's verdict

# flood_conf NAME DEFENSES: a copy of flood.toml (its plugins are the catalogue's, by name)
# with the web service's `defense = [...]` line set to DEFENSES (e.g. '"secure-tcp", "drop-entry"').
flood_conf() {
    local out=$LAB_DIR/flood-$1.toml
    sed -e "s|^defense = \\[.*\\]$|defense = [$2]|" "$LAB_SRC/flood.toml" >"$out"
    grep -q "^defense = \\[$2\\]$" "$out" || die "could not set the defenses in $out"
    echo "$out"
}

# conf_limit FILE: director.conn_memory_limit of FILE in bytes (the lab writes it in MiB).
conf_limit() {
    local mib
    mib=$(sed -nE 's/^conn_memory_limit = "([0-9]+)MiB"$/\1/p' "$1")
    [[ -n $mib ]] || die "cannot read conn_memory_limit (\"NMiB\") from $1"
    echo $((mib << 20))
}

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

scrape() { in_ns dir curl -s --max-time 5 "http://127.0.0.1:9406/metrics"; }

# entries_line METRICS_FILE: "total (STATE n, …)" from ringvs_conntable_entries.
entries_line() {
    awk -F'[{}" ]+' '/^ringvs_conntable_entries\{/ && $NF > 0 { t += $NF; s = s sprintf("%s%s %d", (s ? ", " : ""), $3, $NF) }
        END { printf "%d (%s)", t, (s ? s : "empty") }' "$1"
}
entries_total() { awk '/^ringvs_conntable_entries\{/ { t += $NF } END { print t + 0 }' "$1"; }

# drops_line METRICS_FILE: the non-zero ringvs_dropped_packets_total{reason} as "reason n, …".
drops_line() {
    awk -F'[{}" ]+' '/^ringvs_dropped_packets_total\{/ && $NF > 0 { s = s sprintf("%s%s %d", (s ? ", " : ""), $3, $NF) }
        END { print (s ? s : "none") }' "$1"
}
metric_in() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }

# probe_start NAME SECONDS [ARGS…]: http_probe.py in the client namespace, in the background.
probe_start() {
    local name=$1 secs=$2
    shift 2
    ip netns exec "$(ns_name cli)" timeout $((secs + 30)) "$PYTHON" "$LAB_SRC/http_probe.py" "$VIP:80" \
        --seconds "$secs" "$@" </dev/null >"$LAB_DIR/probe-$name.json" 2>"$LAB_DIR/probe-$name.err" &
    PROBE_PID=$!
}

# probe_read NAME: sets P_STARTED P_OK P_LATE P_FAILED P_PCT P_P99 P_ERRORS from its JSON.
probe_read() {
    local f=$LAB_DIR/probe-$1.json
    if ! read -r P_STARTED P_OK P_LATE P_FAILED P_PCT P_P99 P_ERRORS < <("$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
err = ",".join(f"{k}:{v}" for k, v in sorted(d["errors"].items())) or "none"
print(d["started"], d["ok"], d["late"], d["failed"], d["ok_pct"], d["ms_p99"], err.replace(" ", "_"))
' "$f" 2>/dev/null); then
        log_tail "$LAB_DIR/probe-$1.err"
        err "the prober $1 printed no result"
        P_STARTED=0 P_OK=0 P_LATE=0 P_FAILED=0 P_PCT=0 P_P99=- P_ERRORS=unknown
    fi
}

# hping_sent FILE: packets hping3 says it transmitted.
hping_sent() { sed -nE 's/^([0-9]+) packets transmitted.*/\1/p' "$1" | tail -1; }

# flood_run NAME FLOOD_ARGS…: the measured run on the forwarder that is up. Legit clients start
# first (the keep-alive connection is established before the flood), then hping3 runs for
# FLOOD_SECS; every second a sample of the forwarder's table and (ringvs) memory is kept.
# Sets: F_SENT, the P_* of the new-connection prober, K_* of the keep-alive one, and for
# ringvs S_PEAK_ENTRIES, S_PEAK_LINE (entries by state at the peak), S_HWM_KIB, S_ALIVE; for
# nft S_CT_PEAK.
flood_run() {
    local name=$1 hpid k_pid p_pid t
    shift
    probe_start "$name-keep" $((FLOOD_SECS + 6)) --keepalive --rate "$KEEP_RATE"
    k_pid=$PROBE_PID
    sleep 1
    probe_start "$name" $((FLOOD_SECS + 4)) --rate "$PROBE_RATE"
    p_pid=$PROBE_PID
    sleep 1
    log "run $name: flood for ${FLOOD_SECS}s: hping3 $*"
    ip netns exec "$(ns_name cli)" timeout -s INT "$FLOOD_SECS" hping3 "$@" -p 80 "$VIP" \
        </dev/null >"$LAB_DIR/hping-$name.txt" 2>&1 &
    hpid=$!
    S_PEAK_ENTRIES=0 S_PEAK_LINE="-" S_CT_PEAK=0 S_SECURE_LEVEL=0
    local f=$LAB_DIR/sample.prom n
    for ((t = 0; t < FLOOD_SECS + 3; t++)); do
        sleep 1
        if [[ $LAB_FWD == ringvs ]]; then
            scrape >"$f" || true
            n=$(entries_total "$f")
            if ((n > S_PEAK_ENTRIES)); then
                S_PEAK_ENTRIES=$n
                S_PEAK_LINE=$(entries_line "$f")
            fi
            n=$(metric_in "$f" 'ringvs_defense_level{service="web",plugin="secure-tcp"}')
            ((${n:-0} > S_SECURE_LEVEL)) && S_SECURE_LEVEL=${n:-0}
        else
            n=$(conntrack_count)
            ((n > S_CT_PEAK)) && S_CT_PEAK=$n
        fi
    done
    wait "$hpid" || true
    F_SENT=$(hping_sent "$LAB_DIR/hping-$name.txt")
    F_SENT=${F_SENT:-0}
    wait "$p_pid" || true
    probe_read "$name"
    wait "$k_pid" || true
    local p=("$P_STARTED" "$P_OK" "$P_LATE" "$P_FAILED" "$P_PCT" "$P_P99" "$P_ERRORS")
    probe_read "$name-keep"
    K_STARTED=$P_STARTED K_OK=$P_OK K_ERRORS=$P_ERRORS
    P_STARTED=${p[0]} P_OK=${p[1]} P_LATE=${p[2]} P_FAILED=${p[3]} P_PCT=${p[4]} P_P99=${p[5]} P_ERRORS=${p[6]}
    if [[ $LAB_FWD == ringvs ]]; then
        S_ALIVE=0
        pid_alive "$RINGVS_PID" && S_ALIVE=1
        S_HWM_KIB=$(hwm_kib "$RINGVS_PID")
        scrape >"$LAB_DIR/after-$name.prom" || true
    fi
    log "run $name: hping3 sent $F_SENT; prober $P_OK/$P_STARTED ok within 2 s (late $P_LATE, failed $P_FAILED: $P_ERRORS), p99 ${P_P99} ms; keep-alive $K_OK/$K_STARTED"
}

# ringvs_up NAME DEFENSES: (re)start ringvs on a fresh copy of flood.toml; sets CONF_FILE,
# LIMIT (bytes) and RSS0_KIB (resident memory once up, before any flood).
ringvs_up() {
    [[ -z $LAB_FWD ]] || fwd_down
    CONF_FILE=$(flood_conf "$1" "$2")
    LIMIT=$(conf_limit "$CONF_FILE")
    CONF=$CONF_FILE fwd_up ringvs || die "ringvs did not come up with $CONF_FILE"
    # Let the first ticks pass (defense plugins instantiate off the data path).
    sleep 2
    curl_vip / -o /dev/null || die "no page through ringvs before the flood"
    RSS0_KIB=$(rss_kib "$RINGVS_PID")
}

# ringvs_verdict NAME: the checks every ringvs flood run must pass.
ringvs_verdict() {
    local name=$1 cap_kib=$((RSS0_KIB + LIMIT / 1024))
    check "$name: ringvs alive" "$(ok_if [ "$S_ALIVE" = 1 ])" "pid $RINGVS_PID after $F_SENT flood packets"
    check "$name: RSS under its cap" "$(ok_if [ "$S_HWM_KIB" -le "$cap_kib" ])" \
        "peak $((S_HWM_KIB / 1024)) MiB ≤ $((RSS0_KIB / 1024)) MiB before + $((LIMIT >> 20)) MiB table budget"
    check "$name: keep-alive flow survived" "$(ok_if [ "$K_OK" -gt 0 ] && [ "$K_OK" = "$K_STARTED" ])" \
        "$K_OK/$K_STARTED requests on one connection opened before the flood ($K_ERRORS)"
    local mem
    mem=$(metric_in "$LAB_DIR/after-$name.prom" ringvs_conntable_memory_bytes)
    check "$name: table within its budget" "$(ok_if [ "${mem:-0}" -gt 0 ] && [ "${mem:-0}" -le "$LIMIT" ])" \
        "ringvs_conntable_memory_bytes ${mem:-absent} ≤ $LIMIT"
}

# legit_verdict NAME: ≥ 99 % of the prober's requests got their page within 2 s.
legit_verdict() {
    check "$1: legit clients served" "$(ok_if awk -v p="$P_PCT" 'BEGIN { exit !(p >= 99) }')" \
        "$P_OK/$P_STARTED (${P_PCT} %) within 2 s, p99 ${P_P99} ms, failed: $P_ERRORS"
}

SUMMARY=()
summarise() { # summarise NAME FORWARDER-DETAIL
    SUMMARY+=("$(printf '%-26s %9s  %6s%%  %7s  %-9s  %s' "$1" "$F_SENT" "$P_PCT" "$P_P99" "$K_OK/$K_STARTED" "$2")")
}

lab_trap
lab_up
start_servers
in_ns cli ip addr add "$FLOOD_SRC/24" dev cli0

# ---------------------------------------------------------------------------------------------
# a. random-source SYN flood: ringvs without defenses, with secure-tcp + drop-entry, with
#    synauth + secure-tcp + drop-entry, and kernel nftables DNAT

ringvs_up none ""
flood_run none -S --flood --rand-source
ringvs_verdict none
drops=$(drops_line "$LAB_DIR/after-none.prom")
echo "      none: entries at the peak $S_PEAK_LINE; drops: $drops"
summarise "ringvs, no defense" "peak $S_PEAK_LINE; drops: $drops"

ringvs_up secure '"secure-tcp", "drop-entry"'
flood_run secure -S --flood --rand-source
ringvs_verdict secure
drops=$(drops_line "$LAB_DIR/after-secure.prom")
dropped=$(metric_in "$LAB_DIR/after-secure.prom" 'ringvs_defense_actions_total{plugin="drop-entry",action="drop_connections"}')
echo "      secure: entries at the peak $S_PEAK_LINE; drops: $drops; drop-entry actions ${dropped:-0}"
check "secure: secure-tcp switched to its dos table" "$(ok_if [ "$S_SECURE_LEVEL" -ge 1 ])" \
    "highest ringvs_defense_level{plugin=\"secure-tcp\"} during the flood: $S_SECURE_LEVEL (1 once less than amemthresh is left)"
summarise "ringvs, secure+drop" "peak $S_PEAK_LINE; level $S_SECURE_LEVEL; drop-entry actions ${dropped:-0}; drops: $drops"

ringvs_up defended '"synauth", "secure-tcp", "drop-entry"'
flood_run defended -S --flood --rand-source
ringvs_verdict defended
legit_verdict defended
drops=$(drops_line "$LAB_DIR/after-defended.prom")
refused=$(metric_in "$LAB_DIR/after-defended.prom" 'ringvs_defense_refused_flows_total{plugin="synauth"}')
echo "      defended: entries at the peak $S_PEAK_LINE; drops: $drops; synauth refused ${refused:-0} flows"
# Spoofed sources never retransmit: nearly every flood SYN must have been refused at the door.
check "defended: synauth refused the flood" "$(ok_if [ "${refused:-0}" -ge $((F_SENT / 2)) ])" \
    "ringvs_defense_refused_flows_total{plugin=\"synauth\"} = ${refused:-absent} of $F_SENT flood SYNs (want ≥ half)"
faults=$(awk '/^ringvs_plugin_(traps|fallbacks)_total\{plugin="synauth"/ { n += $NF } END { print n + 0 }' "$LAB_DIR/after-defended.prom")
check "defended: synauth never faulted" "$(ok_if [ "$faults" = 0 ])" \
    "ringvs_plugin_traps_total + ringvs_plugin_fallbacks_total for synauth: $faults (a fault lets the flood through until a fresh instance is up)"
summarise "ringvs, synauth+secure" "peak $S_PEAK_LINE; synauth refused ${refused:-0}; drops: $drops"

fwd_down
fwd_up nft || die "nft DNAT did not come up"
ct_max=$(in_ns dir cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo "?")
flood_run nft -S --flood --rand-source
ct_stats=$(in_ns dir conntrack -S 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(drop|early_drop|insert_failed)=/) { split($i, kv, "="); s[kv[1]] += kv[2] } }
    END { printf "drop %d, early_drop %d, insert_failed %d", s["drop"], s["early_drop"], s["insert_failed"] }')
echo "      nft: conntrack peak $S_CT_PEAK of nf_conntrack_max $ct_max; $ct_stats"
summarise "nft DNAT" "conntrack peak $S_CT_PEAK of $ct_max; $ct_stats"
fwd_down

# ---------------------------------------------------------------------------------------------
# b. single-source flood against defense-ratelimit

ringvs_up ratelimit '"ratelimit", "secure-tcp", "drop-entry"'
before=$(metric ringvs_connections_total)
flood_run ratelimit -S --flood -a "$FLOOD_SRC"
ringvs_verdict ratelimit
legit_verdict ratelimit
after=$(metric_in "$LAB_DIR/after-ratelimit.prom" ringvs_connections_total)
admitted=$((${after:-0} - ${before:-0}))
drops=$(drops_line "$LAB_DIR/after-ratelimit.prom")
top=$(ringvs_cli top --once --json)
blocked=$("$PYTHON" -c '
import json, sys
t = json.loads(sys.argv[1])
print(" ".join("%s:%s" % (b["prefix"], b["by"]) for b in t.get("blocks", [])) or "none")' "$top")
check "ratelimit: the flooding source is blocked" "$(ok_if grep -qw "$FLOOD_SRC/32:ratelimit" <<<"$blocked")" \
    "blocks (ringvs top): $blocked"
# The flood got at most a few seconds' worth of its limit in; the prober's flows are the rest.
check "ratelimit: the flood did not reach the servers" "$(ok_if [ "$admitted" -le $((F_SENT / 50 + P_STARTED + K_STARTED)) ])" \
    "$admitted flows admitted while hping3 sent $F_SENT (≤ 2 % of them + the prober's $P_STARTED); drops: $drops"
summarise "ringvs, ratelimit (1 src)" "admitted $admitted; blocked $blocked; drops: $drops"

# ---------------------------------------------------------------------------------------------
# c. defenses swapped by `ringvs reload` during a flood

ringvs_up swap '"synauth", "secure-tcp"'
in_ns cli curl -sS --max-time $((FLOOD_SECS + 40)) --limit-rate "$DOWNLOAD_RATE" -o "$LAB_DIR/download.bin" \
    "http://$VIP/1m.bin" -o "$LAB_DIR/download-big.bin" "http://$VIP/big.bin" \
    </dev/null >"$LAB_DIR/download.log" 2>&1 &
dl_pid=$!
(
    sleep $((FLOOD_SECS / 3 + 2))
    sed -i 's/^defense = \[.*\]$/defense = ["synauth", "ratelimit", "drop-entry", "secure-tcp"]/' "$CONF_FILE"
    ringvs_cli reload >"$LAB_DIR/reload-1.txt" 2>&1 || echo "reload 1 failed" >>"$LAB_DIR/reload-1.txt"
    sleep $((FLOOD_SECS / 3))
    sed -i 's/^defense = \[.*\]$/defense = ["synauth", "drop-entry"]/' "$CONF_FILE"
    ringvs_cli reload >"$LAB_DIR/reload-2.txt" 2>&1 || echo "reload 2 failed" >>"$LAB_DIR/reload-2.txt"
) &
swapper=$!
flood_run swap -S --flood --rand-source
wait "$swapper" || true
ringvs_verdict swap
legit_verdict swap
active=$(ringvs_cli top --once --json | "$PYTHON" -c '
import json, sys
print(",".join(d["plugin"] for d in json.load(sys.stdin).get("defenses", []) if d["service"] == "web"))')
check "swap: both reloads applied" "$(ok_if [ "$active" = synauth,drop-entry ] && ! grep -q failed "$LAB_DIR"/reload-*.txt)" \
    "defenses active at the end: ${active:-none} (want synauth,drop-entry); $(tr '\n' ' ' <"$LAB_DIR/reload-1.txt" | cut -c1-80)"
# The download started before the flood goes on at its own pace; stop it and check what came.
sleep 1
kill "$dl_pid" 2>/dev/null || true
wait "$dl_pid" 2>/dev/null || true
want=$ONE_MIB_SHA
got=$(sha256sum <"$LAB_DIR/download.bin" | cut -d' ' -f1)
size=$(stat -c %s "$LAB_DIR/download-big.bin" 2>/dev/null || echo 0)
expect=$(((FLOOD_SECS + 4) * 4 * 1024 * 1024 / 2))
check "swap: download across the swaps" "$(ok_if [ "$got" = "$want" ] && [ "$size" -ge "$expect" ] && ! grep -qi 'curl: (' "$LAB_DIR/download.log")" \
    "1m.bin intact, then $((size >> 20)) MiB of big.bin at 4 MiB/s (≥ $((expect >> 20)) MiB) with no curl error"
drops=$(drops_line "$LAB_DIR/after-swap.prom")
summarise "ringvs, swapped x2" "defenses now ${active:-none}; drops: $drops"

echo
printf '%-26s %9s  %7s  %7s  %-9s  %s\n' "run (${FLOOD_SECS}s flood)" "flood pkt" "legit" "p99 ms" "keepalive" "table and drops"
printf '%s\n' "${SUMMARY[@]}"
echo
if ((FAILS == 0)); then
    echo "test-flood: PASSED"
else
    echo "test-flood: FAILED ($FAILS)"
    exit 1
fi
