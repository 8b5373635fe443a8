#!/usr/bin/env python3
"""Stampede benchmark for redis-cache (started by bench/run; Python standard library only).

READERS readers (threads, one connection each) ask for one fresh key at the same instant; the
value takes RECOMPUTE_MS to recompute. Two recipes:

- polling, the lock recipe of common tutorials: GET k; on a miss SET k:lock <id> NX PX 5000;
  the winner recomputes, SET k value PX 60000, then releases the lock with a compare-and-delete
  EVAL (only if it still holds it); the losers sleep POLL_MS and GET k again until a hit.
- lockget: CACHE.LOCKGET k PX 5000 WAIT 5000; on MISS recompute and CACHE.SET k value PX 60000
  TOKEN t; everybody else is parked inside the server and woken with the value (HIT).

Per round and recipe: recomputes (both must be 1), the waiters' latency after the fill
(fill = just before the filler sends its SET; a waiter's instant = when it has the value),
the commands sent and the wall time. Rounds alternate the recipes; the report is the median of
each figure over the rounds.

Client-side latency is honest but includes Python's cost: all readers are threads of one
process pinned to one core, so 199 woken threads take turns on the GIL. Two references are
printed next to it: the socket-arrival latency (the kernel's receive timestamp, SO_TIMESTAMPNS,
i.e. when the reply reached the reader's socket, GIL-free) and the filler's own SET round trip.

Exit status: 0 whatever the PASS/FAIL verdicts; non-zero only when the harness breaks.
"""

import argparse
import os
import signal
import statistics
import sys
import threading
import time
import uuid

from resp import Conn, RespError

VALUE = "v" * 56 + "-64bytes"  # the same 64-byte value as bench.py
VALUE_B = VALUE.encode()

READERS = int(os.environ.get("STAMPEDE_READERS", "200"))
ROUNDS = int(os.environ.get("STAMPEDE_ROUNDS", "3"))
RECOMPUTE_MS = 100
POLL_MS = 50
LOCK_PX = 5000
WAIT_MS = 5000
VALUE_PX = 60000
P99_BAR_MS = 5.0

# Compare-and-delete: release the lock only while it still holds our id.
LUA_UNLOCK = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
              "return redis.call('DEL', KEYS[1]) else return 0 end")

def status_of(reply):
    """The status word of a GETX/LOCKGET reply (a simple or a bulk string)."""
    s = reply[1]
    return s.decode() if isinstance(s, bytes) else s


