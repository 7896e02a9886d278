"""A stalled Redis (`DEBUG SLEEP`: connections open, nothing answered) never hands out a fresh
allowance: a client that had spent its limit stays refused while the store is frozen, for every
strategy, and an address blocked for failed verifications stays blocked.

Black-box: a real redis-server of the test's own, stalled for 3 s while 40 requests arrive at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from gateway.errors import TooManyRequests
from gateway.ratelimit import RateLimitPolicy
from tests.ratelimit.conftest import MakeLimiter
from tests.support.stall import StallableRedis

STALL = 3.0
# The limits here are per day, not per minute: a window boundary inside a test changes the count
# by design (a fixed window resets; the sliding-window counter floors its weighted count, so just
# after a boundary it allows one more), and a test that takes a few seconds on a busy machine
# crossed a minute boundary now and then (one hit in 40 allowed). A day boundary is 1,440 x rarer.
LIMIT = "10/day"


@pytest.fixture
def stallable() -> Iterator[StallableRedis]:
    server = StallableRedis().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter", "fixed-window"])
async def test_spent_limit_stays_spent_while_redis_stalls(
    make_limiter: MakeLimiter, stallable: StallableRedis, strategy: str
) -> None:
    limiter = make_limiter("redis", url=stallable.url)
    route = f"r-{uuid.uuid4().hex[:8]}"
    compiled = limiter.compile(RateLimitPolicy(limits=LIMIT, key="ip", strategy=strategy), route)
    first = [(await limiter.hit(route, compiled, ip="203.0.113.5")).allowed for _ in range(10)]
    assert first == [True] * 10

    sleeper = stallable.stall(STALL)
    await asyncio.sleep(0.2)  # Redis is asleep now
    during = await asyncio.gather(*(limiter.hit(route, compiled, ip="203.0.113.5") for _ in range(40)))
    assert [d.allowed for d in during] == [False] * 40
    assert limiter.degraded and all(d.local for d in during)
    assert all(int(dict(d.headers)[b"retry-after"]) >= 1 for d in during)
    # another client, never counted by Redis, gets the per-replica share while Redis is away
    other = [(await limiter.hit(route, compiled, ip="203.0.113.6")).allowed for _ in range(11)]
    assert other == [True] * 10 + [False]
    await asyncio.to_thread(sleeper.join, STALL + 10)


async def test_partly_spent_limit_gives_only_what_was_left(
    make_limiter: MakeLimiter, stallable: StallableRedis
) -> None:
    limiter = make_limiter("redis", url=stallable.url, replicas=2)
    route = f"r-{uuid.uuid4().hex[:8]}"
    compiled = limiter.compile(RateLimitPolicy(limits=LIMIT, key="ip"), route)
    assert all([(await limiter.hit(route, compiled, ip="203.0.113.7")).allowed for _ in range(4)])
    sleeper = stallable.stall(STALL)
    await asyncio.sleep(0.2)
    during = await asyncio.gather(*(limiter.hit(route, compiled, ip="203.0.113.7") for _ in range(40)))
    # 6 were left; this replica's share of them is 6 // 2 = 3 (not a fresh ceil(10 / 2) = 5)
    assert sum(d.allowed for d in during) == 3
    await asyncio.to_thread(sleeper.join, STALL + 10)


async def test_brute_force_block_holds_while_redis_stalls(
    make_limiter: MakeLimiter, stallable: StallableRedis
) -> None:
    limiter = make_limiter("redis", url=stallable.url, brute_force={"max_failures": 10})
    guard = limiter.brute_force
    ip = f"198.51.100.{uuid.uuid4().hex[:6]}"
    results = [await guard.record_failure(ip) for _ in range(10)]
    assert results == [None] * 9 + [60]
    sleeper = stallable.stall(STALL)
    await asyncio.sleep(0.2)

    async def attempt() -> str:
        try:
            await guard.check(ip)
        except TooManyRequests as exc:
            return exc.reason
        await guard.record_failure(ip)  # not blocked: the attempt would be verified and fail
        return "verified"

    during = await asyncio.gather(*(attempt() for _ in range(40)))
    assert during == ["auth.too_many_failures"] * 40
    # the webhook scope keeps its own counts: this address never failed a webhook verification
    assert await limiter.webhook_brute_force.blocked(ip) is None
    await asyncio.to_thread(sleeper.join, STALL + 10)
    # after the stall the shared block is still there (and still the one that counts)
    assert await guard.blocked(ip) is not None


async def test_brute_force_counts_are_not_reset_by_a_stall(
    make_limiter: MakeLimiter, stallable: StallableRedis
) -> None:
    # 7 of 10 failures before the stall: during it, the fallback starts from what was left (3),
    # so the 3rd failure blocks, not a fresh 10th.
    limiter = make_limiter("redis", url=stallable.url, brute_force={"max_failures": 10})
    guard = limiter.brute_force
    ip = f"198.51.100.{uuid.uuid4().hex[:6]}"
    for _ in range(7):
        assert await guard.record_failure(ip) is None
    sleeper = stallable.stall(STALL)
    await asyncio.sleep(0.2)
    during = [await guard.record_failure(ip) for _ in range(3)]
    assert limiter.degraded
    assert during == [None, None, 60]
    assert await guard.blocked(ip) is not None
    await asyncio.to_thread(sleeper.join, STALL + 10)
