"""Authorization: declared roles, then the roles and scopes a route requires.

    403 authz.unknown_role   the token's role claim is missing or not one of `auth.jwt.roles`
    403 authz.forbidden      the role is not one the route allows, or a required scope is missing

A role the team never declared (`superadmin`, `Admin`, `5`) is refused at the gateway on every JWT
route, rather than forwarded for the upstream to interpret.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.auth.claims import claim_at, claim_text
from gateway.context import RequestContext
from gateway.errors import Forbidden, UnknownRole
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send


def _scopes(value: object) -> frozenset[str]:
    # OAuth `scope` is a space-separated string; some issuers send a list (`scp`).
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class AuthzStage:
    """Checks the declared roles, `roles:` (any of) and `scopes:` (all of) against the claims."""

    def __init__(self, app: ASGIApp, role_claim: str, scope_claim: str,
                 roles: Iterable[str] | None = None) -> None:
        self.app = app
        self.role_claim = role_claim
        self.scope_claim = scope_claim
        self.declared = frozenset(roles) if roles else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is not None and ctx.claims is not None and not scope.get("gateway.preflight"):
            claims = ctx.claims
            role = claim_text(claims, self.role_claim)
            if self.declared is not None and role not in self.declared:
                raise UnknownRole()
            if route.roles and role not in route.roles:
                raise Forbidden("authz.forbidden", "your role may not do this")
            if route.scopes and not route.scopes <= _scopes(claim_at(claims, self.scope_claim)):
                raise Forbidden("authz.forbidden", "the token lacks a required scope")
        await self.app(scope, receive, send)
