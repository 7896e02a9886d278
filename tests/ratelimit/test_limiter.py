"""RateLimiter.hit on process memory and on the real (private) Redis."""

from __future__ import annotations

import asyncio
import re

import pytest

from gateway.errors import TooManyRequests
from gateway.ratelimit import Decision, RateLimiter, RateLimitPolicy
from tests.ratelimit.conftest import MakeLimiter

STRATEGIES = ["moving-window", "sliding-window-counter", "fixed-window"]
RATELIMIT_RE = re.compile(rb'^"[^"\\]+";r=\d+;t=\d+$')
POLICY_RE = re.compile(rb'^"[^"\\]+";q=\d+;w=\d+(, "[^"\\]+";q=\d+;w=\d+)*$')


async def burst(
    limiter: RateLimiter, route: str, policy: RateLimitPolicy, n: int, **who: str
) -> list[Decision]:
    compiled = limiter.compile(policy, route)
    who.setdefault("ip", "192.0.2.1")
    return [await limiter.hit(route, compiled, **who) for _ in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_exact_limit_then_denied(
    make_limiter: MakeLimiter, backend_kind: str, route_id: str, strategy: str
) -> None:
    limiter = make_limiter(backend_kind)
    decisions = await burst(limiter, route_id, RateLimitPolicy(limits="5/minute", strategy=strategy), 8)  # type: ignore[arg-type]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert not limiter.degraded
    first, last = dict(decisions[0].headers), dict(decisions[-1].headers)
    assert first[b"ratelimit-policy"] == f'"{route_id}";q=5;w=60'.encode()
    match = re.fullmatch(rb'"r-[0-9a-f]+";r=4;t=(\d+)', first[b"ratelimit"])
    assert match is not None
    # moving/fixed: the window resets 60 s after the first hit; the sliding counter reports when
    # its weighted count next drops (limits' estimate, anywhere inside the window)
    assert int(match[1]) in ((59, 60) if strategy != "sliding-window-counter" else range(61))
    assert b"retry-after" not in first
    assert re.fullmatch(rb'"r-[0-9a-f]+";r=0;t=\d+', last[b"ratelimit"])
    assert 1 <= decisions[-1].retry_after <= 60
    assert last[b"retry-after"] == str(decisions[-1].retry_after).encode()


async def test_headers_are_structured_fields(
    make_limiter: MakeLimiter, backend_kind: str, route_id: str
) -> None:
    limiter = make_limiter(backend_kind)
    decisions = await burst(limiter, route_id, RateLimitPolicy(limits="2/second; 3/hour"), 4)
    for d in decisions:
        headers = dict(d.headers)
        assert RATELIMIT_RE.match(headers[b"ratelimit"])
        assert POLICY_RE.match(headers[b"ratelimit-policy"])


async def test_most_restrictive_limit_reported_and_all_hit(
    make_limiter: MakeLimiter, backend_kind: str, route_id: str
) -> None:
    limiter = make_limiter(backend_kind)
    policy = RateLimitPolicy(limits="3/minute; 2/hour", strategy="moving-window")
    d = await burst(limiter, route_id, policy, 3)
    # the hour limit (2) bites before the minute limit (3)
    assert [x.allowed for x in d] == [True, True, False]
    assert dict(d[0].headers)[b"ratelimit"].startswith(f'"{route_id}-3600s";r=1;'.encode())
    assert dict(d[2].headers)[b"ratelimit"].startswith(f'"{route_id}-3600s";r=0;'.encode())
    assert d[2].retry_after > 60


async def test_denial_error(make_limiter: MakeLimiter, route_id: str) -> None:
    limiter = make_limiter("memory")
    d = (await burst(limiter, route_id, RateLimitPolicy(limits="1/minute"), 2))[-1]
    with pytest.raises(TooManyRequests) as exc:
        d.raise_if_denied(route_id)
    err = exc.value
    assert (err.status, err.reason, err.route_id) == (429, "ratelimit.exceeded", route_id)
    assert set(err.headers) == {"RateLimit-Policy", "RateLimit", "Retry-After"}
    assert int(err.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "key, first, second, shared",
    [
        pytest.param("sub", {"sub": "alice"}, {"sub": "bob"}, False, id="two_subs_separate"),
        pytest.param(
            "sub",
            {"sub": "alice", "ip": "10.0.0.1"},
            {"sub": "alice", "ip": "10.0.0.2"},
            True,
            id="same_sub_other_ip_shared",
        ),
        pytest.param(
            "org", {"sub": "alice", "org": "acme"}, {"sub": "bob", "org": "acme"}, True, id="same_org_shared"
        ),
        pytest.param("org", {"org": "acme"}, {"org": "globex"}, False, id="two_orgs_separate"),
        pytest.param(
            "sub+org",
            {"sub": "alice", "org": "acme"},
            {"sub": "bob", "org": "acme"},
            False,
            id="sub_org_separate_users",
        ),
        pytest.param("ip", {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, False, id="two_ips_separate"),
        pytest.param(
            "ip+sub",
            {"ip": "10.0.0.1", "sub": "a"},
            {"ip": "10.0.0.1", "sub": "b"},
            False,
            id="ip_sub_separate",
        ),
        pytest.param("route", {"ip": "10.0.0.1"}, {"ip": "10.0.0.2", "sub": "x"}, True, id="route_shared"),
        pytest.param("sub", {"ip": "10.0.0.1"}, {"ip": "10.0.0.1"}, True, id="anonymous_falls_back_to_ip"),
        pytest.param("sub", {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, False, id="anonymous_by_ip"),
    ],
)
async def test_key_kinds(
    make_limiter: MakeLimiter,
    backend_kind: str,
    route_id: str,
    key: str,
    first: dict[str, str],
    second: dict[str, str],
    shared: bool,
) -> None:
    limiter = make_limiter(backend_kind)
    policy = RateLimitPolicy(limits="2/minute", key=key)  # type: ignore[arg-type]
    assert all(d.allowed for d in await burst(limiter, route_id, policy, 2, **first))
    assert (await burst(limiter, route_id, policy, 1, **second))[0].allowed is not shared


async def test_routes_do_not_share_budgets(make_limiter: MakeLimiter, route_id: str) -> None:
    limiter = make_limiter("memory")
    policy = RateLimitPolicy(limits="1/minute")
    assert (await burst(limiter, route_id, policy, 1))[0].allowed
    assert (await burst(limiter, route_id + "-other", policy, 1))[0].allowed


async def test_shadow_mode_never_denies(make_limiter: MakeLimiter, backend_kind: str, route_id: str) -> None:
    limiter = make_limiter(backend_kind)
    decisions = await burst(limiter, route_id, RateLimitPolicy(limits="2/minute", enforce=False), 4)
    assert all(d.allowed for d in decisions)
    assert [d.shadow_denied for d in decisions] == [False, False, True, True]
    assert all(d.headers == [] for d in decisions)  # a trial limit is not advertised to clients


async def test_default_policy(make_limiter: MakeLimiter, route_id: str) -> None:
    limiter = make_limiter("memory", default={"limits": "1/minute"})
    assert limiter.for_route(route_id, None) is limiter.default
    compiled = limiter.for_route(route_id, None)
    assert compiled is not None
    assert dict((await limiter.hit(route_id, compiled, ip="1.2.3.4")).headers)[b"ratelimit-policy"] == (
        b'"default";q=1;w=60'
    )
    assert make_limiter("memory").for_route(route_id, None) is None


async def test_replicas_share_one_redis(make_limiter: MakeLimiter, route_id: str) -> None:
    # Three limiters = three replicas on one Redis: the burst spread over them gets exactly the limit.
    replicas = [make_limiter("redis", replicas=3) for _ in range(3)]
    policy = RateLimitPolicy(limits="7/minute", key="route")
    compiled = [r.compile(policy, route_id) for r in replicas]
    allowed = 0
    for i in range(21):
        d = await replicas[i % 3].hit(route_id, compiled[i % 3], ip=f"10.0.0.{i}")
        allowed += d.allowed
    assert allowed == 7


async def test_concurrent_burst_beyond_pool_size(make_limiter: MakeLimiter, route_id: str) -> None:
    # More requests in flight than pooled connections: they wait for a connection, none degrades.
    # The storage deadline is the longest allowed: what is tested is the pool wait, not the CPU (with
    # the default 0.25 s, a busy machine turned queued calls into timeouts and local fallback).
    limiter = make_limiter("redis", storage_timeout=5)
    compiled = limiter.compile(RateLimitPolicy(limits="50/minute", key="route"), route_id)
    decisions = await asyncio.gather(*(limiter.hit(route_id, compiled, ip=f"10.1.0.{i}") for i in range(300)))
    assert sum(d.allowed for d in decisions) == 50
    assert not limiter.degraded


async def test_fixed_window_on_redis_is_one_round_trip_per_request(redis_srv) -> None:  # type: ignore[no-untyped-def]
    """All fixed-window items of a request go to Redis as one MULTI/EXEC on the lean client; the
    count, the 429 and the reset match the item-by-item path, and redis-py is not used for it."""
    from gateway.ratelimit import RateLimiter, RateLimitPolicy, RateLimitSettings, compile_policy

    limiter = RateLimiter.from_settings(RateLimitSettings(), redis_srv.url)
    resp = limiter.backend.shared.resp
    assert resp is not None
    batches: list[int] = []
    real_execute = resp.execute_encoded

    async def counting_execute(commands, count):  # type: ignore[no-untyped-def]
        batches.append(count)
        return await real_execute(commands, count)

    resp.execute_encoded = counting_execute  # type: ignore[method-assign]
    client = limiter.backend.shared.storage.bridge.get_connection()
    client.pipeline = None  # redis-py pipelines must not be used on this path
    policy = compile_policy(RateLimitPolicy(limits="3/second; 5/minute", key="sub", strategy="fixed-window"),
                            "fw-batch", 1)
    sub = f"batch-{id(policy)}"
    results = [await limiter.hit("fw-batch", policy, ip="192.0.2.1", sub=sub) for _ in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    assert batches == [6, 6, 6, 6]  # one round trip per request: 3 commands per item, 2 items
    assert dict(results[0].headers)[b"ratelimit"] == b'"fw-batch-1s";r=2;t=1'
    assert results[3].retry_after == 1
    await limiter.aclose()


async def test_fixed_window_in_process_matches_limits_own_accounting() -> None:
    """The in-process fast path writes the very counters `limits` reads: its own fixed-window
    strategy sees the same remaining count and window, and the window resets on time."""
    import asyncio

    from limits.aio.strategies import FixedWindowRateLimiter

    from gateway.ratelimit import RateLimiter, RateLimitPolicy, RateLimitSettings, compile_policy
    from gateway.ratelimit.limiter import identifiers

    limiter = RateLimiter.from_settings(RateLimitSettings(), None)
    policy = compile_policy(RateLimitPolicy(limits="3/second", key="sub", strategy="fixed-window"), "fw-mem", 1)
    results = [await limiter.hit("fw-mem", policy, ip="192.0.2.1", sub="alice") for _ in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    storage = limiter.backend.shared.storage
    ids = identifiers("fw-mem", policy.strategy, policy.key, "192.0.2.1", "alice", None)
    _reset, remaining = await FixedWindowRateLimiter(storage).get_window_stats(policy.items[0], *ids)
    assert remaining == 0
    assert await FixedWindowRateLimiter(storage).hit(policy.items[0], *ids) is False
    await asyncio.sleep(1.05)
    assert (await limiter.hit("fw-mem", policy, ip="192.0.2.1", sub="alice")).allowed
    await limiter.aclose()


@pytest.mark.parametrize("limits", ["3/second; 5/minute", "100/hour", "7 per 2 days; 1/second"])
@pytest.mark.parametrize("sub", ["user-1", "ünïcode/sub", "a b=c"])
def test_fixed_window_resp_templates_encode_what_the_generic_encoder_does(limits: str, sub: str) -> None:
    """The hot path fills a per-item template; the bytes must be exactly `encode` of the commands
    with `limits`' own keys (bridge.prefixed_key(item.key_for(*ids)))."""
    from gateway.ratelimit import RateLimitPolicy, compile_policy
    from gateway.ratelimit.limiter import fixed_window_payload, identifiers
    from gateway.ratelimit.resp import encode

    policy = compile_policy(RateLimitPolicy(limits=limits, key="sub", strategy="fixed-window"), "tmpl", 1)
    ids = identifiers("tmpl", "fixed-window", policy.key, "192.0.2.1", sub, None)
    prefix = "LIMITS"
    expected = []
    for item in policy.items:
        key = f"{prefix}:{item.key_for(*ids)}"
        expected += [(b"SET", key, b"0", b"EX", item.get_expiry(), b"NX"), (b"INCR", key), (b"TTL", key)]
    assert len(policy.resp_templates) == len(policy.items)  # compiled with the policy
    assert fixed_window_payload(prefix, policy.resp_templates, ids) == b"".join(encode(expected))
