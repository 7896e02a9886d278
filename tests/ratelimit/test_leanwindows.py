"""Moving and sliding windows on the lean RESP path: same answers as `limits` on redis-py, one
round trip per hit, NOSCRIPT recovery, and no remembered read leaking across requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from gateway.ratelimit.backend import Backend, resp_client_from_url, storage_from_url
from gateway.ratelimit.leanwindows import LeanWindows
from gateway.ratelimit.resp import RespClient
from tests.support.procs import RedisServer

STRATEGIES = {"moving-window": MovingWindowRateLimiter, "sliding-window-counter": SlidingWindowCounterRateLimiter}


class Counting(RespClient):
    """RespClient that counts round trips and the commands sent."""

    def __init__(self, url: str) -> None:
        super().__init__(url, connect_timeout=10)  # a busy test machine must not fail the connect
        self.round_trips = 0
        self.commands: list[bytes] = []

    async def execute(self, commands: Any, *, transaction: bool = True) -> list[Any]:
        self.round_trips += 1
        self.commands += [bytes(c[0]) if isinstance(c[0], bytes) else str(c[0]).encode() for c in commands]
        return await super().execute(commands, transaction=transaction)


@pytest.fixture
async def stores(redis_srv: RedisServer) -> AsyncIterator[tuple[Any, LeanWindows, Counting]]:
    ref = storage_from_url(redis_srv.url, timeout=10)  # generous: the reference, not the subject
    client = Counting(redis_srv.url)
    lean = LeanWindows(client, ref)
    yield ref, lean, client
    await client.close()
    await ref.bridge.storage.aclose()  # type: ignore[attr-defined]


def _ids() -> tuple[str, str]:
    return "lean-test", uuid.uuid4().hex[:12]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("limit", ["3/2 second", "5/minute"])
async def test_same_answers_as_limits_on_redis_py(stores: Any, strategy: str, limit: str) -> None:
    ref_store, lean_store, _ = stores
    item = parse(limit)
    ref, lean = STRATEGIES[strategy](ref_store), STRATEGIES[strategy](lean_store)
    ref_ids, lean_ids = _ids(), _ids()
    trace_ref, trace_lean = [], []
    for step in range(item.amount + 3):
        if step == item.amount + 1 and item.get_expiry() <= 2:
            await asyncio.sleep(item.get_expiry() + 0.2)  # a window passes: hits are allowed again
        for strat, ids, trace in ((ref, ref_ids, trace_ref), (lean, lean_ids, trace_lean)):
            ok = await strat.hit(item, *ids)
            reset, remaining = await strat.get_window_stats(item, *ids)
            trace.append((ok, remaining, await strat.test(item, *ids), round(reset - asyncio.get_running_loop().time())))
    assert [t[:3] for t in trace_lean] == [t[:3] for t in trace_ref]
    # the refusal happened, and (for short windows) the window came back
    assert any(not t[0] for t in trace_lean)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_reset_times_match(stores: Any, strategy: str) -> None:
    ref_store, lean_store, _ = stores
    item = parse("4/minute")
    ref, lean = STRATEGIES[strategy](ref_store), STRATEGIES[strategy](lean_store)
    ref_ids, lean_ids = _ids(), _ids()
    for _ in range(3):
        await ref.hit(item, *ref_ids)
        await lean.hit(item, *lean_ids)
    r_reset, r_left = await ref.get_window_stats(item, *ref_ids)
    l_reset, l_left = await lean.get_window_stats(item, *lean_ids)
    assert l_left == r_left == 1
    # limits computes a sliding window's reset as `now + ttl % expiry`: a TTL read in the very
    # millisecond the key was set (exactly 2 x expiry) gives 0 instead of just under 60 s, and
    # either path can land on it on a fast machine. Equal up to that whole-window wrap.
    off = abs(l_reset - r_reset)
    if strategy == "sliding-window-counter":
        off = min(off % 60, 60 - off % 60)
    assert off < 1.0, (l_reset, r_reset)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_hit_and_stats_take_one_round_trip(stores: Any, strategy: str) -> None:
    _, lean_store, client = stores
    lean, item, ids = STRATEGIES[strategy](lean_store), parse("10/minute"), _ids()
    before = client.round_trips
    assert await lean.hit(item, *ids)
    reset, remaining = await lean.get_window_stats(item, *ids)
    assert remaining == 9
    assert client.round_trips - before == 1
    assert client.commands[-1] == b"EVALSHA"


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_remembered_read_does_not_survive_a_yield(stores: Any, strategy: str) -> None:
    _, lean_store, client = stores
    lean, item, ids = STRATEGIES[strategy](lean_store), parse("10/minute"), _ids()
    await lean.hit(item, *ids)
    await asyncio.sleep(0)  # another request could run here and change the window
    await lean.hit(item, *ids)  # ... like this one (same key), whose read is taken now
    await asyncio.sleep(0)
    before = client.round_trips
    _, remaining = await lean.get_window_stats(item, *ids)
    assert client.round_trips - before == 1  # asked Redis again
    assert remaining == 8


async def test_remembered_read_is_per_key(stores: Any) -> None:
    _, lean_store, client = stores
    lean, item = MovingWindowRateLimiter(lean_store), parse("10/minute")
    a, b = _ids(), _ids()
    await lean.hit(item, *b)
    await lean.hit(item, *a)
    # b's read must not be answered from a's hit
    _, remaining_b = await lean.get_window_stats(item, *b)
    _, remaining_a = await lean.get_window_stats(item, *a)
    assert (remaining_a, remaining_b) == (9, 9)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_noscript_falls_back_to_eval(stores: Any, strategy: str) -> None:
    _, lean_store, client = stores
    lean, item, ids = STRATEGIES[strategy](lean_store), parse("10/minute"), _ids()
    await lean.hit(item, *ids)
    await client.execute([(b"SCRIPT", b"FLUSH")], transaction=False)  # as after a Redis restart
    client.commands.clear()
    assert await lean.hit(item, *ids)
    assert client.commands == [b"EVALSHA", b"EVAL"]
    client.commands.clear()
    assert await lean.hit(item, *ids)
    assert client.commands == [b"EVALSHA"]  # cached again by EVAL
    _, remaining = await lean.get_window_stats(item, *ids)
    assert remaining == 7


async def test_wrong_type_is_a_storage_error(stores: Any) -> None:
    ref_store, lean_store, client = stores
    lean, item, ids = MovingWindowRateLimiter(lean_store), parse("10/minute"), _ids()
    key = ref_store.bridge.prefixed_key(item.key_for(*ids))
    await client.execute([(b"SET", key, b"x")], transaction=False)
    with pytest.raises(Exception, match="WRONGTYPE"):
        await lean.hit(item, *ids)


async def test_backend_uses_the_lean_path_only_on_a_single_redis(redis_srv: RedisServer) -> None:
    resp = resp_client_from_url(redis_srv.url, 0.25)
    backend = Backend(storage_from_url(redis_srv.url), resp=resp)
    try:
        assert isinstance(backend.shared.strategies["moving-window"].storage, LeanWindows)
        assert isinstance(backend.shared.strategies["sliding-window-counter"].storage, LeanWindows)
        assert not isinstance(backend.local.strategies["moving-window"].storage, LeanWindows)
    finally:
        await backend.aclose()
    memory = Backend(storage_from_url(None))
    assert not isinstance(memory.shared.strategies["moving-window"].storage, LeanWindows)


async def test_unreachable_redis_degrades_to_the_local_store(redis_srv: RedisServer) -> None:
    from tests.support.procs import free_port

    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    backend = Backend(storage_from_url(url), resp=resp_client_from_url(url, 0.25), on_storage_error="local")
    item = parse("2/minute")
    try:
        async def op(store: Any) -> bool:
            return bool(await store.strategies["moving-window"].hit(item, "t", "x"))

        assert await backend.run(op) is True
        assert backend.degraded  # the shared hit failed; the local store answered
    finally:
        await backend.aclose()


async def test_a_window_read_in_its_first_millisecond_resets_a_window_later_not_now(stores: Any) -> None:
    """Redis freezes its clock for a script, so a burst of hits in the millisecond a window's key
    was made all read its full TTL (2 x the window). `limits` turns that into a reset of *now*;
    the local fallback would then seed a spent limit as fresh. The lean path reports one ms less."""
    ref_store, _, _ = stores

    class FrozenClock:
        async def execute(self, commands: Any, *, transaction: bool = True) -> list[Any]:
            return [[1, 0, 0, 5, 120000]]  # acquired; previous: none; current: 5 hits, PTTL 2 x 60 s

    lean = LeanWindows(FrozenClock(), ref_store)  # type: ignore[arg-type]
    item = parse("5/minute")
    strategy = SlidingWindowCounterRateLimiter(lean)
    assert await strategy.hit(item, *_ids())
    stats = await strategy.get_window_stats(item, *_ids())
    assert stats.remaining == 0
    assert stats.reset_time > time.time() + 59  # not now
