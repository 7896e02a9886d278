"""Per-address checks that cost no body read and no signature: the cheap refusals first.

Threat: a flood that makes the gateway read 1 MB bodies, compute HMACs or verify signatures
before any limit applies (120 forged 1 MB webhook posts in 0.3 s used to get 120 × 401 and never
a 429). Here, before the body is read and before any token or signature work:

- the route's rate limit when it is keyed by the client address alone (`key: ip`); limits keyed
  by `sub` / `org` need the verified token and stay in the rate-limit stage after authorization;
- on webhook routes, the `webhook` brute-force block: an address that sent too many deliveries
  failing verification is refused (429 `webhook.too_many_failures`) before its body is read.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.context import RequestContext
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send
from gateway.ratelimit import RateLimiter

Outcome = Callable[[str, str], None]
Event = Callable[[str, str], None]


class AddressLimitStage:
    """Applies `key: ip` rate limits and the webhook brute-force block, before body and crypto."""

    def __init__(self, app: ASGIApp, limiter: Callable[[], RateLimiter], outcome: Outcome | None = None,
                 event: Event | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.outcome = outcome or (lambda route, what: None)
        self.event = event or (lambda scope, what: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        compiled = route.rate_limit
        limiter = self.limiter()
        if compiled is not None and compiled.by_address:
            decision = await limiter.hit(route.id, compiled, ip=ctx.client_ip)
            if decision.shadow_denied:
                self.outcome(route.id, "shadow_denied")
            if not decision.allowed:
                self.outcome(route.id, "denied")
                decision.raise_if_denied(route.id)
            self.outcome(route.id, "allowed")
            ctx.response_headers.extend(decision.headers)
        if route.auth == "webhook":
            guard = limiter.webhook_brute_force
            left = await guard.blocked(ctx.client_ip)
            if left is not None:
                self.event("webhook", "refused")
                raise guard.refusal(left)
        await self.app(scope, receive, send)
