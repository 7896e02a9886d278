"""CORS, answered at the edge and before authentication (preflights carry no credentials).

A preflight is answered here (204 with the allowed methods/headers/max-age, or 403 without any
`Access-Control-Allow-Origin`) and never forwarded. Actual requests get the allow headers only
for allowed origins, and `Vary: Origin` always — on refusals too, so a browser can read them.
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.errors import Forbidden
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header

_VARY = [(b"vary", b"Origin")]


class CorsStage:
    """Answers preflights from the route's CORS policy; decorates actual responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        matcher = route.cors if route is not None else None
        origin = header(scope, b"origin")
        if scope.get("gateway.preflight"):
            if matcher is None:
                raise Forbidden("cors.origin_denied", "cross-origin requests are not allowed here",
                                headers={"Vary": "Origin"})
            headers = matcher.preflight(origin, header(scope, b"access-control-request-method"),
                                        header(scope, b"access-control-request-headers"))
            ctx.status = 204
            await send({"type": "http.response.start", "status": 204, "headers": [
                *headers, (b"x-request-id", ctx.request_id.encode()), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        ctx.response_headers.extend(matcher.actual_headers(origin) if matcher is not None else _VARY)
        await self.app(scope, receive, send)
