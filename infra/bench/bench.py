#!/usr/bin/env python3
"""FlexGate benchmark driver (called by infra/bench/run.sh, which installs and builds first).

Starts an nginx upstream and every proxy under test on 127.0.0.1, pins the proxy alone on core 1 and the
load generator + upstream on core 0, and runs `wrk -t1 -c32 --latency` against each case round-robin
(RUNS rounds), so slow drifts of the machine hit every case alike. Per run it records requests/s, the
proxy's CPU time per request (utime+stime of all its processes, from /proc/PID/stat, delta over the run,
divided by requests served), latency percentiles, and at the end the proxy's RSS. An optional second
pass measures latency at a fixed rate (50% of nginx's max) with oha. Medians go to a Markdown table,
printed and written to infra/bench/results/YYYY-MM-DD-HHMM.md (raw JSON under results/raw/).

Python 3 standard library only.
"""
from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PORT_UPSTREAM = 18000
PORT_NGINX = 18001
PORT_HAPROXY = 18002
PORT_REDIS = 18003
PORT_FLEXGATE_BASE = 18100  # case N uses 18100+10*N (proxy), +1 (admin), +2 (metrics)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Core for wrk/oha, the upstream and Redis, and core for the proxy under test: the first two CPUs this
# process may use (normally 0 and 1). None = no pinning (fewer than 2 CPUs).
_cpus = sorted(os.sched_getaffinity(0))
CORE_LOAD, CORE_PROXY = (_cpus[0], _cpus[1]) if len(_cpus) >= 2 else (None, None)
PAGE = os.sysconf("SC_PAGE_SIZE")
BODY = "hello from the bench upstream\n"

# Plugin configs used by the plugin cases (each plugin's `Config` is in plugins/<name>/src/lib.rs).
# Plugin configs per the plugins' READMEs: headers sets one request header; rewrite runs one regex
# rule that keeps the path (so the upstream answers as without it) and adds a query parameter; cors
# answers nothing for the bench's origin-less requests but still runs both hooks.
HEADERS_CFG = {"request": {"set": {"x-bench": "1"}}}
REWRITE_CFG = {"rules": [{"match": "^/(.*)$", "replace": "/$1"}]}
CORS_CFG = {"allowed_origins": ["*"]}


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------
@dataclass
class Case:
    num: int
    key: str
    title: str
    kind: str  # upstream | nginx | haproxy | flexgate
    plugins: list = field(default_factory=list)  # [(name, isolation, config)]
    rate_limit: str | None = None  # None | local | redis

    @property
    def port(self) -> int:
        return {
            "upstream": PORT_UPSTREAM,
            "nginx": PORT_NGINX,
            "haproxy": PORT_HAPROXY,
        }.get(self.kind, PORT_FLEXGATE_BASE + 10 * self.num)


CASES = [
    Case(1, "upstream", "upstream direct (nginx, return 200)", "upstream"),
    Case(2, "nginx", "nginx reverse proxy", "nginx"),
    Case(3, "haproxy", "HAProxy", "haproxy"),
    Case(4, "fg", "FlexGate, no plugin", "flexgate"),
    Case(5, "fg-headers-pooled", "FlexGate + headers (pooled)", "flexgate",
         plugins=[("headers", "pooled", HEADERS_CFG)]),
    Case(6, "fg-headers-per-request", "FlexGate + headers (per_request)", "flexgate",
         plugins=[("headers", "per_request", HEADERS_CFG)]),
    Case(7, "fg-chain3", "FlexGate + headers+rewrite+cors", "flexgate",
         plugins=[("headers", "pooled", HEADERS_CFG), ("rewrite", "pooled", REWRITE_CFG),
                  ("cors", "pooled", CORS_CFG)]),
    Case(8, "fg-ratelimit-local", "FlexGate + rate limit (local)", "flexgate", rate_limit="local"),
    Case(9, "fg-ratelimit-redis", "FlexGate + rate limit (redis)", "flexgate", rate_limit="redis"),
]
REF_NGINX, REF_HAPROXY, REF_FG = 2, 3, 4
LOADAVG_AT_START = 0.0


