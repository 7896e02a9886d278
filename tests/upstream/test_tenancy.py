"""Org A's identity never reads, changes or deletes org B's agents, connections or jobs (404), and an
`orgId` naming another org is refused (403)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.upstream.identity import user_headers
from tests.upstream.support import Upstream

A, B = "org_a", "org_b"
DEEP: dict[str, Any] = {"leaf": 1}
for _ in range(9):
    DEEP = {"n": DEEP}


async def _seed_b(up: Upstream) -> dict[str, str]:
    h = user_headers(B)
    agent = await up.client.post("/agents", headers=h,
                                 json={"orgId": B, "name": "b-agent", "model": "gpt-4o"})
    conn = await up.client.post("/crm/connections", headers=h, json={
        "orgId": B, "name": "b-crm", "baseDomain": "bee.kommo.com",
        "credentials": {"accessToken": "long-lived-token-of-org-b-000"}})
    assert agent.status_code == 201 and conn.status_code == 201, (agent.text, conn.text)
    job = await up.svc.jobs.enqueue(B, "crm.sync", {"connectionId": conn.json()["id"]}, 1)
    return {"agent": agent.json()["id"], "conn": conn.json()["id"], "job": job["id"]}


@pytest.fixture
async def seeded(up: Upstream) -> dict[str, str]:
    if up.app.state.worker is not None:
        await up.app.state.worker.stop(0)  # keep org B's job queued (its Kommo host is not mocked)
    return await _seed_b(up)


CROSS = [
    pytest.param("GET", "/agents/{agent}", None, id="read_agent"),
    pytest.param("PATCH", "/agents/{agent}", {"name": "pwned"}, id="update_agent"),
    pytest.param("DELETE", "/agents/{agent}", None, id="delete_agent"),
    pytest.param("PATCH", "/crm/connections/{conn}", {"name": "pwned"}, id="update_connection"),
    pytest.param("DELETE", "/crm/connections/{conn}", None, id="delete_connection"),
    pytest.param("POST", "/crm/connections/{conn}/sync", {}, id="sync_connection"),
    pytest.param("GET", "/jobs/{job}", None, id="read_job"),
    pytest.param("POST", "/jobs", {"type": "crm.sync", "payload": {"connectionId": "{conn}"}},
                 id="enqueue_job"),
    pytest.param("GET", "/kommo/oauth/authorize?connectionId={conn}", None, id="oauth_for_connection"),
]


@pytest.mark.parametrize(("method", "path", "body"), CROSS)
async def test_other_orgs_objects_are_not_found(up: Upstream, seeded: dict[str, str], method: str, path: str,
                                                body: Any) -> None:
    url = path.format(**seeded)
    if body is not None:
        body = {k: ({kk: vv.format(**seeded) for kk, vv in v.items()} if isinstance(v, dict) else v)
                for k, v in body.items()}
    r = await up.client.request(method, url, json=body, headers=user_headers(A, "owner"))
    assert r.status_code == 404, r.text
    assert r.json()["reason"] == "not_found"
    # and org B's objects are untouched
    hb = user_headers(B)
    assert (await up.client.get(f"/agents/{seeded['agent']}", headers=hb)).json()["name"] == "b-agent"
    conns = (await up.client.get("/crm/connections", headers=hb)).json()["items"]
    assert [c["name"] for c in conns] == ["b-crm"]
    assert (await up.client.get(f"/jobs/{seeded['job']}", headers=hb)).status_code == 200


@pytest.mark.parametrize("path", ["/agents", "/crm/connections", "/jobs"])
async def test_lists_show_only_own_org(up: Upstream, seeded: dict[str, str], path: str) -> None:
    r = await up.client.get(path, params={"orgId": A}, headers=user_headers(A))
    assert r.status_code == 200 and r.json()["items"] == []


@pytest.mark.parametrize(("method", "path", "params", "body"), [
    pytest.param("GET", "/agents", {"orgId": B}, None, id="list_agents_query"),
    pytest.param("GET", "/jobs", {"orgId": B}, None, id="list_jobs_query"),
    pytest.param("GET", "/crm/connections", {"orgId": B}, None, id="list_connections_query"),
    pytest.param("POST", "/agents", None, {"orgId": B, "name": "x", "model": "m"}, id="create_agent_body"),
    pytest.param("POST", "/crm/connections", None, {"orgId": B, "name": "x"}, id="create_connection_body"),
    pytest.param("POST", "/jobs", None, {"orgId": B, "type": "crm.sync", "payload": {"connectionId": "c"}},
                 id="create_job_body"),
    pytest.param("GET", "/kommo/oauth/authorize", {"orgId": B}, None, id="authorize_query"),
    pytest.param("GET", "/agents", [("orgId", A), ("orgId", B)], None, id="ambiguous_query"),
])
async def test_foreign_org_id_is_refused(up: Upstream, method: str, path: str, params: Any,
                                         body: Any) -> None:
    r = await up.client.request(method, path, params=params, json=body, headers=user_headers(A))
    assert r.status_code in (400, 403), r.text
    assert r.json()["reason"] in {"tenant.mismatch", "request.ambiguous"}


@pytest.mark.parametrize(("role", "method", "path", "body", "status"), [
    pytest.param("viewer", "POST", "/agents", {"name": "x", "model": "m"}, 403, id="viewer_cannot_create"),
    pytest.param("member", "POST", "/agents", {"name": "x", "model": "m"}, 201, id="member_creates"),
    pytest.param("member", "DELETE", "/agents/{agent}", None, 403, id="member_cannot_delete"),
    pytest.param("admin", "DELETE", "/agents/{agent}", None, 204, id="admin_deletes"),
    pytest.param("member", "POST", "/crm/connections", {"name": "x"}, 403, id="member_cannot_write_crm"),
    pytest.param("member", "GET", "/kommo/oauth/authorize", None, 403, id="member_cannot_connect_kommo"),
])
async def test_roles(up: Upstream, role: str, method: str, path: str, body: Any, status: int) -> None:
    agent = await up.client.post("/agents", json={"name": "mine", "model": "m"}, headers=user_headers(A))
    url = path.format(agent=agent.json()["id"])
    r = await up.client.request(method, url, json=body, headers=user_headers(A, role))
    assert r.status_code == status, r.text


async def test_agent_crud_and_cursor_pagination(up: Upstream) -> None:
    h = user_headers(A)
    ids = []
    for i in range(5):
        r = await up.client.post("/agents", json={"orgId": A, "name": f"a{i}", "model": "gpt-4o",
                                                  "config": {"temperature": 0.1 * i}}, headers=h)
        ids.append(r.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"orgId": A, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await up.client.get("/agents", params=params, headers=h)).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == ids
    r = await up.client.patch(f"/agents/{ids[0]}", json={"description": "updated"}, headers=h)
    assert r.status_code == 200 and r.json()["description"] == "updated" and r.json()["name"] == "a0"
    assert (await up.client.delete(f"/agents/{ids[0]}", headers=h)).status_code == 204
    assert (await up.client.get(f"/agents/{ids[0]}", headers=h)).status_code == 404


@pytest.mark.parametrize("body", [
    pytest.param({"name": "", "model": "m"}, id="empty_name"),
    pytest.param({"name": "x" * 101, "model": "m"}, id="long_name"),
    pytest.param({"name": "x", "model": "bad model!"}, id="bad_model"),
    pytest.param({"name": "x", "model": "m", "config": {"blob": "y" * 17000}}, id="config_too_big"),
    pytest.param({"name": "x", "model": "m", "config": DEEP}, id="config_too_deep"),
    pytest.param({"name": "x", "model": "m", "orgIdd": "typo"}, id="unknown_field"),
    pytest.param({"name": "x", "model": "m", "createdBy": "someone"}, id="mass_assignment"),
])
async def test_agent_validation(up: Upstream, body: dict[str, Any]) -> None:
    r = await up.client.post("/agents", json=body, headers=user_headers(A))
    assert r.status_code == 422 and r.json()["reason"] == "validation.failed", r.text


@pytest.mark.parametrize(("params", "reason"), [
    pytest.param({"limit": "0"}, "validation.failed", id="limit_zero"),
    pytest.param({"limit": "1000"}, "validation.failed", id="limit_huge"),
    pytest.param({"cursor": "!!!"}, "validation.failed", id="cursor_garbage"),
    pytest.param({"limit": "²"}, "validation.failed", id="limit_superscript"),  # isdigit, not int: was a 500
])
async def test_bad_page_args(up: Upstream, params: dict[str, str], reason: str) -> None:
    r = await up.client.get("/agents", params=params, headers=user_headers(A))
    assert r.status_code == 422 and r.json()["reason"] == reason


async def test_oversized_body_is_413(up: Upstream) -> None:
    r = await up.client.post("/agents", content=b"{" + b" " * 70000 + b"}", headers={
        **user_headers(A), "content-type": "application/json"})
    assert r.status_code == 413


def _cursor(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    # base64's lenient decoder skipped what is not in its alphabet: this read as `M9`, i.e. "3"
    pytest.param("\x86\xc8\xe7M9", id="outside_the_alphabet"),
    pytest.param("M9 ", id="trailing_space"),
    pytest.param("M+9/", id="standard_alphabet"),
    pytest.param("Mw==", id="padding"),
    pytest.param("M", id="truncated"),
    pytest.param(_cursor(b"-3"), id="negative"),
    pytest.param(_cursor(b"3 "), id="not_digits"),
    pytest.param(_cursor("\u00b3".encode()), id="unicode_digit"),
    pytest.param(_cursor(b"03"), id="leading_zero"),
    pytest.param(_cursor(str(2**63).encode()), id="beyond_64_bits"),
    pytest.param(_cursor(b"1" * 49), id="longer_than_64_characters"),
])
async def test_a_cursor_the_api_did_not_hand_out_is_422(up: Upstream, cursor: str) -> None:
    r = await up.client.get("/agents", params={"orgId": A, "cursor": cursor}, headers=user_headers(A))
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "validation.failed"
    assert r.json()["detail"] == "cursor is malformed"


@pytest.mark.parametrize("seq", [1, 3, 2**63 - 1])
async def test_a_well_formed_cursor_is_served(up: Upstream, seq: int) -> None:
    r = await up.client.get("/agents", params={"orgId": A, "cursor": _cursor(str(seq).encode())},
                            headers=user_headers(A))
    assert r.status_code == 200, r.text
    assert r.json()["nextCursor"] is None
