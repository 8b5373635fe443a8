"""Write-behind end-to-end lag: `CACHE.WBQUEUE` at a steady rate (default 10,000 events/s for
10 s, every event a key of its own so the worker coalesces nothing away) against a server
with the module, `redis-cache-worker` draining into SQLite, and this script watching the table:
the lag of an event is from its `WBQUEUE` reply to the moment its row is seen committed.
Prints p50/p99/p99.9/max and the rate really sent (standard library only: sqlite3, socket)."""

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from resp import Conn, RespError


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--worker", required=True, help="path of redis-cache-worker")
    opts = ap.parse_args()
    rate = int(os.environ.get("WBLAG_RATE", "10000"))
    seconds = float(os.environ.get("WBLAG_SECONDS", "10"))
    tmp = tempfile.mkdtemp(prefix="wblag.")
    db = os.path.join(tmp, "cache.db")
    c = Conn(opts.port)
    c.call("CONFIG", "SET", "cache.wb-max-len", "100000000")
    c.call("CACHE.WBQUEUE", "warmup", "v")  # the queue and its group exist before the worker
    log = open(os.path.join(tmp, "worker.log"), "w")
    worker = subprocess.Popen(
        [opts.worker, "--redis", "redis://127.0.0.1:%d" % opts.port, "--sqlite", db,
         "--progress-secs", "0"],
        stdout=subprocess.DEVNULL, stderr=log)
    try:
        # Wait for the table and the warm-up row: the worker is draining.
        deadline = time.time() + 30
        while True:
            try:
                con = sqlite3.connect(db, timeout=5)
                if con.execute("SELECT count(*) FROM cache_wb").fetchone()[0] >= 1:
                    break
                con.close()
            except sqlite3.Error:
                pass
            if time.time() > deadline:
                raise RuntimeError("the worker did not start draining")
            time.sleep(0.05)
        replied = {}  # version -> perf_counter of the reply
        seen = {}
        done = threading.Event()

        def watch():
            last = 0
            w = sqlite3.connect(db, timeout=5)
            while not done.is_set() or len(seen) < len(replied):
                rows = w.execute("SELECT version FROM cache_wb WHERE version > ?", (last,)).fetchall()
                now = time.perf_counter()
                for (v,) in rows:
                    seen.setdefault(v, now)
                    last = max(last, v)
                if done.is_set() and time.perf_counter() > stop_at[0] + 30:
                    break
                time.sleep(0.001)

        stop_at = [float("inf")]
        t = threading.Thread(target=watch)
        t.start()
        value = b"v" * 64
        batch = max(1, rate // 1000)  # a pipeline of this many every millisecond
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < seconds:
            due = start + sent / rate
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            for _ in range(batch):
                c.send("CACHE.WBQUEUE", "lag:%d" % sent, value)
                sent += 1
            for _ in range(batch):
                version, _ = c.read()
                replied[version] = time.perf_counter()
        elapsed = time.perf_counter() - start
        stop_at[0] = time.perf_counter()
        done.set()
        t.join()
        lags = [(seen[v] - r) * 1000 for v, r in replied.items() if v in seen]
        missing = len(replied) - len(lags)
        print("")
        print("## Write-behind end-to-end lag (`CACHE.WBQUEUE` reply to SQLite commit seen)")
        print("")
        print("%d events at %.0f events/s (asked %d/s), the worker with its defaults (batch 500):"
              % (len(replied), len(replied) / elapsed, rate))
        print("")
        print("| p50 | p99 | p99.9 | max | not seen |")
        print("|---:|---:|---:|---:|---:|")
        print("| %.1f ms | %.1f ms | %.1f ms | %.1f ms | %d |"
              % (pct(lags, 50), pct(lags, 99), pct(lags, 99.9), max(lags) if lags else 0, missing))
        print("")
        print("Command line: `BENCH_PARTS=wblag WBLAG_RATE=%d WBLAG_SECONDS=%g bash bench/run`"
              % (rate, seconds))
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
        c.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, OSError, RespError, RuntimeError) as e:
        print("bench: wblag: %s" % e, file=sys.stderr)
        sys.exit(2)