# --------------------------------------------------------------------------------------------------
# Process bookkeeping: everything we start is recorded and stopped by PID on exit.
# --------------------------------------------------------------------------------------------------
STARTED: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def spawn(cmd: list[str], core: int | None, logfile: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a server in its own session. taskset execs the command, so the PID is the server's own."""
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core)] + cmd
    out = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    STARTED.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process (its own session: nginx master takes its workers down), then SIGKILL."""
    if p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the group we created for it (start_new_session)
        except ProcessLookupError:
            pass
        p.wait(timeout=grace)
    except ProcessLookupError:
        pass


def cleanup() -> None:
    for p in reversed(STARTED):
        stop(p)
    STARTED.clear()


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping everything we started")
    cleanup()
    sys.exit(128 + signum)


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://{HOST}:{port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --------------------------------------------------------------------------------------------------
# /proc accounting: CPU (utime+stime) and RSS summed over a process and all its descendants.
# --------------------------------------------------------------------------------------------------
def _stat(pid: int, user_only: bool = False) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of one process (all its threads, incl. exited ones); with
    `user_only`, utime alone (the proxy's own code, without the kernel's TCP work)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()  # fields after "pid (comm) "
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    return ppid, utime if user_only else utime + stime


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = _stat(int(d))
            if s:
                children.setdefault(s[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(root: int, user_only: bool = False) -> int:
    return sum((_stat(p, user_only) or (0, 0))[1] for p in tree(root))


def with_cpu(pid: int, run, served) -> dict:
    """Runs a load pass and adds the proxy's CPU over it to the result: `cpu_s`, and µs per request
    in total and in user space, with `served(result)` the requests it served."""
    t0, u0 = cpu_ticks(pid), cpu_ticks(pid, True)
    res = run()
    t1, u1 = cpu_ticks(pid), cpu_ticks(pid, True)
    n = served(res)
    res["cpu_s"] = (t1 - t0) / CLK_TCK
    res["cpu_us_per_req"] = (t1 - t0) * 1e6 / CLK_TCK / n if n else None
    res["user_us_per_req"] = (u1 - u0) * 1e6 / CLK_TCK / n if n else None
    return res


def rss_bytes(root: int) -> int:
    total = 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------------------------------
# Server configs
# --------------------------------------------------------------------------------------------------
def nginx_conf(work: Path, name: str, port: int, server_block: str, extra_http: str = "") -> Path:
    d = work / name
    (d / "logs").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server_tokens off;
  {extra_http}
  server {{
    listen {HOST}:{port} backlog=4096;
    {server_block}
  }}
}}
""")
    return conf


def start_upstream(work: Path) -> subprocess.Popen:
    conf = nginx_conf(work, "upstream", PORT_UPSTREAM,
                      f'location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}')
    return spawn(["nginx", "-c", str(conf), "-p", str(conf.parent)], core=CORE_LOAD, logfile=conf.parent / "stdout.log")


def start_nginx_proxy(work: Path) -> subprocess.Popen:
    upstream = f"upstream origin {{ server {HOST}:{PORT_UPSTREAM}; keepalive 64; keepalive_requests 1000000; }}"
    server = """location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering on;
    }"""
    conf = nginx_conf(work, "nginx-proxy", PORT_NGINX, server, upstream)
    return spawn(["nginx", "-c", str(conf), "-p", str(conf.parent)], core=CORE_PROXY, logfile=conf.parent / "stdout.log")


def start_haproxy(work: Path) -> subprocess.Popen:
    d = work / "haproxy"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 1
  maxconn 4096
  tune.bufsize 16384

defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
  http-reuse always

frontend fe
  bind {HOST}:{PORT_HAPROXY}
  default_backend origin

backend origin
  http-reuse always
  server s1 {HOST}:{PORT_UPSTREAM} maxconn 1000
""")
    # -db: stay in the foreground, no master process; no `log` lines = no logging at all.
    return spawn(["haproxy", "-db", "-f", str(conf)], core=CORE_PROXY, logfile=d / "stdout.log")


def yaml_dump(obj, indent: int = 0) -> str:
    """Minimal YAML emitter for the generated configs (dicts, lists, scalars); JSON-style flow for leaves."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(yaml_dump(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                body = yaml_dump(v, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
    return "\n".join(lines)


