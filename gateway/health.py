"""Liveness and readiness, for a replicated edge.

Readiness means "this replica can serve": its policy is loaded, it is not draining, and Redis is
reachable *only* where the policy makes Redis mandatory (rate limits with `on_storage_error:
closed`). The upstream and Redis are shared by every replica: if their outage made each replica
unready, one outage would take every replica out of the load balancer at once, and clients
would get the load balancer's error instead of the gateway's precise 502/504 or its degraded
(local) rate limiting. So the upstream is probed actively (an HTTP request with a timeout: a hung
upstream that still accepts connections is "timeout", not "ok"), reported in the admin detail and
as `gateway_upstream_up`, and never affects readiness.

Two audiences:
- the public listener answers `/healthz` and a minimal `/readyz` (`{"status":"ready"}` or 503
  `{"status":"not_ready"}`): no policy digest, route count or dependency state for strangers;
- the admin listener (`gateway/admin.py`) answers `/healthz` and `/readyz` with every check.

`BOARD` is what the admin listener of this process reports: the single worker (or, with several
workers, the supervisor) fills in the policy, draining and worker counts; `Prober` adds the
upstream and Redis probes from a thread of its own.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.pipeline.base import Send

log = logging.getLogger("gateway.health")
Check = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float | None = None
    at: float = 0.0  # time.time() of the probe


def probe_http(url: str, path: str, timeout: float) -> ProbeResult:
    """One HTTP GET with a total `timeout`: ok when the upstream answers below 500."""
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    started = time.perf_counter()
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "edge-gateway-probe", "Connection": "close"})
        resp = conn.getresponse()
        resp.read(65536)
        took = time.perf_counter() - started
        if resp.status >= 500:
            return ProbeResult(False, f"status {resp.status}", took, time.time())
        return ProbeResult(True, f"status {resp.status}", took, time.time())
    except TimeoutError:
        return ProbeResult(False, f"timeout: no answer within {timeout:g}s", None, time.time())
    except OSError as exc:
        return ProbeResult(False, f"unreachable: {type(exc).__name__}", None, time.time())
    except http.client.HTTPException as exc:
        return ProbeResult(False, f"bad answer: {type(exc).__name__}", None, time.time())
    finally:
        conn.close()


def probe_redis(url: str, timeout: float) -> ProbeResult:
    import redis

    started = time.perf_counter()
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        return ProbeResult(True, "ok", time.perf_counter() - started, time.time())
    except Exception as exc:  # any client error means "not reachable" here
        return ProbeResult(False, f"unreachable: {type(exc).__name__}", None, time.time())
    finally:
        client.close()


class HealthBoard:
    """What this process knows about its own readiness; read by the admin listener."""

    def __init__(self) -> None:
        self.started = time.time()
        self.policy: dict[str, Any] | None = None  # digest, routes, upstream url, redis_mandatory
        self.draining = False
        self.workers: tuple[int, int] | None = None  # alive, expected (supervisor only)
        self.redis_configured = False
        self.upstream: ProbeResult | None = None
        self.redis: ProbeResult | None = None
        # Checks only the serving process can answer (JWKS keys loaded); they count for readiness.
        self.extra: dict[str, Callable[[], tuple[bool, str]]] = {}

    def set_policy(self, policy: Any) -> None:
        rl = policy.sections.get("compiled.rate_limits")
        self.policy = {
            "digest": policy.digest, "routes": len(policy.routes), "upstream": policy.upstream.url,
            "redis_mandatory": getattr(rl, "on_storage_error", None) == "closed",
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        policy = self.policy
        summary = f"{policy['routes']} routes, digest {policy['digest']}" if policy else "not loaded"
        checks["policy"] = {"ok": policy is not None, "detail": summary}
        checks["draining"] = {"ok": not self.draining, "detail": "shutting down" if self.draining else "no"}
        if self.workers is not None:
            alive, expected = self.workers
            checks["workers"] = {"ok": alive > 0, "detail": f"{alive} of {expected} alive"}
        extra_ok = True
        for name, check in list(self.extra.items()):
            try:
                good, detail = check()
            except Exception:
                good, detail = False, "check failed"
            checks[name] = {"ok": good, "detail": detail}
            extra_ok = extra_ok and good
        mandatory = bool(policy and policy["redis_mandatory"])
        if self.redis_configured:
            r = self.redis
            checks["redis"] = {"ok": r.ok if r else None, "detail": r.detail if r else "not probed yet",
                               "affects_readiness": mandatory,
                               "why": "rate limits fail closed (on_storage_error: closed)" if mandatory
                               else "rate limits degrade to local counting; shared by every replica"}
        u = self.upstream
        checks["upstream"] = {"ok": u.ok if u else None, "detail": u.detail if u else "not probed yet",
                              "latency_ms": round(u.seconds * 1000, 1) if u and u.seconds is not None else None,
                              "affects_readiness": False,
                              "why": "shared by every replica; the gateway answers 502/504 itself"}
        ready = (policy is not None and not self.draining and extra_ok and (self.workers is None or self.workers[0] > 0)
                 and (not mandatory or bool(self.redis and self.redis.ok)))
        return ready, checks

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok", "pid": os.getpid(), "uptime_seconds": round(time.time() - self.started)}
        if self.workers is not None:
            out["workers"] = {"alive": self.workers[0], "expected": self.workers[1]}
        return out


BOARD = HealthBoard()


class Prober:
    """Probes the upstream (and Redis, when configured) every `interval` seconds in a daemon thread."""

    def __init__(self, board: HealthBoard, upstream_url: Callable[[], str], path: str, redis_url: str | None,
                 interval: float, timeout: float) -> None:
        self.board = board
        self.upstream_url = upstream_url
        self.path = path
        self.redis_url = redis_url
        self.interval = interval
        self.timeout = timeout
        board.redis_configured = bool(redis_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def probe_once(self) -> None:
        before = self.board.upstream
        self.board.upstream = probe_http(self.upstream_url(), self.path, self.timeout)
        if before is not None and before.ok != self.board.upstream.ok:
            log.warning("upstream probe: %s", self.board.upstream.detail)
        if self.redis_url:
            self.board.redis = probe_redis(self.redis_url, self.timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe_once()
            except Exception:
                log.exception("health probe failed")
            self._stop.wait(self.interval)


class Readiness:
    """The worker's own (public) readiness: policy loaded, not draining, Redis when mandatory."""

    def __init__(self, cache_seconds: float = 1.0) -> None:
        self.checks: dict[str, Check] = {}
        self._draining = False
        self._cache: tuple[float, bool] | None = None
        self.cache_seconds = cache_seconds

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        BOARD.draining = value  # the admin listener of this process reports it too

    async def ready(self) -> bool:
        if self._draining:
            return False
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < self.cache_seconds:
            return self._cache[1]
        results = await asyncio.gather(*(c() for c in self.checks.values()), return_exceptions=True)
        ok = all(not isinstance(r, BaseException) and r[0] for r in results)
        self._cache = (now, ok)
        return ok

    async def evaluate(self) -> tuple[int, bytes]:
        """The public answer: status only."""
        if await self.ready():
            return 200, b'{"status":"ready"}'
        return 503, b'{"status":"not_ready"}'


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
