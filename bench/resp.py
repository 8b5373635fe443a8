"""A minimal RESP2 client over a socket, shared by bench.py and stampede.py (standard library
only). For the last reply it records when our recv returned (`rx_pc`) and, on Linux, the
kernel's receive time (`kts_ns`), which the stampede lab reports."""

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
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.kts_ns = self.rx_pc = None
        self.sent += 1
        self.sock.sendall(b"".join(out))

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

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line, self.pos = self.buf[self.pos:i], i + 2
                return line
            self._more()

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) - self.pos < n + 2:
                self._more()
            data = self.buf[self.pos:self.pos + n]
            self.pos += n + 2
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError("bad RESP line: %r" % line)
