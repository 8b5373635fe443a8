"""A small asyncio RESP2 client for the stampede lab: one connection is an asyncio Protocol
(no reader task per connection: replies are parsed in `data_received`), commands may be in
flight concurrently on it (pipelined, answered in order). The wire format is bench/resp.py's
`encode` and `parse`."""

import asyncio
import collections

from resp import RespError, encode, parse


class AsyncConn(asyncio.Protocol):
    """One connection. `await conn.call(...)` sends a command and returns its reply (an error
    reply raises RespError). `sent` counts the commands sent on it."""

    def __init__(self):
        self.transport = None
        self.buf = b""
        self.waiting = collections.deque()  # futures of the replies still to come, in order
        self.sent = 0
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        pos = 0
        while self.waiting:
            r = parse(buf, pos)
            if r is None:
                break
            value, pos = r
            fut = self.waiting.popleft()
            if not fut.done():  # a cancelled caller: its reply is read and dropped
                fut.set_result(value)
        self.buf = buf[pos:]

    def connection_lost(self, exc):
        self.lost = exc or ConnectionError("server closed the connection")
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost: %s" % self.lost))

    async def call(self, *args):
        if self.lost is not None:
            raise ConnectionError("connection lost: %s" % self.lost)
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.sent += 1
        self.transport.write(encode(*args))
        value = await fut
        if isinstance(value, RespError):
            raise value
        return value

    def close(self):
        if self.transport is not None:
            self.transport.close()


async def connect(port, host="127.0.0.1"):
    _, conn = await asyncio.get_running_loop().create_connection(AsyncConn, host, port)
    return conn


async def connect_many(port, n, batch=100):
    """n connections, opened `batch` at a time (the server's accept backlog is finite)."""
    conns = []
    while len(conns) < n:
        k = min(batch, n - len(conns))
        conns.extend(await asyncio.gather(*(connect(port) for _ in range(k))))
    return conns
