"""The lab's simulated database and its honest meters.

The database is the only place where recomputes are counted: a recompute is an `await` of
`delta` ms of sleep (no CPU), and every one that starts is counted, with the number in flight
over time. Each value it returns names its key's database version and a fill sequence number,
so what a reader is served can be traced back to the recompute that produced it."""

import asyncio
import bisect
import collections
import itertools
import time

VALUE_PAD = b"x" * 48


def value_version(value):
    """The database version a value was computed from (`v<version>|f<fill>|...`)."""
    return int(value[1:value.index(b"|")])


def value_fill(value):
    """The recompute (fill sequence number) that produced a value."""
    i = value.index(b"|") + 2
    return int(value[i:value.index(b"|", i)])


class Database:
    def __init__(self, delta_ms):
        self.delta = delta_ms / 1000.0
        self.version = collections.Counter()  # key -> current version (0 at the start)
        self.seq = itertools.count(1)
        self.t0 = time.perf_counter()
        self.reset_stats()

    def reset_stats(self):
        """Forget what was counted so far (the harness's own prefill is not the strategy's)."""
        self.t0 = time.perf_counter()
        self.recomputes = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.timeline = [(0.0, self.in_flight)]  # (seconds since t0, recomputes in flight)
        self.started = {}  # fill seq -> perf_counter when its recompute started

    def _mark(self):
        self.timeline.append((time.perf_counter() - self.t0, self.in_flight))

    async def recompute(self, key):
        """The value of `key` as the database has it when the query starts, after `delta`."""
        seq = next(self.seq)
        self.started[seq] = time.perf_counter()
        self.recomputes[key] += 1
        ver = self.version[key]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._mark()
        try:
            await asyncio.sleep(self.delta)
        finally:
            self.in_flight -= 1
            self._mark()
        return b"v%d|f%d|" % (ver, seq) + VALUE_PAD

    def write(self, key):
        """An update of `key`'s row: its new version."""
        self.version[key] += 1
        return self.version[key]


class Writes:
    """The invalidations the writer had acknowledged, per key: (ack instant, version)."""

    def __init__(self):
        self.acks = collections.defaultdict(lambda: ([], []))

    def acked(self, key, t, ver):
        times, vers = self.acks[key]
        times.append(t)
        vers.append(ver)

    def latest_before(self, key, t):
        """The newest version whose invalidation was acknowledged before instant t, or 0."""
        times, vers = self.acks.get(key, ((), ()))
        i = bisect.bisect_left(times, t)
        return vers[i - 1] if i else 0


class Zipf:
    """Key indices 0..n-1 with P(i) proportional to 1 / (i + 1) ** s."""

    def __init__(self, n, s, rng):
        weights = [1.0 / (i + 1) ** s for i in range(n)]
        total = sum(weights)
        self.cum = list(itertools.accumulate(w / total for w in weights))
        self.rng = rng

    def pick(self):
        return min(bisect.bisect_left(self.cum, self.rng.random()), len(self.cum) - 1)

    def share(self, i):
        return self.cum[i] - (self.cum[i - 1] if i else 0.0)


class LoopLag:
    """A task that sleeps `interval` s again and again and records how late it wakes: the
    event loop's scheduling delay, which every latency the lab measures also carries."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.lags = []
        self.task = None

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lags.append((loop.time() - due) * 1000.0)

    def start(self):
        self.lags = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        return self.lags


class CpuMeter:
    """This process's CPU time (user + system, every thread) over wall time."""

    def __init__(self):
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def share(self):
        wall = time.perf_counter() - self.wall0
        return (time.process_time() - self.cpu0) / wall if wall > 0 else 0.0
