#!/usr/bin/env bash
# Build every first-party plugin and sandbox fixture for wasm32-wasip2 (release) and copy the
# components to plugins/dist/NAME.wasm. Called by the Makefile and CI.
#
# Size/speed profile for plugins only (the workspace release profile is tuned for the host):
# full LTO, no debug info, stripped symbols, panic=abort is NOT used (std on wasip2 needs unwind
# tables off anyway; panics become `unreachable` traps).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

plugins=(headers rewrite cors jwt-auth json-redact)
fixtures=(fixture-trap fixture-loop fixture-alloc fixture-stderr fixture-init-reject fixture-flaky)
# Plugins built without `std` on wasm32 (`flexgate_sdk::no_std_runtime!`): their components import
# no WASI, so the host instantiates and calls them without an async fiber and wires 2 import
# interfaces instead of 15 (per_request: ~15% less per request). They are built in their own cargo
# invocation: in a shared one, feature unification would turn on serde's `std` for them too.
no_std_plugins=(headers cors fixture-trap)

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

std_args=()
no_std_args=()
for p in "${plugins[@]}" "${fixtures[@]}"; do
  if [[ " ${no_std_plugins[*]} " == *" $p "* ]]; then no_std_args+=(-p "$p"); else std_args+=(-p "$p"); fi
done

cd "$root"
build() {
  cargo build --release --target wasm32-wasip2 --lib "$@" \
    --config 'profile.release.lto="fat"' \
    --config 'profile.release.codegen-units=1' \
    --config 'profile.release.debug=false' \
    --config 'profile.release.strip=true'
}
build "${std_args[@]}"
build "${no_std_args[@]}"

mkdir -p "$here/dist"
for p in "${plugins[@]}" "${fixtures[@]}"; do
  src="$target_dir/wasm32-wasip2/release/${p//-/_}.wasm"
  cp "$src" "$here/dist/$p.wasm"
  printf '%-22s %8d bytes\n' "$p.wasm" "$(stat -c %s "$here/dist/$p.wasm")"
done
