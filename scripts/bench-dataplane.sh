#!/usr/bin/env bash
# Dataplane throughput (issue 4): pod-to-pod TCP throughput and 1-byte request/response latency
#   1. on one node with 1,000 NetworkPolicies and 10,000 set elements in force (all pods local,
#      the benchmark pods selected by policies that allow their traffic) vs no nftables table;
#   2. across two nodes over furynet's VXLAN (routing plan + netlink reconcile) vs a kernel
#      VXLAN device built by hand with ip/bridge (same entries, same MTU, same pods).
# Pods are wired by the real furynet-cni (embedded datastore). A/B alternate (ABBA), figures are
# medians of the rounds. Needs root, iproute2, nftables.
#
#   scripts/bench-dataplane.sh [ARGS]    # e.g. --seconds 5 --rounds 3 -o json
#
# The binary removes its namespaces (fnyb-<pid>-*) and datastore on exit, error or Ctrl-C;
# this script also removes any left by a benchmark process that no longer exists.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-dataplane: needs root (network namespaces)" >&2; exit 1; }
command -v nft >/dev/null || { echo "bench-dataplane: apt-get install nftables" >&2; exit 1; }

cargo build --release -q -p furynet-cli -p furynet-cni
bin=${CARGO_TARGET_DIR:-$PWD/target}/release

leftovers() {
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^fnyb-[0-9]+-' || true); do
    pid=${ns#fnyb-}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || ip netns delete "$ns" 2>/dev/null || true
  done
  for d in "${TMPDIR:-/tmp}"/fnyb-[0-9]*-ds-*; do
    [ -e "$d" ] || continue
    pid=${d##*/fnyb-}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || rm -rf "$d"
  done
}
trap leftovers EXIT
echo "nproc $(nproc); loadavg $(cut -d' ' -f1-3 /proc/loadavg); $(uname -sr); $(nft --version)" >&2
"$bin/furynet" bench dataplane "$@"
