"""Request hygiene, before routing: URL length, header block size, framing, path normalisation.

Threat: path confusion. If the gateway authorises `/v1/agents/x` but the upstream (or a proxy in
between) resolves `/v1/agents/x/..%2F..%2Fadmin` differently, every route check is void. So any
path that is not already in one canonical form is refused, and the decoded segments are handed to
routing; the upstream later receives a path rebuilt from the route template, never the raw one.
"""

from __future__ import annotations

import re

from gateway.context import RequestContext
from gateway.errors import BadPath, BadRequest, HeadersTooLarge, UriTooLong
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send

# Raw path bytes allowed: RFC 3986 pchar plus '/' (no '\\', no spaces, no controls, no non-ASCII).
_RAW_OK = re.compile(rb"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")
# Encoded separators, dots, percent (double encoding) and control bytes are never decoded.
_FORBIDDEN_PCT = frozenset(
    [0x2F, 0x5C, 0x2E, 0x25, 0x7F] + list(range(0x00, 0x20))
)


def split_path(raw: bytes) -> list[str]:
    """Canonical decoded segments of a raw path, or BadPath."""
    if not _RAW_OK.match(raw):
        raise BadPath(detail="path contains characters that are not allowed")
    if b"//" in raw:
        raise BadPath(detail="empty path segment")
    if raw == b"/":
        return []
    out = []
    for seg in raw[1:].split(b"/"):
        if seg in (b".", b".."):
            raise BadPath(detail="dot segments are not allowed")
        if b"%" in seg:
            if seg.count(b"%") != len(_PCT.findall(seg)):
                raise BadPath(detail="malformed percent-encoding")
            for m in _PCT.finditer(seg):
                if int(m.group(1), 16) in _FORBIDDEN_PCT:
                    raise BadPath(detail="encoded separators, dots or control bytes are not allowed")
            seg = _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), seg)
        try:
            out.append(seg.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadPath(detail="path is not valid UTF-8") from None
    return out


class HygieneStage:
    """Refuses oversize URLs (414) and header blocks (431), ambiguous framing, unclean paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        limits = ctx.policy.limits
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if len(raw_path) + len(scope["query_string"]) + 1 > limits.max_url_bytes:
            raise UriTooLong(detail=f"URL longer than {limits.max_url_bytes} bytes")
        headers = scope["headers"]
        if len(headers) > limits.max_headers:
            raise HeadersTooLarge(detail=f"more than {limits.max_headers} header fields")
        size = 0
        cl = te = 0
        for k, v in headers:
            size += len(k) + len(v) + 4
            if k == b"content-length":
                cl += 1
            elif k == b"transfer-encoding":
                te += 1
                if v.lower() != b"chunked":
                    raise BadRequest("request.bad_framing", "only chunked transfer-encoding is accepted")
        if size > limits.max_header_bytes:
            raise HeadersTooLarge(detail=f"header block larger than {limits.max_header_bytes} bytes")
        # Request smuggling: two framings (or two lengths) that two parsers may read differently.
        if te and cl:
            raise BadRequest("request.bad_framing", "both Content-Length and Transfer-Encoding")
        if cl > 1 or te > 1:
            raise BadRequest("request.bad_framing", "repeated Content-Length or Transfer-Encoding")
        scope["gateway.parts"] = split_path(raw_path)
        ctx.query_string = scope["query_string"]
        await self.app(scope, receive, send)
