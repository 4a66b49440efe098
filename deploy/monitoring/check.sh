#!/usr/bin/env bash
# Checks the monitoring bundle (run by .ci/run and by the e2e test
# `monitoring::the_monitoring_bundle_passes_its_checks`):
#  1. alerts.yml loads (`promtool check rules`) and its unit tests pass
#     (`promtool test rules alerts_test.yml`);
#  2. grafana-dashboard.json has the shape Grafana imports and this bundle relies on:
#     uid/title/schemaVersion, a `datasource` variable of type datasource (prometheus),
#     panels with type/title/gridPos and targets with expr, every datasource the variable;
#  3. every panel query parses: each expr, with Grafana's variables substituted, becomes a
#     recording rule in a temporary file that `promtool check rules` must accept;
#  4. every metric the dashboard and the rules name is in the catalogue
#     (gateway/src/metrics/catalogue.rs).
# Needs promtool (Debian package `prometheus`) and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
command -v promtool >/dev/null || { echo "check.sh: promtool not found (apt-get install --no-install-recommends prometheus)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$here"
promtool check rules alerts.yml
promtool test rules alerts_test.yml

python3 - "$here/grafana-dashboard.json" "$here/alerts.yml" "$root/gateway/src/metrics/catalogue.rs" "$tmp/panels.yml" <<'PY'
import json, re, sys

dashboard_file, alerts_file, catalogue_file, rules_out = sys.argv[1:5]
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)

d = json.load(open(dashboard_file))
for key in ("uid", "title", "schemaVersion", "panels", "templating"):
    need(key in d, f"dashboard: no {key!r}")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
need(ds is not None, "dashboard: no templating variable named 'datasource'")
if ds:
    need(ds.get("type") == "datasource", "dashboard: variable 'datasource' must be of type datasource")
    need(ds.get("query") == "prometheus", "dashboard: variable 'datasource' must query prometheus")

def uses_variable(ref, where):
    need(isinstance(ref, dict) and ref.get("uid") == "${datasource}" and ref.get("type") == "prometheus",
         f"{where}: datasource must be {{'type': 'prometheus', 'uid': '${{datasource}}'}}, is {ref!r}")

exprs = []
ids = set()
panels = d.get("panels", [])
need(isinstance(panels, list) and panels, "dashboard: panels must be a non-empty list")
for i, p in enumerate(panels):
    where = f"panel {i} ({p.get('title', '?')!r})"
    for key in ("id", "type", "title", "gridPos", "targets"):
        need(key in p, f"{where}: no {key!r}")
    need(p.get("id") not in ids, f"{where}: duplicate id")
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    need(all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")) and g.get("x", 0) + g.get("w", 0) <= 24,
         f"{where}: gridPos needs integer h/w/x/y within 24 columns")
    uses_variable(p.get("datasource"), where)
    targets = p.get("targets") or []
    need(targets, f"{where}: no targets")
    for t in targets:
        need(t.get("refId"), f"{where}: a target has no refId")
        need(isinstance(t.get("expr"), str) and t["expr"].strip(), f"{where}: a target has no expr")
        uses_variable(t.get("datasource"), f"{where} target {t.get('refId')}")
        exprs.append((where, t.get("expr", "")))

# Grafana's variables, replaced by what they expand to in a query.
def substitute(expr):
    for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"),
                       ("${instance}", ".*"), ("$instance", ".*")):
        expr = expr.replace(var, value)
    need("$" not in expr, f"unknown Grafana variable left in {expr!r}")
    return expr

with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard-panels\n    rules:\n")
    for n, (where, expr) in enumerate(exprs):
        f.write(f"      - record: panel_query_{n}\n        expr: {json.dumps(substitute(expr))}\n")

# Every metric named is in the catalogue.
catalogue = set(re.findall(r'"(phr_[a-z0-9_]+)"', open(catalogue_file).read()))
need("phr_requests_total" in catalogue, f"no metric names found in {catalogue_file}")
named = set(re.findall(r"\bphr_[a-z0-9_]+", " ".join(e for _, e in exprs) + open(alerts_file).read()))
for name in sorted(named):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    need(name in catalogue or base in catalogue, f"metric {name} is not in the catalogue ({catalogue_file})")

if problems:
    print("dashboard/rules check failed:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"dashboard: {len(panels)} panels, {len(exprs)} queries, {len(named)} metrics named, shape OK")
PY

# Each panel query must parse as PromQL.
promtool check rules "$tmp/panels.yml"
echo "check.sh: monitoring bundle OK"
