"""Kommo's form-encoded webhooks (`leads[status][0][id]=1`) parsed into nested data.

Threat: a hostile body shaped to burn memory or CPU (`a[999999999]=1`, thousands of fields, deep
nesting). Numeric indices become list *positions by order*, never allocated offsets; fields, depth
and key length are bounded; a key used both as a value and as a container is an error.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from upstream_stub.web import ascii_digits

MAX_FIELDS = 2000
MAX_DEPTH = 8
MAX_KEY = 256
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]+\])*)\Z")  # \Z: `$` would drop a final newline
_PART = re.compile(r"\[([^\[\]]+)\]")


class FormError(ValueError):
    """The body is not a well-formed nested form."""


def _path(key: str) -> list[str]:
    m = _KEY.match(key) if len(key) <= MAX_KEY else None
    if m is None:
        raise FormError("malformed field name")
    parts = [m.group(1), *_PART.findall(m.group(2))]
    if len(parts) > MAX_DEPTH:
        raise FormError("field nested too deep")
    return parts


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(ascii_digits(k, 9) for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def parse_nested_form(body: bytes) -> dict[str, Any]:
    """`a[b][0][c]=v` pairs → `{"a": {"b": [{"c": "v"}]}}`."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise FormError("body is not a UTF-8 form with a bounded number of fields") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _path(key)
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FormError("field used as both value and container")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise FormError("field used as both value and container")
        node[parts[-1]] = value
    out = _listify(root)
    return out if isinstance(out, dict) else {}
