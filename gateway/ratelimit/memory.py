"""In-process per-key state with a hard bound: a spoofing or token-spraying attack that mints
millions of distinct keys (addresses, subjects) must not grow the process without limit.

Threat: every distinct client address or subject creates counters. Without a bound, an attacker
behind a /64 of IPv6 addresses (or one that sprays random tokens) makes the gateway allocate until
the kernel kills it. With a bound, the oldest entries are evicted first and every eviction is
counted (`gateway_ratelimit_evictions_total{store}`), so an operator sees the pressure; the cost
of an eviction is that the evicted key's counter starts again from zero, which only ever favours
a key that has been idle longest.

`BoundedMap`          a dict with a size cap, least recently written first out
`BoundedMemoryStorage` `limits`' in-process storage (per-replica fallback, or the only store
                       without Redis) with the same cap over all its keys
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gateway.ratelimit.backend import SweepingMemoryStorage

K = TypeVar("K")
V = TypeVar("V")
EvictHook = Callable[[int], None]


def _ignore(n: int) -> None:
    return None


class BoundedMap(Generic[K, V]):
    """A mapping of at most `max_entries`; `set` moves a key to the young end, the oldest go first.

    Eviction is O(1) per entry (dicts keep insertion order). `on_evict(n)` is told how many went.
    """

    __slots__ = ("_data", "max_entries", "on_evict", "evicted")

    def __init__(self, max_entries: int, on_evict: EvictHook | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        # OrderedDict, not dict: removing from the front of a plain dict leaves dead slots that
        # every later `next(iter(d))` walks over (quadratic under a key-spraying flood).
        self._data: OrderedDict[K, V] = OrderedDict()
        self.max_entries = max_entries
        self.on_evict = on_evict or _ignore
        self.evicted = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._data.get(key, default)

    def set(self, key: K, value: V) -> None:
        data = self._data
        if key in data:
            data.move_to_end(key)
        data[key] = value
        if len(data) > self.max_entries:
            self._evict(len(data) - self.max_entries)

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._data.pop(key, default)

    def _evict(self, n: int) -> None:
        popitem = self._data.popitem
        for _ in range(n):
            popitem(last=False)
        self.evicted += n
        self.on_evict(n)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class BoundedMemoryStorage(SweepingMemoryStorage):
    """`limits` memory storage holding at most `max_keys` counters and moving windows together.

    Counters (fixed window, sliding window) and moving windows move to the young end whenever
    they are used, so a flood of new keys evicts idle ones first, never the busy key an attacker
    would like to see reset. When the total goes over the cap, the oldest of the larger table go.
    """

    def __init__(self, max_keys: int = 1_000_000, on_evict: EvictHook | None = None) -> None:
        super().__init__()
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        # Ordered tables so the oldest entry is taken off in O(1) (see BoundedMap).
        self.expirations: OrderedDict[str, float] = OrderedDict()  # type: ignore[assignment]
        self.events: OrderedDict[str, list[Any]] = OrderedDict()  # type: ignore[assignment]
        self.max_keys = max_keys
        self.on_evict = on_evict or _ignore
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.expirations) + len(self.events)

    def make_room(self) -> None:
        """Evict oldest-first until the cap holds (called after every insertion)."""
        over = len(self.expirations) + len(self.events) - self.max_keys
        if over <= 0:
            return
        counts, expirations, events, locks = self.storage, self.expirations, self.events, self.locks
        n = 0
        while over > 0:
            if len(expirations) >= len(events):
                key, _ = expirations.popitem(last=False)  # type: ignore[call-arg]
            else:
                key, _ = events.popitem(last=False)  # type: ignore[call-arg]
            counts.pop(key, None)
            locks.pop(key, None)
            over -= 1
            n += 1
        self.evicted += n
        self.on_evict(n)

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        value = await super().incr(key, expiry, amount)
        if value == amount:  # a new counter
            self.make_room()
        elif key in self.expirations:
            self.expirations.move_to_end(key)  # type: ignore[attr-defined]  # in use: young again
        return value

    async def get(self, key: str) -> int:
        value = await super().get(key)
        if value and key in self.expirations:
            self.expirations.move_to_end(key)  # type: ignore[attr-defined]  # read to decide: in use
        return value

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        events = self.events
        existing = events.get(key)
        if existing is not None:
            events.move_to_end(key)  # type: ignore[attr-defined]  # young again: in use, last to go
        ok = await super().acquire_entry(key, limit, expiry, amount)
        if existing is None:
            self.make_room()
        return ok

    def expire_now(self) -> None:
        """Drop expired counters at once (tests; the sweep does this every few seconds)."""
        now = time.time()
        for key in [k for k, exp in self.expirations.items() if exp <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)
