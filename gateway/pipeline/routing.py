"""Route match. Default deny: a request that no route declares is refused.

A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) is matched against the route of
the method it asks about, so that route's CORS policy answers it; any other OPTIONS is a 405.
"""

from __future__ import annotations

from urllib.parse import quote

from gateway.context import RequestContext
from gateway.errors import BadPath, Forbidden, MethodNotAllowed, NotFound
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header
from gateway.policy.router import PARAM_VALUE


def _allow_header(methods: list[str]) -> str:
    return ", ".join(sorted(set(methods)))


class RoutingStage:
    """Finds the one route for the request, its parameters and the upstream path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        parts: list[str] = scope["gateway.parts"]
        path = "/" + "/".join(parts)
        method: str = scope["method"]
        preflight = False
        if method == "OPTIONS":
            asked = header(scope, b"access-control-request-method")
            if asked is None or header(scope, b"origin") is None:
                route, _, allow = ctx.policy.table.lookup("OPTIONS", path, parts)
                if not allow:
                    raise NotFound(detail="no route for this path")
                raise MethodNotAllowed(detail="OPTIONS is only answered for CORS preflights",
                                       headers={"Allow": _allow_header(allow)})
            method = asked.decode("latin-1").upper()
            preflight = True
        route, params, allow = ctx.policy.table.lookup(method, path, parts)
        if route is None:
            if not allow:
                raise NotFound(detail="no route for this path")
            if preflight:
                raise Forbidden("cors.method_denied", "method not allowed for this path",
                                headers={"Vary": "Origin"})
            raise MethodNotAllowed(detail=f"{method} is not allowed here",
                                   headers={"Allow": _allow_header(allow)})
        for value in params.values():
            if not PARAM_VALUE.match(value):
                raise BadPath(detail="path parameter has characters that are not allowed")
        ctx.route = route
        ctx.path_params = params
        ctx.upstream_path = route.upstream_template.render(
            {k: quote(v, safe="@:+=~._-") for k, v in params.items()}
        )
        scope["gateway.preflight"] = preflight
        await self.app(scope, receive, send)
