"""DeprecationStage on its own, driven over ASGI with compiled `deprecated:` settings: the headers a
deprecated route's answers carry, the audit mark and the "served" count, 410 `route.sunset` from the
sunset instant on (headers still added, counted as "sunset", the successor named), and the requests
the stage steps aside for (no route, a route that is not deprecated)."""

from __future__ import annotations

import time
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.openapi.deprecation import Deprecation, compile_deprecation
from gateway.pipeline.deprecation import DeprecationStage
from gateway.policy.compiled import CompiledRoute
from gateway.policy.schema import DeprecationSpec
from tests.pipeline.stage_kit import RECEIVE, SEND, Downstream, stage_route, stage_scope

SINCE = date(2026, 1, 1)
SUNSET = date(2027, 6, 30)
SUNSET_AT = 1814313600.0  # 2027-06-30T00:00:00Z
CORS = (b"access-control-allow-origin", b"https://app.example")  # what an earlier stage added


def deprecated(sunset: date | None = SUNSET, link: str | None = None, successor: str | None = None) -> Deprecation:
    return compile_deprecation(DeprecationSpec(since=SINCE, sunset=sunset, link=link, successor=successor))


def route(dep: Deprecation | None, rid: str = "agents.read") -> CompiledRoute:
    rt = stage_route(rid, {"GET"}, "/v1/agents/{id}", auth="none")
    rt.deprecation = dep
    return rt


def context(rt: CompiledRoute | None) -> RequestContext:
    ctx = RequestContext("req-1", "192.0.2.1", SimpleNamespace())  # type: ignore[arg-type]
    ctx.route = rt
    ctx.response_headers.append(CORS)
    return ctx


class Counter:
    def __init__(self) -> None:
        self.counted: list[tuple[str, str]] = []

    def __call__(self, route_id: str, outcome: str) -> None:
        self.counted.append((route_id, outcome))


def at(now: float) -> Any:
    return lambda: now


async def passes(ctx: RequestContext, count: Any = None, clock: Any = None) -> Downstream:
    down = Downstream()
    scope = stage_scope(ctx)
    stage = DeprecationStage(down, count, clock) if clock is not None else DeprecationStage(down, count)
    await stage(scope, RECEIVE, SEND)
    assert down.reached == [ctx]
    assert down.handed == [(scope, RECEIVE, SEND)]
    return down


async def refused(ctx: RequestContext, count: Any = None, clock: Any = None) -> GatewayError:
    down = Downstream()
    stage = DeprecationStage(down, count, clock) if clock is not None else DeprecationStage(down, count)
    with pytest.raises(GatewayError) as info:
        await stage(stage_scope(ctx), RECEIVE, SEND)
    assert down.reached == []
    return info.value


# --- stepping aside -------------------------------------------------------------------------------

async def test_without_a_route_the_request_passes_untouched() -> None:
    ctx, count = context(None), Counter()
    await passes(ctx, count, at(SUNSET_AT + 1))
    assert ctx.response_headers == [CORS]
    assert ctx.audit_extra == {}
    assert count.counted == []


async def test_a_route_that_is_not_deprecated_passes_untouched() -> None:
    ctx, count = context(route(None)), Counter()
    await passes(ctx, count, at(SUNSET_AT + 1))
    assert ctx.response_headers == [CORS]
    assert ctx.audit_extra == {}
    assert count.counted == []


# --- before the sunset ----------------------------------------------------------------------------

def test_the_compiled_headers_are_what_the_stage_adds() -> None:
    # The fixture's own check: the values below are the RFC 9745 / RFC 8594 / RFC 8288 renderings.
    dep = deprecated(link="https://docs.example/dep", successor="/v2/agents/{id}")
    assert dep.headers == (
        (b"deprecation", b"@1767225600"),
        (b"sunset", b"Wed, 30 Jun 2027 00:00:00 GMT"),
        (b"link", b'<https://docs.example/dep>; rel="deprecation"; type="text/html", '
                  b'</v2/agents/{id}>; rel="successor-version"'),
    )
    assert dep.sunset_at == SUNSET_AT


async def test_a_deprecated_route_is_served_with_its_headers_marked_and_counted() -> None:
    dep = deprecated(link="https://docs.example/dep", successor="/v2/agents/{id}")
    ctx, count = context(route(dep)), Counter()
    await passes(ctx, count, at(SUNSET_AT - 1))
    assert ctx.response_headers == [CORS, *dep.headers]
    assert ctx.audit_extra == {"deprecated": True}
    assert count.counted == [("agents.read", "served")]


