#!/usr/bin/env bash
# Checks the Prometheus rules offline: promtool check rules (syntax), promtool test rules (each
# alert fires on the series that should trigger it and only then; the node_exporter-compatible
# recording rules give the right names and labels), and every ringvs_* metric the rules use is
# one host/src/metrics exports. It first makes sure the tests can fail (a rule file with a
# wrong threshold must fail them).
#
#   bash examples/prometheus/check-rules.sh      # exit status = verdict; scripts/test.sh runs it
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
command -v promtool >/dev/null 2>&1 || {
    echo "check-rules: promtool not found (run scripts/deps.sh)" >&2
    exit 1
}
work=$(mktemp -d /tmp/rvs-rules.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$here"

# The tests must be able to fail: a threshold moved out of reach must break them.
cp ringvs-alerts.test.yml "$work/"
sed 's|ringvs_conntable_memory_bytes / ringvs_conntable_memory_limit_bytes > 0.9$|ringvs_conntable_memory_bytes / ringvs_conntable_memory_limit_bytes > 0.99|' \
    ringvs-alerts.yml >"$work/ringvs-alerts.yml"
cmp -s ringvs-alerts.yml "$work/ringvs-alerts.yml" && {
    echo "check-rules: could not break the rules for the self-test" >&2
    exit 1
}
if (cd "$work" && promtool test rules ringvs-alerts.test.yml >/dev/null 2>&1); then
    echo "check-rules: promtool's tests passed on broken rules; they cannot be trusted" >&2
    exit 1
fi

out=$(promtool check rules ringvs-alerts.yml node-ipvs.rules.yml 2>&1) || {
    printf '%s\n' "$out" >&2
    echo "FAIL  promtool check rules"
    exit 1
}
echo "PASS  promtool check rules: $(grep -o 'SUCCESS: [0-9]* rules found' <<<"$out" | tr '\n' ' ')"
out=$(promtool test rules ringvs-alerts.test.yml node-ipvs.test.yml 2>&1) || {
    printf '%s\n' "$out" >&2
    echo "FAIL  promtool test rules"
    exit 1
}
echo "PASS  promtool test rules: ringvs-alerts.test.yml, node-ipvs.test.yml"

exported=$(cat "$root"/host/src/metrics/*.rs | sed -n 's/.*pub const [A-Z_0-9]*: &str = "\(ringvs_[a-z0-9_]*\)";.*/\1/p' | sort -u)
used=$(grep -ohE '\bringvs_[a-z0-9_]+' ringvs-alerts.yml node-ipvs.rules.yml | sort -u)
missing=$(comm -23 <(echo "$used") <(echo "$exported"))
if [[ -n $missing ]]; then
    echo "FAIL  the rules use metrics ringvs does not export: $missing"
    exit 1
fi
echo "PASS  every metric the rules use is exported: $(echo "$used" | tr '\n' ' ')"
