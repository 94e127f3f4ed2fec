#!/usr/bin/env bash
# Run a command with a throwaway etcd server on loopback, then stop it and delete its data.
#
#   scripts/with-etcd.sh cargo test -p furynet-datastore --test etcd
#
# Starts /usr/bin/etcd (Debian: apt-get install etcd-server) on 127.0.0.1:23790 (peer port
# 23791) with a temporary data directory, waits until it is healthy, exports
# FURYNET_ETCD_ENDPOINTS=http://127.0.0.1:23790 for the command, and always stops etcd and
# removes the directory afterwards (also on failure or Ctrl-C). Exits with the command's
# status. Override the port with FURYNET_ETCD_PORT and the binary with FURYNET_ETCD_BIN.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

port=${FURYNET_ETCD_PORT:-23790}
peer_port=$((port + 1))
bin=${FURYNET_ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
if [ ! -x "$bin" ]; then
  echo "with-etcd: etcd not found ($bin); install it: apt-get install etcd-server" >&2
  exit 1
fi
for p in "$port" "$peer_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "with-etcd: 127.0.0.1:$p is already in use; set FURYNET_ETCD_PORT to a free port" >&2
    exit 1
  fi
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/furynet-etcd.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

client_url="http://127.0.0.1:$port"
peer_url="http://127.0.0.1:$peer_port"
"$bin" --name=default --data-dir="$dir/data" \
  --listen-client-urls="$client_url" --advertise-client-urls="$client_url" \
  --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
  --initial-cluster="default=$peer_url" \
  --heartbeat-interval=50 --election-timeout=500 \
  --logger=zap --log-level=warn >"$dir/etcd.log" 2>&1 &
pid=$!

healthy() {
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  reply=$(timeout 2 cat <&3 || true)
  exec 3>&-
  [[ $reply == *'"health":"true"'* ]]
}

deadline=$((SECONDS + 30))
until healthy 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "with-etcd: etcd exited during start-up:" >&2
    tail -n 40 "$dir/etcd.log" >&2 || true
    pid=""
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "with-etcd: etcd not healthy after 30 s:" >&2
    tail -n 40 "$dir/etcd.log" >&2 || true
    exit 1
  fi
  sleep 0.2
done

export FURYNET_ETCD_ENDPOINTS="$client_url"
echo "with-etcd: etcd $("$bin" --version | head -n 1 | awk '{print $NF}') ready at $client_url (pid $pid)" >&2
set +e
"$@"
status=$?
exit "$status"
