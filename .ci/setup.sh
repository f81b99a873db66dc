#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine; quick when all is present.
# Services: none is left running. The tests start their own redis-server, gateways and upstreams on
# free loopback ports, the bench smoke its own nginx; Debian's packaged services are kept from
# starting (policy-rc.d) and stopped if they did.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v make >/dev/null || need_apt+=(make)
# infra/api-fuzz.sh: python3 with venv (schemathesis below) and curl.
command -v curl >/dev/null || need_apt+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3 python3-venv)
# make bench-smoke (infra/bench/run.sh --smoke): wrk drives load through FlexGate to an nginx upstream.
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v taskset >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup: not root: install ${need_apt[*]} first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Don't let the packages start their system services (ports 6379, 80, 9090...).
  restore_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && restore_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  [ "$restore_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  # In case a service started anyway (systemd ignores policy-rc.d on some setups).
  for s in redis-server prometheus nginx; do
    systemctl stop "$s" 2>/dev/null || service "$s" stop 2>/dev/null || true
  done
fi

if command -v rustup >/dev/null; then
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
  # The rust images install the minimal profile: no clippy, no rustfmt.
  installed=$(rustup component list --installed 2>/dev/null || true)
  for c in clippy rustfmt; do
    if ! grep -q "^$c" <<<"$installed"; then
      echo "setup: rustup component add $c"
      rustup component add "$c"
    fi
  done
fi

# schemathesis (PyPI) for `make api-fuzz`: in a venv under target/ so nothing system-wide changes.
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/venv"
if ! "$venv/bin/st" --version >/dev/null 2>&1; then
  echo "setup: pip install schemathesis into target/venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis
fi
