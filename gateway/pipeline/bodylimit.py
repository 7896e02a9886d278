"""Size caps and the client body clock.

`Content-Length` over the route's cap is refused before a single body byte is read (and, with
`Expect: 100-continue`, before the client is invited to send it). Chunked bodies are counted as
they stream and cut at the cap; the forwarder then aborts the upstream request so the upstream
never sees a truncated body as complete. A client that stalls mid-body is cut off (408).
"""

from __future__ import annotations

import asyncio

from gateway.context import RequestContext
from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout
from gateway.pipeline.base import ASGIApp, Message, Receive, Scope, Send, header


class ClientDisconnected(Exception):
    """The client went away mid-request; nothing is left to answer."""


class BodyLimitStage:
    """Caps the request body per route and bounds each wait for a body chunk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        cap = route.max_body_bytes
        cl_raw = header(scope, b"content-length")
        chunked = header(scope, b"transfer-encoding") is not None
        if cl_raw is not None:
            if not cl_raw.isdigit() or len(cl_raw) > 18:
                raise BadRequest("request.bad_framing", "invalid Content-Length")
            declared = int(cl_raw)
            if declared > cap:
                raise PayloadTooLarge(detail=f"body larger than {cap} bytes")
            has_body = declared > 0
        else:
            has_body = chunked
        scope["gateway.has_body"] = has_body
        if not has_body:
            await self.app(scope, receive, send)
            return
        timeout = route.body_read_timeout
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise RequestTimeout(detail=f"no body data for {timeout:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            seen += len(message.get("body", b""))
            if seen > cap:
                raise PayloadTooLarge(detail=f"body larger than {cap} bytes")
            return message

        await self.app(scope, capped_receive, send)


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """Buffer the (already capped) body for a stage that must read it; forwarded as is later."""
    ctx: RequestContext = scope["gateway"]
    if ctx.body is not None:
        return ctx.body
    if not scope.get("gateway.has_body"):
        ctx.body = b""
        return ctx.body
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    ctx.body = b"".join(chunks)
    return ctx.body
