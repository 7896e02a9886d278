"""What an audit record may contain, and when it happened.

Threat: a stage that stuffs the wrong thing into `ctx.audit_extra` (a token, a webhook signature,
a request body) would turn the audit file into a secret store that many people can read. The
pipeline is meant never to do that; `sanitize` is the second line of defence: keys that *look*
secret are dropped and string values that look like bearer tokens or JWTs are masked, at any depth.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

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
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sanitize(record: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of `record` without secret-looking keys or values, and how many were removed."""
    removed = 0

    def clean(value: Any, depth: int) -> Any:
        nonlocal removed
        if depth > 8:  # nothing legitimate nests this deep; refuse rather than recurse forever
            removed += 1
            return REDACTED
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                if _secret_key(name):
                    removed += 1
                    continue
                out[name] = clean(item, depth + 1)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            return [clean(item, depth + 1) for item in value]
        if isinstance(value, str) and SECRET_VALUE.search(value):
            removed += 1
            return REDACTED
        return value

    cleaned: dict[str, Any] = clean(record, 0)
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
