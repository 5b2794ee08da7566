#!/usr/bin/env bash
# The ringvs netns lab in one command: install the tools, build ringvs, bring up the lab, send
# HTTP (curl, wrk keep-alive, wrk Connection: close) and UDP through the VIP, print a report and
# tear everything down.
#
#   sudo bash examples/lab/run.sh                      # through ringvs (default)
#   sudo FWD=nft NO_BUILD=1 bash examples/lab/run.sh   # through the kernel's nftables DNAT
#
# Environment: FWD=ringvs|nft, NO_BUILD=1 (skip cargo build), NO_DEPS=1 (skip scripts/deps.sh),
# RUN_SECONDS (each wrk run, default 8), ROUTES=manual|auto, RINGVS, CONF, RVS_LAB, LAB_DIR.
# Exit status: 0 when every request and datagram was answered without errors.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FWD=${FWD:-ringvs}
RUN_SECONDS=${RUN_SECONDS:-8}
case $FWD in nft | ringvs) ;; *) die "FWD must be nft or ringvs (got '$FWD')" ;; esac
require_root

if [[ ${NO_DEPS:-0} != 1 ]]; then
    bash "$LAB_ROOT/scripts/deps.sh" || die "scripts/deps.sh failed (see above)"
fi
if [[ $FWD == ringvs ]]; then
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        log "building: cargo build --release -p ringvs, and the plugins (scripts/build-plugins.sh)"
        (cd "$LAB_ROOT" && cargo build --release -p ringvs) || die "cargo build --release -p ringvs failed"
        bash "$LAB_ROOT/scripts/build-plugins.sh" >/dev/null || die "scripts/build-plugins.sh failed"
    fi
    ringvs_check_binary || exit 1
fi

lab_trap
lab_up
start_servers
fwd_up "$FWD" || die "the $FWD forwarder did not come up (see above)"

problems=0
report=()
# shellcheck disable=SC2059 # the format is the first argument
add() { report+=("$(printf "$@")"); }

# 1. curl: 30 requests, one connection each; which realserver answered is in the page.
declare -A by_server=()
answered=0
for _ in $(seq 30); do
    if body=$(curl_vip / 2>>"$LAB_DIR/curl.err") && [[ $body =~ \<h1\>(rs[0-9]+)\</h1\> ]]; then
        answered=$((answered + 1))
        by_server[${BASH_REMATCH[1]}]=$((${by_server[${BASH_REMATCH[1]}]:-0} + 1))
    fi
done
spread=$(for k in "${!by_server[@]}"; do echo "$k=${by_server[$k]}"; done | sort | tr '\n' ' ')
spread=${spread% }
add '  %-11s %s/30 answered            served by: %s' curl "$answered" "${spread:-nobody}"
if ((answered < 30)); then
    problems=$((problems + 1))
    log_tail "$LAB_DIR/curl.err" 5
fi

# 2. wrk, keep-alive and Connection: close; the spread comes from the realservers' access logs.
wrk_report() { # wrk_report LABEL NAME [WRK ARGS...]
    local label=$1 name=$2
    shift 2
    hits_baseline
    if wrk_run "$name" "$RUN_SECONDS" "$@"; then
        count_hits .
        add '  %-11s %s requests, %s req/s, %s socket errors, %s non-2xx   requests: %s; %s connections: %s' \
            "$label" "$WRK_REQUESTS" "$WRK_RPS" "$WRK_SOCK_ERRORS" "$WRK_NON2XX" "$HITS_PCT" "$HITS_CONNS_TOTAL" "$HITS_CONNS_PCT"
        if ((WRK_SOCK_ERRORS + WRK_NON2XX > 0)); then problems=$((problems + 1)); fi
    else
        add '  %-11s FAILED (see above)' "$label"
        problems=$((problems + 1))
    fi
}
wrk_report keep-alive wrk-keepalive -t2 -c64
wrk_report close wrk-close -t2 -c64 -H 'Connection: close'

# 3. UDP: 200 datagrams to VIP:53, each from its own socket.
if udp_probe 200; then
    add '  %-11s %s/%s answered, %s wrong       served by: %s' udp "$UDP_ANSWERED" "$UDP_SENT" "$UDP_BAD" "$UDP_SERVERS"
    if ((UDP_ANSWERED < UDP_SENT || UDP_BAD > 0)); then problems=$((problems + 1)); fi
else
    add '  %-11s FAILED (see above)' udp
    problems=$((problems + 1))
fi

if [[ $FWD == ringvs ]]; then
    read -r rx tx < <(dev_packets)
    add '  %-11s %s: %s packets in, %s out; director conntrack entries: %s' director "$RVS_DEV" "$tx" "$rx" "$(conntrack_count)"
else
    add '  %-11s nftables DNAT; director conntrack entries: %s' director "$(conntrack_count)"
fi

echo
echo "ringvs lab run: FWD=$FWD, VIP $VIP, ${RUN_SECONDS} s per wrk run (wrk -t2 -c64), logs in $LAB_DIR"
printf '%s\n' "${report[@]}"
if ((problems > 0)); then
    echo "run.sh: $problems problem(s) above"
    exit 1
fi
echo "run.sh: all requests and datagrams answered"
