# Sourced by bench-ir.sh and build-pgo.sh: `bench_exe [cargo args...]` builds the data-plane
# criterion bench (`cargo bench -p ringvs --bench dataplane --no-run`, CARGO_TARGET_DIR and
# RUSTFLAGS as the caller's environment says) and prints the bench executable's path, read
# from cargo's JSON messages; compiler errors go to stderr.
bench_exe() {
    cargo bench -p ringvs --bench dataplane --no-run --message-format=json-render-diagnostics "$@" |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "dataplane" and m.get("executable"):
        print(m["executable"])'
}
