"""Real processes for tests: a private redis-server, free ports, waiting for a socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Waiting for a process to listen is a start-up wait: on a busy machine (the suite must pass with
# other work on the CPU) a gateway can take many seconds to import and load its policy. A long
# ceiling costs nothing when the process starts; it only turns load into slowness, not failure.
START_TIMEOUT = 90.0


class PortTaken(RuntimeError):
    """The process exited before it listened: most likely another process (a parallel test
    session) bound the port between `free_port()` and the child's bind."""


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = START_TIMEOUT,
              owner: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on `port`; with `owner`, until that process (or a child of
    it) does. A port from `free_port()` is free only when it is picked: another process can bind
    it before the child does, and then a plain connect succeeds against the wrong server while the
    child exits with "address already in use" (seen with three suites on one machine)."""
    timeout = max(timeout, START_TIMEOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owner is not None:
            if owner.poll() is not None:
                raise PortTaken(f"process {owner.pid} exited ({owner.returncode}) before listening on {port}")
            if listener_owned_by(port, owner.pid):
                return
            time.sleep(0.05)
            continue
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return tree


def listener_owned_by(port: int, pid: int) -> bool:
    """True when a socket listening on `port` is held by process `pid` or one of its children."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    if not inodes:
        return False
    for p in _process_tree(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{p}/fd/{fd}") in inodes:
                    return True
            except OSError:
                continue
    return False


class RedisServer:
    """A redis-server of our own on a free port; never the machine's shared one."""

    def __init__(self, port: int | None = None) -> None:
        self._fixed_port = port is not None  # a restart on the same port (a test's own choice)
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="gw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; scripts/test.sh installs it")
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                wait_port(self.port, owner=self.proc)
                return self
            except PortTaken:
                if attempt == 2 or self._fixed_port:
                    raise
                self.port = free_port()  # taken meanwhile by another process: pick again
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Hard stop, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
