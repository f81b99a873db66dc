#!/usr/bin/env bash
# FlexGate benchmark harness: FlexGate vs nginx vs HAProxy on 127.0.0.1, side by side in one run.
#
#   infra/bench/run.sh                 # all cases, 3 interleaved runs each, ~8-12 min after the build
#   infra/bench/run.sh --smoke         # CI: case 4 (FlexGate, no plugin, debug build) once for 2 s; fails if it can't serve
#   infra/bench/run.sh --cases 1,2,4   # pick cases (numbers or names, see --list)
#   infra/bench/run.sh --list          # list the cases
#   DURATION=5s RUNS=5 infra/bench/run.sh
#
# Flags handled here: --no-install (don't apt-get), --no-build (use the existing target/release/flexgate
# and plugins/dist), --no-oha (skip installing oha, so no fixed-rate latency pass). Every other flag is
# passed to bench.py (--help there). What it does and how to read the results: infra/bench/README.md.
#
# It only ever talks to 127.0.0.1, starts every server itself and stops them (by PID) on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

install=1 build=1 oha=1 smoke=0
args=()
for a in "$@"; do
  case "$a" in
    --no-install) install=0 ;;
    --no-build) build=0 ;;
    --no-oha) oha=0 ;;
    --smoke) smoke=1; oha=0; args+=("$a") ;;
    --list|-h|--help) exec python3 "$here/bench.py" "$a" ;;
    *) args+=("$a") ;;
  esac
done

note() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

# --- 1. Debian packages ------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ "$smoke" = 1 ]; then
  # The smoke run needs only the load generator and the upstream.
  keep=()
  for p in "${need[@]}"; do case "$p" in wrk|nginx-light|util-linux) keep+=("$p") ;; esac; done
  need=("${keep[@]}")
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # policy-rc.d: don't let the packages start their system services (ports 80, 6379...).
    restore_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && restore_policy=1
    fi
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ "$restore_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  else
    note "missing (not installed: no root/apt-get or --no-install): ${need[*]}; the cases needing them are skipped"
  fi
fi
export PATH="$PATH:/usr/sbin:/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"

# --- 2. oha, for the fixed-rate latency pass (Debian's wrk has no fixed-rate mode, wrk2 isn't packaged) --
if [ "$oha" = 1 ] && ! command -v oha >/dev/null 2>&1; then
  if command -v cargo >/dev/null 2>&1; then
    note "installing oha from crates.io (one-off, a few minutes; --no-oha skips it and the fixed-rate pass)"
    if ! CARGO_TARGET_DIR="${TMPDIR:-/tmp}/flexgate-bench-oha" cargo install oha --locked -q; then
      note "oha did not install: the fixed-rate latency pass will be skipped"
    fi
  else
    note "no cargo: oha not installed, the fixed-rate latency pass will be skipped"
  fi
fi

# --- 3. Build FlexGate and the plugins ----------------------------------------------------------------
if [ "$build" = 1 ]; then
  if [ -f "$root/plugins/build.sh" ] && [ "$smoke" = 0 ]; then
    note "building plugins (plugins/build.sh)"
    (cd "$root" && bash plugins/build.sh) || note "plugins/build.sh failed: plugin cases will be skipped"
  elif [ "$smoke" = 0 ]; then
    note "plugins/build.sh does not exist yet: plugin cases (5, 6, 7) will be skipped"
  fi
  if [ "$smoke" = 1 ]; then
    # The smoke run proves the harness works and FlexGate serves through it; it measures nothing, so
    # it uses the debug binary that `cargo test` (make unit) already built instead of a release build
    # (~15 min on 2 cores; a release profile without LTO, codegen-units 16, still took 13 min). The
    # release profile itself is built by the image job (Dockerfile) and by `make build`/`make bench`.
    if [ -n "${FLEXGATE:-}" ]; then
      note "using FLEXGATE=$FLEXGATE (no build)"
    else
      note "building flexgate (cargo build -p flexgate: debug)"
      if ! (cd "$root" && cargo build --locked -p flexgate); then
        note "the flexgate build failed"
        exit 1
      fi
    fi
  else
    note "building flexgate (cargo build --release -p flexgate)"
    if ! (cd "$root" && cargo build --release -p flexgate); then
      note "the flexgate build failed: FlexGate cases will be skipped"
    fi
  fi
fi

if [ "$smoke" = 1 ] && [ -z "${FLEXGATE:-}" ]; then
  export FLEXGATE="${CARGO_TARGET_DIR:-$root/target}/debug/flexgate"
fi

# --- 4. Run ---------------------------------------------------------------------------------------------
# bench.py cleans up its own servers; this trap only covers an interrupt that hits before it starts.
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' INT TERM
python3 "$here/bench.py" --root "$root" "${args[@]}" &
pid=$!
wait "$pid"
