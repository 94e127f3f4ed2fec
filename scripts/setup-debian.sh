#!/usr/bin/env bash
# Installs the Debian packages furynet builds and tests with (idempotent; needs root).
#   protobuf-compiler, libprotobuf-dev  build: the etcd client's gRPC code is generated with protoc
#   iproute2, iputils-ping, nftables    tests: network namespaces, veth, routes; ping; nft
#   etcd-server                         tests: the etcd datastore backend (tests start their own)
#   containernetworking-plugins, jq     benchmarks: the reference CNI plugins (scripts/bench-cni.sh)
set -euo pipefail
PACKAGES=(ca-certificates protobuf-compiler libprotobuf-dev iproute2 iputils-ping nftables etcd-server
          containernetworking-plugins jq)
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
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
