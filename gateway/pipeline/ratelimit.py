"""Rate limiting, after authentication so keys can use `sub` and org as well as the client address.

Limits keyed by the client address alone were already applied by the address-limit stage, before
the body was read and before the token was verified; this stage steps aside for them.

Storage is shared by all replicas through Redis when `GATEWAY_REDIS_URL` is set; what happens when
Redis fails is the policy's `on_storage_error` (see `gateway.ratelimit`).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.context import RequestContext
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send
from gateway.ratelimit import RateLimiter, claim_values

Outcome = Callable[[str, str], None]


class RateLimitStage:
    """Counts the request against its route's limits; 429 `ratelimit.exceeded` over them."""

    def __init__(self, app: ASGIApp, limiter: Callable[[], RateLimiter], org_claim: str,
                 outcome: Outcome | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.org_claim = org_claim
        self.outcome = outcome or (lambda route, what: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        compiled = route.rate_limit if route is not None else None
        if compiled is None or route is None or compiled.by_address or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        sub, org = claim_values(ctx.claims, self.org_claim) if ctx.claims else (None, None)
        decision = await self.limiter().hit(route.id, compiled, ip=ctx.client_ip, sub=sub, org=org)
        if decision.shadow_denied:
            self.outcome(route.id, "shadow_denied")
        if not decision.allowed:
            self.outcome(route.id, "denied")
            decision.raise_if_denied(route.id)
        self.outcome(route.id, "allowed")
        ctx.response_headers.extend(decision.headers)
        await self.app(scope, receive, send)
