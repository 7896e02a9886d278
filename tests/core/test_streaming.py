"""Streaming over real sockets: each upstream chunk reaches the client as it arrives, a silent
stream ends after `stream_idle`, and a client that leaves aborts the upstream exchange (its
connection is closed, never reused)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.core.conftest import forwarder_scope
from tests.support.gateway_proc import Proc, gateway, write_policy
from tests.support.rogue_upstream import RogueUpstream, wait_closed

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    defaults:
      timeouts: {connect: 1, total: 60, body_read: 2, stream_idle: 1.5}
    routes:
      - {id: events, path: /v1/events, methods: [GET], auth: none, upstream_path: /events}
      - {id: silent, path: /v1/silent, methods: [GET], auth: none, upstream_path: /silent}
      - {id: forever, path: /v1/forever, methods: [GET], auth: none, upstream_path: /forever}
      - {id: hang, path: /v1/hang, methods: [GET], auth: none, upstream_path: /hang}
      - {id: ok, path: /v1/ok, methods: [GET], auth: none, upstream_path: /ok}
"""
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Script:
    """What the upstream does, with the hooks the tests wait on."""

    def __init__(self) -> None:
        self.release_second = threading.Event()
        self.closed_after: dict[str, float | None] = {}
        self.closed_at: dict[str, float] = {}  # time.monotonic() when the upstream saw the close

    def __call__(self, conn: socket.socket, raw: bytes) -> bool:
        if raw.startswith(b"GET /events"):
            conn.sendall(SSE_HEAD + chunk(b"data: one\n\n"))
            self.release_second.wait(20)  # the second event only once the client has the first
            conn.sendall(chunk(b"data: two\n\n") + b"0\r\n\r\n")
            return True
        if raw.startswith(b"GET /silent"):
            conn.sendall(SSE_HEAD + chunk(b"data: hello\n\n"))
            self.closed_after["silent"] = wait_closed(conn, 20)
            return False
        if raw.startswith(b"GET /forever"):
            conn.sendall(SSE_HEAD)
            start = time.monotonic()
            try:
                while time.monotonic() - start < 20:
                    conn.sendall(chunk(b"data: tick\n\n"))
                    time.sleep(0.2)
            except OSError:
                self.closed_after["forever"] = time.monotonic() - start
                return False
            self.closed_after["forever"] = None
            return False
        if raw.startswith(b"GET /hang"):
            self.closed_after["hang"] = wait_closed(conn, 20)
            self.closed_at["hang"] = time.monotonic()
            return False
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, RogueUpstream, Script]]:
    d = write_policy(Path(tmp_path_factory.mktemp("streaming")), gateway=POLICY)
    script = Script()
    with RogueUpstream(script) as up, gateway(d, up.url) as gw:
        yield gw, up, script


def test_each_event_reaches_the_client_before_the_next_is_sent(rig: tuple[Proc, RogueUpstream, Script]) -> None:
    gw, _, script = rig
    with httpx.stream("GET", f"{gw.url}/v1/events", timeout=15) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.iter_lines()
        # Blocks until "one" arrives; the upstream withholds "two" until we got it. A relay that
        # held one chunk back would deadlock here until the 15 s client timeout.
        assert next(lines) == "data: one"
        script.release_second.set()
        rest = [line for line in lines if line]
    assert rest == ["data: two"]


def test_silent_stream_ends_after_stream_idle(rig: tuple[Proc, RogueUpstream, Script]) -> None:
    gw, _, script = rig
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):  # truncated: no terminating chunk
        with httpx.stream("GET", f"{gw.url}/v1/silent", timeout=15) as r:
            assert r.status_code == 200
            for _ in r.iter_lines():
                pass
    # stream_idle is 1.5 s and the route's total 60 s: ending well before the total (with room for
    # a busy machine) shows the idle timer ended it.
    assert time.monotonic() - started < 20
    # The rogue upstream notes the close on its own thread, maybe just after the client saw it.
    deadline = time.monotonic() + 20
    while "silent" not in script.closed_after and time.monotonic() < deadline:
        time.sleep(0.05)
    closed = script.closed_after.get("silent")
    assert closed is not None and closed < 20, "the gateway closes the silent upstream connection"


def test_client_leaving_mid_stream_aborts_the_upstream(rig: tuple[Proc, RogueUpstream, Script]) -> None:
    gw, up, script = rig
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"GET /v1/forever HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert b"tick" in s.recv(65536) + s.recv(65536)
    s.close()
    deadline = time.monotonic() + 10
    while "forever" not in script.closed_after and time.monotonic() < deadline:
        time.sleep(0.05)
    closed = script.closed_after.get("forever")
    # The gateway closed that upstream connection (so it cannot go back to the pool), and the
    # next request is served normally.
    assert closed is not None, "the upstream stream kept running after the client left"
    assert httpx.get(f"{gw.url}/v1/ok", timeout=10).text == "ok"


def test_client_leaving_before_the_answer_aborts_the_upstream(rig: tuple[Proc, RogueUpstream, Script]) -> None:
    gw, _, script = rig
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"GET /v1/hang HTTP/1.1\r\nHost: gw\r\n\r\n")
    time.sleep(0.5)
    left = time.monotonic()
    s.close()
    deadline = time.monotonic() + 10
    while "hang" not in script.closed_after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert script.closed_after.get("hang") is not None
    # Within a second of the client leaving (the upstream polls its socket every 0.1 s; the gateway
    # reacts to the lost connection at once, with no timer).
    assert script.closed_at["hang"] - left < 1.0, script.closed_at["hang"] - left
    assert "Traceback" not in gw.log()


async def test_under_another_asgi_server_http_disconnect_aborts_the_upstream() -> None:
    """Without the gateway's protocol in the scope (another ASGI server), the forwarder watches
    `receive()`: an `http.disconnect` aborts the upstream exchange and closes that connection."""
    import asyncio

    from gateway.forwarder import Forwarder
    from gateway.pipeline.bodylimit import ClientDisconnected

    closed = asyncio.Event()

    async def silent_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the request; never answered
        await reader.read()  # EOF: the gateway closed the connection
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scope = forwarder_scope(port, upstream_path="/hang")
    left = asyncio.Event()

    async def receive() -> dict:  # type: ignore[type-arg]
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        raise AssertionError(f"nothing is sent to a client that left: {message}")

    fwd = Forwarder()
    await fwd.start()
    try:
        task = asyncio.ensure_future(fwd(scope, receive, send))
        await asyncio.sleep(0.3)  # the request is with the upstream, waiting
        assert not task.done()
        left.set()
        with pytest.raises(ClientDisconnected):
            await asyncio.wait_for(task, 2)
        await asyncio.wait_for(closed.wait(), 2)
        assert fwd.share.counts == {}  # its fair-share slot was given back
    finally:
        await fwd.close()
        server.close()
