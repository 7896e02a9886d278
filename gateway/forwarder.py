"""The last stage: forward to the upstream and stream the answer back.

Built on aiohttp's client: httpx's pool collapses under concurrency on this machine (DESIGN.md §4,
encode/httpx#3215). Bodies stream both ways; only a stage that had to read the body (tenant
binding, webhook verification) leaves a buffered copy in the context, which is then sent as is.

Header rules (RFC 9110 §7.6.1): hop-by-hop headers and every header named in `Connection` are
dropped both ways; `X-Forwarded-*`, `Forwarded`, `Via` and `X-Request-ID` are rebuilt, never passed
through; client-supplied identity headers are dropped in every spelling (`X-User-Id`,
`x_user_id`, ...), because some servers fold `_` into `-` and would believe them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
from yarl import URL

from gateway.context import RequestContext
from gateway.errors import BadGateway, GatewayError, GatewayTimeout
from gateway.pipeline.base import Message, Receive, Scope, Send

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})
# Rebuilt by the gateway (or by aiohttp: host, content-length), never taken from the client.
REBUILT = frozenset({
    b"host", b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-prefix", b"forwarded", b"via",
    b"x-real-ip", b"x-request-id", b"x-gateway-identity",
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


def is_identity_header(name: bytes) -> bool:
    norm = name.lower().replace(b"_", b"-")
    return norm.startswith(IDENTITY_PREFIXES) or norm in REBUILT


def request_headers(scope: Scope, ctx: RequestContext, forward_token: bool,
                    identity: str | None) -> list[tuple[str, str]]:
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    named = _connection_tokens(raw)
    out: list[tuple[str, str]] = []
    for k, v in raw:
        if k in HOP_BY_HOP or k in named or k in REBUILT:
            continue
        if k == b"authorization":
            if forward_token:
                out.append(("Authorization", v.decode("latin-1")))
            continue
        if b"_" in k or k.startswith(IDENTITY_PREFIXES) or is_identity_header(k):
            continue
        out.append((k.decode("latin-1"), v.decode("latin-1")))
    host = next((v for k, v in raw if k == b"host"), None)
    out.append(("X-Forwarded-For", ctx.client_ip))
    out.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    if host is not None:
        out.append(("X-Forwarded-Host", host.decode("latin-1")))
    out.append(("Via", VIA.decode()))
    out.append(("X-Request-ID", ctx.request_id))
    if identity is not None:
        out.append(("X-Gateway-Identity", identity))
    return out


class Forwarder:
    """Terminal ASGI app: one pooled aiohttp session per worker process."""

    def __init__(self, identity: Callable[[RequestContext], str | None] | None = None) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.identity = identity
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    async def start(self, pool_size: int = 256, keepalive: float = 30.0) -> None:
        connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=pool_size,
                                         keepalive_timeout=keepalive, ttl_dns_cache=60)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # Never keep cookies between requests of different users.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            max_line_size=16384, max_field_size=16384,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _timeout(self, connect: float, total: float) -> aiohttp.ClientTimeout:
        key = (connect, total)
        t = self._timeouts.get(key)
        if t is None:
            t = self._timeouts[key] = aiohttp.ClientTimeout(total=total, sock_connect=connect,
                                                            connect=connect)
        return t

    def _url(self, base: str, path: str, query: bytes) -> URL:
        # Path and query were validated and re-encoded by earlier stages: no second encoding.
        text = base + path
        if query:
            text += "?" + query.decode("latin-1")
        return URL(text, encoded=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or self.session is None:  # routing guarantees a route; fail closed anyway
            raise BadGateway("gateway.not_ready", "gateway is not ready")
        identity = self.identity(ctx) if self.identity is not None else None
        headers = request_headers(scope, ctx, route.forward_token, identity)
        body_error: list[BaseException] = []
        data: bytes | AsyncIterator[bytes] | None
        if ctx.body is not None:
            data = ctx.body
            if ctx.body_replaced or ctx.body:
                headers.append(("Content-Length", str(len(ctx.body))))
        elif scope.get("gateway.has_body"):
            cl = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if cl is not None:
                headers.append(("Content-Length", cl.decode()))
            data = _stream(receive, body_error)
        else:
            data = None
        url = self._url(ctx.policy.upstream.url, ctx.upstream_path, ctx.query_string)
        started = asyncio.get_running_loop().time()
        try:
            resp = await self.session.request(
                scope["method"], url, headers=headers, data=data, allow_redirects=False,
                timeout=self._timeout(route.connect_timeout, route.total_timeout),
            )
        except GatewayError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if body_error:
                raise body_error[0] from None
            raise GatewayTimeout(detail="the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if body_error:
                raise body_error[0] from None
            raise BadGateway(detail="the upstream is unavailable") from exc
        try:
            await self._relay(scope, ctx, resp, send)
        finally:
            ctx.upstream_seconds = asyncio.get_running_loop().time() - started
            resp.release()

    async def _relay(self, scope: Scope, ctx: RequestContext, resp: aiohttp.ClientResponse, send: Send) -> None:
        raw = list(resp.raw_headers)
        named = _connection_tokens(raw)
        headers = [(k.lower(), v) for k, v in raw if k.lower() not in RESPONSE_DROP and k.lower() not in named]
        headers.append((b"x-request-id", ctx.request_id.encode()))
        headers.append((b"via", VIA))
        headers.extend(ctx.response_headers)
        ctx.status = resp.status
        try:
            first = await resp.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc, TimeoutError):
                raise GatewayTimeout(detail="the upstream did not answer in time") from exc
            raise BadGateway(detail="the upstream broke off its answer") from exc
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        scope["gateway.response_started"] = True
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        chunk = first
        while chunk:
            nxt = await resp.content.readany()
            await send({"type": "http.response.body", "body": chunk, "more_body": bool(nxt)})
            chunk = nxt
        if not first:
            await send({"type": "http.response.body", "body": b""})


async def _stream(receive: Receive, errors: list[BaseException]) -> AsyncIterator[bytes]:
    """Client body → upstream. An error here (cap, stall, disconnect) aborts the upstream request
    mid-body, so the upstream sees a broken request, never a complete truncated one."""
    while True:
        try:
            message: Message = await receive()
        except BaseException as exc:
            errors.append(exc)
            raise
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
