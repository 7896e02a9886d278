"""BodyLimitStage and read_body on their own, driven over ASGI: which Content-Length values are
framing errors, the cap at its edge both ways, when a request counts as having a body, the two body
clocks, a client that goes away, and the per-worker buffer budget (refusal, Retry-After, release)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline.bodylimit import SMALL_BODY, BodyLimitStage, BufferBudget, ClientDisconnected, Held, read_body
from gateway.policy.compiled import CompiledRoute
from tests.pipeline.stage_kit import chunk, feed, stage_route, stage_scope

CAP = 100


def route(cap: int = CAP, idle: float = 1.0, total: float = 5.0) -> CompiledRoute:
    return stage_route(methods={"POST"}, auth="none", max_body_bytes=cap, body_read_timeout=idle,
                       body_total_timeout=total)


def context(rt: CompiledRoute | None, max_buffered: int = 10 * SMALL_BODY, retry_after: int = 7) -> RequestContext:
    policy = SimpleNamespace(limits=SimpleNamespace(max_buffered_bytes=max_buffered, shed_retry_after=retry_after))
    ctx = RequestContext("req-1", "203.0.113.7", policy)  # type: ignore[arg-type]
    ctx.route = rt
    return ctx


def scope_for(ctx: RequestContext, headers: list[tuple[bytes, bytes]], preflight: bool = False) -> dict[str, Any]:
    return stage_scope(ctx, "POST", headers, preflight)


class Inner:
    """Records the receive it was handed and, if asked, drains it (or reads the body buffered)."""

    def __init__(self, drain: bool = False, buffered: bool = False) -> None:
        self.drain, self.buffered = drain, buffered
        self.calls = 0
        self.receive: Any = None
        self.send: Any = None
        self.scope: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.body: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        self.scope, self.receive, self.send = scope, receive, send
        if self.buffered:
            self.body = await read_body(scope, receive)
        elif self.drain:
            while True:
                message = await receive()
                self.messages.append(message)
                if not message.get("more_body", False):
                    break


async def send(message: MutableMapping[str, Any]) -> None:
    raise AssertionError("the stage sends nothing itself")


async def run(inner: Inner, ctx: RequestContext, headers: list[tuple[bytes, bytes]], receive: Any,
              budget: BufferBudget | None = None, preflight: bool = False) -> dict[str, Any]:
    stage = BodyLimitStage(inner, budget) if budget is not None else BodyLimitStage(inner)
    scope = scope_for(ctx, headers, preflight)
    # bounded, so that a clock that never fires fails the test instead of hanging it
    await asyncio.wait_for(stage(scope, receive, send), 3)
    return scope


async def refused(inner: Inner, ctx: RequestContext, headers: list[tuple[bytes, bytes]], receive: Any,
                  budget: BufferBudget | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await run(inner, ctx, headers, receive, budget)
    return info.value


# --- stepping aside -------------------------------------------------------------------------------

async def test_without_a_route_the_request_passes_untouched_whatever_its_length() -> None:
    inner, receive = Inner(), feed()
    scope = await run(inner, context(None), [(b"content-length", b"999999")], receive)
    assert inner.calls == 1
    assert (inner.scope, inner.receive, inner.send) == (scope, receive, send)
    assert "gateway.has_body" not in scope and "gateway.held" not in scope


async def test_a_preflight_passes_untouched_whatever_its_length() -> None:
    inner, receive = Inner(), feed()
    scope = await run(inner, context(route()), [(b"content-length", b"999999")], receive, preflight=True)
    assert inner.calls == 1
    assert (inner.scope, inner.receive, inner.send) == (scope, receive, send)
    assert "gateway.has_body" not in scope and "gateway.held" not in scope


# --- Content-Length -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    pytest.param(b"abc", id="letters"),
    pytest.param(b"-1", id="negative"),
    pytest.param(b"+5", id="plus_sign"),
    pytest.param(b" 5", id="leading_space"),
    pytest.param(b"", id="empty"),
    pytest.param(b"1" + b"0" * 18, id="nineteen_digits"),
    pytest.param(b"0" * 19, id="nineteen_zeros"),
])
async def test_an_invalid_content_length_is_a_framing_error(value: bytes) -> None:
    inner = Inner()
    err = await refused(inner, context(route()), [(b"content-length", value)], feed())
    assert (err.status, err.reason, err.detail) == (400, "request.bad_framing", "invalid Content-Length")
    assert inner.calls == 0


async def test_an_eighteen_digit_content_length_is_well_formed() -> None:
    # 18 zeros: as long as the stage accepts, and zero, so within any cap.
    inner, receive = Inner(), feed()
    scope = await run(inner, context(route()), [(b"content-length", b"0" * 18)], receive)
    assert inner.calls == 1
    assert scope["gateway.has_body"] is False
    assert inner.receive is receive


async def test_an_eighteen_digit_content_length_over_the_cap_is_413_not_400() -> None:
    err = await refused(Inner(), context(route()), [(b"content-length", b"9" * 18)], feed())
    assert (err.status, err.reason) == (413, "request.body_too_large")


async def test_content_length_at_the_cap_is_accepted_and_the_body_reaches_the_app() -> None:
    inner = Inner(drain=True)
    body = b"a" * CAP
    scope = await run(inner, context(route()), [(b"content-length", str(CAP).encode())],
                      feed(chunk(body[:40]), chunk(body[40:], more=False)))
    assert scope["gateway.has_body"] is True
    assert b"".join(m["body"] for m in inner.messages) == body


async def test_content_length_one_over_the_cap_is_413_before_the_app_or_a_read() -> None:
    inner, receive = Inner(), feed(chunk(b"x", more=False))
    err = await refused(inner, context(route()), [(b"content-length", str(CAP + 1).encode())], receive)
    assert (err.status, err.reason, err.detail) == (413, "request.body_too_large", f"body larger than {CAP} bytes")
    assert inner.calls == 0
    assert len(receive.left) == 1


async def test_only_the_first_content_length_header_counts() -> None:
    err = await refused(Inner(), context(route()),
                        [(b"content-length", str(CAP + 1).encode()), (b"content-length", b"1")], feed())
    assert err.status == 413


@pytest.mark.parametrize("headers", [
    pytest.param([(b"content-length", b"0")], id="content_length_zero"),
    pytest.param([], id="no_framing_header"),
    pytest.param([(b"content-length", b"0"), (b"transfer-encoding", b"chunked")], id="zero_length_wins"),
])
async def test_a_request_without_a_body_gets_the_plain_receive_and_no_budget(headers: list) -> None:
    inner, receive = Inner(), feed()
    scope = await run(inner, context(route()), headers, receive)
    assert inner.calls == 1
    assert scope["gateway.has_body"] is False
    assert (inner.scope, inner.receive, inner.send) == (scope, receive, send)
    assert "gateway.held" not in scope


async def test_a_chunked_request_has_a_body() -> None:
    inner = Inner(drain=True)
    scope = await run(inner, context(route()), [(b"transfer-encoding", b"chunked")],
                      feed(chunk(b"abc"), chunk(b"", more=False)))
    assert scope["gateway.has_body"] is True
    assert [m["body"] for m in inner.messages] == [b"abc", b""]
    assert (inner.scope, inner.send) == (scope, send)


async def test_a_content_length_of_one_is_a_body() -> None:
    inner = Inner(drain=True)
    scope = await run(inner, context(route()), [(b"content-length", b"1")], feed(chunk(b"a", more=False)))
    assert scope["gateway.has_body"] is True
    assert "gateway.held" in scope
    assert [m["body"] for m in inner.messages] == [b"a"]


# --- the streamed cap -----------------------------------------------------------------------------

async def test_a_chunked_body_exactly_at_the_cap_is_delivered_whole() -> None:
    inner = Inner(drain=True)
    await run(inner, context(route()), [(b"transfer-encoding", b"chunked")],
              feed(chunk(b"a" * 60), chunk(b"b" * 40), chunk(b"", more=False)))
    assert [len(m["body"]) for m in inner.messages] == [60, 40, 0]


async def test_a_chunked_body_one_byte_over_the_cap_is_cut_at_the_chunk_that_crosses_it() -> None:
    inner = Inner(drain=True)
    err = await refused(inner, context(route()), [(b"transfer-encoding", b"chunked")],
                        feed(chunk(b"a" * 60), chunk(b"b" * 41), chunk(b"", more=False)))
    assert (err.status, err.reason, err.detail) == (413, "request.body_too_large", f"body larger than {CAP} bytes")
    assert [len(m["body"]) for m in inner.messages] == [60]


async def test_a_body_longer_than_its_content_length_is_cut_at_the_cap() -> None:
    inner = Inner(drain=True)
    err = await refused(inner, context(route()), [(b"content-length", b"10")],
                        feed(chunk(b"a" * 50), chunk(b"b" * 51, more=False)))
    assert (err.status, err.reason) == (413, "request.body_too_large")
    assert [len(m["body"]) for m in inner.messages] == [50]


async def test_a_message_without_a_body_key_counts_as_empty() -> None:
    inner = Inner(drain=True)
    await run(inner, context(route(cap=3)), [(b"transfer-encoding", b"chunked")],
              feed({"type": "http.request", "more_body": True}, chunk(b"abc", more=False)))
    assert [m.get("body") for m in inner.messages] == [None, b"abc"]


async def test_a_client_that_goes_away_mid_body_ends_the_request() -> None:
    inner = Inner(drain=True)
    with pytest.raises(ClientDisconnected):
        await run(inner, context(route()), [(b"transfer-encoding", b"chunked")],
                  feed(chunk(b"abc"), {"type": "http.disconnect"}))
    assert [m["body"] for m in inner.messages] == [b"abc"]


# --- the body clocks ------------------------------------------------------------------------------

async def test_no_body_data_within_the_idle_clock_is_408() -> None:
    inner = Inner(drain=True)
    err = await refused(inner, context(route(idle=0.05, total=5)), [(b"transfer-encoding", b"chunked")],
                        feed(chunk(b"abc")))
    assert (err.status, err.reason, err.detail) == (408, "request.body_timeout", "no body data for 0.05 s")
    assert [m["body"] for m in inner.messages] == [b"abc"]


async def test_a_body_that_never_ends_within_the_total_clock_is_408_for_the_whole_body() -> None:
    inner = Inner(drain=True)

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.02)  # always within the idle clock
        return chunk(b"x")

    loop = asyncio.get_running_loop()
    started = loop.time()
    err = await refused(inner, context(route(cap=10_000, idle=1.0, total=0.15)),
                        [(b"transfer-encoding", b"chunked")], trickle)
    took = loop.time() - started
    assert (err.status, err.reason, err.detail) == (408, "request.body_timeout", "body not received within 0.15 s")
    assert took >= 0.15  # not early; which clock fired is in the detail (no upper bound: a busy machine)
    assert len(inner.messages) >= 2  # data kept coming: the idle clock never ran out


async def test_a_wait_that_starts_after_the_total_clock_ran_out_is_408_at_once() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)  # one turn of the loop: an expired clock fires here
        return chunk(b"x")

    class Slow(Inner):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            self.messages.append(await receive())
            time.sleep(0.12)  # noqa: ASYNC251  (the app holds the loop past the total clock; idle has 0.88 s left)
            self.messages.append(await receive())

    inner = Slow()
    err = await refused(inner, context(route(cap=10_000, idle=1.0, total=0.1)),
                        [(b"transfer-encoding", b"chunked")], receive)
    assert (err.status, err.detail) == (408, "body not received within 0.1 s")
    assert [m["body"] for m in inner.messages] == [b"x"]


async def test_once_the_body_is_complete_later_waits_are_not_clocked() -> None:
    # The forwarder then waits on receive() only for the disconnect; that may take any time.
    got: list[dict[str, Any]] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"abc"}  # no more_body: the last message
        await asyncio.sleep(0.15)  # past both clocks
        return {"type": "http.disconnect"}

    class Watcher(Inner):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            got.append(await receive())
            got.append(await receive())  # the disconnect is handed on, not raised

    await run(Watcher(), context(route(idle=0.05, total=0.1)), [(b"content-length", b"3")], receive)
    assert got == [{"type": "http.request", "body": b"abc"}, {"type": "http.disconnect"}]


# --- the buffer budget ----------------------------------------------------------------------------

async def test_the_request_holds_its_share_of_the_budget_and_releases_it_when_it_ends() -> None:
    budget = BufferBudget()
    inner = Inner(buffered=True)
    used_inside: list[int] = []

    class Checking(Inner):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await inner(scope, receive, send)
            used_inside.append(budget.used)

    body = b"z" * 70_000
    ctx = context(route(cap=200_000), max_buffered=500_000, retry_after=9)
    scope = await run(Checking(), ctx, [(b"content-length", b"70000")],
                      feed(chunk(body[:30_000]), chunk(body[30_000:], more=False)), budget)
    assert inner.body == body
    assert used_inside == [70_000]
    assert budget.used == 0
    held = scope["gateway.held"]
    assert (held.limit, held.declared, held.retry_after, held.n) == (500_000, 70_000, 9, 0)


async def test_the_share_is_released_when_the_app_fails() -> None:
    budget = BufferBudget()

    class Failing(Inner):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await read_body(scope, receive)
            assert budget.used == 70_000
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run(Failing(), context(route(cap=200_000)), [(b"content-length", b"70000")],
                  feed(chunk(b"z" * 70_000, more=False)), budget)
    assert budget.used == 0


async def test_a_large_body_over_the_budget_is_503_with_retry_after_before_a_byte_is_read() -> None:
    budget = BufferBudget()
    budget.used = 50_000
    inner = Inner(buffered=True)
    receive = feed(chunk(b"z" * 70_000, more=False))
    err = await refused(inner, context(route(cap=200_000), max_buffered=100_000, retry_after=11),
                        [(b"content-length", b"70000")], receive, budget)
    assert (err.status, err.reason, err.detail) == (
        503, "gateway.overloaded", "too many request bodies buffered; retry shortly")
    assert err.headers == {"Retry-After": "11"}
    assert len(receive.left) == 1  # refused on the declared length alone
    assert budget.used == 50_000


async def test_a_chunked_body_is_refused_when_its_running_size_passes_the_budget() -> None:
    budget = BufferBudget()
    inner = Inner(buffered=True)
    receive = feed(chunk(b"a" * 60_000), chunk(b"b" * 60_000), chunk(b"c" * 60_000, more=False))
    err = await refused(inner, context(route(cap=500_000), max_buffered=100_000),
                        [(b"transfer-encoding", b"chunked")], receive, budget)
    assert (err.status, err.reason) == (503, "gateway.overloaded")
    assert len(receive.left) == 1  # the second chunk crossed the bound
    assert budget.used == 0


async def test_stages_built_without_a_budget_share_the_worker_budget() -> None:
    inner_results: list[Any] = []
    second = BodyLimitStage(Inner(buffered=True))

    class Nested(Inner):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await read_body(scope, receive)  # holds 80,000 of the worker's bytes
            ctx = context(route(cap=200_000), max_buffered=150_000)
            other = scope_for(ctx, [(b"content-length", b"80000")])
            try:
                await second(other, feed(chunk(b"q" * 80_000, more=False)), None)  # type: ignore[arg-type]
            except GatewayError as err:
                inner_results.append((err.status, err.reason))

    await run(Nested(), context(route(cap=200_000), max_buffered=150_000), [(b"content-length", b"80000")],
              feed(chunk(b"p" * 80_000, more=False)))
    assert inner_results == [(503, "gateway.overloaded")]


def test_a_body_up_to_64_kib_always_fits_even_past_the_bound() -> None:
    # SMALL_BODY is module level, which mutmut does not mutate: the edge is pinned here in bytes.
    budget = BufferBudget()
    budget.used = 1_000_000
    held = Held(budget, 10, None, 1)
    held.reserve(65_536)
    assert (budget.used, held.n) == (1_000_000 + 65_536, 65_536)
    with pytest.raises(GatewayError) as info:
        held.reserve(65_537)
    assert (info.value.status, info.value.reason) == (503, "gateway.overloaded")
    assert info.value.headers == {"Retry-After": "1"}
    assert (budget.used, held.n) == (1_000_000 + 65_536, 65_536)


def test_a_body_may_fill_the_budget_exactly() -> None:
    budget = BufferBudget()
    held = Held(budget, 100_000, None, 1)
    held.reserve(70_000)
    held.reserve(100_000)  # only the 30,000 more are counted
    assert (budget.used, held.n) == (100_000, 100_000)
    with pytest.raises(GatewayError):
        held.reserve(100_001)
    held.reserve(90_000)  # less than held: nothing changes
    assert (budget.used, held.n) == (100_000, 100_000)
    budget.used += 50_000  # another request's body pushed the worker past the bound
    held.reserve(100_000)  # what this request already holds is never refused
    held.reserve(90_000)
    assert (budget.used, held.n) == (150_000, 100_000)
    budget.used -= 50_000
    held.release()
    assert (budget.used, held.n) == (0, 0)
    held.release()
    assert budget.used == 0


# --- read_body ------------------------------------------------------------------------------------

async def test_read_body_returns_a_body_already_read_without_reading_again() -> None:
    ctx = context(route())
    ctx.body = b"kept"
    receive = feed(chunk(b"other", more=False))
    assert await read_body(scope_for(ctx, []), receive) == b"kept"
    assert len(receive.left) == 1


async def test_read_body_of_a_request_without_a_body_is_empty_and_reads_nothing() -> None:
    ctx = context(route())
    receive = feed(chunk(b"other", more=False))
    scope = scope_for(ctx, [])
    scope["gateway.has_body"] = False
    assert await read_body(scope, receive) == b""
    assert ctx.body == b""
    assert len(receive.left) == 1


async def test_read_body_joins_the_chunks_and_keeps_them_on_the_context() -> None:
    ctx = context(route())
    scope = scope_for(ctx, [])
    scope["gateway.has_body"] = True  # no budget held: counted nowhere
    receive = feed(chunk(b"ab"), chunk(b""), {"type": "http.request", "more_body": True},
                   {"type": "http.request", "body": b"cd"}, chunk(b"never"))  # no more_body: the last
    body = await asyncio.wait_for(read_body(scope, receive), 3)
    assert body == b"abcd"
    assert ctx.body == b"abcd"


async def test_read_body_without_a_declared_length_counts_as_it_reads() -> None:
    budget = BufferBudget()
    held = Held(budget, 100_000, None, 3)
    ctx = context(route())
    scope = scope_for(ctx, [])
    scope["gateway.has_body"] = True
    scope["gateway.held"] = held
    assert await read_body(scope, feed(chunk(b"a" * 70_000), chunk(b"", more=False))) == b"a" * 70_000
    assert (budget.used, held.n) == (70_000, 70_000)
