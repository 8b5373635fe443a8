#!/usr/bin/env python3
"""The stampede lab (`make lab`): six cache strategies (and a plain hit for reference) against one
simulated database, in one run, on a redis-server of its own with the module loaded.

Scenarios:
  stampede     one hot key, --readers readers (one connection each) reading it in a loop at an
               aggregate --rate; recomputing takes --delta-ms; entries live --ttl-ms.
  consistency  --keys Zipf-popular keys; a writer updates the database (a version per key) and
               invalidates the key (DEL, or CACHE.DEL for the module's strategies) at random
               times while the readers fill: stale fills accepted, writes they undid, stale
               values served after an acknowledged invalidation.

Everything the lab reports about recomputes comes from the simulated database (bench/lab/sim.py),
not from the strategies. The client is one asyncio event loop in this process; its CPU share and
the loop's scheduling lag are reported beside the figures. Progress goes to stderr; the Markdown
report to stdout; PNG plots to --plots."""

import argparse
import asyncio
import gc
import os
import random
import signal
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))  # bench/: resp.py, stampede.py

import aresp  # noqa: E402
import report  # noqa: E402
import server as srv  # noqa: E402
import strategies  # noqa: E402
from sim import CpuMeter, Database, LoopLag, Writes, Zipf, value_version  # noqa: E402

ADMIN_COMMANDS = {"info", "config", "flushall", "script", "ping"}


def log(msg):
    print("lab: " + msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="lab.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("server")
    g.add_argument("--module", default=os.path.join(ROOT, "target/release/libredis_cache.so"),
                   help="the module to load (make build)")
    g.add_argument("--redis-server", default="redis-server", help="server binary")
    g.add_argument("--server-arg", action="append", default=[], metavar="'NAME VALUE'",
                   help="an extra redis-server argument, repeatable: 'cache.beta 2' becomes "
                        "--cache.beta 2 after --loadmodule")
    g.add_argument("--config", action="append", nargs=2, default=[], metavar=("NAME", "VALUE"),
                   help="CONFIG SET NAME VALUE once the server is up, repeatable")
    g.add_argument("--server-cpu", type=int, help="pin the server to this CPU (taskset)")
    g.add_argument("--client-cpu", type=int, help="pin this process to this CPU")
    g = ap.add_argument_group("workload")
    g.add_argument("--scenarios", default="stampede,consistency",
                   help="comma-separated: stampede, consistency")
    g.add_argument("--strategies", default=",".join(s.name for s in strategies.ALL),
                   help="comma-separated, in this order in the report")
    g.add_argument("--readers", type=int, default=200, help="concurrent readers (connections)")
    g.add_argument("--rate", type=float, default=10000, help="target reads/s, all readers")
    g.add_argument("--delta-ms", type=float, default=100, help="database recompute time")
    g.add_argument("--ttl-ms", type=int, default=2000, help="entry TTL")
    g.add_argument("--duration", type=float, default=20, help="seconds per strategy, stampede")
    g.add_argument("--consistency-duration", type=float, default=10,
                   help="seconds per strategy, consistency")
    g.add_argument("--keys", type=int, default=5, help="keys in the consistency scenario")
    g.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of key popularity")
    g.add_argument("--write-interval-ms", type=float, default=100,
                   help="mean time between the writer's updates (exponential), consistency")
    g = ap.add_argument_group("strategies' knobs")
    g.add_argument("--beta", type=float,
                   help="XFetch beta of the client and Lua strategies (default: the server's "
                        "cache.beta, which GETX uses)")
    g.add_argument("--poll-ms", type=float, default=50,
                   help="sleep before reading again: lock losers, GETX on LOCKED")
    g.add_argument("--lease-ms", type=int, default=5000,
                   help="the lock's PX, LOCKGET's PX (GETX: cache.lease-ms)")
    g.add_argument("--wait-ms", type=int, default=5000, help="LOCKGET's WAIT")
    g.add_argument("--refresh", choices=["background", "inline"], default="background",
                   help="a reader chosen to refresh early while it has a value: serve it and "
                        "refresh in the background, or refresh first")
    g = ap.add_argument_group("output")
    g.add_argument("--plots", default=os.path.join(HERE, "out"), help="directory for the PNGs")
    g.add_argument("--no-plots", action="store_true", help="no PNGs (no matplotlib needed)")
    g.add_argument("--seed", type=int, default=1, help="random seed of the client")
    opts = ap.parse_args(argv)
    opts.scenarios = [s for s in opts.scenarios.split(",") if s]
    opts.strategies = [s for s in opts.strategies.split(",") if s]
    for s in opts.scenarios:
        if s not in ("stampede", "consistency"):
            ap.error("unknown scenario %r" % s)
    for s in opts.strategies:
        if s not in strategies.BY_NAME:
            ap.error("unknown strategy %r (known: %s)" % (s, ", ".join(strategies.BY_NAME)))
    if opts.readers < 1 or opts.rate <= 0 or opts.delta_ms < 0 or opts.ttl_ms < 1:
        ap.error("--readers, --rate and --ttl-ms must be positive, --delta-ms >= 0")
    return opts


class Reads:
    """What the readers saw, in arrays (no per-read objects for the garbage collector)."""

    def __init__(self):
        self.lat_ms = array("d")
        self.key = array("i")
        self.t0 = array("d")
        self.ver = array("q")
        self.outcomes = {strategies.HIT: 0, strategies.WAITED: 0, strategies.COMPUTED: 0}
        self.errors = []

    def add(self, k, t0, t1, value, outcome):
        self.lat_ms.append((t1 - t0) * 1000.0)
        self.key.append(k)
        self.t0.append(t0)
        self.ver.append(value_version(value))
        self.outcomes[outcome] += 1


async def reader(strat, conn, keys, pick, interval, start, end, reads, rng):
    next_t = start + rng.uniform(0, interval)
    while next_t < end:
        now = time.perf_counter()
        if next_t > now:
            await asyncio.sleep(next_t - now)
        k = pick()
        t0 = time.perf_counter()
        try:
            value, outcome = await strat.read(conn, keys[k])
        except Exception as e:  # noqa: BLE001 -- counted and reported, the run goes on
            reads.errors.append(repr(e))
            if len(reads.errors) > 100:
                raise
            continue
        t1 = time.perf_counter()
        reads.add(k, t0, t1, value, outcome)
        next_t += interval
        if next_t < t1 - interval:  # more than a slot behind (a slow read): skip the missed
            next_t = t1


async def writer(strat, conn, keys, pick, db, writes, end, mean_s, rng, counter):
    while True:
        await asyncio.sleep(rng.expovariate(1.0 / mean_s))
        if time.perf_counter() >= end:
            return
        key = keys[pick()]
        ver = db.write(key)
        await strat.invalidate(conn, key)
        writes.acked(key, time.perf_counter(), ver)
        counter[0] += 1


async def server_counters(admin):
    """Commands the server ran (INFO commandstats, admin commands left out), its CPU seconds,
    and the module's cache_lockget_waits."""
    cmds = 0
    for ln in (await admin.call("INFO", "commandstats")).decode().splitlines():
        if ln.startswith("cmdstat_"):
            name, rest = ln[len("cmdstat_"):].split(":", 1)
            if name.split("|")[0] not in ADMIN_COMMANDS:
                cmds += int(rest.split("calls=", 1)[1].split(",", 1)[0])
    info = {}
    for section in ("cpu", "cache"):
        for ln in (await admin.call("INFO", section)).decode().splitlines():
            if ":" in ln:
                k, v = ln.split(":", 1)
                info[k] = v
    cpu = float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))
    return cmds, cpu, int(info.get("cache_lockget_waits", 0))


