#!/usr/bin/env bash
# Coverage-guided fuzzing of ringvs (libFuzzer through cargo-fuzz, stable Rust, no sanitizer).
#
#   bash scripts/fuzz.sh                 # CI smoke: seeds replayed, then 60 s per target
#   FUZZ_SECS=3600 FUZZ_SEED=0 bash scripts/fuzz.sh shard wire   # a campaign: 1 h per named target
#
# Targets (fuzz/fuzz_targets/, bodies in fuzz/src/): wire, shard, admin, config, pcap, sync.
# Seeds: fuzz/seeds/TARGET/ (committed; fuzz/make-seeds.py writes them). What a run finds
# goes to FUZZ_CORPUS/TARGET (default fuzz/corpus/, not committed); a crash is left in
# fuzz/artifacts/TARGET/ and fails the run: copy it to fuzz/fixtures/TARGET/ with the fix, so
# `cargo test` in fuzz/ replays it for ever. docs/FUZZING.md has the campaign's figures.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-60}
# libFuzzer's seed: fixed by default, so that the smoke runs the same inputs on every run (a
# faster machine runs more of the same sequence); FUZZ_SEED=0 draws one (campaigns).
seed=${FUZZ_SEED:-1}
corpus=${FUZZ_CORPUS:-fuzz/corpus}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(wire shard admin config pcap sync)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# The shard target runs the catalogue and the hostile test plugins.
bash scripts/build-plugins.sh >/dev/null

echo "fuzz.sh: seeds and fixtures through every target's body (cargo test)"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo test --manifest-path fuzz/Cargo.toml --lib

echo "fuzz.sh: building the instrumented targets"
cargo fuzz build -s none >/dev/null

status=0
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    echo "fuzz.sh: $t for ${secs} s"
    # -timeout: one input over 10 s is a hang; -rss_limit_mb: the shard target compiles the
    # plugins once (about 300 MiB) and must not grow past this.
    if cargo fuzz run -s none "$t" "$corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|cov:' "$log" | tail -4
        printf 'fuzz.sh: %s: %s inputs in its corpus\n' "$t" "$(ls "$corpus/$t" | wc -l)"
    else
        tail -60 "$log"
        echo "fuzz.sh: $t FAILED: the input is in fuzz/artifacts/$t/" >&2
        status=1
    fi
    rm -f "$log"
done
exit $status
