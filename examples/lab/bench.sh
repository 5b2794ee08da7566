#!/usr/bin/env bash
# Benchmark the kernel's nftables DNAT and ringvs on the same lab, in one run, and print a
# table (also written as markdown to $BENCH_OUT).
#
#   sudo bash examples/lab/bench.sh
#   sudo BENCH_SECONDS=5 BENCH_PHASES=nft bash examples/lab/bench.sh
#
# Each phase gets a fresh forwarder (conntrack is flushed in between) and measures, through
# VIP 10.77.100.100: wrk keep-alive req/s, wrk Connection: close req/s (both -t2 -c64),
# iperf3 TCP Gbit/s (one stream) and iperf3 UDP with 64-byte payloads at full speed (packets
# per second the receiver got, and the loss).
#
# Environment: BENCH_SECONDS (per measurement, default 10), BENCH_OUT (default
# $LAB_DIR/bench.md), BENCH_PHASES (default "nft ringvs"), RINGVS, CONF, ROUTES, RVS_LAB, LAB_DIR.
# Exit status: non-zero when a phase or a measurement failed (the table then says n/a).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_OUT=${BENCH_OUT:-$LAB_DIR/bench.md}
BENCH_PHASES=${BENCH_PHASES:-nft ringvs}
[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer (got '$BENCH_SECONDS')"
for p in $BENCH_PHASES; do
    case $p in nft | ringvs) ;; *) die "BENCH_PHASES may only name nft and ringvs (got '$p')" ;; esac
done
require_root
require_cmds wrk iperf3 nft curl nginx

S=$BENCH_SECONDS
METRICS=(ka close tcp udp_pps udp_loss)
declare -A LABEL=(
    [ka]="HTTP keep-alive req/s (wrk -t2 -c64)"
    [close]="HTTP Connection: close req/s (wrk -t2 -c64)"
    [tcp]="TCP Gbit/s (iperf3, 1 stream)"
    [udp_pps]="UDP 64 B packets/s received (iperf3 -u -l 64 -b 0)"
    [udp_loss]="UDP 64 B loss %"
)

# phase FWD: bring the forwarder up, measure, bring it down. Runs in a subshell (own EXIT trap
# stops the forwarder); results go to $LAB_DIR/bench-FWD.txt as "metric value" lines, notes to
# $LAB_DIR/bench-FWD.notes. Exit status non-zero if anything failed.
phase() {
    local fwd=$1 res=$LAB_DIR/bench-$1.txt notes=$LAB_DIR/bench-$1.notes failed=0
    : >"$res"
    : >"$notes"
    trap 'fwd_down' EXIT
    if ! fwd_up "$fwd"; then
        echo "$fwd did not come up (see the error above; log: $LAB_DIR/ringvs.log)" >>"$notes"
        return 1
    fi
    local rx0 tx0 rx1 tx1
    read -r rx0 tx0 < <(dev_packets)

    log "$fwd: wrk keep-alive, $S s"
    if wrk_run "bench-$fwd-ka" "$S" -t2 -c64; then
        echo "ka $WRK_RPS" >>"$res"
        echo "$fwd keep-alive: $WRK_REQUESTS requests, $WRK_SOCK_ERRORS socket errors, $WRK_NON2XX non-2xx" >>"$notes"
        if ((WRK_SOCK_ERRORS + WRK_NON2XX > 0)); then failed=1; fi
    else failed=1; fi

    log "$fwd: wrk Connection: close, $S s"
    if wrk_run "bench-$fwd-close" "$S" -t2 -c64 -H 'Connection: close'; then
        echo "close $WRK_RPS" >>"$res"
        echo "$fwd close: $WRK_REQUESTS requests, $WRK_SOCK_ERRORS socket errors, $WRK_NON2XX non-2xx" >>"$notes"
        if ((WRK_SOCK_ERRORS + WRK_NON2XX > 0)); then failed=1; fi
    else failed=1; fi

    log "$fwd: iperf3 TCP, $S s"
    if iperf_run "bench-$fwd-tcp" "$S"; then
        echo "tcp $IPERF_GBPS" >>"$res"
        echo "$fwd iperf3 TCP: $IPERF_RETRANS retransmits" >>"$notes"
    else failed=1; fi

    log "$fwd: iperf3 UDP 64 B, $S s"
    if iperf_run "bench-$fwd-udp" "$S" -u -l 64 -b 0; then
        echo "udp_pps $IPERF_RX_PPS" >>"$res"
        echo "udp_loss $IPERF_LOSS_PCT" >>"$res"
    else failed=1; fi

    if [[ $fwd == ringvs ]]; then
        read -r rx1 tx1 < <(dev_packets)
        echo "ringvs: $RVS_DEV carried $((tx1 - tx0)) packets in and $((rx1 - rx0)) out; director conntrack entries: $(conntrack_count)" >>"$notes"
    else
        echo "nft: director conntrack entries at the end: $(conntrack_count)" >>"$notes"
    fi
    return "$failed"
}