async def run_phase(scenario, cls, opts, conns, admin, wconn, rng):
    """One strategy in one scenario; the figures of the phase."""
    db = Database(opts.delta_ms)
    ctx = strategies.Ctx(db, opts)
    strat = cls(ctx)
    await admin.call("FLUSHALL")
    await strat.setup(admin)
    nkeys = 1 if scenario == "stampede" else opts.keys
    keys = ["lab:%s:%s:%d" % (scenario, cls.name, i) for i in range(nkeys)]
    for key in keys:  # a warm start: the harness fills every key once, not counted
        await strat.prefill(admin, key, await db.recompute(key))
    duration = opts.duration if scenario == "stampede" else opts.consistency_duration
    zipf = Zipf(nkeys, opts.zipf, rng)
    writes, nwrites = Writes(), [0]
    reads = Reads()
    ctx.fills = []
    await admin.call("CONFIG", "RESETSTAT")
    _, cpu0_srv, waits0 = await server_counters(admin)
    sent0 = sum(c.sent for c in conns)
    lag = LoopLag()
    lag.start()
    db.reset_stats()
    cpu = CpuMeter()
    start = time.perf_counter() + 0.02
    end = start + duration
    interval = opts.readers / opts.rate
    tasks = [reader(strat, c, keys, zipf.pick, interval, start, end, reads, rng) for c in conns]
    if scenario == "consistency":
        tasks.append(writer(strat, wconn, keys, zipf.pick, db, writes, end,
                            opts.write_interval_ms / 1000.0, rng, nwrites))
    await asyncio.gather(*tasks)
    await ctx.drain()
    wall = time.perf_counter() - start
    client_cpu = cpu.share()
    lags = sorted(await lag.stop())
    cmds, cpu1_srv, waits1 = await server_counters(admin)
    nreads = len(reads.lat_ms)
    res = {
        "scenario": scenario, "strategy": cls.name, "label": cls.label, "keys": keys,
        "reads": nreads, "wall": wall, "duration": duration,
        "lat": sorted(reads.lat_ms), "outcomes": dict(reads.outcomes),
        "recomputes": sum(db.recomputes.values()), "hot_recomputes": db.recomputes[keys[0]],
        "max_in_flight": db.max_in_flight, "timeline": db.timeline,
        "client_sent": sum(c.sent for c in conns) - sent0,
        "server_cmds": cmds - nwrites[0],  # the writer's invalidations are not reads' work
        "server_cpu": (cpu1_srv - cpu0_srv) / wall, "lockget_waits": waits1 - waits0,
        "client_cpu": client_cpu, "lags": lags, "writes": nwrites[0],
        "errors": reads.errors + ctx.errors, "fills": len(ctx.fills),
        "fills_refused": sum(1 for f in ctx.fills if not f[3]),
    }
    if scenario == "consistency":
        res.update(consistency(keys, ctx.fills, reads, writes))
    return res


