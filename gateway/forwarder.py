"""The last stage: forward to the upstream and stream the answer back.

Built on `gateway.h1pool`, a lean keep-alive HTTP/1.1 pool on asyncio protocols and httptools:
httpx's pool collapses under concurrency here (encode/httpx#3215, fixes never released), and
aiohttp's client cost ~50 µs of CPU per request against ~15 µs (tests/bench_h1pool.py).

Capacity isolation (threat: one tenant starving the others of upstream connections):
- request bodies are read whole at the edge *before* an upstream connection is taken (nginx's
  `proxy_request_buffering on`), so a client trickling bytes holds no upstream slot; a route may
  opt into streaming uploads with `request_buffering: false`;
- each org (without an identity: each client address) may have `limits.max_in_flight_per_org`
  upstream requests in flight per worker, beyond which 429 ratelimit.concurrency;
- the wait for a pool connection is bounded by `upstream.pool_wait` → 503 upstream.saturated.

Responses stream: each upstream chunk is sent as soon as it arrives (Server-Sent Events flow), and
`timeouts.stream_idle` ends an upstream that falls silent mid-body. A client that goes away aborts
the upstream exchange; that connection is closed, never returned to the pool.

Header rules (RFC 9110 §7.6.1): hop-by-hop headers and every header named in `Connection` are
dropped both ways; `X-Forwarded-*`, `Forwarded`, `Via` and `X-Request-ID` are rebuilt, never passed
through; client-supplied identity headers are dropped in every spelling (`X-User-Id`,
`x_user_id`, ...), because some servers fold `_` into `-` and would believe them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from gateway.auth.claims import claim_text
from gateway.context import RequestContext
from gateway.errors import (
    BadGateway,
    BadRequest,
    ConcurrencyExceeded,
    GatewayError,
    GatewayTimeout,
    UpstreamSaturated,
)
from gateway.h1pool import (
    Cancel,
    H1Pool,
    H1Response,
    PoolSaturated,
    RequestBodyLengthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.pipeline.base import Message, Receive, Scope, Send
from gateway.pipeline.bodylimit import ClientDisconnected, read_body
from gateway.protocol import hold_head

log = logging.getLogger("gateway.forwarder")
# A request still running after this long gets a task watching for the client's disconnect; the
# fast majority never pays for one.
WATCH_AFTER = 0.05
RETRY_AFTER = "1"

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})
# Rebuilt by the gateway (or by the pool: host, content-length), never taken from the client.
REBUILT = frozenset({
    b"host", b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-prefix", b"forwarded", b"via",
    b"x-real-ip", b"x-request-id", b"x-gateway-identity", b"traceparent", b"tracestate",
})
IDENTITY_PREFIXES = (
    b"x-gateway-", b"x-user", b"x-org", b"x-auth", b"x-identity", b"x-tenant", b"x-forwarded-user",
    b"x-forwarded-email", b"x-forwarded-groups", b"x-forwarded-preferred", b"x-remote-", b"remote-user",
    b"x-client-ip", b"x-original-", b"x-role", b"x-scope", b"x-sub", b"x-jwt", b"x-consumer-",
    b"x-authenticated-", b"x-credential",
)
# `date` is set by our server; `server` would tell the client what the upstream runs.
RESPONSE_DROP = HOP_BY_HOP | {b"x-request-id", b"via", b"date", b"server"}
VIA = b"1.1 edge-gateway"


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    out: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            out.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return frozenset(out)


def request_headers(scope: Scope, ctx: RequestContext, forward_token: bool,
                    identity: str | None) -> list[tuple[bytes, bytes]]:
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    named = _connection_tokens(raw)
    out: list[tuple[bytes, bytes]] = []
    host = None
    for k, v in raw:
        if k == b"host":
            host = v
            continue
        if k in HOP_BY_HOP or k in named or k in REBUILT:
            continue
        if k == b"authorization":
            if forward_token:
                out.append((k, v))
            continue
        # `_` spellings are dropped outright (as nginx does): some servers fold them into `-`.
        if k.find(b"_") >= 0 or k.startswith(IDENTITY_PREFIXES):  # find: `in` on bytes costs a hidden TypeError
            continue
        out.append((k, v))
    out.append((b"x-forwarded-for", ctx.client_ip.encode()))
    out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    out.append((b"via", VIA))
    out.append((b"x-request-id", ctx.request_id.encode()))
    span = ctx.trace
    if span is not None:  # W3C trace context: our span is the upstream's parent (gateway/tracing.py)
        out.append((b"traceparent", span.traceparent()))
        if span.tracestate is not None:
            out.append((b"tracestate", span.tracestate))
    if identity is not None:
        out.append((b"x-gateway-identity", identity.encode()))
    return out


class FairShare:
    """In-flight upstream requests per org (or anonymous client address) in this worker."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def enter(self, key: str, cap: int) -> bool:
        n = self.counts.get(key, 0)
        if n >= cap:
            return False
        self.counts[key] = n + 1
        return True

    def leave(self, key: str) -> None:
        n = self.counts[key] - 1
        if n:
            self.counts[key] = n
        else:
            del self.counts[key]


