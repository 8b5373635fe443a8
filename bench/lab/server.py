"""The lab's own redis-server: started on a free loopback port with the module loaded and any
extra arguments, stopped at the end whatever happens (the caller's `finally`; and, on Linux,
the kernel kills it if the lab itself dies, through PR_SET_PDEATHSIG)."""

import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from resp import Conn, RespError


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def server_args(passthrough):
    """`--server-arg` values as redis-server arguments: "cache.beta 2" -> --cache.beta 2."""
    out = []
    for item in passthrough:
        words = shlex.split(item)
        if words:
            if not words[0].startswith("--"):
                words[0] = "--" + words[0]
            out.extend(words)
    return out


def _die_with_parent():
    """In the child before exec: SIGTERM when the lab's process dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    def __init__(self, binary, module, extra, cpu=None):
        self.binary = shutil.which(binary) or binary
        self.module = os.path.abspath(module)
        self.extra = server_args(extra)
        self.cpu = cpu
        self.proc = None
        self.port = None
        self.dir = tempfile.mkdtemp(prefix="redis-cache-lab.")

    def argv(self):
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log"),
                "--loadmodule", self.module] + self.extra
        if self.cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(self.cpu)] + argv
        return argv

    def command_line(self):
        """The command as a shell would spell it, for the report (the port varies)."""
        return " ".join(shlex.quote(a) for a in self.argv())

    def start(self):
        if not os.path.isfile(self.module):
            raise RuntimeError("module not found: %s (make build)" % self.module)
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                         start_new_session=True)
            deadline = time.time() + 10
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    c = Conn(self.port, timeout=2)
                    if c.call("PING") == "PONG":
                        c.close()
                        return self
                except (OSError, ConnectionError, RespError):
                    time.sleep(0.05)
            log = self.log_tail()
            self.stop()
            if "Address already in use" not in log:  # retry only when the port was taken
                raise RuntimeError("redis-server did not start; its log:\n" + log)
        raise RuntimeError("redis-server: no free port after 3 tries")

    def log_tail(self, n=15):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def version(binary):
    try:
        return subprocess.run([shutil.which(binary) or binary, "--version"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        print("lab: %s --version failed: %s" % (binary, e), file=sys.stderr)
        return binary
