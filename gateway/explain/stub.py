"""The instruments put into the private gateway: a probe in front of every stage and a stub upstream.

Threat: the stub's record ends up in transcripts, so secret headers are replaced by `<redacted>`,
the identity assertion keeps only its decoded payload (never the signature), and the path
parameters of `url_token` webhook routes (the secret itself) are redacted from paths and URLs.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from gateway.app import Gateway
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.explain.model import REDACTED, Upstream
from gateway.forwarder import request_headers
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send

_LABELS = {
    "RequestIdStage": "request id", "ClientAddressStage": "client address", "HygieneStage": "hygiene",
    "RoutingStage": "route match", "AuditGuardStage": "audit guard", "CorsStage": "cors",
    "AddressLimitStage": "address limits", "BodyLimitStage": "size caps", "AuthStage": "authentication",
    "WebhookStage": "webhook",
    "TenantStage": "tenant", "AuthzStage": "authorization", "RateLimitStage": "rate limit",
    "StubUpstream": "forward", "DocsStage": "docs", "DeprecationStage": "deprecation",
    "ValidationStage": "validation",
}
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class _Trace:
    def __init__(self) -> None:
        self.entered: list[str] = []
        self.error: tuple[str, GatewayError] | None = None
        self.upstream: Upstream | None = None


class _Probe:
    """Sits in front of one stage: notes that the request reached it and whether it raised."""

    def __init__(self, label: str, app: ASGIApp, trace: _Trace) -> None:
        self.label, self.app, self.trace = label, app, trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.trace.entered.append(self.label)
        try:
            await self.app(scope, receive, send)
        except GatewayError as err:
            if self.trace.error is None:  # the innermost probe sees it first: that stage raised
                self.trace.error = (self.label, err)
            raise


class StubUpstream:
    """Terminal app in place of the forwarder: builds the same upstream headers, answers 200."""

    def __init__(self, gateway: Gateway, trace: _Trace) -> None:
        self.gateway, self.trace = gateway, trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None:
            raise GatewayError(detail="no route reached the forwarder")
        identity = self.gateway.identity_for(ctx)
        headers = request_headers(scope, ctx, route.forward_token, identity)
        body = ctx.body
        if body is None:
            body = b""
            while scope.get("gateway.has_body"):
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        self.trace.upstream = _upstream(scope["method"], ctx, headers, body, identity)
        answer = b'{"explain":"stub upstream"}'
        ctx.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()),
            (b"x-request-id", ctx.request_id.encode()), *ctx.response_headers]})
        await send({"type": "http.response.body", "body": answer})


def _upstream(method: str, ctx: RequestContext, headers: list[tuple[bytes, bytes]], body: bytes,
              identity: str | None) -> Upstream:
    shown = []
    for k, v in headers:
        name = k.decode("latin-1")
        if name == "x-gateway-identity":
            value = "<signed assertion; payload shown as identity>"
        elif name in _SECRET_HEADERS:
            value = REDACTED
        else:
            value = v.decode("latin-1")
        shown.append((name, value))
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    payload = None
    if identity is not None:
        part = identity.split(".")[1]  # the payload only: the signature never leaves this function
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return Upstream(method, _redact(ctx.upstream_path, ctx), ctx.query_string.decode("latin-1"), shown,
                    text, parsed, payload)


def _redact(text: str, ctx: RequestContext) -> str:
    route = ctx.route
    if route is not None and route.webhook is not None and route.webhook.verifier.scheme == "url_token":
        for value in ctx.path_params.values():
            if value:
                text = text.replace(value, REDACTED)
    return text


def _instrument(pipeline: ASGIApp, trace: _Trace) -> list[str]:
    """Put a probe in front of every stage after the outermost; return the stage labels in order."""
    labels = [_LABELS.get(type(pipeline).__name__, type(pipeline).__name__)]
    node: Any = pipeline
    while hasattr(node, "app"):
        nxt = node.app
        label = _LABELS.get(type(nxt).__name__, type(nxt).__name__)
        node.app = _Probe(label, nxt, trace)
        labels.append(label)
        node = nxt
    return labels
