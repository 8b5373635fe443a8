"""Memory per entry: `used_memory` before and after N entries with 64-byte values, for native
`SET PX`, `CACHE.SET PX`, `CACHE.TAGSET` with 3 tags (the tag index included) and the
client-side recipe `SET PX` + 3 `SADD` (one set per tag, as Laravel and Symfony keep them).
Tags are shared the way an application's are: each entry has one of 10, one of 100 and one of
1,000 tags. Prints bytes per entry and the ratios the README reports (standard library only)."""

import argparse
import os
import sys

from resp import Conn, RespError

VALUE = b"v" * 56 + b"-64bytes"
assert len(VALUE) == 64


def tags_of(i):
    return ["a%d" % (i % 10), "b%d" % (i % 100), "c%d" % (i % 1000)]


def variants(have_module):
    out = [("`SET PX`", lambda i: [["SET", "k%d" % i, VALUE, "PX", "3600000"]])]
    if have_module:
        out.append(("`CACHE.SET PX`", lambda i: [["CACHE.SET", "k%d" % i, VALUE, "PX", "3600000"]]))
        out.append(("`CACHE.TAGSET` 3 tags", lambda i: [
            ["CACHE.TAGSET", "k%d" % i, VALUE, "PX", "3600000", "TAGS"] + tags_of(i)]))
    out.append(("`SET PX` + 3 `SADD`", lambda i: [["SET", "k%d" % i, VALUE, "PX", "3600000"]] + [
        ["SADD", "tag:" + t, "k%d" % i] for t in tags_of(i)]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--module", default="none")
    opts = ap.parse_args()
    n = int(os.environ.get("MEMORY_ENTRIES", "200000"))
    c = Conn(opts.port)
    have_module = opts.module != "none"
    per_entry = {}
    for label, make in variants(have_module):
        c.call("FLUSHALL")
        before = c.info_int("memory", "used_memory")
        c.load(n, make)
        after = c.info_int("memory", "used_memory")
        if c.call("DBSIZE") < n:
            raise RuntimeError("%s: fewer keys than entries" % label)
        per_entry[label] = (after - before) / n
    c.call("FLUSHALL")
    c.close()
    base = per_entry["`SET PX`"]
    print("")
    print("## Memory per entry (%d entries, 64-byte values, `used_memory` delta)" % n)
    print("")
    print("| Entries | Bytes per entry | / `SET PX` | Bar |")
    print("|---|---:|---:|---|")
    bars = {"`CACHE.SET PX`": "<= 1.25x `SET PX`",
            "`CACHE.TAGSET` 3 tags": "<= 0.8x the `SADD` recipe"}
    for label, b in per_entry.items():
        print("| %s | %.0f | %.2fx | %s |" % (label, b, b / base, bars.get(label, "")))
    if "`CACHE.TAGSET` 3 tags" in per_entry:
        r = per_entry["`CACHE.TAGSET` 3 tags"] / per_entry["`SET PX` + 3 `SADD`"]
        print("")
        print("`CACHE.TAGSET` 3 tags / `SET PX` + 3 `SADD`: %.2fx (bar <= 0.8x: %s)" % (
            r, "PASS" if r <= 0.8 else "FAIL"))
        r = per_entry["`CACHE.SET PX`"] / base
        print("`CACHE.SET PX` / `SET PX`: %.2fx (bar <= 1.25x: %s)" % (r, "PASS" if r <= 1.25 else "FAIL"))
    print("")
    print("Command line: `BENCH_PARTS=memory MEMORY_ENTRIES=%d bash bench/run`" % n)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, OSError, RespError, RuntimeError) as e:
        print("bench: memory: %s" % e, file=sys.stderr)
        sys.exit(2)