class DisconnectWatch:
    """Fires `cancel` when the client disconnects; armed only for requests that take a while, and
    only under a server that does not report lost connections itself (the gateway's does).

    uvicorn's `send()` returns quietly after a disconnect, so a relay would otherwise keep draining
    the upstream into nowhere, holding a pool slot. `receive()` after the request body reports it."""

    __slots__ = ("receive", "cancel", "timer", "task")

    def __init__(self, receive: Receive, cancel: Cancel) -> None:
        self.receive = receive
        self.cancel = cancel
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(WATCH_AFTER, self._start)
        self.task: asyncio.Task[None] | None = None

    def _start(self) -> None:
        self.timer = None
        self.task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    break
        except ClientDisconnected:
            pass
        except Exception:  # noqa: S110 - a body-clock error here means the request is over anyway
            return
        self.cancel.fire()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Forwarder:
    """Terminal ASGI app: one keep-alive connection pool per upstream, per worker process."""

    def __init__(self, identity: Callable[[RequestContext], str | None] | None = None) -> None:
        self.identity = identity
        self.pools: dict[str, H1Pool] = {}
        self.pool_size = 256
        self.keepalive = 30.0
        self.started = False
        self.share = FairShare()

    async def start(self, pool_size: int = 256, keepalive: float = 30.0) -> None:
        self.pool_size, self.keepalive = pool_size, keepalive
        self.started = True

    async def close(self) -> None:
        self.started = False
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            await pool.close()

    def _pool(self, url: str) -> H1Pool:
        pool = self.pools.get(url)
        if pool is None:
            # A reload may point at another upstream; each URL gets its own pool.
            pool = self.pools[url] = H1Pool(url, self.pool_size, self.keepalive)
        return pool

    _org_claim: tuple[object, str] | None = None  # (policy, its org claim path), read once per policy

    def tenant_key(self, ctx: RequestContext) -> str:
        """The org of the verified identity, else the client address (public and webhook routes)."""
        if ctx.claims:
            policy = ctx.policy
            cached = self._org_claim
            if cached is None or cached[0] is not policy:
                auth = policy.sections.get("compiled.auth")
                jwt = getattr(auth, "jwt", None)
                cached = self._org_claim = (policy, jwt.org_claim if jwt is not None else "org_id")
            # The one claim reader tenant binding and rate limits use: a numeric org id is that
            # org too, a blank one is none.
            org = claim_text(ctx.claims, cached[1])
            if org is not None:
                return "org:" + org
        return "addr:" + ctx.client_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or not self.started:  # routing guarantees a route; fail closed anyway
            raise BadGateway("gateway.not_ready", "gateway is not ready")
        identity = self.identity(ctx) if self.identity is not None else None
        headers = request_headers(scope, ctx, route.forward_token, identity)
        has_body = scope.get("gateway.has_body")
        if has_body and ctx.body is None and route.request_buffering:
            # Read the whole body before an upstream connection is taken (capped, clocked, budgeted).
            await read_body(scope, receive)
        body: bytes | AsyncIterator[bytes] | None
        streamed = False
        if ctx.body is not None:
            body = ctx.body
        elif has_body:
            cl = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if cl is not None:
                headers.append((b"content-length", cl))
            body = _stream(receive)
            streamed = True
        else:
            body = None
        key = self.tenant_key(ctx)
        limits = ctx.policy.limits
        if not self.share.enter(key, limits.max_in_flight_per_org):
            raise ConcurrencyExceeded(detail="too many requests of your organisation in flight; retry shortly",
                                      headers={"Retry-After": RETRY_AFTER})
        cancel = Cancel()
        # The gateway's own server reports a lost connection directly (gateway/protocol.py);
        # under another server a watch reads `receive` for http.disconnect, which a streamed
        # upload is still reading (the watch would steal its chunks).
        conn = scope.get("gateway.connection")
        watch = None
        if conn is not None:
            conn.watch(cancel)
        elif not streamed:
            watch = DisconnectWatch(receive, cancel)
        try:
            await self._forward(scope, ctx, route, headers, body, cancel, send)
        finally:
            if conn is not None:
                conn.unwatch(cancel)
            elif watch is not None:
                watch.stop()
            self.share.leave(key)

    async def _forward(self, scope: Scope, ctx: RequestContext, route: object, headers: list[tuple[bytes, bytes]],
                       body: bytes | AsyncIterator[bytes] | None, cancel: Cancel, send: Send) -> None:
        target = ctx.upstream_path.encode()
        if ctx.query_string:
            target += b"?" + ctx.query_string
        method: str = scope["method"]
        upstream = ctx.policy.upstream
        started = time.perf_counter()
        try:
            resp = await self._pool(upstream.url).request(
                method, target, headers, body,
                connect_timeout=route.connect_timeout, total_timeout=route.total_timeout,  # type: ignore[attr-defined]
                pool_wait=upstream.pool_wait, cancel=cancel)
        except PoolSaturated as exc:
            raise UpstreamSaturated(detail="the upstream is saturated; retry shortly",
                                    headers={"Retry-After": RETRY_AFTER}) from exc
        except UpstreamTimeout as exc:
            raise GatewayTimeout(detail="the upstream did not answer in time") from exc
        except RequestBodyLengthError as exc:
            raise BadRequest("request.bad_framing", "the body does not match its Content-Length") from exc
        except UpstreamProtocolError as exc:
            if cancel.fired:
                raise ClientDisconnected() from exc
            raise BadGateway("upstream.bad_response", "the upstream sent an invalid response") from exc
        except UpstreamError as exc:
            if cancel.fired:
                raise ClientDisconnected() from exc
            raise BadGateway(detail="the upstream is unavailable") from exc
        except ValueError as exc:
            # The pool refuses to write a request head it considers unsafe (CR/LF, bad target);
            # earlier stages should have refused it already, so this is the client's request.
            raise BadRequest("request.invalid", "the request cannot be forwarded safely") from exc
        try:
            await self._relay(scope, ctx, resp, send, route.stream_idle_timeout)  # type: ignore[attr-defined]
        except UpstreamError as exc:
            if cancel.fired:
                raise ClientDisconnected() from exc
            err: GatewayError
            if isinstance(exc, UpstreamTimeout):
                err = GatewayTimeout(detail="the upstream did not answer in time")
            elif isinstance(exc, UpstreamProtocolError):  # e.g. an endless trailer section
                err = BadGateway("upstream.bad_response", "the upstream sent an invalid response")
            else:
                err = BadGateway(detail="the upstream broke off its answer")
            conn = scope.get("gateway.connection")
            if conn is None or not scope.get("gateway.response_started"):
                raise err from exc
            # Mid-body: the client must see a truncated response, so the connection is dropped;
            # an upstream's failure is a warning with its reason, not a server traceback.
            ctx.decision, ctx.reason = "error", err.reason
            log.warning("upstream response broke off mid-body: %s", exc,
                        extra={"request_id": ctx.request_id, "reason": err.reason})
            conn.drop(scope)
        finally:
            ctx.upstream_seconds = time.perf_counter() - started
            resp.release()

    async def _relay(self, scope: Scope, ctx: RequestContext, resp: H1Response, send: Send,
                     idle: float) -> None:
        raw = resp.headers
        named = _connection_tokens(raw)
        # CORS is decided here, never by the upstream: the audited backend reflected any origin,
        # and an upstream `Access-Control-Allow-Origin: *` would undo the gateway's policy.
        headers = [(k, v) for k, v in raw
                   if k not in RESPONSE_DROP and k not in named and not k.startswith(b"access-control-")]
        headers.append((b"x-request-id", ctx.request_id.encode()))
        headers.append((b"via", VIA))
        headers.extend(ctx.response_headers)
        ctx.status = resp.status
        if any(k == b"content-length" for k, _ in raw):
            # A sized answer (the common API case): its first piece is read before the head goes
            # out, so an upstream that dies right after its head still gets a clean 502.
            first = await resp.read_chunk(idle)
            # The head and that first piece leave in one send to the client.
            with hold_head(scope):
                await send({"type": "http.response.start", "status": resp.status, "headers": headers})
                scope["gateway.response_started"] = True
                if scope["method"] == "HEAD" or not first or resp.complete:
                    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else first})
                    return
                await send({"type": "http.response.body", "body": first, "more_body": True})
        else:
            # Chunked or close-delimited: a stream (Server-Sent Events, long poll). The head goes
            # out at once, then every piece as soon as it arrives.
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            scope["gateway.response_started"] = True
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
        while chunk := await resp.read_chunk(idle):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _stream(receive: Receive) -> AsyncIterator[bytes]:
    """Client body → upstream. An error here (cap, stall, disconnect) propagates out of the pool's
    request() as itself, and the upstream sees a broken request, never a complete truncated one."""
    while True:
        message: Message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
