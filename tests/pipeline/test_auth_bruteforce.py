"""AuthStage and the brute-force guard: what counts, what a block refuses, what it still serves."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from gateway.app import Gateway
from gateway.ratelimit import bruteforce
from tests.pipeline.abuse_harness import forged, fresh_ip, make_gateway, request, token

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    auth:
      jwt: {algorithms: [HS256]}
    rate_limits:
      brute_force: {max_failures: 5, window: "1 minute", cooldown_seconds: 60, verifications_per_second: 3}
    routes:
      - id: agents
        path: /v1/agents
        methods: [GET]
        auth: jwt
        upstream_path: /agents
"""


@pytest.fixture
async def gw() -> Gateway:
    return make_gateway(POLICY)


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


async def test_requests_without_a_token_are_never_counted(gw: Gateway) -> None:
    ip = fresh_ip()
    for _ in range(40):
        r = await request(gw, "GET", "/v1/agents", ip=ip)
        assert (r.status, r.reason) == (401, "auth.missing_token")
    assert await gw.limiter.brute_force.blocked(ip) is None  # type: ignore[union-attr]
    assert (await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(token()))).status == 200


@pytest.mark.parametrize("kind", ["bad_signature", "alg_none", "expired", "wrong_aud", "malformed"])
async def test_each_failed_verification_counts(gw: Gateway, kind: str) -> None:
    ip = fresh_ip()
    got = [await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged(kind))) for _ in range(6)]
    assert [r.status for r in got] == [401] * 5 + [429], [(r.status, r.reason) for r in got]
    assert got[5].reason == "auth.too_many_failures" and 1 <= int(got[5].headers["retry-after"]) <= 60


async def test_wrong_scheme_counts_as_malformed(gw: Gateway) -> None:
    ip = fresh_ip()
    got = [await request(gw, "GET", "/v1/agents", ip=ip, headers={"Authorization": "Basic Zm9vOmJhcg=="})
           for _ in range(6)]
    assert [(r.status, r.reason) for r in got][-1] == (429, "auth.too_many_failures")


async def test_blocked_address_keeps_valid_tokens_and_spends_a_bounded_budget(gw: Gateway) -> None:
    ip = fresh_ip()
    for _ in range(5):
        await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged("bad_signature")))
    abuse = gw.metrics.abuse
    budget_before = abuse.budget._value.get()
    # a valid token from the blocked address: verified and served (and its check given back)
    good = token()
    assert (await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(good))).status == 200
    # failing tokens: 3 checks a second at most, then refused without a signature check
    got = [await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged("bad_signature")))
           for _ in range(10)]
    assert {(r.status, r.reason) for r in got} == {(429, "auth.too_many_failures")}
    refused_unverified = abuse.budget._value.get() - budget_before
    assert 10 - 3 - 1 <= refused_unverified <= 10 - 3 + 1  # one may refill while we loop
    # the cached valid token costs no check: still served with the budget spent
    assert (await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(good))).status == 200
    # a new valid token while the budget is spent waits for the next check (429, retry in 1 s)
    fresh = await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(token()))
    assert (fresh.status, fresh.headers.get("retry-after")) in ((429, "1"), (200, None))
    # other addresses are untouched
    assert (await request(gw, "GET", "/v1/agents", ip=fresh_ip(), headers=bearer(token()))).status == 200


async def test_block_and_refusals_are_counted(gw: Gateway) -> None:
    abuse = gw.metrics.abuse
    blocks = abuse.blocks.labels("auth")._value.get()
    refusals = abuse.refusals.labels("auth")._value.get()
    ip = fresh_ip()
    for _ in range(7):
        await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged("expired")))
    assert abuse.blocks.labels("auth")._value.get() == blocks + 1
    assert abuse.refusals.labels("auth")._value.get() == refusals + 2


@pytest.fixture
def frozen_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the verification budget from refilling (its clock is `time.monotonic` in the guard);
    wall-clock block times keep running. Makes "how many checks are left" exact on any machine."""
    monkeypatch.setattr(bruteforce, "time", SimpleNamespace(time=time.time, monotonic=lambda: 1000.0))


async def block(gw: Gateway, ip: str) -> None:
    got = [await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged("bad_signature")))
           for _ in range(5)]
    assert [r.status for r in got] == [401] * 5
    assert await gw.limiter.brute_force.blocked(ip) is not None  # type: ignore[union-attr]


async def failing_retry_afters(gw: Gateway, ip: str, n: int) -> list[str]:
    """Retry-After of n failing tokens from a blocked address: "1" when refused unverified for
    want of budget, the block's time left (about 60) when verified and refused."""
    out = []
    for _ in range(n):
        r = await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged("bad_signature")))
        assert (r.status, r.reason) == (429, "auth.too_many_failures")
        out.append(r.headers["retry-after"])
    return out


@pytest.mark.usefixtures("frozen_budget")
async def test_budget_is_exact_and_a_valid_tokens_check_is_given_back(gw: Gateway) -> None:
    ip = fresh_ip()
    await block(gw, ip)
    # a fresh valid token takes one of the 3 checks and, having proved valid, gives it back
    assert (await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(token()))).status == 200
    got = await failing_retry_afters(gw, ip, 5)
    assert [ra == "1" for ra in got] == [False, False, False, True, True], got
    assert all(2 <= int(ra) <= 60 for ra in got[:3]), got  # the block's time left


@pytest.mark.usefixtures("frozen_budget")
async def test_each_blocked_address_has_its_own_budget(gw: Gateway) -> None:
    first, second = "192.0.2.10", "192.0.2.20"
    await block(gw, first)
    await block(gw, second)
    spent = await failing_retry_afters(gw, first, 4)
    assert [ra == "1" for ra in spent] == [False, False, False, True], spent
    # the first address's spent budget is not the second's: its failing tokens are still verified
    got = await failing_retry_afters(gw, second, 4)
    assert [ra == "1" for ra in got] == [False, False, False, True], got
    valid = await request(gw, "GET", "/v1/agents", ip=first, headers=bearer(token()))
    assert (valid.status, valid.headers["retry-after"]) == (429, "1")


@pytest.mark.usefixtures("frozen_budget")
async def test_a_cached_valid_token_buys_no_check_for_the_forged_ones_between(gw: Gateway) -> None:
    """A cached token is served without a signature check, so it takes nothing from the budget
    and must give nothing back. It used to be refunded anyway: one valid token sent between forged
    ones bought each of them a signature check (20 of 20 checked with a budget of 3 a second)."""
    ip = fresh_ip()
    await block(gw, ip)
    good = token()
    assert (await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(good))).status == 200  # charged, refunded
    checked = 0
    for _ in range(20):
        assert (await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(good))).status == 200  # cached
        forged_one = await request(gw, "GET", "/v1/agents", ip=ip, headers=bearer(forged("bad_signature")))
        assert (forged_one.status, forged_one.reason) == (429, "auth.too_many_failures")
        checked += forged_one.headers["retry-after"] != "1"  # "1": refused for want of budget, unchecked
    assert checked == 3  # the budget, and no more (the clock is frozen: nothing refills)
