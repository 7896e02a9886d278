"""JWKS cache: asymmetric verification keys fetched off the request path.

    start()            first fetch (never raises; a failure is logged and `ready` stays False)
    background task    refetch every `refresh_seconds`
    request_refresh()  called by the verifier on an unknown kid; schedules a fetch unless one ran
                       within `cooldown_seconds` (so a flood of made-up kids costs one fetch per
                       cool-down, not one per request) and returns at once
    await_refresh()    the auth stage then waits (bounded) for that fetch and verifies once more:
                       a key the IdP published since the last fetch works on first sight
    keys               kid -> VerifyKey, replaced atomically; the last good set is kept when a
                       fetch fails, times out, or returns garbage or no usable key

Redirects are not followed and the document size is capped: the JWKS host is trusted for keys,
not for pointing us elsewhere or exhausting memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from gateway.auth.keys import KeyRejected, VerifyKey, load_jwks

log = logging.getLogger("gateway.auth.jwks")

MAX_JWKS_BYTES = 256 * 1024


class JwksCache:
    """Key set of one JWKS URL, refreshed in the background; implements `keys.KeySource`."""

    def __init__(
        self,
        url: str,
        refresh_seconds: float = 300,
        cooldown_seconds: float = 30,
        http_timeout: float = 5.0,
        allowed_algorithms: Iterable[str] = frozenset(),
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.cooldown_seconds = cooldown_seconds
        self.http_timeout = http_timeout
        self.allowed_algorithms = frozenset(allowed_algorithms)
        self._client = client or httpx.AsyncClient(timeout=http_timeout, follow_redirects=False)
        self._own_client = client is None
        self._clock = clock
        self._keys: dict[str, VerifyKey] = {}
        self._raw: dict[str, Mapping[str, Any]] = {}
        self._last_attempt = -float("inf")
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[bool]] = set()
        self.fetches = 0
        self.last_error: str | None = None
        self.last_success: float | None = None

    @property
    def keys(self) -> Mapping[str, VerifyKey]:
        return self._keys

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    async def start(self) -> None:
        await self.refresh()
        if self._timer is None:
            self._timer = asyncio.create_task(self._run(), name="jwks-refresh")

    async def close(self) -> None:
        tasks = [t for t in (self._timer, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._timer = None
        if self._own_client:
            await self._client.aclose()

    def request_refresh(self) -> bool:
        """Schedule a fetch unless one started within the cool-down; True if scheduled."""
        if self._clock() - self._last_attempt < self.cooldown_seconds or self._pending:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._last_attempt = self._clock()  # claim the slot now, before the task runs
        task = loop.create_task(self.refresh(), name="jwks-refresh-on-demand")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def await_refresh(self) -> bool:
        """Wait for the on-demand fetch in flight, if any; True when it installed a new key set.

        The request that named an unknown kid waits for the fetch it caused instead of being
        refused for a key the IdP has just published. Bound the wait with `asyncio.timeout`:
        cancelling it never cancels the fetch, which other requests share. With nothing in flight
        (within the cool-down no fetch is scheduled) it returns False at once, so a flood of
        made-up kids waits for at most one fetch per cool-down."""
        pending = list(self._pending)
        if not pending:
            return False
        before = self._keys
        await asyncio.wait(pending)  # cancelling this wait leaves the fetch running
        # New or replaced key material (an unchanged key keeps its object across fetches).
        return any(before.get(kid) is not key for kid, key in self._keys.items())

    async def wait_idle(self) -> None:
        """Wait for on-demand fetches scheduled by request_refresh() (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def refresh(self) -> bool:
        """Fetch once; True when a new key set was installed. Never raises (except cancel)."""
        async with self._lock:
            self._last_attempt = self._clock()
            self.fetches += 1
            try:
                document = await self._fetch()
                keys, raw = load_jwks(document, self.allowed_algorithms, self._keys, self._raw)
                if not keys:
                    raise KeyRejected("no usable key in the set")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "jwks fetch from %s failed, keeping %d keys: %s",
                    self.url,
                    len(self._keys),
                    self.last_error,
                )
                return False
            self._keys, self._raw = keys, raw
            self.last_error = None
            self.last_success = time.time()
            return True

    async def _fetch(self) -> Any:
        async with (
            asyncio.timeout(self.http_timeout),  # a total deadline: httpx's is per read
            self._client.stream(
                "GET", self.url, headers={"Accept": "application/json"}, follow_redirects=False
            ) as resp,
        ):
            if resp.status_code != 200:
                raise KeyRejected(f"HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeyRejected(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(bytes(body))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()
