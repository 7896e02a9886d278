"""Run the real gateway and a real upstream as processes on free ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.procs import PortTaken, free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
TEST_IDENTITY_SECRET = "test-identity-secret-0123456789abcdef0123"


def shipped_policy(parent: Path) -> Path:
    """A copy of the shipped policy directory (its YAML test cases left out) as `parent/policies`,
    for a test to edit."""
    d = parent / "policies"
    shutil.copytree(ROOT / "policies", d, ignore=shutil.ignore_patterns("tests"))
    return d


BASE_ENV = {
    "GATEWAY_JWT_SECRET": TEST_JWT_SECRET,
    "GATEWAY_IDENTITY_SECRET": TEST_IDENTITY_SECRET,
    "KOMMO_WEBHOOK_SECRET": "kommo-webhook-path-secret-for-tests-0001",
    "KOMMO_CHANNEL_SECRET": "kommo-channel-secret-for-tests",
    "KOMMO_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "KOMMO_CLIENT_SECRET": "kommo-client-secret-for-tests",
    "GATEWAY_DRAIN_DELAY": "0",
    "GATEWAY_LOG_LEVEL": "warning",
}


def write_policy(directory: str | Path, **files: str) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(textwrap.dedent(text))
    return d


class Proc:
    """A child process with its port and captured output."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path, stdout: int | None = None,
                 stderr: int | None = None) -> None:
        """`stdout` / `stderr`: a descriptor for the child's stdout or stderr (a pipe the test
        holds); whichever is not given goes to `log`."""
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        err: Any = stderr if stderr is not None else (subprocess.STDOUT if stdout is None else self._log)
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log if stdout is None else stdout,
                                     stderr=err)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_", "UPSTREAM_"))}
    env.update(BASE_ENV)
    env.update(extra or {})
    env["PYTHONPATH"] = str(ROOT)
    return env


@contextmanager
def echo_upstream() -> Iterator[Proc]:
    p = _started(lambda port: Proc([sys.executable, "-m", "tests.support.echo_upstream", str(port)], _env(None),
                                   port, Path(tempfile.mkdtemp(prefix="gw-echo-")) / "echo.log"))
    try:
        yield p
    finally:
        p.stop()


def _started(make: Callable[[int], Proc]) -> Proc:
    """`make(port)` on a free port, once it listens; again on a new port if another process took
    that one first (see wait_port)."""
    for attempt in range(3):
        p = make(free_port())
        try:
            wait_port(p.port, owner=p.proc)
            return p
        except PortTaken:
            p.stop()
            if attempt == 2:
                raise RuntimeError(f"did not start:\n{p.log()}") from None
    raise AssertionError("unreachable")


def start_gateway(policy_dir: str | Path, upstream_url: str, env: dict[str, str] | None = None,
                  stdout: int | None = None, stderr: int | None = None) -> Proc:
    def spawn() -> Proc:
        return _spawn_gateway(policy_dir, upstream_url, env, stdout, stderr)

    return _await_gateway(spawn(), spawn)


def start_gateways(n: int, policy_dir: str | Path, upstream_url: str,
                   env: dict[str, str] | None = None) -> list[Proc]:
    """`n` gateways started at once (start-up dominates a multi-replica test), each waited for as
    `start_gateway` does: a replica whose port another process took starts again on new ones."""
    def spawn() -> Proc:
        return _spawn_gateway(policy_dir, upstream_url, env)

    spawned = [spawn() for _ in range(n)]
    started: list[Proc] = []
    try:
        for p in spawned:
            started.append(_await_gateway(p, spawn))
    except BaseException:
        for p in spawned[len(started):] + started:
            p.stop()
        raise
    return started


def _spawn_gateway(policy_dir: str | Path, upstream_url: str, env: dict[str, str] | None,
                   stdout: int | None = None, stderr: int | None = None) -> Proc:
    port = free_port()
    admin = free_port()
    full = _env({"GATEWAY_PORT": str(port), "GATEWAY_ADMIN_PORT": str(admin),
                 "GATEWAY_POLICY_DIR": str(policy_dir), "GATEWAY_UPSTREAM_URL": upstream_url, **(env or {})})
    log = Path(tempfile.mkdtemp(prefix="gw-proc-")) / "gateway.log"
    p = Proc([sys.executable, "-m", "gateway", "serve"], full, port, log, stdout, stderr)
    p.admin_port = admin  # type: ignore[attr-defined]
    return p


def _await_gateway(p: Proc, respawn: Callable[[], Proc]) -> Proc:
    """`p` once it listens itself (see wait_port); if it lost a port to another process, a new
    one from `respawn()`, up to three in all."""
    for attempt in range(3):
        try:
            wait_port(p.port, timeout=20, owner=p.proc)
            return p
        except (TimeoutError, PortTaken) as exc:
            p.stop()
            if isinstance(exc, PortTaken) and "already in use" in p.log() and attempt < 2:
                p = respawn()  # another process took a port meanwhile: start again on new ones
                continue
            raise RuntimeError(f"gateway did not start:\n{p.log()}") from None
    raise AssertionError("unreachable")


@contextmanager
def gateway(policy_dir: str | Path, upstream_url: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    p = start_gateway(policy_dir, upstream_url, env)
    try:
        yield p
    finally:
        p.stop()


def wait_until(pred: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


@contextmanager
def bundled_upstream(extra: dict[str, str] | None = None) -> Iterator[Proc]:
    """The real bundled upstream (`python -m upstream_stub`) on a free port, with a temp database."""
    def make(port: int) -> Proc:
        tmp = Path(tempfile.mkdtemp(prefix="gw-upstream-"))
        env = _env({"UPSTREAM_PORT": str(port), "UPSTREAM_DB": str(tmp / "upstream.db"),
                     "UPSTREAM_LOG_LEVEL": "warning", **(extra or {})})
        return Proc([sys.executable, "-m", "upstream_stub"], env, port, tmp / "upstream.log")

    p = _started(make)
    try:
        yield p
    finally:
        p.stop()


def metric(gw: Proc, name: str, labels: str = "") -> float:
    """One sample from the gateway's admin listener /metrics (0 when the series does not exist)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=10).text  # type: ignore[attr-defined]
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+]+)"
    m = re.search("^" + pattern + "$", text, re.M)
    return float(m.group(1)) if m else 0.0
