#!/usr/bin/env bash
# Regenerates deploy/monitoring/ (rule files, PrometheusRules, dashboards, ConfigMaps,
# kustomization) from deploy/monitoring/src/. Needs only python3 (Debian's, standard library).
set -euo pipefail
exec python3 "$(dirname "$0")/gen-monitoring.py" "$@"
