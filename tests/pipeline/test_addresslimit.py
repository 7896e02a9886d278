"""AddressLimitStage: per-address refusals come before the body is read and before any token or
signature work (the stage order of issue 14), and webhook signature failures block the address."""

from __future__ import annotations

import pytest

from gateway.app import Gateway
from tests.pipeline.abuse_harness import forged, fresh_ip, hook_sig, make_gateway, request, token

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
