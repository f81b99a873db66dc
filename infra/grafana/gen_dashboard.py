#!/usr/bin/env python3
"""Generates dashboards/flexgate.json (the provisioned FlexGate dashboard).

Edit the panels here and run `python3 infra/grafana/gen_dashboard.py`; the JSON is committed so that
Grafana (compose, or a ConfigMap in Kubernetes) needs nothing but the file. Python 3 standard library only.
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
RSEL = SEL + ', route=~"$route"'

panels = []
_next_id = [1]
_y = [0]


def _id():
    i = _next_id[0]
    _next_id[0] += 1
    return i


def row(title):
    panels.append({"type": "row", "title": title, "id": _id(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": _y[0]}, "panels": []})
    _y[0] += 1


def layout(specs, h=8):
    """specs: list of (width, panel) placed left to right on one grid row."""
    x = 0
    for w, p in specs:
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": _y[0]}
        p["id"] = _id()
        panels.append(p)
        x += w
    _y[0] += h


def ts(title, targets, unit="short", desc="", stack=False, legend_calcs=("mean", "max")):
    return {
        "type": "timeseries", "title": title, "description": desc, "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {
            "lineWidth": 1, "fillOpacity": 10 if not stack else 40, "showPoints": "never",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": list(legend_calcs)},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": e, "legendFormat": l}
                    for i, (e, l) in enumerate(targets)],
    }


def stat(title, expr, unit="short", desc="", thresholds=None, legend=""):
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat", "title": title, "description": desc, "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        "targets": [{"datasource": DS, "refId": "A", "expr": expr, "legendFormat": legend}],
    }


def state_timeline(title, expr, legend, desc=""):
    return {
        "type": "state-timeline", "title": title, "description": desc, "datasource": DS,
        "fieldConfig": {"defaults": {
            "mappings": [{"type": "value", "options": {
                "0": {"text": "closed", "color": "green"},
                "1": {"text": "open", "color": "red"},
                "2": {"text": "half-open", "color": "orange"}}}],
            "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}},
            "overrides": []},
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.9,
                    "legend": {"showLegend": False}},
        "targets": [{"datasource": DS, "refId": "A", "expr": expr, "legendFormat": legend}],
    }


def quantile(q, metric, by, sel):
    return f'histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))'


# --- Overview -------------------------------------------------------------------------------------
row("Overview")
red = [{"color": "green", "value": None}, {"color": "orange", "value": 0.01}, {"color": "red", "value": 0.05}]
layout([
    (4, stat("Requests/s", f'sum(rate(flexgate_http_requests_total{{{RSEL}}}[$__rate_interval]))', "reqps")),
    (4, stat("5xx ratio", f'sum(rate(flexgate_http_requests_total{{{RSEL}, status=~"5.."}}[$__rate_interval])) '
             f'/ sum(rate(flexgate_http_requests_total{{{RSEL}}}[$__rate_interval]))', "percentunit",
             thresholds=red)),
    (4, stat("p99 latency", quantile(0.99, "flexgate_http_request_duration_seconds", "job", RSEL), "s")),
    (4, stat("In-flight requests", f'sum(flexgate_in_flight_requests{{{SEL}}})')),
    (4, stat("Open connections", f'sum(flexgate_open_connections{{{SEL}}})')),
    (4, stat("Config reload failures (1h)",
             f'sum(increase(flexgate_config_reloads_total{{{SEL}, result="failure"}}[1h]))',
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])),
], h=4)
layout([
    (12, ts("Instances and versions", [(f'flexgate_build_info{{{SEL}}}', "{{instance}} {{version}}")],
            desc="flexgate_build_info: one line per replica and version (1 while up).", legend_calcs=())),
    (12, ts("Config reloads", [(f'sum by (result) (increase(flexgate_config_reloads_total{{{SEL}}}[$__rate_interval]))',
                                "{{result}}")], desc="Reloads by result (SIGHUP or file change).")),
], h=6)

# --- Routes ---------------------------------------------------------------------------------------
row("Routes")
layout([
    (12, ts("Requests/s by route", [(f'sum by (route) (rate(flexgate_http_requests_total{{{RSEL}}}[$__rate_interval]))',
                                     "{{route}}")], "reqps")),
    (12, ts("Responses/s by status", [(f'sum by (status) (rate(flexgate_http_requests_total{{{RSEL}}}[$__rate_interval]))',
                                       "{{status}}")], "reqps", stack=True)),
])
layout([
    (12, ts("5xx ratio by route", [(
        f'sum by (route) (rate(flexgate_http_requests_total{{{RSEL}, status=~"5.."}}[$__rate_interval])) '
        f'/ sum by (route) (rate(flexgate_http_requests_total{{{RSEL}}}[$__rate_interval]))', "{{route}}")],
        "percentunit")),
    (12, ts("Latency by route (p50 / p99)", [
        (quantile(0.5, "flexgate_http_request_duration_seconds", "route", RSEL), "p50 {{route}}"),
        (quantile(0.99, "flexgate_http_request_duration_seconds", "route", RSEL), "p99 {{route}}")], "s",
        desc="Request received to response fully sent.")),
])

# --- Upstreams ------------------------------------------------------------------------------------
row("Upstreams")
layout([
    (8, ts("Upstream attempts/s by outcome", [(
        f'sum by (upstream, outcome) (rate(flexgate_upstream_requests_total{{{SEL}}}[$__rate_interval]))',
        "{{upstream}} {{outcome}}")], "reqps", desc="Outcomes: ok, 5xx, connect_failure, timeout, error.")),
    (8, ts("Upstream latency p99", [
        (quantile(0.99, "flexgate_upstream_request_duration_seconds", "upstream", SEL), "{{upstream}}")], "s",
        desc="Attempt sent until response headers received.")),
    (8, ts("Rejected before forwarding", [(
        f'sum by (upstream, reason) (rate(flexgate_upstream_rejected_total{{{SEL}}}[$__rate_interval]))',
        "{{upstream}} {{reason}}")], "reqps", desc="circuit_open or max_in_flight.")),
])
layout([
    (24, ts("Attempts/s by target", [(
        f'sum by (upstream, target) (rate(flexgate_upstream_requests_total{{{SEL}}}[$__rate_interval]))',
        "{{upstream}} {{target}}")], "reqps")),
], h=7)

# --- Circuit breakers -----------------------------------------------------------------------------
row("Circuit breakers")
layout([
    (12, state_timeline("Breaker state by target (worst replica)",
                        f'max by (upstream, target) (flexgate_circuit_state{{{SEL}}})', "{{upstream}} {{target}}",
                        desc="0 closed, 1 open, 2 half-open; max over replicas.")),
    (12, ts("Breaker transitions", [(
        f'sum by (upstream, target, from, to) (increase(flexgate_circuit_transitions_total{{{SEL}}}[$__rate_interval]))',
        "{{upstream}} {{target}} {{from}}→{{to}}")])),
])

# --- Rate limiting --------------------------------------------------------------------------------
row("Rate limiting")
layout([
    (8, ts("Decisions/s by route", [(
        f'sum by (route, decision) (rate(flexgate_ratelimit_decisions_total{{{RSEL}}}[$__rate_interval]))',
        "{{route}} {{decision}}")], "reqps", desc="allowed or limited (429).")),
    (8, ts("Store errors/s", [(
        f'sum by (store) (rate(flexgate_ratelimit_store_errors_total{{{SEL}}}[$__rate_interval]))', "{{store}}")],
        "reqps", desc="Errors and timeouts (redis.timeout) talking to the shared store.")),
    (8, ts("Degraded routes (replicas bypassing the store)", [(
        f'sum by (route) (flexgate_ratelimit_degraded{{{RSEL}}})', "{{route}}")],
        desc="Replicas that apply on_store_error instead of the shared limit.")),
])

# --- Plugins --------------------------------------------------------------------------------------
row("Plugins")
layout([
    (12, ts("Invocations/s by plugin@version and outcome", [(
        f'sum by (plugin, version, outcome) (rate(flexgate_plugin_invocations_total{{{RSEL}}}[$__rate_interval]))',
        "{{plugin}}@{{version}} {{outcome}}")], "reqps")),
    (12, ts("Plugin duration p99 by version and hook", [
        (quantile(0.99, "flexgate_plugin_duration_seconds", "plugin, version, hook", SEL),
         "{{plugin}}@{{version}} {{hook}}")], "s", desc="Host-measured time inside the plugin.")),
])
layout([
    (8, ts("Traps/s by plugin@version and reason", [(
        f'sum by (plugin, version, reason) (rate(flexgate_plugin_traps_total{{{SEL}}}[$__rate_interval]))',
        "{{plugin}}@{{version}} {{reason}}")], "reqps")),
    (8, ts("Plugin memory by version (max over instances)", [(
        f'max by (plugin, version) (flexgate_plugin_memory_bytes{{{SEL}}})', "{{plugin}}@{{version}}")], "bytes")),
    (8, ts("Rollbacks", [(
        f'sum by (plugin, route, reason) (increase(flexgate_plugin_rollbacks_total{{{RSEL}}}[$__rate_interval]))',
        "{{plugin}} {{route}} {{reason}}")])),
])

dashboard = {
    "uid": "flexgate-overview",
    "title": "FlexGate",
    "description": "FlexGate gateway: routes, upstreams, circuit breakers, rate limiters and Wasm plugins.",
    "tags": ["flexgate"],
    "editable": True,
    "graphTooltip": 1,
    "refresh": "30s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "annotations": {"list": []},
    "links": [],
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
         "query": {"query": "label_values(flexgate_build_info, instance)", "refId": "instance"},
         "definition": "label_values(flexgate_build_info, instance)",
         "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1,
         "hide": 0, "options": []},
        {"name": "route", "label": "Route", "type": "query", "datasource": DS,
         "query": {"query": "label_values(flexgate_http_requests_total, route)", "refId": "route"},
         "definition": "label_values(flexgate_http_requests_total, route)",
         "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1,
         "hide": 0, "options": []},
    ]},
    "panels": panels,
}

out = pathlib.Path(__file__).resolve().parent / "dashboards" / "flexgate.json"
out.write_text(json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n")
print(f"wrote {out} ({len(panels)} panels)")
