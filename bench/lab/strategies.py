"""The six stampede strategies the lab compares, and the plain hit they are measured against. Each one is a `read(conn, key)` returning
`(value, outcome)`: HIT (a value at once), WAITED (had to retry, poll or park until somebody
else's fill), COMPUTED (no value: this reader recomputed it before it had one). Every
recompute goes through the simulated database (`ctx.db.recompute`), which alone counts them;
every fill goes through `ctx.store`, which records what it stored and whether the server took
it. A reader that has a usable value and is chosen to refresh early uses the value and refreshes
in the background (`--refresh inline` makes it wait for its refresh instead)."""

import asyncio
import json
import math
import random
import time
import uuid

from sim import value_fill, value_version
from stampede import LUA_UNLOCK

HIT, WAITED, COMPUTED = "hit", "waited", "computed"

# XFetch over a JSON string {"v": value, "delta": ms, "expiry": unix ms}, decided in the server:
# the value and 1 when this caller is chosen to recompute early, else 0; nil on a miss.
# U = 1 - math.random() is uniform in (0, 1], as in the client's formula.
LUA_XFETCH_JSON = r"""
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local e = cjson.decode(raw)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
if now - e.delta * tonumber(ARGV[1]) * math.log(1 - math.random()) >= e.expiry then
  return {e.v, 1}
end
return {e.v, 0}
"""


class Ctx:
    """What the strategies share: the database, the knobs, and the record of every fill."""

    def __init__(self, db, opts):
        self.db = db
        self.ttl_ms = opts.ttl_ms
        self.lease_ms = opts.lease_ms
        self.wait_ms = opts.wait_ms
        self.poll_s = opts.poll_ms / 1000.0
        self.beta = opts.beta
        self.inline_refresh = opts.refresh == "inline"
        self.rng = random.Random(opts.seed)
        self.reset()

    def reset(self):
        self.fills = []       # (key, db version of the value, instant sent, stored by the server)
        self.fill_sent = {}   # fill seq -> instant its store was sent
        self.tasks = set()
        self.errors = []

    async def store(self, conn, key, value, *cmd):
        """Sends a fill; the reply (nil: refused)."""
        t = time.perf_counter()
        self.fill_sent[value_fill(value)] = t
        r = await conn.call(*cmd)
        self.fills.append((key, value_version(value), t, r is not None))
        return r

    async def refresh(self, work):
        """An early refresh by a reader that already has a value."""
        if self.inline_refresh:
            await work()
            return
        task = asyncio.get_running_loop().create_task(work())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task):
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))

    async def drain(self):
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


class Strategy:
    name = label = ""
    module = False  # needs the module's commands
    scenarios = ("stampede", "consistency")  # the scenarios it takes part in
    script = None   # a Lua script the strategy runs by EVALSHA self.sha

    def __init__(self, ctx):
        self.ctx = ctx
        self.db = ctx.db
        self.sha = None

    async def setup(self, conn):
        if self.script:
            self.sha = (await conn.call("SCRIPT", "LOAD", self.script)).decode()

    async def prefill(self, conn, key, value):
        await self.ctx.store(conn, key, value, "SET", key, value, "PX", self.ctx.ttl_ms)

    async def invalidate(self, conn, key):
        return await conn.call("DEL", key)

    async def read(self, conn, key):
        raise NotImplementedError


class Hit(Strategy):
    """Not a strategy: the floor. A plain `GET` of a value that never expires, on the same
    connections, in the same run, so that the others' tails can be set against a hit's under
    the same load (the bar for GETX: p99.9 within 2x of this)."""
    name, label = "hit", "reference: plain `GET` hit (no TTL, nothing expires)"
    scenarios = ("stampede",)

    async def prefill(self, conn, key, value):
        await self.ctx.store(conn, key, value, "SET", key, value)

    async def read(self, conn, key):
        v = await conn.call("GET", key)
        if v is not None:
            return v, HIT
        raise RuntimeError("the reference key %r is gone" % key)


class Naive(Strategy):
    name, label = "naive", "naive cache-aside (`GET`; miss: recompute, `SET PX`)"

    async def read(self, conn, key):
        v = await conn.call("GET", key)
        if v is not None:
            return v, HIT
        v = await self.db.recompute(key)
        await self.ctx.store(conn, key, v, "SET", key, v, "PX", self.ctx.ttl_ms)
        return v, COMPUTED


