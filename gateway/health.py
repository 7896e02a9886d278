"""`/healthz` (alive) and `/readyz` (deep readiness, 503 with a per-check body when not ready)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from gateway.pipeline.base import Send

Check = Callable[[], Awaitable[tuple[bool, str]]]


async def tcp_check(url: str, timeout: float = 0.5) -> tuple[bool, str]:  # noqa: ASYNC109
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout)
    except (OSError, TimeoutError):
        return False, "unreachable"
    writer.close()
    return True, "ok"


class Readiness:
    """Runs the readiness checks, caching the answer for a moment so probes cost nothing."""

    def __init__(self, cache_seconds: float = 1.0) -> None:
        self.checks: dict[str, Check] = {}
        self.draining = False
        self._cache: tuple[float, int, bytes] | None = None
        self.cache_seconds = cache_seconds

    async def evaluate(self) -> tuple[int, bytes]:
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < self.cache_seconds and not self.draining:
            return self._cache[1], self._cache[2]
        names = list(self.checks)
        results = await asyncio.gather(*(self.checks[n]() for n in names), return_exceptions=True)
        body: dict[str, dict[str, object]] = {}
        ok = not self.draining
        for name, res in zip(names, results, strict=True):
            if isinstance(res, BaseException):
                good, detail = False, "check failed"
            else:
                good, detail = res
            ok = ok and good
            body[name] = {"ok": good, "detail": detail}
        if self.draining:
            body["draining"] = {"ok": False, "detail": "shutting down"}
        status = 200 if ok else 503
        payload = json.dumps({"status": "ready" if ok else "not_ready", "checks": body}).encode()
        self._cache = (now, status, payload)
        return status, payload


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
