#!/usr/bin/env bash
# Instructions per packet of the data plane's criterion benches, counted by callgrind: a
# figure that does not move with a noisy VM's clock (docs/PERFORMANCE.md, "Instructions per
# packet"). Only the measured iterations count (criterion's `Bencher::iter`); packets are
# counted as the batches given to `Pipeline::prefetch` times 32, so FILTER must name
# `*_prefetch32` benches, one at a time.
#
#   bash scripts/bench-ir.sh ['established/inbound_64B_prefetch32/1000$' ...]
#
# BENCH_BIN=path uses a bench binary already built (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-exe.sh

if ! command -v valgrind >/dev/null; then
    apt-get install -y -q valgrind >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q valgrind >/dev/null; }
fi
filters=("$@")
if [ ${#filters[@]} -eq 0 ]; then
    filters=('established/inbound_64B_prefetch32/1000$'
        'established/inbound_64B_prefetch32/1000000$'
        'established6/inbound_64B_prefetch32/1000$')
fi
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
    [ -d target/wasm32-wasip2/plugin ] || bash scripts/build-plugins.sh >/dev/null
    bin=$(bench_exe 2>/dev/null)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "${filters[@]}"; do
    case "$f" in
    *prefetch32*) ;;
    *) echo "bench-ir: $f: only *_prefetch32 benches can be counted per packet" >&2; exit 2 ;;
    esac
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
        --toggle-collect='criterion::bencher::Bencher*iter*' \
        "$bin" --bench --profile-time 2 "$f" >/dev/null 2>&1
    python3 - "$out/cg" "$f" <<'PY'
import re, sys
names, cur, calls, total = {}, None, {}, 0
for line in open(sys.argv[1]):
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        if m.group(1) == 'cfn':
            cur = names.get(m.group(2))
    elif line.startswith('calls=') and cur:
        calls[cur] = calls.get(cur, 0) + int(line.split('=')[1].split()[0])
    elif line.startswith(('summary:', 'totals:')):
        total = int(line.split()[1])
batches = sum(c for n, c in calls.items() if n.endswith('Pipeline>::prefetch'))
if not batches or not total:
    sys.exit(f"bench-ir: {sys.argv[2]}: no prefetched batch was measured")
print(f"{sys.argv[2]:50s} {total / (batches * 32):7.1f} instructions/packet")
PY
done
