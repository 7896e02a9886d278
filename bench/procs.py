"""Child processes of one benchmark run: each in its own process group, all stopped on exit.

Every server is started with `start_new_session=True`, so stopping it signals the whole group
(nginx workers, gateway workers forked by its supervisor) and a Ctrl-C on the terminal does not
reach the servers before the run has finished with them; `Procs.stop_all` runs from a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


class StartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((LOOPBACK, port)) == 0


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Proc:
    """One started server (the leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Procs:
    """Registry of everything this run started, so that nothing outlives it."""

    log_dir: Path
    running: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, port: int | None = None, ready_timeout: float = 20.0) -> Proc:
        """Start `argv` in a new session and wait until `port` accepts connections."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            # Output goes to a file, never to a pipe nobody reads (a full pipe would stall the server).
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd, start_new_session=True)
        proc = Proc(name, popen, log, port)
        self.running.append(proc)
        if port is not None:
            self._wait_ready(proc, port, ready_timeout)
        return proc

    def _wait_ready(self, proc: Proc, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                self.stop(proc)
                raise StartError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail(proc.log)}")
            if port_open(port):
                return
            time.sleep(0.05)
        self.stop(proc)
        raise StartError(f"{proc.name} did not listen on {LOOPBACK}:{port} within {timeout:.0f}s:\n"
                         f"{tail(proc.log)}")

    def stop(self, proc: Proc, grace: float = 8.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds."""
        if proc in self.running:
            self.running.remove(proc)
        pgid = proc.popen.pid  # leader of its own session, so pgid == pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Also reap stragglers of the group (e.g. forked workers) even if the leader exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=2)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def raise_on_sigterm() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so that `finally` blocks run and clean up."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    # Ctrl-C always interrupts, even when started with SIGINT ignored (e.g. from a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGHUP, handler)
