"""The access log: one JSON line per request, allowed or refused (`GATEWAY_ACCESS_LOG`).

    {"type":"access","time":"...","request_id":"...","trace_id":"...","route":"agents.list",
     "method":"GET","status":200,"decision":"allow","reason":null,"duration_ms":3.1,
     "upstream_ms":2.4,"client_ip":"203.0.113.9","org":"org-a","sub":"alice",
     "bytes_in":0,"bytes_out":512,"user_agent":"curl/8.5"}

`stdout` (default), a file path (appended; reopened when rotated away by logrotate and the like),
or `off`. Off the request path, as the audit is: the observer only builds a small dict and
`put_nowait`s it; a writer thread serialises and writes in batches. When the queue is full the
line is dropped and counted (`gateway_access_log_dropped_total`), never waited for.

What is never in it: the token, any header but the user agent (capped), the query string and the
raw path (a secret path token, OAuth codes), bodies. The client's own `X-Request-ID`, when it was
not adopted, is `client_request_id`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.auth import claim_at
from gateway.context import RequestContext
from gateway.logs import take_batch
from gateway.pipeline.base import Scope

log = logging.getLogger("gateway.accesslog")
_STOP = object()
_BATCH = 1024
MAX_USER_AGENT = 256


PIPE_BUF = 4096  # POSIX: writes up to this size to a pipe are never interleaved with others'


def write_lines(fd: int, lines: list[bytes]) -> None:
    """Write whole lines to `fd` in chunks of at most PIPE_BUF bytes, so that several worker
    processes sharing one stdout pipe never interleave inside a line."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > PIPE_BUF:
            _write_all(fd, b"".join(chunk))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        _write_all(fd, b"".join(chunk))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AccessLog:
    """Queue + writer thread; call it as a request observer."""

    def __init__(self, target: str, *, org_claim: str = "org_id", queue_size: int = 20000,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        target = (target or "stdout").strip()
        self.target = target
        self.enabled = target.lower() != "off"
        self.org_claim = org_claim
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._on_dropped = on_dropped
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0

    def __call__(self, scope: Scope, ctx: RequestContext) -> None:
        if not self.enabled:
            return
        claims = ctx.claims
        sub = org = None
        if claims:
            s, o = claims.get("sub"), claim_at(claims, self.org_claim)
            sub = s if isinstance(s, str) else None
            org = o if isinstance(o, str) else None
        ua = None
        for k, v in scope["headers"]:
            if k == b"user-agent":
                ua = v[:MAX_USER_AGENT].decode("latin-1")
                break
        upstream = ctx.upstream_seconds
        trace = ctx.trace
        # Cheap here (a float), formatted by the writer thread: the request path pays for a dict.
        entry = {
            "type": "access", "time": time.time(), "request_id": ctx.request_id,
            "trace_id": trace.trace_id if trace is not None else None,
            "route": ctx.route.id if ctx.route is not None else None, "method": scope.get("method"),
            "status": ctx.status, "decision": ctx.decision, "reason": ctx.reason,
            "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "upstream_ms": round(upstream * 1000, 3) if upstream is not None else None,
            "client_ip": ctx.client_ip, "org": org, "sub": sub,
            "bytes_in": ctx.bytes_in, "bytes_out": ctx.bytes_out, "user_agent": ua,
        }
        if ctx.client_request_id is not None:
            entry["client_request_id"] = ctx.client_request_id
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(1)

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop (blocking: call from a thread or at exit)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(10)
        self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        while True:
            batch, stop = take_batch(self._queue, self._queue.get(), _BATCH, _STOP)
            if batch:
                for e in batch:
                    e["time"] = _rfc3339(e["time"])
                lines = [(json.dumps(e, separators=(",", ":"), default=str) + "\n").encode() for e in batch]
                self._write(lines)
            if stop:
                return

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
                _write_all(self._file(), b"".join(lines))  # O_APPEND: one write per batch
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
