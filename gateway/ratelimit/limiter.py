"""Per-route rate limiting with `limits` strategies, answered with IETF RateLimit headers.

Headers follow draft-ietf-httpapi-ratelimit-headers (structured-field form):

    RateLimit-Policy: "orders-1s";q=10;w=1, "orders-900s";q=300;w=900
    RateLimit: "orders-1s";r=3;t=1          (the most restrictive limit right now)
    Retry-After: 1                          (denials only)

Every limit of a route is hit on every request (a denial by one does not skip the others).
Shadow policies (`enforce: false`) never deny and send no headers; `Decision.shadow_denied`
tells the caller to count the would-be denial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from limits.aio.storage import MemoryStorage

from gateway.auth.claims import claim_text
from gateway.errors import TooManyRequests
from gateway.ratelimit.backend import OPEN, Backend, Store, resp_client_from_url, storage_from_url
from gateway.ratelimit.bruteforce import BruteForceGuard
from gateway.ratelimit.memory import BoundedMap, BoundedMemoryStorage
from gateway.ratelimit.policy import CompiledRateLimit, RateLimitPolicy, RateLimitSettings, compile_policy
from gateway.ratelimit.resp import RespError


@dataclass(slots=True)
class Decision:
    """Outcome of one `RateLimiter.hit`; `headers` go on the response whether allowed or not."""

    allowed: bool
    shadow_denied: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    retry_after: int = 0
    local: bool = False  # decided by the per-replica fallback (Redis unreachable)

    def error(self, route_id: str | None = None) -> TooManyRequests:
        """The 429 to raise for a denial, carrying RateLimit headers and Retry-After."""
        headers = {_TITLES.get(k, k.decode()): v.decode() for k, v in self.headers}
        return TooManyRequests(
            "ratelimit.exceeded", "rate limit exceeded", headers=headers, route_id=route_id
        )

    def raise_if_denied(self, route_id: str | None = None) -> None:
        if not self.allowed:
            raise self.error(route_id)


_TITLES = {b"ratelimit-policy": "RateLimit-Policy", b"ratelimit": "RateLimit", b"retry-after": "Retry-After"}


def _esc(value: str) -> str:
    # `limits` joins identifiers with "/": escape it so "a/b" + "c" never equals "a" + "b/c".
    return value.replace("%", "%25").replace("/", "%2F") if ("/" in value or "%" in value) else value


def identifiers(
    route_id: str, strategy: str, key: tuple[str, ...], ip: str, sub: str | None, org: str | None
) -> tuple[str, ...]:
    """Storage key parts; a missing `sub`/`org` falls back to the IP (tagged so it can't collide).

    The strategy is part of the key: each strategy stores a different Redis type, and a policy
    reload that changes strategy must not hit WRONGTYPE on the old keys.
    """
    out = ["rl", _esc(route_id), strategy]
    for part in key:
        if part == "route":
            out.append("route")
        elif part == "ip":
            out.append("ip=" + _esc(ip))
        else:
            value = sub if part == "sub" else org
            out.append(f"{part}={_esc(value)}" if value else f"{part}@ip={_esc(ip)}")
    return tuple(out)


def claim_values(
    claims: dict[str, Any] | None, org_claim_path: str = "org_id"
) -> tuple[str | None, str | None]:
    """(sub, org) as strings from verified claims; the org claim path is dotted (`app_metadata.org_id`)."""
    if not claims:
        return None, None
    org = claim_text(claims, org_claim_path)  # the reader tenant binding uses
    sub = claims.get("sub")
    return (str(sub) if sub not in (None, "") else None), org


class RateLimiter:
    """Built once per process; `hit()` per request. Also owns the brute-force guard (same storage)."""

    def __init__(self, settings: RateLimitSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        #: `hook(store, n)`: n per-key entries evicted from an in-process table (drive a counter).
        self.on_evict: Callable[[str, int], None] | None = None
        max_keys = settings.max_tracked_keys
        _bound_memory(backend, max_keys, self._evicted)
        self.brute_force = BruteForceGuard(backend, settings.brute_force, settings.replicas,
                                           max_keys=max_keys, on_evict=self._evicted)
        self.webhook_brute_force = BruteForceGuard(
            backend, settings.webhook_brute_force, settings.replicas, scope="webhook",
            max_keys=max_keys, on_evict=self._evicted)
        # Last shared (Redis) count seen per limit key: (remaining, wall-clock reset). While Redis
        # is unreachable, a key's local allowance starts from its share of what was left, so a
        # stalled Redis never hands out a fresh allowance to a client that had spent its own.
        # Keyed by (identifiers, item index): no key formatting on the request path.
        self._known: BoundedMap[tuple[tuple[str, ...], int], tuple[int, float]] = BoundedMap(
            max_keys, lambda n: self._evicted("known", n))
        self._seeded: BoundedMap[tuple[tuple[str, ...], int], int] = BoundedMap(
            max_keys, lambda n: self._evicted("seeded", n))
        self._episode = 0
        self._in_fallback = False
        self.default = self.compile(settings.default, "default") if settings.default else None

    def _evicted(self, store: str, n: int) -> None:
        if self.on_evict is not None:
            self.on_evict(store, n)

    @classmethod
    def from_settings(
        cls,
        settings: RateLimitSettings,
        storage_url: str | None,
        *,
        on_state_change: Callable[[bool], None] | None = None,
    ) -> RateLimiter:
        """Memory storage when `storage_url` is None, else Redis/Sentinel/Cluster via `limits`."""
        storage = (BoundedMemoryStorage(settings.max_tracked_keys) if storage_url is None
                   else storage_from_url(storage_url, settings.storage_timeout))
        backend = Backend(
            storage,
            on_storage_error=settings.on_storage_error,
            timeout=settings.storage_timeout,
            on_state_change=on_state_change,
            resp=resp_client_from_url(storage_url, settings.storage_timeout),
        )
        return cls(settings, backend)

    def compile(self, policy: RateLimitPolicy, name: str) -> CompiledRateLimit:
        return compile_policy(policy, name, self.settings.replicas)

    def for_route(self, route_id: str, policy: RateLimitPolicy | None) -> CompiledRateLimit | None:
        """The route's compiled policy, or the settings default (None: the route is not limited)."""
        return self.compile(policy, route_id) if policy is not None else self.default

    @property
    def degraded(self) -> bool:
        return self.backend.degraded

    @property
    def on_state_change(self) -> Callable[[bool], None] | None:
        """`hook(degraded)` is called once per state change (drive a gauge from it; we log too)."""
        return self.backend.on_state_change

    @on_state_change.setter
    def on_state_change(self, hook: Callable[[bool], None] | None) -> None:
        self.backend.on_state_change = hook

    async def hit(
        self,
        route_id: str,
        policy: CompiledRateLimit,
        *,
        ip: str,
        sub: str | None = None,
        org: str | None = None,
    ) -> Decision:
        ids = identifiers(route_id, policy.strategy, policy.key, ip, sub, org)
        fixed = policy.strategy == "fixed-window"

        async def op(store: Store) -> Decision:
            strategy = store.strategies[policy.strategy]
            items = policy.local_items if store.local else policy.items
            if store.local and not self.backend.in_process:
                await self._seed_local(store, policy, ids)
            worst: tuple[Any, ...] = ()
            batched = await _fixed_window_batch(store, items, policy.resp_templates, ids) if fixed else None
            for idx, item in enumerate(items):
                if batched is not None:
                    count, ttl = batched[idx]
                    ok, remaining = count <= item.amount, max(0, item.amount - count)
                    reset = time.time() + max(ttl, 0)
                elif fixed:
                    # FixedWindowRateLimiter.hit + get_window_stats is 3 round trips; incr already
                    # returns the count, so 2 suffice (same keys, same semantics).
                    key = item.key_for(*ids)
                    count = await store.storage.incr(key, item.get_expiry())
                    ok, remaining = count <= item.amount, max(0, item.amount - count)
                    reset = await store.storage.get_expiry(key)
                else:
                    ok = await strategy.hit(item, *ids)
                    reset, remaining = await strategy.get_window_stats(item, *ids)
                if not store.local and not self.backend.in_process:
                    self._known.set((ids, idx), (remaining, reset))
                t = max(0, math.ceil(reset - time.time()))
                rank = (0, -remaining, t, idx, remaining) if ok else (1, t, 0, idx, 0)
                worst = max(worst, rank) if worst else rank
            denied = worst[0] == 1
            if not policy.enforce:
                return Decision(allowed=True, shadow_denied=denied, local=store.local)
            t = worst[1] if denied else worst[2]
            name = policy.item_names[worst[3]]
            headers = [
                (b"ratelimit-policy", policy.local_policy_header if store.local else policy.policy_header),
                (b"ratelimit", b'"%s";r=%d;t=%d' % (name, worst[4], t)),
            ]
            retry = max(1, t) if denied else 0
            if denied:
                headers.append((b"retry-after", b"%d" % retry))
            return Decision(allowed=not denied, headers=headers, retry_after=retry, local=store.local)

        result = await self.backend.run(op, never_closed=not policy.enforce)
        if result is OPEN:
            return Decision(allowed=True)
        self._in_fallback = result.local
        return result

    async def _seed_local(self, store: Store, policy: CompiledRateLimit, ids: tuple[str, ...]) -> None:
        """First local decision for a key in this outage: spend what Redis said was already spent.

        Each replica takes `remaining // replicas` of what it last saw left, so the replicas
        together hand out at most what was left when Redis stopped answering.
        """
        if not self._in_fallback:
            self._in_fallback = True
            self._episode += 1
        strategy = store.strategies[policy.strategy]
        now = time.time()
        for idx, local in enumerate(policy.local_items):
            key = (ids, idx)
            if self._seeded.get(key) == self._episode:
                continue
            self._seeded.set(key, self._episode)
            known = self._known.get(key)
            if known is None or known[1] <= now:
                continue
            spent = local.amount - min(local.amount, known[0] // self.settings.replicas)
            if spent > 0:
                await strategy.hit(local, *ids, cost=spent)

    async def aclose(self) -> None:
        await self.backend.aclose()


def _bound_memory(backend: Backend, max_keys: int, hook: Callable[[str, int], None]) -> None:
    """Cap the in-process stores: the only store without Redis, and the per-replica fallback."""
    shared = backend.shared.storage
    if isinstance(shared, BoundedMemoryStorage):
        shared.max_keys = max_keys
        shared.on_evict = lambda n: hook("memory", n)
    if not isinstance(backend.local.storage, BoundedMemoryStorage):
        backend.local = Store(BoundedMemoryStorage(max_keys), local=True)
    local = backend.local.storage
    if isinstance(local, BoundedMemoryStorage):
        local.max_keys = max_keys
        local.on_evict = lambda n: hook("fallback", n)


async def _fixed_window_batch(store: Store, items: Any, templates: tuple[tuple[str, str, bytes], ...],
                              ids: tuple[str, ...]) -> list[tuple[int, int]] | None:
    """Every fixed-window item of a request in one step.

    Redis: ONE round trip, MULTI; SET key 0 EX w NX; INCR key; TTL key; ... EXEC — the same keys
    (with the `limits` prefix) and semantics as `limits`' incr-with-expiry script, which costs two
    round trips per item with the TTL read. In process: the same counter and expiry tables that
    `limits`' MemoryStorage.incr/get_expiry use, updated without the per-call lock and awaits
    (nothing else can run between two statements here). None for other stores (cluster): the
    caller goes item by item."""
    storage = store.storage
    if isinstance(storage, MemoryStorage):
        # Keeps expired counters from piling up (SweepingMemoryStorage runs it every few seconds).
        await storage._MemoryStorage__schedule_expiry()  # type: ignore[attr-defined]
        out = _fixed_window_memory(storage, items, ids)
        if isinstance(storage, BoundedMemoryStorage):
            storage.make_room()
        return out
    if store.local or type(storage).__name__ != "RedisStorage":
        return None
    bridge = storage.bridge  # type: ignore[attr-defined]
    if store.resp is not None:
        # ~12 us of CPU per batch against ~107 us through redis-py (tests/ratelimit/bench_resp.py),
        # less again with each item's three commands filled into a template in one format.
        payload = fixed_window_payload(bridge.key_prefix, templates, ids)
        results = await store.resp.execute_encoded(payload, 3 * len(items))
        for r in results:
            if isinstance(r, RespError):  # e.g. WRONGTYPE: a storage error, as redis-py raises it
                raise r
    else:
        pipe = bridge.get_connection().pipeline(transaction=True)
        for item in items:
            key = bridge.prefixed_key(item.key_for(*ids))
            pipe.set(key, 0, ex=item.get_expiry(), nx=True)
            pipe.incr(key)
            pipe.ttl(key)
        results = await pipe.execute()
    return [(int(results[3 * i + 1]), int(results[3 * i + 2])) for i in range(len(items))]



def fixed_window_payload(prefix: str, templates: tuple[tuple[str, str, bytes], ...], ids: tuple[str, ...]) -> bytes:
    """The RESP bytes of `SET key 0 EX <window> NX; INCR key; TTL key` for each item, from the
    templates compiled with the policy (`CompiledRateLimit.resp_templates`)."""
    joined = "/".join(ids)
    out = []
    for head, tail, tmpl in templates:
        key = f"{prefix}:{head}{joined}{tail}".encode()
        n = len(key)
        out.append(tmpl % (n, key, n, key, n, key))
    return b"".join(out)


def _fixed_window_memory(storage: MemoryStorage, items: Any, ids: tuple[str, ...]) -> list[tuple[int, int]]:
    now = time.time()
    counts, expirations = storage.storage, storage.expirations
    # Bounded store: a counter in use moves to the young end, so a flood of new keys evicts idle
    # counters first, not the busy one an attacker would like to see reset.
    touch = getattr(expirations, "move_to_end", None)
    out = []
    for item in items:
        key = item.key_for(*ids)
        expiry = expirations.get(key)
        if expiry is None or expiry <= now:
            counts[key] = 0
            expiry = expirations[key] = now + item.get_expiry()
        elif touch is not None:
            touch(key)
        counts[key] += 1
        out.append((counts[key], math.ceil(expiry - now)))
    return out