class Lock(Strategy):
    name, label = "lock", "`SET lock NX PX` + polling `GET`"
    script = LUA_UNLOCK

    async def read(self, conn, key):
        lock, waited, retry_lock = key + ":lock", False, 0.0
        while True:
            v = await conn.call("GET", key)
            if v is not None:
                return v, WAITED if waited else HIT
            if time.perf_counter() >= retry_lock:  # first miss, or the holder's lease is over
                me = uuid.uuid4().hex
                if await conn.call("SET", lock, me, "NX", "PX", self.ctx.lease_ms) == "OK":
                    v = await self.db.recompute(key)
                    await self.ctx.store(conn, key, v, "SET", key, v, "PX", self.ctx.ttl_ms)
                    await conn.call("EVALSHA", self.sha, 1, lock, me)  # compare-and-delete
                    return v, WAITED if waited else COMPUTED
                retry_lock = time.perf_counter() + self.ctx.lease_ms / 1000.0
            waited = True  # losers only GET again, as the tutorials' recipe does
            await asyncio.sleep(self.ctx.poll_s)


class XFetchClient(Strategy):
    name, label = "xfetch", "client XFetch (JSON value + delta + expiry, `SET PX`)"

    def entry(self, value, delta_ms):
        return json.dumps({"v": value.decode(), "delta": delta_ms,
                           "expiry": time.time() * 1000.0 + self.ctx.ttl_ms})

    async def fill(self, conn, key):
        t = time.perf_counter()
        v = await self.db.recompute(key)
        e = self.entry(v, (time.perf_counter() - t) * 1000.0)
        await self.ctx.store(conn, key, v, "SET", key, e, "PX", self.ctx.ttl_ms)
        return v

    async def prefill(self, conn, key, value):
        e = self.entry(value, self.db.delta * 1000.0)
        await self.ctx.store(conn, key, value, "SET", key, e, "PX", self.ctx.ttl_ms)

    async def lookup(self, conn, key):
        """(value or None, chosen to recompute early)."""
        raw = await conn.call("GET", key)
        if raw is None:
            return None, False
        e = json.loads(raw)
        now = time.time() * 1000.0
        u = 1.0 - self.ctx.rng.random()  # uniform in (0, 1]
        return e["v"].encode(), now - e["delta"] * self.ctx.beta * math.log(u) >= e["expiry"]

    async def read(self, conn, key):
        v, early = await self.lookup(conn, key)
        if v is None:
            return await self.fill(conn, key), COMPUTED
        if early:
            await self.ctx.refresh(lambda: self.fill(conn, key))
        return v, HIT


class XFetchLua(XFetchClient):
    name, label = "xfetch-lua", "XFetch in Lua (`EVALSHA` decides; JSON value, `SET PX`)"
    script = LUA_XFETCH_JSON

    async def lookup(self, conn, key):
        r = await conn.call("EVALSHA", self.sha, 1, key, repr(self.ctx.beta))
        if r is None:
            return None, False
        return r[0], r[1] == 1


class ModuleStrategy(Strategy):
    module = True

    async def prefill(self, conn, key, value):
        await self.ctx.store(conn, key, value, "CACHE.SET", key, value, "PX", self.ctx.ttl_ms,
                             "DELTA", int(self.db.delta * 1000))

    async def invalidate(self, conn, key):
        return await conn.call("CACHE.DEL", key)

    async def fill(self, conn, key, token):
        v = await self.db.recompute(key)
        await self.ctx.store(conn, key, v, "CACHE.SET", key, v, "PX", self.ctx.ttl_ms,
                             "TOKEN", token)
        return v

    async def answer(self, conn, key, reply, waited):
        """(value, outcome) for a reply that carries a value or a token, else None."""
        v, _status, token = reply
        if v is None and token is not None:  # MISS: we hold the fill lease
            return await self.fill(conn, key, token), WAITED if waited else COMPUTED
        if v is None:
            return None
        if token is not None:  # REFRESH, or STALE with the token
            await self.ctx.refresh(lambda: self.fill(conn, key, token))
        return v, WAITED if waited else HIT


class GetX(ModuleStrategy):
    name, label = "getx", "`CACHE.GETX` (+ `CACHE.SET ... TOKEN`)"

    async def read(self, conn, key):
        waited = False
        while True:
            got = await self.answer(conn, key, await conn.call("CACHE.GETX", key), waited)
            if got is not None:
                return got
            waited = True  # LOCKED: somebody else is computing it
            await asyncio.sleep(self.ctx.poll_s)


class LockGet(ModuleStrategy):
    name, label = "lockget", "`CACHE.LOCKGET ... WAIT` (+ `CACHE.SET ... TOKEN`)"

    async def read(self, conn, key):
        waited, t = False, time.perf_counter()
        while True:
            got = await self.answer(conn, key, await conn.call(
                "CACHE.LOCKGET", key, "PX", self.ctx.lease_ms, "WAIT", self.ctx.wait_ms), waited)
            if got is not None:
                v, outcome = got
                # Parked in the server: a HIT whose value was stored after we asked.
                if outcome == HIT and self.ctx.fill_sent.get(value_fill(v), 0) > t:
                    outcome = WAITED
                return v, outcome
            waited = True  # TIMEOUT: the wait ran out without a fill; ask again


ALL = [Hit, Naive, Lock, XFetchClient, XFetchLua, GetX, LockGet]
BY_NAME = {s.name: s for s in ALL}
