"""Request hygiene, before routing: URL length, header block size, framing, path normalisation.

Threat: path confusion. If the gateway authorises `/v1/agents/x` but the upstream (or a proxy in
between) resolves `/v1/agents/x/..%2F..%2Fadmin` differently, every route check is void. So any
path that is not already in one canonical form is refused, and the decoded segments are handed to
routing; the upstream later receives a path rebuilt from the route template, never the raw one.

Also refused here, before any stage reads a header:
- Host missing or repeated (RFC 9112 §3.2): which authority was meant is ambiguous, and the second
  one would otherwise travel upstream in `X-Forwarded-Host`;
- a `Connection` header naming an end-to-end header the gateway reads or rebuilds (`Connection:
  content-type` would make the forwarder drop Content-Type after the tenant stage checked it, so
  the upstream would parse a different request than the one authorised);
- protocol upgrades (WebSocket, h2c) and CONNECT: no route proxies them; answered at once, and the
  connection closed (an upgrade's bytes after the head are not HTTP).
"""

from __future__ import annotations

import re

from gateway.context import RequestContext
from gateway.errors import BadHost, BadPath, BadRequest, HeadersTooLarge, UpgradeNotAllowed, UriTooLong
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send

# Raw path bytes allowed: RFC 3986 pchar plus '/' (no '\\', no spaces, no controls, no non-ASCII).
_RAW_OK = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*\Z")  # \Z: `$` would take a final newline
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")
# Encoded separators, dots, percent (double encoding) and control bytes are never decoded.
_FORBIDDEN_PCT = frozenset(
    [0x2F, 0x5C, 0x2E, 0x25, 0x7F] + list(range(0x00, 0x20))
)


# Headers a `Connection` header may not name: the gateway or a stage reads them, or the forwarder
# rebuilds them (framing, identity, forwarding, tracing).
PROTECTED = frozenset({
    b"host", b"content-length", b"content-type", b"content-encoding", b"transfer-encoding",
    b"authorization", b"cookie", b"origin", b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"forwarded", b"via", b"x-real-ip", b"x-signature", b"x-hub-signature",
    b"x-hub-signature-256", b"traceparent", b"tracestate", b"x-gateway-identity", b"expect",
    b"access-control-request-method", b"access-control-request-headers",
})
CLOSE = {"Connection": "close"}


def split_path(raw: bytes) -> list[str]:
    """Canonical decoded segments of a raw path, or BadPath."""
    if not _RAW_OK.match(raw):
        raise BadPath(detail="path contains characters that are not allowed")
    # `find`, not `in`: bytes.__contains__ first tries its operand as an int and raises and
    # clears a TypeError internally, ~10x the cost of the search itself on a short path.
    if raw.find(b"//") >= 0:
        raise BadPath(detail="empty path segment")
    if raw == b"/":
        return []
    out = []
    for seg in raw[1:].split(b"/"):
        if seg in (b".", b".."):
            raise BadPath(detail="dot segments are not allowed")
        if seg.find(b"%") >= 0:
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
        cl = te = hosts = 0
        upgrade = conn_upgrade = False
        for k, v in headers:
            size += len(k) + len(v) + 4
            if k == b"content-length":
                cl += 1
            elif k == b"transfer-encoding":
                te += 1
                if v.lower() != b"chunked":
                    raise BadRequest("request.bad_framing", "only chunked transfer-encoding is accepted")
            elif k == b"host":
                hosts += 1
            elif k == b"upgrade":
                upgrade = True
            elif k == b"connection":
                for token in v.lower().split(b","):
                    token = token.strip()
                    if token == b"upgrade":
                        conn_upgrade = True
                    elif token in PROTECTED or token.startswith(b"x-gateway-"):
                        raise BadRequest("request.bad_framing",
                                         "the Connection header names a header the gateway needs end to end")
        # An Upgrade header without `Connection: upgrade` asks for nothing (and is dropped as
        # hop-by-hop); with it, the server's parser stops reading HTTP after this request.
        if upgrade and conn_upgrade:
            raise UpgradeNotAllowed(detail="protocol upgrades are not supported on this API", headers=CLOSE)
        if scope["method"] == "CONNECT":
            raise UpgradeNotAllowed(detail="CONNECT is not supported", headers=CLOSE)
        if hosts != 1 and scope.get("http_version") != "1.0":
            raise BadHost(detail="exactly one Host header is required" if hosts else "the Host header is missing")
        if hosts > 1:
            raise BadHost(detail="exactly one Host header is required")
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
