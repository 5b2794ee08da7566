#!/usr/bin/env bash
# Checks the Grafana dashboard offline: the JSON parses and is importable (a ${DS_PROMETHEUS}
# input, the instance/service/server variables, every query on that datasource), every PromQL
# expression is valid (promtool check rules on a generated file holding each expression as a
# recording rule; annotation queries too), and every metric it uses is one host/src/metrics
# exports.
#
#   bash examples/grafana/check-dashboard.sh [DASHBOARD.json]     # exit status = verdict
#   bash examples/grafana/check-dashboard.sh --names [DASHBOARD]   # print the metric names it uses
#
# Grafana's variables are replaced before parsing: $__rate_interval (and $__interval,
# $__range) by 1m, $instance/$service/$server (always inside =~"…") by .*; any other $ is an
# error. Needs python3 and promtool (scripts/deps.sh installs prometheus, which brings it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
names_only=0
if [[ ${1:-} == --names ]]; then
    names_only=1
    shift
fi
dashboard=${1:-$here/ringvs-dashboard.json}
command -v promtool >/dev/null 2>&1 || {
    echo "check-dashboard: promtool not found (run scripts/deps.sh)" >&2
    exit 1
}
work=$(mktemp -d /tmp/rvs-dashboard.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The checker itself must be able to fail: promtool has to reject a broken expression.
printf 'groups:\n  - name: selftest\n    rules:\n      - record: ringvs_dashboard:selftest\n        expr: %s\n' \
    "'sum(rate(ringvs_connections_total[1m])'" >"$work/bad.yml"
if promtool check rules "$work/bad.yml" >/dev/null 2>&1; then
    echo "check-dashboard: promtool accepted a broken expression; it cannot be trusted to check the dashboard" >&2
    exit 1
fi

python3 - "$dashboard" "$root/host/src/metrics" "$work" "$names_only" <<'EOF'
import glob, json, re, sys

path, metrics_dir, work, names_only = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
problems = []
def bad(msg):
    problems.append(msg)

try:
    d = json.load(open(path, encoding="utf-8"))
except Exception as e:
    sys.exit(f"check-dashboard: {path} is not valid JSON: {e}")

# Importable in Grafana >= 9 with a Prometheus datasource chosen at import.
inputs = [i for i in d.get("__inputs", []) if i.get("name") == "DS_PROMETHEUS"]
if not inputs or inputs[0].get("type") != "datasource" or inputs[0].get("pluginId") != "prometheus":
    bad("__inputs has no Prometheus datasource input named DS_PROMETHEUS")
if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
    bad(f"schemaVersion {d.get('schemaVersion')!r}: want >= 36 (Grafana 9)")
for k in ("title", "uid"):
    if not d.get(k):
        bad(f"no {k}")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
for want in ("DS_PROMETHEUS", "instance", "service", "server"):
    if want not in variables:
        bad(f"no template variable {want}")
if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
    bad("variable DS_PROMETHEUS is not a datasource variable")
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

exprs = []  # (where, PromQL)
ids = set()
for p in panels(d.get("panels", [])):
    where = f"panel {p.get('id')} {p.get('title')!r}"
    if p.get("id") in ids:
        bad(f"{where}: duplicate id")
    ids.add(p.get("id"))
    if "gridPos" not in p:
        bad(f"{where}: no gridPos")
    if p.get("type") == "row":
        continue
    if p.get("datasource") != DS:
        bad(f"{where}: datasource is {p.get('datasource')!r}, want {DS}")
    if not p.get("targets"):
        bad(f"{where}: no queries")
    if not p.get("description"):
        bad(f"{where}: no description")
    for t in p.get("targets", []):
        if t.get("datasource") != DS:
            bad(f"{where} query {t.get('refId')}: datasource is {t.get('datasource')!r}")
        if not t.get("expr", "").strip():
            bad(f"{where} query {t.get('refId')}: empty expression")
        exprs.append((f"{where} query {t.get('refId')}", t.get("expr", "")))
# Annotations from Prometheus queries (reloads, swaps): same datasource, valid PromQL.
for a in d.get("annotations", {}).get("list", []):
    if a.get("builtIn"):
        continue
    where = f"annotation {a.get('name')!r}"
    if a.get("datasource") != DS:
        bad(f"{where}: datasource is {a.get('datasource')!r}, want {DS}")
    if not a.get("expr", "").strip():
        bad(f"{where}: no expression")
    exprs.append((where, a.get("expr", "")))
for name, v in variables.items():
    if v.get("type") != "query":
        continue
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else q or ""
    m = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q)
    if not m:
        bad(f"variable {name}: query {q!r} is not label_values(SELECTOR, LABEL)")
        continue
    if v.get("datasource") != DS:
        bad(f"variable {name}: datasource is {v.get('datasource')!r}")
    exprs.append((f"variable {name}", m.group(1)))

def substitute(where, e):
    e = re.sub(r"\$__(rate_interval|interval|range)\b", "1m", e)
    e = re.sub(r"\$\{?(instance|service|server)\}?", ".*", e)
    if "$" in e:
        bad(f"{where}: unknown variable in {e!r}")
    return e

# The metrics ringvs exports: the string constants of host/src/metrics/*.rs.
exported = set()
for rs in glob.glob(f"{metrics_dir}/*.rs"):
    exported |= set(re.findall(r'pub const [A-Z_0-9]+: &str = "(ringvs_[a-z0-9_]+)";', open(rs).read()))
if len(exported) < 20:
    bad(f"found only {len(exported)} metric names in {metrics_dir}")
used = set()
for where, e in exprs:
    for m in re.findall(r"\bringvs_[a-z0-9_]+\b", e):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        if m not in exported and base not in exported:
            bad(f"{where}: {m} is not a metric ringvs exports")
        used.add(m)

if names_only:
    if problems:
        sys.exit("check-dashboard: " + "; ".join(problems))
    print("\n".join(sorted(used)))
    sys.exit(0)

with open(f"{work}/rules.yml", "w") as f:
    f.write("groups:\n  - name: ringvs-dashboard\n    rules:\n")
    for i, (where, e) in enumerate(exprs):
        f.write(f"      # {where}\n      - record: ringvs_dashboard:expr_{i}\n        expr: {json.dumps(substitute(where, e))}\n")
with open(f"{work}/where", "w") as f:
    f.write("".join(f"expr_{i} {where}\n" for i, (where, _) in enumerate(exprs)))
with open(f"{work}/count", "w") as f:
    f.write(f"{len(exprs)} expressions in {len(ids)} panels, {len(used)} metrics: {' '.join(sorted(used))}\n")
if problems:
    print("\n".join(f"FAIL  {p}" for p in problems))
    sys.exit(1)
EOF
if ((names_only)); then exit 0; fi
if ! out=$(promtool check rules "$work/rules.yml" 2>&1); then
    printf '%s\n' "$out" | sed 's/^/    | /'
    grep -o 'ringvs_dashboard:expr_[0-9]*' <<<"$out" | sort -u | while read -r e; do
        echo "FAIL  promtool rejected the expression of $(grep "^${e#*:} " "$work/where" | cut -d' ' -f2-)"
    done
    echo "FAIL  $dashboard: promtool rejected expressions (output above)"
    exit 1
fi
echo "PASS  $(basename "$dashboard"): JSON importable, $(cat "$work/count")"
echo "PASS  promtool check rules: every expression parses ($(grep -o 'SUCCESS: [0-9]* rules found' <<<"$out"))"
