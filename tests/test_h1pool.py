"""H1Pool against real sockets: an in-process uvicorn app and a raw asyncio server that misbehaves
on demand. Every test runs on uvloop (what the gateway runs) and on the stock asyncio loop."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import inspect
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.h1pool import (
    H1Pool,
    H1Response,
    RequestBodyLengthError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.h1pool import conn as conn_mod
from tests.support.procs import free_port

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
T = {"connect_timeout": 2.0, "total_timeout": 5.0}


def on_loops(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on a loop of our choosing (pytest-asyncio only offers policy overrides
    from a conftest, and this file must stay self-contained)."""

    def wrapper(loop_kind: str, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
            runner.run(asyncio.wait_for(fn(**kwargs), 15))

    # A plain function with the test's own parameters plus `loop_kind`: pytest parametrizes it and
    # pytest-asyncio leaves it alone.
    sig = inspect.signature(fn)
    loop_param = inspect.Parameter("loop_kind", inspect.Parameter.KEYWORD_ONLY)
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), loop_param])  # type: ignore[attr-defined]
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper.pytestmark = getattr(fn, "pytestmark", [])  # type: ignore[attr-defined]
    return pytest.mark.parametrize("loop_kind", list(LOOPS))(wrapper)


# --- a real upstream: uvicorn ------------------------------------------------------------------
BIG_PIECE = bytes(range(256)) * 256  # 64 KiB


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    APP_CLIENTS.add(tuple(scope["client"]))
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(int(q["ms"]) / 1000)
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(int(q["n"])):
            await send({"type": "http.response.body", "body": b"piece-%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(int(q["pieces"])):
            await send({"type": "http.response.body", "body": BIG_PIECE, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-length", b"%d" % len(body)),
        (b"x-method", scope["method"].encode()),
        (b"x-sha", hashlib.sha256(body).hexdigest().encode()),
        (b"x-headers", b";".join(k + b"=" + v for k, v in scope["headers"])),
        (b"x-dup", b"1"), (b"X-Dup", b"2"),
    ]
    if path == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 201 if path == "/created" else 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


APP_CLIENTS: set[Any] = set()


class Uvicorn:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        APP_CLIENTS.clear()
        self.clients = APP_CLIENTS
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning",
                                loop="none", http="httptools", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)

    async def __aenter__(self) -> Uvicorn:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task


# --- a raw upstream that misbehaves -----------------------------------------------------------
Handler = Callable[["Raw", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Raw:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conns = self.open = self.max_open = 0
        self.received: list[bytes] = []  # everything read per connection, by read_all/read_request
        self.heads: list[bytes] = []

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._on, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def keepalive(response: bytes = OK, delay: float = 0.0) -> Handler:
    async def handler(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await raw.read_request(reader)
            if delay:
                await asyncio.sleep(delay)
            writer.write(response)
            await writer.drain()
    return handler


def once(response: bytes, close: bool = True) -> Handler:
    """Answer the first request with raw bytes, then close (or hang with the socket open)."""
    async def handler(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(response)
        await writer.drain()
        if not close:
            await asyncio.sleep(30)
    return handler


def record_until_eof() -> Handler:
    async def handler(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.received.append(await reader.read(-1))
    return handler


async def fetch(pool: H1Pool, method: str = "GET", target: bytes = b"/", headers: list[tuple[bytes, bytes]] | None = None,
                body: bytes | AsyncIterator[bytes] | None = None, **timeouts: float) -> tuple[H1Response, bytes]:
    resp = await pool.request(method, target, headers or [], body, **{**T, **timeouts})
    try:
        out = b""
        while chunk := await resp.read_chunk():
            out += chunk
        return resp, out
    finally:
        resp.release()


async def agen(*chunks: bytes, fail: BaseException | None = None, pause: float = 0) -> AsyncIterator[bytes]:
    for c in chunks:
        if pause:
            await asyncio.sleep(pause)
        yield c
    if fail is not None:
        raise fail


# --- against uvicorn --------------------------------------------------------------------------
@on_loops
async def test_get_post_head_and_reuse() -> None:
    async with Uvicorn() as up:
        pool = H1Pool(up.url)
        resp, body = await fetch(pool, "GET", b"/echo?x=1", [(b"accept", b"*/*")])
        assert (resp.status, body) == (200, b"")
        assert (b"x-dup", b"1") in resp.headers and (b"x-dup", b"2") in resp.headers  # dups kept, names lower
        assert b"host=127.0.0.1:%d" % up.port in dict(resp.headers)[b"x-headers"]
        payload = bytes(range(256)) * 50
        resp, body = await fetch(pool, "POST", b"/created", body=payload)
        assert (resp.status, body) == (201, payload)
        resp, body = await fetch(pool, "HEAD", b"/echo")
        assert (resp.status, body) == (200, b"")
        resp, body = await fetch(pool, "PUT", b"/echo", body=None)
        assert dict(resp.headers)[b"x-method"] == b"PUT" and b"content-length=0" in dict(resp.headers)[b"x-headers"]
        for _ in range(10):
            await fetch(pool, "GET", b"/echo")
        assert len(up.clients) == 1  # one keep-alive connection served all 14 requests, HEAD included
        assert (pool.connections, pool.idle_connections) == (1, 1)
        transport = pool._idle[0].transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await pool.close()


@on_loops
async def test_streamed_request_bodies_arrive_byte_exact() -> None:
    async with Uvicorn() as up:
        pool = H1Pool(up.url)
        chunks = [bytes([i]) * (1000 + i) for i in range(50)] + [b"", b"tail"]
        whole = b"".join(chunks)
        resp, body = await fetch(pool, "POST", b"/echo", body=agen(*chunks))  # chunked
        assert body == whole and b"transfer-encoding=chunked" in dict(resp.headers)[b"x-headers"]
        resp, body = await fetch(pool, "POST", b"/echo", [(b"content-length", b"%d" % len(whole))], agen(*chunks))
        assert body == whole and b"content-length=%d" % len(whole) in dict(resp.headers)[b"x-headers"]
        assert len(up.clients) == 1
        await pool.close()


@on_loops
async def test_caller_framing_headers_never_reach_the_wire() -> None:
    async with Raw(keepalive()) as up:
        pool = H1Pool(up.url)
        bad = [(b"Host", b"evil"), (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"99"), (b"x-a", b"1")]
        await fetch(pool, "POST", b"/p", bad, b"abc")
        head = up.heads[0]
        assert head == b"POST /p HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n" % up.port
        await pool.close()


@pytest.mark.parametrize(("method", "target", "headers"), [
    pytest.param("GET", b"/a\r\nx: y", [], id="crlf-in-target"),
    pytest.param("GET", b"/a b", [], id="space-in-target"),
    pytest.param("GET", b"/", [(b"x-a", b"1\r\nx-injected: 1")], id="crlf-in-value"),
    pytest.param("GET", b"/", [(b"x-a", b"1\nx-injected: 1")], id="lf-in-value"),
    pytest.param("GET", b"/", [(b"x-a\r", b"1")], id="cr-in-name"),
    pytest.param("GE T", b"/", [], id="bad-method"),
    pytest.param("POST", b"/", [(b"content-length", b"1"), (b"content-length", b"2")], id="conflicting-cl"),
    pytest.param("POST", b"/", [(b"content-length", b"-1")], id="negative-cl"),
])
@on_loops
async def test_unsafe_heads_are_refused(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    async with Raw(keepalive()) as up:
        pool = H1Pool(up.url)
        with pytest.raises(ValueError):
            await pool.request(method, target, headers, agen(b"x"), **T)
        assert up.conns == 0 and pool.connections == 0
        await pool.close()


@on_loops
async def test_chunked_and_large_streamed_responses_with_backpressure() -> None:
    async with Uvicorn() as up:
        pool = H1Pool(up.url)
        _, body = await fetch(pool, "GET", b"/chunked?n=300")
        assert body == b"".join(b"piece-%d\n" % i for i in range(300))
        pieces = 128  # 8 MiB
        resp = await pool.request("GET", b"/big?pieces=%d" % pieces, [], None, **T)
        conn = resp._conn
        assert conn is not None
        await asyncio.sleep(0.2)  # a slow reader: the socket must be paused, not buffered without bound
        assert conn.read_paused and conn.buffered <= conn_mod.HIGH_WATER + 256 * 1024
        digest, total, biggest = hashlib.sha256(), 0, 0
        while chunk := await resp.read_chunk():
            digest.update(chunk)
            total += len(chunk)
            biggest = max(biggest, len(chunk))
        resp.release()
        assert total == pieces * len(BIG_PIECE)
        assert digest.digest() == hashlib.sha256(BIG_PIECE * pieces).digest()
        assert biggest <= conn_mod.HIGH_WATER + 256 * 1024
        assert (pool.connections, pool.idle_connections, len(up.clients)) == (1, 1, 1)
        await pool.close()


@on_loops
async def test_server_connection_close_is_honoured() -> None:
    async with Uvicorn() as up:
        pool = H1Pool(up.url)
        resp, _ = await fetch(pool, "GET", b"/close")
        assert dict(resp.headers)[b"connection"] == b"close"
        assert pool.connections == 0
        await fetch(pool, "GET", b"/echo")
        assert len(up.clients) == 2
        await pool.close()


@on_loops
async def test_max_connections_respected_under_100_concurrent_requests() -> None:
    async with Raw(keepalive(delay=0.01)) as up:
        pool = H1Pool(up.url, max_connections=8)
        results = await asyncio.gather(*(fetch(pool, "GET", b"/x") for _ in range(100)))
        assert all(r.status == 200 and b == b"ok" for r, b in results)
        assert up.max_open <= 8 and up.conns <= 8 and pool.connections <= 8
        await pool.close()


# --- framing of answers -----------------------------------------------------------------------
@pytest.mark.parametrize(("response", "body", "reusable"), [  # the server keeps the socket open
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True, id="content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", b"hello",
                 True, id="chunked"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", True,
                 id="100-continue-skipped"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", b"", True, id="204-no-body"),
    pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", b"", True, id="304-no-body"),
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False, id="http10-closes"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False, id="conn-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK", b"ok", False, id="junk-after-answer"),
])
@on_loops
async def test_response_framing(response: bytes, body: bytes, reusable: bool) -> None:
    async with Raw(once(response, close=False)) as up:
        pool = H1Pool(up.url)
        resp, got = await fetch(pool)
        assert got == body
        await asyncio.sleep(0.05)
        assert pool.idle_connections == (1 if reusable else 0)
        await pool.close()


@on_loops
async def test_close_delimited_response() -> None:
    async with Raw(once(b"HTTP/1.1 200 OK\r\n\r\nhello" + b"x" * 100000)) as up:
        pool = H1Pool(up.url)
        resp, got = await fetch(pool)
        assert got == b"hello" + b"x" * 100000 and pool.connections == 0
        await pool.close()


@on_loops
async def test_head_with_content_length_has_no_body_and_stays_reusable() -> None:
    async with Raw(keepalive(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")) as up:
        pool = H1Pool(up.url)
        for _ in range(3):
            resp, got = await fetch(pool, "HEAD")
            assert (resp.status, got) == (200, b"")
        assert up.conns == 1
        await pool.close()


@pytest.mark.parametrize("response", [
    pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="bad-status-code"),
    pytest.param(b"FOO\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", id="double-cl"),
    pytest.param(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n", id="head-too-large"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", id="upgrade"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
])
@on_loops
async def test_malformed_answers_are_protocol_errors(response: bytes) -> None:
    async with Raw(once(response, close=False)) as up:
        pool = H1Pool(up.url)
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool)
        assert pool.connections == 0
        await pool.close()


@pytest.mark.parametrize("response", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10, id="short-content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", id="unterminated-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Len", id="mid-head"),
])
@on_loops
async def test_server_closing_mid_response_is_a_protocol_error(response: bytes) -> None:
    async with Raw(once(response)) as up:
        pool = H1Pool(up.url)
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool)
        assert pool.connections == 0
        await pool.close()


# --- keep-alive races and retry safety --------------------------------------------------------
@on_loops
async def test_idle_connection_closed_by_server_is_replaced() -> None:
    async with Raw(once(OK)) as up:  # answers, then closes the idle connection
        pool = H1Pool(up.url)
        await fetch(pool)
        await asyncio.sleep(0.05)
        assert pool.idle_connections == 0  # the EOF while idle dropped it
        resp, body = await fetch(pool)
        assert body == b"ok" and up.conns == 2
        await pool.close()


def close_on_second_request() -> Handler:
    """The keep-alive race, made deterministic: a reused connection dies as the request lands."""
    async def handler(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = raw.conns == 1
        await raw.read_request(reader)
        writer.write(OK)
        await writer.drain()
        if first:
            await raw.read_request(reader)  # then close without a byte of answer
        else:
            await keepalive()(raw, reader, writer)
    return handler


@pytest.mark.parametrize(("method", "streamed", "retried"), [
    pytest.param("GET", False, True, id="get-retried"),
    pytest.param("DELETE", False, True, id="delete-retried"),
    pytest.param("PUT", False, True, id="put-bytes-retried"),
    pytest.param("POST", False, False, id="post-not-retried"),
    pytest.param("PATCH", False, False, id="patch-not-retried"),
    pytest.param("PUT", True, False, id="put-streamed-not-retried"),
])
@on_loops
async def test_stale_connection_retry_rule(method: str, streamed: bool, retried: bool) -> None:
    async with Raw(close_on_second_request()) as up:
        pool = H1Pool(up.url)
        await fetch(pool)
        body: bytes | AsyncIterator[bytes] = agen(b"data") if streamed else b"data"
        if retried:
            resp, got = await fetch(pool, method, b"/again", body=body)
            assert got == b"ok" and up.conns == 2
        else:
            with pytest.raises(UpstreamConnectError):  # no byte of answer: "connect" class, 502
                await fetch(pool, method, b"/again", body=body)
            await asyncio.sleep(0.05)
            assert up.conns == 1  # never sent twice
        await pool.close()


@on_loops
async def test_keepalive_expiry_on_our_side() -> None:
    async with Raw(keepalive()) as up:
        pool = H1Pool(up.url, keepalive_seconds=0.1)
        await fetch(pool)
        await asyncio.sleep(0.25)
        await fetch(pool)
        assert up.conns == 2
        await pool.close()


@on_loops
async def test_cancelled_request_frees_its_connection() -> None:
    async with Raw(keepalive(delay=5)) as up:
        pool = H1Pool(up.url, max_connections=1)
        task = asyncio.create_task(fetch(pool))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.connections == 0  # the half-used connection is closed, never pooled
        await pool.close()


# --- connect and timeouts ---------------------------------------------------------------------
@on_loops
async def test_connection_refused() -> None:
    pool = H1Pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamConnectError):
        await fetch(pool)
    assert pool.connections == 0
    await pool.close()


@on_loops
async def test_connect_timeout_on_a_full_backlog() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the accept queue until SYNs go unanswered
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        pool = H1Pool(f"http://127.0.0.1:{listener.getsockname()[1]}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await fetch(pool, connect_timeout=0.3)
        assert loop.time() - started < 2 and pool.connections == 0
        await pool.close()
    finally:
        for s in fillers:
            s.close()
        listener.close()


@pytest.mark.parametrize("response", [
    pytest.param(b"", id="no-answer"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", id="stalled-body"),
])
@on_loops
async def test_total_timeout(response: bytes) -> None:
    async with Raw(once(response, close=False)) as up:
        pool = H1Pool(up.url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await fetch(pool, total_timeout=0.3)
        assert 0.25 < loop.time() - started < 2 and pool.connections == 0
        await pool.close()


@on_loops
async def test_waiting_for_a_free_connection_is_bounded() -> None:
    async with Raw(keepalive()) as up:
        pool = H1Pool(up.url, max_connections=1)
        held = await pool.request("GET", b"/", [], None, **T)
        with pytest.raises(UpstreamTimeout):
            await fetch(pool, connect_timeout=0.2)
        held.release()  # body unread: the connection is closed, the slot freed
        _, body = await fetch(pool)
        assert body == b"ok" and pool.connections == 1
        await pool.close()


# --- request bodies that go wrong -------------------------------------------------------------
class ClientGone(Exception):
    pass


@pytest.mark.parametrize(("headers", "chunks", "error", "never_sent"), [
    pytest.param([], (b"abc", b"def"), ClientGone, b"0\r\n\r\n", id="chunked-iterator-raises"),
    pytest.param([(b"content-length", b"10")], (b"abc",), ClientGone, None, id="cl-iterator-raises"),
    pytest.param([(b"content-length", b"10")], (b"abc", b"defghijk"), RequestBodyLengthError, b"defghijk",
                 id="cl-body-too-long"),
    pytest.param([(b"content-length", b"10")], (b"abc",), RequestBodyLengthError, None, id="cl-body-too-short"),
])
@on_loops
async def test_broken_request_bodies_never_look_complete(headers: list[tuple[bytes, bytes]], chunks: tuple[bytes, ...],
                                                          error: type[BaseException], never_sent: bytes | None) -> None:
    async with Raw(record_until_eof()) as up:
        pool = H1Pool(up.url)
        fail = ClientGone("client went away") if error is ClientGone else None
        with pytest.raises(error) as info:
            await pool.request("POST", b"/up", headers, agen(*chunks, fail=fail), **T)
        if fail is not None:
            assert info.value is fail  # the original exception, not a wrapper
        for _ in range(100):
            if up.received:
                break
            await asyncio.sleep(0.01)
        wire = up.received[0]
        head, _, sent = wire.partition(b"\r\n\r\n")
        assert b"abc" in sent
        if never_sent is not None:
            assert not sent.endswith(never_sent)
        if headers:
            assert len(sent) < 10  # fewer bytes than declared: the upstream sees a broken request
        assert pool.connections == 0
        await pool.close()


@on_loops
async def test_early_answer_stops_the_upload() -> None:
    async def reject(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        await writer.drain()
        await asyncio.sleep(1)

    async with Raw(reject) as up:
        pool = H1Pool(up.url)
        resp, body = await fetch(pool, "POST", b"/up", body=agen(*[b"x" * 1000] * 50, pause=0.01))
        assert (resp.status, body) == (413, b"big") and pool.connections == 0
        await pool.close()


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "cert.pem").write_bytes(pem)
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


@on_loops
async def test_https_upstream(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    raw = Raw(keepalive())
    raw.server = await asyncio.start_server(raw._on, "127.0.0.1", 0, ssl=server_ctx)
    port = raw.server.sockets[0].getsockname()[1]
    try:
        pool = H1Pool(f"https://127.0.0.1:{port}", ssl=client_ctx)
        for _ in range(3):
            _, body = await fetch(pool, "POST", b"/tls", body=b"secret")
            assert body == b"ok"
        assert raw.conns == 1 and raw.heads[0].startswith(b"POST /tls HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % port)
        await pool.close()
        untrusted = H1Pool(f"https://127.0.0.1:{port}")  # system roots do not know this certificate
        with pytest.raises(UpstreamConnectError):
            await fetch(untrusted)
        await untrusted.close()
    finally:
        raw.server.close()


# --- shutdown ---------------------------------------------------------------------------------
@on_loops
async def test_close_closes_everything() -> None:
    async def handler(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            if b"/slow" in await raw.read_request(reader):
                await reader.read()  # never answer; return once the client hangs up
            writer.write(OK)

    async with Raw(handler) as up:
        pool = H1Pool(up.url, max_connections=3)
        await fetch(pool)  # leaves one idle connection
        busy = asyncio.gather(*(fetch(pool, target=b"/slow") for _ in range(4)), return_exceptions=True)
        await asyncio.sleep(0.1)
        assert up.open == 3 and pool.connections == 3  # the 4th request waits for a slot
        await pool.close()
        results = await busy
        assert all(isinstance(r, UpstreamError) for r in results)
        await asyncio.sleep(0.05)
        assert up.open == 0 and pool.connections == 0
        with pytest.raises(UpstreamConnectError):
            await fetch(pool)
