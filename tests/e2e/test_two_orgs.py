"""The audit's central finding, end to end: org A can never reach org B's data.

Real gateway (shipped policy) → real bundled upstream over sockets. Org A's token lists, creates
and reads its own agents; every attempt at org B's agents, connections and jobs through path,
query or body fails with 403/404, and nothing of org B's appears in any response.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.auth import mint_dev_token
from tests.support.gateway_proc import ROOT, TEST_JWT_SECRET, Proc, bundled_upstream, gateway


def token(sub: str, org: str, role: str = "admin") -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_dev_token(TEST_JWT_SECRET, sub, org, role=role)}


A = token("alice", "org-a")
B = token("bob", "org-b")


@pytest.fixture(scope="module")
def system() -> Iterator[tuple[Proc, Proc]]:
    with bundled_upstream() as up, gateway(ROOT / "policies", up.url) as gw:
        yield gw, up


@pytest.fixture(scope="module")
def seeded(system: tuple[Proc, Proc]) -> dict[str, str]:
    gw, _ = system
    url = gw.url
    b_agent = httpx.post(f"{url}/v1/agents", headers=B,
                         json={"name": "B-secret-agent", "model": "gpt-4o-mini", "description": "org-b-private"})
    assert b_agent.status_code in (200, 201), b_agent.text
    b_conn = httpx.post(f"{url}/v1/crm/connections", headers=B,
                        json={"provider": "kommo", "name": "B-crm", "baseDomain": "borg.kommo.com",
                              "credentials": {"accessToken": "b-access-token-secret", "expiresIn": 86400}})
    assert b_conn.status_code in (200, 201), b_conn.text
    b_job = httpx.post(f"{url}/v1/jobs", headers=B,
                       json={"type": "crm.sync", "payload": {"connectionId": b_conn.json()["id"]}})
    assert b_job.status_code in (200, 201, 202), b_job.text
    a_agent = httpx.post(f"{url}/v1/agents", headers=A, json={"name": "A-agent", "model": "gpt-4o-mini"})
    assert a_agent.status_code in (200, 201), a_agent.text
    out = {"b_agent": b_agent.json()["id"], "a_agent": a_agent.json()["id"]}
    out["b_conn"] = b_conn.json()["id"]
    out["b_job"] = b_job.json().get("id") or b_job.json().get("jobId")
    return out


def no_b(r: httpx.Response) -> None:
    for marker in ("B-secret-agent", "org-b-private", "B-crm", "borg.kommo.com", "b-access-token-secret"):
        assert marker not in r.text, f"org B data leaked: {r.request.method} {r.request.url}"


def test_org_a_lists_creates_and_reads_its_own(system: tuple[Proc, Proc], seeded: dict[str, str]) -> None:
    gw, _ = system
    r = httpx.get(f"{gw.url}/v1/agents", headers=A)
    assert r.status_code == 200
    names = [a["name"] for a in r.json()["items"]]
    assert "A-agent" in names
    no_b(r)
    r = httpx.get(f"{gw.url}/v1/agents?orgId=org-a", headers=A)
    assert r.status_code == 200
    r = httpx.get(f"{gw.url}/v1/agents/{seeded['a_agent']}", headers=A)
    assert r.status_code == 200 and r.json()["name"] == "A-agent"


@pytest.mark.parametrize("method,path,body,expected", [
    ("GET", "/v1/agents?orgId=org-b", None, 403),
    ("GET", "/v1/agents?orgId=org-a&orgId=org-b", None, 400),
    ("GET", "/v1/agents?orgid=org-b", None, 400),
    ("GET", "/v1/agents?org%49d=org-b", None, 400),
    ("POST", "/v1/agents", {"orgId": "org-b", "name": "x", "model": "gpt-4o-mini"}, 403),
    ("POST", "/v1/agents", {"orgId": "org-a", "orgId ": "org-b", "name": "x", "model": "gpt-4o-mini"}, 400),
    ("GET", "/v1/agents/{b_agent}", None, 404),
    ("PATCH", "/v1/agents/{b_agent}", {"name": "pwned"}, 404),
    ("PATCH", "/v1/agents/{a_agent}", {"orgId": "org-b", "name": "x"}, 403),
    ("DELETE", "/v1/agents/{b_agent}", None, 404),
    ("GET", "/v1/crm/connections?orgId=org-b", None, 403),
    ("POST", "/v1/crm/connections", {"orgId": "org-b", "provider": "kommo", "name": "x"}, 403),
    ("PATCH", "/v1/crm/connections/{b_conn}", {"name": "pwned"}, 404),
    ("DELETE", "/v1/crm/connections/{b_conn}", None, 404),
    ("POST", "/v1/crm/connections/{b_conn}/sync", None, 404),
    ("GET", "/v1/jobs?orgId=org-b", None, 403),
    ("POST", "/v1/jobs", {"orgId": "org-b", "type": "crm.sync", "payload": {"connectionId": "x"}}, 403),
    ("GET", "/v1/jobs/{b_job}", None, 404),
    ("GET", "/v1/kommo/oauth/authorize?orgId=org-b", None, 403),
], ids=["list_query", "query_repeated", "query_case_variant", "query_pct_variant", "create_body",
        "body_space_variant", "read_path", "patch_path", "patch_body_org", "delete_path", "crm_list",
        "crm_create", "crm_patch", "crm_delete", "crm_sync", "jobs_list", "jobs_create", "jobs_read",
        "oauth_authorize"])
def test_org_a_cannot_reach_org_b(system: tuple[Proc, Proc], seeded: dict[str, str], method: str, path: str,
                                  body: dict | None, expected: int) -> None:
    gw, _ = system
    try:
        path = path.format(**seeded)
    except KeyError as exc:
        pytest.fail(f"seeding org B's {exc} failed")
    r = httpx.request(method, gw.url + path, headers=A, json=body)
    assert r.status_code == expected, r.text
    no_b(r)
    # Nothing changed for org B.
    still = httpx.get(f"{gw.url}/v1/agents/{seeded['b_agent']}", headers=B)
    assert still.status_code == 200 and still.json()["name"] == "B-secret-agent"


def test_upstream_direct_without_identity_is_401(system: tuple[Proc, Proc]) -> None:
    _, up = system
    r = httpx.get(f"{up.url}/agents?orgId=org-b")
    assert r.status_code == 401
    r = httpx.get(f"{up.url}/agents?orgId=org-b", headers={"X-Gateway-Identity": "forged.token.value"})
    assert r.status_code == 401