def consistency(keys, fills, reads, writes):
    """Stale fills the server accepted after the invalidation that made them stale was
    acknowledged (sent after the ack: surely stored after it), the writes they undid, and the
    reads that began after an acknowledged invalidation and were served an older version."""
    stale, undone = 0, set()
    for key, ver, t_sent, stored in fills:
        newest = writes.latest_before(key, t_sent)
        if stored and newest > ver:
            stale += 1
            undone.add((key, newest))
    stale_reads = sum(1 for i in range(len(reads.t0))
                      if writes.latest_before(keys[reads.key[i]], reads.t0[i]) > reads.ver[i])
    return {"stale_fills": stale, "undone": len(undone), "stale_reads": stale_reads}


async def lab(opts, server):
    admin = await aresp.connect(server.port)
    for name, value in opts.config:
        await admin.call("CONFIG", "SET", name, value)
    configs = await admin.call("CONFIG", "GET", "cache.*")
    configs = dict(zip(configs[::2], configs[1::2]))
    if opts.beta is None:
        opts.beta = float(configs.get(b"cache.beta", b"1"))
    wconn = await aresp.connect(server.port)
    log("opening %d reader connections" % opts.readers)
    conns = await aresp.connect_many(server.port, opts.readers)
    gc.collect()
    gc.freeze()  # what exists now is never collected: shorter collector pauses during runs
    rng = random.Random(opts.seed)
    results = []
    for scenario in opts.scenarios:
        for name in opts.strategies:
            cls = strategies.BY_NAME[name]
            if scenario not in cls.scenarios:
                continue
            d = opts.duration if scenario == "stampede" else opts.consistency_duration
            log("%s / %s: %.0f s ..." % (scenario, name, d))
            res = await run_phase(scenario, cls, opts, conns, admin, wconn, rng)
            results.append(res)
            log("%s / %s: %s" % (scenario, name, report.progress_line(res)))
            if res["errors"]:
                log("  %d errors, first: %s" % (len(res["errors"]), res["errors"][0]))
    for c in conns + [admin, wconn]:
        c.close()
    return results, {k.decode(): v.decode() for k, v in configs.items()}


def main(argv=None):
    opts = parse_args(argv)
    if opts.client_cpu is not None:
        os.sched_setaffinity(0, {opts.client_cpu})
    server = srv.Server(opts.redis_server, opts.module, opts.server_arg, opts.server_cpu)

    got = [signal.SIGINT]

    def stop(signum, _frame):
        got[0] = signum
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, stop)
    t0 = time.time()
    try:
        server.start()
        log("%s on 127.0.0.1:%d" % (srv.version(opts.redis_server), server.port))
        results, configs = asyncio.run(lab(opts, server))
    except KeyboardInterrupt:
        log("interrupted; stopping the server")
        return 128 + got[0]
    except (RuntimeError, OSError, ConnectionError) as e:
        log("error: %s" % e)
        return 2
    finally:
        server.cleanup()
    meta = {"server": srv.version(opts.redis_server), "command": server.command_line(),
            "configs": configs, "argv": " ".join(sys.argv[1:]), "elapsed": time.time() - t0,
            "cpus": os.cpu_count()}
    print(report.markdown(results, opts, meta), flush=True)
    if not opts.no_plots:
        for path in report.plots(results, opts.plots):
            log("wrote " + path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
