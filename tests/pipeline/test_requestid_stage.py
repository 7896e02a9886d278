"""RequestIdStage on its own, driven over ASGI: which incoming X-Request-ID is adopted (well-formed and
from a trusted peer only) and what is kept of a refused one, the request ids it mints, load shedding
over the in-flight cap, how every refusal is rendered (problem+json, HEAD, a response already
started), a client that went away, an unexpected error, observers that fail, body byte counting and
the tracing span."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import BadGateway, BadRequest, GatewayError, GatewayTimeout, ServiceUnavailable, Unauthorized
from gateway.logs import CURRENT_REQUEST
from gateway.pipeline import requestid
from gateway.pipeline.bodylimit import ClientDisconnected
from gateway.pipeline.requestid import (
    MAX_CLIENT_REQUEST_ID,
    InFlight,
    RequestIdStage,
    _RequestIds,
    client_request_id,
    new_request_id,
)
from gateway.tracing import Span, Tracer
from tests.pipeline.stage_kit import stage_route

GOOD_ID = b"upstream-req.0001:a_b"
PEER = "203.0.113.7"
HEX24 = re.compile(r"^[0-9a-f]{24}$")
TRACEPARENT = (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def policy(max_in_flight: int = 100, retry_after: int = 7) -> Any:
    return SimpleNamespace(limits=SimpleNamespace(max_in_flight=max_in_flight, shed_retry_after=retry_after))


class Recorder:
    """The ASGI `send`: records every message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(dict(message))

    @property
    def start(self) -> dict[str, Any]:
        assert self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"])

    @property
    def body(self) -> bytes:
        assert [m["type"] for m in self.messages] == ["http.response.start", "http.response.body"]
        body: bytes = self.messages[1]["body"]
        return body


async def RECEIVE() -> dict[str, Any]:  # noqa: N802 (stands in for an ASGI callable)
    return {"type": "http.request", "body": b"", "more_body": False}


class Inner:
    """The rest of the pipeline: records what it was handed, then does what `action` says."""

    def __init__(self, action: Any = None) -> None:
        self.action = action
        self.calls = 0
        self.scope: dict[str, Any] = {}
        self.receive: Any = None
        self.send: Any = None
        self.current: Any = None
        self.in_flight: int | None = None
        self.stage: RequestIdStage | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        self.scope, self.receive, self.send = scope, receive, send
        self.current = CURRENT_REQUEST.get()
        if self.stage is not None:
            self.in_flight = self.stage.in_flight.n
        if self.action is not None:
            await self.action(scope, receive, send)


def raising(err: BaseException) -> Any:
    async def action(scope: Any, receive: Any, send: Any) -> None:
        raise err
    return action


class RecordingTracer(Tracer):
    def __init__(self, exporting: bool = True, fail: bool = False) -> None:
        self.exporting = exporting  # type: ignore[misc]
        self.fail = fail
        self.ended: list[tuple[Span, dict[str, Any], bool]] = []

    def end(self, span: Span, attributes: Mapping[str, Any], error: bool) -> None:
        self.ended.append((span, dict(attributes), error))
        if self.fail:
            raise RuntimeError("exporter down")


def asking(asked: list[str], answer: bool) -> Any:
    """A `trusted_peer` that answers `answer` and records the addresses asked."""

    def trusted(ip: str) -> bool:
        asked.append(ip)
        return answer
    return trusted


def make_scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
               client: tuple[str, int] | None = (PEER, 5000)) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": "/v1/x", "headers": headers or []}
    if client is not None:
        scope["client"] = client
    return scope


