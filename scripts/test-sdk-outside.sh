#!/usr/bin/env bash
# The SDK as a plugin author outside this repository gets it: packages ringvs-abi and
# ringvs-sdk as `cargo publish` would (`cargo package`, which also builds the packaged SDK
# against the packaged ABI crate), unpacks both into a temporary directory, writes a plugin
# crate there that depends on the unpacked SDK by path (nothing of this workspace: no
# workspace profile, no ../wit), runs its native test and builds its component for
# wasm32-wasip2 with its own `plugin` profile.
#
#   bash scripts/test-sdk-outside.sh
#
# Fast when run again: the build directories are target/sdk-package and target/sdk-outside
# (kept), and the
# workspace's Cargo.lock seeds the plugin's, so the versions resolved are the workspace's.
# The temporary directory is removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

# Both crates in one command: cargo resolves ringvs-sdk's dependency on ringvs-abi against the
# ringvs-abi it has just packaged (it is not on crates.io yet; publishing goes abi, then sdk),
# through a local registry overlay. Cargo takes a registry crate of a given version as
# immutable: it unpacks its source under $CARGO_HOME/registry/src/ once and never rebuilds it
# by content. Both would keep an earlier run's ringvs-abi 0.1.0, so this run removes the
# unpacked copies of our two crates (crates.io has neither) and builds the verification in a
# directory of its own (target/sdk-package) where it removes their build artefacts.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
pkg_target=$target/sdk-package
for stale in "$cargo_home"/registry/src/*/ringvs-abi-* "$cargo_home"/registry/src/*/ringvs-sdk-* \
    "$pkg_target"/debug/.fingerprint/ringvs-{abi,sdk}-* "$pkg_target"/debug/deps/libringvs_{abi,sdk}-*; do
    [[ -e $stale ]] && rm -rf "$stale"
done
CARGO_TARGET_DIR=$pkg_target cargo package -q -p ringvs-abi -p ringvs-sdk --allow-dirty

tmp=$(mktemp -d /tmp/ringvs-sdk-outside.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$pkg_target/package/ringvs-abi-0.1.0.crate" -C "$tmp"
tar -xzf "$pkg_target/package/ringvs-sdk-0.1.0.crate" -C "$tmp"
[[ -f $tmp/ringvs-sdk-0.1.0/wit/plugin.wit ]] || { echo "the packaged SDK lacks wit/plugin.wit" >&2; exit 1; }

mkdir -p "$tmp/outside/src"
cat >"$tmp/outside/Cargo.toml" <<TOML
[package]
name = "outside"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
ringvs-sdk = { path = "../ringvs-sdk-0.1.0" }

# The packaged SDK names ringvs-abi by version (crates.io); here it is the packaged one.
[patch.crates-io]
ringvs-abi = { path = "../ringvs-abi-0.1.0" }

# What docs/PLUGINS.md tells an out-of-tree crate to add (the workspace's profile does not
# reach it); \`--release\` builds a working, larger component without it.
[profile.plugin]
inherits = "release"
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
TOML
cat >"$tmp/outside/src/lib.rs" <<'RS'
//! Least active connections, out of tree.
#![no_std]
use ringvs_sdk::prelude::*;

/// Picks the available server with the fewest active connections.
#[derive(Default)]
pub struct LeastActive;

impl Scheduler for LeastActive {
    fn pick(&mut self, _flow: &Flow, servers: &Servers) -> Option<usize> {
        servers.available().min_by_key(|s| s.active).map(|s| s.index)
    }
}

export_scheduler!(LeastActive);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, SchedulerHarness};

    #[test]
    fn picks_the_least_active_available_server() {
        let mut h = SchedulerHarness::<LeastActive>::new(&[])
            .unwrap()
            .servers(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1), ("10.0.0.3:80", 0)]);
        h.set_conns(0, 5, 0);
        assert_eq!(h.pick(&flow("10.1.0.1:4000", "10.2.0.1:80")), Some(1));
    }
}
RS
cp Cargo.lock "$tmp/outside/Cargo.lock"

cd "$tmp/outside"
export CARGO_TARGET_DIR=$target/sdk-outside
cargo test -q
cargo build -q --profile plugin --target wasm32-wasip2
wasm=$CARGO_TARGET_DIR/wasm32-wasip2/plugin/outside.wasm
# A component (layer 1), not a core module: bytes 4..8 are 0d 00 01 00.
[[ $(od -An -tx1 -j4 -N4 "$wasm" | tr -d ' \n') == 0d000100 ]] || { echo "$wasm is not a component" >&2; exit 1; }
echo "test-sdk-outside: the packaged ringvs-sdk builds a plugin outside the workspace: $wasm ($(stat -c %s "$wasm") bytes)"
