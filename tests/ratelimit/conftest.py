from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gateway.ratelimit import RateLimiter, RateLimitSettings
from tests.support.procs import RedisServer, redis_server

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_limiter(redis_srv: RedisServer) -> AsyncIterator[MakeLimiter]:
    """make_limiter("memory"|"redis", url=None, **RateLimitSettings fields) -> RateLimiter."""
    made: list[RateLimiter] = []

    def make(kind: str = "memory", url: str | None = None, **settings: Any) -> RateLimiter:
        storage_url = None if kind == "memory" else (url or redis_srv.url)
        limiter = RateLimiter.from_settings(RateLimitSettings(**settings), storage_url)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


@pytest.fixture
def route_id() -> str:
    # Fresh keys per test: the session Redis is shared by every test in this process.
    return f"r-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or stall it (the session one is shared)."""
    with redis_server() as server:
        yield server
