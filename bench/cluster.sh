#!/usr/bin/env bash
# `make bench-cluster`: GETX / TAGSET / WBQUEUE through a 3-primary cluster (redis-benchmark
# --cluster, which sends each command to its key's node) beside the same commands on one
# node, in one run; then CACHE.TAGINVALIDATE across the primaries (bench/cluster_invalidate.py). All servers have the module; no replicas (they would only compete for the
# same cores). Prints the medians of ROUNDS runs and the cluster / one-node ratios.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
module="${MODULE:-$here/target/release/libredis_cache.so}"
rounds="${ROUNDS:-3}" n="${N:-200000}" clients="${CLIENTS:-50}" pipeline="${PIPELINE:-16}"
[[ -f "$module" ]] || { echo "bench-cluster: $module not found" >&2; exit 2; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/redis-cache-bench-cluster.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); print(p if p < 55000 else "")'
}
start() { # port, extra args...
  local port=$1; shift
  mkdir -p "$dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --save '' --appendonly no \
    --logfile redis.log --loadmodule "$module" "$@" &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$port" PING >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench-cluster: redis-server on $port did not start" >&2; exit 2
}
ports=()
while ((${#ports[@]} < 4)); do p="$(free_port)"; [[ -n "$p" ]] && ports+=("$p"); done
single=${ports[3]}
start "$single"
for p in "${ports[@]:0:3}"; do start "$p" --cluster-enabled yes --cluster-config-file nodes.conf; done
redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
  --cluster-yes >"$dir/create.log"
for _ in $(seq 100); do
  redis-cli -p "${ports[0]}" CLUSTER INFO | grep -q cluster_state:ok && break; sleep 0.1
done
value="vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv-64bytes"
for p in "${ports[@]}"; do redis-cli -p "$p" CONFIG SET cache.wb-max-len 1000000000000 >/dev/null; done
rps() { # port, cluster flag, command...
  local port=$1 flag=$2; shift 2
  redis-benchmark -h 127.0.0.1 -p "$port" $flag -P "$pipeline" -c "$clients" -n "$n" -q --csv "$@" \
    | tail -1 | cut -d, -f2 | tr -d '"'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo ""
echo "## Through a 3-primary cluster vs one node (redis-benchmark -P $pipeline -c $clients, n=$n, median of $rounds)"
echo ""
echo "| Command | One node (rps) | Cluster (rps) | Cluster / one node |"
echo "|---|---:|---:|---:|"
for name in GETX TAGSET WBQUEUE; do
  case $name in
    GETX) one=(CACHE.GETX k:1); clu=(CACHE.GETX "{tag}k:1")
          redis-cli -p "$single" CACHE.SET k:1 "$value" EX 3600 >/dev/null
          redis-cli -c -p "${ports[0]}" CACHE.SET "{tag}k:1" "$value" EX 3600 >/dev/null ;;
    TAGSET) one=(CACHE.TAGSET k:2 "$value" PX 60000 TAGS t1 t2 t3)
            clu=(CACHE.TAGSET "{tag}k:2" "$value" PX 60000 TAGS t1 t2 t3) ;;
    WBQUEUE) one=(CACHE.WBQUEUE k:3 "$value"); clu=(CACHE.WBQUEUE "{tag}k:3" "$value") ;;
  esac
  a=(); b=()
  for _ in $(seq "$rounds"); do
    a+=("$(rps "$single" "" "${one[@]}")")
    b+=("$(rps "${ports[0]}" --cluster "${clu[@]}")")
  done
  ma="$(printf '%s\n' "${a[@]}" | median)"; mb="$(printf '%s\n' "${b[@]}" | median)"
  printf '| `CACHE.%s` | %.0f | %.0f | %.2fx |\n' "$name" "$ma" "$mb" "$(echo "$mb / $ma" | bc -l)"
done
echo ""
echo "Command line: \`ROUNDS=$rounds make bench-cluster\` (all servers and the client share this machine's cores)"
# CACHE.TAGINVALIDATE from one primary, confirmed by the others, vs the Lua recipe on each.
python3 "$here/bench/cluster_invalidate.py" --ports "${ports[0]},${ports[1]},${ports[2]}" \
  ${INVALIDATE_ROUNDS:+--rounds "$INVALIDATE_ROUNDS"}
echo ""
echo "Command line: \`make bench-cluster\` (INVALIDATE_ROUNDS=200,100,5 by default)"
