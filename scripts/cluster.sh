#!/usr/bin/env bash
# `make cluster`: a local Redis Cluster with the module on every node: three primaries and a
# replica each on loopback (ports from $CLUSTER_PORT, default 7000: 7000-7005), in a temporary
# directory. Prints the ports; Ctrl-C stops every node and removes the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
module="$here/target/release/libredis_cache.so"
server="${REDIS_SERVER:-redis-server}"
cli="${REDIS_CLI:-redis-cli}"
base="${CLUSTER_PORT:-7000}"
[[ -f "$module" ]] || { echo "cluster: $module not found (make cluster builds it)" >&2; exit 1; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/redis-cache-cluster.XXXXXX")"
pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
  echo "cluster: stopped"
}
trap stop INT TERM EXIT
addrs=()
for i in 0 1 2 3 4 5; do
  port=$((base + i))
  mkdir -p "$dir/$port"
  "$server" --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 3000 --save '' --appendonly yes \
    --logfile redis.log --loadmodule "$module" &
  pids+=($!)
  addrs+=("127.0.0.1:$port")
done
for a in "${addrs[@]}"; do
  for _ in $(seq 50); do
    "$cli" -h 127.0.0.1 -p "${a##*:}" PING >/dev/null 2>&1 && break
    sleep 0.1
  done
done
"$cli" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" || {
  cat "$dir/create.log" >&2; exit 1; }
for _ in $(seq 100); do
  "$cli" -p "$base" CLUSTER INFO 2>/dev/null | grep -q cluster_state:ok && break
  sleep 0.1
done
for _ in $(seq 100); do
  (( $("$cli" -p "$base" CLUSTER NODES 2>/dev/null | grep -c slave) == 3 )) && break
  sleep 0.1
done
echo "cluster: 3 primaries and 3 replicas with the module, ports $base-$((base + 5)), data in $dir"
echo "         connect with: redis-cli -c -p $base    (Ctrl-C stops them all)"
"$cli" -p "$base" CLUSTER NODES | awk '{print "         " $2, $3}' | sed 's/@[0-9]*//'
wait
