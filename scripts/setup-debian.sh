#!/usr/bin/env bash
# Installs the Debian packages furynet builds and tests with (idempotent; needs root).
#   protobuf-compiler, libprotobuf-dev  build: the etcd client's gRPC code is generated with protoc
#   iproute2, iputils-ping, nftables    tests: network namespaces, veth, routes; ping; nft
#   etcd-server                         tests: the etcd datastore backend (tests start their own)
#   containernetworking-plugins, jq     benchmarks: the reference CNI plugins (scripts/bench-cni.sh)
#   prometheus, python3                 tests: promtool and the generator (scripts/test-monitoring.sh);
#                                       a prometheus service the install starts is stopped again
set -euo pipefail
PACKAGES=(ca-certificates protobuf-compiler libprotobuf-dev iproute2 iputils-ping nftables etcd-server
          containernetworking-plugins jq prometheus python3)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup-debian: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "setup-debian: installing ${missing[*]}" >&2
apt-get update -qq
prometheus_was_active=no
systemctl is-active --quiet prometheus 2>/dev/null && prometheus_was_active=yes
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's prometheus package starts its server where systemd runs services; the tests only need
# promtool. Stop the service only if this install started it.
if [ "$prometheus_was_active" = no ] && systemctl is-active --quiet prometheus 2>/dev/null; then
  echo "setup-debian: stopping the prometheus service the package install started" >&2
  systemctl stop prometheus
fi
