#!/usr/bin/env bash
# The plugin author's loop as the README shows it: from nothing to a custom scheduler
# hot-swapped into a running director in four commands, each timed:
#
#   ringvs plugin new myplugin --kind scheduler
#   cargo test --manifest-path myplugin/Cargo.toml
#   cargo build --manifest-path myplugin/Cargo.toml --profile plugin --target wasm32-wasip2
#   ringvs plugin swap web myplugin/target/wasm32-wasip2/plugin/myplugin.wasm
#
# Beforehand it starts a director (service `web` on the built-in wlc) in a network namespace
# of its own, rauth-pnew-PID, with its admin socket in a temporary directory; afterwards it
# checks with `ringvs plugin list` that `web` runs myplugin, and that the persistence and
# defense templates build, pass their tests and pass `ringvs check`. The director, the
# namespace and the directory are removed on any exit.
#
#   bash scripts/test-plugin-new.sh         # as root
#
# RINGVS: the binary (default target/release/ringvs, built if missing). Fast when run again:
# the generated crates' build directory is target/plugin-new (kept, through a symlink), and
# `plugin new` seeds their Cargo.lock with the workspace's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
RINGVS=${RINGVS:-$target/release/ringvs}
[[ $(id -u) -eq 0 ]] || { echo "test-plugin-new: run as root (it starts a director in a namespace)" >&2; exit 1; }
[[ -x $RINGVS ]] || cargo build --release -p ringvs
RINGVS=$(realpath "$RINGVS")
cache=$target/plugin-new
mkdir -p "$cache"
# The generated crates are built with cargo's own target directory (./target), as an author's
# would be; it is a symlink to the cache. CARGO_TARGET_DIR would bypass it.
unset CARGO_TARGET_DIR

ns=rauth-pnew-$$
tmp=$(mktemp -d /tmp/ringvs-plugin-new.XXXXXX)
daemon=
cleanup() {
    local rc=$?
    if [[ -n $daemon ]]; then
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
    if ((rc != 0)) && [[ -f $tmp/ringvs.log ]]; then
        echo "test-plugin-new: failed; the director's log:" >&2
        tail -20 "$tmp/ringvs.log" >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
die() { echo "test-plugin-new: $*" >&2; exit 1; }

cat >"$tmp/director.toml" <<TOML
[director]
device = "rauth0"
queues = 1
admin_socket = "$tmp/admin.sock"
metrics_listen = "127.0.0.1:9406"

[[service]]
name = "web"
vip = "10.77.100.100:80"
proto = "tcp"
forward = "nat"
scheduler = "wlc"

[[service.server]]
addr = "10.77.1.1:8080"
weight = 1

[[service.server]]
addr = "10.77.1.2:8080"
weight = 1
TOML
ip netns add "$ns"
ip -n "$ns" link set lo up
# `ip netns exec` execs the program: $! is the director's own pid.
ip netns exec "$ns" "$RINGVS" run -c "$tmp/director.toml" </dev/null >"$tmp/ringvs.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
    [[ -S $tmp/admin.sock ]] && break
    kill -0 "$daemon" 2>/dev/null || die "the director exited"
    sleep 0.1
done
[[ -S $tmp/admin.sock ]] || die "the director's admin socket did not appear"

# The four commands, with `ringvs` being $RINGVS and the swap told where the socket is.
cd "$tmp"
ringvs() { "$RINGVS" "$@"; }
timed() {
    local t0=$SECONDS
    echo "\$ $*"
    "$@"
    echo "   ($((SECONDS - t0)) s)"
}
timed ringvs plugin new myplugin --kind scheduler
ln -s "$cache" myplugin/target
timed cargo test -q --manifest-path myplugin/Cargo.toml
timed cargo build -q --manifest-path myplugin/Cargo.toml --profile plugin --target wasm32-wasip2
timed ringvs plugin swap -s "$tmp/admin.sock" web myplugin/target/wasm32-wasip2/plugin/myplugin.wasm

echo "\$ ringvs plugin list"
ringvs plugin list -s "$tmp/admin.sock" | tee "$tmp/list"
grep -Eq '^myplugin +scheduler +web ' "$tmp/list" || die "web does not run myplugin"

# The other kinds: generated, tested, built, and accepted by `ringvs check`.
for kind in persistence defense; do
    ringvs plugin new "my$kind" --kind "$kind" >/dev/null
    ln -s "$cache" "my$kind/target"
    cargo test -q --manifest-path "my$kind/Cargo.toml" >/dev/null
    cargo build -q --manifest-path "my$kind/Cargo.toml" --profile plugin --target wasm32-wasip2
    # Read whole before matching: `grep -q` leaves at its first match, and ringvs, still
    # writing, would then die of SIGPIPE (pipefail: a refusal that was none).
    checked=$(ringvs check -c "my$kind/ringvs.toml") && grep -q "^plugin my$kind: $kind .* OK" <<<"$checked" ||
        die "ringvs check refused the $kind template: $checked"
    echo "template $kind: tests pass, ringvs check OK"
done
echo "test-plugin-new: from nothing to a hot-swapped scheduler in 4 commands; every template builds, tests and loads"
