"""TenantStage on its own: when it steps aside, which locations it binds for which methods, what
the stages after it see (query, body bytes, the parsed body, `body_replaced`) and when the audit
record says the client's org was rewritten. The binding rules themselves are in tests/tenant/."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline.tenant import TenantStage
from gateway.policy.compiled import CompiledRoute
from gateway.tenant import Mode, TenantBinder, TenantPolicy, compile_tenant
from tests.pipeline.stage_kit import stage_route

ORG = "org-a"
ALICE: dict[str, Any] = {"sub": "alice", "org_id": ORG}
JSON = b"application/json"
ROUTE_ID = "agents.create"


def binder(mode: Mode = "verify", **locations: Any) -> TenantBinder:
    return compile_tenant(TenantPolicy(mode=mode, **locations), route_id=ROUTE_ID)


def route(tenant: TenantBinder | None) -> CompiledRoute:
    return stage_route(ROUTE_ID, {"GET", "POST"}, max_body_bytes=1 << 20, tenant=tenant)


@dataclass
class Seen:
    """What the next stage saw; `streamed` is the body it read itself from `receive`."""

    query: bytes = b""
    body: bytes | None = None
    body_replaced: bool = False
    body_json: Any = None
    audit: dict[str, Any] = field(default_factory=dict)
    streamed: bytes | None = None
    reads: int = 0  # receive() calls made by the tenant stage (before the next stage ran)


async def run(tenant: TenantBinder | None, method: str = "GET", *, query: bytes = b"", body: bytes = b"",
              content_type: bytes | None = JSON, claims: dict[str, Any] | None = ALICE,
              path_params: dict[str, str] | None = None, body_json: Any = None, preflight: bool = False,
              routed: bool = True) -> Seen | None:
    """Call the stage; the Seen of the next stage, or None when it was not reached."""
    ctx = RequestContext("req-1", "203.0.113.7", None)  # type: ignore[arg-type]
    ctx.route = route(tenant) if routed else None
    ctx.claims = claims
    ctx.query_string = query
    ctx.path_params = dict(path_params or {})
    ctx.body_json = body_json
    headers = [(b"host", b"gw.test")] + ([(b"content-type", content_type)] if content_type is not None else [])
    scope: dict[str, Any] = {"type": "http", "method": method, "headers": headers, "gateway": ctx,
                             "gateway.has_body": bool(body)}
    if preflight:
        scope["gateway.preflight"] = True
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    seen: list[Seen] = []

    async def downstream(scope: Any, rcv: Any, send: Any) -> None:
        c: RequestContext = scope["gateway"]
        s = Seen(c.query_string, c.body, c.body_replaced, c.body_json, dict(c.audit_extra), reads=reads)
        if c.body is None and scope.get("gateway.has_body"):  # as the forwarder does: stream it
            s.streamed = (await rcv())["body"]
        seen.append(s)

    await TenantStage(downstream, "org_id")(scope, receive, None)  # type: ignore[arg-type]
    return seen[0] if seen else None


async def refused(tenant: TenantBinder, method: str = "GET", **kw: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await run(tenant, method, **kw)
    return info.value


# --- stepping aside -----------------------------------------------------------------------------

async def test_an_unrouted_request_steps_aside() -> None:
    seen = await run(binder(query="orgId"), query=b"orgId=org-b", claims=None, routed=False)
    assert seen is not None and seen.query == b"orgId=org-b"


async def test_a_route_without_binding_steps_aside() -> None:
    seen = await run(None, "POST", query=b"orgId=org-b", body=b'{"orgId":"org-b"}', claims=None)
    assert seen is not None
    assert (seen.query, seen.body, seen.streamed, seen.audit) == (b"orgId=org-b", None, b'{"orgId":"org-b"}', {})


async def test_cors_preflight_steps_aside() -> None:
    # A preflight carries no token (no claims): binding it would refuse it 403 tenant.missing_claim.
    seen = await run(binder(query="orgId", body="orgId"), "POST", query=b"orgId=org-b", claims=None,
                     preflight=True)
    assert seen is not None and (seen.query, seen.body, seen.reads) == (b"orgId=org-b", None, 0)


async def test_a_bound_route_without_an_org_claim_is_refused() -> None:
    err = await refused(binder(query="orgId"), claims={"sub": "alice"})
    assert (err.status, err.reason) == (403, "tenant.missing_claim")


# --- path ---------------------------------------------------------------------------------------

async def test_path_org_equal_to_the_callers_passes() -> None:
    seen = await run(binder(path="orgId"), path_params={"orgId": ORG})
    assert seen is not None and seen.audit == {}


@pytest.mark.parametrize("params", [{"orgId": "org-b"}, {"orgId": ""}, {}], ids=["other", "empty", "absent"])
async def test_path_org_other_than_the_callers_is_refused(params: dict[str, str]) -> None:
    err = await refused(binder(path="orgId"), path_params=params)
    assert (err.status, err.reason, err.route_id) == (403, "tenant.mismatch", ROUTE_ID)


# --- query --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "forwarded"), [
    (b"orgId=org-a&limit=5", b"orgId=org-a&limit=5"),
    (b"limit=5", b"limit=5&orgId=org-a"),  # injection is not a rewrite of a client value
])
async def test_query_in_the_callers_org_is_not_marked_rewritten(query: bytes, forwarded: bytes) -> None:
    seen = await run(binder(query="orgId"), query=query)
    assert seen is not None and (seen.query, seen.audit) == (forwarded, {})


async def test_query_naming_another_org_is_refused_in_verify_mode() -> None:
    err = await refused(binder(query="orgId"), query=b"orgId=org-b")
    assert (err.status, err.reason) == (403, "tenant.mismatch")


async def test_query_naming_another_org_is_rewritten_and_audited_in_rewrite_mode() -> None:
    seen = await run(binder("rewrite", query="orgId"), query=b"orgId=org-b&limit=5")
    assert seen is not None
    assert (seen.query, seen.audit) == (b"orgId=org-a&limit=5", {"tenant": "tenant.rewritten"})


async def test_query_binding_leaves_the_body_to_the_forwarder() -> None:
    # Only body-bound routes buffer the body; a query-bound POST streams it, whatever its type.
    seen = await run(binder(query="orgId"), "POST", query=b"orgId=org-a", body=b"plain text",
                     content_type=b"text/plain")
    assert seen is not None
    assert (seen.reads, seen.body, seen.body_json, seen.streamed) == (0, None, None, b"plain text")


# --- body ---------------------------------------------------------------------------------------

async def test_body_org_is_injected_and_the_next_stage_sees_the_bound_object() -> None:
    seen = await run(binder(body="orgId"), "POST", body=b'{"name":"x"}')
    assert seen is not None
    assert seen.body == b'{"name":"x","orgId":"org-a"}' and seen.body_replaced is True
    assert seen.body_json == {"name": "x", "orgId": ORG} == json.loads(seen.body)
    assert seen.audit == {}  # injected, not rewritten


async def test_body_in_the_callers_org_is_forwarded_byte_for_byte() -> None:
    raw = b'{ "orgId": "org-a",  "name": "x" }'
    seen = await run(binder(body="orgId"), "PUT", body=raw)
    assert seen is not None
    assert (seen.body, seen.body_replaced, seen.audit) == (raw, False, {})
    assert seen.body_json == {"orgId": ORG, "name": "x"}


async def test_body_naming_another_org_is_refused_in_verify_mode() -> None:
    err = await refused(binder(body="orgId"), "PATCH", body=b'{"orgId":"org-b"}')
    assert (err.status, err.reason) == (403, "tenant.mismatch")


async def test_body_naming_another_org_is_rewritten_and_audited_in_rewrite_mode() -> None:
    seen = await run(binder("rewrite", body="orgId"), "DELETE", body=b'{"orgId":"org-b","n":1}')
    assert seen is not None
    assert seen.body == b'{"orgId":"org-a","n":1}' and seen.body_replaced is True
    assert seen.body_json == {"orgId": ORG, "n": 1}
    assert seen.audit == {"tenant": "tenant.rewritten"}


async def test_query_and_body_rewrites_are_audited_once() -> None:
    seen = await run(binder("rewrite", query="orgId", body="orgId"), "POST", query=b"orgId=org-b",
                     body=b'{"orgId":"org-a"}')
    assert seen is not None and seen.audit == {"tenant": "tenant.rewritten"} and seen.body_replaced is False


async def test_a_body_parsed_before_is_bound_in_place_not_read_again() -> None:
    parsed: dict[str, Any] = {"name": "x"}
    seen = await run(binder(body="orgId"), "POST", body=b'{"name":"x"}', body_json=parsed)
    assert seen is not None
    assert seen.body_json is parsed and parsed == {"name": "x", "orgId": ORG}
    assert seen.body == b'{"name":"x","orgId":"org-a"}'


async def test_a_body_is_not_bound_on_get() -> None:
    seen = await run(binder(body="orgId"), "GET", body=b"not json at all", content_type=b"text/plain")
    assert seen is not None
    assert (seen.reads, seen.body, seen.body_json, seen.streamed) == (0, None, None, b"not json at all")


@pytest.mark.parametrize(("raw", "ct", "status", "reason"), [
    (b'{"orgId":', JSON, 400, "request.bad_json"),
    (b'["org-a"]', JSON, 400, "request.ambiguous"),
    (b'{"orgId":"org-a"}', b"text/plain", 415, "request.unsupported_media_type"),
])
async def test_a_body_that_cannot_be_bound_is_refused_with_the_route(raw: bytes, ct: bytes, status: int,
                                                                     reason: str) -> None:
    err = await refused(binder(body="orgId"), "POST", body=raw, content_type=ct)
    assert (err.status, err.reason, err.route_id) == (status, reason, ROUTE_ID)
