"""In-process per-key state stays under `max_tracked_keys`: oldest first out, every eviction counted.

Threat: a spoofing or token-spraying flood mints millions of distinct keys; unbounded tables grow
until the process is killed. The 1-million-key run is a child process (clean RSS figure).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from gateway.ratelimit import RateLimitPolicy
from gateway.ratelimit.memory import BoundedMap, BoundedMemoryStorage
from tests.ratelimit.conftest import MakeLimiter
from tests.support.gateway_proc import ROOT


def test_bounded_map_evicts_oldest_first_and_counts() -> None:
    told: list[int] = []
    m: BoundedMap[str, int] = BoundedMap(3, told.append)
    for k in "abc":
        m.set(k, 1)
    m.set("a", 2)  # written again: young
    m.set("d", 1)
    assert "b" not in m and {"a", "c", "d"} == {k for k in "abcd" if k in m}
    m.set("e", 1)
    assert "c" not in m and len(m) == 3
    assert told == [1, 1] and m.evicted == 2
    assert m.get("a") == 2 and m.pop("a") == 2 and len(m) == 2
    with pytest.raises(ValueError):
        BoundedMap(0)


async def test_bounded_storage_caps_counters_and_windows_together() -> None:
    told: list[int] = []
    st = BoundedMemoryStorage(max_keys=10, on_evict=told.append)
    for i in range(8):
        await st.incr(f"c{i}", 60)
    for i in range(8):
        assert await st.acquire_entry(f"w{i}", 5, 60)
    assert len(st) == 10 and st.evicted == 6 and sum(told) == 6
    # the larger table gives way, oldest first in each
    assert list(st.expirations) == ["c3", "c4", "c5", "c6", "c7"]
    assert list(st.events) == ["w3", "w4", "w5", "w6", "w7"]
    assert not st.locks.keys() - (set(st.expirations) | set(st.events))  # no orphan locks
    assert await st.get("c0") == 0 and await st.get("c7") == 1


async def test_a_key_in_use_is_the_last_to_go() -> None:
    st = BoundedMemoryStorage(max_keys=5)
    for i in range(5):
        assert await st.acquire_entry(f"w{i}", 5, 60)
        await st.incr(f"c{i}", 60)  # counters and windows alternate in the two tables
    assert len(st) == 5
    survivors = set(st.expirations) | set(st.events)
    busy_window = next(k for k in st.events)
    busy_counter = next(k for k in st.expirations)
    for i in range(5, 12):
        assert await st.acquire_entry(busy_window, 50, 60)
        await st.incr(busy_counter, 60)
        assert await st.acquire_entry(f"w{i}", 5, 60)
        await st.incr(f"c{i}", 60)
    assert busy_window in st.events and busy_counter in st.expirations, survivors
    assert await st.incr(busy_counter, 60) == 9  # its count survived the flood


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
async def test_limiter_tables_stay_bounded_and_a_busy_key_keeps_its_count(
    make_limiter: MakeLimiter, strategy: str
) -> None:
    evicted: dict[str, int] = {}
    limiter = make_limiter("memory", max_tracked_keys=500)
    limiter.on_evict = lambda store, n: evicted.__setitem__(store, evicted.get(store, 0) + n)
    route = f"r-{uuid.uuid4().hex[:6]}"
    # Per day: a minute boundary during the 3,000 hits would reset a fixed window (a busy machine).
    compiled = limiter.compile(RateLimitPolicy(limits="5/day", key="ip", strategy=strategy), route)
    for _ in range(5):
        assert (await limiter.hit(route, compiled, ip="192.0.2.1")).allowed
    for i in range(3000):
        await limiter.hit(route, compiled, ip=f"10.0.{i >> 8}.{i & 255}")
        if i % 100 == 0:  # the attacker's own busy key is in use all along
            assert not (await limiter.hit(route, compiled, ip="192.0.2.1")).allowed
    storage = limiter.backend.shared.storage
    assert isinstance(storage, BoundedMemoryStorage)
    assert len(storage) <= 500
    assert evicted["memory"] >= 2500 - 30
    # the busy key was not reset by the flood of new ones
    assert not (await limiter.hit(route, compiled, ip="192.0.2.1")).allowed


async def test_guard_tables_stay_bounded(make_limiter: MakeLimiter) -> None:
    evicted: dict[str, int] = {}
    limiter = make_limiter("memory", max_tracked_keys=200, brute_force={"max_failures": 1})
    limiter.on_evict = lambda store, n: evicted.__setitem__(store, evicted.get(store, 0) + n)
    guard = limiter.brute_force
    for i in range(1000):
        ip = f"10.1.{i >> 8}.{i & 255}"
        await guard.blocked(ip)
        await guard.record_failure(ip)
        guard.take_verification(ip)
    assert len(guard._blocks) <= 200 and len(guard._clear_until) <= 200 and len(guard._budget) <= 200
    assert evicted["auth_blocks"] == 800 and evicted["auth_budget"] == 800
    storage = limiter.backend.shared.storage
    assert isinstance(storage, BoundedMemoryStorage) and len(storage) <= 200
    # the newest blocks are known; the oldest were given up to stay under the bound
    assert await guard.blocked("10.1.3.231") is not None
    assert guard.known_block("10.1.0.0") is None


@pytest.mark.slow
def test_one_million_distinct_keys_stay_under_the_bound() -> None:
    """1,000,000 distinct addresses, max_tracked_keys = 100,000: tables capped, 900,000 evicted per
    table, RSS growth well under what the unbounded tables take (~380 MB, README)."""
    out = subprocess.run([sys.executable, "-m", "tests.ratelimit.memory_probe", "1000000", "100000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout)
    print("memory probe:", result)
    assert result["counters"] == 100_000
    assert result["guard_entries"] == 100_000
    assert result["evicted"] == {"memory": 900_000, "auth_blocks": 900_000}
    assert result["rss_growth_bytes"] < 150 * 1024 * 1024, result
