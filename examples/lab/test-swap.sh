#!/usr/bin/env bash
# Hot swap under load, in the netns lab: while one wrk opens a new connection per request
# (Connection: close) and another downloads a 512 MiB file over keep-alive, the web service's
# scheduler goes wlc → rr → wlc → rr → wlc through every path ringvs offers: `ringvs plugin
# swap`, SIGHUP after a config edit, and `ringvs reload` after one. Then a hostile plugin
# (tc-trap) is swapped in and triggered: the flow that trips it is still served (fallback),
# the trap is counted, and a fresh instance takes over. Both wrk runs must end with zero
# socket errors and zero non-2xx; ringvs_plugin_swaps_total must count every swap.
#
#   bash examples/lab/test-swap.sh      (as root; bounded to about a minute)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
ringvs_check_binary || exit 1
PLUGIN_DIR=${CARGO_TARGET_DIR:-$LAB_ROOT/target}/wasm32-wasip2/plugin
for p in sched_wlc sched_rr tc_trap; do
    [[ -f $PLUGIN_DIR/$p.wasm ]] || die "$PLUGIN_DIR/$p.wasm is missing: run bash scripts/build-plugins.sh"
done

VERDICT_WIDTH=34
check() { verdict "$2" "$1" "$3"; } # check NAME OK(0/1) DETAIL: lib.sh's verdict

lab_trap
lab_up
start_servers
# A copy of the config the test can edit (its plugins come from the catalogue by name).
conf=$LAB_DIR/swap.toml
cp "$LAB_SRC/lab.toml" "$conf"
CONF=$conf fwd_up ringvs || die "ringvs did not come up"

SECS=${SWAP_SECONDS:-24}
wrk_start close "$SECS" / -t1 -c8 -H 'Connection: close' --timeout 2s
close_pid=$WRK_PID
wrk_start download "$SECS" /big.bin -t1 -c2 --timeout 30s
download_pid=$WRK_PID

scheduler_is() { ringvs_cli list --json | python3 -c "import json,sys; print([s['scheduler'] for s in json.load(sys.stdin)['services'] if s['name']=='web'][0])"; }
step=0
swapped() { # swapped HOW WANT
    step=$((step + 1))
    local got
    got=$(scheduler_is)
    check "swap $step ($1)" "$([[ $got == "$2" ]] && echo 0 || echo 1)" "web now uses $got (want $2)"
}

sleep 3
ringvs_cli plugin swap web sched-rr >/dev/null
swapped "ringvs plugin swap" sched-rr
sleep 3
# The file still says sched-wlc: SIGHUP re-reads it and swaps back.
kill -HUP "$RINGVS_PID"
sleep 1
swapped "SIGHUP" sched-wlc
sleep 2
sed -i 's/^scheduler = "sched-wlc"/scheduler = "sched-rr"/' "$conf"
ringvs_cli reload >/dev/null
swapped "ringvs reload after an edit" sched-rr
sleep 3
ringvs_cli plugin swap web sched-wlc >/dev/null
swapped "ringvs plugin swap" sched-wlc
sleep 2

# A hostile plugin, swapped in by path, then tripped by a flow from client port 666.
ringvs_cli plugin swap web "$PLUGIN_DIR/tc_trap.wasm" >/dev/null
swapped "swap to a .wasm file" tc_trap
code=$(in_ns cli curl -s -o /dev/null -w '%{http_code}' --max-time 5 --local-port 666 "http://$VIP/" || true)
check "tripping flow still served" "$([[ $code == 200 ]] && echo 0 || echo 1)" "HTTP $code from client port 666 (want 200, by the fallback)"
sleep 4 # the first re-instantiation comes after 1 s; metrics refresh every second
traps=$(metric 'ringvs_plugin_traps_total{plugin="tc_trap",kind="trap"}')
check "trap counted" "$([[ ${traps:-0} -ge 1 ]] && echo 0 || echo 1)" "ringvs_plugin_traps_total{plugin=\"tc_trap\",kind=\"trap\"} = ${traps:-absent}"
# The poisoned queue got a fresh instance (the daemon logs each one it creates after a fault).
fresh=$(grep -c 'new plugin instance.*plugin=tc_trap\|plugin=tc_trap.*new plugin instance' "$LAB_DIR/ringvs.log" || true)
check "re-instantiated after backoff" "$([[ ${fresh:-0} -ge 1 ]] && echo 0 || echo 1)" "$fresh fresh tc_trap instance(s) in the daemon's log"
ringvs_cli plugin swap web sched-wlc >/dev/null
swapped "back to sched-wlc" sched-wlc

