#!/usr/bin/env python3
"""Checks that the observability kit only names metrics dbmazz exposes, and that the Grafana
dashboard is well formed.

    scripts/check-deploy-metrics.py <out-rules-file>

The exposed names come from src/control/prometheus.rs: each `pub const X: &str = "dbmazz_..."`
of its `names` module, exposed as `<name>_total` when it is encoded as a counter, as
`<name>_seconds_{bucket,sum,count}` when it is the seconds histogram, and as itself otherwise.
Every `dbmazz_*` token in the alert expressions of deploy/prometheus/dbmazz-rules.yml and in the
dashboard's queries must be one of those. The dashboard's queries, with Grafana's variables replaced, are written to
<out-rules-file> as recording rules, so that `promtool check rules` parses each of them.
Exits 1 with one line per problem.
"""

import json
import re
import sys
from pathlib import Path

import yaml  # PyYAML, which yamllint brings

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src/control/prometheus.rs"
RULES = ROOT / "deploy/prometheus/dbmazz-rules.yml"
DASHBOARD = ROOT / "deploy/grafana/dbmazz.json"


def exposed_names():
    text = SOURCE.read_text()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "(dbmazz_[a-z_]+)";', text))
    if not consts:
        sys.exit(f"check-deploy-metrics: no metric names found in {SOURCE}")
    body = text[text.index("impl Collector for JobCollector"):]
    names = set()
    for const, name in consts.items():
        use = re.search(rf"\b{const}\b", body)
        if use is None:
            continue  # declared, never encoded
        before = body[max(0, use.start() - 160):use.start()]
        after = body[use.end():use.end() + 200]
        if "MetricType::Histogram" in after:
            base = name + ("_seconds" if "Unit::Seconds" in after else "")
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        elif re.search(r"counter\(\s*e,\s*$", before) or "ConstCounter::new(0u64).metric_type()" in before:
            names.add(name + "_total")
        else:
            names.add(name)
    return names


def dashboard_queries(problems):
    dash = json.loads(DASHBOARD.read_text())
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.append(f"{DASHBOARD.name}: no {key!r}")
    ids, queries = set(), []
    for panel in dash.get("panels", []):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if pid in ids:
            problems.append(f"{DASHBOARD.name}: panel id {pid} twice ({title})")
        ids.add(pid)
        grid = panel.get("gridPos", {})
        if not all(k in grid for k in ("h", "w", "x", "y")) or grid["x"] + grid["w"] > 24:
            problems.append(f"{DASHBOARD.name}: panel {title!r} has a bad gridPos {grid}")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{DASHBOARD.name}: panel {title!r} does not use the $datasource variable")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{DASHBOARD.name}: panel {title!r} has no query")
        for t in targets:
            expr = t.get("expr", "")
            if not expr:
                problems.append(f"{DASHBOARD.name}: panel {title!r} has an empty query")
            queries.append((title, expr))
    return queries


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    problems = []
    names = exposed_names()
    queries = dashboard_queries(problems)
    rules = yaml.safe_load(RULES.read_text())
    sources = [(f"{RULES.name}: {r.get('alert') or r.get('record')}", r["expr"])
               for g in rules["groups"] for r in g["rules"]]
    sources += [(f"{DASHBOARD.name}: {t}", e) for t, e in queries]
    for where, text in sources:
        for token in sorted(set(re.findall(r"\bdbmazz_[a-z_]+\b", text))):
            if token not in names:
                problems.append(f"{where}: {token} is not a metric dbmazz exposes")
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (title, expr) in enumerate(queries):
        promql = (expr.replace("$__rate_interval", "5m").replace("$job", ".*")
                  .replace("$instance", ".*"))
        lines.append(f"      - record: dashboard:query_{i}")
        lines.append(f"        expr: {json.dumps(promql)}")
    Path(sys.argv[1]).write_text("\n".join(lines) + "\n")
    for p in problems:
        print(f"check-deploy-metrics: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{len(names)} exposed series names; rules and {len(queries)} dashboard queries use only those")


if __name__ == "__main__":
    main()
