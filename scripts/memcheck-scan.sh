#!/usr/bin/env bash
# Reads the valgrind logs `make memcheck` left in $1 (valgrind-<pid>.log, one per server
# process, forked RDB/AOF children included) and fails when any error or definite leak has a
# stack frame in the module (libredis_cache / redis_cache::), printing those reports whole.
# Counts the processes checked, and those that wrote no leak report (killed by a test).
set -euo pipefail
dir="${1:?usage: memcheck-scan.sh <valgrind log dir>}"
shopt -s nullglob
logs=("$dir"/valgrind-*.log)
if ((${#logs[@]} == 0)); then
    echo "memcheck: no valgrind logs in $dir" >&2
    exit 1
fi
# One valgrind report is a block of "==pid== " lines between blank "==pid== " lines.
awk '
    FNR == 1 { procs++; if (block != "") flush(); block = ""; leak[FILENAME] = 0 }
    /HEAP SUMMARY:/ { leak[FILENAME] = 1 }
    {
        line = $0; sub(/^==[0-9]+== ?/, "", line)
        if (line == "") { flush(); block = ""; next }
        block = block $0 "\n"
    }
    function flush() {
        if (block ~ /(Invalid (read|write|free)|definitely lost|Conditional jump|uninitialised|Mismatched free|overlap|Syscall param)/ \
            && block ~ /(libredis_cache|redis_cache::)/) {
            bad++; printf "%s--- in %s\n\n", block, FILENAME
        }
    }
    END {
        flush()
        for (f in leak) if (leak[f]) reported++
        printf "memcheck: %d server processes checked (%d with a leak report, %d killed before exit), %d module errors\n", \
            procs, reported, procs - reported, bad
        exit bad > 0
    }
' "${logs[@]}"
