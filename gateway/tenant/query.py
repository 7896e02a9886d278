"""Binding a query parameter (`?orgId=...`) to the caller's org.

Threat: the gateway and the upstream parse the query string with different rules. If any
spelling lets the upstream read an org the gateway did not check - a second `orgId`, `orgid`
for a case-insensitive framework, `org%49d` for one that decodes names, `orgId[]` for PHP/qs
style arrays, `;` for parsers that still split on it, `+` that some read as a space - the check
is worthless. So every such spelling is refused (400 `request.ambiguous`), never resolved.
Parameters other than the bound one are forwarded byte for byte.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from gateway.errors import Ambiguous, TenantMismatch
from gateway.tenant.policy import Mode

_BAD_PCT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_STRIP = " \t\r\n\x00\x0b\x0c"


@lru_cache(maxsize=1024)
def encode_value(org: str) -> bytes:
    return quote(org, safe="").encode("ascii")


def _strict_decode(raw: bytes) -> str | None:
    """Percent-decode and UTF-8-decode, or None if either is invalid."""
    # `find`, not `in`: bytes.__contains__ raises and clears a TypeError inside on every call.
    if raw.find(b"%") < 0:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if _BAD_PCT.search(raw):
        return None
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def fold_name(name: str) -> str:
    """The name as the most lenient parser would read it; equal folds are the same name."""
    # NFKC folds full-width and other compatibility forms (`ｏｒｇＩｄ`) before the case fold.
    if not name.isascii():
        name = unicodedata.normalize("NFKC", name)
    name = name.casefold().strip(_STRIP)
    # `orgId[]`, `orgId[0]`, `orgId.x`: array / nested-object syntax of qs, PHP, Rails.
    for sep in "[.":
        name = name.partition(sep)[0]
    return name.strip(_STRIP)


class QueryBinding:
    """Compiled check / injection / rewrite of one query parameter."""

    __slots__ = ("name", "raw", "folded", "folded_raw", "mode", "route_id")

    def __init__(self, name: str, mode: Mode, route_id: str | None) -> None:
        self.name = name
        self.raw = name.encode("ascii")
        self.folded = name.casefold()
        self.folded_raw = self.folded.encode("ascii")
        self.mode = mode
        self.route_id = route_id

    def _names_bound(self, key: bytes) -> bool:
        """True if some parser could read `key` as the bound name (any spelling)."""
        if key.isascii() and key.find(b"%") < 0 and key.find(b"+") < 0:
            # Folding an ASCII name only lowercases and cuts, so a match contains the name.
            return key.lower().find(self.folded_raw) >= 0 and fold_name(key.decode("ascii")) == self.folded
        text = key.replace(b"+", b" ")
        decoded = _strict_decode(text)
        if decoded is None:
            # A parameter name no conforming client produces; it might decode, for a lenient
            # upstream, to the bound name. Refuse rather than guess.
            raise Ambiguous(
                "request.ambiguous",
                "query parameter name is not valid percent-encoded UTF-8",
                route_id=self.route_id,
            )
        if fold_name(decoded) == self.folded:
            return True
        # Double encoding (`org%2549d`) for upstreams that decode twice.
        if "%" in decoded:
            twice = _strict_decode(decoded.encode("utf-8"))
            return twice is not None and fold_name(twice) == self.folded
        return False

    def _ambiguous(self, why: str) -> Ambiguous:
        return Ambiguous("request.ambiguous", f'query parameter "{self.name}": {why}', route_id=self.route_id)

    def bind(self, qs: bytes, org: str) -> tuple[bytes, bool]:
        """Return (query string to forward, whether a differing client value was replaced)."""
        found = -1
        parts: list[bytes] = []
        # Fast path: nothing in the query could spell the name.
        if qs and (not qs.isascii() or qs.find(b"%") >= 0 or qs.lower().find(self.folded_raw) >= 0):
            parts = qs.split(b"&")
            for i, seg in enumerate(parts):
                if seg.find(b";") >= 0:
                    # `a=1;orgId=b`: a `;`-splitting upstream sees a parameter we did not.
                    if any(self._names_bound(sub.partition(b"=")[0]) for sub in seg.split(b";")):
                        raise self._ambiguous('";" used as a separator next to the bound parameter')
                    continue
                key = seg.partition(b"=")[0]
                if key == self.raw:
                    if found >= 0:
                        raise self._ambiguous("repeated")
                    found = i
                elif self._names_bound(key):
                    raise self._ambiguous("present under a variant spelling of its name")

        if found < 0:
            if self.mode == "require":
                raise TenantMismatch(
                    detail=f'query parameter "{self.name}" is required', route_id=self.route_id
                )
            extra = self.raw + b"=" + encode_value(org)
            if not qs:
                return extra, False
            return qs + (extra if qs.endswith(b"&") else b"&" + extra), False

        value = parts[found].partition(b"=")[2]
        if value.find(b"+") >= 0:
            # `+` is a space to form decoders and a plus to others: two readings of one value.
            raise self._ambiguous('"+" in the value (send %2B or %20)')
        decoded = _strict_decode(value)
        if decoded is None:
            raise self._ambiguous("value is not valid percent-encoded UTF-8")
        if decoded == org:
            return qs, False
        if self.mode != "rewrite":
            raise TenantMismatch(
                detail=f'query parameter "{self.name}" does not match your organisation',
                route_id=self.route_id,
            )
        parts[found] = self.raw + b"=" + encode_value(org)
        return b"&".join(parts), True
