"""Strict reading of a JSON request body for tenant binding.

Threat: the gateway checks one reading of the body and the upstream acts on another. JSON
parsers disagree on duplicate keys (first wins / last wins / error), on `NaN`, on numbers
that overflow a double, on byte-order marks and on non-UTF-8 encodings; a body that is an
array (JSON Patch) or a string carries no `orgId` we could check and may still change one.
Everything here is refused rather than interpreted:

    not a JSON media type, charset other than utf-8   -> 415 request.unsupported_media_type
    invalid UTF-8 / JSON, NaN, Infinity, 1e400, BOM,
    nesting deeper than MAX_DEPTH                      -> 400 request.bad_json
    duplicate keys at any depth (after unescaping,
    so "org\\u0049d" duplicates "orgId"), top level
    not an object                                      -> 400 request.ambiguous
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from gateway.errors import Ambiguous, BadRequest, UnsupportedMediaType

MAX_DEPTH = 64
_DOUBLE_MAX = int(sys.float_info.max)
_DOUBLE_DIGITS = len(str(_DOUBLE_MAX))  # 309


def _ambiguous(detail: str, route_id: str | None) -> Ambiguous:
    return Ambiguous("request.ambiguous", detail, route_id=route_id)


def _bad_json(detail: str, route_id: str | None) -> BadRequest:
    return BadRequest("request.bad_json", detail, route_id=route_id)


class _DuplicateKey(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # `1e400` is Infinity to most parsers and cannot be written back as JSON.
        raise ValueError("number out of range")
    return value


def _int(text: str) -> int:
    # An integer literal beyond a double's range (`1` and 400 zeros) is `1e400` written out:
    # Infinity to most parsers. Python alone would read it exactly (up to its 4300-digit limit).
    if len(text) - text.startswith("-") > _DOUBLE_DIGITS:
        raise ValueError("number out of range")
    value = int(text)
    if len(text) >= _DOUBLE_DIGITS and abs(value) > _DOUBLE_MAX:
        raise ValueError("number out of range")
    return value


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _check_media_type(content_type: bytes | None, route_id: str | None) -> None:
    if content_type is None:
        raise UnsupportedMediaType(
            detail="a JSON body is required (Content-Type: application/json)", route_id=route_id
        )
    if content_type in (b"application/json", b"application/json; charset=utf-8"):
        return
    refuse = UnsupportedMediaType(
        detail="Content-Type must be application/json (charset utf-8)", route_id=route_id
    )
    try:
        text = content_type.decode("ascii")
    except UnicodeDecodeError:
        raise refuse from None
    media, *params = (p.strip() for p in text.split(";"))
    kind, _, sub = media.lower().partition("/")
    if kind != "application" or not (sub == "json" or (sub.endswith("+json") and len(sub) > 5)):
        raise refuse
    if not all(c.isalnum() or c in "!#$&-^_.+" for c in sub):
        raise refuse
    charsets = []
    for param in params:
        name, eq, value = param.partition("=")
        if not eq:
            if param:
                raise refuse
            continue
        if name.strip().lower() == "charset":
            charsets.append(value.strip().strip('"').lower())
    # Two charset parameters are two readings; any charset but utf-8 is a different byte stream.
    if len(charsets) > 1 or (charsets and charsets[0] != "utf-8"):
        raise refuse


def _depth_ok(root: Any) -> bool:
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def load_object(body: bytes, content_type: bytes | None, route_id: str | None) -> dict[str, Any]:
    """Parse `body` strictly into a JSON object (empty body -> {}) or raise a typed refusal."""
    _check_media_type(content_type, route_id)
    if not body:
        return {}
    root = load_json(body, route_id)
    if not isinstance(root, dict):
        raise _ambiguous("the JSON body must be an object", route_id)
    return root


def is_json_media_type(content_type: bytes | None) -> bool:
    """Whether the client labels the body JSON (`application/json` or `application/*+json`)."""
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def check_json_media_type(content_type: bytes | None, route_id: str | None) -> None:
    """415 unless the body is labelled JSON, charset utf-8 if any (one reading of the bytes)."""
    _check_media_type(content_type, route_id)


def load_json(body: bytes, route_id: str | None) -> Any:
    """Parse a non-empty body strictly into any JSON value, or raise a typed refusal."""
    try:
        text = body.decode("utf-8")
        root = json.loads(text, object_pairs_hook=_pairs, parse_float=_float, parse_int=_int,
                          parse_constant=_constant)
    except _DuplicateKey:
        raise _ambiguous("duplicate key in the JSON body", route_id) from None
    except (ValueError, RecursionError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError comes from
        # pathological nesting before our depth check can run.
        raise _bad_json("body is not valid UTF-8 JSON", route_id) from None
    # Cheap bound first: depth can't exceed the number of opening brackets.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and not _depth_ok(root):
        raise _bad_json(f"JSON nested deeper than {MAX_DEPTH} levels", route_id)
    return root


def dump(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (`"\ud800"`) is legal JSON but not encodable UTF-8: keep it escaped so
        # the upstream reads exactly the value the client sent.
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
