"""What the stage-over-ASGI tests share: a compiled route with only the fields a test names, the
scope a stage sees, a `receive` that answers given messages, the `receive`/`send` of a stage that
must neither read the body nor answer itself, and a scripted rate limiter."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from gateway.context import RequestContext
from gateway.errors import TooManyWebhookFailures
from gateway.policy.compiled import CompiledRoute
from gateway.policy.router import PathTemplate
from gateway.ratelimit.bruteforce import BruteForceGuard
from gateway.ratelimit.limiter import Decision


def stage_route(id: str = "r", methods: frozenset[str] | set[str] = frozenset({"GET"}), path: str = "/v1/x",
                upstream: str | None = None, auth: str = "jwt", **fields: Any) -> CompiledRoute:
    """A route of `path` (forwarded to `upstream`, by default the same path); one second for every
    timeout and no body allowed unless `fields` say otherwise."""
    settings: dict[str, Any] = {"max_body_bytes": 0, "connect_timeout": 1, "total_timeout": 1,
                                "body_read_timeout": 1, **fields}
    template = PathTemplate(path)
    return CompiledRoute(id=id, methods=frozenset(methods), template=template,
                         upstream_template=PathTemplate(upstream) if upstream else template, auth=auth, **settings)


def stage_scope(ctx: RequestContext, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
                preflight: bool = False, **extra: Any) -> dict[str, Any]:
    """The scope a stage sees once the request context exists; `extra` adds `gateway.*` keys
    (`has_body=True` sets `gateway.has_body`)."""
    scope: dict[str, Any] = {"type": "http", "method": method, "gateway": ctx, "headers": headers or []}
    if preflight:
        scope["gateway.preflight"] = True
    for key, value in extra.items():
        scope["gateway." + key] = value
    return scope


def feed(*messages: dict[str, Any]) -> Any:
    """A receive() answering the messages in order, then waiting for ever; `.left` holds what it
    has not handed out yet, `.calls` how often it was called."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        receive.calls += 1  # type: ignore[attr-defined]
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    receive.left = queue  # type: ignore[attr-defined]
    receive.calls = 0  # type: ignore[attr-defined]
    return receive


def chunk(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


class Downstream:
    """The app after a stage: the contexts it was reached with and the (scope, receive, send) it
    was handed, so a test sees that a passing stage handed on exactly what it got."""

    def __init__(self) -> None:
        self.reached: list[RequestContext] = []
        self.handed: list[tuple[Any, Any, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached.append(scope["gateway"])
        self.handed.append((scope, receive, send))


async def RECEIVE() -> dict[str, Any]:  # noqa: N802 (stands in for an ASGI callable)
    raise AssertionError("the stage reads no body")


async def SEND(message: MutableMapping[str, Any]) -> None:  # noqa: N802
    raise AssertionError("the stage sends nothing itself")


class ScriptedLimiter:
    """The RateLimiter interface the stages use: `hit` answers `decision` and records its arguments;
    `webhook_brute_force` answers `blocked` for every address and records the addresses asked."""

    def __init__(self, decision: Decision | None = None, blocked: int | None = None) -> None:
        self.decision = decision or Decision(allowed=True)
        self.hits: list[tuple[Any, ...]] = []
        self.webhook_brute_force = self
        self._blocked = blocked
        self.asked: list[str] = []

    async def hit(self, route_id: str, compiled: Any, **keys: Any) -> Decision:
        self.hits.append((route_id, compiled, keys))
        return self.decision

    async def blocked(self, ip: str) -> int | None:
        self.asked.append(ip)
        return self._blocked

    refusal = BruteForceGuard.refusal
    _refusal = TooManyWebhookFailures
