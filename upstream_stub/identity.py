"""The gateway's signed identity, verified on every route but `/healthz`.

Threat: a request that reaches the upstream without passing the gateway (a misrouted load balancer,
a compromised neighbour on the network). Such a request carries no valid `X-Gateway-Identity` and
gets 401; a valid one still only reaches its own org's rows. The assertion is short-lived (≤ 60 s)
and HS256 only, so a leaked one is worth little and `alg` games are impossible.

Kinds: `user` (sub, org_id, org_role) for the API; `service` (sub `gateway:<route id>`, no org) only
for the webhook receivers and the public OAuth callback — and those accept nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jwt
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from upstream_stub.errors import ApiError, Forbidden, Unauthorized, problem, request_id_of

HEADER = "x-gateway-identity"
ISSUER = "edge-gateway"
MAX_LIFETIME = 60
LEEWAY = 5
ROLES = frozenset({"owner", "admin", "member", "viewer"})
WRITERS = frozenset({"owner", "admin", "member"})
ADMINS = frozenset({"owner", "admin"})
# The only paths a service identity may call (and the only ones a user identity may not).
SERVICE_PATHS = frozenset({
    "/webhooks/kommo", "/webhooks/kommo-chat", "/webhooks/kommo/revoked", "/kommo/oauth/callback",
})
PUBLIC_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the gateway says is calling; `org_id`/`role` are empty for a service identity."""

    kind: Literal["user", "service"]
    sub: str
    org_id: str
    role: str
    rid: str


class IdentityVerifier:
    """Checks signature, issuer, audience, expiry and lifetime of one assertion."""

    def __init__(self, secret: str, audience: str) -> None:
        if not secret:
            raise ValueError("GATEWAY_IDENTITY_SECRET is required")
        self._secret = secret
        self._audience = audience

    def verify(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=self._audience, issuer=ISSUER,
                leeway=LEEWAY, options={"require": ["exp", "iat", "aud", "iss", "kind", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("identity.expired", "gateway identity expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("identity.invalid", "gateway identity is invalid") from None
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float) or exp - iat > MAX_LIFETIME:
            raise Unauthorized("identity.invalid", "gateway identity lives too long")
        return _identity(claims)


def _text(claims: dict[str, Any], key: str, limit: int = 256) -> str:
    value = claims.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise Unauthorized("identity.invalid", f"gateway identity lacks a valid {key}")
    return value


def _identity(claims: dict[str, Any]) -> Identity:
    kind, sub = claims.get("kind"), _text(claims, "sub")
    rid = claims.get("rid") if isinstance(claims.get("rid"), str) else ""
    if kind == "user":
        role = _text(claims, "org_role", 16)
        if role not in ROLES:
            raise Unauthorized("identity.invalid", "gateway identity has an unknown org_role")
        return Identity("user", sub, _text(claims, "org_id"), role, str(rid)[:128])
    if kind == "service":
        if not sub.startswith("gateway:") or "org_id" in claims:
            raise Unauthorized("identity.invalid", "service identity is malformed")
        return Identity("service", sub, "", "", str(rid)[:128])
    raise Unauthorized("identity.invalid", "gateway identity has an unknown kind")


class IdentityMiddleware:
    """Pure ASGI: verifies the identity before any route runs (fail closed for every new route)."""

    def __init__(self, app: ASGIApp, verifier: IdentityVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            scope.setdefault("state", {})["identity"] = self._check(request)
        except ApiError as err:
            await problem(err, request_id_of(scope))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, request: Request) -> Identity:
        tokens = request.headers.getlist(HEADER)
        if not tokens:
            raise Unauthorized("identity.missing", "gateway identity is missing")
        if len(tokens) > 1 or len(tokens[0]) > 4096:
            raise Unauthorized("identity.invalid", "gateway identity is ambiguous")
        ident = self.verifier.verify(tokens[0])
        wants_service = request.url.path in SERVICE_PATHS
        if wants_service != (ident.kind == "service"):
            raise Forbidden("identity.wrong_kind", f"{ident.kind} identity not accepted on this route")
        return ident


def user(request: Request, roles: frozenset[str] = ROLES) -> Identity:
    """The caller's user identity, refused unless its role is in `roles`."""
    ident = request.scope.get("state", {}).get("identity")
    if not isinstance(ident, Identity) or ident.kind != "user":
        raise Unauthorized("identity.missing", "gateway identity is missing")
    if ident.role not in roles:
        raise Forbidden("authz.forbidden", "your role may not do this")
    return ident


def service(request: Request) -> Identity:
    ident = request.scope.get("state", {}).get("identity")
    if not isinstance(ident, Identity) or ident.kind != "service":
        raise Unauthorized("identity.missing", "gateway identity is missing")
    return ident
