"""One upstream connection: an asyncio Protocol feeding `httptools.HttpResponseParser`.

All state lives in plain slots and every wait goes through a single waiter future, so a request costs
one parser, one deadline timer and a few futures. A fresh parser per exchange (~0.2 µs) means no
state (HEAD framing, 1xx, a broken message) can leak into the next request on the connection.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpResponseParser

from gateway.deadlines import Deadline, sweep_for
from gateway.h1pool.errors import (
    UpstreamCancelled,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from gateway.h1pool.pool import H1Pool

HIGH_WATER = 256 * 1024  # buffered response bytes before we stop reading the socket
# Response head bytes (interim 1xx heads included) and header fields. Enforced on the bytes fed to
# the parser, not when httptools completes a line: httptools grows a header line by concatenation,
# so a 100 MB line would otherwise cost the worker memory and quadratic CPU before any check ran.
MAX_HEAD = 64 * 1024
MAX_HEADERS = 256
_FRAMING = frozenset({b"transfer-encoding", b"content-length"})

# After the head, bytes that carry no body byte (chunk-size lines, extensions, the trailer section)
# may not run past this between two body bytes: httptools buffers a trailer line whole, so an
# endless trailer would otherwise grow the worker until the total timeout. Checked per read, so
# the parser holds at most this plus one socket read (256 KiB) of them.
MAX_FRAMING = MAX_HEAD
_REASON_OK = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])


class Cancel:
    """Set by the caller when the exchange is no longer wanted (the client left): the connection
    it runs on is aborted at once and never returns to the pool."""

    __slots__ = ("fired", "conn")

    def __init__(self) -> None:
        self.fired = False
        self.conn: Conn | None = None

    def fire(self) -> None:
        self.fired = True
        conn = self.conn
        if conn is not None and conn.active and not conn.closed:
            conn._fail(UpstreamCancelled("the exchange was cancelled"))
            conn.abort()


class Conn(asyncio.Protocol):
    """A keep-alive capable connection; owned by the pool (idle) or by exactly one exchange."""

    __slots__ = (
        "pool", "loop", "transport", "parser", "waiter", "exc", "closed", "active", "is_head", "got_bytes",
        "interim", "headers_done", "done", "framed", "keep_alive", "status", "headers", "head_size",
        "chunks", "buffered", "read_paused", "write_paused", "timer", "idle_since", "served", "idle", "gone",
        "head_fed", "n_headers", "slack", "deadline", "idle_deadline",
    )

    def __init__(self, pool: H1Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: HttpResponseParser | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.exc: UpstreamError | None = None
        self.closed = False          # the transport is gone (EOF, reset, or we closed it)
        self.active = False          # an exchange owns the connection
        self.idle = False            # sitting in the pool's idle stack
        self.gone = False            # its pool slot was given back
        self.write_paused = False
        self.read_paused = False
        self.timer: Deadline | None = None
        # Coarse deadlines (one sweep timer per loop), one of each per connection, re-armed per exchange.
        sweep = sweep_for(loop)
        self.deadline = sweep.deadline(self._on_deadline)
        self.idle_deadline = sweep.deadline(self._on_idle)
        self.idle_since = 0.0
        self.served = 0
        self._reset(False)

    def _reset(self, is_head: bool) -> None:
        self.is_head = is_head
        self.got_bytes = self.interim = self.headers_done = self.done = self.framed = self.keep_alive = False
        self.status = self.head_size = self.buffered = self.head_fed = self.n_headers = self.slack = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.exc = None

    # --- driven by the pool -------------------------------------------------------------------
    def start(self, is_head: bool, deadline: float) -> None:
        self._reset(is_head)
        self.active = True
        self.parser = HttpResponseParser(self)
        self.timer = self.deadline.at(deadline)

    async def wait(self, idle: float | None = None) -> None:
        """Sleep until the protocol has news (headers, body, drain, EOF, error, deadline); with
        `idle`, fail the exchange when nothing arrives for that long."""
        fut = self.waiter = self.loop.create_future()
        timer = self.idle_deadline.later(idle) if idle is not None else None
        try:
            await fut
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def _on_idle(self) -> None:
        if not self.done:
            self._fail(UpstreamTimeout("the upstream stayed silent mid-response"))
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        fut = self.waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _fail(self, exc: UpstreamError) -> None:
        if self.exc is None:
            self.exc = exc
        self.keep_alive = False
        self._wake()

    def _finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wake()

    def _on_deadline(self) -> None:
        self.timer = None
        if not self.done:
            self._fail(UpstreamTimeout("the upstream did not finish within the total timeout"))
            self.abort()

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.active or self.done:
            # Bytes nobody asked for: the stream is out of sync, never reuse it.
            self.keep_alive = False
            if not self.active:
                self.abort()
            return
        self.got_bytes = True
        if not self.headers_done:
            room = MAX_HEAD - self.head_fed
            if len(data) > room:
                # Feed only what the head may still use; if it is not complete by then, it is too
                # large, and the rest is never handed to the parser.
                if not self._feed(data[:room]):
                    return
                if not self.headers_done:
                    self._fail(UpstreamProtocolError("response head too large"))
                    self.abort()
                    return
                data = data[room:]
                if self.done:  # HEAD: bytes after the head are junk
                    self.keep_alive = False
                    return
            else:
                self.head_fed += len(data)
        if self.headers_done:
            self.slack += len(data)  # on_body sets it back to 0
            if self._feed(data) and self.slack > MAX_FRAMING and not self.done:
                self._fail(UpstreamProtocolError("response trailer section or chunk framing too large"))
                self.abort()
            return
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except HttpParserError as exc:
            if self.done:  # junk after a complete answer: keep the answer, drop the connection
                self.keep_alive = False
                return False
            cause = exc.__context__
            if not isinstance(cause, UpstreamError):
                cause = UpstreamProtocolError(f"malformed response: {exc}")
            self._fail(cause)
            self.abort()
            return False
        return True

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.active:
            if self.idle:
                self.pool._idle_lost(self)
            return
        if self.done:
            return
        if self.headers_done and not self.framed and exc is None and self.exc is None:
            self.keep_alive = False  # close-delimited body: EOF is its end
            self._finish()
        elif not self.got_bytes:
            self._fail(UpstreamConnectError("the upstream closed the connection before answering"))
        else:
            self._fail(UpstreamProtocolError("the upstream closed the connection mid-response"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # --- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.done:
            raise UpstreamProtocolError("unexpected data after the response")

    def on_status(self, reason: bytes) -> None:
        # reason-phrase = *( HTAB / SP / VCHAR / obs-text ); a control byte is a broken or hostile peer.
        if reason.translate(None, _REASON_OK):
            raise UpstreamProtocolError("control characters in the status line")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        self.n_headers += 1
        if self.head_size > MAX_HEAD or self.n_headers > MAX_HEADERS:
            raise UpstreamProtocolError("response head too large")
        if self.headers_done:
            # A chunked body's trailer fields come through the same callback: they are dropped
            # (never forwarded), and must not join the header list the client's head is built from.
            # Framing fields never belong in a trailer (RFC 9110 §6.5.1; h11 refuses a repeated or
            # non-chunked one): a peer that sends them is broken or probing a parser downstream.
            if name.lower() in _FRAMING:
                raise UpstreamProtocolError("framing field in the trailer section")
            return
        self.headers.append((name.lower(), value))

    def _check_framing(self) -> None:
        """RFC 9112 §6.1/§6.3: Transfer-Encoding is a list of codings and `chunked` must be the last.
        We decode no other coding, so the one accepted list is exactly `chunked`, in one field; a
        message with both Transfer-Encoding and Content-Length is refused (a smuggling sign)."""
        te = [v for k, v in self.headers if k == b"transfer-encoding"]
        cl = [v for k, v in self.headers if k == b"content-length"]
        if te:
            codings = [c.strip().lower() for c in b",".join(te).split(b",")]
            if len(te) > 1 or codings != [b"chunked"]:
                raise UpstreamProtocolError("unsupported transfer-encoding (only a single `chunked` is accepted)")
            if cl:
                raise UpstreamProtocolError("both transfer-encoding and content-length")
            self.framed = True
        elif cl:
            if len(cl) > 1 or not cl[0].strip().isdigit():
                raise UpstreamProtocolError("invalid or repeated content-length")
            self.framed = True

    def on_headers_complete(self) -> None:
        parser: HttpResponseParser = self.parser  # type: ignore[assignment]
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("unexpected protocol upgrade")
            # 100 Continue / 103 Early Hints: skip, the real answer follows on the same stream.
            self.interim = True
            self.headers = []
            self.head_size = self.n_headers = 0
            return
        self._check_framing()
        self.status = status
        self.keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"
        self.headers_done = True
        if self.is_head:
            # httptools cannot be told "no body follows" (so it would also think an unframed answer
            # needs EOF): decide keep-alive ourselves; the parser is discarded after this exchange.
            self.keep_alive = parser.get_http_version() == "1.1" and not any(
                k == b"connection" and b"close" in v.lower() for k, v in self.headers)
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.done:  # a body to HEAD: ignore it and never reuse the stream
            self.keep_alive = False
            return
        self.chunks.append(body)
        self.buffered += len(body)
        self.slack = 0
        if self.buffered > HIGH_WATER and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.done:
            self._finish()

    # --- body consumption ---------------------------------------------------------------------
    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self.read_paused:
            self.read_paused = False
            if not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]
        return data


class H1Response:
    """Status and headers of an upstream answer; the body streams through `read_chunk()`.

    Header names are lower-cased, values raw, order and duplicates kept. Always call `release()`
    (idempotent) in a `finally`: a response that is dropped unreleased leaks its pool slot."""

    __slots__ = ("status", "headers", "_conn", "_pool")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], conn: Conn, pool: H1Pool) -> None:
        self.status = status
        self.headers = headers
        self._conn: Conn | None = conn
        self._pool = pool

    async def read_chunk(self, idle: float | None = None) -> bytes:
        """Next piece of the body (everything buffered so far); b"" at its end. With `idle`, an
        upstream silent for that long mid-body fails the exchange (`UpstreamTimeout`)."""
        conn = self._conn
        while conn is not None:
            if conn.chunks:
                return conn.take()
            if conn.exc is not None:
                raise conn.exc
            if conn.done:
                self.release()  # give the connection back as soon as the body is complete
                return b""
            await conn.wait(idle)
        return b""

    @property
    def complete(self) -> bool:
        """The whole body has arrived (or the response was released)."""
        conn = self._conn
        return conn is None or conn.done

    def release(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool._release(conn)
