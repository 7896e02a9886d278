"""Structured JSON logs. Every line is one JSON object; request lines carry the request id.

Secrets never reach a log: stages log reason ids and route ids, never tokens, bodies or
signature values; `redact` is a last line of defence for anything that looks like a bearer token.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


# (request id, trace id) of the request this task serves; set by the request-id stage, so every
# log line written while serving a request carries both without each stage passing them.
CURRENT_REQUEST: ContextVar[tuple[str, str] | None] = ContextVar("gateway_current_request", default=None)


class Rfc3339Clock:
    """RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`, truncated like
    `datetime.isoformat(timespec="milliseconds")`); the seconds part is formatted once a second.
    Safe to share between threads: the cached second and its text are one tuple, read and
    replaced whole."""

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, t: float) -> str:
        second = int(t)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        return f"{prefix}.{min(int((t - second) * 1000), 999):03d}Z"


rfc3339_ms = Rfc3339Clock()  # the audit records' and the access log's clock


def redact(text: str) -> str:
    """`text` with bearer credentials and JWTs masked. Each pattern runs only where its fixed part
    occurs ("bearer" in any case: no character outside ASCII matches one of its letters
    case-insensitively; "eyJ" as it is), so the line of every denial skips both regexes."""
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1[redacted]", text)
    if "eyJ" in text:
        text = _JWT.sub("[redacted-jwt]", text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": rfc3339_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("request_id", "trace_id", "route", "reason", "event"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        current = CURRENT_REQUEST.get()
        if current is not None:
            out.setdefault("request_id", current[0])
            out.setdefault("trace_id", current[1])
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, separators=(",", ":"))


PIPE_BUF = 4096  # POSIX: writes up to this size to a pipe are never interleaved with others'


def write_lines(fd: int, lines: list[bytes]) -> None:
    """Write whole lines to `fd` in chunks of at most PIPE_BUF bytes, so that several worker
    processes sharing one stdout or stderr pipe never interleave inside a line."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > PIPE_BUF:
            write_all(fd, b"".join(chunk))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        write_all(fd, b"".join(chunk))


def write_all(fd: int, data: bytes) -> None:
    """`data` to `fd`, however many writes it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class BackgroundHandler(logging.Handler):
    """Formats a record where it is logged (the request's ids are context variables there) and
    queues the line; a writer thread writes whole lines to `fd` (stderr).

    A `StreamHandler` on stderr writes from the event loop: once whoever reads stderr falls behind
    (a container log driver, a stalled pipe) and the pipe is full, the write blocks the loop and
    the worker stops answering everyone. Every denial logs a line at the default level, so a
    flood of refused requests could do it (measured: 273 refusals filled a pipe nobody read, then
    a valid request timed out). Here the loop only appends to a bounded queue; when `queue_size`
    lines are waiting, lines are dropped and counted, and the writer says how many once stderr
    takes lines again, so a gap in the log is never silent. `on_dropped` (set by
    `report_dropped_lines`) also counts each drop in a metric, for an alert while stderr is stuck."""

    def __init__(self, fd: int = 2, queue_size: int = 10000) -> None:
        super().__init__()
        self.fd = fd
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.on_dropped: Callable[[int], None] | None = None
        self._reported = 0
        self._thread = threading.Thread(target=self._run, name="server-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a record that cannot be formatted: logging's own report
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1  # under the handler's lock (logging.Handler.handle)
            if self.on_dropped is not None:
                self.on_dropped(1)

    def _run(self) -> None:
        q = self._queue
        while True:
            batch, stop = take_batch(q, q.get(), 512, None)
            dropped = self.dropped
            if dropped != self._reported:
                note = logging.makeLogRecord({
                    "name": "gateway.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                    "msg": f"{dropped - self._reported} log lines dropped: stderr did not keep up "
                           f"({dropped} since start)", "event": "log.dropped"})
                batch.append((self.format(note) + "\n").encode("utf-8", "replace"))
                self._reported = dropped
            try:
                write_lines(self.fd, batch)  # whole lines, never interleaved with another worker's
            except OSError:
                pass  # stderr gone: nowhere to say so
            if stop:
                return

    def flush(self) -> None:
        """Wait (at most 2 s) until what was queued is written: at exit, nothing queued is lost
        unless stderr itself is stuck."""
        deadline = time.monotonic() + 2
        while not self._queue.empty() and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=2)
            except queue.Full:
                pass
            self._thread.join(2)
        super().close()


def setup_logging(level: str = "info") -> None:
    handler = BackgroundHandler(sys.stderr.fileno())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def report_dropped_lines(callback: Callable[[int], None]) -> None:
    """Count the server log's dropped lines with `callback` (the worker's
    `gateway_server_log_dropped_total`), those dropped before this call included."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BackgroundHandler):
            handler.acquire()  # emit() counts under this lock: no drop is counted twice or lost
            try:
                handler.on_dropped = callback
                if handler.dropped:
                    callback(handler.dropped)
            finally:
                handler.release()


def take_batch(q: queue.Queue[Any], first: Any, limit: int, stop: object) -> tuple[list[Any], bool]:
    """The writer threads' batching (audit, access log): `first` plus whatever else is already
    queued, up to `limit` items, without waiting; and whether the stop marker was met."""
    batch: list[Any] = []
    item, stopped = first, first is stop
    while not stopped:
        batch.append(item)
        if len(batch) >= limit:
            break
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        stopped = item is stop
    return batch, stopped
