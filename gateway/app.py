"""The gateway ASGI application: lifespan, health endpoints, and the pipeline.

The pipeline order is written once, in `build_pipeline`. Each stage reads its part of the matched
route's compiled policy and steps aside when that part is absent.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gateway.clientaddr import TrustedProxies
from gateway.context import RequestContext
from gateway.forwarder import Forwarder
from gateway.health import Readiness, send_json, tcp_check
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send
from gateway.pipeline.bodylimit import BodyLimitStage
from gateway.pipeline.clientaddr import ClientAddressStage
from gateway.pipeline.hygiene import HygieneStage
from gateway.pipeline.requestid import Observer, RequestIdStage
from gateway.pipeline.routing import RoutingStage
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.loader import load_policy
from gateway.settings import Settings

log = logging.getLogger("gateway")


class Gateway:
    """One worker's gateway: holds the current policy and the long-lived clients."""

    def __init__(self, settings: Settings, policy: CompiledPolicy | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = dict(os.environ) if env is None else env
        self.policy = policy or load_policy(settings.policy_dir, self.env, settings.production)
        self.readiness = Readiness()
        self.observers: list[Observer] = []
        self.forwarder = Forwarder(identity=self.identity_for)
        self.proxies = TrustedProxies(
            [*settings.trusted_proxies.replace(",", " ").split(), *self.policy.trusted_proxies]
        )
        self.readiness.checks["policy"] = self._policy_check
        self.readiness.checks["upstream"] = lambda: tcp_check(self.policy.upstream.url)
        self.pipeline = self.build_pipeline()

    def current_policy(self) -> CompiledPolicy:
        return self.policy

    def identity_for(self, ctx: RequestContext) -> str | None:
        return None

    def build_pipeline(self) -> ASGIApp:
        app: ASGIApp = self.forwarder
        app = BodyLimitStage(app)
        app = RoutingStage(app)
        app = HygieneStage(app)
        app = ClientAddressStage(app, self.proxies)
        return RequestIdStage(app, self.current_policy, self.observers)

    async def _policy_check(self) -> tuple[bool, str]:
        return True, f"{len(self.policy.routes)} routes, digest {self.policy.digest}"

    async def startup(self) -> None:
        up = self.policy.upstream
        await self.forwarder.start(up.pool_size, up.keepalive_seconds)

    async def shutdown(self) -> None:
        await self.forwarder.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/healthz":
                await send_json(send, 200, b'{"status":"ok"}')
                return
            if path == "/readyz":
                status, body = await self.readiness.evaluate()
                await send_json(send, status, body)
                return
            await self.pipeline(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not routed by this gateway; uvicorn closes it when we return.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: dict[str, Any] = await receive()  # type: ignore[assignment]
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return
