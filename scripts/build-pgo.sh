#!/usr/bin/env bash
# The release daemon built with profile-guided optimization (PGO), trained on the data
# plane's criterion benches: what the Debian package ships (scripts/package-deb.sh).
#
#   bash scripts/build-pgo.sh     # prints the binary's path on its last line
#
# 1. The data-plane bench and the daemon are built instrumented (-Cprofile-generate) into
#    $target/pgo-gen.
# 2. The instrumented bench runs every data-plane bench for a second (established flows of
#    IPv4 and IPv6 at 1k, 100k and 1M flows, new flows, the SYN proxy, defense ticks): the
#    branch and call counts of the packet path.
# 3. llvm-profdata (rustup's llvm-tools) merges them into $target/pgo/ringvs.profdata, and the
#    same targets are built again with -Cprofile-use into $target/pgo: the daemon is
#    $target/pgo/release/ringvs, the bench binary beside it measures what the profile gave
#    (docs/PERFORMANCE.md, "profile-guided build").
#
# Both builds go through `cargo bench --no-run`, not `cargo build --release`: cargo then builds
# the daemon from the same library unit as the bench (dev-dependencies change some
# dependencies' features, and with them the library's symbol names, which is what a profile
# is matched by). The script checks that the profile names the daemon's own functions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-exe.sh
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
gen=$target/pgo-gen
out=$target/pgo
raw=$gen/profraw

die() {
    printf 'build-pgo: %s\n' "$*" >&2
    exit 1
}
say() { printf 'build-pgo: %s\n' "$*" >&2; }

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [[ ! -x $profdata ]]; then
    say "adding rustup's llvm-tools (llvm-profdata)"
    rustup component add llvm-tools >&2 || die "rustup component add llvm-tools failed"
fi
[[ -x $profdata ]] || die "$profdata is missing after rustup component add llvm-tools"
# The benches load plugins from $target/wasm32-wasip2/plugin.
[[ -d $target/wasm32-wasip2/plugin ]] || bash scripts/build-plugins.sh >&2

# Prints the bench executable a `cargo bench --no-run` with RUSTFLAGS=$1 builds into $2.
build() {
    CARGO_TARGET_DIR=$2 RUSTFLAGS=$1 bench_exe
}

say "1/3 instrumented build ($gen)"
bench=$(build "-Cprofile-generate=$raw" "$gen")
[[ -x $bench ]] || die "the instrumented bench was not built"
# Build scripts and proc macros ran instrumented too: only the bench's counts are kept.
rm -rf "$raw"

say "2/3 training: every data-plane bench, 1 s each"
CARGO_TARGET_DIR=$target "$bench" --bench --profile-time 1 >/dev/null ||
    die "the training run failed ($bench --bench --profile-time 1)"
compgen -G "$raw/*.profraw" >/dev/null || die "the training run left no profile in $raw"
mkdir -p "$out"
"$profdata" merge -o "$out/ringvs.profdata" "$raw"/*.profraw

say "3/3 optimized build ($out)"
bench=$(build "-Cprofile-use=$out/ringvs.profdata" "$out")
bin=$out/release/ringvs
[[ -x $bench && -x $bin ]] || die "the optimized build left no daemon at $bin"
# The profile must be the daemon's: its packet path's out-of-line step, by its symbol name.
sym=$(nm "$bin" | grep -oE '_ZN6ringvs9dataplane5shard[^ ]*tcp_step_changing[^ ]*' | head -1)
[[ -n $sym ]] || die "no tcp_step_changing symbol in $bin"
# (grep reads it all: with -q it would stop early and pipefail would see show's SIGPIPE.)
"$profdata" show --all-functions "$out/ringvs.profdata" | grep -F "$sym" >/dev/null ||
    die "the profile does not name the daemon's functions ($sym): it was not applied"
say "bench binary: $bench"
echo "$bin"
