"""The API contract at the edge, over real sockets: real gateway, echo upstream that counts.

Bodies the gateway has not understood never reach the upstream: duplicate keys (any route, any
depth) are 400 request.ambiguous, schema failures 422 request.invalid_body with pointers; query
and path parameters outside their declared schemas are 422 request.invalid_parameter; the
docs endpoints serve the document (ETag, 304), the page (no other host) and the reason catalogue;
deprecated routes carry Deprecation / Sunset / Link and answer 410 route.sunset after the sunset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import mint_dev_token
from gateway.openapi.command import build
from tests.support.gateway_proc import TEST_JWT_SECRET, Proc, echo_upstream, gateway, shipped_policy, wait_until
from upstream_stub.openapi import document as upstream_document

A = {"Authorization": "Bearer " + mint_dev_token(TEST_JWT_SECRET, "alice", "org-a", role="admin")}
JSON = {**A, "Content-Type": "application/json"}

DEPRECATED = """
    deprecated:
      since: 2026-01-01
      sunset: 2099-06-30
      link: https://docs.example.com/deprecations/agents-read
      successor: /v2/agents
"""
SUNSET = """
    deprecated: {since: 2019-01-01, sunset: 2020-01-01}
"""


def make_policy(tmp: Path) -> Path:
    d = shipped_policy(tmp)
    routes = (d / "routes.yaml").read_text()
    routes = routes.replace("  - id: agents.read\n    path: /v1/agents/{agentId}\n    methods: [GET]\n",
                            "  - id: agents.read\n    path: /v1/agents/{agentId}\n    methods: [GET]\n"
                            + DEPRECATED.lstrip("\n"), 1)
    routes = routes.replace("  - id: jobs.read\n    path: /v1/jobs/{jobId}\n    methods: [GET]\n",
                            "  - id: jobs.read\n    path: /v1/jobs/{jobId}\n    methods: [GET]\n"
                            + SUNSET.lstrip("\n"), 1)
    # Two more, called only by the metric tests below: their counts start at zero.
    for route_id, dates in (("jobs.list", "since: 2026-01-01, sunset: 2099-06-30"),
                            ("jobs.events", "since: 2019-01-01, sunset: 2020-01-01")):
        routes = re.sub(rf"^(  - id: {re.escape(route_id)}\b.*)$", rf"\1\n    deprecated: {{{dates}}}",
                        routes, count=1, flags=re.M)
    routes = routes.replace("  - id: crm.connections.modify\n", "  - id: crm.connections.modify\n"
                            "    validate: false\n", 1)
    assert routes.count("deprecated:") == 4 and "validate: false" in routes
    (d / "routes.yaml").write_text(routes)
    text, problems = build(json.dumps(upstream_document()), d)
    assert not problems
    (d / "openapi.yaml").write_text(text)
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("contract")
    policy = make_policy(tmp)
    logs = {"GATEWAY_ACCESS_LOG": str(tmp / "access.log"), "GATEWAY_AUDIT_LOG": str(tmp / "audit.log")}
    with echo_upstream() as up, gateway(policy, up.url, logs) as gw:
        gw.logs = tmp  # type: ignore[attr-defined]
        yield gw, up


def seen(up: Proc, path: str) -> int:
    return int(httpx.get(f"{up.url}/count").json()["seen"].get(path, 0))


def send(gw: Proc, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, gw.url + path, content=body, headers=headers or JSON)


AMBIGUOUS = [
    ("top_level", "PATCH", "/v1/agents/ag1", b'{"name":"x","orgId":"org-b","orgId":"org-a"}'),
    ("escaped_key", "PATCH", "/v1/agents/ag1", b'{"name":"x","org\\u0049d":"org-b","orgId":"org-a"}'),
    ("nested", "POST", "/v1/agents", b'{"name":"x","model":"m","config":{"a":1,"a":2}}'),
    ("in_array", "POST", "/v1/agents", b'{"name":"x","model":"m","config":{"l":[{"k":1,"k":2}]}}'),
    ("validate_false_route", "PATCH", "/v1/crm/connections/c1", b'{"name":"x","name":"y"}'),
    ("optional_body_route", "POST", "/v1/crm/connections/c1/sync", b'{"orgId":"org-a","orgId":"org-b"}'),
]


@pytest.mark.parametrize("case,method,path,body", AMBIGUOUS, ids=[c[0] for c in AMBIGUOUS])
def test_duplicate_keys_are_refused_on_every_route(stack: tuple[Proc, Proc], case: str, method: str, path: str,
                                                   body: bytes) -> None:
    gw, up = stack
    upstream_path = path[3:]
    before = seen(up, upstream_path)
    r = send(gw, method, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "request.ambiguous"
    assert r.headers["content-type"] == "application/problem+json"
    assert seen(up, upstream_path) == before, "the upstream was contacted"


INVALID = [
    ("wrong_types", b'{"name":5,"model":"gpt-4o"}', {"/name"}),
    ("missing_required", b'{"description":"x"}', {"/name", "/model"}),
    ("unknown_property", b'{"name":"x","model":"gpt-4o","isAdmin":true}', {""}),
    ("too_long", b'{"name":"' + b"n" * 101 + b'","model":"gpt-4o"}', {"/name"}),
    ("pattern", b'{"name":"x","model":"!!bad model!!"}', {"/model"}),
    ("not_an_object", b'["name","x"]', {""}),
]


@pytest.mark.parametrize("case,body,pointers", INVALID, ids=[c[0] for c in INVALID])
def test_schema_failures_are_422_with_pointers_and_never_forwarded(stack: tuple[Proc, Proc], case: str,
                                                                    body: bytes, pointers: set[str]) -> None:
    gw, up = stack
    before = seen(up, "/agents")
    r = send(gw, "POST", "/v1/agents", body)
    if case == "not_an_object":  # the tenant stage's strict reader refuses it first, also unforwarded
        assert r.status_code == 400 and r.json()["reason"] == "request.ambiguous"
    else:
        assert r.status_code == 422, r.text
        doc = r.json()
        assert doc["reason"] == "request.invalid_body"
        assert doc["type"] == "/v1/docs/errors#request.invalid_body"
        assert {e["pointer"] for e in doc["errors"]} == pointers
        assert all(e["detail"] for e in doc["errors"])
        assert "!!bad model!!" not in r.text  # messages never echo values
    assert seen(up, "/agents") == before


def test_at_most_ten_field_errors(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    body = json.dumps({f"extra{i}": i for i in range(30)} | {"name": 1, "model": 2, "description": 3}).encode()
    r = send(gw, "POST", "/v1/agents", body)
    assert r.status_code == 422
    assert 1 <= len(r.json()["errors"]) <= 10


def test_required_body_missing_is_422(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    before = seen(up, "/agents/ag1")
    r = httpx.patch(gw.url + "/v1/agents/ag1", headers=A)
    assert r.status_code == 422 and r.json()["errors"][0]["detail"] == "a JSON body is required"
    assert seen(up, "/agents/ag1") == before


def test_non_json_media_type_cannot_dodge_validation(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    before = seen(up, "/agents/ag1")
    r = send(gw, "PATCH", "/v1/agents/ag1", b'{"name":5}', {**A, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["reason"] == "request.unsupported_media_type"
    assert seen(up, "/agents/ag1") == before


def test_valid_bodies_pass_and_validate_false_opts_out(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    before = seen(up, "/agents")
    r = send(gw, "POST", "/v1/agents", b'{"name":"Support bot","model":"gpt-4o-mini","config":{"t":0.2}}')
    assert r.status_code == 200, r.text  # the echo upstream answers 200
    assert seen(up, "/agents") == before + 1
    # validate: false on crm.connections.modify: a schema-invalid body is forwarded (the upstream decides)
    before = seen(up, "/crm/connections/c1")
    r = send(gw, "PATCH", "/v1/crm/connections/c1", b'{"name":5}')
    assert r.status_code == 200
    assert seen(up, "/crm/connections/c1") == before + 1
    # an optional body may be absent
    r = httpx.post(gw.url + "/v1/crm/connections/c1/sync", headers=A)
    assert r.status_code == 200


# (case, path, query string, what the errors name). Not /v1/jobs: the deprecation metric tests own it.
BAD_PARAMS = [
    ("limit_zero", "/v1/agents", "orgId=org-a&limit=0", [("query", "limit", "must be >= 1")]),
    ("limit_over", "/v1/agents", "orgId=org-a&limit=101", [("query", "limit", "must be <= 100")]),
    ("limit_huge", "/v1/agents", "orgId=org-a&limit=100000000000000000000000", [("query", "limit", "must be <= 100")]),
    ("limit_65_digits", "/v1/agents", "orgId=org-a&limit=" + "1" * 65, [("query", "limit", "must be an integer")]),
    ("limit_negative_huge", "/v1/agents", "orgId=org-a&limit=-" + "9" * 64, [("query", "limit", "must be >= 1")]),
    ("limit_plus", "/v1/agents", "orgId=org-a&limit=%2B5", [("query", "limit", "must be an integer")]),
    ("limit_space", "/v1/agents", "orgId=org-a&limit=+5", [("query", "limit", "must be an integer")]),
    ("limit_arabic_digit", "/v1/agents", "orgId=org-a&limit=%D9%A5", [("query", "limit", "must be an integer")]),
    ("limit_empty", "/v1/agents", "orgId=org-a&limit", [("query", "limit", "must be an integer")]),
    ("limit_twice", "/v1/agents", "orgId=org-a&limit=5&limit=6", [("query", "limit", "must be given once")]),
    ("limit_twice_encoded_name", "/v1/agents", "orgId=org-a&limit=5&li%6Dit=6",
     [("query", "limit", "must be given once")]),
    ("bad_utf8", "/v1/agents", "orgId=org-a&cursor=%C3", [("query", "cursor", "is not valid percent-encoded UTF-8")]),
    ("bad_percent", "/v1/agents", "orgId=org-a&cursor=%G1", [("query", "cursor", "is not valid percent-encoded UTF-8")]),
    ("cursor_pattern", "/v1/agents", "orgId=org-a&cursor=%C2%86%C3%88%C3%A7M9",
     [("query", "cursor", "must match the pattern ^[A-Za-z0-9_-]*$")]),
    ("cursor_long", "/v1/agents", "orgId=org-a&cursor=" + "A" * 65, [("query", "cursor", "must be at most 64 characters")]),
    ("semicolon", "/v1/agents", "orgId=org-a&a=1;limit=50",
     [("query", "limit", 'is next to a raw ";", which some servers read as a separator: send ";" as %3B, '
                         'separate with "&"')]),
    ("two_at_once", "/v1/crm/connections", "orgId=org-a&cursor=done!&limit=x",
     [("query", "cursor", "must match the pattern ^[A-Za-z0-9_-]*$"), ("query", "limit", "must be an integer")]),
]


@pytest.mark.parametrize("case,path,qs,errors", BAD_PARAMS, ids=[c[0] for c in BAD_PARAMS])
def test_parameters_outside_their_schema_are_422_and_never_forwarded(
        stack: tuple[Proc, Proc], case: str, path: str, qs: str, errors: list[tuple[str, str, str]]) -> None:
    gw, up = stack
    before = seen(up, path[3:])
    r = httpx.get(f"{gw.url}{path}?{qs}", headers=A)
    assert r.status_code == 422, r.text
    doc = r.json()
    assert doc["reason"] == "request.invalid_parameter"
    assert doc["type"] == "/v1/docs/errors#request.invalid_parameter"
    assert [(e["in"], e["name"], e["detail"]) for e in doc["errors"]] == errors
    assert "M9" not in r.text and "done" not in r.text  # messages never echo the value
    assert seen(up, path[3:]) == before, "the upstream was contacted"


def test_path_parameters_outside_their_schema_are_422(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    for bad in ("a.b", "a" * 65, "a~b"):
        before = seen(up, "/agents/" + bad)
        r = httpx.get(f"{gw.url}/v1/agents/{bad}", headers=A)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"] == [{"in": "path", "name": "agentId",
                                       "detail": "must be at most 64 characters" if len(bad) == 65
                                       else "must match the pattern ^[A-Za-z0-9_-]+$"}]
        assert seen(up, "/agents/" + bad) == before
    assert httpx.get(f"{gw.url}/v1/agents/{'a' * 64}", headers=A).status_code == 200


def test_valid_parameters_pass_and_undeclared_ones_are_forwarded_untouched(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    for qs in ("orgId=org-a", "orgId=org-a&limit=1", "orgId=org-a&limit=100&cursor=MTA",
               "orgId=org-a&cursor=", "orgId=org-a&Limit=abc&limit[]=x&other=%FF%FE&a=1;b=2"):
        before = seen(up, "/agents")
        r = httpx.get(f"{gw.url}/v1/agents?{qs}", headers=A)
        assert r.status_code == 200, (qs, r.text)
        assert seen(up, "/agents") == before + 1
    r = httpx.get(f"{gw.url}/v1/crm/connections?orgId=org-a&limit=020", headers=A)  # leading zeros: 20
    assert r.status_code == 200, r.text


def test_head_is_checked_like_get_and_validate_false_opts_out(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    before = seen(up, "/agents")
    r = httpx.head(f"{gw.url}/v1/agents?orgId=org-a&limit=0", headers=A)
    assert r.status_code == 422 and r.content == b""
    assert seen(up, "/agents") == before
    # crm.connections.modify says validate: false: its path parameter is the upstream's to judge
    before = seen(up, "/crm/connections/c.1")
    r = httpx.delete(f"{gw.url}/v1/crm/connections/c.1", headers=A)
    assert r.status_code == 200, r.text
    assert seen(up, "/crm/connections/c.1") == before + 1


def test_parameters_are_checked_only_after_authentication(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    r = httpx.get(f"{gw.url}/v1/agents?orgId=org-a&limit=0")
    assert r.status_code == 401 and r.json()["reason"] == "auth.missing_token"
    other = {"Authorization": "Bearer " + mint_dev_token(TEST_JWT_SECRET, "bob", "org-b", role="admin")}
    r = httpx.get(f"{gw.url}/v1/agents?orgId=org-a&limit=0", headers=other)
    assert r.status_code == 403 and r.json()["reason"] == "tenant.mismatch"


def test_refused_parameters_are_in_the_access_log_and_audit(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    r = httpx.get(f"{gw.url}/v1/agents?orgId=org-a&limit=0", headers=A)
    assert r.status_code == 422
    rid = r.headers["x-request-id"]
    access = record(gw, "access.log", rid)
    assert (access["status"], access["reason"], access["route"]) == (422, "request.invalid_parameter", "agents.list")
    audit = record(gw, "audit.log", rid)
    assert (audit["status"], audit["reason"], audit["route_id"]) == (422, "request.invalid_parameter", "agents.list")


def test_openapi_json_is_public_cacheable_with_etag(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    r = httpx.get(gw.url + "/v1/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "public" in r.headers["cache-control"]
    etag = r.headers["etag"]
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["paths"]["/v1/agents/{agentId}"]["get"]["deprecated"] is True
    r2 = httpx.get(gw.url + "/v1/openapi.json", headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b""
    r3 = httpx.get(gw.url + "/v1/openapi.json", headers={"If-None-Match": '"other"'})
    assert r3.status_code == 200
    assert httpx.head(gw.url + "/v1/openapi.json").status_code == 200
    r4 = httpx.post(gw.url + "/v1/openapi.json", content=b"{}")
    assert r4.status_code == 405 and r4.headers["allow"] == "GET, HEAD"


def test_docs_page_loads_nothing_from_another_host(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    r = httpx.get(gw.url + "/v1/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(ref.startswith("/v1/") for ref in refs), refs
    for ref in refs:
        a = httpx.get(gw.url + ref)
        assert a.status_code == 200 and a.content, ref
    assert httpx.get(gw.url + "/v1/docs/assets/%2e%2e%2fagents").status_code in (400, 404)
    assert httpx.get(gw.url + "/v1/docs/assets/nope.js").status_code == 404


def test_problem_type_resolves_to_the_reason_catalogue(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    r = httpx.get(gw.url + "/v1/agents")
    assert r.status_code == 401
    ptype = r.json()["type"]
    assert ptype == "/v1/docs/errors#auth.missing_token"
    page = httpx.get(gw.url + ptype.split("#")[0])
    assert page.status_code == 200
    assert 'id="auth.missing_token"' in page.text and 'id="request.invalid_body"' in page.text


def test_deprecated_route_announces_itself_even_when_refused(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    for headers in (A, {}):
        r = httpx.get(gw.url + "/v1/agents/ag1", headers=headers)
        assert r.status_code == (200 if headers else 401)
        assert r.headers["deprecation"] == "@1767225600"
        assert r.headers["sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"
        link = r.headers["link"]
        assert '<https://docs.example.com/deprecations/agents-read>; rel="deprecation"' in link
        assert '</v2/agents>; rel="successor-version"' in link
    assert "deprecation" not in httpx.get(gw.url + "/v1/agents", headers=A).headers


def test_route_after_sunset_is_gone(stack: tuple[Proc, Proc]) -> None:
    gw, up = stack
    before = seen(up, "/jobs/j1")
    r = httpx.get(gw.url + "/v1/jobs/j1", headers=A)
    assert r.status_code == 410
    assert r.json()["reason"] == "route.sunset"
    assert r.headers["sunset"] == "Wed, 01 Jan 2020 00:00:00 GMT"
    assert seen(up, "/jobs/j1") == before


# --- who still calls a deprecated route: the metric by route, the org in the records --------------

DEPRECATED_METRIC = "gateway_deprecated_calls_total"
DEPRECATED_ROUTES = {"agents.read", "jobs.read", "jobs.list", "jobs.events"}  # make_policy's


def deprecated_calls(gw: Proc) -> dict[tuple[str, str], float]:
    """{(route, outcome): count} of the deprecation counter, read from the admin listener."""
    text = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=10).text  # type: ignore[attr-defined]
    out = {}
    for m in re.finditer(DEPRECATED_METRIC + r"\{([^}]*)\} ([0-9.e+]+)", text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(labels["route"], labels["outcome"])] = float(m.group(2))
    return out


def record(gw: Proc, name: str, rid: str) -> dict[str, Any]:
    path: Path = gw.logs / name  # type: ignore[attr-defined]

    def find() -> dict[str, Any] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return next((e for e in map(json.loads, lines) if e.get("request_id") == rid), None)

    assert wait_until(lambda: find() is not None, timeout=30), f"no {name} record for {rid}"
    found = find()
    assert found is not None
    return found


def test_deprecated_calls_are_counted_by_route_and_recorded_with_the_org(stack: tuple[Proc, Proc]) -> None:
    gw, _ = stack
    key = ("jobs.list", "served")  # deprecated in make_policy; no other test calls it
    assert key not in deprecated_calls(gw)
    r = httpx.get(gw.url + "/v1/jobs?orgId=org-a", headers=A)
    assert r.status_code == 200 and "deprecation" in r.headers
    # the counter is batched and written about once a second: poll, with a generous ceiling
    assert wait_until(lambda: deprecated_calls(gw).get(key) == 1, timeout=30), deprecated_calls(gw)
    # a call to a route that is not deprecated is not counted. The counts are written in batches,
    # so a second deprecated call after it is the marker: once the marker shows, so would it.
    ok = httpx.get(gw.url + "/v1/agents?orgId=org-a", headers=A)
    assert ok.status_code == 200 and "deprecation" not in ok.headers
    assert httpx.get(gw.url + "/v1/jobs?orgId=org-a", headers=A).status_code == 200
    assert wait_until(lambda: deprecated_calls(gw).get(key) == 2, timeout=30), deprecated_calls(gw)
    now = deprecated_calls(gw)
    assert {route for route, _ in now} <= DEPRECATED_ROUTES, now  # "agents.list" would be here
    # who called: the access and the audit record of the deprecated call carry the org and the route
    rid = r.headers["x-request-id"]
    access = record(gw, "access.log", rid)
    assert (access["org"], access["sub"], access["route"], access["status"]) == ("org-a", "alice", "jobs.list", 200)
    audit = record(gw, "audit.log", rid)  # a successful GET is audited because it was deprecated
    assert (audit["org"], audit["sub"], audit["route_id"], audit["deprecated"]) == ("org-a", "alice", "jobs.list", True)


def test_calls_after_the_sunset_are_counted_apart(stack: tuple[Proc, Proc]) -> None:
    """Decided: a call refused with 410 route.sunset still counts, under outcome="sunset", so the
    team sees who keeps calling a retired route. The refusal comes before authentication (gone for
    everyone), so its records carry the route and the client address but no org."""
    gw, up = stack
    sunset = ("jobs.events", "sunset")  # past its sunset in make_policy; no other test calls it
    assert sunset not in deprecated_calls(gw)
    before = seen(up, "/jobs/j1/events")
    r = httpx.get(gw.url + "/v1/jobs/j1/events", headers=A)
    assert r.status_code == 410 and r.json()["reason"] == "route.sunset"
    assert seen(up, "/jobs/j1/events") == before
    assert wait_until(lambda: deprecated_calls(gw).get(sunset) == 1, timeout=30), deprecated_calls(gw)
    assert ("jobs.events", "served") not in deprecated_calls(gw)
    access = record(gw, "access.log", r.headers["x-request-id"])
    assert (access["route"], access["status"], access["reason"]) == ("jobs.events", 410, "route.sunset")
    assert access["org"] is None  # refused before the token is read
    audit = record(gw, "audit.log", r.headers["x-request-id"])
    assert (audit["route_id"], audit["reason"], audit["deprecated"]) == ("jobs.events", "route.sunset", True)
