"""Brute-force guard: failed authentications per client IP, threshold and cool-down."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gateway.errors import TooManyRequests
from tests.ratelimit.conftest import MakeLimiter


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
