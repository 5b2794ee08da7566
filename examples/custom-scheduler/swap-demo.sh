#!/usr/bin/env bash
# Hot-swaps the example scheduler into the running netns lab while wrk sends traffic, then
# swaps in a second copy of it (as a new version would be deployed), which inherits the first
# one's state; checks that no request failed.
#
#   sudo bash examples/custom-scheduler/swap-demo.sh
#
# Needs what examples/lab needs (root, nginx, wrk: scripts/deps.sh), target/release/ringvs
# and the built plugins (cargo build --release -p ringvs && bash scripts/build-plugins.sh).
# Its lab is "rcs" (namespaces rcs-*, state in /tmp/rcs-lab), so a lab with another RVS_LAB
# is left alone. It gives up after DEMO_TIMEOUT seconds (default 120), and removes its lab on
# any exit. Exit status 0 when the swap succeeded and wrk saw no error.
set -euo pipefail

export RVS_LAB=${RVS_LAB:-rcs}
if [[ -z ${SWAP_DEMO_TIMED:-} ]]; then
    # The watchdog: on timeout the script gets SIGTERM, its trap removes the lab.
    SWAP_DEMO_TIMED=1 exec timeout --foreground -k 20 "${DEMO_TIMEOUT:-120}" bash "$0" "$@"
fi

# shellcheck source-path=SCRIPTDIR source=../lab/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lab/lib.sh"
WASM=${WASM:-${CARGO_TARGET_DIR:-$LAB_ROOT/target}/wasm32-wasip2/plugin/custom_scheduler.wasm}
SECS=${SWAP_SECONDS:-10}

require_root
require_cmds wrk
[[ -f $WASM ]] || die "$WASM is not built (bash scripts/build-plugins.sh)"
lab_trap
lab_up
start_servers
fwd_up ringvs # examples/lab/lab.toml: service web on sched-wlc

# One connection per request: every request is a new flow, scheduled by whichever scheduler
# the service has at that moment.
echo "== wrk -t2 -c32 -d${SECS}s -H 'Connection: close' http://$VIP/ in the background"
(
    wrk_run swap "$SECS" -t2 -c32 -H 'Connection: close' &&
        declare -p WRK_REQUESTS WRK_RPS WRK_SOCK_ERRORS WRK_ERRORS_DETAIL WRK_NON2XX >"$LAB_DIR/wrk-swap.vars"
) &
wrk_pid=$!
sleep 3

echo "== ringvs plugin swap web $WASM"
ringvs_cli plugin swap web "$WASM"
sleep 2
echo "== ringvs plugin list"
ringvs_cli plugin list

# A plugin swapped in by path is named after its file: a new version under a new name.
V2=$LAB_DIR/custom_scheduler_v2.wasm
cp "$WASM" "$V2"
echo "== ringvs plugin swap web $V2"
ringvs_cli plugin swap web "$V2"
sleep 2
echo "== ringvs plugin list"
ringvs_cli plugin list
echo "== ringvs list"
ringvs_cli list

wait "$wrk_pid" || die "wrk failed (output: $LAB_DIR/wrk-swap.txt)"
# shellcheck source=/dev/null
source "$LAB_DIR/wrk-swap.vars"
echo "== wrk: $WRK_REQUESTS requests ($WRK_RPS/s), socket errors $WRK_SOCK_ERRORS (${WRK_ERRORS_DETAIL:-none}), non-2xx $WRK_NON2XX"
echo "== metrics"
in_ns dir curl -s --max-time 5 http://127.0.0.1:9406/metrics |
    grep -E '^ringvs_plugin_(swaps_total|calls_total|traps_total|fallbacks_total)' | grep -v ' 0$' || true
((WRK_SOCK_ERRORS == 0 && WRK_NON2XX == 0)) || die "requests failed across the swap"
echo "swap-demo: web swapped sched-wlc -> custom_scheduler -> custom_scheduler_v2 under load; no request failed"
