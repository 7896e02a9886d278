"""Route deprecation from the policy: the response headers, and the sunset instant.

    Deprecation: @1767225600                         RFC 9745: when the route was deprecated
    Sunset: Wed, 30 Jun 2027 00:00:00 GMT            RFC 8594: when it stops answering
    Link: <https://...>; rel="deprecation"; type="text/html", <...>; rel="successor-version"

From the sunset instant (00:00 UTC of the `sunset` date) the route answers 410 `route.sunset`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from email.utils import formatdate

from gateway.policy.schema import DeprecationSpec


@dataclass(frozen=True, slots=True)
class Deprecation:
    """Compiled `deprecated:`: headers rendered once; `sunset_at` is a Unix time or None."""

    headers: tuple[tuple[bytes, bytes], ...]
    sunset_at: float | None
    successor: str | None


def _epoch(d: object) -> int:
    return calendar.timegm(d.timetuple())  # type: ignore[attr-defined]


def compile_deprecation(spec: DeprecationSpec) -> Deprecation:
    headers = [(b"deprecation", f"@{_epoch(spec.since)}".encode())]
    sunset_at = None
    if spec.sunset is not None:
        sunset_at = float(_epoch(spec.sunset))
        headers.append((b"sunset", formatdate(sunset_at, usegmt=True).encode()))
    links = []
    if spec.link:
        links.append(f'<{spec.link}>; rel="deprecation"; type="text/html"')
    if spec.successor:
        links.append(f'<{spec.successor}>; rel="successor-version"')
    if links:
        headers.append((b"link", ", ".join(links).encode()))
    return Deprecation(tuple(headers), sunset_at, spec.successor)
