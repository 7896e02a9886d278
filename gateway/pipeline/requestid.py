"""Outermost stage: request id, trace context, timing, load shedding, and rendering every refusal.

Stages deny by raising a GatewayError; this is the one place that turns it into a problem+json
response, so the reason id is the same everywhere. Observers (metrics, access log, audit) run in
`finally` for every request, answered or not.

Request ids. Threat: the id ties the audit trail, the access log and the upstream's logs
together; if any client could choose it, an anonymous caller could plant another user's request
id in the trail. So an incoming `X-Request-ID` is adopted only from a trusted proxy (the direct
peer is in `GATEWAY_TRUSTED_PROXIES` / the policy's proxies) and only when well-formed; otherwise
the gateway makes its own and keeps the client's value apart (`client_request_id`, printable
ASCII, at most 128 characters) for the access log and audit. Envoy treats external requests so.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable

from gateway.context import RequestContext
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.logs import CURRENT_REQUEST
from gateway.pipeline.base import ASGIApp, Message, Receive, Scope, Send, send_problem
from gateway.pipeline.bodylimit import ClientDisconnected
from gateway.protocol import hold_head
from gateway.tracing import Tracer

log = logging.getLogger("gateway.request")
_GOOD_ID = re.compile(rb"[A-Za-z0-9._:-]{8,128}\Z")  # \Z: `$` would also take a final newline
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_CLIENT_REQUEST_ID = 128

Observer = Callable[[Scope, RequestContext], None]


class _RequestIds:
    """Request ids: 12 bytes of `os.urandom` each, as before, but read for 256 ids at a time (one
    getrandom() syscall per 256 requests instead of one per request). A forked worker starts with
    an empty buffer, so no two processes ever hand out the same bytes."""

    __slots__ = ("_hex", "_pos")
    BATCH = 256

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._hex, self._pos = "", 0

    def __call__(self) -> str:
        pos = self._pos
        if pos >= len(self._hex):
            self._hex, pos = os.urandom(12 * self.BATCH).hex(), 0
        self._pos = pos + 24
        return self._hex[pos:pos + 24]


new_request_id = _RequestIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=new_request_id.reset)


def client_request_id(value: bytes) -> str:
    """The client's id, made safe to log: printable ASCII, capped."""
    return _UNPRINTABLE.sub("?", value[:MAX_CLIENT_REQUEST_ID].decode("latin-1"))


class InFlight:
    """Requests being served by this process; shared by every pipeline a reload builds."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class RequestIdStage:
    """Creates the request context; sheds load over the in-flight cap; renders refusals."""

    def __init__(self, app: ASGIApp, policy: Callable[[], object], observers: list[Observer],
                 in_flight: InFlight | None = None, *, trusted_peer: Callable[[str], bool] | None = None,
                 tracer: Tracer | None = None, count_bytes: bool = False) -> None:
        self.app = app
        self.policy = policy
        self.observers = observers
        self.in_flight = in_flight or InFlight()
        self.trusted_peer = trusted_peer or (lambda _ip: False)
        self.tracer = tracer or Tracer()
        self.count_bytes = count_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        incoming = None
        for k, v in headers:
            if k == b"x-request-id":
                incoming = v
                break
        client = scope.get("client")
        peer = client[0] if client else "0.0.0.0"
        client_rid = None
        if incoming is not None and _GOOD_ID.match(incoming) and self.trusted_peer(peer):
            rid = incoming.decode()
        else:
            rid = new_request_id()
            if incoming is not None:
                client_rid = client_request_id(incoming)
        ctx = RequestContext(rid, peer, self.policy())  # type: ignore[arg-type]
        ctx.client_request_id = client_rid
        span = ctx.trace = self.tracer.start(headers)
        CURRENT_REQUEST.set((rid, span.trace_id))  # this request's task only (a copied context)
        scope["gateway"] = ctx
        if self.count_bytes:
            send, receive = _counting(send, receive, ctx)
        in_flight = self.in_flight
        in_flight.n += 1
        try:
            if in_flight.n > ctx.policy.limits.max_in_flight:
                raise ServiceUnavailable(
                    "gateway.overloaded", "too many requests in flight; retry shortly",
                    headers={"Retry-After": str(ctx.policy.limits.shed_retry_after)},
                )
            await self.app(scope, receive, send)
        except GatewayError as err:
            await self._refuse(scope, ctx, err, send)
        except ClientDisconnected:
            ctx.status = 499
            ctx.decision = "client_closed"
            ctx.reason = "request.client_closed"
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid, "trace_id": span.trace_id})
            await self._refuse(scope, ctx, GatewayError(detail="internal error"), send)
        finally:
            in_flight.n -= 1
            for observe in self.observers:
                try:
                    observe(scope, ctx)
                except Exception:  # an observer must never break a request
                    log.exception("observer failed", extra={"request_id": rid, "trace_id": span.trace_id})
            if self.tracer.exporting:
                self._end_span(scope, ctx)

    def _end_span(self, scope: Scope, ctx: RequestContext) -> None:
        span = ctx.trace
        if span is None:
            return
        try:
            self.tracer.end(span, {
                "http.request.method": scope.get("method"), "http.response.status_code": ctx.status,
                "gateway.route": ctx.route.id if ctx.route is not None else None,
                "gateway.decision": ctx.decision, "gateway.reason": ctx.reason,
                "gateway.request_id": ctx.request_id, "client.address": ctx.client_ip,
            }, error=ctx.status >= 500)
        except Exception:
            log.exception("span export failed", extra={"request_id": ctx.request_id})

    async def _refuse(self, scope: Scope, ctx: RequestContext, err: GatewayError, send: Send) -> None:
        ctx.decision = "deny" if err.status < 500 or err.status == 503 else "error"
        ctx.reason = err.reason
        if scope.get("gateway.response_started"):
            # Headers already went out (upstream broke mid-stream): nothing to render; the
            # server closes the connection so the client sees a truncated response.
            ctx.status = ctx.status or 502
            raise err
        ctx.status = err.status
        with hold_head(scope):  # a refusal too leaves in one send (a flood of 401s is the case)
            await send_problem(send, err, ctx.request_id, ctx.response_headers, head=scope["method"] == "HEAD")


def _counting(send: Send, receive: Receive, ctx: RequestContext) -> tuple[Send, Receive]:
    """`send` / `receive` that count body bytes into `ctx.bytes_out` / `ctx.bytes_in`."""

    def counted_send(message: Message) -> Awaitable[None]:
        # A plain function handing back `send`'s awaitable: no coroutine of its own per message.
        if message["type"] == "http.response.body":
            ctx.bytes_out += len(message.get("body", b""))
        return send(message)

    async def counted_receive() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            ctx.bytes_in += len(message.get("body", b""))
        return message

    return counted_send, counted_receive
