"""Outermost stage: request id, timing, load shedding, and rendering every refusal.

Stages deny by raising a GatewayError; this is the one place that turns it into a problem+json
response, so the reason id is the same everywhere. Observers (metrics, audit) run in `finally`
for every request, answered or not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from os import urandom

from gateway.context import RequestContext
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header, send_problem
from gateway.pipeline.bodylimit import ClientDisconnected

log = logging.getLogger("gateway.request")
_GOOD_ID = re.compile(rb"^[A-Za-z0-9._:-]{8,128}$")

Observer = Callable[[Scope, RequestContext], None]


class InFlight:
    """Requests being served by this process; shared by every pipeline a reload builds."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class RequestIdStage:
    """Creates the request context; sheds load over the in-flight cap; renders refusals."""

    def __init__(self, app: ASGIApp, policy: Callable[[], object], observers: list[Observer],
                 in_flight: InFlight | None = None) -> None:
        self.app = app
        self.policy = policy
        self.observers = observers
        self.in_flight = in_flight or InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = header(scope, b"x-request-id")
        rid = incoming.decode() if incoming is not None and _GOOD_ID.match(incoming) else urandom(12).hex()
        client = scope.get("client")
        ctx = RequestContext(rid, client[0] if client else "0.0.0.0", self.policy())  # type: ignore[arg-type]
        scope["gateway"] = ctx
        in_flight = self.in_flight
        in_flight.n += 1
        try:
            if in_flight.n > ctx.policy.limits.max_in_flight:
                raise ServiceUnavailable(
                    "gateway.overloaded", "too many requests in flight; retry shortly",
                    headers={"Retry-After": str(ctx.policy.limits.shed_retry_after)},
                )
            await self.app(scope, receive, send)
        except GatewayError as err:
            await self._refuse(scope, ctx, err, send)
        except ClientDisconnected:
            ctx.status = 499
            ctx.decision = "client_closed"
            ctx.reason = "request.client_closed"
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid})
            await self._refuse(scope, ctx, GatewayError(detail="internal error"), send)
        finally:
            in_flight.n -= 1
            for observe in self.observers:
                try:
                    observe(scope, ctx)
                except Exception:  # an observer must never break a request
                    log.exception("observer failed", extra={"request_id": rid})

    async def _refuse(self, scope: Scope, ctx: RequestContext, err: GatewayError, send: Send) -> None:
        ctx.decision = "deny" if err.status < 500 or err.status == 503 else "error"
        ctx.reason = err.reason
        if scope.get("gateway.response_started"):
            # Headers already went out (upstream broke mid-stream): nothing to render; the
            # server closes the connection so the client sees a truncated response.
            ctx.status = ctx.status or 502
            raise err
        ctx.status = err.status
        await send_problem(send, err, ctx.request_id, ctx.response_headers, head=scope["method"] == "HEAD")
