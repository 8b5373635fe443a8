"""A minimal RESP2 client over a socket, shared by bench.py and stampede.py (standard library
only). For the last reply it records when our recv returned (`rx_pc`) and, on Linux, the
kernel's receive time (`kts_ns`), which the stampede benchmark reports. `encode` and `parse`
are the wire format alone, also used by the lab's asyncio client (bench/lab/aresp.py)."""

import socket
import struct
import sys
import time

# Linux: kernel receive timestamps (struct timespec of two C longs, CLOCK_REALTIME) with every
# recvmsg. 35 is SO_TIMESTAMPNS on Linux's common architectures (x86, arm, riscv); elsewhere
# the "at socket" columns stay empty.
STAMPS = sys.platform.startswith("linux")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@ll")
ANC_SIZE = socket.CMSG_SPACE(TIMESPEC.size)


class RespError(Exception):
    pass


def encode(*args):
    """One command as a RESP array of bulk strings (bytes, or anything str() spells)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def parse(buf, pos=0):
    """One reply from `buf` at `pos`: `(value, next_pos)`, or None while `buf` holds less than a
    whole reply. An error reply is returned as a RespError value (in an array too), not raised;
    a nil is `(None, next_pos)`."""
    i = buf.find(b"\r\n", pos)
    if i < 0:
        return None
    kind, rest, nxt = buf[pos:pos + 1], buf[pos + 1:i], i + 2
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            return None
        return buf[nxt:nxt + n], nxt + n + 2
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None, nxt
        out = []
        for _ in range(n):
            r = parse(buf, nxt)
            if r is None:
                return None
            out.append(r[0])
            nxt = r[1]
        return out, nxt
    if kind == b"+":
        return rest.decode(), nxt
    if kind == b":":
        return int(rest), nxt
    if kind == b"-":
        return RespError(rest.decode(errors="replace")), nxt
    raise ConnectionError("bad RESP line: %r" % buf[pos:i])


class Conn:
    """Minimal RESP2 client over a socket. For the last reply: `rx_pc` is the perf_counter
    instant our recv returned its first bytes, `kts_ns` the kernel's receive time of them
    (CLOCK_REALTIME ns), when the kernel gives it."""

    def __init__(self, port, timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stamps = STAMPS
        if self.stamps:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                self.stamps = False
        self.buf = b""
        self.pos = 0
        self.sent = 0  # commands sent on this connection
        self.kts_ns = None
        self.rx_pc = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        self.kts_ns = self.rx_pc = None
        self.sent += 1
        self.sock.sendall(encode(*args))

    def call(self, *args):
        self.send(*args)
        return self.read()

    def info_int(self, section, field, default=None):
        """An integer field of `INFO section`; `default` when absent (an error if None)."""
        for ln in self.call("INFO", section).decode().splitlines():
            if ln.startswith(field + ":"):
                return int(ln.split(":", 1)[1])
        if default is None:
            raise RespError("no %s in INFO %s" % (field, section))
        return default

    def load(self, n, make, batch=1000):
        """Sends the commands `make(i)` returns for i in range(n), pipelined in batches of
        about `batch`, reading (and discarding) every reply."""
        pending = []
        for i in range(n):
            pending.extend(make(i))
            if len(pending) >= batch or i == n - 1:
                for cmd in pending:
                    self.send(*cmd)
                for _ in pending:
                    self.read()
                pending = []

    def _more(self):
        data, anc, _, _ = self.sock.recvmsg(65536, ANC_SIZE if self.stamps else 0)
        if self.rx_pc is None:
            self.rx_pc = time.perf_counter()
        if not data:
            raise ConnectionError("server closed the connection")
        if self.kts_ns is None:
            for level, kind, payload in anc:
                if (level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                        and len(payload) >= TIMESPEC.size):
                    sec, nsec = TIMESPEC.unpack(payload[:TIMESPEC.size])
                    self.kts_ns = sec * 1000000000 + nsec
        self.buf = self.buf[self.pos:] + data
        self.pos = 0

    def read(self):
        """The next reply; an error reply is raised as RespError."""
        while True:
            r = parse(self.buf, self.pos)
            if r is not None:
                break
            self._more()
        value, self.pos = r
        if isinstance(value, RespError):
            raise value
        return value
