"""The access log: one JSON line per request, allowed or refused (`GATEWAY_ACCESS_LOG`).

    {"type":"access","time":"...","request_id":"...","trace_id":"...","route":"agents.list",
     "method":"GET","status":200,"decision":"allow","reason":null,"duration_ms":3.1,
     "upstream_ms":2.4,"client_ip":"203.0.113.9","org":"org-a","sub":"alice",
     "bytes_in":0,"bytes_out":512,"user_agent":"curl/8.5"}

`stdout` (default), a file path (appended; reopened when rotated away by logrotate and the like),
or `off`. Off the request path, as the audit is: the observer only appends a tuple of the fields
to a deque; a writer thread formats and writes them in batches. The writer is woken at most once
per batch: it sleeps on an event only when it found nothing to write (the next request wakes it,
so a quiet gateway logs at once), and while lines keep coming it writes what has gathered every
`interval` seconds, so a busy worker pays no thread wake-up per request. When `queue_size` lines
are waiting the line is dropped and counted (`gateway_access_log_dropped_total`), never waited for.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.auth.claims import claim_text
from gateway.context import RequestContext
from gateway.logs import rfc3339_ms, write_all, write_lines
from gateway.pipeline.base import Scope

log = logging.getLogger("gateway.accesslog")
_BATCH = 1024
MAX_USER_AGENT = 256


_escape = json.encoder.encode_basestring_ascii  # C: what json.dumps emits for a str


def _json(value: Any) -> str:
    """One JSON value, as `json.dumps` writes it (ASCII, every control character escaped)."""
    if value.__class__ is str:
        return _escape(value)  # type: ignore[no-any-return]
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else "null"
    return str(_escape(str(value)))


def encode_line(entry: tuple[Any, ...], clock: Callable[[float], str]) -> bytes:
    """The line of one entry as `AccessLog.__call__` captured it (field order of the docstring)."""
    (t, duration, rid, trace_id, route, method, status, decision, reason, upstream, ip, org, sub,
     bytes_in, bytes_out, ua, client_rid) = entry
    j = _json
    line = (f'{{"type":"access","time":"{clock(t)}","request_id":{j(rid)},"trace_id":{j(trace_id)},'
            f'"route":{j(route)},"method":{j(method)},"status":{j(status)},"decision":{j(decision)},'
            f'"reason":{j(reason)},"duration_ms":{j(round(duration * 1000, 3))},'
            f'"upstream_ms":{j(round(upstream * 1000, 3) if upstream is not None else None)},'
            f'"client_ip":{j(ip)},"org":{j(org)},"sub":{j(sub)},"bytes_in":{j(bytes_in)},'
            f'"bytes_out":{j(bytes_out)},"user_agent":{j(ua)}')
    if client_rid is not None:
        line += f',"client_request_id":{j(client_rid)}'
    return (line + "}\n").encode()


class AccessLog:
    """Deque + writer thread; call it as a request observer."""

    def __init__(self, target: str, *, org_claim: str = "org_id", queue_size: int = 20000,
                 on_dropped: Callable[[int], None] | None = None, interval: float = 0.05) -> None:
        target = (target or "stdout").strip()
        self.target = target
        self.enabled = target.lower() != "off"
        self.org_claim = org_claim
        self.queue_size = queue_size
        self.interval = interval
        self._pending: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._idle = False      # the writer sleeps until woken: the next line sets the event
        self._stopping = False
        self._on_dropped = on_dropped
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._clock = rfc3339_ms
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.wakeups = 0

    def __call__(self, scope: Scope, ctx: RequestContext) -> None:
        if not self.enabled:
            return
        pending = self._pending
        if len(pending) >= self.queue_size:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(1)
            return
        claims = ctx.claims
        sub = org = None
        if claims:
            s = claims.get("sub")
            sub = s if isinstance(s, str) else None
            org = claim_text(claims, self.org_claim)  # as tenant binding reads it
        ua = None
        for k, v in scope["headers"]:
            if k == b"user-agent":
                ua = v[:MAX_USER_AGENT].decode("latin-1")
                break
        trace = ctx.trace
        route = ctx.route
        # A tuple of what the line needs; rounding, time formatting and JSON are the writer's.
        pending.append((
            time.time(), time.perf_counter() - ctx.started, ctx.request_id,
            trace.trace_id if trace is not None else None, route.id if route is not None else None,
            scope.get("method"), ctx.status, ctx.decision, ctx.reason, ctx.upstream_seconds,
            ctx.client_ip, org, sub, ctx.bytes_in, ctx.bytes_out, ua, ctx.client_request_id,
        ))
        if self._idle:  # at most one wake-up per batch: only a sleeping writer is woken
            self._idle = False
            self._wake.set()

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop (blocking: call from a thread or at exit)."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(10)
        self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _take(self) -> list[tuple[Any, ...]]:
        pending, batch = self._pending, list[tuple[Any, ...]]()
        try:
            while len(batch) < _BATCH:
                batch.append(pending.popleft())
        except IndexError:
            pass
        return batch

    def _run(self) -> None:
        wake = self._wake
        while True:
            self.wakeups += 1
            batch = self._take()
            if batch:
                try:
                    clock = self._clock
                    lines = [encode_line(e, clock) for e in batch]
                except Exception as exc:  # a line that cannot be formatted must not stop the writer
                    self.failures += 1
                    log.error("access log line not formatted: %s", exc)
                else:
                    self._write(lines)
                if len(self._pending) >= _BATCH:
                    continue
            if self._stopping and not self._pending:
                return
            wake.clear()
            if batch:
                # Lines are coming: let the next ones gather for `interval` (close() cuts it short).
                wake.wait(self.interval)
                continue
            # Nothing to write: sleep until a request arrives (it sets the event, once).
            self._idle = True
            if self._pending or self._stopping:  # arrived between the take and `_idle`
                self._idle = False
                continue
            wake.wait()

    def _write(self, lines: list[bytes]) -> None:
        try:
            if self.target.lower() == "stdout":
                try:
                    fd = sys.stdout.fileno()
                except (AttributeError, OSError, ValueError):  # replaced by a non-file (tests)
                    sys.stdout.buffer.write(b"".join(lines))
                    sys.stdout.flush()
                else:
                    sys.stdout.flush()  # whatever Python buffered for stdout goes first
                    write_lines(fd, lines)
            else:
                write_all(self._file(), b"".join(lines))  # O_APPEND: one write per batch
            self.written += len(lines)
        except Exception as exc:  # the log must never take a worker down
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.error("access log write failed (%d so far): %s", self.failures, exc)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _file(self) -> int:
        try:
            st = os.stat(self.target)
            on_disk: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            on_disk = None
        if self._fd is not None and on_disk == self._ino:
            return self._fd
        if self._fd is not None:  # rotated away: write to the new file
            os.close(self._fd)
        self._fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(self._fd)
        self._ino = (st.st_dev, st.st_ino)
        return self._fd
