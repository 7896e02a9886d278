"""Structured JSON logs. Every line is one JSON object; request lines carry the request id.

Secrets never reach a log: stages log reason ids and route ids, never tokens, bodies or
signature values; `redact` is a last line of defence for anything that looks like a bearer token.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


# (request id, trace id) of the request this task serves; set by the request-id stage, so every
# log line written while serving a request carries both without each stage passing them.
CURRENT_REQUEST: ContextVar[tuple[str, str] | None] = ContextVar("gateway_current_request", default=None)


def redact(text: str) -> str:
    return _JWT.sub("[redacted-jwt]", _BEARER.sub(r"\1[redacted]", text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
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


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


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