# table FILE: the markdown result table.
table() {
    local m a b ratio
    echo "## ringvs lab benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $CPU ($(nproc) CPUs)"
    echo "- $S s per measurement, all in one run on one lab (client, director, 3 realservers share the CPUs)"
    echo "- load average before the run: $LOAD_BEFORE; veth GRO: ${LAB_GRO:-unknown}"
    echo "- command: \`BENCH_SECONDS=$S bash examples/lab/bench.sh\`; ringvs: $RINGVS -c $CONF (routes: $ROUTES)"
    echo
    printf '| %-52s | %12s | %12s | %10s |\n' metric nft ringvs ringvs/nft
    printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..54})" "$(printf -- '-%.0s' {1..13}):" \
        "$(printf -- '-%.0s' {1..13}):" "$(printf -- '-%.0s' {1..11}):"
    for m in "${METRICS[@]}"; do
        a=${R[nft,$m]:-n/a} b=${R[ringvs,$m]:-n/a} ratio=n/a
        if [[ $m != udp_loss && $a != n/a && $b != n/a ]]; then
            ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }')
        elif [[ $m == udp_loss ]]; then
            ratio=-
        fi
        printf '| %-52s | %12s | %12s | %10s |\n' "${LABEL[$m]}" "$a" "$b" "$ratio"
    done
    echo
    for f in nft ringvs; do
        while IFS= read -r line; do echo "- $line"; done <"$LAB_DIR/bench-$f.notes"
    done
}

CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

lab_trap
lab_up
start_servers

declare -A R=()
failed_phases=()
for f in nft ringvs; do
    : >"$LAB_DIR/bench-$f.notes"
    if [[ " $BENCH_PHASES " != *" $f "* ]]; then
        echo "$f phase not run (BENCH_PHASES=$BENCH_PHASES)" >"$LAB_DIR/bench-$f.notes"
        continue
    fi
    log "=== phase $f ==="
    # Not `(phase) || rc=$?`: errexit must stay on inside the phase, so that an unexpected
    # failure ends it (its EXIT trap stops the forwarder) instead of being ignored.
    set +e
    (phase "$f")
    rc=$?
    set -e
    conntrack_flush || true
    while read -r k v; do R[$f,$k]=$v; done <"$LAB_DIR/bench-$f.txt"
    if ((rc != 0)); then
        failed_phases+=("$f")
        echo "$f phase FAILED: missing figures are n/a" >>"$LAB_DIR/bench-$f.notes"
    fi
done

mkdir -p "$(dirname "$BENCH_OUT")"
table >"$BENCH_OUT"
echo
cat "$BENCH_OUT"
echo
echo "written to $BENCH_OUT"
if ((${#failed_phases[@]} > 0)); then
    echo "bench.sh: phase(s) failed: ${failed_phases[*]}"
    exit 1
fi
