#!/usr/bin/env python3
"""FlexGate memory figures (issue 6): idle RSS with 10 plugins loaded, and RSS with 10,000 idle
keep-alive client connections. 127.0.0.1 only, bounded in time, stops by itself.

    python3 infra/bench/memory.py [--flexgate target/release/flexgate] [--connections 10000]

Prints a Markdown table and appends it to the newest results file in infra/bench/results/ when
`--append` is given.
"""
import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
PLUGINS = [
    ("headers", {"request": {"set": {"x-a": "1"}}}),
    ("rewrite", {"rules": [{"match": "^/(.*)$", "replace": "/$1"}]}),
    ("cors", {"allowed_origins": ["*"]}),
    ("json-redact", {"response": {"remove": ["secret"]}}),
    ("fixture-flaky", {"error_rate": 0.0}),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settled_rss_kib(pid: int, limit: float = 10.0) -> int:
    """RSS once it stops falling: idle connections are parked after `server.park_idle_after` and the
    allocator returns freed pages after ~1 s, so "idle" is the steady state, not the moment after
    the last request."""
    last = rss_kib(pid)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_kib(pid)
        if now >= last * 0.995:
            return now
        last = now
    return last


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def config(port: int, dist: Path, data: Path) -> str:
    # 10 plugins: each of 5 components loaded twice (pooled and per_request), each bound to a route.
    plugins, routes = [], []
    for i in range(10):
        name, conf = PLUGINS[i % 5]
        iso = "pooled" if i < 5 else "per_request"
        plugins.append({"name": f"p{i}", "source": str(dist / f"{name}.wasm"), "isolation": iso})
        routes.append({"name": f"r{i}", "match": {"path_prefix": f"/r{i}"},
                       "respond": {"status": 200, "body": "ok"},
                       "plugins": [{"use": f"p{i}", "config": conf}]})
    routes.append({"name": "root", "match": {"path_prefix": "/"}, "respond": {"status": 200, "body": "ok"}})
    cfg = {"version": 1, "listen": f"{HOST}:{port}", "admin": {"listen": f"{HOST}:{port + 1}"},
           "metrics": {"listen": f"{HOST}:{port + 2}"}, "log": {"level": "warn", "access_log": False},
           "server": {"workers": 1, "header_read_timeout": "300s", "idle_timeout": "300s"},
           "store": {"kind": "file", "path": str(data)}, "plugins": plugins, "routes": routes}
    return json.dumps(cfg)  # JSON is YAML


async def hold(n: int, port: int) -> list:
    conns = []
    req = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    for i in range(n):
        r, w = await asyncio.open_connection(HOST, port)
        w.write(req)
        conns.append((r, w))
        if i % 500 == 499:
            await asyncio.gather(*(c[0].readuntil(b"ok") for c in conns[i - 499:i + 1]))
    return conns


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexgate", type=Path, default=ROOT / "target/release/flexgate")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.connections + 1000), hard))
    dist = ROOT / "plugins/dist"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = Path(tmp) / "flexgate.yaml"
        path.write_text(config(port, dist, Path(tmp) / "data"))
        proc = subprocess.Popen([str(a.flexgate), "serve", "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: resource.setrlimit(
                                    resource.RLIMIT_NOFILE, (min(hard, a.connections + 1000), hard)))
        try:
            for _ in range(300):
                try:
                    import urllib.request
                    urllib.request.urlopen(f"http://{HOST}:{port + 1}/health/ready", timeout=1)
                    break
                except Exception:
                    time.sleep(0.2)
            else:
                print("gateway did not become ready", file=sys.stderr)
                return 1
            # one request per plugin route, so every plugin has run once
            import urllib.error
            import urllib.request
            for i in range(10):
                try:
                    urllib.request.urlopen(f"http://{HOST}:{port}/r{i}", timeout=5).read()
                except urllib.error.HTTPError as e:
                    print(f"route r{i} ({PLUGINS[i % 5][0]}): HTTP {e.code} {e.read()[:200]!r}", file=sys.stderr)
                    return 1
            time.sleep(1)
            idle = settled_rss_kib(proc.pid)
            loop = asyncio.new_event_loop()
            conns = loop.run_until_complete(asyncio.wait_for(hold(a.connections, port), 120))
            time.sleep(1)
            held = settled_rss_kib(proc.pid)
            for _, w in conns:
                w.close()
            loop.close()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    table = (
        "\n## Memory (`python3 infra/bench/memory.py`)\n\n"
        "| measure | RSS | target |\n|---|---:|---:|\n"
        f"| idle, 10 plugins loaded (5 components × pooled/per_request, each run once) | {idle / 1024:.1f} MiB | ≤ 40 MiB |\n"
        f"| {a.connections:,} idle keep-alive client connections (same process) | {held / 1024:.1f} MiB | ≤ 200 MiB |\n"
    )
    print(table)
    if a.append:
        results = sorted((ROOT / "infra/bench/results").glob("*.md"))
        if results:
            with results[-1].open("a") as f:
                f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
