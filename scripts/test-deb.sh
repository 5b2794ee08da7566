#!/usr/bin/env bash
# The Debian package end to end, as root on a Debian machine with no ringvs package installed:
# build it (scripts/package-deb.sh), `dpkg -i` it, check what it installed, run the unit's
# ExecStart command in a network namespace of its own and reach it with `ringvs list` through
# the packaged socket path, then `dpkg -r` and `dpkg -P` it and check that nothing is left.
#
#   bash scripts/test-deb.sh             # builds ringvs (release, PGO) and the plugins first
#   NO_BUILD=1 bash scripts/test-deb.sh  # packages what target/ already holds (scripts/test.sh)
#
# The namespace is ${RVS_LAB:-rvs}-deb; the daemon's device lives in it and nothing of it
# touches the host's network. The daemon runs for a few seconds at most.
set -euo pipefail
cd "$(dirname "$0")/.."

FAILS=0
ok() { printf 'PASS  %-44s %s\n' "$1" "${2:-}"; }
bad() {
    printf 'FAIL  %-44s %s\n' "$1" "${2:-}"
    FAILS=$((FAILS + 1))
}
check() { # check NAME DETAIL CMD…: PASS if CMD succeeds
    local name=$1 detail=$2
    shift 2
    if "$@"; then ok "$name" "$detail"; else bad "$name" "$detail"; fi
}
die() {
    printf 'test-deb: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (dpkg -i, a network namespace)"
command -v dpkg >/dev/null || die "not a Debian system (no dpkg)"
if dpkg-query -W -f='${Status}' ringvs 2>/dev/null | grep -q 'install ok'; then
    die "a ringvs package is installed already; this test installs and purges its own (dpkg -P ringvs first)"
fi
for p in /usr/bin/ringvs /usr/lib/ringvs /etc/ringvs /run/ringvs/admin.sock; do
    [[ ! -e $p ]] || die "$p exists before the test: not a clean machine for the package test"
done

ns=${RVS_LAB:-rvs}-deb
work=$(mktemp -d "${TMPDIR:-/tmp}/ringvs-test-deb.XXXXXX")
daemon_pid=
tun_mode=$(stat -c '%a' /dev/net/tun 2>/dev/null || true)
cleanup() {
    if [[ -n $tun_mode ]]; then chmod "$tun_mode" /dev/net/tun 2>/dev/null || true; fi
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
    if dpkg-query -W -f='${Status}' ringvs 2>/dev/null | grep -q 'ok'; then
        dpkg -P ringvs >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

deb=$(bash scripts/package-deb.sh | tail -1)
[[ -f $deb ]] || die "scripts/package-deb.sh made no package"
echo "package: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/contents"
catalogue=$(ls plugins/*/Cargo.toml | wc -l)

# --- install
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || {
    cat "$work/dpkg-i.log" >&2
    die "dpkg -i failed"
}
installed() { dpkg-query -W -f='${Status}' ringvs 2>/dev/null | grep -q 'install ok installed'; }
check "dpkg -i" "$(dpkg-query -W -f='${Package} ${Version} ${Status}' ringvs)" installed
check "binary on PATH" "$(command -v ringvs)" test -x /usr/bin/ringvs
version=$(/usr/bin/ringvs --version)
want_rev=$(target/release/ringvs --version | sed -n 's/.*(git \([^,]*\),.*/\1/p')
check "--version: git revision and WIT" "$version" \
    grep -qE "^ringvs [0-9.]+ \(git ${want_rev}, WIT ringvs:plugin@[0-9.]+\)$" <<<"$version"
n=$(find /usr/lib/ringvs/plugins -name '*.wasm' | wc -l)
check "catalogue in /usr/lib/ringvs/plugins" "$n components (plugins/ has $catalogue)" test "$n" -eq "$catalogue"
avail=$(ringvs plugin list --available)
missing=$(grep -c 'NOT FOUND' <<<"$avail" || true)
from_pkg=$(grep -c ' /usr/lib/ringvs/plugins/' <<<"$avail" || true)
check "plugin list --available" "$from_pkg found in /usr/lib/ringvs/plugins, $missing not found" \
    test "$missing" -eq 0 -a "$from_pkg" -eq "$catalogue"
unit=/usr/lib/systemd/system/ringvs.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
check "systemd unit" "ExecStart=$exec_start" test "$exec_start" = "/usr/bin/ringvs run -c /etc/ringvs/ringvs.toml"
check "tmpfiles.d makes /run/ringvs" "$(cat /usr/lib/tmpfiles.d/ringvs.conf | grep -v '^#')" test -d /run/ringvs
check "config is a conffile" "/etc/ringvs/ringvs.toml" \
    grep -qx /etc/ringvs/ringvs.toml /var/lib/dpkg/info/ringvs.conffiles
man_ok() { zcat /usr/share/man/man1/ringvs.1.gz | grep -q '^\.TH ringvs 1' && [[ -f /usr/share/man/man1/ringvs-service-add.1.gz ]]; }
check "man pages" "$(ls /usr/share/man/man1/ringvs*.1.gz | wc -l) pages" man_ok
bash_ok() { bash -c '. /usr/share/bash-completion/completions/ringvs && complete -p ringvs' >/dev/null; }
check "bash completion" "complete -F _ringvs ringvs" bash_ok
check "zsh and fish completions" "" test -s /usr/share/zsh/vendor-completions/_ringvs -a -s /usr/share/fish/vendor_completions.d/ringvs.fish
checked=$(ringvs check -c /etc/ringvs/ringvs.toml 2>&1) && rc=0 || rc=$?
check "ringvs check accepts the installed config" "$(tail -1 <<<"$checked")" \
    test "$rc" -eq 0 -a -n "$(grep 'OK (catalogue)' <<<"$checked" | grep /usr/lib/ringvs/plugins/)"

# --- the unit's command, in a namespace, as the unit runs it: its User= and Group=, its
# AmbientCapabilities (also the inheritable and bounding sets; CAP_IPC_LOCK among them, so
# the memlock limit, which this shell may not raise, does not matter)
unit_user=$(sed -n 's/^User=//p' "$unit")
unit_caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit")
check "the unit runs as a system user" "User=$unit_user, AmbientCapabilities=$unit_caps" \
    test "$unit_user" = ringvs -a -n "$(getent passwd ringvs)"
# The unprivileged user opens /dev/net/tun: udev makes it 0666 on Debian (50-udev-default.rules);
# this machine's may be 0600 (put back on exit).
chmod 0666 /dev/net/tun
caps=$(tr ' ' '\n' <<<"$unit_caps" | sed 's/^CAP_//' | tr 'A-Z' 'a-z' | sed 's/^/+/' | paste -sd,)
ip netns add "$ns"
ip -n "$ns" link set lo up
# shellcheck disable=SC2086 # ExecStart is a command line
ip netns exec "$ns" setpriv --reuid="$unit_user" --regid="$unit_user" --init-groups \
    --inh-caps="-all,$caps" --ambient-caps="$caps" --bounding-set="-all,$caps" \
    env RUST_LOG=info $exec_start >"$work/daemon.log" 2>&1 &
daemon_pid=$!
listed=
for _ in $(seq 1 100); do
    if listed=$(ringvs list 2>/dev/null); then break; fi
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
done
check "ringvs list through /run/ringvs/admin.sock" "$(grep -c '^  -> [0-9]' <<<"$listed" || true) realservers" \
    grep -q '^TCP  192.0.2.10:80 wrr' <<<"$listed"
[[ -n $listed ]] || tail -20 "$work/daemon.log" >&2
check "socket is private" "$(stat -c '%a %U' /run/ringvs/admin.sock 2>/dev/null)" \
    test "$(stat -c '%a %U' /run/ringvs/admin.sock 2>/dev/null)" = "600 ringvs"
# Once set up, every thread keeps only what running needs: the packaged config has two
# queues and routes = "manual", so CAP_BPF (to load the steering program again).
pid=$(pgrep -f -n "^/usr/bin/ringvs run -c /etc/ringvs/ringvs.toml" || true)
thread_caps=$(for t in /proc/"${pid:-0}"/task/*/status; do
    # Not the kernel's io_uring workers (iou-wrk-*): they run no user code.
    grep -q '^Name:.iou-' "$t" 2>/dev/null && continue
    awk '/^(Uid|CapEff|CapPrm|CapAmb):/ { printf "%s %s ", $1, $2 } END { print "" }' "$t"
done 2>/dev/null | sort | uniq -c)
want="Uid: $(id -u ringvs 2>/dev/null) CapPrm: 0000008000000000 CapEff: 0000008000000000 CapAmb: 0000000000000000"
check "running: uid ringvs, only CAP_BPF on every thread" "$(tr -s ' ' <<<"$thread_caps" | head -3)" \
    test "$(sed -E 's/^ *[0-9]+ //; s/ +$//' <<<"$thread_caps" | sort -u)" = "$want"
status=$(ringvs status 2>&1 || true)
check "ringvs status" "$(head -1 <<<"$status")" grep -q 'ringvs0' <<<"$status"
kill -TERM "$daemon_pid"
for _ in $(seq 1 75); do
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
done
if kill -0 "$daemon_pid" 2>/dev/null; then
    kill -KILL "$daemon_pid"
    bad "SIGTERM stops it cleanly" "still running 15 s after SIGTERM; killed"
fi
wait "$daemon_pid" && drc=0 || drc=$?
daemon_pid=
check "SIGTERM stops it cleanly" "exit $drc" test "$drc" -eq 0
check "socket removed at exit" "" test ! -e /run/ringvs/admin.sock
ip netns del "$ns"

# --- remove, then purge: nothing left
dpkg -r ringvs >"$work/dpkg-r.log" 2>&1 || cat "$work/dpkg-r.log" >&2
left=$(while read -r f; do if [[ -f $f && $f != /etc/ringvs/ringvs.toml ]]; then echo "$f"; fi; done <"$work/contents")
check "dpkg -r removes every file but the config" "${left:-none left}" test -z "$left"
check "dpkg -r keeps the config" "" test -f /etc/ringvs/ringvs.toml
dpkg -P ringvs >"$work/dpkg-p.log" 2>&1 || cat "$work/dpkg-p.log" >&2
left=$(while read -r f; do if [[ -f $f ]]; then echo "$f"; fi; done <"$work/contents")
for d in /etc/ringvs /usr/lib/ringvs /usr/share/doc/ringvs /run/ringvs; do
    if [[ -e $d ]]; then left+=" $d"; fi
done
check "dpkg -P leaves nothing behind" "${left:-nothing left}" test -z "$left"
check "package gone" "" bash -c "! dpkg-query -W -f='\${Status}' ringvs 2>/dev/null | grep -q 'ok installed'"

echo
if ((FAILS == 0)); then
    echo "test-deb: PASSED"
else
    echo "test-deb: FAILED ($FAILS)"
    exit 1
fi
