"""Running synthetic requests through a private `Gateway` built around the loaded policy.

Nothing here re-implements a decision: the forwarder is swapped for the stub upstream, a probe sits
between every two stages, and rate limits and webhook dedupe run on process memory, never on the
shared Redis. Shared with `gateway test-policy` (gateway/policytest.py).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt

from gateway.app import Gateway
from gateway.context import RequestContext
from gateway.explain.model import MEMORY_NOTE, ExplainRequest, Explanation, UsageError
from gateway.explain.steps import _steps
from gateway.explain.stub import StubUpstream, _instrument, _redact, _Trace
from gateway.pipeline.base import Message, Scope
from gateway.policy.compiled import CompiledPolicy, CompiledRoute
from gateway.settings import Settings


def mint_claims_token(gw: Gateway, claims: dict[str, Any]) -> str:
    """A short-lived HS256 token with exactly `claims` (+ iat/exp/iss/aud unless given)."""
    if gw.settings.production:
        raise UsageError("--claims mints a development token; refused when GATEWAY_ENV=production")
    jwt_policy = gw.jwt_policy
    secret = gw.settings.effective_jwt_secret()
    if jwt_policy is None or not jwt_policy.uses_hmac or secret is None:
        raise UsageError("--claims needs an HS256 policy and secret (GATEWAY_JWT_SECRET); use --token")
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + 300}
    if jwt_policy.issuer:
        payload["iss"] = jwt_policy.issuer
    if jwt_policy.audience:
        aud = jwt_policy.audience
        payload["aud"] = aud if isinstance(aud, str) else aud[0]
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def _wire(text: str) -> bytes:
    """What a client would put on the wire for `text` from the command line: UTF-8, and bytes that
    were not UTF-8 (kept as surrogates when argv was decoded) exactly as given, so the pipeline
    judges them as it would on the wire instead of explain failing to encode them."""
    return text.encode("utf-8", "surrogateescape")


def build_scope(req: ExplainRequest, token: str | None) -> Scope:
    try:
        parts = urlsplit(req.url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for http://[::1
        raise UsageError(f"URL is malformed: {exc} (got {req.url[:200]!r})") from None
    if not parts.path.startswith("/") or parts.fragment:
        raise UsageError(f"URL must be a path such as /v1/agents?orgId=x (got {req.url!r})")
    try:
        host = (parts.netloc or "gateway.explain").encode("idna")
    except UnicodeError as exc:
        raise UsageError(f"URL host is not a valid name: {exc} (got {parts.netloc[:200]!r})") from None
    headers = [(b"host", host)]
    headers += [(_wire(k.strip().lower()), _wire(v.strip())) for k, v in req.headers]
    names = {k for k, _ in headers}
    if req.origin is not None:
        headers.append((b"origin", _wire(req.origin)))
    if token is not None:
        headers.append((b"authorization", b"Bearer " + _wire(token)))
    if req.body is not None and b"content-length" not in names and b"transfer-encoding" not in names:
        headers.append((b"content-length", str(len(req.body)).encode()))
    raw_path = _wire(parts.path)
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": req.method.upper(),
            "scheme": parts.scheme or "https", "path": unquote(parts.path), "raw_path": raw_path,
            "query_string": _wire(parts.query), "root_path": "", "headers": headers,
            "client": (req.client_ip, 50000), "server": ("127.0.0.1", 8080)}


async def run_requests(policy: CompiledPolicy, settings: Settings, env: dict[str, str],
                       requests: list[ExplainRequest]) -> list[Explanation]:
    """Send `requests` in order through one private gateway (state such as rate-limit counters
    carries over between them) and explain each."""
    settings = settings.model_copy(update={"redis_url": None, "audit_log": None})
    gw = Gateway(settings, policy, env)
    gw.observers.clear()  # no audit lines or metrics for synthetic requests
    trace = _Trace()
    gw.forwarder = StubUpstream(gw, trace)  # type: ignore[assignment]
    gw.pipeline = gw.build_pipeline()
    labels = _instrument(gw.pipeline, trace)
    try:
        if gw.jwks is not None:
            await gw.jwks.start()
        return [await _run_one(gw, trace, labels, req) for req in requests]
    finally:
        if gw.jwks is not None:
            await gw.jwks.close()
        if gw.limiter is not None:
            await gw.limiter.aclose()
        await gw.dedupe.close()


async def _run_one(gw: Gateway, trace: _Trace, labels: list[str], req: ExplainRequest) -> Explanation:
    trace.entered, trace.error, trace.upstream = [], None, None
    token = mint_claims_token(gw, req.claims) if req.claims is not None else req.token
    scope = build_scope(req, token)
    sent: list[Message] = []
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if body_given:
            return {"type": "http.disconnect"}
        body_given = True
        return {"type": "http.request", "body": req.body or b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await gw(scope, receive, send)
    status = int(sent[0]["status"]) if sent else 0
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in (sent[0]["headers"] if sent else [])]
    ctx: RequestContext | None = scope.get("gateway")
    reason = detail = None
    if trace.error is not None:
        reason, detail = trace.error[1].reason, trace.error[1].detail
    elif ctx is not None and ctx.reason:
        reason = ctx.reason
    route = ctx.route if ctx is not None else None
    steps = _steps(gw, labels, trace, scope, ctx, status)
    notes = [MEMORY_NOTE, "nothing was sent to the real upstream"]
    if req.claims is not None:
        notes.append("the bearer token was minted from the given claims with the development secret")
    shown_url = _redact(req.url, ctx) if ctx is not None else req.url
    return Explanation(req.method.upper(), shown_url, 0 < status < 400, status, reason, detail,
                       _route_info(route), steps, trace.upstream, headers, notes)


def _route_info(route: CompiledRoute | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {"id": route.id, "source": route.source, "methods": sorted(route.methods - {"HEAD"}),
            "path": route.template.text, "upstream": route.upstream_template.text, "auth": route.auth}
