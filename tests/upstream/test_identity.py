"""Direct requests to the upstream: no identity, forged identity, wrong kind → refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.upstream.identity import mint, service_headers, user_headers
from tests.upstream.support import Upstream


async def test_healthz_needs_no_identity(up: Upstream) -> None:
    r = await up.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize("path", [
    "/agents", "/jobs", "/crm/connections", "/agents/agt_x", "/jobs/job_x", "/kommo/oauth/authorize",
    "/kommo/oauth/callback", "/webhooks/kommo/revoked",
])
async def test_missing_identity_is_401(up: Upstream, path: str) -> None:
    r = await up.client.get(path, params={"orgId": "org_a"}, headers={"X-Request-ID": "rid-123"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["reason"] == "identity.missing" and body["request_id"] == "rid-123"
    assert set(body) == {"type", "title", "status", "detail", "reason", "request_id"}


@pytest.mark.parametrize("kw", [
    pytest.param({"secret": "another-secret-of-sufficient-length-000000"}, id="forged_signature"),
    pytest.param({"lifetime": -30}, id="expired"),
    pytest.param({"aud": "someone-else"}, id="wrong_aud"),
    pytest.param({"iss": "evil-gateway"}, id="wrong_iss"),
    pytest.param({"alg": "HS512"}, id="wrong_alg"),
    pytest.param({"lifetime": 3600}, id="lifetime_too_long"),
    pytest.param({"drop": ("exp",)}, id="no_exp"),
    pytest.param({"drop": ("iat",)}, id="no_iat"),
    pytest.param({"drop": ("aud",)}, id="no_aud"),
    pytest.param({"role": "superuser"}, id="unknown_role"),
    pytest.param({"org": None}, id="no_org"),
    pytest.param({"kind": "robot"}, id="unknown_kind"),
])
async def test_bad_identity_is_401(up: Upstream, kw: dict[str, Any]) -> None:
    kw = dict(kw)  # the parameter dict is shared by both backends' runs
    kind = kw.pop("kind", "user")
    token = mint(kind, **kw)
    r = await up.client.get("/agents", headers={"X-Gateway-Identity": token})
    assert r.status_code == 401, r.text
    assert r.json()["reason"] in {"identity.invalid", "identity.expired"}


async def test_alg_none_is_401(up: Upstream) -> None:
    import base64
    import json

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    good = mint()
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    r = await up.client.get("/agents", headers={"X-Gateway-Identity": token})
    assert r.status_code == 401


async def test_two_identity_headers_are_refused(up: Upstream) -> None:
    h = [("X-Gateway-Identity", mint(org="org_a")), ("X-Gateway-Identity", mint(org="org_b"))]
    r = await up.client.get("/agents", headers=h)
    assert r.status_code == 401


async def test_service_identity_refused_on_user_routes(up: Upstream) -> None:
    r = await up.client.get("/agents", headers=service_headers())
    assert r.status_code == 403 and r.json()["reason"] == "identity.wrong_kind"


async def test_user_identity_refused_on_webhooks(up: Upstream) -> None:
    r = await up.client.post("/webhooks/kommo", content=b"account[id]=1", headers=user_headers())
    assert r.status_code == 403 and r.json()["reason"] == "identity.wrong_kind"


async def test_service_sub_must_name_a_gateway_route(up: Upstream) -> None:
    token = mint("service", sub="attacker")
    r = await up.client.post("/webhooks/kommo", headers={"X-Gateway-Identity": token})
    assert r.status_code == 401


async def test_valid_identity_passes(up: Upstream) -> None:
    r = await up.client.get("/agents", params={"orgId": "org_a"}, headers=user_headers("org_a"))
    assert r.status_code == 200 and r.json() == {"items": [], "nextCursor": None}
