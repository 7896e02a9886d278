"""Denials past a rate are folded into summary records, so a flood cannot rotate the trail away.

Every denial is an audit record, and the file is size-rotated (`audit.max_bytes` x `backups`).
Without a bound, anyone on the network could send requests with no token at thousands a second
and push every earlier record (the mutating requests, the tenant-crossing attempts) out of the
retained files within minutes. So the writer writes denials one line each only while a token
bucket allows (`audit.denial_lines_per_second`, burst `audit.denial_burst`); a denial beyond it is
counted under its (reason, route, client address, subject, status) and, every `interval` seconds,
one `request.denials_folded` record per such key says how many there were, from when to when, and
the first and last request ids. At most `max_keys` keys are kept per interval; further
addresses and subjects of the same reason and route are counted under `"*"`. Nothing is lost:
the individual lines plus the folded counts are every denial, and the summaries are chained and
MACed like every other line. Anything that is not a denial (a mutating request that was served, a
policy reload, an upstream error) is never folded.

Runs in the audit writer thread: not on the request path, no lock needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.audit.records import rfc3339_now

FOLDED_EVENT = "request.denials_folded"
OTHERS = "*"

_Key = tuple[Any, Any, Any, Any, Any]


class DenialFolder:
    def __init__(self, per_second: float, burst: int, *, interval: float = 10.0, max_keys: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0 or burst < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("audit folding: per_second > 0, burst >= 1, interval > 0, max_keys >= 1 required")
        self.per_second = float(per_second)
        self.burst = float(burst)
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._tokens = self.burst
        self._refilled = clock()
        self._pending: dict[_Key, dict[str, Any]] = {}
        self._deadline: float | None = None
        self.folded = 0  # denials counted into summaries (monotonic)

    @property
    def deadline(self) -> float | None:
        """When the open interval's summaries are due (on `clock`), or None with nothing folded."""
        return self._deadline

    def admit(self, record: dict[str, Any]) -> bool:
        """True: write `record` as it is. False: it was counted into a summary."""
        if record.get("event") != "request" or record.get("decision") != "deny":
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._fold(record, now)
        return False

    def _fold(self, record: dict[str, Any], now: float) -> None:
        reason, route, status = record.get("reason"), record.get("route_id"), record.get("status")
        key: _Key = (reason, route, record.get("client_ip"), record.get("sub"), status)
        entry = self._pending.get(key)
        if entry is None and len(self._pending) >= self.max_keys:
            key = (reason, route, OTHERS, OTHERS, status)
            entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = {
                "event": FOLDED_EVENT, "reason": reason, "route_id": route, "client_ip": key[2],
                "sub": key[3], "status": status, "count": 0, "first": record.get("time"),
                "first_request_id": record.get("request_id"),
            }
        entry["count"] += 1
        entry["last"] = record.get("time")
        entry["last_request_id"] = record.get("request_id")
        self.folded += 1
        if self._deadline is None:
            self._deadline = now + self.interval

    def due(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def drain(self) -> list[dict[str, Any]]:
        """The summaries of the interval so far (all of them: at shutdown too), oldest key first."""
        stamp = rfc3339_now()
        out = [dict(entry, window_seconds=self.interval, time=stamp) for entry in self._pending.values()]
        self._pending.clear()
        self._deadline = None
        return out
