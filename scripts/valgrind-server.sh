#!/usr/bin/env bash
# redis-server under valgrind memcheck, for `make memcheck` (used as $CACHE_SERVER).
# Arguments go to redis-server. Each process writes $MEMCHECK_LOGS/valgrind-<pid>.log, which
# scripts/memcheck-scan.sh reads after the run. `--version` runs the plain binary (the harness
# asks it what the server is).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
server="${MEMCHECK_SERVER:-redis-server}"
if [ "${1:-}" = "--version" ]; then exec "$server" --version; fi
logs="${MEMCHECK_LOGS:?MEMCHECK_LOGS: the directory for valgrind logs}"
mkdir -p "$logs"
# --soname-synonyms: Debian's redis-server takes malloc/free from libjemalloc.so.2; without
# the synonym valgrind would not replace them and would see neither leaks nor invalid accesses
# in heap blocks (the module allocates through RedisModule_Alloc, i.e. that malloc).
exec valgrind --tool=memcheck \
    --soname-synonyms=somalloc='*jemalloc*' \
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --track-origins=no --num-callers=30 \
    --suppressions="$here/../tests/memcheck/valgrind.supp" \
    --log-file="$logs/valgrind-%p.log" \
    "$server" "$@"
