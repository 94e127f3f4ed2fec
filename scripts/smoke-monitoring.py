#!/usr/bin/env python3
"""Contract smoke test: a real Prometheus (Debian's `prometheus`, on loopback, its own temporary
storage) scrapes the example expositions in deploy/monitoring/tests/exposition/ (an agent and a
fan-out server exactly as docs/metrics.md specifies them, served by a local HTTP server) and loads
the plain rule files. Then every dashboard query and variable query must return series, and every
alert rule must evaluate without error. Both processes are started here and stopped here.

This checks rules and dashboards against the documented contract; the same check against a running
lab (the real agent's /metrics) comes with the agent. Standard library only.
Usage: smoke-monitoring.py   (exit status 1 and one line per problem on failure)
"""
import glob
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MON = os.path.join(ROOT, "deploy", "monitoring")
CHECK = runpy.run_path(os.path.join(ROOT, "scripts", "check-monitoring.py"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(fixture_port, rule_files):
    def job(name, path, node, pod):
        return (f"  - job_name: {name}\n    metrics_path: /{path}\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{fixture_port}']\n"
                f"        labels: {{node: {node}, pod: {pod}, namespace: kube-system}}\n")
    return ("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            + "rule_files:\n" + "".join(f"  - {json.dumps(f)}\n" for f in rule_files)
            + "scrape_configs:\n"
            + job("furynet-agent", "agent.prom", "node-a", "furynet-agent-aaaaa")
            + job("furynet-fanout", "fanout.prom", "node-b", "furynet-fanout-aaaaa"))


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def wait(what, fn, timeout=180):
    deadline = time.time() + timeout
    while True:
        try:
            if fn():
                return
        except (OSError, RuntimeError):
            pass
        if time.time() > deadline:
            sys.exit(f"smoke-monitoring: timed out waiting for {what}")
        time.sleep(0.5)


def main():
    prometheus = shutil.which("prometheus")
    if not prometheus:
        sys.exit("smoke-monitoring: prometheus not found: install Debian's prometheus package")
    work = tempfile.mkdtemp(prefix="furynet-smoke-")
    procs = []
    try:
        fport, pport = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(fport)],
            cwd=os.path.join(MON, "tests", "exposition"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        rules = sorted(glob.glob(os.path.join(MON, "rules", "*.rules.yaml")))
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(config(fport, rules))
        log = open(os.path.join(work, "prometheus.log"), "w")
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{pport}"], stdout=log, stderr=subprocess.STDOUT))

        def scraped():
            r = api(pport, "query", query="count_over_time(up[1m]) >= 3 and up == 1")
            return len(r["result"]) == 2
        wait("three good scrapes of both fixtures", scraped)

        def evaluated():
            groups = api(pport, "rules")["groups"]
            return groups and all(r.get("lastEvaluation", "").startswith("2")
                                  and not r["lastEvaluation"].startswith("0001")
                                  for g in groups for r in g["rules"])
        wait("every rule evaluated", evaluated)

        problems, n = [], 0
        for g in api(pport, "rules")["groups"]:
            for r in g["rules"]:
                n += 1
                if r.get("health") != "ok":
                    problems.append(f"rule {r.get('name')}: health {r.get('health')}: {r.get('lastError')}")
        exprs = CHECK["dashboard_exprs"]()
        for where, expr in exprs:
            q = CHECK["concrete"](expr)
            try:
                result = api(pport, "query", query=q)["result"]
            except (OSError, RuntimeError) as e:
                problems.append(f"{where}: query failed: {e}")
                continue
            if not result:
                problems.append(f"{where}: no series for {q}")
        for p in problems:
            print(f"smoke-monitoring: {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print(f"smoke-monitoring: {n} rules evaluate cleanly and {len(exprs)} dashboard queries "
              "return series against a real Prometheus scraping the documented expositions")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
