#!/usr/bin/env bash
# `make soak DURATION=30m`: tests/soak.rs for DURATION (30m, 90s, 1h, 1500ms; a bare number is
# seconds) on $CACHE_SERVER (default redis-server): the primary + replica soak and the cluster
# soak side by side, output in target/soak.log, then the summary lines of both.
set -euo pipefail
duration=${1:-10m}
case "$duration" in
  *ms) n=${duration%ms}; unit=1 ;;
  *h) n=${duration%h}; unit=3600000 ;;
  *m) n=${duration%m}; unit=60000 ;;
  *s) n=${duration%s}; unit=1000 ;;
  *) n=$duration; unit=1000 ;;
esac
if [[ ! "$n" =~ ^[0-9]+$ ]] || (( n == 0 )); then
  echo "soak: DURATION=$duration is not a duration (30m, 90s, 1h, 1500ms)" >&2
  exit 2
fi
ms=$(( n * unit ))
log=target/soak.log
server=${CACHE_SERVER:-redis-server}
echo "=== soak: $duration (SOAK_MS=$ms) on $(command -v "$server"): $("$server" --version)"
echo "=== soak: full output in $log"
status=0
SOAK_MS=$ms SOAK_SEED=${SOAK_SEED:-random} \
  cargo test --release -p redis-cache --test soak -- --test-threads=2 --nocapture \
  >"$log" 2>&1 || status=$?
echo "=== soak: summary"
grep -E '^(soak|test result|test .* (ok|FAILED))' "$log" || true
if (( status != 0 )); then
  echo "=== soak: FAILED (exit $status); the failure, from $log:" >&2
  grep -n -A40 -m1 'panicked' "$log" >&2 || tail -60 "$log" >&2
fi
exit $status
