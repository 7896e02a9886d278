"""Where counters live, and what happens when that place is unreachable.

`Backend` holds the shared storage (Redis through `limits`, or process memory when no URL is
configured) and a per-replica memory fallback. Every shared call is bounded by a timeout; a
failure flips the backend to *degraded* and applies `on_storage_error`:

    local   serve from the per-replica memory store (limits divided by replicas)
    open    allow without counting
    closed  raise ServiceUnavailable("ratelimit.unavailable")

While degraded, Redis is not touched on the request path (a dead host would cost a timeout per
request); a background probe PINGs it at most once per second and clears the flag when it answers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.deadlines import sweep_for
from gateway.errors import ServiceUnavailable
from gateway.ratelimit.leanwindows import LeanWindows
from gateway.ratelimit.resp import RespClient, RespError

log = logging.getLogger("gateway.ratelimit")
T = TypeVar("T")
OPEN: Any = object()  # returned by Backend.run in `open` mode: caller allows without counting
SWEEP_CHUNK = 1000  # counters per synchronous step of the memory sweep (well under 1 ms of CPU)


class SweepingMemoryStorage(MemoryStorage):
    """`limits`' async MemoryStorage with a cheaper expiry sweep.

    Upstream re-schedules the sweep on every hit whenever the previous one has finished, and the
    sweep walks every key with one `asyncio.to_thread` hop per moving-window key: with thousands
    of users that is a constant background load (measured here: ~50 µs of CPU per request at
    5,000 keys, most of it thread hand-offs). Reads already expire lazily (`get` and the window
    arithmetic compare timestamps), so the sweep only frees memory: here it runs at most every
    `sweep_interval` seconds, inline, yielding to the loop every few hundred (windows) or
    `SWEEP_CHUNK` (counters) keys.
    """

    sweep_interval = 2.0
    _next_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides a private hook
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_interval
        await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]

    async def _MemoryStorage__expire_events(self) -> None:  # noqa: N802 - overrides a private hook
        try:
            now = time.time()
            # No await while a key is being edited, so no hit interleaves with it (same effect
            # as upstream's per-key lock).
            for n, key in enumerate(list(self.events)):
                events = self.events.get(key)
                if events:
                    cutoff = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)
                    self.events[key] = events[:cutoff]
                if not self.events.get(key):
                    self.events.pop(key, None)
                    self.locks.pop(key, None)
                if n % 500 == 499:
                    await asyncio.sleep(0)
            # Counters: a C-speed snapshot, then chunks with a yield between them (one pass over
            # 200,000 keys stopped the loop for ~115 ms of CPU). A counter hit again since the
            # snapshot has a new expiry and is kept.
            # (keys only: a list of (key, expiry) tuples would allocate one object per key and
            # set off the garbage collector).
            expirations = self.expirations
            snapshot = list(expirations)
            for start in range(0, len(snapshot), SWEEP_CHUNK):
                now = time.time()
                for key in snapshot[start : start + SWEEP_CHUNK]:
                    if expirations.get(key, now + 1.0) <= now:
                        self.storage.pop(key, None)
                        expirations.pop(key, None)
                        self.locks.pop(key, None)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            return


STORAGE_ERRORS: tuple[type[BaseException], ...] = (StorageError, RedisError, OSError, TimeoutError, RespError)
PROBE_INTERVAL = 1.0
POOL_SIZE = 128  # connections per process; one is held for one round trip (~100 µs)
_SCHEMES = {
    "redis": "async+redis",
    "rediss": "async+rediss",
    "redis+unix": "async+redis+unix",
    "unix": "async+redis+unix",
    "redis+sentinel": "async+redis+sentinel",
    "redis+cluster": "async+redis+cluster",
}


def resp_client_from_url(url: str | None, timeout: float) -> RespClient | None:
    """The lean client for a single Redis (Sentinel and Cluster stay on redis-py via `limits`)."""
    if url is None:
        return None
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if scheme not in ("redis", "rediss", "unix", "redis+unix"):
        return None
    return RespClient(f"{scheme}://{rest}", connect_timeout=timeout)


def storage_from_url(url: str | None, timeout: float = 0.25) -> Storage:
    """`limits` async storage for GATEWAY_REDIS_URL (`redis://` becomes `async+redis://`)."""
    if url is None:
        return SweepingMemoryStorage()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(
            f"GATEWAY_REDIS_URL: unsupported scheme {scheme!r} (redis://, rediss://, "
            "redis+sentinel://, redis+cluster://)"
        )
    uri = f"{_SCHEMES[scheme]}://{rest}"
    opts: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    extra: dict[str, Any] = {}
    if scheme == "redis+sentinel":
        # Counters must be read from the primary: a lagging replica would under-count.
        extra = {"use_replicas": False, "sentinel_kwargs": dict(opts)}
    elif scheme != "redis+cluster":
        # One pooled client per process. No client-side retries: one bounded attempt, then the
        # error policy decides. A blocking pool waits (within the timeout) for a free connection
        # instead of failing a burst with "too many connections" and degrading for nothing.
        pool_url = ("unix" if scheme.endswith("unix") else scheme) + "://" + rest
        pool = BlockingConnectionPool.from_url(
            pool_url, max_connections=POOL_SIZE, timeout=timeout, retry=Retry(NoBackoff(), 0), **opts
        )
        opts = {"connection_pool": pool}
    storage = storage_from_string(uri, implementation="redispy", wrap_exceptions=True, **extra, **opts)
    if not isinstance(storage, Storage):
        raise ValueError(f"GATEWAY_REDIS_URL: {scheme!r} is not an async storage")
    return storage


@dataclass(slots=True)
class Store:
    """One storage with its strategy objects; `local` marks the per-replica fallback."""

    storage: Storage
    local: bool
    strategies: dict[str, RateLimiter] = field(default_factory=dict)
    # Lean pipelined client to the same Redis, for the per-request fixed-window batch.
    resp: RespClient | None = None

    def __post_init__(self) -> None:
        # Windows on a single Redis: one lean round trip per hit (leanwindows.py) instead of two
        # through redis-py; the same `limits` strategies on top, so the same semantics.
        windows: Storage = self.storage
        if self.resp is not None and not self.local and type(self.storage).__name__ == "RedisStorage":
            windows = LeanWindows(self.resp, self.storage)
        self.strategies = {
            "moving-window": MovingWindowRateLimiter(windows),
            "sliding-window-counter": SlidingWindowCounterRateLimiter(windows),
            "fixed-window": FixedWindowRateLimiter(self.storage),
        }


class Backend:
    """Shared store + local fallback + degraded state; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        *,
        on_storage_error: Literal["local", "open", "closed"] = "local",
        timeout: float = 0.25,
        on_state_change: Callable[[bool], None] | None = None,
        resp: RespClient | None = None,
    ) -> None:
        self.shared = Store(storage, local=False, resp=resp)
        # An in-process store cannot hang or fail like a network one: no timeout, no fallback.
        self.in_process = isinstance(storage, MemoryStorage)
        self.local = Store(SweepingMemoryStorage(), local=True)
        self.mode = on_storage_error
        # A hit may take a few round trips; bound the whole operation, not only each socket call.
        self.budget = timeout * 2
        self.on_state_change = on_state_change
        self.degraded = False
        self._next_probe = 0.0
        self._probe: asyncio.Task[None] | None = None

    async def run(self, op: Callable[[Store], Awaitable[T]], *, never_closed: bool = False) -> T:
        """Run `op` on the shared store, else per the error policy (`OPEN` sentinel in open mode)."""
        if self.in_process:
            return await op(self.shared)
        if not self.degraded:
            # `asyncio.timeout(self.budget)`, on the loop's coarse deadlines (gateway/deadlines.py):
            # a loop timer per hit cost ~4 µs. On expiry the task is cancelled and the cancel
            # turned into a timeout, exactly as asyncio.timeout does.
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - always called from a request's task
                raise RuntimeError("Backend.run needs a running task")
            cancelling = task.cancelling()
            deadline = sweep_for(task.get_loop()).call_later(self.budget, task.cancel)
            try:
                return await op(self.shared)
            except asyncio.CancelledError:
                if not deadline.fired or task.uncancel() > cancelling:
                    raise
                self._set_degraded(True, TimeoutError(f"no answer within {self.budget:g} s"))
            except ServiceUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                # Any failure of the shared store is a storage error, not a 500: uvloop raises
                # RuntimeError when Redis dies mid-connect, which `limits` does not wrap.
                self._set_degraded(True, exc)
            finally:
                deadline.cancel()
        self._maybe_probe()
        if self.mode == "local":
            return await op(self.local)
        if self.mode == "open" or never_closed:
            return OPEN  # type: ignore[no-any-return]
        raise ServiceUnavailable("ratelimit.unavailable", "rate limiting is temporarily unavailable")

    def _set_degraded(self, degraded: bool, exc: BaseException | None = None) -> None:
        if degraded == self.degraded:
            return
        self.degraded = degraded
        if degraded:
            self._next_probe = time.monotonic() + PROBE_INTERVAL
            log.error(
                "rate-limit storage unreachable (%s: %s); on_storage_error=%s",
                type(exc).__name__,
                exc,
                self.mode,
            )
        else:
            log.warning("rate-limit storage reachable again; shared limiting resumed")
        if self.on_state_change is not None:
            try:
                self.on_state_change(degraded)
            except Exception:  # a broken metrics hook must not break limiting
                log.exception("on_state_change hook failed")

    def _maybe_probe(self) -> None:
        now = time.monotonic()
        if now < self._next_probe or (self._probe is not None and not self._probe.done()):
            return
        self._next_probe = now + PROBE_INTERVAL
        self._probe = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        ok = False
        with contextlib.suppress(Exception):
            # Connections pooled before the outage point at a dead server and would fail the
            # first requests after recovery (flipping us back to degraded): drop them first.
            await self._drop_pooled_connections()
            if self.shared.resp is not None:
                # A host that vanished without a reset never reports its connection lost; a
                # probe queued behind it would wait for ever.
                await self.shared.resp.disconnect()
            async with asyncio.timeout(self.budget):
                ok = await self.shared.storage.check() and (
                    self.shared.resp is None or await self.shared.resp.ping())
        if ok:
            self._set_degraded(False)

    async def _drop_pooled_connections(self) -> None:
        bridge = getattr(self.shared.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect(inuse_connections=False)

    async def aclose(self) -> None:
        if self.shared.resp is not None:
            await self.shared.resp.close()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, *STORAGE_ERRORS):
                await self._probe
        bridge = getattr(self.shared.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            with contextlib.suppress(*STORAGE_ERRORS):
                await client.aclose()
                # our own pool is not closed by the client that borrows it
                pool = getattr(client, "connection_pool", None)
                if pool is not None:
                    await pool.disconnect()
