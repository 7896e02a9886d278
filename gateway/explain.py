"""`gateway explain`: why one request is allowed or denied, by running the real pipeline.

Nothing here re-implements a decision. A private `Gateway` is built around the loaded policy, its
forwarder is swapped for a stub upstream that records what would be sent and answers 200, and a
probe between every two stages records how far the request got and which stage raised. What a
stage "steps aside" from is read from the route's compiled parts, the same ones the stages read.

Threat: an explain transcript is pasted into pull requests and tickets, so it never contains a
token, a secret or the identity assertion's signature (its payload is decoded and shown instead);
path parameters of `url_token` webhook routes are the secret and are shown as `<redacted>`.
Rate limits and webhook dedupe run on process memory here, never on the shared Redis.

The runner (`run_requests`) is shared with `gateway test-policy` (gateway/policytest.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt

from gateway.app import Gateway
from gateway.auth import claim_at
from gateway.context import RequestContext
from gateway.errors import GatewayError, PolicyError
from gateway.forwarder import request_headers
from gateway.pipeline.base import ASGIApp, Message, Receive, Scope, Send
from gateway.policy.compiled import CompiledPolicy, CompiledRoute
from gateway.settings import Settings, effective_env

REDACTED = "<redacted>"
MEMORY_NOTE = "rate limits and webhook dedupe use an in-memory store here (explain never touches Redis)"
_LABELS = {
    "RequestIdStage": "request id", "ClientAddressStage": "client address", "HygieneStage": "hygiene",
    "RoutingStage": "route match", "AuditGuardStage": "audit guard", "CorsStage": "cors",
    "BodyLimitStage": "size caps", "AuthStage": "authentication", "WebhookStage": "webhook",
    "TenantStage": "tenant", "AuthzStage": "authorization", "RateLimitStage": "rate limit",
    "StubUpstream": "forward",
}
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class UsageError(ValueError):
    """The request cannot be explained as given (bad URL, claims in production, no dev secret)."""


@dataclass
class ExplainRequest:
    """One synthetic request. `claims` are minted into a dev token; `token` is sent as given."""

    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    token: str | None = None
    claims: dict[str, Any] | None = None
    origin: str | None = None
    client_ip: str = "203.0.113.10"


@dataclass
class Step:
    stage: str
    decision: str  # passed | stepped aside | denied | answered | not reached | forwarded
    note: str = ""


@dataclass
class Upstream:
    """What the stub upstream received: the request the real forwarder would have sent."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: str
    json: Any
    identity: dict[str, Any] | None


@dataclass
class Explanation:
    """The outcome of one request, stage by stage."""

    method: str
    url: str
    allowed: bool
    status: int
    reason: str | None
    detail: str | None
    route: dict[str, Any] | None
    steps: list[Step]
    upstream: Upstream | None
    response_headers: list[tuple[str, str]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def denied_by(self) -> str | None:
        return next((s.stage for s in self.steps if s.decision == "denied"), None)


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


def build_scope(req: ExplainRequest, token: str | None) -> Scope:
    parts = urlsplit(req.url)
    if not parts.path.startswith("/") or parts.fragment:
        raise UsageError(f"URL must be a path such as /v1/agents?orgId=x (got {req.url!r})")
    headers = [(b"host", (parts.netloc or "gateway.explain").encode("idna"))]
    headers += [(k.strip().lower().encode("latin-1"), v.strip().encode("utf-8")) for k, v in req.headers]
    names = {k for k, _ in headers}
    if req.origin is not None:
        headers.append((b"origin", req.origin.encode("utf-8")))
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("ascii")))
    if req.body is not None and b"content-length" not in names and b"transfer-encoding" not in names:
        headers.append((b"content-length", str(len(req.body)).encode()))
    raw_path = parts.path.encode("utf-8")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": req.method.upper(),
            "scheme": parts.scheme or "https", "path": unquote(parts.path), "raw_path": raw_path,
            "query_string": parts.query.encode("utf-8"), "root_path": "", "headers": headers,
            "client": (req.client_ip, 50000), "server": ("127.0.0.1", 8080)}


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


def _steps(gw: Gateway, labels: list[str], trace: _Trace, scope: Scope, ctx: RequestContext | None,
           status: int) -> list[Step]:
    entered = set(trace.entered)
    if ctx is not None:
        entered.add(labels[0])
    out = []
    for i, label in enumerate(labels):
        if label not in entered:
            out.append(Step(label, "not reached"))
        elif trace.error is not None and trace.error[0] == label:
            err = trace.error[1]
            out.append(Step(label, "denied", f"{err.status} {err.reason}: {err.detail}"))
        elif i == len(labels) - 1:
            out.append(Step(label, "forwarded", "stub upstream answered 200; nothing was sent"))
        elif labels[i + 1] not in entered:
            what = "preflight answered" if scope.get("gateway.preflight") else "answered here"
            out.append(Step(label, "answered", f"{what} with {status}"))
        elif ctx is None:
            out.append(Step(label, "passed"))
        else:
            aside, note = _part(gw, label, scope, ctx)
            out.append(Step(label, "stepped aside" if aside else "passed", note))
    return out