def flexgate_config(case: Case, root: Path, dist: Path) -> dict:
    port = case.port
    route: dict = {"name": "bench", "match": {"path_prefix": "/"}, "upstream": "origin"}
    cfg: dict = {
        "version": 1,
        "listen": f"{HOST}:{port}",
        "admin": {"listen": f"{HOST}:{port + 1}"},
        "metrics": {"listen": f"{HOST}:{port + 2}"},
        "log": {"level": "warn", "access_log": False},
        "server": {"workers": 1},
    }
    if case.rate_limit == "redis":
        cfg["redis"] = {"url": f"redis://{HOST}:{PORT_REDIS}", "timeout": "5ms"}
    if case.plugins:
        cfg["plugins"] = [
            {"name": name, "source": str(dist / f"{name}.wasm"), "isolation": iso}
            for name, iso, _ in case.plugins
        ]
        route["plugins"] = [{"use": name, "config": conf} for name, _, conf in case.plugins]
    if case.rate_limit:
        route["rate_limit"] = {"key": "client_ip", "rate": "100000000/s", "burst": 1000000,
                               "store": case.rate_limit}
    cfg["upstreams"] = [{"name": "origin", "targets": [{"addr": f"{HOST}:{PORT_UPSTREAM}"}]}]
    cfg["routes"] = [route]
    return cfg


# --------------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------------
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d,\\"p999_us\\":%d,"
    .. "\\"errors\\":%d,\\"non2xx\\":%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def run_wrk(port: int, duration: str, conns: int, lua: Path, logdir: Path, tag: str) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency", "-s", str(lua), f"http://{HOST}:{port}/"]
    if CORE_LOAD is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(CORE_LOAD)] + cmd
    secs = parse_seconds(duration)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    (logdir / f"wrk-{tag}.log").write_text(out.stdout + out.stderr)
    m = re.search(r"^BENCHJSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc {out.returncode}): {out.stderr.strip()[:300]}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    return r


def oha_cmd() -> str | None:
    return shutil.which("oha") or (str(Path.home() / ".cargo/bin/oha") if (Path.home() / ".cargo/bin/oha").exists() else None)


def run_oha(oha: str, port: int, duration: str, conns: int, rate: float, logdir: Path, tag: str) -> dict:
    """Fixed-rate pass: `oha -q RATE --latency-correction` (latency measured from each request's scheduled
    start, so a stalled proxy cannot hide its queueing: no coordinated omission)."""
    cmd = [oha, "--no-tui", "--output-format", "json", "-z", duration, "-c", str(conns), "-q", f"{rate:.0f}",
           "--latency-correction", f"http://{HOST}:{port}/"]
    if CORE_LOAD is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(CORE_LOAD)] + cmd
    secs = parse_seconds(duration)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    (logdir / f"oha-{tag}.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed (rc {out.returncode}): {out.stderr.strip()[:300]}")
    j = json.loads(out.stdout)
    pct = j.get("latencyPercentiles", {})  # seconds, keys p50, p99, p99.9
    status = j.get("statusCodeDistribution", {})
    non2xx = sum(v for k, v in status.items() if not str(k).startswith("2"))
    # Requests still in flight when -z ends are counted as "aborted due to deadline": not an error.
    errs = sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
    return {
        "rps": j.get("summary", {}).get("requestsPerSec", 0.0),
        "p50_us": pct.get("p50", 0) * 1e6, "p99_us": pct.get("p99", 0) * 1e6,
        "p999_us": pct.get("p99.9", 0) * 1e6, "errors": errs + non2xx,
    }