async def test_a_deprecated_route_without_a_sunset_is_served_for_ever() -> None:
    dep = deprecated(sunset=None)
    assert dep.sunset_at is None
    ctx, count = context(route(dep)), Counter()
    await passes(ctx, count, at(1e15))
    assert ctx.response_headers == [CORS, (b"deprecation", b"@1767225600")]
    assert ctx.audit_extra == {"deprecated": True}
    assert count.counted == [("agents.read", "served")]


async def test_without_a_counter_a_deprecated_route_is_still_served_with_its_headers() -> None:
    dep = deprecated()
    ctx = context(route(dep))
    await passes(ctx, None, at(SUNSET_AT - 1))
    assert ctx.response_headers == [CORS, *dep.headers]
    assert ctx.audit_extra == {"deprecated": True}


async def test_each_call_is_counted_under_its_own_route() -> None:
    count = Counter()
    for rid in ("a.v1", "b.v1", "a.v1"):
        await passes(context(route(deprecated(), rid)), count, at(SUNSET_AT - 1))
    assert count.counted == [("a.v1", "served"), ("b.v1", "served"), ("a.v1", "served")]


# --- from the sunset on ---------------------------------------------------------------------------

@pytest.mark.parametrize("now", [SUNSET_AT, SUNSET_AT + 0.001, SUNSET_AT + 86400 * 365])
async def test_from_the_sunset_instant_the_route_is_gone(now: float) -> None:
    dep = deprecated()
    ctx, count = context(route(dep)), Counter()
    err = await refused(ctx, count, at(now))
    assert (err.status, err.reason, err.route_id) == (410, "route.sunset", "agents.read")
    assert err.detail == "this route was retired on its sunset date"
    assert err.headers == {}
    assert count.counted == [("agents.read", "sunset")]
    # The 410 still says why and where to go: the headers go out with the refusal.
    assert ctx.response_headers == [CORS, *dep.headers]
    assert ctx.audit_extra == {"deprecated": True}


async def test_just_before_the_sunset_instant_the_route_is_served() -> None:
    ctx, count = context(route(deprecated())), Counter()
    await passes(ctx, count, at(SUNSET_AT - 0.001))
    assert count.counted == [("agents.read", "served")]


async def test_a_gone_route_names_its_successor() -> None:
    dep = deprecated(successor="/v2/agents/{id}")
    err = await refused(context(route(dep)), None, at(SUNSET_AT))
    assert err.detail == "this route was retired on its sunset date; use /v2/agents/{id}"
    assert (err.status, err.reason, err.route_id) == (410, "route.sunset", "agents.read")


async def test_a_gone_route_without_a_counter_is_still_refused() -> None:
    ctx = context(route(deprecated()))
    err = await refused(ctx, None, at(SUNSET_AT))
    assert err.reason == "route.sunset"
    assert ctx.audit_extra == {"deprecated": True}


async def test_the_clock_is_read_each_call() -> None:
    now = [SUNSET_AT - 1]
    count = Counter()
    down = Downstream()
    stage = DeprecationStage(down, count, lambda: now[0])
    rt = route(deprecated())
    await stage(stage_scope(context(rt)), RECEIVE, SEND)
    now[0] = SUNSET_AT
    with pytest.raises(GatewayError):
        await stage(stage_scope(context(rt)), RECEIVE, SEND)
    assert len(down.reached) == 1
    assert count.counted == [("agents.read", "served"), ("agents.read", "sunset")]


# --- the default clock is the wall clock ----------------------------------------------------------

async def test_by_default_a_sunset_in_the_past_is_gone_and_one_far_ahead_is_served() -> None:
    assert DeprecationStage(Downstream()).clock is time.time
    past = Deprecation(((b"deprecation", b"@0"),), 86400.0, None)  # 1970-01-02
    err = await refused(context(route(past)))
    assert err.reason == "route.sunset"
    future = Deprecation(((b"deprecation", b"@0"),), time.time() + 10 * 365 * 86400, None)
    ctx = context(route(future))
    await passes(ctx)
    assert ctx.response_headers == [CORS, (b"deprecation", b"@0")]
