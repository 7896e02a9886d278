from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.webhooks import DedupeStore, MemoryDedupeStore, RedisDedupeStore
from tests.support.procs import RedisServer

SEMANTICS_TIMEOUT = 10.0  # seconds: Redis calls in tests of behaviour, not of the time budget


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DedupeStore]:
    """Each backend in turn; Redis keys get a per-test prefix so tests never see each other."""
    s: DedupeStore
    if request.param == "memory":
        s = MemoryDedupeStore()
    else:
        srv: RedisServer = request.getfixturevalue("redis_srv")
        # A generous budget: these tests check the store's semantics (50 concurrent first calls
        # open 50 connections); the 0.5 s default is tested with dead and stalled Redis servers.
        s = RedisDedupeStore(srv.url, prefix=f"gw:wh:test-{uuid.uuid4().hex}:", timeout=SEMANTICS_TIMEOUT)
    yield s
    await s.close()
