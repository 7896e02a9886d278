"""Path templates and the default-deny route table.

Templates (`/v1/agents/{agentId}`) are compiled at load. One precedence rule, and only one:
a static segment beats a parameter at the same position, leftmost position first, so
`/v1/agents/me` answers `GET /v1/agents/me` and `/v1/agents/{agentId}` answers every other id
(`/users/me`-style routes). Two routes of the same shape (`/a/{x}` and `/a/{y}`, or the same
template twice) for a common method are truly ambiguous and stay a load error: a reviewer must be
able to tell from the policy alone which route answers a request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

_STATIC = re.compile(r"[A-Za-z0-9._~-]+\Z")  # \Z, not $: `$` also matches before a final newline
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}\Z")
# A path parameter value after percent-decoding: no separators, no dots-only, no controls.
PARAM_VALUE = re.compile(r"[A-Za-z0-9._~@:+=-]{1,256}\Z")

R = TypeVar("R")


class PathTemplate:
    """A compiled `/a/{b}/c` template: static segments, and parameter names in their place."""

    __slots__ = ("text", "segments", "params")

    def __init__(self, text: str) -> None:
        if not text.startswith("/"):
            raise ValueError(f"path {text!r} must start with '/'")
        if text != "/" and text.endswith("/"):
            raise ValueError(f"path {text!r} must not end with '/'")
        self.text = text
        segs: list[str | None] = []
        params: list[str] = []
        for seg in text.split("/")[1:] if text != "/" else []:
            m = _PARAM.match(seg)
            if m:
                if m.group(1) in params:
                    raise ValueError(f"path {text!r} names parameter {m.group(1)!r} twice")
                params.append(m.group(1))
                segs.append(None)
            elif _STATIC.match(seg) and seg not in (".", ".."):
                segs.append(seg)
            else:
                raise ValueError(f"path {text!r}: segment {seg!r} is neither a literal nor {{name}}")
        self.segments: tuple[str | None, ...] = tuple(segs)
        self.params: tuple[str, ...] = tuple(params)

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        out: dict[str, str] | None = None
        pi = 0
        for want, got in zip(self.segments, parts, strict=True):
            if want is None:
                if out is None:
                    out = {}
                out[self.params[pi]] = got
                pi += 1
            elif want != got:
                return None
        return out if out is not None else {}

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: smaller is more specific (a static segment beats a parameter, leftmost first)."""
        return tuple(1 if seg is None else 0 for seg in self.segments)

    def same_shape(self, other: PathTemplate) -> bool:
        """Whether the two match exactly the same paths (so no precedence can separate them)."""
        return self.segments == other.segments

    def overlaps(self, other: PathTemplate) -> bool:
        if len(self.segments) != len(other.segments):
            return False
        return all(a is None or b is None or a == b for a, b in zip(self.segments, other.segments, strict=True))

    def render(self, params: dict[str, str]) -> str:
        out = []
        pi = 0
        for seg in self.segments:
            if seg is None:
                out.append(params[self.params[pi]])
                pi += 1
            else:
                out.append(seg)
        return "/" + "/".join(out)


class RouteTable(Generic[R]):
    """Finds the single route for (method, path parts), or says 404 / 405 with Allow."""

    def __init__(self, entries: list[tuple[PathTemplate, frozenset[str], R]]) -> None:
        self._static: dict[str, list[tuple[PathTemplate, frozenset[str], R]]] = {}
        self._by_len: dict[int, list[tuple[PathTemplate, frozenset[str], R]]] = {}
        for entry in entries:
            tpl = entry[0]
            if not tpl.params:
                self._static.setdefault(tpl.text, []).append(entry)
            else:
                self._by_len.setdefault(len(tpl.segments), []).append(entry)
        for bucket in self._by_len.values():
            bucket.sort(key=lambda e: e[0].specificity)  # stable: policy order within one shape

    def lookup(self, method: str, path: str, parts: Sequence[str]) -> tuple[R | None, dict[str, str], list[str]]:
        """(route, params, allowed-methods). route None + empty allow = no such path."""
        allow: list[str] = []
        static = self._static.get(path, ())
        for _tpl, methods, route in static:
            if method in methods:
                return route, {}, allow
            allow.extend(methods)
        if static:
            # A literal path shadows the templates that could also match it: `/webhooks/kommo/revoked`
            # is that route, never `/webhooks/kommo/{token}` with token "revoked", so the answer (and
            # its `Allow`) is what the API document says about that path.
            return None, {}, allow
        for tpl, methods, route in self._by_len.get(len(parts), ()):
            params = tpl.match(parts)
            if params is None:
                continue
            if method in methods:
                return route, params, allow
            allow.extend(methods)
        return None, {}, allow