def _part(gw: Gateway, label: str, scope: Scope, ctx: RequestContext) -> tuple[bool, str]:
    """(stepped aside?, note) for a stage the request passed, from the part of the route it reads."""
    route = ctx.route
    if label == "client address":
        how = "X-Forwarded-For walked through trusted proxies" if gw.proxies.networks else \
            "peer address; no trusted proxies configured"
        return False, f"client {ctx.client_ip} ({how})"
    if label == "hygiene":
        return False, "URL, header block and path are canonical and within limits"
    if route is None:
        return False, ""
    claims = ctx.claims or {}
    jwt_policy = gw.jwt_policy
    if label == "route match":
        return False, f"{route.id} ({route.source})"
    if label == "cors":
        origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
        if route.cors is None:
            return True, "no CORS policy on this route"
        if origin is None:
            return True, "no Origin header"
        if any(k == b"access-control-allow-origin" for k, _ in ctx.response_headers):
            return False, f"origin {origin} allowed"
        return False, f"origin {origin} not allowed: no Access-Control-Allow-Origin (the browser hides the answer)"
    if label == "size caps":
        return False, f"body within {route.max_body_bytes} bytes"
    if label == "authentication":
        if route.auth != "jwt":
            return True, f"auth: {route.auth}"
        return False, f"bearer token verified (sub={claims.get('sub')!r})"
    if label == "webhook":
        if route.webhook is None:
            return True, "not a webhook route"
        return False, f"{route.webhook.verifier.scheme} verified"
    if label == "tenant":
        if route.tenant is None:
            return True, "no tenant binding on this route"
        org = claim_at(claims, jwt_policy.org_claim if jwt_policy else "org_id")
        done = []
        if route.tenant.binds_query:
            done.append("query already names it" if ctx.query_string == scope["query_string"]
                        else "query changed (org added or rewritten)")
        if route.tenant.needs_body:
            done.append("body changed (org added or rewritten)" if ctx.body_replaced else "body already names it")
        return False, f"bound to org {org!r}: " + ", ".join(done or ["path checked"])
    if label == "authorization":
        if not route.roles and not route.scopes:
            return True, "route requires no role or scope"
        role = claim_at(claims, jwt_policy.role_claim if jwt_policy else "org_role")
        return False, f"role {role!r} is one of {sorted(route.roles or [])}" + (
            f"; scopes {sorted(route.scopes)} present" if route.scopes else "")
    if label == "rate limit":
        if route.rate_limit is None:
            return True, "no rate limit"
        return False, f"within limit {route.rate_limit.name!r} (in-memory counters)"
    return False, ""


def format_text(ex: Explanation) -> str:
    verdict = "ALLOWED" if ex.allowed else "DENIED"
    lines = [f"{ex.method} {ex.url}  ->  {verdict} {ex.status}" + (f" {ex.reason}" if ex.reason else "")]
    if ex.route is not None:
        r = ex.route
        lines.append(f"route: {r['id']} ({r['source']})  {','.join(r['methods'])} {r['path']} -> "
                     f"{r['upstream']}  auth: {r['auth']}")
    elif ex.reason is None:
        lines.append("route: none (answered by the gateway itself, outside the pipeline)")
    else:
        lines.append(f"route: none matched ({ex.detail or ex.reason})")
    lines.append("stages:")
    for s in ex.steps:
        decision = s.decision.upper() if s.decision == "denied" else s.decision
        lines.append(f"  {s.stage:15} {decision:14} {s.note}".rstrip())
    if ex.upstream is not None:
        up = ex.upstream
        lines.append("upstream (would be sent):")
        lines.append(f"  {up.method} {up.path}" + (f"?{up.query}" if up.query else ""))
        if up.identity is not None:
            lines.append(f"  identity: {json.dumps(up.identity, sort_keys=True)}")
        if up.body:
            lines.append(f"  body: {up.body}")
        lines.extend(f"  {k}: {v}" for k, v in up.headers)
    lines.append("response headers:")
    lines.extend(f"  {k}: {v}" for k, v in ex.response_headers)
    lines.extend(f"note: {n}" for n in ex.notes)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway explain",
                                description="explain why the policy allows or denies one request")
    p.add_argument("--policy", help="policy directory (default: GATEWAY_POLICY_DIR)")
    p.add_argument("method")
    p.add_argument("url", help="path and query, e.g. '/v1/agents?orgId=org-a'")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--token", help="a bearer token, verified with the configured secret / JWKS")
    who.add_argument("--claims", help="JSON claims minted into a development token (not in production)")
    p.add_argument("--body", help="request body (JSON; Content-Type defaults to application/json)")
    p.add_argument("--origin")
    p.add_argument("--client-ip", default="203.0.113.10")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def request_from_args(args: argparse.Namespace) -> ExplainRequest:
    headers = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"-H expects 'Name: value' (got {raw.split(':')[0]!r}...)")
        headers.append((name.strip(), value.strip()))
    claims = None
    if args.claims is not None:
        try:
            claims = json.loads(args.claims)
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise UsageError("--claims must be a JSON object")
    body = None
    if args.body is not None:
        body = args.body.encode("utf-8")
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
    return ExplainRequest(args.method, args.url, headers, body, args.token, claims, args.origin, args.client_ip)


def load_for_cli(policy_dir: str | None) -> tuple[CompiledPolicy, Settings, dict[str, str]]:
    """Settings from the environment and the policy they name (or `policy_dir`); PolicyError on errors."""
    from gateway.policy.loader import load_policy

    settings = Settings()
    env = effective_env(settings)
    return load_policy(policy_dir or settings.policy_dir, env, settings.production), settings, env


def explain_main(argv: list[str]) -> int:
    """`gateway explain ...`: 0 allowed, 1 denied, 2 usage or policy errors."""
    import asyncio

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        req = request_from_args(args)
        policy, settings, env = load_for_cli(args.policy)
        (ex,) = asyncio.run(run_requests(policy, settings, env, [req]))
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"gateway explain: {len(exc.errors)} policy error(s)", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"gateway explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(ex.to_dict(), indent=2) if args.json else format_text(ex))
    return 0 if ex.allowed else 1
