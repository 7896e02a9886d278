"""Brute-force guard: too many failed authentications from one client IP block it for a cool-down.

Threat: credential stuffing / token guessing. The check runs before any token parsing, so a
blocked address costs one storage read and no crypto. Failures are counted in a moving window;
the `max_failures`-th failure inside `window` sets a block key that expires after
`cooldown_seconds`. Same storage and same `on_storage_error` policy as the rate limiter (the
local fallback divides `max_failures` by the replica count).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from gateway.errors import TooManyRequests
from gateway.ratelimit.backend import OPEN, Backend, Store
from gateway.ratelimit.policy import BruteForcePolicy

if TYPE_CHECKING:
    from limits import RateLimitItem


RECHECK = 1.0
CLEAR_CACHE_MAX = 100_000


def _esc(ip: str) -> str:
    return ip.replace("%", "%25").replace("/", "%2F")


class BruteForceGuard:
    """`blocked(ip)` before authentication; `record_failure(ip)` after a failed one."""

    def __init__(self, backend: Backend, policy: BruteForcePolicy, replicas: int = 1) -> None:
        self.backend = backend
        self.policy = policy
        self._item: RateLimitItem = policy.item()
        self._local_item: RateLimitItem = policy.item(replicas)
        # Addresses seen unblocked recently: not asked again for RECHECK seconds. Saves a shared
        # store round trip on nearly every request; a block set by another replica is seen here at
        # most RECHECK seconds late (failures are still counted exactly, in the shared store).
        self._clear_until: dict[str, float] = {}

    async def blocked(self, ip: str) -> int | None:
        """Seconds left on this address's block, or None when it may try to authenticate."""
        now = time.monotonic()
        if self._clear_until.get(ip, 0.0) > now:
            return None
        key = f"gw/bf-block/{_esc(ip)}"

        async def op(store: Store) -> int | None:
            if not await store.storage.get(key):
                return None
            left = math.ceil(await store.storage.get_expiry(key) - time.time())
            return max(1, left)

        result = await self.backend.run(op)
        if result is OPEN or result is None:
            if len(self._clear_until) >= CLEAR_CACHE_MAX:
                self._clear_until.clear()
            self._clear_until[ip] = now + RECHECK
            return None
        return result

    async def record_failure(self, ip: str) -> int | None:
        """Count one failed authentication; returns the cool-down if this failure started a block."""
        self._clear_until.pop(ip, None)
        ident = ("bf", _esc(ip))
        key = f"gw/bf-block/{_esc(ip)}"
        cooldown = self.policy.cooldown_seconds

        async def op(store: Store) -> int | None:
            item = self._local_item if store.local else self._item
            moving = store.strategies["moving-window"]
            # hit() refuses once the window is full; test() is False when this failure filled it.
            if await moving.hit(item, *ident) and await moving.test(item, *ident):
                return None
            await store.storage.incr(key, cooldown)
            return cooldown

        result = await self.backend.run(op)
        return None if result is OPEN else result

    async def check(self, ip: str) -> None:
        """Raise 429 `auth.too_many_failures` when `ip` is blocked."""
        left = await self.blocked(ip)
        if left is not None:
            raise TooManyRequests(
                "auth.too_many_failures",
                "too many failed authentications; retry later",
                headers={"Retry-After": str(left)},
            )
