#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine; quick when all is present.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v make >/dev/null || need_apt+=(make)
# infra/api-fuzz.sh: python3 with venv (schemathesis below) and curl.
command -v curl >/dev/null || need_apt+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts packaged servers; the tests start their own on free ports.
  systemctl stop redis-server prometheus 2>/dev/null || service redis-server stop 2>/dev/null || true
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

# schemathesis (PyPI) for `make api-fuzz`: in a venv under target/ so nothing system-wide changes.
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/venv"
if ! "$venv/bin/st" --version >/dev/null 2>&1; then
  echo "setup: pip install schemathesis into target/venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis
fi
