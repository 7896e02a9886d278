"""A lean, pipelined Redis (RESP2) client for the rate limiter's one-round-trip hot path.

redis-py's asyncio client spends ~150 µs of CPU per round trip (pool condition, per-read
timeouts, packing, parsing). Here one long-lived connection (by default) is shared by every
caller: a call appends its pre-encoded commands to the connection's outgoing buffer, and the
buffer goes out in ONE `transport.write` at the end of the current event-loop step, so every
request that reached Redis in the same step shares one send syscall (and Redis answers them in
one read and one write). Replies are matched to callers in FIFO order (Redis answers a
connection's commands in order).

    RespError               an error reply (`-ERR ...`); a plain Exception
    RespConnectionError     ConnectionError: connect/reset/closed mid-reply; the connection is
                            dropped, every call pending on it fails, the next call reconnects

No retries and no per-read timeouts: the caller bounds the whole call (`asyncio.timeout`) and
decides what a failure means. A cancelled call keeps its slot in the FIFO, so its replies are
still consumed (and dropped) and later callers get their own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Arg = bytes | str | int
Command = tuple[Arg, ...]


class RespError(Exception):
    """An error reply from Redis, e.g. `WRONGTYPE ...`; `str(exc)` is the server's message."""


class RespConnectionError(ConnectionError):
    """The connection failed or was lost; pending calls on it fail with this."""


_INCOMPLETE = False  # what `Reader.gets()` returns when no whole reply is buffered (as hiredis)


