"""The client side of the wire: uvicorn's httptools protocol with the gateway's connection hygiene.

A subclass, not a fork: the HTTP parsing stays uvicorn's. What it adds, per worker:
- a deadline for the request head (`limits.header_timeout`), from the connection's first byte or
  from the first byte of a keep-alive request: a client that sends nothing, or half a head, is
  closed (408 problem+json when a partial head arrived).
- an idle keep-alive connection closes after `limits.keepalive_timeout` (uvicorn's timer, with the
  value of the live policy when the connection opened).
- a cap on open client connections (`limits.max_connections`): at the cap, the connection idle
  in keep-alive the longest is closed to make room (as nginx reuses keep-alive connections when
  it runs out); with none idle, the new connection is closed at once.
- the parser's own refusals (malformed HTTP) answered as problem+json with a request id, not
  uvicorn's `400 text/plain`, and audited like the pipeline's denials (the record has the
  response's request id, reason `request.invalid`, path `(unparsed)`, the method only once the
  parser has read it and the target after it, and the peer's address: no X-Forwarded-For is read
  from a request that did not parse, so behind a proxy it is the proxy's). Each also gets its
  access-log line (no route, no user agent), and uvicorn's warning per malformed request is
  dropped: a client cannot fill the server log with them.
- every refusal made here is counted in `gateway_protocol_refusals_total{reason}` (the pipeline's
  own refusals, Host, framing and upgrades included, are in `gateway_denials_total`).
- protocol upgrades are not taken over by the server: the request reaches the pipeline as HTTP,
  which refuses it with a 4xx problem+json (and no warning per request in the server log).
- `scope["gateway.connection"]` (this protocol): `drop(scope)` lets the forwarder end a response
  that broke mid-body (the client sees the truncation) without an error-level traceback for an
  upstream's misbehaviour; `watch(cancel)` registers what to cancel when the client goes away, so a
  lost connection aborts the upstream exchange at once, with no task or timer per request.
- the head deadline and the keep-alive wait are coarse deadlines (`gateway/deadlines.py`: one sweep
  timer per worker, not a loop timer per request).
- drain: `drain()` closes idle keep-alive connections; responses already carry `Connection: close`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from os import urandom
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from gateway.audit.records import request_record
from gateway.context import RequestContext
from gateway.deadlines import Deadline, sweep_for
from gateway.errors import BadRequest, GatewayError, HeaderTimeout

# Idle keep-alive connections older than this are closed when the drain starts; younger ones get
# this long to send their next request (answered with `Connection: close`).
DRAIN_IDLE_GRACE = 1.0


def problem_bytes(err: GatewayError, rid: str | None = None) -> bytes:
    rid = rid or urandom(12).hex()
    body = err.body(rid)
    return b"".join([
        STATUS_LINE[err.status], b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body), b"x-request-id: ", rid.encode(), b"\r\n",
        b"cache-control: no-store\r\nconnection: close\r\n\r\n", body,
    ])


class HeadHold:
    """One response's head held back so that it leaves with the first piece of the body: one
    send to the client instead of two (uvloop writes each `transport.write` at once).

    Stands in for the client transport of one request cycle. uvicorn writes a response head in
    one `write` while it handles `http.response.start`: that write is kept. The next write (the
    first body piece) sends both with one `writelines`, and the cycle gets its transport back.
    `release()` (on leaving the `with` block, however it is left) writes a head still held, so
    that whatever happens the client receives exactly the bytes it would have, in the same order.
    Only for a response whose first piece is already at hand: a stream's head must not wait for
    its body.
    """

    __slots__ = ("_cycle", "_real", "_head")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self._real = cycle.transport
        self._head: bytes | None = None
        cycle.transport = self  # type: ignore[assignment]

    def write(self, data: bytes) -> None:
        head = self._head
        if head is None:
            self._head = data
            return
        self._cycle.transport = self._real
        self._head = None
        self._real.writelines((head, data))

    def release(self) -> None:
        if self._cycle.transport is self:
            self._cycle.transport = self._real
            if self._head is not None:
                head, self._head = self._head, None
                self._real.write(head)

    def __getattr__(self, name: str) -> Any:  # close(), is_closing(), ...: the real transport's
        return getattr(self._real, name)

    def __enter__(self) -> HeadHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_head(scope: Any) -> AbstractContextManager[object]:
    """`with hold_head(scope): <send the head and the first piece>`: a `HeadHold` on the client
    connection of `scope`; nothing outside a live server (tests that call the app directly,
    `gateway explain`)."""
    cycle = scope.get("gateway.cycle")
    return nullcontext() if cycle is None else HeadHold(cycle)


def _drop(cycle: RequestResponseCycle) -> None:
    cycle.disconnected = True  # uvicorn: nothing more to send, nothing to log
    cycle.keep_alive = False
    cycle.transport.close()


class GatewayProtocol(HttpToolsProtocol):
    """Per-connection protocol; `gateway` (the app, for its live policy) is set by `protocol_for`."""

    gateway: Any = None
    # This worker's connections idling in keep-alive, oldest first (set by `protocol_for`).
    idle: dict[GatewayProtocol, None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sweep = sweep_for(self.loop)
        # One of each per connection, re-armed per request: no allocation (and GC work) per request.
        self._head_deadline = sweep.deadline(self._head_timeout)
        self._keepalive_deadline = sweep.deadline(self.timeout_keep_alive_handler)
        self.head_timer: Deadline | None = None
        self.watching: Any = None  # what the forwarder cancels if this connection is lost
        self.in_head = False
        self.head_started: float | None = None
        self.idle_since = self.loop.time()
        limits = self._limits()
        if limits is not None:
            self.timeout_keep_alive = limits.keepalive_timeout

    def _limits(self) -> Any:
        gw = self.gateway
        return gw.policy.limits if gw is not None else None

    # --- connections ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self._limits()
        if limits is not None and len(self.connections) >= limits.max_connections and not self._reclaim():
            self.transport = transport
            transport.close()
            self._count("connection.limit")
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def _reclaim(self) -> bool:
        """Close the longest-idle keep-alive connection; False when none is idle. A client that
        sends on it at this very moment sees a reset (the race any idle close has); under
        connection pressure that beats refusing a new client while idle ones hold the slots."""
        idle = self.idle
        while idle:
            conn = next(iter(idle))
            del idle[conn]
            if not conn.transport.is_closing():
                conn.transport.close()
                self._count("connection.reclaimed")
                return True
        return False

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this whenever bytes arrive and when a response completes: not idle now.
        # (uvicorn's own body inlined: it runs for every read.) A connection is in `idle` only
        # while its keep-alive wait is armed.
        task = self.timeout_keep_alive_task
        if task is not None:
            task.cancel()
            self.timeout_keep_alive_task = None
            if self.idle is not None:
                self.idle.pop(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.pop(self, None)
        self._cancel_head_timer()
        watching = self.watching
        if watching is not None:
            self.watching = None
            watching.fire()
        if self.flow is None:  # refused in connection_made: uvicorn never set it up
            self.connections.discard(self)
            return
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        limits = self._limits()
        if self.head_timer is None and limits is not None:
            self.head_timer = self._head_deadline.later(limits.header_timeout)

    def _count(self, reason: str) -> None:
        metrics = getattr(self.gateway, "metrics", None)
        if metrics is not None:
            metrics.protocol_refused(reason)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.in_head and not busy:
            self.transport.write(problem_bytes(HeaderTimeout(detail="the request head did not arrive in time")))
        if not busy or self.in_head:
            self.transport.close()
            self._count(HeaderTimeout.reason)

    # --- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_started = time.perf_counter()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope = cycle.scope
        scope["gateway.cycle"] = cycle  # type: ignore[typeddict-unknown-key]
        scope["gateway.connection"] = self  # type: ignore[typeddict-unknown-key]
        super()._start_asgi_task(cycle, app)

    @staticmethod
    def drop(scope: Any) -> None:
        """End the response of `scope`'s request by closing the connection (the client sees it
        truncated), with nothing more sent or logged for it."""
        _drop(scope["gateway.cycle"])

    def watch(self, cancel: Any) -> None:
        """Fire `cancel` (an object with `fire()`) if the connection is lost before `unwatch`."""
        self.watching = cancel

    def unwatch(self, cancel: Any) -> None:
        if self.watching is cancel:
            self.watching = None

    def on_response_complete(self) -> None:
        # uvicorn's, except that the keep-alive wait is a coarse deadline, not a loop timer.
        self.idle_since = self.loop.time()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.timeout_keep_alive_task = self._keepalive_deadline.later(  # type: ignore[assignment]
            self.timeout_keep_alive)
        if self.idle is not None:
            self.idle[self] = None  # waiting for the next request: reclaimable at the cap

    def send_400_response(self, msg: str) -> None:
        err = BadRequest("request.invalid", "the request is not valid HTTP/1.1")
        rid = urandom(12).hex()
        self.transport.write(problem_bytes(err, rid))
        self.transport.close()
        self._count(err.reason)
        method = self._parsed_method()
        self._audit(rid, err, method)
        self._access(rid, err, method)

    def _parsed_method(self) -> str | None:
        """The refused request's method, once confirmed. llhttp reports method 0 (DELETE) before it
        has read any, so a method counts only once the target after it has arrived (uvicorn's
        `on_url`, which llhttp calls with the complete target and `on_message_begin` resets)."""
        if not getattr(self, "url", None):
            return None
        try:
            return str(self.parser.get_method().decode("ascii"))  # only a method httptools knows
        except Exception:
            return None

    def _audit(self, rid: str, err: GatewayError, method: str | None) -> None:
        """The audit record of a refusal the pipeline never saw (no route, no identity, no path)."""
        audit = getattr(self.gateway, "audit", None)
        if audit is None:
            return
        started = self.head_started
        audit.submit(request_record(
            request_id=rid, sub=None, org=None, client_ip=self.client[0] if self.client else "-",
            method=method or "-", route_id=None, path="(unparsed)", status=err.status, decision="deny",
            reason=err.reason,
            duration_ms=(time.perf_counter() - started) * 1000 if started is not None else 0.0,
        ))

    def _access(self, rid: str, err: GatewayError, method: str | None) -> None:
        """The access-log line of the same refusal: one line per request, parsed or not (no route,
        no user agent: nothing of an unparsed head is logged)."""
        access_log = getattr(self.gateway, "access_log", None)
        if access_log is None or not access_log.enabled:
            return
        ctx = RequestContext(rid, self.client[0] if self.client else "-", self.gateway.policy)
        if self.head_started is not None:
            ctx.started = self.head_started
        ctx.status, ctx.decision, ctx.reason = err.status, "deny", err.reason
        access_log({"headers": [], "method": method}, ctx)

    def _unsupported_upgrade_warning(self) -> None:
        pass  # the pipeline refuses the upgrade (request.upgrade_not_allowed) and records it

    # --- drain ---------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """uvicorn's shutdown closes a connection with no request yet at once, resetting one whose
        request bytes are in flight; treat it as the drain does (uvicorn waits for it to close)."""
        self.drain()

    def drain(self) -> None:
        """Draining started: close this connection now if it sits idle, else soon after its next
        response (which carries `Connection: close`)."""
        self.timeout_keep_alive = min(self.timeout_keep_alive, int(DRAIN_IDLE_GRACE))
        if self.transport is None or self.transport.is_closing() or self.in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        idle_for = self.loop.time() - self.idle_since
        if idle_for >= DRAIN_IDLE_GRACE:
            self.transport.close()
            return
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self._keepalive_deadline.later(  # type: ignore[assignment]
            DRAIN_IDLE_GRACE - idle_for)


class _ParserRefusalWarning(logging.Filter):
    """Drops uvicorn's warning for each malformed request: every one is already counted, audited
    and access-logged above, so the warning only let a client write to the server log at will."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != PARSER_WARNING


PARSER_WARNING = "Invalid HTTP request received."  # uvicorn's, as httptools_impl logs it
_PARSER_FILTER = _ParserRefusalWarning()


def protocol_for(gateway: Any) -> type[GatewayProtocol]:
    """A protocol class bound to this worker's gateway (its live policy limits, metrics, audit log)."""
    logging.getLogger("uvicorn.error").addFilter(_PARSER_FILTER)  # idempotent: a filter is kept once
    return type("BoundGatewayProtocol", (GatewayProtocol,), {"gateway": gateway, "idle": {}})
