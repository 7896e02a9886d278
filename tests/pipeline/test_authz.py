"""Authorization stage: declared roles (403 authz.unknown_role), route roles and scopes, and the one
claim-path reader shared with tenant binding, rate-limit keys and the identity assertion."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from types import MappingProxyType
from typing import Any

import jwt
import pytest

from gateway.auth.claims import claim_at, claim_text
from gateway.auth.identity import IdentitySigner
from gateway.context import RequestContext
from gateway.errors import Forbidden, TenantMissingClaim
from gateway.pipeline.authz import AuthzStage
from gateway.policy.compiled import CompiledRoute
from gateway.ratelimit.limiter import claim_values
from gateway.tenant import org_from_claims
from tests.pipeline.stage_kit import stage_route

DECLARED = ["owner", "admin", "member", "viewer"]


def route(roles: set[str] | None = None, scopes: set[str] | None = None) -> CompiledRoute:
    return stage_route(roles=frozenset(roles) if roles else None, scopes=frozenset(scopes) if scopes else None)


def run(claims: dict[str, Any] | None, r: CompiledRoute, role_claim: str = "org_role",
        roles: list[str] | None = DECLARED, scope_claim: str = "scope", preflight: bool = False) -> bool:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    ctx = RequestContext.__new__(RequestContext)
    ctx.route, ctx.claims = r, claims
    stage = AuthzStage(app, role_claim, scope_claim, roles=roles)
    scope: dict[str, Any] = {"gateway": ctx}
    if preflight:
        scope["gateway.preflight"] = True
    asyncio.run(stage(scope, None, None))  # type: ignore[arg-type]
    return bool(reached)


def refusal(claims: dict[str, Any] | None, r: CompiledRoute, **kw: Any) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        run(claims, r, **kw)
    assert info.value.status == 403
    return info.value


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


def test_cors_preflight_steps_aside() -> None:
    # A preflight carries no credentials; the actual request is the one that is authorized.
    undeclared = {"org_role": "superadmin"}
    assert run(undeclared, route(roles={"admin"}, scopes={"leads:read"}), preflight=True)
    assert reason(undeclared, route(roles={"admin"}), preflight=False) == "authz.unknown_role"


def test_role_refusal_says_it_is_the_role() -> None:
    exc = refusal({"org_role": "member"}, route(roles={"admin"}))
    assert exc.reason == "authz.forbidden"
    assert "role" in exc.detail and "scope" not in exc.detail


def test_allowed_request_reaches_the_app_unchanged() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    ctx = RequestContext.__new__(RequestContext)
    ctx.route, ctx.claims = route(roles={"admin"}, scopes={"leads:read"}), {"org_role": "admin", "scope": "leads:read"}
    scope = {"gateway": ctx}
    asyncio.run(AuthzStage(app, "org_role", "scope", roles=DECLARED)(scope, receive, send))
    assert len(seen) == 1
    assert seen[0][0] is scope and seen[0][1] is receive and seen[0][2] is send


# --- scopes: all of the route's scopes, from a space-separated string or a list ----------------------

@pytest.mark.parametrize("granted", [
    pytest.param("leads:read", id="exactly_the_required"),
    pytest.param("leads:read leads:write", id="superset"),
    pytest.param("  leads:write   leads:read ", id="extra_whitespace"),
    pytest.param(["leads:read"], id="list_exact"),
    pytest.param(["leads:write", 7, None, "leads:read"], id="list_with_non_strings"),
])
def test_required_scope_present_passes(granted: Any) -> None:
    assert run({"org_role": "member", "scope": granted}, route(scopes={"leads:read"}))


@pytest.mark.parametrize("claims", [
    pytest.param({"org_role": "member"}, id="no_scope_claim"),
    pytest.param({"org_role": "member", "scope": ""}, id="empty"),
    pytest.param({"org_role": "member", "scope": "leads:write"}, id="other_scope"),
    pytest.param({"org_role": "member", "scope": "leads:rea"}, id="prefix_of_scope"),
    pytest.param({"org_role": "member", "scope": "leads:read,leads:write"}, id="comma_is_not_a_separator"),
    pytest.param({"org_role": "member", "scope": ["leads:write"]}, id="list_without"),
    pytest.param({"org_role": "member", "scope": [["leads:read"]]}, id="nested_list"),
    pytest.param({"org_role": "member", "scope": {"leads:read": True}}, id="object"),
    pytest.param({"org_role": "member", "scope": 1}, id="number"),
    pytest.param({"org_role": "member", "scp": "leads:read"}, id="other_claim_name"),
])
def test_missing_scope_is_forbidden(claims: dict[str, Any]) -> None:
    exc = refusal(claims, route(scopes={"leads:read"}))
    assert exc.reason == "authz.forbidden"
    assert "scope" in exc.detail


def test_every_required_scope_is_needed() -> None:
    r = route(scopes={"leads:read", "leads:write"})
    assert run({"org_role": "member", "scope": "leads:write leads:read"}, r)
    assert reason({"org_role": "member", "scope": "leads:read"}, r) == "authz.forbidden"
    assert reason({"org_role": "member", "scope": "leads:write"}, r) == "authz.forbidden"


def test_scope_claim_path_is_configurable() -> None:
    r = route(scopes={"leads:read"})
    claims = {"org_role": "member", "scp": ["leads:read"], "scope": "other"}
    assert run(claims, r, scope_claim="scp")
    assert reason(claims, r) == "authz.forbidden"
    nested = {"org_role": "member", "app_metadata": {"scope": "leads:read"}}
    assert run(nested, r, scope_claim="app_metadata.scope")


def test_role_is_checked_before_scopes() -> None:
    r = route(roles={"admin"}, scopes={"leads:read"})
    assert reason({"org_role": "superadmin", "scope": "leads:read"}, r) == "authz.unknown_role"
    assert "role" in refusal({"org_role": "member", "scope": "leads:read"}, r).detail
    assert "scope" in refusal({"org_role": "admin", "scope": "x"}, r).detail


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


def test_claim_path_walks_any_mapping() -> None:
    inner = MappingProxyType({"org_id": "org-a"})
    assert claim_at(MappingProxyType({"app_metadata": inner}), "app_metadata.org_id") == "org-a"
    assert claim_at({"app_metadata": inner}, "app_metadata.org_id") == "org-a"
    assert claim_text({"app_metadata": inner}, "app_metadata.org_id") == "org-a"


@pytest.mark.parametrize("parent", [
    pytest.param("org-a", id="string"), pytest.param(["org_id"], id="list"), pytest.param(7, id="int"),
    pytest.param(True, id="bool"), pytest.param({}, id="empty_object"),
])
def test_claim_path_through_a_non_object_is_missing(parent: Any) -> None:
    claims = {"sub": "u", "app_metadata": parent}
    assert claim_at(claims, "app_metadata.org_id") is None
    assert claim_text(claims, "app_metadata.org_id") is None
    assert reason({"org_role": "admin", "app_metadata": parent}, route(),
                  role_claim="app_metadata.org_role") == "authz.unknown_role"


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
