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

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

args=()
for p in "${plugins[@]}" "${fixtures[@]}"; do args+=(-p "$p"); done

cd "$root"
cargo build --release --target wasm32-wasip2 --lib "${args[@]}" \
  --config 'profile.release.lto="fat"' \
  --config 'profile.release.codegen-units=1' \
  --config 'profile.release.debug=false' \
  --config 'profile.release.strip=true'

mkdir -p "$here/dist"
for p in "${plugins[@]}" "${fixtures[@]}"; do
  src="$target_dir/wasm32-wasip2/release/${p//-/_}.wasm"
  cp "$src" "$here/dist/$p.wasm"
  printf '%-22s %8d bytes\n' "$p.wasm" "$(stat -c %s "$here/dist/$p.wasm")"
done
