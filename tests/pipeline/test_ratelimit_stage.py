"""RateLimitStage on its own, driven over ASGI with a scripted limiter: which requests it counts,
the keys it counts them under (client address, `sub`, the org claim), the 429 and its headers, the
shadow outcome, and the requests it leaves alone (no limit, address-keyed limits, preflights)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline.ratelimit import RateLimitStage
from gateway.policy.compiled import CompiledRoute
from gateway.ratelimit.limiter import Decision
from tests.pipeline.stage_kit import RECEIVE, SEND, Downstream, ScriptedLimiter, stage_route, stage_scope

IP = "198.51.100.23"
HEADERS = [(b"ratelimit-policy", b'"r";q=2;w=60'), (b"ratelimit", b'"r";r=1;t=60')]
BY_IDENTITY = SimpleNamespace(by_address=False)



def route(rule: Any = BY_IDENTITY) -> CompiledRoute:
    return stage_route(rate_limit=rule)


class Harness:
    def __init__(self, decision: Decision | None = None, *, org_claim: str = "org_id", recorder: bool = True) -> None:
        self.limiter = ScriptedLimiter(decision)
        self.outcomes: list[tuple[str, str]] = []
        inner = Downstream()
        self.reached, self.handed = inner.reached, inner.handed

        if recorder:
            self.stage = RateLimitStage(inner, lambda: self.limiter, org_claim,  # type: ignore[arg-type,return-value]
                                        outcome=lambda r, what: self.outcomes.append((r, what)))
        else:
            self.stage = RateLimitStage(inner, lambda: self.limiter, org_claim)  # type: ignore[arg-type,return-value]

    async def call(self, rt: CompiledRoute | None, claims: dict[str, Any] | None = None,
                   preflight: bool = False) -> RequestContext:
        ctx = RequestContext("req-1", IP, None)  # type: ignore[arg-type]
        ctx.route = rt
        ctx.claims = claims
        scope = stage_scope(ctx, "GET", preflight=preflight)
        await self.stage(scope, RECEIVE, SEND)
        assert self.handed in ([], [(scope, RECEIVE, SEND)])
        return ctx


async def test_a_request_is_counted_under_its_address_sub_and_org_and_keeps_the_headers() -> None:
    h = Harness(Decision(allowed=True, headers=list(HEADERS)))
    ctx = await h.call(route(), {"sub": "u1", "org_id": "org-a"})
    assert h.limiter.hits == [("r", BY_IDENTITY, {"ip": IP, "sub": "u1", "org": "org-a"})]
    assert h.outcomes == [("r", "allowed")]
    assert ctx.response_headers == HEADERS
    assert h.reached == [ctx]


async def test_the_org_is_read_from_the_configured_claim_path() -> None:
    h = Harness(org_claim="app_metadata.tenant")
    await h.call(route(), {"sub": "u1", "org_id": "not-this", "app_metadata": {"tenant": "t-9"}})
    assert h.limiter.hits[0][2] == {"ip": IP, "sub": "u1", "org": "t-9"}


@pytest.mark.parametrize("claims", [pytest.param(None, id="anonymous"), pytest.param({}, id="no_claims")])
async def test_without_claims_the_request_is_counted_by_address_only(claims: dict[str, Any] | None) -> None:
    h = Harness()
    ctx = await h.call(route(), claims)
    assert h.limiter.hits == [("r", BY_IDENTITY, {"ip": IP, "sub": None, "org": None})]
    assert h.reached == [ctx]


async def test_over_the_limit_is_429_with_the_rate_limit_headers_and_never_reaches_the_app() -> None:
    h = Harness(Decision(allowed=False, headers=list(HEADERS) + [(b"retry-after", b"17")]))
    with pytest.raises(GatewayError) as info:
        await h.call(route(), {"sub": "u1"})
    err = info.value
    assert (err.status, err.reason, err.route_id) == (429, "ratelimit.exceeded", "r")
    assert err.headers == {"RateLimit-Policy": '"r";q=2;w=60', "RateLimit": '"r";r=1;t=60', "Retry-After": "17"}
    assert h.outcomes == [("r", "denied")]
    assert h.reached == []


async def test_a_shadow_denial_is_reported_and_the_request_still_served() -> None:
    h = Harness(Decision(allowed=True, shadow_denied=True))
    ctx = await h.call(route(), {"sub": "u1"})
    assert h.outcomes == [("r", "shadow_denied"), ("r", "allowed")]
    assert h.reached == [ctx]


@pytest.mark.parametrize("rt", [
    pytest.param(None, id="no_route"),
    pytest.param(route(None), id="no_limit"),
    pytest.param(route(SimpleNamespace(by_address=True)), id="keyed_by_address"),  # done before the body
])
async def test_the_stage_steps_aside(rt: CompiledRoute | None) -> None:
    h = Harness(Decision(allowed=False))
    ctx = await h.call(rt, {"sub": "u1"})
    assert (h.limiter.hits, h.outcomes) == ([], [])
    assert h.reached == [ctx]


async def test_a_preflight_is_not_counted() -> None:
    h = Harness(Decision(allowed=False))
    ctx = await h.call(route(), None, preflight=True)
    assert (h.limiter.hits, h.outcomes) == ([], [])
    assert h.reached == [ctx]


async def test_the_stage_works_without_an_outcome_recorder() -> None:
    h = Harness(Decision(allowed=True, shadow_denied=True, headers=list(HEADERS)), recorder=False)
    ctx = await h.call(route(), {"sub": "u1"})
    assert h.reached == [ctx]
    assert ctx.response_headers == HEADERS
    h = Harness(Decision(allowed=False), recorder=False)
    with pytest.raises(GatewayError) as info:
        await h.call(route(), {"sub": "u1"})
    assert info.value.reason == "ratelimit.exceeded"
