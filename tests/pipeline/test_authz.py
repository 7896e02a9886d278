"""Authorization stage: declared roles (403 authz.unknown_role), route roles and scopes, and the one
claim-path reader shared with tenant binding, rate-limit keys and the identity assertion."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest

from gateway.auth.claims import claim_at, claim_text
from gateway.auth.identity import IdentitySigner
from gateway.context import RequestContext
from gateway.errors import Forbidden, TenantMissingClaim
from gateway.pipeline.authz import AuthzStage
from gateway.policy.compiled import CompiledRoute
from gateway.policy.router import PathTemplate
from gateway.ratelimit.limiter import claim_values
from gateway.tenant import org_from_claims

DECLARED = ["owner", "admin", "member", "viewer"]


def route(roles: set[str] | None = None, scopes: set[str] | None = None) -> CompiledRoute:
    t = PathTemplate("/v1/x")
    return CompiledRoute(id="r", methods=frozenset({"GET"}), template=t, upstream_template=t, auth="jwt",
                         max_body_bytes=0, connect_timeout=1, total_timeout=1, body_read_timeout=1,
                         roles=frozenset(roles) if roles else None, scopes=frozenset(scopes) if scopes else None)


def run(claims: dict[str, Any] | None, r: CompiledRoute, role_claim: str = "org_role",
        roles: list[str] | None = DECLARED) -> bool:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    ctx = RequestContext.__new__(RequestContext)
    ctx.route, ctx.claims = r, claims
    stage = AuthzStage(app, role_claim, "scope", roles=roles)
    asyncio.run(stage({"gateway": ctx}, None, None))  # type: ignore[arg-type]
    return bool(reached)


def reason(claims: dict[str, Any] | None, r: CompiledRoute, **kw: Any) -> str | None:
    try:
        run(claims, r, **kw)
    except Forbidden as exc:
        assert exc.status == 403
        return exc.reason
    return None


@pytest.mark.parametrize("role", [
    pytest.param(None, id="missing"),
    pytest.param("superadmin", id="undeclared"),
    pytest.param("Admin", id="wrong_case"),
    pytest.param(5, id="number"),
    pytest.param("", id="empty"),
    pytest.param(["admin"], id="list"),
    pytest.param({"name": "admin"}, id="object"),
    pytest.param(True, id="bool"),
])
def test_undeclared_or_missing_role_is_refused_on_every_jwt_route(role: Any) -> None:
    claims = {"sub": "u", "org_id": "o"} | ({} if role is None else {"org_role": role})
    assert reason(claims, route()) == "authz.unknown_role"
    assert reason(claims, route(roles={"admin"})) == "authz.unknown_role"


def test_declared_role_passes_and_route_roles_still_apply() -> None:
    assert run({"org_role": "member"}, route())
    assert reason({"org_role": "member"}, route(roles={"admin", "owner"})) == "authz.forbidden"
    assert run({"org_role": "owner"}, route(roles={"admin", "owner"}))


def test_without_declared_roles_only_route_roles_are_checked() -> None:
    assert run({"org_role": "anything"}, route(), roles=None)
    assert reason({"org_role": "anything"}, route(roles={"admin"}), roles=None) == "authz.forbidden"


def test_routes_without_identity_step_aside() -> None:
    assert run(None, route())  # auth: none / webhook routes carry no claims


def test_role_under_app_metadata() -> None:
    claims = {"app_metadata": {"org_role": "admin"}, "org_role": "superadmin"}
    assert run(claims, route(roles={"admin"}), role_claim="app_metadata.org_role")
    dotted = {"app_metadata.org_role": "admin"}  # a literal dotted member is not the path
    assert reason(dotted, route(), role_claim="app_metadata.org_role") == "authz.unknown_role"


# --- one reader: tenant binding, rate-limit keys, identity assertion agree ----------------------

TWO_READINGS = {"sub": "u1", "app_metadata.org_id": "org-b", "app_metadata": {"org_id": "org-a", "org_role": "admin"}}


def test_every_reader_sees_the_same_org() -> None:
    path = "app_metadata.org_id"
    assert claim_at(TWO_READINGS, path) == "org-a"
    assert org_from_claims(TWO_READINGS, path) == "org-a"
    assert claim_values(TWO_READINGS, path) == ("u1", "org-a")
    signer = IdentitySigner("k" * 40, audience="upstream")
    token = signer.mint(request_id="r", route_id="x", claims=TWO_READINGS, org_claim_path=path,
                        role_claim="app_metadata.org_role")
    seen = jwt.decode(token, "k" * 40, algorithms=["HS256"], audience="upstream")
    assert seen["org_id"] == "org-a" and seen["org_role"] == "admin"


@pytest.mark.parametrize("value,text", [
    pytest.param("org-a", "org-a", id="string"), pytest.param(7, "7", id="int"),
    pytest.param(True, None, id="bool"), pytest.param("  ", None, id="blank"),
    pytest.param(1.5, None, id="float"), pytest.param(["org-a"], None, id="list"),
])
def test_claim_text_is_the_same_for_every_stage(value: Any, text: str | None) -> None:
    claims = {"sub": "u", "org_id": value}
    assert claim_text(claims, "org_id") == text
    assert claim_values(claims, "org_id")[1] == text
    if text is None:
        with pytest.raises(TenantMissingClaim):
            org_from_claims(claims, "org_id")
    else:
        assert org_from_claims(claims, "org_id") == text
