"""Replay and duplicate protection for webhook deliveries, without losing one.

A delivery key goes through three states:

    (absent) --acquire--> in progress (short TTL) --complete (upstream 2xx)--> done (long TTL)
                               \\--release (upstream failed)--> (absent): the sender's retry goes through

`acquire` is one atomic step (`SET NX` plus a read, in a Lua script on Redis), so of identical
deliveries arriving at once exactly one is "acquired". Each acquisition writes a fresh token, and
`complete` / `release` act only if that token is still there: a holder whose lock expired cannot
promote or delete the lock someone else took since.

The store fails closed: when Redis does not answer in time, `DedupeStoreUnavailable` (503) is
raised and the sender retries later, rather than the delivery being processed twice or dropped.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Literal, Protocol

from gateway.webhooks.errors import DedupeStoreUnavailable

State = Literal["acquired", "in_progress", "done"]
_DONE = "done"


def dedupe_key(route_id: str, delivery_id: str | None, body: bytes) -> str:
    """The scheme's delivery id when it has one, else the SHA-256 of the raw body; per route.

    Hashed either way, so a sender-chosen id cannot make keys long or collide across routes.
    """
    if delivery_id is not None:
        return f"{route_id}:id:{hashlib.sha256(delivery_id.encode()).hexdigest()}"
    return f"{route_id}:body:{hashlib.sha256(body).hexdigest()}"


class DedupeStore(Protocol):
    """Where delivery keys live: in process (one replica) or Redis (shared by all replicas)."""

    async def acquire(self, key: str, in_progress_ttl: float) -> State: ...
    async def complete(self, key: str, window_seconds: float) -> bool: ...
    async def release(self, key: str) -> bool: ...
    async def close(self) -> None: ...


class TokenHoldings:
    """Tokens of the locks this process holds, so complete/release know what to compare.

    Entries of callers that never completed nor released (a bug, a cancelled task) are pruned
    once their lock has expired anyway, so the map stays bounded.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._limit = limit

    def put(self, key: str, token: str, ttl: float) -> None:
        now = time.monotonic()
        if len(self._tokens) >= self._limit:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[key] = (token, now + ttl)

    def take(self, key: str) -> str | None:
        held = self._tokens.pop(key, None)
        return held[0] if held else None


def new_lock_token() -> str:
    return "ip:" + secrets.token_hex(8)


class MemoryDedupeStore:
    """In-process store for a single replica; bounded, expiry honoured.

    Every method runs without awaiting in between, so it is atomic under one event loop.
    When full, expired keys go first, then the oldest "done" ones (a very old replay becoming
    possible is the lesser harm than refusing every new delivery); in-progress keys are never
    evicted.
    """

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[str, float]] = {}
        self._held = TokenHoldings()
        self._max = max_keys
        self._clock = clock

    async def acquire(self, key: str, in_progress_ttl: float) -> State:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[1] > now:
            return "done" if entry[0] == _DONE else "in_progress"
        self._entries.pop(key, None)
        self._make_room(now)
        token = new_lock_token()
        self._entries[key] = (token, now + in_progress_ttl)
        self._held.put(key, token, in_progress_ttl)
        return "acquired"

    async def complete(self, key: str, window_seconds: float) -> bool:
        if not self._still_mine(key):
            return False
        del self._entries[key]  # re-inserted last: the dict's order is the eviction order
        self._entries[key] = (_DONE, self._clock() + window_seconds)
        return True

    async def release(self, key: str) -> bool:
        if not self._still_mine(key):
            return False
        del self._entries[key]
        return True

    async def close(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _still_mine(self, key: str) -> bool:
        token = self._held.take(key)
        entry = self._entries.get(key)
        return token is not None and entry is not None and entry[0] == token and entry[1] > self._clock()

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self._max:
            return
        target = self._max * 9 // 10  # free a batch, so the scan is not repeated per delivery
        self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
        if len(self._entries) > target:
            excess = len(self._entries) - target
            for k in [k for k, v in self._entries.items() if v[0] == _DONE][:excess]:
                del self._entries[k]
        if len(self._entries) >= self._max:
            raise DedupeStoreUnavailable("webhook replay store is full, retry later")


def dedupe_store_from_url(url: str | None) -> DedupeStore:
    """`GATEWAY_REDIS_URL`: unset or `memory://` → in process; `redis://`, `rediss://`, `unix://` → Redis."""
    if not url or url == "memory://":
        return MemoryDedupeStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from gateway.webhooks.dedupe_redis import RedisDedupeStore  # redis only when configured

        return RedisDedupeStore(url)
    raise ValueError("GATEWAY_REDIS_URL must be a redis://, rediss:// or unix:// URL")
