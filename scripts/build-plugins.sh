#!/usr/bin/env bash
# Builds every WebAssembly plugin of the workspace (plugins/*, sdk/test-cases/*, examples)
# for wasm32-wasip2 with the `plugin` profile, into target/wasm32-wasip2/plugin/NAME.wasm.
#
#   bash scripts/build-plugins.sh
#
# tc-wasi is built on its own: it turns on the SDK's `std` feature, which would otherwise be
# unified into every plugin of the same cargo invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2 >/dev/null
pkgs=()
for toml in plugins/*/Cargo.toml sdk/test-cases/*/Cargo.toml examples/*/Cargo.toml; do
    [[ -f $toml ]] || continue
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$toml" | head -1)
    [[ $name == tc-wasi ]] && continue
    pkgs+=(-p "$name")
done
cargo build --profile plugin --target wasm32-wasip2 "${pkgs[@]}"
cargo build --profile plugin --target wasm32-wasip2 -p tc-wasi
echo "plugins in ${CARGO_TARGET_DIR:-target}/wasm32-wasip2/plugin/:"
ls "${CARGO_TARGET_DIR:-target}"/wasm32-wasip2/plugin/*.wasm
