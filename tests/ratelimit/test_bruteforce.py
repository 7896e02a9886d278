"""Brute-force guard: failed authentications per client IP, threshold and cool-down."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.errors import TooManyRequests
from gateway.ratelimit import backend, bruteforce
from tests.ratelimit.conftest import MakeLimiter
from tests.support.procs import RedisServer

# Redis here answers within this (storage_timeout; default 0.25 s). Several suites on one busy
# machine once made a call slower than the default: the guard fell back to its per-replica count
# (max_failures / replicas) and a test meant for the shared count saw a block after 2 failures.
PATIENT = 5.0


def fresh_ip() -> str:
    # Unique per test (the session Redis is shared); shape is irrelevant to the guard.
    return f"198.51.100.{uuid.uuid4().hex[:8]}"


async def test_shipped_threshold_is_30_per_minute(make_limiter: MakeLimiter, backend_kind: str) -> None:
    guard = make_limiter(backend_kind).brute_force
    ip = fresh_ip()
    for _ in range(29):
        assert await guard.record_failure(ip) is None
    assert await guard.blocked(ip) is None
    assert await guard.record_failure(ip) == 60  # the 30th failure starts the cool-down
    left = await guard.blocked(ip)
    assert left is not None and 1 <= left <= 60
    assert await guard.blocked(fresh_ip()) is None


async def test_check_raises_with_retry_after(make_limiter: MakeLimiter, backend_kind: str) -> None:
    guard = make_limiter(backend_kind, brute_force={"max_failures": 2, "cooldown_seconds": 30}).brute_force
    ip = fresh_ip()
    await guard.check(ip)  # not blocked: no exception
    await guard.record_failure(ip)
    await guard.record_failure(ip)
    with pytest.raises(TooManyRequests) as exc:
        await guard.check(ip)
    assert exc.value.reason == "auth.too_many_failures"
    assert 1 <= int(exc.value.headers["Retry-After"]) <= 30


async def test_cooldown_expires(make_limiter: MakeLimiter, backend_kind: str) -> None:
    guard = make_limiter(backend_kind, brute_force={"max_failures": 1, "cooldown_seconds": 1}).brute_force
    ip = fresh_ip()
    assert await guard.record_failure(ip) == 1
    assert await guard.blocked(ip) == 1
    await asyncio.sleep(1.1)
    assert await guard.blocked(ip) is None


async def test_failures_outside_window_do_not_count(make_limiter: MakeLimiter) -> None:
    guard = make_limiter("memory", brute_force={"max_failures": 3, "window": "1 second"}).brute_force
    ip = fresh_ip()
    await guard.record_failure(ip)
    await guard.record_failure(ip)
    await asyncio.sleep(1.1)
    assert await guard.record_failure(ip) is None
    assert await guard.blocked(ip) is None


class Clock:
    """Stands in for the guard's `time` module. Frozen, the wall clock moves only by `advance`;
    else it is the store's (real) clock `offset` seconds ahead. The monotonic clock moves only by
    `advance`."""

    def __init__(self, offset: float = 0.0, *, frozen: bool = True) -> None:
        self.base = time.time() if frozen else None
        self.offset = offset
        self.mono = 1000.0

    def time(self) -> float:
        return (time.time() if self.base is None else self.base) + self.offset

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.mono += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(bruteforce, "time", c)
    return c


async def test_failures_during_a_block_count_but_start_no_new_block(
        make_limiter: MakeLimiter, backend_kind: str) -> None:
    guard = make_limiter(backend_kind, brute_force={"max_failures": 2, "cooldown_seconds": 60}).brute_force
    ip = fresh_ip()
    got = [await guard.record_failure(ip) for _ in range(4)]
    assert got == [None, 60, None, None]  # only the failure that starts the block returns its cool-down
    left = await guard.blocked(ip)
    assert left is not None and 30 <= left <= 60  # still the block's own end, not shortened


async def test_a_failure_during_a_block_learns_the_stores_remaining_time(
        make_limiter: MakeLimiter, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = make_limiter("memory", brute_force={"max_failures": 1, "cooldown_seconds": 60}).brute_force
    ip = fresh_ip()
    assert await guard.record_failure(ip) == 60
    # the store's block has under a second left (whatever time the calls take: 1 s at least)
    monkeypatch.setattr(bruteforce, "time", Clock(59.5, frozen=False))
    assert await guard.record_failure(ip) is None
    assert guard.known_block(ip) == 1


async def test_known_block_is_local_and_ends_with_the_cooldown(make_limiter: MakeLimiter, clock: Clock) -> None:
    guard = make_limiter("memory", brute_force={"max_failures": 1, "cooldown_seconds": 2}).brute_force
    ip = fresh_ip()
    assert guard.known_block(ip) is None
    assert await guard.record_failure(ip) == 2
    assert guard.known_block(ip) == 2
    assert guard.known_block(fresh_ip()) is None
    clock.advance(1.0)
    assert guard.known_block(ip) == 1
    clock.advance(1.0)
    assert guard.known_block(ip) is None  # 0 s left is no block
    clock.advance(0.5)
    assert guard.known_block(ip) is None


async def test_verification_budget_is_a_token_bucket(make_limiter: MakeLimiter, clock: Clock) -> None:
    guard = make_limiter("memory", brute_force={"verifications_per_second": 3}).brute_force
    ip = fresh_ip()
    assert [guard.take_verification(ip) for _ in range(4)] == [True, True, True, False]
    assert guard.take_verification(fresh_ip()) is True  # per address
    clock.advance(1 / 3)
    assert [guard.take_verification(ip) for _ in range(2)] == [True, False]
    clock.advance(1.0)  # refills to the rate, not beyond
    assert [guard.take_verification(ip) for _ in range(4)] == [True, True, True, False]
    clock.advance(10.0)
    assert [guard.take_verification(ip) for _ in range(4)] == [True, True, True, False]


async def test_refund_gives_back_one_verification_up_to_the_rate(make_limiter: MakeLimiter, clock: Clock) -> None:
    guard = make_limiter("memory", brute_force={"verifications_per_second": 3}).brute_force
    ip = fresh_ip()
    guard.refund(ip)  # nothing taken yet: no entry, nothing to give back
    assert [guard.take_verification(ip) for _ in range(4)] == [True, True, True, False]
    guard.refund(ip)
    assert [guard.take_verification(ip) for _ in range(2)] == [True, False]
    clock.advance(1 / 3)
    assert guard.take_verification(ip) is True
    guard.refund(ip)
    guard.refund(ip)
    assert [guard.take_verification(ip) for _ in range(3)] == [True, True, False]
    other = fresh_ip()
    assert guard.take_verification(other) is True
    guard.refund(other)
    guard.refund(other)  # capped at the rate
    assert [guard.take_verification(other) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(("scope", "reason"), [("auth", "auth.too_many_failures"),
                                               ("webhook", "webhook.too_many_failures")])
async def test_refusal_shape(make_limiter: MakeLimiter, scope: str, reason: str) -> None:
    limiter = make_limiter("memory")
    guard = limiter.brute_force if scope == "auth" else limiter.webhook_brute_force
    assert guard is not None
    err = guard.refusal(1)
    assert (err.status, err.reason, err.headers) == (429, reason, {"Retry-After": "1"})
    assert err.detail == "too many failed verifications from this address; retry later"
    assert guard.refusal(0).headers == {"Retry-After": "1"}
    assert guard.refusal(-5).headers == {"Retry-After": "1"}
    custom = guard.refusal(7, "custom detail")
    assert (custom.detail, custom.headers) == ("custom detail", {"Retry-After": "7"})


async def test_a_failure_makes_the_next_check_ask_the_store(make_limiter: MakeLimiter) -> None:
    # Two replicas sharing Redis: a failure here drops this replica's "seen unblocked" cache, so
    # the block another replica then sets is seen at once, not RECHECK seconds later.
    settings = {"brute_force": {"max_failures": 2, "cooldown_seconds": 60}}
    here = make_limiter("redis", storage_timeout=PATIENT, **settings).brute_force
    there = make_limiter("redis", storage_timeout=PATIENT, **settings).brute_force
    ip = fresh_ip()
    assert await here.blocked(ip) is None
    assert await here.record_failure(ip) is None
    assert await there.record_failure(ip) == 60
    left = await here.blocked(ip)
    assert left is not None and 1 <= left <= 60


async def test_redis_key_layout(make_limiter: MakeLimiter, redis_srv: RedisServer) -> None:
    # Block keys keep their names across versions (a rolling upgrade keeps its blocks); '%' and
    # '/' in an address are escaped so no two addresses share a key.
    tag = uuid.uuid4().hex[:8]
    ip = f"fe80::{tag}%eth0/1"
    limiter = make_limiter("redis", storage_timeout=PATIENT, brute_force={"max_failures": 1, "cooldown_seconds": 60},
                           webhook_brute_force={"max_failures": 1, "cooldown_seconds": 60})
    assert await limiter.brute_force.record_failure(ip) == 60
    assert limiter.webhook_brute_force is not None
    assert await limiter.webhook_brute_force.record_failure(ip) == 60
    raw = Redis.from_url(redis_srv.url)
    try:
        keys = sorted(k.decode() for k in await raw.keys(f"*{tag}*"))
    finally:
        await raw.aclose()
    escaped = f"fe80::{tag}%25eth0%2F1"
    assert keys == [f"LIMITS:gw/bf-block-webhook/{escaped}", f"LIMITS:gw/bf-block/{escaped}",
                    f"LIMITS:gw/bf-webhook/{escaped}/1/1/minute", f"LIMITS:gw/bf/{escaped}/1/1/minute"]
    # the look-alike address that escaping keeps apart is not blocked
    other = make_limiter("redis", storage_timeout=PATIENT, brute_force={"max_failures": 1, "cooldown_seconds": 60}).brute_force
    assert await other.blocked(ip) is not None
    assert await other.blocked(f"fe80::{tag}%25eth0%2F1") is None
    assert await other.blocked(f"fe80::{tag}%eth0%2F1") is None



async def test_local_fallback_seeds_each_address_once_from_what_redis_left(
        make_limiter: MakeLimiter, own_redis: RedisServer) -> None:
    limiter = make_limiter("redis", storage_timeout=PATIENT, url=own_redis.url, brute_force={"max_failures": 10})
    guard = limiter.brute_force
    one, two = fresh_ip(), fresh_ip()
    assert await guard.record_failure(one) is None
    for _ in range(2):
        assert await guard.record_failure(two) is None
    own_redis.kill()
    # Redis said 9 and 8 were left: the local count starts there, seeded once per address.
    assert [await guard.record_failure(one) for _ in range(9)] == [None] * 8 + [60]
    assert limiter.degraded
    assert [await guard.record_failure(two) for _ in range(8)] == [None] * 7 + [60]
    # an address Redis never counted gets the full allowance
    three = fresh_ip()
    assert [await guard.record_failure(three) for _ in range(10)] == [None] * 9 + [60]


async def test_a_second_outage_seeds_afresh_from_what_redis_counted_since(
        make_limiter: MakeLimiter, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each outage is an episode: an address seeded in the first must be seeded again in the
    # second from what Redis counted in between, or the fallback would hand out the allowance it
    # kept from the first outage.
    monkeypatch.setattr(backend, "PROBE_INTERVAL", 0.05)
    limiter = make_limiter("redis", storage_timeout=PATIENT, url=own_redis.url, brute_force={"max_failures": 10})
    guard = limiter.brute_force
    ip = fresh_ip()
    assert await guard.record_failure(ip) is None  # Redis: 9 left
    own_redis.kill()
    # outage 1: seeded once with the 1 Redis counted, then 3 more: 4 spent locally
    assert [await guard.record_failure(ip) for _ in range(3)] == [None] * 3
    assert limiter.degraded

    own_redis.start()  # empty, as after a failover
    for _ in range(200):
        await guard.blocked(fresh_ip())  # a guard call while degraded starts the probe
        await asyncio.sleep(0.06)
        if not limiter.degraded:
            break
    assert not limiter.degraded
    assert [await guard.record_failure(ip) for _ in range(3)] == [None] * 3  # Redis: 7 left
    assert not limiter.degraded

    own_redis.kill()
    # outage 2: the 4 local failures of outage 1 are still in the window, and the 3 Redis counted
    # since are added, once: 3 left (not the 6 outage 1 left, nor 1 from seeding per failure)
    assert [await guard.record_failure(ip) for _ in range(3)] == [None, None, 60]
    assert limiter.degraded


async def test_replicas_divide_only_the_local_fallback(make_limiter: MakeLimiter) -> None:
    # Redis counts for every replica: the full max_failures applies there, not max_failures / replicas.
    guard = make_limiter("redis", storage_timeout=PATIENT, replicas=2, brute_force={"max_failures": 4}).brute_force
    ip = fresh_ip()
    assert [await guard.record_failure(ip) for _ in range(4)] == [None, None, None, 60]


def test_unknown_scope_is_refused(make_limiter: MakeLimiter) -> None:
    guard = make_limiter("memory").brute_force
    with pytest.raises(ValueError, match="^unknown brute-force scope 'jwt'$"):
        bruteforce.BruteForceGuard(guard.backend, guard.policy, scope="jwt")


async def test_a_block_set_by_another_replica_is_read_from_the_store(
        make_limiter: MakeLimiter, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"brute_force": {"max_failures": 1, "cooldown_seconds": 60}}
    here_limiter = make_limiter("redis", storage_timeout=PATIENT, **settings)
    here, there = here_limiter.brute_force, make_limiter("redis", storage_timeout=PATIENT, **settings).brute_force
    ip, late = fresh_ip(), fresh_ip()
    assert await there.record_failure(ip) == 60
    assert await there.record_failure(late) == 60
    assert here.known_block(ip) is None
    left = await here.blocked(ip)
    assert left is not None and 30 <= left <= 60
    known = here.known_block(ip)  # learnt: no round trip next time
    assert known is not None and left - 1 <= known <= left
    with pytest.raises(TooManyRequests) as exc:
        await here.check(ip)
    assert 1 <= int(exc.value.headers["Retry-After"]) <= left
    # the store's block has under a second left: 1 s, never 0 or a rounded-up 2
    monkeypatch.setattr(bruteforce, "time", Clock(59.5, frozen=False))
    assert await here.blocked(late) == 1
    assert not here_limiter.degraded


async def test_an_unblocked_address_is_asked_again_only_after_recheck(
        make_limiter: MakeLimiter, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = make_limiter("memory").brute_force
    calls: list[object] = []
    run = guard.backend.run

    async def counting_run(op: Any, **kw: Any) -> Any:
        calls.append(op)
        return await run(op, **kw)

    monkeypatch.setattr(guard.backend, "run", counting_run)
    ip = fresh_ip()
    assert await guard.blocked(ip) is None
    assert await guard.blocked(ip) is None
    assert len(calls) == 1
    clock.advance(bruteforce.RECHECK - 0.25)
    assert await guard.blocked(ip) is None
    assert len(calls) == 1
    clock.advance(0.25)
    assert await guard.blocked(ip) is None
    assert len(calls) == 2
    assert await guard.blocked(fresh_ip()) is None
    assert len(calls) == 3


async def test_every_guard_table_counts_its_evictions(make_limiter: MakeLimiter, own_redis: RedisServer) -> None:
    evicted: dict[str, int] = {}
    limiter = make_limiter("redis", storage_timeout=PATIENT, url=own_redis.url, max_tracked_keys=100, brute_force={"max_failures": 10})
    limiter.on_evict = lambda store, n: evicted.__setitem__(store, evicted.get(store, 0) + n)
    guard = limiter.brute_force
    ips = [fresh_ip() for _ in range(102)]
    for ip in ips:
        assert await guard.blocked(ip) is None  # remembered as unblocked: 102 into a table of 100
    assert evicted == {"auth_clear": 2}
    for ip in ips:
        assert await guard.record_failure(ip) is None  # what Redis said was left
    assert evicted == {"auth_clear": 2, "auth_known": 2}
    own_redis.kill()
    for ip in ips:
        assert await guard.record_failure(ip) is None  # seeded once per address and outage
    assert limiter.degraded
    assert (evicted["auth_clear"], evicted["auth_known"], evicted["auth_seeded"]) == (2, 2, 2)
