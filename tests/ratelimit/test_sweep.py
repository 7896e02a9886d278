"""The in-process store's expiry sweep: frees expired counters, keeps live ones, and yields to the
event loop between chunks instead of stopping it for one pass over every key."""

from __future__ import annotations

import asyncio
import time

from gateway.ratelimit.backend import SWEEP_CHUNK, SweepingMemoryStorage


def _fill(store: SweepingMemoryStorage, n: int) -> None:
    now = time.time()
    for i in range(n):
        key = f"LIMITER/rl/r/fixed-window/sub=u{i}/20/1/second"
        store.storage[key] = 1
        store.expirations[key] = now - 1 if i % 2 else now + 60  # odd keys expired


async def test_expired_counters_go_live_ones_stay() -> None:
    store = SweepingMemoryStorage()
    _fill(store, 10)
    await store._MemoryStorage__expire_events()  # type: ignore[attr-defined]
    assert sorted(store.storage) == sorted(store.expirations)
    assert len(store.storage) == 5
    assert all(int(k.split("sub=u")[1].split("/")[0]) % 2 == 0 for k in store.storage)


async def test_sweep_yields_between_chunks_and_keeps_a_counter_hit_meanwhile() -> None:
    store = SweepingMemoryStorage()
    n = SWEEP_CHUNK * 5
    _fill(store, n)
    last = f"LIMITER/rl/r/fixed-window/sub=u{n - 1}/20/1/second"  # odd: expired when the sweep starts
    ran_during_sweep = []

    async def other_request() -> None:
        await asyncio.sleep(0)
        # a hit renews the counter while the sweep is still in its first chunks
        store.storage[last] = 1
        store.expirations[last] = time.time() + 60
        ran_during_sweep.append(len(store.storage))

    sweep = asyncio.ensure_future(store._MemoryStorage__expire_events())  # type: ignore[attr-defined]
    await asyncio.gather(sweep, other_request())
    assert ran_during_sweep and ran_during_sweep[0] > n // 2 + 1  # it ran before the sweep finished
    assert last in store.storage and last in store.expirations  # renewed: not swept
    assert len(store.storage) == n // 2 + 1
