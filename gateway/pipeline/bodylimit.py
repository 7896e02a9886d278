"""Size caps, the client body clocks, and the per-worker bound on buffered body bytes.

`Content-Length` over the route's cap is refused before a single body byte is read (and, with
`Expect: 100-continue`, before the client is invited to send it). Chunked bodies are counted as
they stream and cut at the cap; the forwarder then aborts the upstream request so the upstream
never sees a truncated body as complete.

Two clocks bound a slow client: each wait for a body chunk (`timeouts.body_read`) and the whole body
(`timeouts.body_total`); either ends in 408. Without the total, a client sending one byte just
under the idle timeout would hold the request for hours.

Buffered bodies (read whole before an upstream connection is taken, or read by a stage that must
see them) count against `limits.max_buffered_bytes` per worker: a thousand concurrent 5 MiB uploads
must not take 5 GB. Past the bound a new body gets 503 gateway.overloaded + Retry-After; bodies
under 64 KiB always fit, so small API calls are never refused for memory.
"""

from __future__ import annotations

import asyncio

from gateway.context import RequestContext
from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout, ServiceUnavailable
from gateway.pipeline.base import ASGIApp, Message, Receive, Scope, Send, header

SMALL_BODY = 64 * 1024


class ClientDisconnected(Exception):
    """The client went away mid-request; nothing is left to answer."""


class BufferBudget:
    """Body bytes held in buffers by this worker (one per process, shared by every pipeline)."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


BUDGET = BufferBudget()


class Held:
    """One request's share of the budget; grows as its body is buffered, freed when it ends."""

    __slots__ = ("budget", "limit", "n", "declared", "retry_after")

    def __init__(self, budget: BufferBudget, limit: int, declared: int | None, retry_after: int) -> None:
        self.budget = budget
        self.limit = limit
        self.n = 0
        self.declared = declared
        self.retry_after = retry_after

    def reserve(self, total: int) -> None:
        extra = total - self.n
        if extra <= 0:
            return
        if total > SMALL_BODY and self.budget.used + extra > self.limit:
            raise ServiceUnavailable("gateway.overloaded", "too many request bodies buffered; retry shortly",
                                     headers={"Retry-After": str(self.retry_after)})
        self.budget.used += extra
        self.n = total

    def release(self) -> None:
        self.budget.used -= self.n
        self.n = 0


class BodyLimitStage:
    """Caps the request body per route and bounds each wait for a body chunk and the whole body."""

    def __init__(self, app: ASGIApp, budget: BufferBudget | None = None) -> None:
        self.app = app
        self.budget = budget or BUDGET

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        cap = route.max_body_bytes
        cl_raw = header(scope, b"content-length")
        chunked = header(scope, b"transfer-encoding") is not None
        declared: int | None = None
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
        idle = route.body_read_timeout
        total = route.body_total_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        seen = 0
        finished = False

        async def capped_receive() -> Message:
            nonlocal seen, finished
            if finished:
                # The body is complete: later calls only wait for the disconnect (the forwarder's
                # watch), which no clock may cut short.
                return await receive()
            left = deadline - loop.time()
            try:
                async with asyncio.timeout(min(idle, left) if left > 0 else 0):
                    message = await receive()
            except TimeoutError:
                if loop.time() >= deadline:
                    raise RequestTimeout(detail=f"body not received within {total:g} s") from None
                raise RequestTimeout(detail=f"no body data for {idle:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            seen += len(message.get("body", b""))
            if seen > cap:
                raise PayloadTooLarge(detail=f"body larger than {cap} bytes")
            if not message.get("more_body", False):
                finished = True
            return message

        held = Held(self.budget, ctx.policy.limits.max_buffered_bytes, declared,
                    ctx.policy.limits.shed_retry_after)
        scope["gateway.held"] = held
        try:
            await self.app(scope, capped_receive, send)
        finally:
            held.release()


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """Buffer the (already capped) body for a stage that must read it, or before an upstream
    connection is taken; forwarded as is later. Counted against the worker's buffer budget."""
    ctx: RequestContext = scope["gateway"]
    if ctx.body is not None:
        return ctx.body
    if not scope.get("gateway.has_body"):
        ctx.body = b""
        return ctx.body
    held: Held | None = scope.get("gateway.held")
    if held is not None and held.declared is not None:
        held.reserve(held.declared)  # refuse before reading a byte
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if held is not None:
                held.reserve(size)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    ctx.body = b"".join(chunks)
    return ctx.body
