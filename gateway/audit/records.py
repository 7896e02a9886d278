"""What an audit record may contain, and when it happened.

Threat: a stage that stuffs the wrong thing into `ctx.audit_extra` (a token, a webhook signature,
a request body) would turn the audit file into a secret store that many people can read. The
pipeline is meant never to do that; `sanitize` is the second line of defence: keys that *look*
secret are dropped and string values that look like bearer tokens or JWTs are masked, at any depth.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any

from gateway.logs import rfc3339_ms

# Key names that are never written, whatever their value (matched anywhere in the key, any case).
SECRET_KEY = re.compile(
    r"token|secret|signature|authori[sz]ation|passw(or)?d|body|cookie|credential|api_?key|private_?key",
    re.IGNORECASE,
)
# Values that are credentials whatever their key: JWTs and "Bearer ..." header values.
SECRET_VALUE = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.|^\s*bearer\s+\S", re.IGNORECASE)
REDACTED = "[redacted]"
# Written by the chain writer; a caller cannot set them.
CHAIN_KEYS = frozenset({"seq", "prev", "kid", "mac"})
EVENTS = frozenset({"request", "policy.reload", "audit.segment"})


@lru_cache(maxsize=4096)  # record keys are a small, fixed vocabulary; decide each once
def _secret_key(name: str) -> bool:
    return SECRET_KEY.search(name) is not None


def rfc3339_now() -> str:
    """UTC time with milliseconds, e.g. `2025-01-31T12:00:00.123Z`."""
    return rfc3339_ms(time.time())


_CONTAINERS = (list, tuple, set, frozenset)
_PLAIN = frozenset({int, float, bool, type(None)})


def _secret_value(value: str) -> bool:
    """SECRET_VALUE.search, with the regex skipped where it cannot match: a value with fewer
    than two dots holds no JWT, and one without "bearer" no bearer header (no character outside
    ASCII matches b, e, a or r case-insensitively, checked over all of Unicode). That saves ~1 µs
    a value on the ids and paths every record carries."""
    if value.count(".") < 2 and "bearer" not in value.lower():
        return False
    return SECRET_VALUE.search(value) is not None


def _clean(value: Any, depth: int) -> tuple[Any, int]:
    """`value` without secret-looking keys or values at any depth, and how many were removed."""
    if depth > 8:  # nothing legitimate nests this deep; refuse rather than recurse forever
        return REDACTED, 1
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        removed = 0
        for key, item in value.items():
            name = str(key)
            if _secret_key(name):
                removed += 1
                continue
            out[name], n = _clean(item, depth + 1)
            removed += n
        return out, removed
    if isinstance(value, _CONTAINERS):
        items, removed = [], 0
        for item in value:
            clean, n = _clean(item, depth + 1)
            items.append(clean)
            removed += n
        return items, removed
    if isinstance(value, str) and _secret_value(value):
        return REDACTED, 1
    return value, 0


def sanitize(record: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of `record` without secret-looking keys or values, and how many were removed.

    Runs for every audited request on the event loop, so the top level (flat strings, numbers
    and None in a request record) is decided inline; anything nested goes through `_clean`."""
    cleaned: dict[str, Any] = {}
    removed = 0
    for key, value in record.items():
        name = str(key)
        if _secret_key(name):
            removed += 1
            continue
        kind = type(value)
        if kind is str:
            if _secret_value(value):
                value = REDACTED
                removed += 1
        elif kind not in _PLAIN:
            value, n = _clean(value, 1)
            removed += n
        cleaned[name] = value
    for key in CHAIN_KEYS & cleaned.keys():
        del cleaned[key]
        removed += 1
    return cleaned, removed


def request_record(
    *,
    request_id: str,
    sub: str | None,
    org: str | None,
    client_ip: str,
    method: str,
    route_id: str | None,
    path: str,
    status: int,
    decision: str,
    reason: str | None,
    duration_ms: float,
    **extra: Any,
) -> dict[str, Any]:
    """The audit record of one request (`event="request"`); `extra` adds free fields.

    `path` must be the normalised path, and for routes with a secret path segment (the Kommo
    account-webhook token) the route template instead: the audit file is not a secret store.
    """
    return {
        "time": rfc3339_now(),
        "event": "request",
        "request_id": request_id,
        "sub": sub,
        "org": org,
        "client_ip": client_ip,
        "method": method,
        "route_id": route_id,
        "path": path,
        "status": status,
        "decision": decision,
        "reason": reason,
        "duration_ms": round(duration_ms, 3),
        **extra,
    }
