"""The last stage: forward to the upstream and stream the answer back.

Built on `gateway.h1pool`, a lean keep-alive HTTP/1.1 pool on asyncio protocols and httptools:
httpx's pool collapses under concurrency here (encode/httpx#3215), and aiohttp's
client cost ~50 µs of CPU per request against ~15 µs (tests/bench_h1pool.py). Bodies stream both
ways; only a stage that had to read the body (tenant binding, webhook verification) leaves a
buffered copy in the context, which is then sent as is.

Header rules (RFC 9110 §7.6.1): hop-by-hop headers and every header named in `Connection` are
dropped both ways; `X-Forwarded-*`, `Forwarded`, `Via` and `X-Request-ID` are rebuilt, never passed
through; client-supplied identity headers are dropped in every spelling (`X-User-Id`,
`x_user_id`, ...), because some servers fold `_` into `-` and would believe them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from gateway.context import RequestContext
from gateway.errors import BadGateway, BadRequest, GatewayTimeout
from gateway.h1pool import (
    H1Pool,
    H1Response,
    RequestBodyLengthError,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.pipeline.base import Message, Receive, Scope, Send

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
        if b"_" in k or k.startswith(IDENTITY_PREFIXES):
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


class Forwarder:
    """Terminal ASGI app: one keep-alive connection pool per upstream, per worker process."""

    def __init__(self, identity: Callable[[RequestContext], str | None] | None = None) -> None:
        self.identity = identity
        self.pools: dict[str, H1Pool] = {}
        self.pool_size = 256
        self.keepalive = 30.0
        self.started = False

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or not self.started:  # routing guarantees a route; fail closed anyway
            raise BadGateway("gateway.not_ready", "gateway is not ready")
        identity = self.identity(ctx) if self.identity is not None else None
        headers = request_headers(scope, ctx, route.forward_token, identity)
        body: bytes | AsyncIterator[bytes] | None
        if ctx.body is not None:
            body = ctx.body
        elif scope.get("gateway.has_body"):
            cl = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if cl is not None:
                headers.append((b"content-length", cl))
            body = _stream(receive)
        else:
            body = None
        target = ctx.upstream_path.encode()
        if ctx.query_string:
            target += b"?" + ctx.query_string
        method: str = scope["method"]
        started = time.perf_counter()
        try:
            resp = await self._pool(ctx.policy.upstream.url).request(
                method, target, headers, body,
                connect_timeout=route.connect_timeout, total_timeout=route.total_timeout)
        except UpstreamTimeout as exc:
            raise GatewayTimeout(detail="the upstream did not answer in time") from exc
        except RequestBodyLengthError as exc:
            raise BadRequest("request.bad_framing", "the body does not match its Content-Length") from exc
        except UpstreamError as exc:
            raise BadGateway(detail="the upstream is unavailable") from exc
        except ValueError as exc:
            # The pool refuses to write a request head it considers unsafe (CR/LF, bad target);
            # earlier stages should have refused it already, so this is the client's request.
            raise BadRequest("request.invalid", "the request cannot be forwarded safely") from exc
        try:
            await self._relay(scope, ctx, resp, send)
        finally:
            ctx.upstream_seconds = time.perf_counter() - started
            resp.release()

    async def _relay(self, scope: Scope, ctx: RequestContext, resp: H1Response, send: Send) -> None:
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
        try:
            first = await resp.read_chunk()
        except UpstreamTimeout as exc:
            raise GatewayTimeout(detail="the upstream did not answer in time") from exc
        except UpstreamError as exc:
            raise BadGateway(detail="the upstream broke off its answer") from exc
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        scope["gateway.response_started"] = True
        if scope["method"] == "HEAD" or not first:
            await send({"type": "http.response.body", "body": b""})
            return
        chunk = first
        while chunk:
            nxt = await resp.read_chunk()
            await send({"type": "http.response.body", "body": chunk, "more_body": bool(nxt)})
            chunk = nxt


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