async def run(inner: Inner, scope: dict[str, Any] | None = None, *, pol: Any = None,
              in_flight: InFlight | None = None, trusted: Any = None, observers: list[Any] | None = None,
              tracer: Tracer | None = None, count_bytes: bool = False, receive: Any = RECEIVE,
              send: Recorder | None = None) -> tuple[RequestContext, Recorder]:
    pol = pol if pol is not None else policy()
    stage = RequestIdStage(inner, lambda: pol, observers if observers is not None else [], in_flight,
                           trusted_peer=trusted, tracer=tracer, count_bytes=count_bytes)
    inner.stage = stage
    scope = scope if scope is not None else make_scope()
    send = send or Recorder()
    await stage(scope, receive, send)
    ctx: RequestContext = scope["gateway"]
    return ctx, send


def problem(rec: Recorder) -> dict[str, Any]:
    assert rec.headers[b"content-type"] == b"application/problem+json"
    doc: dict[str, Any] = json.loads(rec.body)
    return doc


# --- request ids ----------------------------------------------------------------------------------

async def test_a_well_formed_id_from_a_trusted_peer_is_adopted() -> None:
    asked: list[str] = []
    inner = Inner()
    ctx, rec = await run(inner, make_scope(headers=[(b"x-request-id", GOOD_ID)]),
                         trusted=asking(asked, True))
    assert asked == [PEER]
    assert (ctx.request_id, ctx.client_request_id, ctx.client_ip) == (GOOD_ID.decode(), None, PEER)
    assert inner.calls == 1 and inner.scope["gateway"] is ctx
    assert rec.messages == []


async def test_the_first_x_request_id_is_the_one_considered() -> None:
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", b"first-id-0001"),
                                                     (b"x-request-id", b"second-id-0002")]),
                       trusted=lambda ip: True)
    assert ctx.request_id == "first-id-0001"


@pytest.mark.parametrize("value", [
    pytest.param(b"a" * 8, id="eight"),
    pytest.param(b"a" * 128, id="hundred_twenty_eight"),
    pytest.param(b"AZaz09._:-", id="every_kind_of_character"),
])
async def test_an_id_within_the_form_is_adopted_from_a_trusted_peer(value: bytes) -> None:
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", value)]), trusted=lambda ip: True)
    assert (ctx.request_id, ctx.client_request_id) == (value.decode(), None)


@pytest.mark.parametrize("value", [
    pytest.param(b"a" * 7, id="seven"),
    pytest.param(b"a" * 129, id="hundred_twenty_nine"),
    pytest.param(b"abcdefgh/", id="slash"),
    pytest.param(b"abcd efgh", id="space"),
    pytest.param(b"abcdefgh\n", id="trailing_newline"),  # `$` took it (a strict xfail before the fix)
    pytest.param(b"", id="empty"),
])
async def test_a_malformed_id_from_a_trusted_peer_is_not_adopted_but_kept_apart(value: bytes) -> None:
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", value)]), trusted=lambda ip: True)
    assert HEX24.match(ctx.request_id)
    assert ctx.client_request_id == client_request_id(value)


async def test_a_well_formed_id_from_an_untrusted_peer_is_kept_apart() -> None:
    asked: list[str] = []
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", GOOD_ID)]),
                       trusted=asking(asked, False))
    assert asked == [PEER]
    assert HEX24.match(ctx.request_id) and ctx.request_id != GOOD_ID.decode()
    assert ctx.client_request_id == GOOD_ID.decode()


async def test_no_peer_is_trusted_by_default() -> None:
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", GOOD_ID)]))
    assert HEX24.match(ctx.request_id)
    assert ctx.client_request_id == GOOD_ID.decode()


async def test_without_an_incoming_id_one_is_minted_and_there_is_no_client_id() -> None:
    asked: list[str] = []
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-other", GOOD_ID)]),
                       trusted=asking(asked, True))
    assert HEX24.match(ctx.request_id)
    assert ctx.client_request_id is None


async def test_without_a_client_address_the_peer_is_unspecified() -> None:
    asked: list[str] = []
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", GOOD_ID)], client=None),
                       trusted=asking(asked, True))
    assert ctx.client_ip == "0.0.0.0"
    assert asked == ["0.0.0.0"]
    assert ctx.request_id == GOOD_ID.decode()


async def test_each_request_gets_its_own_id() -> None:
    ids = {(await run(Inner()))[0].request_id for _ in range(5)}
    assert len(ids) == 5 and all(HEX24.match(i) for i in ids)


def test_the_client_id_is_capped_and_made_printable() -> None:
    assert MAX_CLIENT_REQUEST_ID == 128
    assert client_request_id(b"x" * 200) == "x" * 128
    assert client_request_id(b"x" * 128) == "x" * 128
    assert client_request_id(b" ~ok\x00\x1f\x7f\x80\xff\xe9") == " ~ok??????"
    assert client_request_id(b"\xff" * 130) == "?" * 128


async def test_an_untrusted_id_is_kept_capped_and_printable() -> None:
    ctx, _ = await run(Inner(), make_scope(headers=[(b"x-request-id", b"\x01" + b"y" * 300)]))
    assert ctx.client_request_id == "?" + "y" * 127


def test_ids_are_read_from_urandom_in_batches_of_256(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def batch(k: int, n: int) -> bytes:
        return bytes((k * 7 + i) % 256 for i in range(n))

    def fake_urandom(n: int) -> bytes:
        calls.append(n)
        return batch(len(calls), n)

    monkeypatch.setattr(os, "urandom", fake_urandom)
    ids = _RequestIds()
    first = [ids() for _ in range(256)]
    assert calls == [12 * 256]
    assert first == [batch(1, 12 * 256)[i * 12:(i + 1) * 12].hex() for i in range(256)]
    assert ids() == batch(2, 12).hex()
    assert calls == [12 * 256, 12 * 256]
    ids.reset()
    assert ids() == batch(3, 12).hex()
    assert len(calls) == 3


def test_a_fresh_generator_hands_out_whole_ids() -> None:
    ids = _RequestIds()
    got = [ids() for _ in range(600)]
    assert all(HEX24.match(i) for i in got)
    assert len(set(got)) == 600


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_does_not_repeat_the_parents_ids() -> None:
    new_request_id()  # the parent's buffer is filled
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.write(w, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    parent = new_request_id()
    assert HEX24.match(child) and HEX24.match(parent)
    assert child != parent


# --- the context ----------------------------------------------------------------------------------

async def test_the_context_carries_the_current_policy_trace_and_log_ids() -> None:
    policies = iter([policy(), policy()])
    first, second = next(policies), next(policies)
    current = [first]
    inner = Inner()
    stage = RequestIdStage(inner, lambda: current[0], [])
    scope = make_scope(headers=[TRACEPARENT])
    await stage(scope, RECEIVE, Recorder())
    ctx = scope["gateway"]
    assert ctx.policy is first
    assert isinstance(ctx.trace, Span) and ctx.trace.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert ctx.trace.parent_id == "b7ad6b7169203331"
    assert inner.current == (ctx.request_id, ctx.trace.trace_id)
    current[0] = second
    scope = make_scope()
    await stage(scope, RECEIVE, Recorder())
    assert scope["gateway"].policy is second


async def test_by_default_the_inner_app_gets_the_very_receive_and_send() -> None:
    inner = Inner()
    rec = Recorder()
    scope = make_scope()
    await RequestIdStage(inner, policy, [])(scope, RECEIVE, rec)
    ctx = scope["gateway"]
    assert inner.receive is RECEIVE and inner.send is rec
    assert (ctx.bytes_in, ctx.bytes_out, ctx.status, ctx.decision, ctx.reason) == (0, 0, 0, "allow", None)


# --- load shedding --------------------------------------------------------------------------------

async def test_in_flight_counts_this_request_and_is_released() -> None:
    shared = InFlight()
    shared.n = 4
    inner = Inner()
    ctx, rec = await run(inner, pol=policy(max_in_flight=5), in_flight=shared)
    assert inner.calls == 1 and inner.in_flight == 5
    assert shared.n == 4
    assert rec.messages == [] and ctx.status == 0


async def test_a_default_in_flight_counter_starts_at_zero() -> None:
    inner = Inner()
    await run(inner, pol=policy(max_in_flight=1))
    assert inner.calls == 1 and inner.in_flight == 1
    assert inner.stage is not None and inner.stage.in_flight.n == 0


async def test_over_the_cap_the_request_is_shed_with_503_and_retry_after() -> None:
    shared = InFlight()
    shared.n = 5
    seen: list[RequestContext] = []
    inner = Inner()
    ctx, rec = await run(inner, pol=policy(max_in_flight=5, retry_after=9), in_flight=shared,
                         observers=[lambda s, c: seen.append(c)])
    assert inner.calls == 0
    assert shared.n == 5
    assert rec.start["status"] == 503
    assert rec.headers[b"retry-after"] == b"9"
    doc = problem(rec)
    assert (doc["reason"], doc["detail"], doc["request_id"]) == (
        "gateway.overloaded", "too many requests in flight; retry shortly", ctx.request_id)
    assert (ctx.status, ctx.decision, ctx.reason) == (503, "deny", "gateway.overloaded")
    assert seen == [ctx]


# --- refusals -------------------------------------------------------------------------------------

async def test_a_refusal_is_rendered_as_problem_json_with_the_context_headers() -> None:
    async def action(scope: Any, receive: Any, send: Any) -> None:
        scope["gateway"].response_headers.append((b"access-control-allow-origin", b"https://app.example"))
        raise Unauthorized("auth.missing_token", "no token")

    ctx, rec = await run(Inner(action))
    assert rec.start["status"] == 401
    headers = rec.headers
    assert headers[b"x-request-id"] == ctx.request_id.encode()
    assert headers[b"access-control-allow-origin"] == b"https://app.example"
    assert headers[b"www-authenticate"] == b'Bearer realm="api"'
    assert int(headers[b"content-length"]) == len(rec.body)
    doc = problem(rec)
    assert (doc["status"], doc["reason"], doc["detail"], doc["request_id"]) == (
        401, "auth.missing_token", "no token", ctx.request_id)
    assert (ctx.status, ctx.decision, ctx.reason) == (401, "deny", "auth.missing_token")


async def test_a_refusal_to_head_has_no_body_but_the_full_length() -> None:
    ctx, rec = await run(Inner(raising(BadRequest("request.bad_path", "bad path"))), make_scope("HEAD"))
    assert rec.start["status"] == 400
    assert rec.body == b""
    assert int(rec.headers[b"content-length"]) == len(BadRequest("request.bad_path", "bad path").body(ctx.request_id))
    assert (ctx.status, ctx.decision, ctx.reason) == (400, "deny", "request.bad_path")


@pytest.mark.parametrize(("err", "decision"), [
    pytest.param(BadRequest(), "deny", id="400"),
    pytest.param(GatewayError(detail="boom"), "error", id="500"),
    pytest.param(BadGateway(), "error", id="502"),
    pytest.param(ServiceUnavailable("upstream.saturated"), "deny", id="503"),
    pytest.param(GatewayTimeout(), "error", id="504"),
])
async def test_a_refusal_is_a_deny_below_500_and_for_503_else_an_error(err: GatewayError, decision: str) -> None:
    ctx, rec = await run(Inner(raising(err)))
    assert rec.start["status"] == err.status
    assert (ctx.status, ctx.decision, ctx.reason) == (err.status, decision, err.reason)


async def test_a_refusal_after_the_response_started_is_raised_not_rendered() -> None:
    err = BadGateway("upstream.bad_response", "broken")

    async def action(scope: Any, receive: Any, send: Any) -> None:
        scope["gateway.response_started"] = True
        raise err

    seen: list[RequestContext] = []
    shared = InFlight()
    inner = Inner(action)
    with pytest.raises(BadGateway) as info:
        await run(inner, in_flight=shared, observers=[lambda s, c: seen.append(c)])
    assert info.value is err
    ctx = inner.scope["gateway"]
    assert (ctx.status, ctx.decision, ctx.reason) == (502, "error", "upstream.bad_response")
    assert seen == [ctx] and shared.n == 0


async def test_a_started_response_keeps_the_status_it_sent() -> None:
    async def action(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        scope["gateway.response_started"] = True
        scope["gateway"].status = 200
        raise BadGateway("upstream.bad_response")

    rec = Recorder()
    inner = Inner(action)
    with pytest.raises(BadGateway):
        await run(inner, send=rec)
    assert [m["type"] for m in rec.messages] == ["http.response.start"]
    ctx = inner.scope["gateway"]
    assert (ctx.status, ctx.decision) == (200, "error")


async def test_an_unexpected_error_after_the_response_started_is_raised_as_an_internal_error() -> None:
    async def action(scope: Any, receive: Any, send: Any) -> None:
        scope["gateway.response_started"] = True
        raise ValueError("secret internals")

    inner = Inner(action)
    with pytest.raises(GatewayError) as info:
        await run(inner)
    assert (info.value.status, info.value.reason, info.value.detail) == (500, "gateway.internal", "internal error")
    ctx = inner.scope["gateway"]
    assert (ctx.status, ctx.decision, ctx.reason) == (502, "error", "gateway.internal")


# --- disconnects and unexpected errors ------------------------------------------------------------

async def test_a_client_that_went_away_is_recorded_as_499_and_nothing_is_sent() -> None:
    seen: list[RequestContext] = []
    shared = InFlight()
    ctx, rec = await run(Inner(raising(ClientDisconnected())), in_flight=shared,
                         observers=[lambda s, c: seen.append(c)])
    assert rec.messages == []
    assert (ctx.status, ctx.decision, ctx.reason) == (499, "client_closed", "request.client_closed")
    assert seen == [ctx] and shared.n == 0


async def test_an_unexpected_error_is_a_500_that_leaks_nothing_and_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.request")
    shared = InFlight()
    ctx, rec = await run(Inner(raising(ValueError("secret internals"))), in_flight=shared)
    assert rec.start["status"] == 500
    assert b"secret" not in rec.body
    doc = problem(rec)
    assert (doc["reason"], doc["detail"], doc["request_id"]) == ("gateway.internal", "internal error", ctx.request_id)
    assert (ctx.status, ctx.decision, ctx.reason) == (500, "error", "gateway.internal")
    assert shared.n == 0
    records = [r for r in caplog.records if r.name == "gateway.request"]
    assert [r.getMessage() for r in records] == ["unhandled error"]
    assert ctx.trace is not None
    logged = records[0].__dict__
    assert (logged["request_id"], logged["trace_id"]) == (ctx.request_id, ctx.trace.trace_id)
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], ValueError)


# --- observers ------------------------------------------------------------------------------------

async def test_every_observer_runs_even_when_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.request")
    seen: list[tuple[str, Any, RequestContext]] = []

    def first(scope: Any, ctx: RequestContext) -> None:
        seen.append(("first", scope, ctx))
        raise RuntimeError("metrics broke")

    def second(scope: Any, ctx: RequestContext) -> None:
        seen.append(("second", scope, ctx))

    scope = make_scope()
    ctx, rec = await run(Inner(), scope, observers=[first, second])
    assert seen == [("first", scope, ctx), ("second", scope, ctx)]
    assert rec.messages == []
    records = [r for r in caplog.records if r.name == "gateway.request"]
    assert [r.getMessage() for r in records] == ["observer failed"]
    assert ctx.trace is not None
    logged = records[0].__dict__
    assert (logged["request_id"], logged["trace_id"]) == (ctx.request_id, ctx.trace.trace_id)


# --- byte counting --------------------------------------------------------------------------------

async def test_body_bytes_are_counted_both_ways_when_asked() -> None:
    incoming: list[dict[str, Any]] = [{"type": "http.request", "body": b"abc", "more_body": True},
                                      {"type": "http.request", "more_body": True},
                                      {"type": "http.request", "body": b"de", "more_body": False},
                                      {"type": "http.disconnect", "body": b"ignored"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def action(scope: Any, recv: Any, send: Any) -> None:
        got = [await recv() for _ in range(4)]
        assert [m["type"] for m in got] == ["http.request"] * 3 + ["http.disconnect"]
        await send({"type": "http.response.start", "status": 200, "headers": [], "body": b"nothing"})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "more_body": True})
        await send({"type": "http.response.body", "body": b"world!"})

    rec = Recorder()
    ctx, _ = await run(Inner(action), count_bytes=True, receive=receive, send=rec)
    assert (ctx.bytes_in, ctx.bytes_out) == (5, 11)
    assert [m.get("body") for m in rec.messages] == [b"nothing", b"hello", None, b"world!"]


async def test_a_refusal_is_counted_too() -> None:
    ctx, rec = await run(Inner(raising(BadRequest())), count_bytes=True)
    assert ctx.bytes_out == len(rec.body) > 0


# --- tracing --------------------------------------------------------------------------------------

async def test_an_exporting_tracer_ends_the_span_with_the_outcome() -> None:
    tracer = RecordingTracer()

    async def action(scope: Any, receive: Any, send: Any) -> None:
        scope["gateway"].route = stage_route("items")
        raise BadGateway("upstream.unavailable")

    ctx, _ = await run(Inner(action), make_scope("POST", [TRACEPARENT]), tracer=tracer)
    assert len(tracer.ended) == 1
    span, attrs, error = tracer.ended[0]
    assert span is ctx.trace and span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert attrs == {"http.request.method": "POST", "http.response.status_code": 502, "gateway.route": "items",
                     "gateway.decision": "error", "gateway.reason": "upstream.unavailable",
                     "gateway.request_id": ctx.request_id, "client.address": PEER}
    assert error is True


@pytest.mark.parametrize(("err", "error"), [
    pytest.param(GatewayError(), True, id="500"),
    pytest.param(ClientDisconnected(), False, id="499"),
    pytest.param(None, False, id="ok"),
])
async def test_a_span_is_an_error_from_500(err: BaseException | None, error: bool) -> None:
    tracer = RecordingTracer()
    await run(Inner(raising(err) if err is not None else None), tracer=tracer)
    _, attrs, got = tracer.ended[0]
    assert got is error
    assert attrs["gateway.route"] is None


async def test_a_tracer_that_does_not_export_is_not_asked_to_end() -> None:
    tracer = RecordingTracer(exporting=False)
    ctx, _ = await run(Inner(), tracer=tracer)
    assert tracer.ended == []
    assert isinstance(ctx.trace, Span)


async def test_a_request_without_a_span_is_not_ended() -> None:
    async def action(scope: Any, receive: Any, send: Any) -> None:
        scope["gateway"].trace = None

    tracer = RecordingTracer()
    await run(Inner(action), tracer=tracer)
    assert tracer.ended == []


async def test_a_failing_span_export_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.request")
    tracer = RecordingTracer(fail=True)
    ctx, rec = await run(Inner(), tracer=tracer)
    assert len(tracer.ended) == 1 and rec.messages == []
    records = [r for r in caplog.records if r.name == "gateway.request"]
    assert [r.getMessage() for r in records] == ["span export failed"]
    assert records[0].request_id == ctx.request_id  # type: ignore[attr-defined]


def test_the_module_generator_is_reset_in_a_forked_child() -> None:
    ids = requestid.new_request_id
    ids()
    assert ids._pos > 0
    ids.reset()
    assert (ids._hex, ids._pos) == ("", 0)
