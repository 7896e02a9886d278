from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.webhooks import DedupeStore, MemoryDedupeStore, RedisDedupeStore
from tests.support.procs import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DedupeStore]:
    """Each backend in turn; Redis keys get a per-test prefix so tests never see each other."""
    s: DedupeStore
    if request.param == "memory":
        s = MemoryDedupeStore()
    else:
        srv: RedisServer = request.getfixturevalue("redis_srv")
        s = RedisDedupeStore(srv.url, prefix=f"gw:wh:test-{uuid.uuid4().hex}:")
    yield s
    await s.close()
