"""Brute-force guard: too many failed verifications from one client address block it for a cool-down.

Threat: token guessing and credential stuffing (JWT routes), forged deliveries (webhook routes).
Model, per scope (`auth`, `webhook`, each with its own thresholds and keys):

- Only *failed verifications* count (bad signature or algorithm, malformed, expired, wrong
  issuer or audience; a webhook's bad signature, token or stale timestamp). A request without
  any credential never counts: otherwise anyone could lock out an office that shares one address.
- The `max_failures`-th failure inside `window` (a moving window, shared through Redis) sets a
  block for `cooldown_seconds`. Failures during a block keep counting, so an attacker who goes
  on is blocked again as soon as the cool-down ends.
- What a block refuses is the caller's business: the JWT stage still verifies tokens from a
  blocked address and serves the valid ones, refusing only failing ones (429), within
  `verifications_per_second` per address (`take_verification`, per replica: it bounds this
  process's CPU); the webhook stage refuses a blocked address before reading its body.

Blocks are remembered in process (bounded), so a known block costs no storage round trip and
survives a stalled or lost Redis; addresses seen unblocked are not asked again for `RECHECK`
seconds. Storage failure follows the rate limiter's `on_storage_error` (the local fallback divides
`max_failures` by the replica count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.errors import TooManyAuthFailures, TooManyRequests, TooManyWebhookFailures
from gateway.ratelimit.backend import OPEN, Backend, Store
from gateway.ratelimit.memory import BoundedMap
from gateway.ratelimit.policy import BruteForcePolicy

if TYPE_CHECKING:
    from limits import RateLimitItem


RECHECK = 1.0
REFUSALS: dict[str, type[TooManyRequests]] = {"auth": TooManyAuthFailures, "webhook": TooManyWebhookFailures}
EvictHook = Callable[[str, int], None]


def _esc(ip: str) -> str:
    return ip.replace("%", "%25").replace("/", "%2F")


class BruteForceGuard:
    """`blocked(ip)` before verification; `record_failure(ip)` after a failed one."""

    def __init__(self, backend: Backend, policy: BruteForcePolicy, replicas: int = 1, *,
                 scope: str = "auth", max_keys: int = 200_000, on_evict: EvictHook | None = None) -> None:
        if scope not in REFUSALS:
            raise ValueError(f"unknown brute-force scope {scope!r}")
        self.backend = backend
        self.policy = policy
        self.scope = scope
        self._refusal = REFUSALS[scope]
        self._item: RateLimitItem = policy.item()
        self._local_item: RateLimitItem = policy.item(replicas)
        # Key names of the `auth` scope are the ones earlier versions used (a rolling upgrade
        # keeps its blocks); other scopes get their own namespace.
        self._ns = "bf" if scope == "auth" else f"bf-{scope}"
        self._block_prefix = "gw/bf-block/" if scope == "auth" else f"gw/bf-block-{scope}/"
        hook = on_evict or (lambda store, n: None)
        # ip -> wall-clock end of its block (known here: no round trip, and Redis may stall).
        self._blocks: BoundedMap[str, float] = BoundedMap(max_keys, lambda n: hook(f"{scope}_blocks", n))
        # ip -> monotonic time until which it is taken as unblocked. Saves a shared store round
        # trip on nearly every request; a block set by another replica is seen here at most
        # RECHECK seconds late (failures are still counted exactly, in the shared store).
        self._clear_until: BoundedMap[str, float] = BoundedMap(max_keys, lambda n: hook(f"{scope}_clear", n))
        # ip -> (failures left, wall-clock end of the window) as Redis last counted them; seeds
        # the per-replica fallback while Redis is unreachable.
        self._known: BoundedMap[str, tuple[int, float]] = BoundedMap(max_keys, lambda n: hook(f"{scope}_known", n))
        self._seeded: BoundedMap[str, int] = BoundedMap(max_keys, lambda n: hook(f"{scope}_seeded", n))
        self._episode = 0
        self._in_fallback = False
        self._replicas = replicas
        # ip -> (tokens, monotonic time of the last refill): verifications allowed while blocked.
        self._budget: BoundedMap[str, tuple[float, float]] = BoundedMap(
            max_keys, lambda n: hook(f"{scope}_budget", n))

    async def blocked(self, ip: str) -> int | None:
        """Seconds left on this address's block, or None when it is not blocked."""
        until = self._blocks.get(ip)
        if until is not None:
            left = math.ceil(until - time.time())
            if left > 0:
                return left
            self._blocks.pop(ip)
        now = time.monotonic()
        clear = self._clear_until.get(ip)
        if clear is not None and clear > now:
            return None
        key = self._block_prefix + _esc(ip)

        async def op(store: Store) -> int | None:
            if not await store.storage.get(key):
                return None
            left = math.ceil(await store.storage.get_expiry(key) - time.time())
            return max(1, left)

        result = await self.backend.run(op)
        if result is OPEN or result is None:
            self._clear_until.set(ip, now + RECHECK)
            return None
        self._blocks.set(ip, time.time() + result)
        return int(result)

    async def record_failure(self, ip: str) -> int | None:
        """Count one failed verification; returns the cool-down if this failure started a block."""
        self._clear_until.pop(ip)
        ident = (self._ns, _esc(ip))
        key = self._block_prefix + _esc(ip)
        cooldown = self.policy.cooldown_seconds

        async def op(store: Store) -> tuple[bool, int] | None:
            item = self._local_item if store.local else self._item
            moving = store.strategies["moving-window"]
            if store.local:
                await self._seed_local(store, ip, ident)
            # hit() refuses once the window is full; a count at the amount means this one filled it.
            if await moving.hit(item, *ident):
                _, count = await store.storage.get_moving_window(  # type: ignore[attr-defined]
                    item.key_for(*ident), item.amount, item.get_expiry())
                if not store.local:
                    self._known.set(ip, (item.amount - count, time.time() + item.get_expiry()))
                if count < item.amount:
                    return None
            if await store.storage.get(key):
                # Already blocked (by this replica or another): not a new block, but learn it.
                return False, max(1, math.ceil(await store.storage.get_expiry(key) - time.time()))
            await store.storage.incr(key, cooldown)
            return True, cooldown

        result = await self.backend.run(op)
        if not self.backend.degraded:
            self._in_fallback = False  # the next outage seeds afresh
        if result is OPEN or result is None:
            return None
        started, left = result
        self._blocks.set(ip, time.time() + left)
        return int(left) if started else None

    async def _seed_local(self, store: Store, ip: str, ident: tuple[str, str]) -> None:
        """First local count for `ip` in this outage: start from this replica's share of the
        failures Redis said were left before the block (never a fresh allowance)."""
        if self.backend.in_process:
            return
        if not self._in_fallback:
            self._in_fallback = True
            self._episode += 1
        if self._seeded.get(ip) == self._episode:
            return
        self._seeded.set(ip, self._episode)
        known = self._known.get(ip)
        if known is None or known[1] <= time.time():
            return
        local = self._local_item
        spent = local.amount - min(local.amount, known[0] // self._replicas)
        if spent > 0:
            await store.strategies["moving-window"].hit(local, *ident, cost=spent)

    def known_block(self, ip: str) -> int | None:
        """Seconds left on a block this process knows of (no storage round trip), else None."""
        until = self._blocks.get(ip)
        if until is None:
            return None
        left = math.ceil(until - time.time())
        return left if left > 0 else None

    def take_verification(self, ip: str) -> bool:
        """One verification for a blocked address, within `verifications_per_second` (token bucket)."""
        rate = float(self.policy.verifications_per_second)
        now = time.monotonic()
        tokens, last = self._budget.get(ip) or (rate, now)
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._budget.set(ip, (tokens, now))
            return False
        self._budget.set(ip, (tokens - 1.0, now))
        return True

    def refund(self, ip: str) -> None:
        """Give back the verification of a token that proved valid: the budget is there to bound
        the work failing tokens cause, and valid users behind the address must not starve it."""
        entry = self._budget.get(ip)
        if entry is not None:
            self._budget.set(ip, (min(float(self.policy.verifications_per_second), entry[0] + 1.0), entry[1]))

    def refusal(self, retry_after: int, detail: str | None = None) -> TooManyRequests:
        """The 429 for a blocked address (reason per scope), with Retry-After."""
        return self._refusal(
            None,
            detail or "too many failed verifications from this address; retry later",
            headers={"Retry-After": str(max(1, retry_after))},
        )

    async def check(self, ip: str) -> None:
        """Raise the scope's 429 when `ip` is blocked."""
        left = await self.blocked(ip)
        if left is not None:
            raise self.refusal(left)
