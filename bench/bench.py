#!/usr/bin/env python3
"""Benchmark driver for redis-cache (started by bench/run; Python standard library only).

bench/run starts a redis-server (pinned to one core, module loaded) and hands us its port.
We set up the keys and Lua scripts, check that every command answers what we expect, then
run redis-benchmark (pinned to the other core) on each command, ROUNDS times, rotating the
order every round. Per round we compute each ratio against the baseline measured in that
same round, and report the median over the rounds.

Exit status: 0 whatever the PASS/FAIL verdicts; non-zero only when the harness breaks.
"""

import argparse
import csv
import io
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time

from resp import Conn, RespError

VALUE = "v" * 56 + "-64bytes"  # exactly 64 bytes, used by every command
VALUE_B = VALUE.encode()
assert len(VALUE_B) == 64

# Lua equivalent of CACHE.GETX: the same XFetch decision over a hash, decided server-side.
# Kept as lean as we could make it (it is the baseline the module is measured against).
# Fields: v, fresh_until (ms), grace (ms), delta (ms), lease (token), lease_until (ms),
# next_token. KEYS[1] = entry; ARGV[1] = beta (default 1); ARGV[2] = lease ms (default 5000).
# Reply: {value or nil, status, token or nil}, like CACHE.GETX.
LUA_XFETCH = r"""
local h = redis.call('HMGET', KEYS[1], 'v', 'fresh_until', 'grace', 'delta', 'lease_until')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local v, fu = h[1], tonumber(h[2])
local leased = h[5] and tonumber(h[5]) > now
local status
if v and now < fu then
  -- XFetch: chosen when now - delta * beta * ln(U) >= fresh_until, U uniform in (0, 1]
  if leased or now - (tonumber(h[4]) or 0) * (tonumber(ARGV[1]) or 1) * math.log(1 - math.random()) < fu then
    return {v, 'HIT', false}
  end
  status = 'REFRESH'
elseif v and now < fu + (tonumber(h[3]) or 0) then
  if leased then return {v, 'STALE', false} end
  status = 'STALE'
else
  if leased then return {false, 'LOCKED', false} end
  v, status = false, 'MISS'
end
local tok = redis.call('HINCRBY', KEYS[1], 'next_token', 1)
redis.call('HSET', KEYS[1], 'lease', tok, 'lease_until', now + (tonumber(ARGV[2]) or 5000))
return {v, status, tok}
"""

# The client-side tag recipe (Laravel, Symfony's RedisTagAwareAdapter) in one script: the value
# with its TTL, and the key added to one set per tag. KEYS[1] = entry; ARGV = value, px, tags.
LUA_TAGSET = r"""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, #ARGV do
  redis.call('SADD', 'tag:' .. ARGV[i], KEYS[1])
end
return 1
"""

# The client-side write-behind recipe (rgsync's, Redisson's in one script): the value, a
# version, and the event in a stream. KEYS[1] = entry, KEYS[2] = queue; ARGV = value.
LUA_WBQUEUE = r"""
local t = redis.call('TIME')
local ver = redis.call('INCR', 'wb:version')
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'op', 'set', 'key', KEYS[1], 'value', ARGV[1],
  'version', ver, 'ms', t[1] * 1000 + math.floor(t[2] / 1000))
return ver
"""

# Lua equivalent of CACHE.SET key value PX ms: a new version, the value, its freshness and
# grace, any lease revoked (lease_until 0), key TTL = px + grace. Without a delta argument
# the previous delta is kept. KEYS[1] = entry; ARGV = value, px, grace, [delta].
# Reply: the new version.
LUA_SET = r"""
local px = tonumber(ARGV[2])
local grace = tonumber(ARGV[3]) or 0
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ver = redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[4] then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fresh_until', now + px, 'grace', grace, 'lease_until', 0, 'delta', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fresh_until', now + px, 'grace', grace, 'lease_until', 0)
end
redis.call('PEXPIRE', KEYS[1], px + grace)
return ver
"""


CHILD = [None]  # the running redis-benchmark, stopped when we are told to stop


def on_signal(signum, frame):
    p = CHILD[0]
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()
    sys.exit(128 + signum)


def die(msg):
    print("bench: " + msg, file=sys.stderr)
    sys.exit(2)


