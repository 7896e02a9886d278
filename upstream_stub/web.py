"""Request helpers shared by the route modules: bounded bodies, tenant checks, pagination."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from upstream_stub.errors import BadRequest, Forbidden, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from upstream_stub.identity import Identity

M = TypeVar("M", bound=BaseModel)
MAX_JSON_BODY = 64 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the document's pattern and maxLength
SEQ_MAX = 2**63 - 1


def ascii_digits(text: str, most: int = 18) -> bool:
    """1..`most` ASCII digits. Not `str.isdigit()` alone: it is also true of '²' (which `int()`
    refuses: a 500) and of '٣' (which `int()` reads as 3: another account's id)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


async def read_body(request: Request, cap: int) -> bytes:
    """The raw body, refused past `cap` bytes without buffering the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and (not ascii_digits(declared, 19) or int(declared) > cap):
        raise PayloadTooLarge("request.body_too_large", f"body over {cap} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge("request.body_too_large", f"body over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_json(request: Request, model: type[M], *, optional: bool = False) -> M:
    """Validate a JSON body against `model`; field errors are named, values are not echoed."""
    raw = await read_body(request, MAX_JSON_BODY)
    if not raw.strip() and optional:
        raw = b"{}"
    elif request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("request.unsupported_media_type", "expected application/json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()[:5])
        raise Unprocessable("validation.failed", f"invalid fields: {where}") from None


def check_org(ident: Identity, org_id: str | None) -> None:
    """An `orgId` the caller names must be its own (the gateway checked too; this is depth)."""
    if org_id is not None and org_id != ident.org_id:
        raise Forbidden("tenant.mismatch", "orgId does not match your organisation")


def check_query_org(request: Request, ident: Identity) -> None:
    values = request.query_params.getlist("orgId")
    if len(values) > 1:
        raise BadRequest("request.ambiguous", "orgId given more than once")
    check_org(ident, values[0] if values else None)


def page_args(request: Request) -> tuple[int, int]:
    """(limit, after_seq) from `?limit=&cursor=`; the cursor is opaque to clients."""
    raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not ascii_digits(raw_limit, 9) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise Unprocessable("validation.failed", f"limit must be 1..{MAX_LIMIT}")
    cursor = request.query_params.get("cursor")
    return int(raw_limit), (_cursor_seq(cursor) if cursor else 0)


def _cursor_seq(cursor: str) -> int:
    """The sequence number in a cursor this API handed out (`page`), or 422. Strict: base64's
    default decoder skips characters outside its alphabet, so `?cursor=%C2%86%C3%88%C3%A7M9` read
    as the cursor `M9` and was served (schemathesis found it); the document's pattern is the alphabet itself."""
    if _CURSOR.fullmatch(cursor):
        try:
            text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        except ValueError:  # binascii.Error: a length no encoder produces
            text = b""
        # Digits as `page` writes them; beyond a 64-bit row id the stores fail (SQLite: a 500).
        if text.isdigit() and not (len(text) > 1 and text.startswith(b"0")) and int(text) <= SEQ_MAX:
            return int(text)
    raise Unprocessable("validation.failed", "cursor is malformed")


def page(items: Sequence[dict[str, Any]], seqs: Sequence[int], limit: int) -> JSONResponse:
    """A page of `limit` items; fetchers ask for `limit + 1` rows so we know whether more exist."""
    more = len(items) > limit
    body: dict[str, Any] = {"items": list(items[:limit]), "nextCursor": None}
    if more:
        body["nextCursor"] = base64.urlsafe_b64encode(str(seqs[limit - 1]).encode()).decode().rstrip("=")
    return JSONResponse(body)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def bounded_json(value: Any, cap: int) -> str:
    """Compact JSON of `value`, refused when over `cap` bytes (config documents are bounded)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > cap:
        raise Unprocessable("validation.failed", f"document over {cap} bytes")
    return text
