"""Authentication: a JWT from `Authorization: Bearer`, verified against the policy's key material.

Every route states its authentication (`jwt`, `none` or `webhook`); this stage handles `jwt` and
steps aside otherwise. The token is taken from the Authorization header only (never a query
parameter or cookie, which end up in logs and referrers). Brute force: failures are counted per
client address and, over the policy threshold, the address is refused before any token parsing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.auth import JwtVerifier
from gateway.context import RequestContext
from gateway.errors import Unauthorized
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header_all

FailureHook = Callable[[str], Awaitable[None]]
BlockCheck = Callable[[str], Awaitable[None]]


class AuthStage:
    """Verifies the bearer token of `auth: jwt` routes; sets `ctx.claims` and `ctx.token`."""

    def __init__(self, app: ASGIApp, verifier: Callable[[], JwtVerifier | None],
                 blocked: BlockCheck | None = None, failed: FailureHook | None = None) -> None:
        self.app = app
        self.verifier = verifier
        self.blocked = blocked
        self.failed = failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or route.auth != "jwt" or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        if self.blocked is not None:
            await self.blocked(ctx.client_ip)
        try:
            ctx.token = _bearer(header_all(scope, b"authorization"))
            verifier = self.verifier()
            if verifier is None:
                raise Unauthorized("auth.unavailable", "no key material to verify tokens")
            ctx.claims = verifier.verify(ctx.token)
        except Unauthorized:
            if self.failed is not None:
                await self.failed(ctx.client_ip)
            raise
        await self.app(scope, receive, send)


def _bearer(values: list[bytes]) -> str:
    if not values:
        raise Unauthorized("auth.missing_token", "a bearer token is required")
    if len(values) > 1:
        raise Unauthorized("auth.malformed", "more than one Authorization header")
    scheme, _, token = values[0].partition(b" ")
    if scheme.lower() != b"bearer" or not token or b" " in token.strip():
        raise Unauthorized("auth.malformed", "Authorization must be 'Bearer <token>'")
    try:
        return token.strip().decode("ascii")
    except UnicodeDecodeError:
        raise Unauthorized("auth.malformed", "token is not ASCII") from None