def parse_seconds(d: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", d.strip())
    if not m:
        raise SystemExit(f"bad duration {d!r}: use e.g. 10s, 2s, 1m")
    n, unit = float(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------
def select_cases(spec: str | None) -> list[Case]:
    if not spec:
        return list(CASES)
    out = []
    for token in spec.split(","):
        token = token.strip()
        hit = [c for c in CASES if str(c.num) == token or c.key == token]
        if not hit:
            raise SystemExit(f"unknown case {token!r}; see --list")
        out.extend(h for h in hit if h not in out)
    return sorted(out, key=lambda c: c.num)


def machine_info(root: Path, flexgate: Path | None, oha: str | None) -> dict:
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "n/a"
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "cpu": cpu,
        "governor": gov.read_text().strip() if gov.exists() else "n/a",
        "loadavg_at_start": LOADAVG_AT_START,
        "git": first(["git", "-C", str(root), "describe", "--always", "--dirty"]),
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "wrk": first(["wrk", "-v"]),
        "oha": first([oha, "--version"]) if oha else "oha not installed",
        "flexgate": first([str(flexgate), "--version"]) if flexgate else "not built",
    }


def fmt_us(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    ap.add_argument("--cases", help="comma-separated case numbers or names (default: all)")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "3")))
    ap.add_argument("--duration", default=os.environ.get("DURATION", "10s"))
    ap.add_argument("--connections", type=int, default=int(os.environ.get("CONNECTIONS", "32")))
    ap.add_argument("--rate-fraction", type=float, default=0.5,
                    help="fixed-rate pass at this fraction of nginx's (case 2) median max req/s")
    ap.add_argument("--rate-runs", type=int, default=int(os.environ.get("RATE_RUNS", "3")),
                    help="interleaved runs of the fixed-rate pass (medians)")
    ap.add_argument("--rate-duration", default=os.environ.get("RATE_DURATION", "5s"),
                    help="length of each fixed-rate run")
    ap.add_argument("--no-rate-pass", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="case 4 once for 2 s; exit 1 unless it served")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--flexgate", type=Path, default=None,
                    help="the binary to test (default: target/release/flexgate; env FLEXGATE)")
    a = ap.parse_args()

    if a.list:
        for c in CASES:
            print(f"{c.num}  {c.key:<24} {c.title}")
        return 0
    if a.smoke:
        a.cases, a.runs, a.duration, a.no_rate_pass = "4", 1, "2s", True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(cleanup)

    root = a.root.resolve()
    cases = select_cases(a.cases)
    global LOADAVG_AT_START
    LOADAVG_AT_START = os.getloadavg()[0]
    if LOADAVG_AT_START > 0.5:
        log(f"load average {LOADAVG_AT_START:.1f} before starting: other work on this machine will add noise")
    work = Path(tempfile.mkdtemp(prefix="flexgate-bench-"))
    logdir = work / "logs"
    logdir.mkdir()
    if len(os.sched_getaffinity(0)) < 2:
        log("fewer than 2 cores: no pinning, results are indicative only")
    flexgate = a.flexgate or Path(os.environ.get("FLEXGATE") or root / "target/release/flexgate")
    flexgate = flexgate.resolve() if flexgate.exists() else None
    dist = root / "plugins/dist"
    oha = None if a.no_rate_pass else oha_cmd()
    notes: list[str] = []

    # ---- prerequisites per case -------------------------------------------------------------------
    runnable: list[Case] = []
    for c in cases:
        why = None
        if not shutil.which("wrk"):
            why = "wrk not installed"
        elif not shutil.which("nginx"):
            why = "nginx (the upstream) not installed"
        elif c.kind == "haproxy" and not shutil.which("haproxy"):
            why = "haproxy not installed"
        elif c.kind == "flexgate" and not flexgate:
            why = "no flexgate binary (target/release/flexgate not built)"
        elif c.plugins and not dist.is_dir():
            why = "plugins/dist missing (plugins/build.sh not run or not there yet)"
        elif c.plugins and any(not (dist / f"{n}.wasm").exists() for n, _, _ in c.plugins):
            missing = [n for n, _, _ in c.plugins if not (dist / f"{n}.wasm").exists()]
            why = f"plugins/dist lacks {', '.join(m + '.wasm' for m in missing)}"
        elif c.rate_limit == "redis" and not shutil.which("redis-server"):
            why = "redis-server not installed"
        if why:
            notes.append(f"case {c.num} ({c.title}) skipped: {why}")
            log(notes[-1])
        else:
            runnable.append(c)
    if not runnable:
        log("nothing to run")
        return 1

    # ---- start servers ---------------------------------------------------------------------------
    procs: dict[int, subprocess.Popen] = {}
    upstream = start_upstream(work)
    if not wait_port(PORT_UPSTREAM, upstream):
        log(f"the nginx upstream did not start; see {work}/upstream/logs")
        return 1
    assert http_get(PORT_UPSTREAM)[0] == 200
    if any(c.rate_limit == "redis" for c in runnable):
        redis = spawn(["redis-server", "--bind", HOST, "--port", str(PORT_REDIS), "--save", "",
                       "--appendonly", "no", "--protected-mode", "yes"], core=CORE_LOAD, logfile=logdir / "redis.log")
        if not wait_port(PORT_REDIS, redis):
            notes.append("redis-server did not start: case 9 skipped")
            runnable = [c for c in runnable if c.rate_limit != "redis"]
    for c in list(runnable):
        if c.kind == "upstream":
            procs[c.num] = upstream
            continue
        d = work / f"flexgate-{c.num}"
        if c.kind == "nginx":
            p = start_nginx_proxy(work)
        elif c.kind == "haproxy":
            p = start_haproxy(work)
        else:
            d.mkdir()
            cfg = d / "flexgate.yaml"
            cfg.write_text(f"# case {c.num}: {c.title}\n" + yaml_dump(flexgate_config(c, root, dist)) + "\n")
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
            p = spawn([str(flexgate), "serve", "--config", str(cfg)], core=CORE_PROXY, logfile=d / "flexgate.log", env=env)
        ok = wait_port(c.port, p)
        status = http_get(c.port)[0] if ok else None
        if status != 200:
            logf = {"nginx": work / "nginx-proxy/logs/error.log", "haproxy": work / "haproxy/stdout.log"}.get(
                c.kind, d / "flexgate.log")
            tail = logf.read_text(errors="replace")[-600:] if logf.exists() else ""
            notes.append(f"case {c.num} ({c.title}) skipped: it did not serve "
                         f"({'exited' if p.poll() is not None else 'status ' + str(status)}). {tail.strip()}")
            log(notes[-1])
            stop(p)
            runnable.remove(c)
            continue
        procs[c.num] = p
    if not runnable:
        return 1

    # ---- warm-up, then RUNS interleaved rounds ---------------------------------------------------
    lua = work / "report.lua"
    lua.write_text(WRK_LUA)
    for c in runnable:
        run_wrk(c.port, "1s", a.connections, lua, logdir, f"warmup-{c.num}")
    results: dict[int, list[dict]] = {c.num: [] for c in runnable}
    total = a.runs * len(runnable) * parse_seconds(a.duration)
    log(f"{len(runnable)} cases × {a.runs} runs × {a.duration} (~{total / 60:.1f} min of load) in {work}")
    for r in range(a.runs):
        for c in runnable:
            pid = procs[c.num].pid
            try:
                res = with_cpu(pid, lambda: run_wrk(c.port, a.duration, a.connections, lua, logdir, f"{c.num}-{r}"),
                               lambda res: res["requests"])
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                notes.append(f"case {c.num} run {r + 1}: {e}")
                log(notes[-1])
                continue
            res["cpu_util"] = res["cpu_s"] / (res["duration_us"] / 1e6)
            results[c.num].append(res)
            log(f"run {r + 1}/{a.runs} case {c.num} {c.key}: {res['rps']:.0f} req/s, "
                f"{res['cpu_us_per_req'] or 0:.1f} µs CPU/req, p99 {fmt_us(res['p99_us'])}, "
                f"errors {res['errors'] + res['non2xx']}")
    rss = {c.num: rss_bytes(procs[c.num].pid) for c in runnable}

    def med(num, key):
        vals = [x[key] for x in results.get(num, []) if x.get(key) is not None]
        return statistics.median(vals) if vals else None

    summary = {c.num: {k: med(c.num, k) for k in ("rps", "cpu_us_per_req", "user_us_per_req", "p50_us", "p99_us", "p999_us", "cpu_util")}
               for c in runnable}
    for c in runnable:
        summary[c.num]["errors"] = sum(x["errors"] + x["non2xx"] for x in results[c.num])
        summary[c.num]["rss"] = rss[c.num]
        summary[c.num]["runs"] = len(results[c.num])

    # ---- fixed-rate latency pass -----------------------------------------------------------------
    fixed: dict[int, dict] = {}
    rate = None
    if not a.no_rate_pass:
        ref = summary.get(REF_NGINX, {}).get("rps")
        if not oha:
            notes.append("fixed-rate pass skipped: oha not installed (run.sh installs it with cargo; "
                         "Debian has no wrk2 and its wrk has no fixed-rate mode)")
        elif not ref:
            notes.append("fixed-rate pass skipped: needs case 2 (nginx) for the reference rate")
        else:
            rate = ref * a.rate_fraction
            log(f"fixed-rate pass: {rate:.0f} req/s (= {a.rate_fraction:.0%} of nginx's median max) per case")
            runs: dict[int, list[dict]] = {c.num: [] for c in runnable}
            for r in range(a.rate_runs):
                for c in runnable:
                    pid = procs[c.num].pid
                    try:
                        res = with_cpu(pid, lambda: run_oha(oha, c.port, a.rate_duration, a.connections, rate,
                                                            logdir, f"fixed-{c.num}-{r}"),
                                       lambda res: res["rps"] * parse_seconds(a.rate_duration))
                    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                        notes.append(f"case {c.num} fixed-rate run {r + 1}: {e}")
                        log(notes[-1])
                        continue
                    runs[c.num].append(res)
            for num, rs in runs.items():
                if rs:
                    fixed[num] = {k: statistics.median(x[k] for x in rs if x.get(k) is not None)
                                  if any(x.get(k) is not None for x in rs) else None
                                  for k in ("rps", "p50_us", "p99_us", "p999_us", "cpu_us_per_req", "user_us_per_req")}
                    fixed[num]["errors"] = sum(x["errors"] for x in rs)

    # ---- metrics of interest from FlexGate (store errors, plugin traps) --------------------------
    for c in runnable:
        if c.kind == "flexgate":
            try:
                _, _, body = http_get(c.port + 2, "/metrics")
                text = body.decode(errors="replace")
                def total(name):
                    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                               if line.startswith(name + "{") or line.startswith(name + " "))
                for name in ("flexgate_ratelimit_store_errors_total", "flexgate_plugin_traps_total"):
                    if total(name):
                        notes.append(f"case {c.num}: {name} = {total(name):.0f}")
                # Proof that the feature under test ran at all.
                for cond, name in ((c.rate_limit, "flexgate_ratelimit_decisions_total"),
                                   (c.plugins, "flexgate_plugin_invocations_total")):
                    if cond and not total(name):
                        notes.append(f"case {c.num}: {name} is 0 - the feature under test did not run")
            except (OSError, ValueError, IndexError):
                pass

    info = machine_info(root, flexgate, oha)
    md = render(info, runnable, summary, fixed, rate, a, notes)
    print(md)
    if a.smoke:
        s = summary.get(REF_FG)
        ok = bool(s and s["runs"] == 1 and s["rps"] and s["errors"] == 0)
        log("smoke: " + ("OK" if ok else "FAILED"))
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        return 0 if ok else 1
    outdir = root / "infra/bench/results"
    (outdir / "raw").mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    (outdir / f"{stamp}.md").write_text(md)
    (outdir / "raw" / f"{stamp}.json").write_text(json.dumps(
        {"machine": info, "results": results, "summary": summary, "fixed_rate": fixed, "rate": rate,
         "notes": notes}, indent=1))
    log(f"wrote infra/bench/results/{stamp}.md (raw: results/raw/{stamp}.json); logs in {work}"
        if a.keep else f"wrote infra/bench/results/{stamp}.md (raw: results/raw/{stamp}.json)")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def render(info, cases, summary, fixed, rate, a, notes) -> str:
    ref = {k: summary.get(k, {}) for k in (REF_NGINX, REF_HAPROXY, REF_FG)}
    pin = (f"Proxy alone on CPU {CORE_PROXY}; wrk, the nginx upstream (and Redis) on CPU {CORE_LOAD}"
           if CORE_PROXY is not None else "No CPU pinning (fewer than 2 CPUs)")
    out = [f"# FlexGate benchmark {info['date']}", ""]
    out += [
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}, governor {info['governor']}, "
        f"1-min load average {info['loadavg_at_start']:.2f} before the run.  ",
        f"Commit {info['git']}; {info['nginx']}; {info['haproxy']}; {info['wrk']}; {info['oha']}; "
        f"{info['flexgate']}.  ",
        f"Load: `wrk -t1 -c{a.connections} -d{a.duration} --latency`, {a.runs} interleaved runs per case, "
        f"medians. {pin}; 127.0.0.1 only.  ",
        "CPU µs/req = utime+stime of all the proxy's processes and threads (/proc/PID/stat) over the run ÷ "
        "requests served; \"of which user\" is utime alone: the proxy's own code, while the rest is the kernel's "
        "TCP and loopback work, which is about the same for every proxy (4 segments per request each way). "
        "Ratios divide CPU µs/req by the reference's (lower is better). "
        "Case 1's CPU is the upstream's own, and it shares its CPU with wrk.",
        "",
        "## Throughput and CPU cost (closed loop, max rate)",
        "",
        "| # | case | req/s | CPU µs/req | of which user | CPU util | p50 | p99 | p99.9 | RSS | errors | CPU ×nginx | CPU ×HAProxy | CPU ×FG base | req/s ×nginx |",
        "|---|------|------:|-----------:|--------------:|---------:|----:|----:|------:|----:|-------:|-----------:|-------------:|-------------:|-------------:|",
    ]
    for c in cases:
        s = summary[c.num]
        cpu = s["cpu_us_per_req"]
        out.append(
            f"| {c.num} | {c.title} | {s['rps'] or 0:,.0f} | {cpu:.2f} | {s['user_us_per_req'] or 0:.2f} | {s['cpu_util'] or 0:.0%} | "
            f"{fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} | {fmt_us(s['p999_us'])} | "
            f"{s['rss'] / 2**20:.1f} MiB | {s['errors']} | "
            f"{ratio(cpu, ref[REF_NGINX].get('cpu_us_per_req'))} | {ratio(cpu, ref[REF_HAPROXY].get('cpu_us_per_req'))} | "
            f"{ratio(cpu, ref[REF_FG].get('cpu_us_per_req'))} | {ratio(s['rps'], ref[REF_NGINX].get('rps'))} |"
            if cpu is not None else f"| {c.num} | {c.title} | no successful run | | | | | | | | | | | | |")
    if fixed:
        out += ["", f"## Equal load: a fixed rate of {rate:,.0f} req/s ({a.rate_fraction:.0%} of nginx's max), "
                f"`oha -q {rate:.0f} -c{a.connections} -z {a.rate_duration} --latency-correction`, "
                f"{a.rate_runs} interleaved run(s), medians", "",
                "Every proxy serves the same requests here, so CPU µs/req compares the work each does for them, "
                "free of the closed loop's feedback (at saturation, a proxy that answers sooner finds its peers "
                "asleep more often and pays more kernel time waking them).", "",
                "| # | case | achieved req/s | CPU µs/req | of which user | p50 | p99 | p99.9 | errors | CPU ×nginx | CPU ×HAProxy | CPU ×FG base | p99 ×nginx | p99 ×HAProxy | p99 ×FG base |",
                "|---|------|---------------:|-----------:|--------------:|----:|----:|------:|-------:|-----------:|-------------:|-------------:|-----------:|-------------:|-------------:|"]
        fref = {k: fixed.get(k, {}) for k in (REF_NGINX, REF_HAPROXY, REF_FG)}
        for c in cases:
            f = fixed.get(c.num)
            if not f:
                continue
            cpu = f.get("cpu_us_per_req")
            out.append(
                f"| {c.num} | {c.title} | {f['rps']:,.0f} | {cpu or 0:.2f} | {f.get('user_us_per_req') or 0:.2f} | "
                f"{fmt_us(f['p50_us'])} | {fmt_us(f['p99_us'])} | {fmt_us(f['p999_us'])} | {f['errors']} | "
                + " | ".join(ratio(cpu, fref[k].get("cpu_us_per_req")) for k in (REF_NGINX, REF_HAPROXY, REF_FG)) + " | "
                + " | ".join(ratio(f["p99_us"], fref[k].get("p99_us")) for k in (REF_NGINX, REF_HAPROXY, REF_FG)) + " |")
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
