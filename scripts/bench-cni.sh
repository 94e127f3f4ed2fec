#!/usr/bin/env bash
# CNI ADD/DEL latency and throughput: furynet-cni (embedded and etcd datastores) against the
# reference plugins (Debian's containernetworking-plugins: bridge + host-local, ptp + host-local),
# same machine, same run, 200 pods sequentially and 8 at a time. Needs root.
#
#   scripts/bench-cni.sh [PODS]          # default 200; prints one line per plugin and mode
#
# Everything happens in a scratch "host" network namespace (fnyb-host-PID) and per-pod
# namespaces that `furynet bench cni` creates and deletes; all are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${1:-200}
[ "$(id -u)" = 0 ] || { echo "bench-cni: needs root (network namespaces)" >&2; exit 1; }
for p in bridge ptp host-local; do
  [ -x /usr/lib/cni/$p ] || { echo "bench-cni: apt-get install containernetworking-plugins" >&2; exit 1; }
done

cargo build --release -q -p furynet-cli -p furynet-cni
bin=$PWD/target/release
host=fnyb-host-$$
work=$(mktemp -d /tmp/furynet-bench-cni.XXXXXX)
cleanup() {
  ip netns delete "$host" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^fnyb-" || true); do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$host"
ip netns exec "$host" ip link set lo up
mkdir -p "$work/cni"
ln -s /usr/lib/cni/* "$work/cni/"
ln -s "$bin/furynet-cni" "$work/cni/furynet-cni"

conf() { # name json
  printf '%s' "$2" > "$work/$1.json"
}
conf bridge '{"cniVersion":"1.0.0","name":"bench-bridge","type":"bridge","bridge":"fnybr0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","subnet":"10.99.0.0/16","dataDir":"'"$work"'/hl-bridge"}}'
conf ptp '{"cniVersion":"1.0.0","name":"bench-ptp","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","subnet":"10.98.0.0/16","dataDir":"'"$work"'/hl-ptp"}}'
conf furynet '{"cniVersion":"1.0.0","name":"bench-furynet","type":"furynet-cni","datastore":{"type":"embedded","path":"'"$work"'/ds"},"nodeName":"bench","ipam":{"pools":["10.97.0.0/16"]},"mtu":1450}'
# The same with DEL deleting the veth itself before it returns, as the reference plugins do.
conf furynet-wait '{"cniVersion":"1.0.0","name":"bench-furynet","type":"furynet-cni","datastore":{"type":"embedded","path":"'"$work"'/ds-wait"},"nodeName":"bench","ipam":{"pools":["10.95.0.0/16"]},"mtu":1450,"teardown":"wait"}'


echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for par in 1 8; do
  ip netns exec "$host" "$bin/furynet" bench cni --plugin /usr/lib/cni/bridge --config "$work/bridge.json" --cni-path "$work/cni" --pods "$pods" --parallel $par --name bridge+host-local 2>/dev/null
  ip netns exec "$host" "$bin/furynet" bench cni --plugin /usr/lib/cni/ptp --config "$work/ptp.json" --cni-path "$work/cni" --pods "$pods" --parallel $par --name ptp+host-local 2>/dev/null
  ip netns exec "$host" "$bin/furynet" bench cni --plugin "$bin/furynet-cni" --config "$work/furynet.json" --cni-path "$work/cni" --pods "$pods" --parallel $par --name furynet-embedded 2>/dev/null
  ip netns exec "$host" "$bin/furynet" bench cni --plugin "$bin/furynet-cni" --config "$work/furynet-wait.json" --cni-path "$work/cni" --pods "$pods" --parallel $par --name furynet-emb-wait 2>/dev/null
done
if command -v etcd >/dev/null; then
  conf furynet-etcd '{"cniVersion":"1.0.0","name":"bench-furynet","type":"furynet-cni","datastore":{"type":"etcd","endpoints":["http://127.0.0.1:23790"]},"nodeName":"bench","ipam":{"pools":["10.96.0.0/16"]},"mtu":1450}'
  for par in 1 8; do
    # etcd runs inside the scratch host namespace: the plugin reaches it on that namespace's loopback.
    ip netns exec "$host" scripts/with-etcd.sh "$bin/furynet" bench cni --plugin "$bin/furynet-cni" --config "$work/furynet-etcd.json" --cni-path "$work/cni" --pods "$pods" --parallel $par --name furynet-etcd 2>/dev/null
  done
fi
