from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.procs import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A private redis-server for the test session (never the machine's shared one)."""
    with redis_server() as server:
        yield server
