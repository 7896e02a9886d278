"""Webhook routes: source address, signature, replay and duplicates — without losing a delivery.

A delivery's dedupe key is taken as "in progress" (SET NX, short TTL) before forwarding, promoted
to "done" only after the upstream answered 2xx, and released otherwise, so the sender's retry goes
through. A delivery already done is acknowledged (200, `webhook.duplicate`) and not forwarded; one
still in progress elsewhere gets 409 + Retry-After (a 200 there could lose it if the first attempt
then fails).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.context import RequestContext
from gateway.errors import Conflict, GatewayError
from gateway.pipeline.base import ASGIApp, Message, Receive, Scope, Send
from gateway.pipeline.bodylimit import read_body
from gateway.ratelimit import BruteForceGuard
from gateway.webhooks import CompiledWebhook, DedupeStore, dedupe_key

log = logging.getLogger("gateway.webhook")
# Schemes whose verification computes an HMAC over the request (counted: the CPU a forger buys).
HMAC_SCHEMES = frozenset({"hmac", "standard_webhooks", "kommo_revoked"})
# A forged or replayed delivery; a refused source address is not a verification and never counts.
COUNTED_FAILURES = frozenset({"bad_signature", "stale"})
Outcome = Callable[[str, str], None]


class WebhookStage:
    """Verifies `auth: webhook` routes and guards the upstream against replays."""

    def __init__(self, app: ASGIApp, store: Callable[[], DedupeStore], outcome: Outcome | None = None,
                 store_error: Callable[[str], None] | None = None,
                 guard: Callable[[], BruteForceGuard | None] | None = None,
                 event: Callable[[str, str], None] | None = None,
                 hmac_computed: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.store = store
        self.outcome = outcome or (lambda route, what: None)
        self.store_error = store_error or (lambda component: None)
        # Failed verifications per source address feed the `webhook` brute-force guard; its block
        # is enforced before the body is read (the address-limit stage, ahead of this one).
        self.guard = guard or (lambda: None)
        self.event = event or (lambda scope, what: None)
        self.hmac_computed = hmac_computed or (lambda route: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or route.auth != "webhook" or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        wh: CompiledWebhook = route.webhook
        try:
            wh.check_source(ctx.client_ip)
            body = await read_body(scope, receive)
            if wh.verifier.scheme in HMAC_SCHEMES:
                self.hmac_computed(route.id)
            delivery_id = wh.verifier.verify(path_params=ctx.path_params, headers=scope["headers"],
                                             query=scope["query_string"].decode("latin-1"), body=body,
                                             now=time.time())
        except GatewayError as err:
            what = err.reason.removeprefix("webhook.")
            if what in ("bad_signature", "stale", "source_denied"):
                self.outcome(route.id, what)
            if what in COUNTED_FAILURES:
                guard = self.guard()
                if guard is not None and await guard.record_failure(ctx.client_ip) is not None:
                    self.event("webhook", "block")
            raise
        if wh.dedupe is None:
            await self._forward(scope, receive, send, route.id)
            return
        store = self.store()
        key = dedupe_key(route.id, delivery_id, body)
        try:
            state = await store.acquire(key, wh.dedupe.in_progress_seconds)
        except GatewayError:
            self.store_error("webhook_dedupe")  # fail closed (503): the sender retries later
            raise
        if state == "done":
            self.outcome(route.id, "duplicate")
            await _duplicate(send, ctx)
            return
        if state == "in_progress":
            raise Conflict("webhook.in_progress", "this delivery is being processed; retry later",
                           headers={"Retry-After": "2"})
        status = 0
        try:
            status = await self._forward(scope, receive, send, route.id)
        finally:
            # Shielded: a client disconnect must not leave the key locked until its TTL.
            op = store.complete(key, wh.dedupe.window_seconds) if 200 <= status < 300 else store.release(key)
            if not await asyncio.shield(_settle(op, ctx)):
                self.store_error("webhook_dedupe")

    async def _forward(self, scope: Scope, receive: Receive, send: Send, route_id: str) -> int:
        status = 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except GatewayError:
            self.outcome(route_id, "upstream_failed")
            raise
        self.outcome(route_id, "accepted" if 200 <= status < 300 else "upstream_failed")
        return status


async def _settle(op: Awaitable[object], ctx: RequestContext) -> bool:
    try:
        await op
    except GatewayError as err:
        # The upstream already answered; turning that into a 503 would make the sender retry a
        # processed delivery. Logged and counted instead.
        log.error("dedupe store: %s", err.reason, extra={"request_id": ctx.request_id})
        return False
    return True


async def _duplicate(send: Send, ctx: RequestContext) -> None:
    ctx.status = 200
    ctx.decision = "duplicate"
    ctx.reason = "webhook.duplicate"
    body = json.dumps({"status": "duplicate", "reason": "webhook.duplicate",
                       "request_id": ctx.request_id}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-request-id", ctx.request_id.encode()), *ctx.response_headers]})
    await send({"type": "http.response.body", "body": body})
