"""`CACHE.TAGINVALIDATE` across the primaries of a cluster: the latency of the confirmed reply
(sent to one primary, which waits for the others over the cluster bus) with 1, 1,000 and
100,000 tagged entries per primary, beside the client recipe: the Lua invalidation
(`SMEMBERS` of the tag's set, `DEL` of its members and of the set) sent to each primary in
turn, each primary holding its part of the tag in one slot (the recipe needs its set and its
keys in one slot to run as one script). Standard library only."""

import argparse
import sys
import time

from resp import Conn, RespError
from invalidate import LUA_INVALIDATE, VALUE


def crc16(data):
    """CRC16-CCITT (XMODEM), as Redis Cluster hashes keys."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(tag):
    return crc16(tag.encode()) % 16384


def owners(c):
    """slot range list: (lo, hi, port) of each primary's ranges."""
    out = []
    for r in c.call("CLUSTER", "SLOTS"):
        out.append((r[0], r[1], r[2][1]))
    return out


def tag_on(port, ranges):
    """A hash tag whose slot the primary on `port` serves."""
    for i in range(100000):
        t = "n%d" % i
        s = slot(t)
        if any(lo <= s <= hi and p == port for lo, hi, p in ranges):
            return t
    raise RuntimeError("no hash tag found for port %d" % port)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def settle(conns):
    """Waits until every primary has removed what it invalidated (the walk runs in ticks and
    would otherwise overlap the next round's fill)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(c.info_int("cache", "cache_tag_pending_removal", 0) == 0 for c in conns):
            return
        time.sleep(0.005)
    raise RuntimeError("removal did not finish")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ports", required=True, help="the primaries' ports, comma-separated")
    ap.add_argument("--sizes", default="1,1000,100000", help="entries per primary")
    ap.add_argument("--rounds", default="200,100,5", help="rounds for each size")
    opts = ap.parse_args()
    ports = [int(p) for p in opts.ports.split(",")]
    sizes = [int(s) for s in opts.sizes.split(",")]
    rounds = [int(r) for r in opts.rounds.split(",")]
    conns = [Conn(p) for p in ports]
    ranges = owners(conns[0])
    tags = [tag_on(p, ranges) for p in ports]
    shas = [c.call("SCRIPT", "LOAD", LUA_INVALIDATE).decode() for c in conns]
    rows = []
    for n, r in zip(sizes, rounds):
        ours, recipe = [], []
        for i in range(r):
            if sys.stderr.isatty() or i == 0:
                print("cluster invalidate: %d entries per primary, round %d/%d" % (n, i + 1, r),
                      file=sys.stderr, end="\r" if sys.stderr.isatty() else "\n")
            for c, t in zip(conns, tags):
                c.load(n, lambda j, t=t: [["CACHE.TAGSET", "{%s}m%d" % (t, j), VALUE, "PX",
                                           "3600000", "TAGS", "bench"]], batch=2000)
            t0 = time.perf_counter()
            got = conns[0].call("CACHE.TAGINVALIDATE", "bench")
            ours.append(time.perf_counter() - t0)
            if got != n * len(ports):
                raise RuntimeError("TAGINVALIDATE counted %r, expected %d" % (got, n * len(ports)))
            settle(conns)
            for c, t in zip(conns, tags):
                c.load(n, lambda j, t=t: [["SET", "{%s}r%d" % (t, j), VALUE, "PX", "3600000"],
                                          ["SADD", "{%s}tag:bench" % t, "{%s}r%d" % (t, j)]],
                       batch=2000)
            t0 = time.perf_counter()
            total = 0
            for c, t, sha in zip(conns, tags, shas):
                total += c.call("EVALSHA", sha, "1", "{%s}tag:bench" % t)
            recipe.append(time.perf_counter() - t0)
            if total != n * len(ports):
                raise RuntimeError("the recipe deleted %r, expected %d" % (total, n * len(ports)))
        if sys.stderr.isatty():
            print("", file=sys.stderr)
        rows.append((n, r, ours, recipe))
    print("")
    print("## CACHE.TAGINVALIDATE across %d primaries (confirmed reply) vs the Lua recipe per primary"
          % len(ports))
    print("")
    print("| Entries per primary | Rounds | TAGINVALIDATE p50 | p99 | Lua on each primary in turn p50 | p99 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, r, ours, recipe in rows:
        print("| %d | %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms |" % (
            n, r, percentile(ours, 0.5) * 1e3, percentile(ours, 0.99) * 1e3,
            percentile(recipe, 0.5) * 1e3, percentile(recipe, 0.99) * 1e3))
    print("")
    print("Bar: p99 < 5 ms with 1,000 entries per primary. With few rounds, p99 is the worst.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, OSError, RespError, RuntimeError) as e:
        print("bench: cluster invalidate: %s" % e, file=sys.stderr)
        sys.exit(2)
