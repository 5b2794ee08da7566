#!/usr/bin/env bash
# Every test of ringvs, as root on a fresh Debian machine with Rust (rustup) installed:
# dependencies, formatting and lints, unit/fixture/kernel tests, then the netns lab end to end.
#
#   bash scripts/test.sh
#
# Lab traffic stays inside namespaces this run creates (10.77.0.0/16); every load is bounded
# in time and the lab is torn down even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s\n' "$*"; }

[[ $(id -u) -eq 0 ]] || { echo "scripts/test.sh: run as root (the kernel and lab tests need it)" >&2; exit 1; }

step "dependencies"
bash scripts/deps.sh

# Real-kernel tests must not skip quietly when they cannot run.
export RINGVS_REQUIRE_ROOT=1

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "Grafana dashboard (JSON, PromQL via promtool)"
bash examples/grafana/check-dashboard.sh

step "Prometheus rules (promtool check rules, promtool test rules)"
bash examples/prometheus/check-rules.sh

step "plugins (wasm32-wasip2)"
bash scripts/build-plugins.sh

step "the SDK packaged (cargo package) and used by a plugin crate outside the workspace"
bash scripts/test-sdk-outside.sh

step "unit, fixture, plugin and kernel tests"
cargo test --workspace

step "coverage-guided fuzzing smoke: seeds and fixtures replayed, then 60 s per target (scripts/fuzz.sh)"
bash scripts/fuzz.sh

step "release build"
cargo build --release -p ringvs

step "plugin author: ringvs plugin new, test, build, hot-swap into a director (namespace rauth-pnew-*)"
bash scripts/test-plugin-new.sh

step "release build with profile-guided optimization (scripts/build-pgo.sh: instrumented, trained on the data-plane benches, rebuilt)"
bash scripts/build-pgo.sh

step "Debian package of the profile-guided build: build, dpkg -i, the unit's command in a namespace, dpkg -P"
NO_BUILD=1 bash scripts/test-deb.sh

step "lab: end to end through ringvs (and ringvs replay --compare on a tcpdump capture of it)"
NO_BUILD=1 bash examples/lab/test-e2e.sh

step "lab: end to end through ringvs with director.io = \"af_xdp\" (1 and 2 queues, detach on exit and on SIGKILL)"
LAB_IO=af_xdp bash examples/lab/test-e2e.sh

step "lab: NAT66 beside NAT44: nginx, wrk, curl and UDP over IPv6 through ringvs, manual and automatic routes"
bash examples/lab/test-nat6.sh

step "lab: scheduler swaps and a hostile plugin under load"
bash examples/lab/test-swap.sh

step "lab: floods that fill the table (default protection at 1 and 2 queues: SYN, UDP, spoofed victim, policy swaps, IPv6 SYN; IPVS plugins at the table's limit, synauth, nft DNAT, nft synproxy)"
bash examples/lab/test-flood.sh

step "lab: health checks (failover and recovery under load)"
bash examples/lab/test-health.sh

step "lab: Prometheus scrapes ringvs under load; promtool and the dashboard's metrics"
bash examples/lab/test-prometheus.sh

step "lab: persistence (-p -M) per client network"
bash examples/lab/test-persist.sh

step "lab: LVS-TUN (IPIP) with nginx realservers answering the client directly; too big gets fragmentation-needed"
bash examples/lab/test-tun.sh

step "lab: LVS-TUN over IPv6 (IPv6-in-IPv6, GUE over IPv6): nginx, wrk, curl and UDP, replies bypass the director, too big gets packet-too-big"
bash examples/lab/test-tun6.sh

step "lab: LVS-DR with director.io = \"af_xdp\": the unchanged packet to the realserver's MAC, replies bypass the director"
bash examples/lab/test-dr.sh

step "lab: LVS-DR over IPv6 with director.io = \"af_xdp\" (neighbour discovery by the kernel), the IPv4 service beside it: nginx, wrk, curl and UDP, replies bypass the director"
bash examples/lab/test-dr6.sh

step "lab: active-backup with keepalived and connection sync: the master's ringvs killed, then its keepalived stopped, under a 512 MiB download and keep-alive load"
bash examples/lab/test-ha.sh

step "connection sync under load: 100,000 new connections a second for 5 s, then a 1,000,000-entry bulk transfer to a starting backup (every entry must arrive)"
target/release/ringvs ha bench --rate 100000 --seconds 5 --bulk 1000000

step "lab: active-active behind ECMP: three directors announce the VIP by BGP (BIRD 2), 64 keep-alive flows through a graceful stop, a director's death and a rejoin"
bash examples/lab/test-ecmp.sh

echo
echo "scripts/test.sh: all tests passed"
