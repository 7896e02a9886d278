"""Serving: uvicorn (uvloop + httptools) with a drain phase, and a small multi-worker supervisor.

Graceful shutdown, per worker, on SIGTERM/SIGINT:
  1. readiness turns 503 (the load balancer stops sending new requests); from now on every response
     carries `Connection: close` and idle keep-alive connections are closed (gateway.protocol), so
     a well-behaved client never sends on a connection the gateway is about to close,
  2. `GATEWAY_DRAIN_DELAY` passes (requests still served meanwhile),
  3. the listener stops accepting; in-flight requests finish, up to `GATEWAY_GRACE_TIMEOUT`,
  4. lifespan shutdown closes the upstream pool, Redis and the audit writer; exit 0.
A second signal skips the drain delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Generator
from types import FrameType

import uvicorn

from gateway.settings import Settings

log = logging.getLogger("gateway.server")


class GatewayServer(uvicorn.Server):
    """uvicorn.Server with a readiness drain before the listener closes."""

    def __init__(self, config: uvicorn.Config, drain_delay: float, early: list[int] | None = None) -> None:
        super().__init__(config)
        self.drain_delay = drain_delay
        self._draining = False
        self._closing = False  # from the first exit signal on, every response says Connection: close
        # Signals that reached a worker before uvicorn installed its handlers (see _worker_entry).
        self.early = early if early is not None else []

    async def on_tick(self, counter: int) -> bool:
        while self.early and self.started:
            self.handle_exit(self.early.pop(0), None)
        done = await super().on_tick(counter)
        # uvicorn rebuilds its default headers (the Date) once a second, which would drop the
        # drain's `Connection: close` after at most a second: a load balancer's keep-alive
        # connection then stays open through the whole drain and meets the lifespan shutdown.
        close = (b"connection", b"close")
        if self._closing and close not in self.server_state.default_headers:
            self.server_state.default_headers.append(close)
        return done

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == getattr(signal, "SIGHUP", None):
            reload = getattr(self.config.app, "request_reload", None)
            if reload is not None:
                reload()
            return
        if not self.started and not self.should_exit and self.drain_delay > 0:
            # Still starting: the drain (serving while the load balancer notices) begins once the
            # server runs, or a slow start would use up the delay and serve nothing.
            self.early.append(sig)
            return
        self._mark_draining()
        if self._draining or self.drain_delay <= 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        app = self.config.app
        readiness = getattr(app, "readiness", None)
        if readiness is not None:
            readiness.draining = True
        log.info("draining: readiness is 503 for %.1fs before the listener closes", self.drain_delay)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().handle_exit(sig, frame)
            return
        loop.call_later(self.drain_delay, super().handle_exit, sig, frame)

    def _mark_draining(self) -> None:
        self._closing = True
        close = (b"connection", b"close")
        headers = self.server_state.default_headers
        if close in headers:
            return
        # uvicorn adds its default headers to every response it starts from now on, and a
        # `Connection: close` among them makes it close the connection after that response.
        headers.append(close)
        for conn in list(self.server_state.connections):
            drain = getattr(conn, "drain", None)
            if drain is not None:
                drain()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal after shutdown, so the process dies "by SIGTERM"
        # (exit -15). A drained, clean shutdown is a success: exit 0.
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def _handled_signals() -> None:
    import uvicorn.server as us
    if hasattr(signal, "SIGHUP") and signal.SIGHUP not in us.HANDLED_SIGNALS:
        us.HANDLED_SIGNALS = (*us.HANDLED_SIGNALS, signal.SIGHUP)  # type: ignore[assignment]


def make_config(settings: Settings, app: object) -> uvicorn.Config:
    from gateway.protocol import protocol_for

    policy = getattr(app, "policy", None)
    # Each connection takes the exact value from the live policy (gateway.protocol); this is the
    # server's view of it at start.
    keepalive = math.ceil(policy.limits.keepalive_timeout) if policy is not None else 75
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host, port=settings.port,
        # ws="none": the server never takes an upgrade over; the pipeline refuses it as HTTP.
        loop="uvloop", http=protocol_for(app), ws="none",
        lifespan="on",
        access_log=False, server_header=False, proxy_headers=False, log_config=None,
        timeout_graceful_shutdown=int(settings.grace_timeout) or None,
        timeout_keep_alive=keepalive, backlog=4096, log_level=settings.log_level,
    )


def run_worker(settings: Settings, fd: int | None = None, early: list[int] | None = None) -> None:
    from gateway.app import Gateway
    from gateway.logs import report_dropped_lines, setup_logging

    setup_logging(settings.log_level)
    _handled_signals()
    app = Gateway(settings)
    report_dropped_lines(app.metrics.server_log_dropped)
    from gateway.gctune import tune_after_startup

    tune_after_startup()  # issue 16: no full-heap GC pauses under load (measured in gctune.py)
    server = GatewayServer(make_config(settings, app), settings.drain_delay, early)
    if fd is None:
        server.run()
        return
    # A real socket object of the inherited listener: uvicorn's `fd=` wraps it as AF_UNIX, and
    # uvloop then never sets TCP_NODELAY on accepted connections (40 ms Nagle/delayed-ACK stalls).
    server.run(sockets=[socket.socket(fileno=fd)])


def _worker_entry(settings_json: str, fd: int) -> None:
    # Forked workers inherit the supervisor's signal handlers; a SIGTERM arriving while this worker
    # still starts would run them here and kill it (its accepted connections reset). Remember the
    # signal instead; the server acts on it (drain, then stop) as soon as it runs.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: early.append(s))
    settings = Settings.model_validate_json(settings_json)
    try:
        run_worker(settings, fd, early)
    finally:
        # multiprocessing ends a forked worker with os._exit (no atexit): write the log lines
        # still queued for stderr (gateway/logs.py BackgroundHandler) before it goes.
        logging.shutdown()


def serve(settings: Settings) -> int:
    """Run one worker in-process, or N workers under a supervisor sharing one socket. Metrics are
    served from this process on the admin listener, aggregated over all workers."""
    from gateway.admin import start_admin
    from gateway.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()  # before any worker exists; a stale directory is cleaned
    stop_admin = start_admin(settings)
    try:
        return _serve(settings)
    finally:
        stop_admin()


def _board_policy(settings: Settings) -> None:
    """The supervisor's view of the policy for the admin /readyz (workers load their own)."""
    from gateway.health import BOARD
    from gateway.policy.loader import load_policy
    from gateway.settings import effective_env

    try:
        BOARD.set_policy(load_policy(settings.policy_dir, effective_env(settings), settings.production))
    except Exception as exc:  # the workers keep serving their policy; this is only the report
        log.error("supervisor could not load the policy for /readyz: %s", exc)