def fmt_rps(x):
    return "{:,.0f}".format(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--module", default="none")
    ap.add_argument("--benchmark", default="redis-benchmark")
    ap.add_argument("--pin", default="", help="prefix for redis-benchmark, e.g. 'taskset -c 1'")
    ap.add_argument("--server-cmd", default="")
    ap.add_argument("--server-pid", type=int, default=0)
    opts = ap.parse_args()

    rounds = int(os.environ.get("ROUNDS", "5"))
    nreq = int(os.environ.get("N", "200000"))
    clients = int(os.environ.get("CLIENTS", "50"))
    pipeline = int(os.environ.get("PIPELINE", "16"))
    if rounds < 1 or nreq < 1:
        die("ROUNDS and N must be positive")
    have_module = opts.module != "none"

    c = Conn(opts.port)
    c.call("FLUSHALL")

    # ---- setup ---------------------------------------------------------------------------
    grace_default = 0
    if have_module:
        try:
            r = c.call("CONFIG", "GET", "cache.grace-ms")
            if r and len(r) == 2:
                grace_default = int(r[1])
        except (RespError, ValueError):
            pass
    sec, usec = c.call("TIME")
    now_ms = int(sec) * 1000 + int(usec) // 1000

    c.call("SET", "k:str", VALUE)
    c.call("HSET", "k:lua", "v", VALUE, "fresh_until", now_ms + 3600000, "delta", 1, "grace", 0)
    sha_x = c.call("SCRIPT", "LOAD", LUA_XFETCH).decode()
    sha_s = c.call("SCRIPT", "LOAD", LUA_SET).decode()
    sha_t = c.call("SCRIPT", "LOAD", LUA_TAGSET).decode()
    sha_w = c.call("SCRIPT", "LOAD", LUA_WBQUEUE).decode()
    if have_module:
        try:
            v = c.call("CACHE.SET", "k:cache", VALUE, "EX", 3600, "DELTA", 1)
        except RespError as e:
            die("CACHE.SET setup failed: %s" % e)
        if not isinstance(v, int):
            die("CACHE.SET answered %r, expected an integer version" % (v,))
        # The queues grow by every run's events: no backpressure in a benchmark.
        c.call("CONFIG", "SET", "cache.wb-max-len", "1000000000000")

    # ---- the commands --------------------------------------------------------------------
    # (id, label for the table, argv)
    cmds = [
        ("get", "`GET k:str`", ["GET", "k:str"]),
        ("cget", "`CACHE.GET k:cache`", ["CACHE.GET", "k:cache"]),
        ("getx", "`CACHE.GETX k:cache` (HIT)", ["CACHE.GETX", "k:cache"]),
        ("luax", "`EVALSHA` XFetch over a hash", ["EVALSHA", sha_x, "1", "k:lua", "1"]),
        ("set", "`SET k:str2 v PX 60000`", ["SET", "k:str2", VALUE, "PX", "60000"]),
        ("cset", "`CACHE.SET k:cache2 v PX 60000`", ["CACHE.SET", "k:cache2", VALUE, "PX", "60000"]),
        ("luas", "`EVALSHA` SET over a hash", ["EVALSHA", sha_s, "1", "k:lua2", VALUE, "60000", str(grace_default)]),
        ("ctag", "`CACHE.TAGSET k:tag v PX 60000 TAGS t1 t2 t3`",
         ["CACHE.TAGSET", "k:tag", VALUE, "PX", "60000", "TAGS", "t1", "t2", "t3"]),
        ("luat", "`EVALSHA` `SET PX` + 3 `SADD`", ["EVALSHA", sha_t, "1", "k:luatag", VALUE, "60000", "t1", "t2", "t3"]),
        ("cwbq", "`CACHE.WBQUEUE k:wb v`", ["CACHE.WBQUEUE", "k:wb", VALUE]),
        ("luaw", "`EVALSHA` `SET` + `XADD`", ["EVALSHA", sha_w, "2", "k:luawb", "lua:wb", VALUE]),
    ]
    if not have_module:
        cmds = [x for x in cmds if not x[2][0].startswith("CACHE.")]
    by_id = {x[0]: x for x in cmds}

    # ---- check every command answers what we expect before timing it ---------------------
    def expect(cid, ok, what):
        argv = by_id[cid][2]
        try:
            r = c.call(*argv)
        except RespError as e:
            die("%s answered an error: %s" % (argv[0], e))
        if not ok(r):
            die("%s answered %r, expected %s" % (" ".join(map(str, argv[:2])), r, what))

    hit = lambda r: isinstance(r, list) and len(r) == 3 and r[0] == VALUE_B and r[1] in (b"HIT", "HIT") and r[2] is None
    expect("get", lambda r: r == VALUE_B, "the value")
    expect("luax", hit, "[value, HIT, nil]")
    expect("set", lambda r: r == "OK", "OK")
    expect("luas", lambda r: isinstance(r, int), "an integer version")
    expect("luat", lambda r: r == 1, "1")
    expect("luaw", lambda r: isinstance(r, int), "an integer version")
    if have_module:
        expect("ctag", lambda r: isinstance(r, int), "an integer version")
        expect("cget", lambda r: r == VALUE_B, "the value")
        expect("getx", hit, "[value, HIT, nil]")
        expect("cset", lambda r: isinstance(r, int), "an integer version")
        expect("cwbq", lambda r: isinstance(r, list) and len(r) == 2 and isinstance(r[0], int),
               "[version, stream-id]")

    pin = shlex.split(opts.pin)
    base = pin + [opts.benchmark, "-h", "127.0.0.1", "-p", str(opts.port),
                  "-P", str(pipeline), "-c", str(clients), "-q", "--csv"]

    def run_one(argv, n):
        full = base + ["-n", str(n)] + argv
        p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        CHILD[0] = p
        try:
            stdout, stderr = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            die("redis-benchmark timed out on %s" % argv[0])
        finally:
            CHILD[0] = None
        rows = list(csv.reader(io.StringIO(stdout.decode(errors="replace"))))
        rps = None
        if len(rows) >= 2 and "rps" in rows[0]:
            try:
                rps = float(rows[1][rows[0].index("rps")])
            except (ValueError, IndexError):
                rps = None
        if p.returncode != 0 or rps is None or rps <= 0:
            die("redis-benchmark failed on %s (rc=%d):\n%s%s" % (
                argv[0], p.returncode, stdout.decode(errors="replace"),
                stderr.decode(errors="replace")))
        return rps

    def server_alive():
        if opts.server_pid:
            try:
                os.kill(opts.server_pid, 0)
            except OSError:
                return False
        return True

    # ---- warm-up (not counted) -----------------------------------------------------------
    t0 = time.time()
    print("# warm-up: each command once with -n %d" % max(1000, nreq // 10), flush=True)
    for cid, label, argv in cmds:
        run_one(argv, max(1000, nreq // 10))

    # ---- rounds --------------------------------------------------------------------------
    # The unit of measurement is a pair (candidate, baseline) run back to back, so that both
    # see the same machine state; a ratio is only ever taken within a pair. Every round runs
    # every pair once; the pair order rotates each round and the order inside a pair flips.
    checks = [
        # (name, candidate, baseline, bar)
        ("`CACHE.GET` / `GET`", "cget", "get", 0.85),
        ("`CACHE.GETX` (HIT) / `GET`", "getx", "get", 0.75),
        ("`CACHE.GETX` (HIT) / Lua XFetch", "getx", "luax", 3.0),
        ("`CACHE.SET` / `SET ... PX`", "cset", "set", 0.75),
        ("`CACHE.SET` / Lua SET", "cset", "luas", None),
        ("`CACHE.TAGSET` (3 tags) / Lua `SET PX` + 3 `SADD`", "ctag", "luat", 2.0),
        ("`CACHE.WBQUEUE` / Lua `SET` + `XADD`", "cwbq", "luaw", 2.0),
    ]
    if not have_module:  # harness check: the Lua scripts against the native commands
        checks += [
            ("Lua XFetch / `GET`", "luax", "get", None),
            ("Lua SET / `SET ... PX`", "luas", "set", None),
        ]
    pairs = [ck for ck in checks if ck[1] in by_id and ck[2] in by_id]
    results = {cid: [] for cid, _, _ in cmds}
    pair_ratios = {ck[0]: [] for ck in pairs}
    for r in range(rounds):
        k = r % len(pairs)
        order = pairs[k:] + pairs[:k]
        line = []
        for i, (name, a, b, bar) in enumerate(order):
            seq = (a, b) if (r + i) % 2 == 0 else (b, a)
            got = {}
            for cid in seq:
                argv = by_id[cid][2]
                got[cid] = run_one(argv, nreq)
                if not server_alive():
                    die("redis-server died during %s" % argv[0])
                results[cid].append(got[cid])
            pair_ratios[name].append(got[a] / got[b])
            line.append("%s/%s=%.2f" % (a, b, got[a] / got[b]))
        print("# round %d/%d: %s" % (r + 1, rounds, "  ".join(line)), flush=True)
    elapsed = time.time() - t0

    # ---- the commands must still have answered as intended (no refresh, no lease) ---------
    notes = []
    try:
        if have_module:
            r = c.call("CACHE.GETX", "k:cache")
            if not hit(r):
                notes.append("after the runs CACHE.GETX k:cache answered %r (expected HIT)" % (r,))
        r = c.call("EVALSHA", sha_x, "1", "k:lua", "1")
        if not hit(r):
            notes.append("after the runs the Lua XFetch answered %r (expected HIT)" % (r,))
        if c.call("HEXISTS", "k:lua", "lease_until"):
            notes.append("the Lua XFetch granted an early-refresh lease during the runs")
        try:
            info = c.call("INFO", "cache")
            if isinstance(info, bytes):
                for ln in info.decode(errors="replace").splitlines():
                    if "refresh" in ln and ":" in ln and not ln.startswith("#"):
                        name, val = ln.split(":", 1)
                        if val.strip() not in ("0", ""):
                            notes.append("INFO cache: %s" % ln.strip())
        except RespError:
            pass
        redis_version = ""
        for ln in c.call("INFO", "server").decode(errors="replace").splitlines():
            if ln.startswith("redis_version:"):
                redis_version = ln.split(":", 1)[1].strip()
    except (RespError, OSError) as e:
        die("server check after the runs failed: %s" % e)
    c.close()

    # ---- report --------------------------------------------------------------------------
    med = {cid: statistics.median(v) for cid, v in results.items() if v}

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"

    out = []
    out.append("")
    out.append("## Benchmark results")
    out.append("")
    out.append("Machine: %s, nproc %d, %s, %s; redis-server %s; load average before report %s." % (
        platform.node() or "?", os.cpu_count() or 0, cpu or "cpu ?", platform.machine(),
        redis_version or "?", load))
    out.append("%d rounds; a round runs every (command, baseline) pair back to back, pair order "
               "rotated and order within a pair flipped each round; %d requests per run, "
               "%d clients, pipeline %d, %d-byte values; %.0f s in all." % (
                   rounds, nreq, clients, pipeline, len(VALUE_B), elapsed))
    out.append("A ratio is taken within a pair; the table shows the median over the rounds "
               "(and the min-max). Rps are over every run of the command.")
    out.append("")
    out.append("| Command | Median rps | Min rps | Max rps |")
    out.append("|---|---:|---:|---:|")
    for cid, label, _ in cmds:
        if results[cid]:
            out.append("| %s | %s | %s | %s |" % (label, fmt_rps(med[cid]), fmt_rps(min(results[cid])),
                                                 fmt_rps(max(results[cid]))))
    out.append("")
    out.append("| Ratio | Median | Range | Bar | Result |")
    out.append("|---|---:|---:|---:|---|")
    verdicts = []
    for name, a, b, bar in checks:
        rs = pair_ratios.get(name)
        if not rs:
            out.append("| %s | n/a | | %s | n/a (module not loaded) |" % (
                name, ">= %.2fx" % bar if bar else "-"))
            continue
        m = statistics.median(rs)
        if bar is None:
            res, bar_s = "(info)", "-"
        else:
            res = "PASS" if m >= bar else "FAIL"
            bar_s = ">= %.2fx" % bar
            verdicts.append((name, res))
        out.append("| %s | %.2fx | %.2f-%.2f | %s | %s |" % (name, m, min(rs), max(rs), bar_s, res))
    out.append("")
    if notes:
        out.append("Notes:")
        for n in notes:
            out.append("- " + n)
        out.append("")
    out.append("Command lines:")
    out.append("")
    out.append("```")
    env = "ROUNDS=%d N=%d CLIENTS=%d PIPELINE=%d" % (rounds, nreq, clients, pipeline)
    out.append("%s bash bench/run        # MODULE=%s" % (env, opts.module))
    if opts.server_cmd:
        out.append(opts.server_cmd.strip())
    for cid, label, argv in cmds:
        shown = [("<64-byte value>" if a == VALUE else a) for a in argv]
        out.append(" ".join(shlex.quote(x) for x in (base + ["-n", str(nreq)])) + " " +
                   " ".join(shlex.quote(x) if x != "<64-byte value>" else x for x in shown))
    out.append("```")
    out.append("")
    out.append("`<64-byte value>` is the literal `%s`." % VALUE)
    out.append("")
    print("\n".join(out))

    if verdicts:
        print("Verdict: " + ", ".join("%s %s" % (r, n.replace("`", "")) for n, r in verdicts))
    else:
        print("Verdict: no module loaded, no bars checked")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sys.exit(main())
    except (ConnectionError, OSError, RespError) as e:
        die("error: %s" % e)
