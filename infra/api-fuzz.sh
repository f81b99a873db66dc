#!/usr/bin/env bash
# Schemathesis against the admin API: starts `flexgate serve` (debug build) with a small config in
# a temp dir (file store, a known JWT secret, a static admin token), then runs
# `st run .../api/openapi.json` with the checks `not_a_server_error` and
# `response_schema_conformance`. Exit 0 when it finds nothing; the gateway log is printed on
# failure. Bounded: MAX_EXAMPLES per operation (default 100) and FUZZ_TIMEOUT seconds (default 600).
#
# Two passes: path parameters generated freely (mostly 404s, as a client with typos gets), then
# pinned to the seeded plugin, versions, route, upstream and target (plugins/dist/headers.wasm is
# uploaded first when it was built) so the handlers behind the 404s are fuzzed too.
#
#   bash infra/api-fuzz.sh             # what `make api-fuzz` (part of `make test`) runs
#   MAX_EXAMPLES=200 FUZZ_SEED=1 bash infra/api-fuzz.sh
#   ST=/path/to/st FLEXGATE=target/release/flexgate bash infra/api-fuzz.sh
#
# schemathesis comes from PyPI into target/venv (.ci/setup.sh installs it; so does this script when
# it is missing). Only 127.0.0.1 is used; the gateway is stopped by its PID on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

note() { printf '\033[1m[api-fuzz]\033[0m %s\n' "$*" >&2; }

max_examples=${MAX_EXAMPLES:-100}
fuzz_timeout=${FUZZ_TIMEOUT:-600}
st=${ST:-target/venv/bin/st}
flexgate=${FLEXGATE:-target/debug/flexgate}

if [ ! -x "$st" ]; then
  note "installing schemathesis into target/venv"
  mkdir -p target
  python3 -m venv target/venv
  target/venv/bin/pip install --quiet --disable-pip-version-check schemathesis
  st=target/venv/bin/st
fi
case "$st" in /*) ;; *) st="$root/$st" ;; esac
case "$flexgate" in /*) ;; *) flexgate="$root/$flexgate" ;; esac
if [ -z "${FLEXGATE:-}" ]; then
  # A no-op when `cargo test` already built it.
  ${CARGO:-cargo} build --quiet --locked -p flexgate
fi

tmp=$(mktemp -d)
gateway_pid=
cleanup() {
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
proxy_port=$(free_port)
admin_port=$(free_port)
metrics_port=$(free_port)
while [ "$admin_port" = "$proxy_port" ]; do admin_port=$(free_port); done
while [ "$metrics_port" = "$proxy_port" ] || [ "$metrics_port" = "$admin_port" ]; do metrics_port=$(free_port); done

token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
token_sha=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$tmp/admin-tokens.yaml" <<EOF
tokens:
  - { name: api-fuzz, sha256: "$token_sha", role: admin }
EOF
cat >"$tmp/flexgate.yaml" <<EOF
version: 1
listen: 127.0.0.1:$proxy_port
admin:
  listen: 127.0.0.1:$admin_port
  auth: { jwt_secret_env: FLEXGATE_FUZZ_JWT_SECRET, tokens_file: ./admin-tokens.yaml }
  max_upload: 1MiB
metrics: { listen: 127.0.0.1:$metrics_port }
log: { level: warn, access_log: false }
store: { kind: file, path: ./data }
upstreams:
  - name: backend
    targets: [ { addr: "127.0.0.1:$proxy_port" } ]
    circuit_breaker: { consecutive_failures: 5 }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: backend
    rate_limit: { key: client_ip, rate: 100/s, burst: 10 }
  - name: hello
    match: { path_prefix: / }
    respond: { status: 200, body: "hello\n" }
EOF

FLEXGATE_FUZZ_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
  "$flexgate" serve --config "$tmp/flexgate.yaml" >"$tmp/gateway.log" 2>&1 &
gateway_pid=$!

base="http://127.0.0.1:$admin_port"
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "$base/health/ready" 2>/dev/null; then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    note "the gateway exited before it was ready:"
    cat "$tmp/gateway.log" >&2
    exit 1
  fi
  sleep 0.1
done
if ! curl -fsS -o /dev/null "$base/health/ready"; then
  note "the gateway did not become ready:"
  cat "$tmp/gateway.log" >&2
  exit 1
fi
# The token works before the fuzzer spends minutes on 401s.
curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$base/api/me"

# Seeds the registry (again before each pass: the fuzzer deletes, promotes and rolls back): two
# versions of `headers` (same bytes), stable + canary on route `hello`.
auth=(-H "Authorization: Bearer $token")
seed_registry() {
  if [ ! -f plugins/dist/headers.wasm ]; then
    note "plugins/dist/headers.wasm is missing (bash plugins/build.sh): the registry starts empty"
    return
  fi
  for v in 1.0.0 1.1.0; do
    curl -fsS -o /dev/null "${auth[@]}" -H 'content-type: application/wasm' \
      --data-binary @plugins/dist/headers.wasm "$base/api/plugins?name=headers&version=$v"
  done
  curl -fsS -o /dev/null "${auth[@]}" -X PUT -H 'content-type: application/json' \
    -d '{"stable": "1.0.0", "canary": "1.1.0", "canary_percent": 10}' "$base/api/rollouts/hello/headers"
}
cat >"$tmp/pinned.toml" <<EOF
[parameters]
"path.name" = "headers"
"path.version" = "1.0.0"
"path.route" = "hello"
"path.plugin" = "headers"
"path.upstream" = "backend"
"path.target" = "127.0.0.1:$proxy_port"
EOF

version=$("$st" --version | awk '{print $NF}')
seed=${FUZZ_SEED:-$RANDOM}
pass() { # pass NAME [GLOBAL OPTIONS...]
  local name=$1 status=0
  shift
  note "pass $name: schemathesis $version on $base/api/openapi.json (max $max_examples examples per operation, seed $seed)"
  # From the temp dir: schemathesis and hypothesis leave cache folders in the working directory.
  (cd "$tmp" && timeout --signal=INT --kill-after=30 "$fuzz_timeout" \
    "$st" "$@" run "$base/api/openapi.json" \
      --checks not_a_server_error,response_schema_conformance \
      -H "Authorization: Bearer $token" \
      --max-examples "$max_examples" \
      --request-timeout 10 \
      --workers 2 \
      --seed "$seed" \
      --report junit --report-dir "$tmp/report-$name" \
      --generation-database none \
      --no-color) || status=$?
  if [ "$status" != 0 ]; then
    note "pass $name: schemathesis failed (exit $status); gateway log:"
    tail -n 200 "$tmp/gateway.log" >&2
    exit "$status"
  fi
}
seed_registry
pass free
seed_registry
pass pinned --config-file "$tmp/pinned.toml"

if grep -q '"level":"ERROR"' "$tmp/gateway.log"; then
  note "the gateway logged errors during the run:"
  grep '"level":"ERROR"' "$tmp/gateway.log" | tail -n 50 >&2
  exit 1
fi
note "no server errors, no schema violations"