def _serve(settings: Settings) -> int:
    from gateway.health import BOARD
    from gateway.metrics import mark_process_dead

    if settings.workers <= 1:
        run_worker(settings)
        return 0
    _board_policy(settings)
    BOARD.workers = (0, settings.workers)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(4096)
    sock.set_inheritable(True)
    ctx = multiprocessing.get_context("fork")
    payload = settings.model_dump_json()
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    started: dict[int, float] = {}
    quick_deaths = 0

    def spawn() -> multiprocessing.process.BaseProcess:
        p = ctx.Process(target=_worker_entry, args=(payload, sock.fileno()), daemon=False)
        p.start()
        started[id(p)] = time.monotonic()
        return p

    def forward(sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if sig != getattr(signal, "SIGHUP", -1):
            stopping = True
            BOARD.draining = True
        else:
            _board_policy(settings)
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    procs.extend(spawn() for _ in range(settings.workers))
    log.info("supervisor %d started %d workers on %s:%d", os.getpid(), settings.workers,
             settings.host, settings.port)
    while not stopping:
        time.sleep(0.2)
        BOARD.workers = (sum(1 for p in procs if p.is_alive()), settings.workers)
        for i, p in enumerate(procs):
            if not p.is_alive() and not stopping:
                # A worker that dies right after start will die again: stop rather than loop
                # forever holding the port while serving nothing.
                quick_deaths = quick_deaths + 1 if time.monotonic() - started[id(p)] < 10 else 0
                if quick_deaths >= 3:
                    log.error("workers keep exiting at start-up (last exit %s); giving up", p.exitcode)
                    forward(signal.SIGTERM, None)
                    break
                log.error("worker %s exited with %s; starting a new one", p.pid, p.exitcode)
                if p.pid is not None:
                    mark_process_dead(p.pid)
                procs[i] = spawn()
    deadline = time.monotonic() + settings.drain_delay + settings.grace_timeout + 10
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
        if p.pid is not None:
            mark_process_dead(p.pid)
    sock.close()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve(Settings()))
