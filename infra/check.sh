#!/usr/bin/env bash
# Offline checks of everything under infra/ (and the Dockerfile). No cluster, no Docker daemon, no network.
#
#   bash infra/check.sh            # FLEXGATE=path/to/flexgate to pick the binary for `flexgate validate`
#
# Each check passes, fails, or is skipped (with the reason) when its tool is absent:
#   promtool      alert rules syntax + unit tests, Prometheus config, dashboard PromQL   (apt: prometheus)
#   flexgate      `flexgate validate` on every FlexGate config we ship (example, container, compose,
#                 Kubernetes ConfigMap, Helm values)                                        (cargo build)
#   python3+yaml  every YAML/JSON file parses; the dashboard JSON matches its generator; the plain
#                 Kubernetes manifests name consistent labels, ports and probes
#   linters       shellcheck, hadolint and helm, when installed
# Ends with "N passed, N failed, N skipped"; exits 1 if anything failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed=0 failed=0 skipped=0
ok()   { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
bad()  {
  failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"
  if [ -n "${2:-}" ]; then while IFS= read -r line; do printf '      %s\n' "$line"; done <<<"$2"; fi
}
skip() { skipped=$((skipped + 1)); printf 'skip  %s (%s)\n' "$1" "$2"; }
check() { # check NAME CMD...: run CMD, pass on exit 0
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$out"; fi
}
have() { command -v "$1" >/dev/null 2>&1; }
pyyaml() { python3 -c 'import yaml' 2>/dev/null; }

# --- Prometheus --------------------------------------------------------------------------------------
if have promtool; then
  check "promtool check rules alerts.yml" promtool check rules infra/prometheus/alerts.yml
  check "promtool test rules alerts.test.yml" promtool test rules infra/prometheus/alerts.test.yml
  # The config names the rules file by its in-container path; check a copy that points at ours.
  sed "s#/etc/prometheus/alerts.yml#$root/infra/prometheus/alerts.yml#" infra/prometheus/prometheus.yml > "$tmp/prometheus.yml"
  check "promtool check config prometheus.yml" promtool check config "$tmp/prometheus.yml"
  if pyyaml; then
    # Every dashboard query, as a recording rule, so promtool parses its PromQL.
    python3 - "$tmp/dash-rules.yml" <<'PY'
import json, sys, yaml
d = json.load(open("infra/grafana/dashboards/flexgate.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
subst = {"$__rate_interval": "5m", "$instance": ".*", "$route": ".*"}
rules = []
for i, e in enumerate(exprs):
    for k, v in subst.items():
        e = e.replace(k, v)
    rules.append({"record": f"dashboard:query:{i}", "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
PY
    check "dashboard PromQL parses (promtool)" promtool check rules "$tmp/dash-rules.yml"
  else
    skip "dashboard PromQL parses" "python3 yaml module missing"
  fi
else
  skip "promtool checks" "promtool not installed: apt-get install prometheus"
fi

# --- YAML / JSON well-formedness and consistency -----------------------------------------------------
if pyyaml; then
  check "every YAML file under infra/ and .github/ parses" python3 - <<'PY'
import pathlib, sys, yaml
bad = []
files = [p for p in pathlib.Path("infra").rglob("*.y*ml") if "templates" not in p.parts] + \
        list(pathlib.Path(".github").rglob("*.y*ml"))
for p in files:
    try:
        list(yaml.safe_load_all(p.read_text()))
    except yaml.YAMLError as e:
        bad.append(f"{p}: {e}")
print("\n".join(bad) or f"{len(files)} files")
sys.exit(1 if bad else 0)
PY
  dashboard_fresh() { # regenerate, compare, put the committed file back
    cp infra/grafana/dashboards/flexgate.json "$tmp/committed.json" || return 1
    python3 infra/grafana/gen_dashboard.py >/dev/null || return 1
    if ! cmp -s infra/grafana/dashboards/flexgate.json "$tmp/committed.json"; then
      cp "$tmp/committed.json" infra/grafana/dashboards/flexgate.json
      echo "dashboards/flexgate.json differs from the generator: run python3 infra/grafana/gen_dashboard.py"
      return 1
    fi
  }
  check "grafana dashboard matches gen_dashboard.py" dashboard_fresh
  check "kubernetes manifests: selectors, ports, probes, config" python3 - <<'PY'
import pathlib, sys, yaml
docs = {}
for p in sorted(pathlib.Path("infra/kubernetes").glob("*.yaml")):
    for d in yaml.safe_load_all(p.read_text()):
        if d:
            docs.setdefault(d["kind"], []).append((p.name, d))
errs = []
kust = docs["Kustomization"][0][1]
for r in kust["resources"]:
    if not (pathlib.Path("infra/kubernetes") / r).exists():
        errs.append(f"kustomization lists missing {r}")
svc = docs["Service"][0][1]
for name, dep in docs["Deployment"]:
    tpl = dep["spec"]["template"]
    labels = tpl["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in dep["spec"]["selector"]["matchLabels"].items()):
        errs.append(f"{name}: selector does not match the pod labels")
    c = tpl["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports != {"http": 8080, "admin": 8081, "metrics": 9090}:
        errs.append(f"{name}: ports {ports}")
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        g = c[probe]["httpGet"]
        if g["path"] != path or g["port"] != "admin":
            errs.append(f"{name}: {probe} is {g}")
    if not c["securityContext"].get("readOnlyRootFilesystem"):
        errs.append(f"{name}: root filesystem is writable")
    if dep["spec"]["replicas"] != 3:
        errs.append(f"{name}: replicas {dep['spec']['replicas']}")
blue = [d for n, d in docs["Deployment"] if n == "deployment.yaml"][0]
bl = blue["spec"]["template"]["metadata"]["labels"]
if any(bl.get(k) != v for k, v in svc["spec"]["selector"].items()):
    errs.append("service.yaml does not select the blue deployment")
cfg = yaml.safe_load(docs["ConfigMap"][0][1]["data"]["flexgate.yaml"])
for key, want in (("listen", "0.0.0.0:8080"), ("admin", {"listen": "0.0.0.0:8081"}), ("metrics", {"listen": "0.0.0.0:9090"})):
    if cfg.get(key) != want:
        errs.append(f"configmap: {key} is {cfg.get(key)!r}, want {want!r}")
container = pathlib.Path("infra/config/flexgate.container.yaml").read_text()
if docs["ConfigMap"][0][1]["data"]["flexgate.yaml"] != container:
    errs.append("configmap.yaml's flexgate.yaml differs from infra/config/flexgate.container.yaml")
print("\n".join(errs) or "consistent")
sys.exit(1 if errs else 0)
PY
else
  skip "YAML checks" "python3 yaml module missing: apt-get install python3-yaml"
fi

# --- FlexGate configs, checked by FlexGate itself ------------------------------------------------------
fg=${FLEXGATE:-}
if [ -z "$fg" ]; then
  for c in target/release/flexgate target/debug/flexgate; do [ -x "$c" ] && fg=$c && break; done
fi
if [ -n "$fg" ] && "$fg" --version >/dev/null 2>&1; then
  for f in infra/config/flexgate.example.yaml infra/config/flexgate.container.yaml infra/compose/flexgate/flexgate.yaml; do
    check "flexgate validate $f" "$fg" validate --config "$f"
  done
  if pyyaml; then
    python3 - "$tmp" <<'PY'
import sys, yaml
out = sys.argv[1]
cm = [d for d in yaml.safe_load_all(open("infra/kubernetes/configmap.yaml")) if d][0]
open(f"{out}/k8s.yaml", "w").write(cm["data"]["flexgate.yaml"])
yaml.safe_dump(yaml.safe_load(open("infra/helm/flexgate/values.yaml"))["config"], open(f"{out}/helm.yaml", "w"))
PY
    check "flexgate validate (kubernetes ConfigMap)" "$fg" validate --config "$tmp/k8s.yaml"
    check "flexgate validate (helm values .config)" "$fg" validate --config "$tmp/helm.yaml"
  fi
else
  skip "flexgate validate" "no flexgate binary (cargo build -p flexgate, or FLEXGATE=path)"
fi

# --- Linters when present --------------------------------------------------------------------------------
if have shellcheck; then
  check "shellcheck" shellcheck infra/bench/run.sh infra/check.sh
else
  skip "shellcheck" "not installed"
fi
if have hadolint; then
  check "hadolint Dockerfile" hadolint Dockerfile
else
  skip "hadolint" "not installed"
fi
if have helm; then
  check "helm lint --strict" helm lint --strict infra/helm/flexgate
  check "helm template (all options on)" helm template t infra/helm/flexgate --set track=green \
    --set liveService.enabled=true --set serviceMonitor.enabled=true --set autoscaling.enabled=true
elif python3 -c 'import helm_python' 2>/dev/null; then
  # Helm's Go library through the helm-python-sdk wheel (pip install helm-python-sdk), when there is no helm.
  check "helm lint --strict + render (helm-python-sdk)" python3 - <<'PY'
import sys, yaml, helm_python as helm
chart = "infra/helm/flexgate"
variants = {
    "defaults": {},
    "all options": {"track": "green", "liveService": {"enabled": True, "track": "green"},
                    "serviceMonitor": {"enabled": True}, "autoscaling": {"enabled": True},
                    "service": {"admin": {"enabled": True}}, "extraArgs": ["--log-format", "json"],
                    "networkPolicy": {"adminFrom": [{"podSelector": {"matchLabels": {"role": "ops"}}}],
                                      "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}},
    "existingConfigMap": {"existingConfigMap": "mine"},
    "existingSecret": {"existingSecret": "mine", "networkPolicy": {"enabled": False}},
}
bad = []
for name, values in variants.items():
    report = helm.lint(chart, values, strict=True, kube_version="v1.30.0")
    bad += [f"{name}: {e}" for e in report.get("errors", [])]
    bad += [f"{name}: {m}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for path, text in helm.Chart.load(chart).render(values, name="flexgate", namespace="ns").items():
        if not path.endswith("NOTES.txt"):
            list(yaml.safe_load_all(text))
print("\n".join(bad) or f"{len(variants)} value sets lint and render")
sys.exit(1 if bad else 0)
PY
else
  skip "helm lint" "neither helm nor helm-python-sdk installed"
fi
check "bench.py compiles and lists its cases" python3 infra/bench/bench.py --list

echo
echo "infra: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
