#!/usr/bin/env python3
"""Static checks of deploy/monitoring/ that promtool alone does not do (standard library only).

  1. every alert in deploy/monitoring/src/rules/ has a firing and a quiet (`exp_alerts: []`) case
     in deploy/monitoring/tests/, and the tests name no alert that does not exist;
  2. every dashboard is importable: no `__inputs`, a uid, title and schemaVersion, a `datasource`
     variable of type datasource (prometheus), `node` and `instance` label_values() variables,
     every panel and target on `${datasource}`, unique panel ids;
  3. every metric named in the rules and dashboards is documented in docs/metrics.md;
  4. writes every dashboard expression and variable query, with Grafana's variables replaced by
     concrete values, into OUT as recording rules, for `promtool check rules OUT` to parse.

Usage: check-monitoring.py OUT   (exit status 1 and one line per problem when a check fails)
"""
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MON = os.path.join(ROOT, "deploy", "monitoring")
problems = []


def rel(path):
    return os.path.relpath(path, ROOT)


def alerts_in_sources():
    names = {}
    for path in sorted(glob.glob(os.path.join(MON, "src", "rules", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for m in re.finditer(r"^\s*- alert:\s*(\S+)\s*$", f.read(), re.M):
                if m.group(1) in names:
                    problems.append(f"{rel(path)}: alert {m.group(1)} defined twice")
                names[m.group(1)] = path
    return names


def check_coverage(alerts):
    firing, quiet = set(), set()
    for path in sorted(glob.glob(os.path.join(MON, "tests", "*.yaml"))):
        current = None
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                m = re.match(r"^\s*alertname:\s*(\S+)\s*$", line)
                if m:
                    current = m.group(1)
                    if current not in alerts:
                        problems.append(f"{rel(path)}:{n}: test names unknown alert {current}")
                    continue
                m = re.match(r"^\s*exp_alerts:\s*(.*?)\s*$", line)
                if m and current:
                    (quiet if m.group(1).replace(" ", "") == "[]" else firing).add(current)
                    current = None
    for name in sorted(alerts):
        if name not in firing:
            problems.append(f"{name}: no promtool test where it fires")
        if name not in quiet:
            problems.append(f"{name}: no promtool test where it stays quiet (exp_alerts: [])")
    return len(alerts)


def check_dashboard(path, d):
    where = rel(path)
    if "__inputs" in d:
        problems.append(f"{where}: has __inputs (not importable as is)")
    for key in ("uid", "title", "schemaVersion"):
        if not d.get(key):
            problems.append(f"{where}: no {key}")
    vars_ = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = vars_.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{where}: no `datasource` variable of type datasource, query prometheus")
    for name in ("node", "instance"):
        v = vars_.get(name, {})
        q = v.get("query", {})
        q = q.get("query", "") if isinstance(q, dict) else q
        if v.get("type") != "query" or not q.startswith("label_values("):
            problems.append(f"{where}: no `{name}` query variable using label_values()")
    ids = set()
    for p in d.get("panels", []):
        title = p.get("title", "?")
        if p.get("id") in ids:
            problems.append(f"{where}: panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            problems.append(f"{where}: panel {title!r} is wider than the grid")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: panel {title!r} does not use ${{datasource}}")
        if not p.get("targets"):
            problems.append(f"{where}: panel {title!r} has no query")
        for t in p.get("targets", []):
            if not t.get("expr"):
                problems.append(f"{where}: panel {title!r} has a target without expr")
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: panel {title!r} target does not use ${{datasource}}")
    return vars_


# Grafana's built-in interval variables become durations, every other variable a match-all regex
# (they are only ever used in =~ matchers in these dashboards).
DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def concrete(expr):
    return re.sub(r"\$\{?(\w+)\}?", lambda m: DURATIONS.get(m.group(1), ".*"), expr)


def variable_selector(query):
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    return m.group(1) if m else None


def dashboard_exprs():
    exprs = []
    for path in sorted(glob.glob(os.path.join(MON, "dashboards", "*.json"))):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        vars_ = check_dashboard(path, d)
        for name, v in vars_.items():
            if v.get("type") != "query":
                continue
            q = v.get("query", {})
            q = q.get("query", "") if isinstance(q, dict) else q
            sel = variable_selector(q)
            if sel is None:
                problems.append(f"{rel(path)}: variable {name}: not label_values(selector, label)")
            else:
                exprs.append((f"{d['uid']} variable {name}", sel))
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                exprs.append((f"{d['uid']} panel {p.get('title')!r} {t.get('refId')}", t.get("expr", "")))
    return exprs


METRIC = re.compile(r"\b((?:furynet|felix|typha)_[a-z0-9_]*[a-z0-9])\b")


def check_documented(texts):
    with open(os.path.join(ROOT, "docs", "metrics.md"), encoding="utf-8") as f:
        doc = f.read()
    documented = set(re.findall(r"`((?:furynet|felix|typha)_[a-z0-9_]+)", doc))
    for where, text in texts:
        for name in sorted(set(METRIC.findall(text))):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in documented and base not in documented:
                problems.append(f"{where}: metric {name} is not documented in docs/metrics.md")


def main(argv):
    if len(argv) != 1:
        sys.exit("usage: check-monitoring.py OUT")
    alerts = alerts_in_sources()
    covered = check_coverage(alerts)
    exprs = dashboard_exprs()
    texts = [(w, e) for w, e in exprs]
    for path in sorted(glob.glob(os.path.join(MON, "src", "rules", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            texts.append((rel(path), f.read()))
    check_documented(texts)
    lines = ["# Dashboard expressions as recording rules, for promtool check rules.", "groups:",
             "  - name: dashboard-expressions", "    rules:"]
    for i, (where, expr) in enumerate(exprs):
        e = concrete(expr)
        if "$" in e:
            problems.append(f"{where}: unreplaced variable in {expr!r}")
        lines.append(f"      # {where}")
        lines.append(f"      - record: dashboard:expr_{i}")
        lines.append(f"        expr: {json.dumps(e)}")
    with open(argv[0], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for p in problems:
        print(f"check-monitoring: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-monitoring: {covered} alerts covered firing and quiet; "
          f"{len(exprs)} dashboard expressions written to {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