# Bad input is refused with a clear error and changes nothing (still sched-wlc).
refused() { # refused NAME WANT_IN_ERROR CMD…
    local name=$1 want=$2 out rc=0
    shift 2
    out=$("$@" 2>&1) || rc=$?
    local now
    now=$(scheduler_is)
    check "refused: $name" "$([[ $rc != 0 && $out == *"$want"* && $now == sched-wlc ]] && echo 0 || echo 1)" \
        "exit $rc, web still on $now; ${out:0:110}"
}
printf 'not wasm' >"$LAB_DIR/junk.wasm"
refused "missing file" "No such file" ringvs_cli plugin swap web "$LAB_DIR/missing.wasm"
refused "not a component" "not a WebAssembly component" ringvs_cli plugin swap web "$LAB_DIR/junk.wasm"
refused "imports WASI" "wasi:" ringvs_cli plugin swap web "$PLUGIN_DIR/tc_wasi.wasm"
refused "unknown name" "neither a built-in" ringvs_cli plugin swap web no-such-plugin
sed -i 's/^scheduler = "sched-rr"/scheduler = "sched-wlc"/' "$conf"
cp "$conf" "$conf.good"
# A [plugins.NAME] entry of a catalogue plugin, without a path, pins or configures its file.
printf '\n[plugins.sched-wlc]\nsha256 = "%s"\n' "$(printf '0%.0s' {1..64})" >>"$conf"
refused "sha256 mismatch on reload" "sha256 mismatch" ringvs_cli reload
cp "$conf.good" "$conf"
printf '\n[plugins.sched-wlc]\nconfig = { bogus = 1 }\n' >>"$conf"
refused "config the plugin rejects" "unknown config key" ringvs_cli reload
cp "$conf.good" "$conf"
printf '\n[plugins.sched-rr-as-defense]\npath = "%s/sched_rr.wasm"\n' "$PLUGIN_DIR" >>"$conf"
sed -i 's|^name = "web"|&\ndefense = ["sched-rr-as-defense"]|' "$conf"
refused "wrong world on reload" "not a defense" ringvs_cli reload

wrk_wait close "$close_pid" || true
check "wrk Connection: close" "$([[ -n $WRK_REQUESTS && $WRK_SOCK_ERRORS == 0 && $WRK_NON2XX == 0 ]] && echo 0 || echo 1)" \
    "${WRK_REQUESTS:-?} requests, socket errors ${WRK_SOCK_ERRORS:-?} (${WRK_ERRORS_DETAIL:-none}), non-2xx ${WRK_NON2XX:-?}"
wrk_wait download "$download_pid" || true
check "wrk keep-alive 512 MiB downloads" "$([[ -n $WRK_REQUESTS && $WRK_REQUESTS -gt 0 && $WRK_SOCK_ERRORS == 0 && $WRK_NON2XX == 0 ]] && echo 0 || echo 1)" \
    "${WRK_REQUESTS:-?} downloads, socket errors ${WRK_SOCK_ERRORS:-?} (${WRK_ERRORS_DETAIL:-none}), non-2xx ${WRK_NON2XX:-?}"

swaps=$(metric 'ringvs_plugin_swaps_total{service="web"}')
check "swaps counted" "$([[ ${swaps:-0} == "$step" ]] && echo 0 || echo 1)" "ringvs_plugin_swaps_total{service=\"web\"} = ${swaps:-absent} (want $step)"
for p in sched-wlc sched-rr; do
    n=$(metric "ringvs_plugin_calls_total{plugin=\"$p\",func=\"pick\"}")
    check "$p scheduled flows" "$([[ ${n:-0} -gt 0 ]] && echo 0 || echo 1)" "ringvs_plugin_calls_total{plugin=\"$p\",func=\"pick\"} = ${n:-absent}"
done

echo
if ((FAILS == 0)); then
    echo "test-swap: PASSED"
else
    echo "test-swap: FAILED ($FAILS)"
    exit 1
fi