def pct(sorted_xs, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, -(-len(sorted_xs) * p // 100) - 1))
    return sorted_xs[int(k)]


class Round:
    """Shared state of one stampede: the fill instant and what every reader saw."""

    def __init__(self, key, readers):
        self.key = key
        self.lock = threading.Lock()
        self.fill_pc = None      # perf_counter just before the filler sent its SET
        self.fill_rt_ns = None   # the same instant, CLOCK_REALTIME ns (for kernel stamps)
        self.fills = 0
        self.filler_rtt = []     # the filler's SET round trip (s)
        self.filler_kts = None   # kernel receive time of the filler's SET reply
        self.got = []            # per waiter: (perf_counter at value, kernel receive ns, first_try)
        self.errors = []
        self.left = readers      # readers not finished yet
        self.t_last = None       # perf_counter when the last reader finished
        self.all_done = threading.Event()
        self.release = threading.Event()  # finished readers park on it until the round ends

    def mark_fill(self):
        with self.lock:
            self.fills += 1
            if self.fill_pc is None:  # the first fill is the one the waiters can see
                self.fill_rt_ns = time.time_ns()
                self.fill_pc = time.perf_counter()
            return time.perf_counter()

    def has_value(self, c, first_try):
        """A waiter has the value: the instant its recv returned the reply's first bytes."""
        self.got.append((c.rx_pc, c.kts_ns, first_try))

    def finished(self):
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.t_last = time.perf_counter()
                self.all_done.set()


def recipe_polling(c, rd, idx):
    key, lock_key = rd.key, rd.key + ":lock"
    me = "%s-%d" % (uuid.uuid4().hex[:8], idx)
    if c.call("GET", key) is not None:
        rd.has_value(c, True)
        return
    if c.call("SET", lock_key, me, "NX", "PX", LOCK_PX) == "OK":
        time.sleep(RECOMPUTE_MS / 1000.0)
        t0 = rd.mark_fill()
        r = c.call("SET", key, VALUE, "PX", VALUE_PX)
        rd.filler_rtt.append(time.perf_counter() - t0)
        rd.filler_kts = c.kts_ns
        if r != "OK":
            raise RuntimeError("SET answered %r" % (r,))
        c.call("EVAL", LUA_UNLOCK, 1, lock_key, me)
        return
    deadline = time.perf_counter() + 2 * LOCK_PX / 1000.0
    while time.perf_counter() < deadline:
        time.sleep(POLL_MS / 1000.0)
        if c.call("GET", key) is not None:
            rd.has_value(c, False)
            return
    raise RuntimeError("poller gave up after %d ms" % (2 * LOCK_PX))


def recipe_lockget(c, rd, idx):
    r = c.call("CACHE.LOCKGET", rd.key, "PX", LOCK_PX, "WAIT", WAIT_MS)
    if not (isinstance(r, list) and len(r) == 3):
        raise RuntimeError("LOCKGET answered %r" % (r,))
    status = status_of(r)
    if status in ("HIT", "STALE", "REFRESH"):
        if r[0] != VALUE_B:
            raise RuntimeError("LOCKGET %s with value %r" % (status, r[0]))
        rd.has_value(c, False)
        return
    if status == "MISS":
        time.sleep(RECOMPUTE_MS / 1000.0)
        t0 = rd.mark_fill()
        v = c.call("CACHE.SET", rd.key, VALUE, "PX", VALUE_PX, "TOKEN", r[2])
        rd.filler_rtt.append(time.perf_counter() - t0)
        rd.filler_kts = c.kts_ns
        if not isinstance(v, int):
            raise RuntimeError("CACHE.SET TOKEN answered %r (fill refused)" % (v,))
        return
    # TIMEOUT (no fill within WAIT) or LOCKED (WAIT ignored): the harness is broken.
    raise RuntimeError("LOCKGET answered status %r" % (status,))


def reader(recipe, c, rd, barrier, idx):
    barrier.wait()
    try:
        recipe(c, rd, idx)
    except Exception as e:  # noqa: BLE001 -- reported by the main thread
        rd.errors.append("reader %d: %r" % (idx, e))
    finally:
        rd.finished()
    # Park (no CPU) instead of exiting, so that thread teardown does not compete with the
    # readers still being woken.
    rd.release.wait()


def run_round(port, recipe, tag):
    key = "stampede:%s:%s" % (recipe, tag)
    admin = Conn(port)
    admin.call("DEL", key, key + ":lock")
    rd = Round(key, READERS)
    conns = [Conn(port) for _ in range(READERS)]
    barrier = threading.Barrier(READERS + 1)
    fn = recipe_polling if recipe == "polling" else recipe_lockget
    threads = [threading.Thread(target=reader, args=(fn, conns[i], rd, barrier, i), daemon=True)
               for i in range(READERS)]
    for t in threads:
        t.start()
    while barrier.n_waiting < READERS:  # we arrive last: the start instant is the release
        time.sleep(0.001)
    t_start = time.perf_counter()
    barrier.wait()
    finished = rd.all_done.wait(timeout=2 * WAIT_MS / 1000.0 + 5)
    rd.release.set()
    for t in threads:
        t.join(timeout=5)
    if not finished:
        rd.errors.append("readers still running after %.0f s" % (time.perf_counter() - t_start))
    sent = sum(c.sent for c in conns)
    for c in conns:
        c.close()
    admin.call("DEL", key, key + ":lock")
    admin.close()
    if rd.errors:
        raise RuntimeError("%s round failed: %s" % (recipe, "; ".join(rd.errors[:5])))
    if rd.fill_pc is None:
        raise RuntimeError("%s round: nobody filled the key" % recipe)

    nan = float("nan")
    lat = sorted((t - rd.fill_pc) * 1000.0 for t, _, _ in rd.got)
    klat = sorted((k - rd.fill_rt_ns) / 1e6 for _, k, _ in rd.got if k is not None)
    if len(klat) != len(lat):  # no kernel timestamps here: leave the column empty
        klat = []
    return {
        "recomputes": rd.fills,
        "waiters": len(rd.got),
        "first_try": sum(1 for _, _, f in rd.got if f),
        "p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1] if lat else nan,
        "k_p50": pct(klat, 50), "k_p99": pct(klat, 99), "k_max": klat[-1] if klat else nan,
        "filler_ms": statistics.median(rd.filler_rtt) * 1000.0,
        "filler_k_ms": (rd.filler_kts - rd.fill_rt_ns) / 1e6 if rd.filler_kts else nan,
        "commands": sent,
        "wall_ms": (rd.t_last - t_start) * 1000.0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--module", default="none")
    opts = ap.parse_args()
    if READERS < 2 or ROUNDS < 1:
        print("stampede: STAMPEDE_READERS must be >= 2 and STAMPEDE_ROUNDS >= 1", file=sys.stderr)
        return 2
    have_module = opts.module != "none"
    recipes = ["polling", "lockget"] if have_module else ["polling"]
    threading.stack_size(512 * 1024)

    c = Conn(opts.port)
    if have_module:  # the contract must hold before we time it
        k = "stampede:check:" + uuid.uuid4().hex
        r = c.call("CACHE.LOCKGET", k, "PX", 1000)
        if not (isinstance(r, list) and len(r) == 3 and status_of(r) == "MISS"
                and isinstance(r[2], int)):
            raise RuntimeError("CACHE.LOCKGET on a fresh key answered %r" % (r,))
        if c.call("CACHE.RELEASE", k, r[2]) != 1:
            raise RuntimeError("CACHE.RELEASE of the lease did not answer 1")
        c.call("DEL", k)
    # Floor reference: a SET round trip from this process when nothing else runs.
    idle = []
    for _ in range(200):
        t = time.perf_counter()
        c.call("SET", "stampede:idle", VALUE, "PX", VALUE_PX)
        idle.append((time.perf_counter() - t) * 1000.0)
    c.call("DEL", "stampede:idle")
    idle.sort()
    c.close()
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []

    t0 = time.time()
    run_id = uuid.uuid4().hex[:8]
    # Warm-up (not counted): one stampede per recipe, so that the server's first use of the
    # commands and the process's first 200 threads are out of the way.
    for recipe in recipes:
        run_round(opts.port, recipe, "%s:warm" % run_id)
    per = {r: [] for r in recipes}
    for i in range(ROUNDS):
        order = recipes if i % 2 == 0 else recipes[::-1]
        line = []
        for recipe in order:
            res = run_round(opts.port, recipe, "%s:%d" % (run_id, i))
            per[recipe].append(res)
            line.append("%s: recomputes=%d p50=%.1f p99=%.1f max=%.1f socket-p99=%.1f ms "
                        "cmds=%d" % (recipe, res["recomputes"], res["p50"], res["p99"],
                                     res["max"], res["k_p99"], res["commands"]))
        print("# stampede round %d/%d: %s" % (i + 1, ROUNDS, "  ".join(line)), flush=True)
    elapsed = time.time() - t0

    def med(recipe, field):
        return statistics.median(x[field] for x in per[recipe])

    def ms(x, digits):
        return "n/a" if x != x else "%.*f" % (digits, x)  # x != x: NaN, no kernel stamps

    labels = {
        "polling": "`SET lock NX PX` + %d ms polling `GET`" % POLL_MS,
        "lockget": "`CACHE.LOCKGET ... WAIT`",
    }
    out = ["", "## Stampede: %d readers of one key, %d ms recompute" % (READERS, RECOMPUTE_MS), ""]
    out.append("%d rounds (recipes alternated, after one warm-up round each), median of each "
               "figure over the rounds; %.0f s in all. Readers are threads of one Python process "
               "(%s), one connection each, released together by a barrier on a fresh key. "
               "Latency after the fill = the instant a waiter's recv returns the value minus the "
               "instant just before the filler sends its SET. Idle SET round trip from this "
               "process: p50 %.2f ms, p99 %.2f ms." % (
                   ROUNDS, elapsed,
                   ("pinned to CPU %s" % ",".join(map(str, cpus))) if cpus else "unpinned",
                   pct(idle, 50), pct(idle, 99)))
    out.append("")
    out.append("| Recipe | Recomputes | Waiters | p50 ms | p99 ms | max ms | p50 ms at socket | "
               "p99 ms at socket | Filler SET RTT ms | Filler SET at socket ms | Commands | "
               "Wall ms |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for recipe in ["polling", "lockget"]:
        if recipe not in per:
            out.append("| %s | n/a (module not loaded) |%s" % (labels[recipe], " |" * 10))
            continue
        rec = [x["recomputes"] for x in per[recipe]]
        cells = [labels[recipe], "%d" % rec[0] if len(set(rec)) == 1 else "%g (%s)" % (
            statistics.median(rec), "/".join(map(str, rec))), "%d" % med(recipe, "waiters")]
        cells += [ms(med(recipe, f), 1) for f in ("p50", "p99", "max", "k_p50", "k_p99")]
        cells += [ms(med(recipe, f), 2) for f in ("filler_ms", "filler_k_ms")]
        cells += ["%d" % med(recipe, "commands"), "%.0f" % med(recipe, "wall_ms")]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("- *p50/p99 ms*: as the Python readers see it. All readers share one core and "
               "the GIL, so when the server wakes 199 of them at once each waits its turn to "
               "run: that queue is client cost, not server cost.")
    out.append("- *at socket*: the same figures from the kernel's receive timestamp of each "
               "waiter's reply (`SO_TIMESTAMPNS`; on loopback, when the server wrote it): "
               "delivery without the GIL queue.")
    out.append("- *Filler SET RTT*: the filler's own `SET` round trip in the reader (and when its "
               "reply reached the socket); with `LOCKGET` the server writes it after waking "
               "the waiters, and the filler thread queues for the GIL behind them. The idle "
               "round trip above is the floor.")
    out.append("- Polling: the lock is released with a compare-and-delete `EVAL` (DEL only while "
               "it still holds the filler's id). Commands counted: every `GET`, `SET`, `EVAL` "
               "each reader sent; LOCKGET: every `CACHE.LOCKGET` and the filler's "
               "`CACHE.SET ... TOKEN`. Wall: barrier release to the last reader done.")
    if "polling" in per and med("polling", "first_try"):
        out.append("- Polling waiters whose very first `GET` already found the value: %g "
                   "(median)." % med("polling", "first_try"))
    out.append("")

    verdicts = []
    for recipe in per:
        rec = [x["recomputes"] for x in per[recipe]]
        verdicts.append("%s %s recomputes == 1 (%s)" % (
            "PASS" if all(r == 1 for r in rec) else "FAIL", recipe, "/".join(map(str, rec))))
    if "lockget" in per:
        p99, kp99 = med("lockget", "p99"), med("lockget", "k_p99")
        verdicts.append("%s LOCKGET waiters' p99 after the fill < %.0f ms in the readers "
                        "(%.1f ms)" % ("PASS" if p99 < P99_BAR_MS else "FAIL", P99_BAR_MS, p99))
        if kp99 == kp99:  # not NaN
            verdicts.append("%s same at the socket (%.1f ms)" % (
                "PASS" if kp99 < P99_BAR_MS else "FAIL", kp99))
    else:
        verdicts.append("no module loaded, LOCKGET not measured")
    if "polling" in per:
        verdicts.append("(info) polling p50 %.1f ms, p99 %.1f ms with a %d ms poll interval" % (
            med("polling", "p50"), med("polling", "p99"), POLL_MS))
    out.append("Stampede verdict: " + ", ".join(verdicts))
    print("\n".join(out), flush=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(128 + s))
    signal.signal(signal.SIGINT, lambda s, f: os._exit(128 + s))
    try:
        sys.exit(main())
    except (ConnectionError, OSError, RespError, RuntimeError, threading.BrokenBarrierError) as e:
        print("stampede: error: %s" % e, file=sys.stderr)
        sys.exit(2)
