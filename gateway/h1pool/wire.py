"""The request on the wire: one head per request, and streamed bodies with exact framing.

Framing is ours alone: the caller's `host`, `content-length` and `transfer-encoding` never reach the
wire as given (a second, disagreeing framing header is how request smuggling starts), and a CR or LF
anywhere in the head is refused, so caller data can never forge a header line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.h1pool.conn import Conn
from gateway.h1pool.errors import RequestBodyLengthError

FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # send `content-length: 0` when they carry nothing
TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def build_head(methods: dict[str, bytes], host_line: bytes, method: str, target: bytes,
               headers: list[tuple[bytes, bytes]], body: bytes | AsyncIterator[bytes] | None,
               streamed: bool) -> tuple[bytes, int | None]:
    """The request head as one bytes object, and the declared length of a streamed body (None: chunked)."""
    prefix = methods.get(method)
    if prefix is None:
        raw = method.encode("ascii")
        if not raw or not set(raw) <= TOKEN:
            raise ValueError(f"invalid method {method!r}")
        prefix = methods[method] = raw + b" "
    if not target or target.find(b" ") >= 0:
        raise ValueError("invalid request target")
    parts = [prefix, target, host_line]
    lines = 2
    declared: bytes | None = None
    for k, v in headers:
        lk = k.lower()
        if lk in FRAMING:
            if lk == b"content-length":
                if declared is not None and declared != v.strip():
                    raise ValueError("conflicting content-length headers")
                declared = v.strip()
            continue
        parts += (k, b": ", v, b"\r\n")
        lines += 1
    length: int | None = None
    if streamed:
        if declared is None:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
        else:
            if not declared.isdigit():
                raise ValueError("invalid content-length")
            length = int(declared)
            parts.append(b"content-length: %d\r\n\r\n" % length)
    elif body:
        parts.append(b"content-length: %d\r\n\r\n" % len(body))  # type: ignore[arg-type]
    elif method in BODY_METHODS:
        parts.append(b"content-length: 0\r\n\r\n")
    else:
        parts.append(b"\r\n")
        lines -= 1
    head = b"".join(parts)
    # A CR or LF inside a name, value or target would let a caller's data forge headers.
    if head.count(b"\n") != lines + 2 or head.count(b"\r") != lines + 2:
        raise ValueError("CR/LF in request head")
    return head, length


async def send_stream(conn: Conn, transport: asyncio.Transport, head: bytes, body: AsyncIterator[bytes],
                      length: int | None) -> None:
    """Send the head and a streamed body; any failure leaves the upstream with an incomplete request."""
    transport.write(head)
    sent = 0
    async for chunk in body:
        if conn.exc is not None or conn.headers_done:
            # An early answer (say 413) or a dead stream: stop sending, the connection is spent.
            conn.keep_alive = False
            return
        if not chunk:
            continue
        n = len(chunk)
        sent += n
        if length is None:
            transport.writelines((b"%x\r\n" % n, chunk, b"\r\n"))
        elif sent > length:
            raise RequestBodyLengthError("the request body is longer than its content-length")
        else:
            transport.write(chunk)
        while conn.write_paused and conn.exc is None and not conn.headers_done:
            await conn.wait()
    if length is None:
        transport.write(b"0\r\n\r\n")
    elif sent != length:
        raise RequestBodyLengthError("the request body is shorter than its content-length")
