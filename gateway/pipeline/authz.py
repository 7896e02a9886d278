"""Authorization: the roles (claim `org_role`) and scopes a route requires → 403 `authz.forbidden`."""

from __future__ import annotations

from gateway.auth import claim_at
from gateway.context import RequestContext
from gateway.errors import Forbidden
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send


def _scopes(value: object) -> frozenset[str]:
    # OAuth `scope` is a space-separated string; some issuers send a list (`scp`).
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class AuthzStage:
    """Checks `roles:` (any of) and `scopes:` (all of) against the verified claims."""

    def __init__(self, app: ASGIApp, role_claim: str, scope_claim: str) -> None:
        self.app = app
        self.role_claim = role_claim
        self.scope_claim = scope_claim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is not None and (route.roles or route.scopes) and not scope.get("gateway.preflight"):
            claims = ctx.claims or {}
            if route.roles:
                role = claim_at(claims, self.role_claim)
                if not isinstance(role, str) or role not in route.roles:
                    raise Forbidden("authz.forbidden", "your role may not do this")
            if route.scopes and not route.scopes <= _scopes(claim_at(claims, self.scope_claim)):
                raise Forbidden("authz.forbidden", "the token lacks a required scope")
        await self.app(scope, receive, send)
