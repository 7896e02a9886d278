"""The upstream application: `create_app(settings)` builds it, the lifespan starts the database and
the job worker and, on shutdown, lets running jobs finish or releases them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upstream_stub import agents, crm, errors, events, jobs, kommo_oauth, webhooks
from upstream_stub.crypto import Keyring
from upstream_stub.handlers import make_handlers
from upstream_stub.identity import IdentityMiddleware, IdentityVerifier
from upstream_stub.oauth_state import StateSigner
from upstream_stub.services import Services
from upstream_stub.settings import UpstreamSettings
from upstream_stub.worker import Worker

log = logging.getLogger("upstream_stub")
access_log = logging.getLogger("upstream_stub.access")


class StartupError(RuntimeError):
    """The configuration is unsafe or unusable; the message names every variable at fault."""


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def continue_trace(scope: Scope) -> tuple[str, str, str | None]:
    """W3C trace context: (trace id, our span id, parent span id). The gateway sends its own span
    as the parent; a missing or malformed header starts a new trace."""
    value = next((v for k, v in scope["headers"] if k == b"traceparent"), b"").decode("latin-1")
    m = _TRACEPARENT.fullmatch(value.strip())
    span = os.urandom(8).hex()
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return os.urandom(16).hex(), span, None
    return m.group(1), span, m.group(2)


class AccessLog:
    """Pure ASGI access log: method, path (never the query: OAuth codes travel there), status, time,
    and the trace it continues (trace id, its own span, the parent span)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        rid = errors.request_id_of(scope)
        trace_id, span_id, parent_id = continue_trace(scope)
        scope.setdefault("state", {})["trace"] = (trace_id, span_id, parent_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info("%s %s %d %.1fms rid=%s trace=%s span=%s parent=%s", scope["method"], scope["path"],
                            status, (time.perf_counter() - started) * 1000, rid, trace_id, span_id, parent_id or "-")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: UpstreamSettings | None = None) -> Starlette:
    """Build the app; raises `StartupError` when production settings are unsafe."""
    settings = settings or UpstreamSettings()
    problems = settings.problems()
    if problems:
        raise StartupError("; ".join(problems))
    try:
        keys = Keyring(settings.key_spec())
        verifier = IdentityVerifier(settings.effective_identity_secret(), settings.identity_audience)
        signer = StateSigner(settings.effective_state_secret())
    except ValueError as exc:
        raise StartupError(str(exc)) from None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = await Services.start(settings, keys, signer)
        app.state.services = svc
        worker = None
        if settings.worker_enabled:
            worker = Worker(svc.jobs, make_handlers(svc), concurrency=settings.worker_concurrency,
                            lease=settings.job_lease_seconds, poll=settings.job_poll_seconds,
                            backoff_base=settings.job_backoff_base, backoff_max=settings.job_backoff_max)
            worker.start()
        app.state.worker = worker
        log.info("upstream started (db=%s, worker=%s)", settings.database_label(), "on" if worker else "off")
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop(settings.shutdown_grace)
            await svc.close()
            log.info("upstream stopped")

    routes = [Route("/healthz", healthz, methods=["GET"]), *agents.routes, *crm.routes, *jobs.routes, *events.routes,
              *kommo_oauth.routes, *webhooks.routes]
    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessLog), Middleware(IdentityMiddleware, verifier=verifier)],
        exception_handlers=errors.install(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )
