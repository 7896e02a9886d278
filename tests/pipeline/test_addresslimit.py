"""AddressLimitStage: per-address refusals come before the body is read and before any token or
signature work (the stage order of issue 14), and webhook signature failures block the address."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline.addresslimit import AddressLimitStage
from gateway.policy.compiled import CompiledRoute
from gateway.ratelimit.limiter import Decision
from tests.pipeline.abuse_harness import forged, fresh_ip, hook_sig, make_gateway, request, token
from tests.pipeline.stage_kit import RECEIVE, SEND, Downstream, ScriptedLimiter, stage_route, stage_scope

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    auth:
      jwt: {algorithms: [HS256]}
    rate_limits:
      webhook_brute_force: {max_failures: 3, window: "1 minute", cooldown_seconds: 60}
    routes:
      - id: login
        path: /v1/login
        methods: [POST]
        auth: jwt
        upstream_path: /login
        rate_limit: {limits: "3/minute", key: ip}
      - id: per-user
        path: /v1/per-user
        methods: [POST]
        auth: jwt
        upstream_path: /per-user
        rate_limit: {limits: "2/minute", key: sub}
      - id: hook
        path: /v1/hook
        methods: [POST]
        auth: webhook
        upstream_path: /hook
        webhook: {type: hmac, secret_env: HOOK_SECRET, header: X-Sig, algorithm: sha256, encoding: hex,
                  source_ips: any, dedupe: false}
        rate_limit: {limits: "100/minute", key: ip}
"""
BODY = b'{"event":"x"}'


@pytest.fixture
async def gw() -> Gateway:
    return make_gateway(POLICY)


async def test_per_address_limit_refuses_before_body_and_token(gw: Gateway) -> None:
    ip = fresh_ip()
    for _ in range(3):
        r = await request(gw, "POST", "/v1/login", ip=ip, body=BODY,
                          headers={"Authorization": f"Bearer {forged('bad_signature')}"})
        assert r.status == 401
    r = await request(gw, "POST", "/v1/login", ip=ip, body=BODY,
                      headers={"Authorization": f"Bearer {forged('bad_signature')}"})
    # refused for the address: the token was never looked at (else 401), the body never read
    assert (r.status, r.reason, r.body_reads) == (429, "ratelimit.exceeded", 0)
    assert r.headers["ratelimit-policy"] == '"login";q=3;w=60'
    assert await gw.limiter.brute_force.blocked(ip) is None  # type: ignore[union-attr]


async def test_identity_keyed_limit_still_waits_for_the_token(gw: Gateway) -> None:
    ip, user = fresh_ip(), token()
    got = [await request(gw, "POST", "/v1/per-user", ip=ip, body=BODY, headers={"Authorization": f"Bearer {user}"})
           for _ in range(3)]
    assert [r.status for r in got] == [200, 200, 429]
    # same address, another user: its own budget (the limit is per sub, applied after auth)
    other = await request(gw, "POST", "/v1/per-user", ip=ip, body=BODY,
                          headers={"Authorization": f"Bearer {token()}"})
    assert other.status == 200
    # no token: 401 from authentication, not a 429 from someone else's budget
    anon = await request(gw, "POST", "/v1/per-user", ip=ip, body=BODY)
    assert (anon.status, anon.reason) == (401, "auth.missing_token")


async def test_webhook_failures_block_the_address_before_its_body_is_read(gw: Gateway) -> None:
    ip = fresh_ip()
    hmac_child = gw.metrics.abuse.hmac.labels("hook")
    before = hmac_child._value.get()
    bad = {"X-Sig": hook_sig(BODY, "wrong-key-0123456789")}
    got = [await request(gw, "POST", "/v1/hook", ip=ip, body=BODY, headers=bad) for _ in range(6)]
    assert [(r.status, r.reason) for r in got] == [(401, "webhook.bad_signature")] * 3 + \
        [(429, "webhook.too_many_failures")] * 3
    assert [r.body_reads for r in got[3:]] == [0, 0, 0]
    assert hmac_child._value.get() - before == 3  # no HMAC computed once blocked
    # even a genuine signature from the blocked address waits for the cool-down
    genuine = await request(gw, "POST", "/v1/hook", ip=ip, body=BODY, headers={"X-Sig": hook_sig(BODY)})
    assert (genuine.status, genuine.reason) == (429, "webhook.too_many_failures")
    assert 1 <= int(genuine.headers["retry-after"]) <= 60
    # another address is served; JWT failures and webhook failures are counted apart
    ok = await request(gw, "POST", "/v1/hook", ip=fresh_ip(), body=BODY, headers={"X-Sig": hook_sig(BODY)})
    assert ok.status == 200
    assert await gw.limiter.brute_force.blocked(ip) is None  # type: ignore[union-attr]
    assert gw.metrics.abuse.blocks.labels("webhook")._value.get() >= 1


async def test_a_missing_signature_counts_as_a_failed_verification(gw: Gateway) -> None:
    ip = fresh_ip()
    got = [await request(gw, "POST", "/v1/hook", ip=ip, body=BODY) for _ in range(4)]
    assert [r.status for r in got] == [401, 401, 401, 429]



# --- the stage on its own, over ASGI, with a scripted limiter --------------------------------------

ADDRESS = "198.51.100.9"
HEADERS = [(b"ratelimit-policy", b'"r";q=3;w=60'), (b"ratelimit", b'"r";r=2;t=60')]


def limited_route(rule: Any = None, auth: str = "jwt") -> CompiledRoute:
    return stage_route(methods={"POST"}, auth=auth, rate_limit=rule)


def rule(by_address: bool) -> Any:
    return SimpleNamespace(by_address=by_address)


class Stage:
    def __init__(self, limiter: ScriptedLimiter, *, recorders: bool = True) -> None:
        self.limiter = limiter
        self.outcomes: list[tuple[str, str]] = []
        self.events: list[tuple[str, str]] = []
        inner = Downstream()
        self.reached, self.handed = inner.reached, inner.handed

        if recorders:
            self.stage = AddressLimitStage(inner, lambda: limiter,  # type: ignore[arg-type,return-value]
                                           outcome=lambda r, what: self.outcomes.append((r, what)),
                                           event=lambda s, what: self.events.append((s, what)))
        else:
            self.stage = AddressLimitStage(inner, lambda: limiter)  # type: ignore[arg-type,return-value]

    async def call(self, rt: CompiledRoute | None, preflight: bool = False) -> RequestContext:
        ctx = RequestContext("req-1", ADDRESS, None)  # type: ignore[arg-type]
        ctx.route = rt
        scope = stage_scope(ctx, "POST", preflight=preflight)
        await self.stage(scope, RECEIVE, SEND)
        assert self.handed in ([], [(scope, RECEIVE, SEND)])
        return ctx


async def test_an_address_keyed_limit_is_counted_for_the_client_address_and_its_headers_kept() -> None:
    compiled = rule(by_address=True)
    s = Stage(ScriptedLimiter(Decision(allowed=True, headers=list(HEADERS))))
    ctx = await s.call(limited_route(compiled))
    assert s.limiter.hits == [("r", compiled, {"ip": ADDRESS})]
    assert s.outcomes == [("r", "allowed")]
    assert s.reached == [ctx]
    assert ctx.response_headers == HEADERS
    assert s.limiter.asked == []  # not a webhook route: the brute-force block is not consulted


async def test_an_address_over_its_limit_is_429_with_the_rate_limit_headers_and_never_reaches_the_app() -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=False, headers=list(HEADERS) + [(b"retry-after", b"42")])))
    with pytest.raises(GatewayError) as info:
        await s.call(limited_route(rule(by_address=True)))
    err = info.value
    assert (err.status, err.reason, err.route_id) == (429, "ratelimit.exceeded", "r")
    assert err.headers == {"RateLimit-Policy": '"r";q=3;w=60', "RateLimit": '"r";r=2;t=60', "Retry-After": "42"}
    assert s.outcomes == [("r", "denied")]
    assert s.reached == []


async def test_a_shadow_denial_is_reported_and_the_request_still_served() -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=True, shadow_denied=True)))
    ctx = await s.call(limited_route(rule(by_address=True)))
    assert s.outcomes == [("r", "shadow_denied"), ("r", "allowed")]
    assert s.reached == [ctx]
    assert ctx.response_headers == []


@pytest.mark.parametrize("compiled", [pytest.param(None, id="no_limit"),
                                      pytest.param(rule(by_address=False), id="keyed_by_identity")])
async def test_a_limit_not_keyed_by_the_address_alone_is_left_to_the_rate_limit_stage(compiled: Any) -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=False)))
    ctx = await s.call(limited_route(compiled))
    assert s.limiter.hits == []
    assert s.outcomes == []
    assert s.reached == [ctx]


@pytest.mark.parametrize("preflight", [False, True])
async def test_without_a_route_or_on_a_preflight_the_stage_steps_aside(preflight: bool) -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=False), blocked=30))
    ctx = await s.call(limited_route(rule(by_address=True), auth="webhook") if preflight else None,
                       preflight=preflight)
    assert (s.limiter.hits, s.limiter.asked, s.outcomes, s.events) == ([], [], [], [])
    assert s.reached == [ctx]


async def test_a_blocked_address_on_a_webhook_route_is_429_with_the_time_left() -> None:
    s = Stage(ScriptedLimiter(blocked=30))
    with pytest.raises(GatewayError) as info:
        await s.call(limited_route(None, auth="webhook"))
    err = info.value
    assert (err.status, err.reason) == (429, "webhook.too_many_failures")
    assert err.headers == {"Retry-After": "30"}
    assert s.limiter.asked == [ADDRESS]
    assert s.events == [("webhook", "refused")]
    assert s.reached == []


async def test_an_unblocked_address_on_a_webhook_route_is_served_after_its_address_limit() -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=True), blocked=None))
    ctx = await s.call(limited_route(rule(by_address=True), auth="webhook"))
    assert s.limiter.asked == [ADDRESS]
    assert s.outcomes == [("r", "allowed")]
    assert s.events == []
    assert s.reached == [ctx]


async def test_an_address_over_its_limit_on_a_webhook_route_is_refused_before_the_block_is_consulted() -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=False), blocked=30))
    with pytest.raises(GatewayError) as info:
        await s.call(limited_route(rule(by_address=True), auth="webhook"))
    assert info.value.reason == "ratelimit.exceeded"
    assert s.limiter.asked == []


@pytest.mark.parametrize("auth", ["jwt", "none"])
async def test_the_brute_force_block_applies_to_webhook_routes_only(auth: str) -> None:
    s = Stage(ScriptedLimiter(blocked=30))
    ctx = await s.call(limited_route(None, auth=auth))
    assert s.limiter.asked == []
    assert s.reached == [ctx]


async def test_the_stage_works_without_outcome_or_event_recorders() -> None:
    s = Stage(ScriptedLimiter(Decision(allowed=True, shadow_denied=True, headers=list(HEADERS))), recorders=False)
    ctx = await s.call(limited_route(rule(by_address=True)))
    assert s.reached == [ctx]
    assert ctx.response_headers == HEADERS
    s = Stage(ScriptedLimiter(Decision(allowed=False)), recorders=False)
    with pytest.raises(GatewayError) as info:
        await s.call(limited_route(rule(by_address=True)))
    assert info.value.reason == "ratelimit.exceeded"
    s = Stage(ScriptedLimiter(blocked=5), recorders=False)
    with pytest.raises(GatewayError) as info:
        await s.call(limited_route(None, auth="webhook"))
    assert info.value.reason == "webhook.too_many_failures"
