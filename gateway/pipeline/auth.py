"""Authentication: a JWT from `Authorization: Bearer`, verified against the policy's key material.

Every route states its authentication (`jwt`, `none` or `webhook`); this stage handles `jwt` and
steps aside otherwise. The token is taken from the Authorization header only (never a query
parameter or cookie, which end up in logs and referrers).

Brute force (threat: token guessing from one address, without locking out the people who share
it): only a *failed verification* counts against the address — never a request without a token.
Over the threshold the address is blocked: its failing tokens get 429 `auth.too_many_failures`,
its valid tokens are still verified and served, and while the block lasts at most
`verifications_per_second` signature checks a second are spent on it (tokens already in the
verified-token cache cost no signature check and are not charged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.auth import JwtVerifier
from gateway.context import RequestContext
from gateway.errors import Unauthorized
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header_all
from gateway.ratelimit import BruteForceGuard

Event = Callable[[str, str], None]  # (scope, what): "block" | "refused" | "budget_refused"
# Refusals that say nothing about a guessed credential: no token at all, or nothing to verify with.
NOT_A_FAILURE = frozenset({"auth.missing_token", "auth.unavailable"})
# How long a token naming an unknown kid waits for the JWKS fetch it caused (that fetch has its
# own total deadline, `jwks_http_timeout`); past it the token is refused as before.
UNKNOWN_KID_WAIT = 3.0


class AuthStage:
    """Verifies the bearer token of `auth: jwt` routes; sets `ctx.claims` and `ctx.token`."""

    def __init__(self, app: ASGIApp, verifier: Callable[[], JwtVerifier | None],
                 guard: Callable[[], BruteForceGuard | None] | None = None,
                 event: Event | None = None) -> None:
        self.app = app
        self.verifier = verifier
        self.guard = guard or (lambda: None)
        self.event = event or (lambda scope, what: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or route.auth != "jwt" or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        values = header_all(scope, b"authorization")
        if not values:  # no credential at all: 401, never counted against the address
            raise Unauthorized("auth.missing_token", "a bearer token is required")
        guard = self.guard()
        blocked = await guard.blocked(ctx.client_ip) if guard is not None else None
        verifier = self.verifier()
        if verifier is None:
            raise Unauthorized("auth.unavailable", "no key material to verify tokens")
        charged = False  # this request took a check from the blocked address's budget
        try:
            ctx.token = _bearer(values)
            if blocked is not None and guard is not None and not _cached(verifier, ctx.token):
                if not guard.take_verification(ctx.client_ip):
                    self.event("auth", "budget_refused")
                    raise guard.refusal(1, "too many verifications from this blocked address; retry in a second")
                charged = True
            ctx.claims = await _verify(verifier, ctx.token)
        except Unauthorized as err:
            if guard is not None and err.reason not in NOT_A_FAILURE:
                started = await guard.record_failure(ctx.client_ip)
                if blocked is None and started is not None:
                    self.event("auth", "block")  # this failure started it: still answered 401
                elif blocked is not None or guard.known_block(ctx.client_ip) is not None:
                    self.event("auth", "refused")
                    left = guard.known_block(ctx.client_ip) or blocked or 1
                    raise guard.refusal(left) from None
            raise
        if charged and guard is not None:
            # Only a check that was taken is given back: refunding a cached token's free pass
            # would let one valid token, sent between forged ones, buy each of them a check.
            guard.refund(ctx.client_ip)
        await self.app(scope, receive, send)


async def _verify(verifier: JwtVerifier, token: str) -> dict[str, Any]:
    """Verify; on an unknown kid, wait for the JWKS fetch that kid scheduled and verify once more.

    An IdP publishes a new signing key and starts using it; until our next fetch its tokens name
    a kid we do not know. Refusing them would log every user out at each rotation, so the request
    waits (at most UNKNOWN_KID_WAIT) for the fetch. Made-up kids cannot make this expensive: a
    fetch is scheduled at most once per cool-down, and with none in flight there is no wait."""
    try:
        return verifier.verify(token)
    except Unauthorized as err:
        if err.reason != "auth.unknown_kid":
            raise
        try:
            async with asyncio.timeout(UNKNOWN_KID_WAIT):
                renewed = await verifier.await_new_keys()
        except TimeoutError:
            renewed = False
        if not renewed:
            raise
    return verifier.verify(token)


def _cached(verifier: JwtVerifier, token: str) -> bool:
    # A token in the verified-token cache is checked without a signature computation.
    cache: Any = getattr(verifier, "_cache", None)
    try:
        return cache is not None and token in cache
    except TypeError:
        return False


def _bearer(values: list[bytes]) -> str:
    if not values:
        raise Unauthorized("auth.missing_token", "a bearer token is required")
    if len(values) > 1:
        raise Unauthorized("auth.malformed", "more than one Authorization header")
    scheme, _, token = values[0].partition(b" ")
    if scheme.lower() != b"bearer" or not token or token.strip().find(b" ") >= 0:  # find: see hygiene
        raise Unauthorized("auth.malformed", "Authorization must be 'Bearer <token>'")
    try:
        return token.strip().decode("ascii")
    except UnicodeDecodeError:
        raise Unauthorized("auth.malformed", "token is not ASCII") from None
