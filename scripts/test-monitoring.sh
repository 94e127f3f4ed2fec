#!/usr/bin/env bash
# Checks of deploy/monitoring/ (issue 5), run by .ci/run. Needs python3 and promtool (Debian
# package prometheus; scripts/setup-debian.sh installs both).
#   1. the generated files are up to date with deploy/monitoring/src/ (regenerate into a temporary
#      directory and diff);
#   2. promtool check rules on the plain rule files, and the PrometheusRules hold the same groups;
#   3. promtool test rules: the unit tests in deploy/monitoring/tests/;
#   4. every alert has a firing and a quiet test, dashboards are importable, every metric used is
#      documented in docs/metrics.md (scripts/check-monitoring.py);
#   5. every dashboard expression and variable query parses (promtool check rules on them as
#      recording rules, Grafana variables replaced by concrete values);
#   6. a real Prometheus (loopback, temporary storage, started and stopped by the script) scrapes
#      the example expositions in deploy/monitoring/tests/exposition/ (docs/metrics.md as a scrape)
#      and loads the rules: every rule evaluates without error, every dashboard query returns series
#      (scripts/smoke-monitoring.py).
# The same end-to-end check against a running lab (the real agent's /metrics) comes with the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
M=deploy/monitoring
if ! command -v promtool >/dev/null; then
  echo "test-monitoring: promtool not found: install Debian's prometheus package (scripts/setup-debian.sh)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "test-monitoring: generated files are up to date"
python3 scripts/gen-monitoring.py --out "$tmp/gen" >/dev/null
stale=0
for p in rules prometheusrules dashboards grafana kustomization.yaml; do
  diff -r -u "$tmp/gen/$p" "$M/$p" >&2 || stale=1
done
if [ "$stale" != 0 ]; then
  echo "test-monitoring: $M is stale (diff above): run scripts/gen-monitoring.sh and commit" >&2
  exit 1
fi

failed=()
step() { # name, command...: runs every step, reports the failed ones at the end
  local name=$1; shift
  echo "test-monitoring: $name"
  "$@" || failed+=("$name")
}
step "promtool check rules" promtool check rules "$M"/rules/*.rules.yaml
# The PrometheusRules' spec, de-indented, must be the plain rule file (minus its header line).
same_spec() {
  local f n
  mkdir -p "$tmp/spec"
  for f in "$M"/prometheusrules/*.yaml; do
    n=$(basename "$f" .yaml)
    awk 'body { sub(/^  /, ""); print } /^spec:$/ { body = 1 }' "$f" >"$tmp/spec/$n.rules.yaml"
    tail -n +2 "$M/rules/$n.rules.yaml" | diff -u - "$tmp/spec/$n.rules.yaml" || return 1
  done
  promtool check rules "$tmp"/spec/*.rules.yaml >/dev/null
}
step "PrometheusRule specs are the plain rule files" same_spec
step "promtool test rules" promtool test rules "$M"/tests/*.yaml
step "coverage, dashboards, documented metrics" \
  python3 scripts/check-monitoring.py "$tmp/dashboard-exprs.rules.yaml"
if [ -s "$tmp/dashboard-exprs.rules.yaml" ]; then
  step "dashboard expressions parse" promtool check rules "$tmp/dashboard-exprs.rules.yaml"
fi
step "rules and dashboards against a real Prometheus scraping the documented expositions" \
  python3 scripts/smoke-monitoring.py
if [ ${#failed[@]} -ne 0 ]; then
  printf 'test-monitoring: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test-monitoring: ok"