class PyReader:
    """Pure-Python RESP2 reader, hiredis.Reader's interface: error replies are RespError values."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buf = self._buf[self._pos :] + data if self._pos else self._buf + data
        self._pos = 0

    def gets(self) -> Any:
        try:
            value, self._pos = self._parse(self._pos)
        except IndexError:  # not enough data yet: keep the buffer, parse again after `feed`
            return _INCOMPLETE
        if self._pos == len(self._buf):
            self._buf, self._pos = b"", 0
        return value

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise IndexError
        kind, line = buf[pos], buf[pos + 1 : end]
        pos = end + 2
        if kind == 36:  # $ bulk string
            size = int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                raise IndexError
            return buf[pos : pos + size], pos + size + 2
        if kind == 58:  # : integer
            return int(line), pos
        if kind == 43:  # + simple string
            return line, pos
        if kind == 42:  # * array
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        if kind == 45:  # - error
            return RespError(line.decode("utf-8", "replace")), pos
        raise ValueError(f"RESP protocol error: unexpected type byte {kind!r}")


try:
    import hiredis

    def new_reader() -> Any:
        return hiredis.Reader(replyError=RespError)

except ImportError:  # pragma: no cover - depends on the environment

    def new_reader() -> Any:
        return PyReader()


def encode(commands: Sequence[Command], out: list[bytes] | None = None) -> list[bytes]:
    """Append RESP arrays of bulk strings for `commands` to `out`."""
    out = [] if out is None else out
    for cmd in commands:
        out.append(b"*%d\r\n" % len(cmd))
        for arg in cmd:
            if isinstance(arg, bytes):
                raw = arg
            elif isinstance(arg, str):
                raw = arg.encode()
            elif isinstance(arg, int) and not isinstance(arg, bool):
                raw = b"%d" % arg
            else:  # bool, float, None: refuse rather than send something surprising
                raise TypeError(f"unsupported Redis argument type {type(arg).__name__}")
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return out


_MULTI, _EXEC = b"*1\r\n$5\r\nMULTI\r\n", b"*1\r\n$4\r\nEXEC\r\n"


class _Conn(asyncio.Protocol):
    """One connection: FIFO of (future, number of replies it waits for), and the outgoing buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[tuple[asyncio.Future[list[Any]], int]] = deque()
        self.replies: list[Any] = []
        self.reader = new_reader()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.outgoing: list[bytes] = []  # written by `flush`, scheduled when it turns non-empty

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        if self.closed:  # lost while its opener was resuming: nothing would ever answer
            raise RespConnectionError("Redis connection lost")
        fut: asyncio.Future[list[Any]] = self.loop.create_future()
        # Waiter and payload are queued together, with no await between them: FIFO order of
        # waiters is the order of the bytes on the wire.
        self.waiters.append((fut, count))
        if not self.outgoing:
            self.loop.call_soon(self.flush)
        self.outgoing.append(payload)
        return fut

    def flush(self) -> None:
        out, self.outgoing = self.outgoing, []
        if out and not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        reader, replies, waiters = self.reader, self.replies, self.waiters
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not _INCOMPLETE:
                replies.append(reply)
                if len(replies) == waiters[0][1]:  # IndexError: a reply nobody asked for
                    fut = waiters.popleft()[0]
                    if not fut.done():  # a cancelled caller's replies are dropped here
                        fut.set_result(replies)
                    replies = self.replies = []
        except Exception as exc:  # noqa: BLE001 - a desynchronised stream cannot be trusted
            self.abort(f"Redis protocol error: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(f"Redis connection lost: {exc or 'closed by server'}")

    def abort(self, message: str) -> None:
        self.closed = True
        self.outgoing = []
        if self.transport is not None:
            self.transport.abort()
        waiters, self.waiters = self.waiters, deque()
        for fut, _ in waiters:
            if not fut.done():
                fut.set_exception(RespConnectionError(message))  # one each: tracebacks don't pile up


class RespClient:
    """Pipelined client over lazily opened connection(s) to one Redis (TCP, TLS or unix).

    One connection is the fastest here: calls made in the same loop step share its writes and
    reads; more connections split them (measured in tests/ratelimit/bench_resp.py)."""

    def __init__(self, url: str, *, connect_timeout: float = 0.25, connections: int = 1) -> None:
        parts = urlsplit(url)
        scheme, query = parts.scheme.lower(), parse_qs(parts.query)
        if scheme not in ("redis", "rediss", "unix", "redis+unix"):
            raise ValueError(f"unsupported Redis URL scheme {scheme!r} (redis://, rediss://, unix://)")
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self._unix = scheme.endswith("unix")
        self._host, self._port = parts.hostname or "localhost", parts.port or 6379
        self._path = unquote(parts.path)
        self._ssl = ssl.create_default_context() if scheme == "rediss" else None
        db = query["db"][0] if "db" in query else (None if self._unix else parts.path.strip("/") or None)
        handshake: list[Command] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            handshake.append(("AUTH", user, unquote(parts.password)) if user else ("AUTH", unquote(parts.password)))
        if db is not None:
            handshake.append(("SELECT", int(db)))  # int(): a malformed db fails here, not per call
        self._handshake = handshake
        self.connect_timeout = connect_timeout
        self._conns: list[_Conn | None] = [None] * connections
        self._connecting: list[asyncio.Task[_Conn] | None] = [None] * connections
        self._next = 0
        self._closed = False

    async def execute(self, commands: Sequence[Command], *, transaction: bool = True) -> list[Any]:
        """One round trip. `transaction=True`: MULTI ... EXEC, returns EXEC's array.

        An error reply to MULTI or to queueing a command (e.g. unknown command), or an aborted
        EXEC, raises RespError. Errors of commands that ran inside EXEC (e.g. INCR on a
        non-integer) come back as RespError *instances* in the returned list, as Redis ran the
        rest; likewise every reply's error with `transaction=False`. Replies are raw: bulk and
        simple strings as bytes, integers as int, nil as None.
        """
        if transaction:
            return await self.execute_encoded(b"".join(encode(commands)), len(commands))
        if not commands:
            return []
        return await self._send(b"".join(encode(commands)), len(commands))

    async def execute_encoded(self, commands: bytes, count: int) -> list[Any]:
        """`execute(…, transaction=True)` of `count` commands already RESP-encoded (`encode`, or a
        template of its output): the hot path builds a request's commands with one format each."""
        replies = await self._send(_MULTI + commands + _EXEC, count + 2)
        for reply in replies[:-1]:
            if isinstance(reply, RespError):
                raise reply
        result = replies[-1]
        if not isinstance(result, list):  # EXECABORT error, or nil (aborted)
            raise result if isinstance(result, RespError) else RespError("transaction aborted")
        return result

    async def _send(self, payload: bytes, count: int) -> list[Any]:
        slot = self._next
        self._next = (slot + 1) % len(self._conns)
        conn = self._conns[slot]
        if conn is None or conn.closed:
            conn = await self._connect(slot)
        return await conn.send(payload, count)

    async def ping(self) -> bool:
        """True if Redis answers PONG; False on a connection failure or an error reply."""
        try:
            return (await self.execute([(b"PING",)], transaction=False))[0] == b"PONG"
        except (RespError, OSError):  # OSError covers RespConnectionError
            return False

    async def close(self) -> None:
        """`disconnect()` for good: later calls fail with RespConnectionError."""
        self._closed = True
        await self.disconnect()

    async def disconnect(self) -> None:
        """Drop every connection now (pending calls fail with RespConnectionError); calls after
        reconnect. For a health probe: a half-open TCP connection (host gone without a RST) is
        never reported lost, and calls queued on it would only ever time out."""
        for task in self._connecting:
            if task is not None and not task.done():
                task.cancel()
        for conn in self._conns:
            if conn is not None:
                conn.abort("Redis client disconnected")
        self._conns = [None] * len(self._conns)

    async def _connect(self, slot: int) -> _Conn:
        # Callers that find the slot down share one attempt; each call waits for at most one.
        task = self._connecting[slot]
        if task is None or task.done():
            task = self._connecting[slot] = asyncio.get_running_loop().create_task(self._open(slot))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "unretrieved"
        return await asyncio.shield(task)

    async def _open(self, slot: int) -> _Conn:
        if self._closed:
            raise RespConnectionError("Redis client closed")
        loop, conn = asyncio.get_running_loop(), None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._unix:
                    _, conn = await loop.create_unix_connection(_Conn, self._path)
                else:
                    host, tls = self._host, self._ssl
                    _, conn = await loop.create_connection(
                        _Conn, host, self._port, ssl=tls, server_hostname=host if tls else None
                    )
                if self._handshake:  # AUTH / SELECT, pipelined; an error reply raises RespError
                    for reply in await conn.send(b"".join(encode(self._handshake)), len(self._handshake)):
                        if isinstance(reply, RespError):
                            raise reply
            self._conns[slot] = conn
            return conn
        except (OSError, RuntimeError, TimeoutError) as exc:  # uvloop: RuntimeError if Redis dies mid-connect
            raise RespConnectionError(f"cannot connect to Redis: {exc!r}") from exc
        finally:
            if conn is not None and self._conns[slot] is not conn:  # refused, timed out or cancelled
                conn.abort("connect failed")
