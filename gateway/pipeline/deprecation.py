"""Deprecated routes: every answer says so (Deprecation, Sunset, Link), and after the sunset the
route is gone (410 `route.sunset`).

Placed right after routing, before authentication: a retired route is gone for everyone, and even
a refused call to a deprecated route tells the client where to go next. Each call is counted by
route id (`gateway_deprecated_calls_total`, outcome "served", or "sunset" for the 410s, which are
counted too); the access and audit records carry the caller's org, so the team can see who still
uses an old version. A 410 is decided before authentication, so its records have no org.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.context import RequestContext
from gateway.errors import Gone
from gateway.openapi.deprecation import Deprecation
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send


class DeprecationStage:
    """Adds the deprecation headers of the matched route; refuses it after its sunset."""

    def __init__(self, app: ASGIApp, count: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.count = count
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        dep: Deprecation | None = route.deprecation if route is not None else None
        if dep is None or route is None:
            await self.app(scope, receive, send)
            return
        ctx.response_headers.extend(dep.headers)
        ctx.audit_extra["deprecated"] = True
        if dep.sunset_at is not None and self.clock() >= dep.sunset_at:
            if self.count is not None:
                self.count(route.id, "sunset")
            where = f"; use {dep.successor}" if dep.successor else ""
            raise Gone(detail=f"this route was retired on its sunset date{where}", route_id=route.id)
        if self.count is not None:
            self.count(route.id, "served")
        await self.app(scope, receive, send)
