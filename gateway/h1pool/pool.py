"""A small HTTP/1.1 connection pool for one upstream (the forwarder's hot path).

Why not aiohttp/httpx: httpx's pool collapses under concurrency (encode/httpx#3215) and aiohttp's client
spends ~a quarter of the gateway's CPU per request on objects this proxy does not need.

A connection goes back to the pool only after a complete keep-alive answer to a completely sent
request; everything else is closed. One slot count bounds open + connecting connections; requests
beyond it queue FIFO for a released connection or a freed slot, bounded by their connect timeout.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_mod
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from gateway.h1pool.conn import Cancel, Conn, H1Response
from gateway.h1pool.errors import PoolSaturated, UpstreamCancelled, UpstreamConnectError, UpstreamTimeout
from gateway.h1pool.wire import build_head, send_stream

# Safe to resend after a keep-alive race: the upstream either never saw them or may see them twice.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
INLINE_BODY = 64 * 1024  # bodies up to this size share one write with the head


def _expire(fut: asyncio.Future[Conn | None], saturated: bool) -> None:
    if not fut.done():
        fut.set_exception(PoolSaturated("no upstream connection free within the pool wait") if saturated
                          else UpstreamTimeout("no upstream connection free within the connect timeout"))


class H1Pool:
    """LIFO keep-alive pool of HTTP/1.1 connections to a single `http://` or `https://` origin."""

    def __init__(self, url: str, max_connections: int = 256, keepalive_seconds: float = 30.0,
                 ssl: ssl_mod.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream url {url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.host = parts.hostname
        default = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default
        self._ssl = (ssl or ssl_mod.create_default_context()) if parts.scheme == "https" else None
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default else f"{host}:{self.port}"
        raw_authority = authority.encode("ascii") if authority.isascii() else authority.encode("idna")
        self._host_line = b" HTTP/1.1\r\nhost: " + raw_authority + b"\r\n"
        self._max = max_connections
        self._keepalive = keepalive_seconds
        self._idle: deque[Conn] = deque()
        self._waiters: deque[asyncio.Future[Conn | None]] = deque()
        self._conns: set[Conn] = set()
        self._count = 0  # open + connecting connections (the slots in use)
        self._methods: dict[str, bytes] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        return self._count

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    # --- the request --------------------------------------------------------------------------
    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes | AsyncIterator[bytes] | None, *, connect_timeout: float,
                      total_timeout: float, pool_wait: float | None = None,
                      cancel: Cancel | None = None) -> H1Response:
        """Send one request; returns once the response head arrived. Raises `UpstreamError`s
        (`PoolSaturated` when no connection frees up within `pool_wait`), `ValueError` for a head
        that cannot be sent safely, or whatever the body iterator raised."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + total_timeout
        connect_deadline = min(start + connect_timeout, deadline)
        wait_deadline = connect_deadline if pool_wait is None else min(start + pool_wait, connect_deadline)
        streamed = body is not None and not isinstance(body, bytes | bytearray)
        head, length = build_head(self._methods, self._host_line, method, target, headers, body, streamed)
        conn = await self._acquire(loop, connect_deadline, fresh=False, wait_deadline=wait_deadline)
        try:
            return await self._exchange(conn, method, head, body, length, streamed, deadline, cancel)
        except UpstreamConnectError:
            # The keep-alive race: the upstream closed a reused connection as we sent on it. Nothing
            # was answered, so a replayable idempotent request goes once more on a new connection.
            if not conn.served or streamed or method not in IDEMPOTENT:
                raise
        conn = await self._acquire(loop, min(loop.time() + connect_timeout, deadline), fresh=True)
        return await self._exchange(conn, method, head, body, length, streamed, deadline, cancel)

    async def _exchange(self, conn: Conn, method: str, head: bytes, body: bytes | AsyncIterator[bytes] | None,
                        length: int | None, streamed: bool, deadline: float,
                        cancel: Cancel | None = None) -> H1Response:
        conn.start(method == "HEAD", deadline)
        try:
            if cancel is not None:
                cancel.conn = conn
                if cancel.fired:
                    raise UpstreamCancelled("the exchange was cancelled")
            if conn.closed:
                raise UpstreamConnectError("the upstream closed the connection before the request")
            transport: asyncio.Transport = conn.transport  # type: ignore[assignment]
            if streamed:
                await send_stream(conn, transport, head, body, length)  # type: ignore[arg-type]
            elif body and len(body) > INLINE_BODY:  # type: ignore[arg-type]
                transport.write(head)
                transport.write(body)  # type: ignore[arg-type]
            else:
                transport.write(head + body if body else head)  # type: ignore[operator]
            while not conn.headers_done:
                if conn.exc is not None:
                    raise conn.exc
                await conn.wait()
            return H1Response(conn.status, conn.headers, conn, self)
        except BaseException:
            conn.active = False
            self._discard(conn)
            raise

    # --- slots and idle stack -----------------------------------------------------------------
    async def _acquire(self, loop: asyncio.AbstractEventLoop, connect_deadline: float, fresh: bool,
                       wait_deadline: float | None = None) -> Conn:
        saturated = wait_deadline is not None and wait_deadline < connect_deadline
        wait_until = wait_deadline if saturated else connect_deadline
        while True:
            if self._closed:
                raise UpstreamConnectError("the upstream pool is closed")
            idle = self._idle
            if not fresh and idle:
                now = loop.time()
                while idle:
                    conn = idle.pop()
                    conn.idle = False
                    if conn.closed or now - conn.idle_since > self._keepalive or conn.transport.is_closing():  # type: ignore[union-attr]
                        self._discard(conn)
                        continue
                    return conn
            if self._count < self._max:
                self._count += 1
                return await self._connect(loop, connect_deadline)
            fut: asyncio.Future[Conn | None] = loop.create_future()
            self._waiters.append(fut)
            timer = loop.call_at(wait_until, _expire, fut, saturated)  # type: ignore[arg-type]
            try:
                got = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._hand_back(fut.result())  # woken and cancelled in the same tick: pass it on
                raise
            finally:
                timer.cancel()
            if got is None:  # a slot was reserved for us
                return await self._connect(loop, connect_deadline)
            if got.closed or fresh:
                self._discard(got)
                continue
            return got

    async def _connect(self, loop: asyncio.AbstractEventLoop, connect_deadline: float) -> Conn:
        try:
            async with asyncio.timeout_at(connect_deadline):
                _, conn = await loop.create_connection(
                    lambda: Conn(self, loop), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None)
        except TimeoutError:
            self._slot_freed()
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            self._slot_freed()
            raise UpstreamConnectError(f"cannot connect to the upstream: {exc}") from exc
        except BaseException:
            self._slot_freed()
            raise
        if self._closed:
            self._conns.add(conn)
            self._discard(conn)
            raise UpstreamConnectError("the upstream pool is closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: Conn) -> None:
        conn.active = False
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if not conn.done or not conn.keep_alive or conn.closed or conn.exc is not None or self._closed:
            self._discard(conn)
            return
        conn.served += 1
        conn.chunks = []
        if conn.read_paused:
            conn.read_paused = False
            conn.transport.resume_reading()  # type: ignore[union-attr]
        self._hand_back(conn)

    def _hand_back(self, conn: Conn | None) -> None:
        """A usable connection (or, for None, a reserved slot) goes to the oldest waiter or idles."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        if conn is None:
            self._count -= 1
            return
        conn.idle = True
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(max(self._keepalive / 2, 0.5), self._sweep)

    def _discard(self, conn: Conn) -> None:
        if not conn.closed:
            conn.abort()
        if not conn.gone:
            conn.gone = True
            self._conns.discard(conn)
            self._slot_freed()

    def _slot_freed(self) -> None:
        self._count -= 1
        if self._waiters and not self._closed:
            self._count += 1
            self._hand_back(None)

    def _idle_lost(self, conn: Conn) -> None:
        """The upstream closed an idle connection (keep-alive expiry on its side)."""
        conn.idle = False
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._discard(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0].loop
        limit = loop.time() - self._keepalive
        while idle and idle[0].idle_since < limit:  # oldest first: LIFO keeps them at the left
            conn = idle.popleft()
            conn.idle = False
            self._discard(conn)
        if idle:
            self._sweeper = loop.call_later(max(self._keepalive / 2, 0.5), self._sweep)

    async def close(self) -> None:
        """Close every connection, idle or busy; waiting and later requests fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(UpstreamConnectError("the upstream pool is closed"))
        self._idle.clear()
        for conn in list(self._conns):
            conn.idle = False
            conn.abort()
            if not conn.active:
                self._discard(conn)
        await asyncio.sleep(0)  # let the transports run connection_lost
