"""Redis killed mid-run: on_storage_error local / open / closed, degraded flag, recovery.

These tests kill their own redis-server (never the session one) and restart it on the same port.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest

from gateway.errors import ServiceUnavailable
from gateway.ratelimit import RateLimiter, RateLimitPolicy
from tests.ratelimit.conftest import MakeLimiter
from tests.support.procs import RedisServer


@pytest.fixture
async def hung_redis() -> AsyncIterator[str]:
    """A TCP listener that accepts and never answers: the worst kind of dead Redis."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for w in held:
        w.close()
    server.close()


async def hits(limiter: RateLimiter, route: str, policy: RateLimitPolicy, n: int) -> list[bool]:
    compiled = limiter.compile(policy, route)
    return [(await limiter.hit(route, compiled, ip="203.0.113.9")).allowed for _ in range(n)]


async def test_local_fallback_divides_by_replicas_and_recovers(
    make_limiter: MakeLimiter, own_redis: RedisServer, route_id: str
) -> None:
    states: list[bool] = []
    limiter = make_limiter("redis", url=own_redis.url, replicas=3)
    limiter.on_state_change = states.append
    policy = RateLimitPolicy(limits="6/minute", key="route")
    compiled = limiter.compile(policy, route_id)
    assert await hits(limiter, route_id, policy, 3) == [True] * 3

    own_redis.kill()
    decisions = [await limiter.hit(route_id, compiled, ip="203.0.113.9") for _ in range(4)]
    # 3 of 6 were spent when Redis went away: this replica's share of what was left is 3 // 3 = 1
    # (never a fresh ceil(6 / 3) = 2); no exception leaks
    assert [d.allowed for d in decisions] == [True, False, False, False]
    assert all(d.local for d in decisions)
    assert dict(decisions[0].headers)[b"ratelimit-policy"] == f'"{route_id}";q=2;w=60'.encode()
    assert limiter.degraded and states == [True]
    # a key Redis never counted gets the full per-replica share, ceil(6 / 3) = 2
    fresh = limiter.compile(policy, route_id + "-fresh")
    got = [(await limiter.hit(route_id + "-fresh", fresh, ip="203.0.113.9")).allowed for _ in range(3)]
    assert got == [True, True, False]

    own_redis.start()
    await asyncio.sleep(1.05)  # the probe runs at most once per second
    assert (await limiter.hit(route_id, compiled, ip="203.0.113.9")).local  # this one starts the probe
    for _ in range(50):
        if not limiter.degraded:
            break
        await asyncio.sleep(0.02)
    assert not limiter.degraded and states == [True, False]
    d = await limiter.hit(route_id, compiled, ip="203.0.113.9")
    assert d.allowed and not d.local
    assert dict(d.headers)[b"ratelimit-policy"] == f'"{route_id}";q=6;w=60'.encode()


async def test_probe_at_most_once_per_second(
    make_limiter: MakeLimiter, own_redis: RedisServer, route_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = make_limiter("redis", url=own_redis.url)
    storage = limiter.backend.shared.storage
    windows = limiter.backend.shared.strategies["moving-window"].storage  # the lean path on Redis
    calls = {"ping": 0, "acquire": 0}
    real_check, real_acquire = storage.check, windows.acquire_entry  # type: ignore[attr-defined]

    async def counting_check() -> bool:
        calls["ping"] += 1
        return await real_check()

    async def counting_acquire(*a: object, **kw: object) -> bool:
        calls["acquire"] += 1
        return await real_acquire(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "check", counting_check)
    monkeypatch.setattr(windows, "acquire_entry", counting_acquire)
    own_redis.kill()
    policy = RateLimitPolicy(limits="1000/minute", strategy="moving-window")
    assert all(await hits(limiter, route_id, policy, 200))
    await asyncio.sleep(0)
    assert calls == {"ping": 0, "acquire": 1}  # one failed attempt, then Redis is left alone
    await asyncio.sleep(1.05)
    assert all(await hits(limiter, route_id, policy, 200))
    await asyncio.sleep(0.3)
    assert calls["ping"] == 1 and limiter.degraded


async def test_open_mode_allows_without_headers(
    make_limiter: MakeLimiter, own_redis: RedisServer, route_id: str
) -> None:
    limiter = make_limiter("redis", url=own_redis.url, on_storage_error="open")
    policy = RateLimitPolicy(limits="1/minute")
    assert await hits(limiter, route_id, policy, 2) == [True, False]
    own_redis.kill()
    compiled = limiter.compile(policy, route_id)
    for _ in range(3):
        d = await limiter.hit(route_id, compiled, ip="203.0.113.9")
        assert d.allowed and d.headers == []
    assert limiter.degraded
    assert await limiter.brute_force.blocked("203.0.113.9") is None
    assert await limiter.brute_force.record_failure("203.0.113.9") is None


async def test_closed_mode_refuses_with_503(
    make_limiter: MakeLimiter, own_redis: RedisServer, route_id: str
) -> None:
    limiter = make_limiter("redis", url=own_redis.url, on_storage_error="closed")
    policy = RateLimitPolicy(limits="5/minute")
    assert await hits(limiter, route_id, policy, 1) == [True]
    own_redis.kill()
    for _ in range(2):
        with pytest.raises(ServiceUnavailable) as exc:
            await hits(limiter, route_id, policy, 1)
        assert exc.value.reason == "ratelimit.unavailable"
    with pytest.raises(ServiceUnavailable):
        await limiter.brute_force.blocked("203.0.113.9")
    # a shadow limit must never deny, not even in closed mode
    assert await hits(limiter, route_id, RateLimitPolicy(limits="5/minute", enforce=False), 2) == [True, True]


async def test_brute_force_local_fallback(make_limiter: MakeLimiter, own_redis: RedisServer) -> None:
    limiter = make_limiter("redis", url=own_redis.url, replicas=2, brute_force={"max_failures": 4})
    own_redis.kill()
    guard = limiter.brute_force
    assert await guard.record_failure("203.0.113.7") is None
    assert await guard.record_failure("203.0.113.7") == 60  # ceil(4 / 2) = 2 per replica
    assert await guard.blocked("203.0.113.7") is not None
    assert limiter.degraded


async def test_hung_redis_is_bounded(make_limiter: MakeLimiter, hung_redis: str, route_id: str) -> None:
    limiter = make_limiter("redis", url=hung_redis, storage_timeout=0.1)
    policy = RateLimitPolicy(limits="2/minute")
    # wait_for only turns a hang into a failure; the storage timeout (0.1 s) does the real bounding
    allowed = await asyncio.wait_for(hits(limiter, route_id, policy, 3), timeout=5)
    assert allowed == [True, True, False]
    assert limiter.degraded


async def test_unreachable_at_start_degrades(make_limiter: MakeLimiter, route_id: str) -> None:
    own = RedisServer()  # never started: connection refused
    limiter = make_limiter("redis", url=own.url)
    assert await hits(limiter, route_id, RateLimitPolicy(limits="1/minute"), 2) == [True, False]
    assert limiter.degraded
    shutil.rmtree(own.dir, ignore_errors=True)


async def test_state_hook_errors_do_not_leak(make_limiter: MakeLimiter, route_id: str) -> None:
    def broken(_: bool) -> None:
        raise RuntimeError("metrics down")

    own = RedisServer()
    limiter = make_limiter("redis", url=own.url)
    limiter.on_state_change = broken
    assert await hits(limiter, route_id, RateLimitPolicy(limits="1/minute"), 1) == [True]
    shutil.rmtree(own.dir, ignore_errors=True)
