"""A sized response's head leaves with its first body piece: one send to the client, not two
(gateway/protocol.py HeadHold, used by the forwarder). The client must receive exactly the bytes it
would have without the hold, in the same order, whatever happens between the head and the body; a
stream's head is never held back.

The cycle here is uvicorn's real RequestResponseCycle over a transport that records each call, so
what is asserted is what would reach the socket.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.forwarder import Forwarder
from gateway.protocol import HeadHold, hold_head
from tests.core.conftest import forwarder_scope

START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]}
BODY = {"type": "http.response.body", "body": b'{"ok":true}'}


class Recorder:
    """The client transport: records what would be sent, in order, and how many sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", b"".join(parts)))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    @property
    def wire(self) -> bytes:
        return b"".join(data for _, data in self.calls)


def cycle_over(transport: Recorder, method: str = "GET") -> RequestResponseCycle:
    scope: Any = {"type": "http", "method": method, "http_version": "1.1", "headers": []}
    return RequestResponseCycle(
        scope=scope, transport=transport, flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"), access_logger=logging.getLogger("test.access"), access_log=False,
        default_headers=[], message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True,
        on_response=lambda: None)


async def unheld_wire(*messages: dict[str, Any], method: str = "GET") -> bytes:
    """What uvicorn writes for `messages` with no hold: the reference for the bytes."""
    t = Recorder()
    c = cycle_over(t, method)
    for m in messages:
        await c.send(m)  # type: ignore[arg-type]
    return t.wire


async def test_the_head_and_the_first_piece_leave_in_one_send() -> None:
    t = Recorder()
    c = cycle_over(t)
    hold = hold_head({"gateway.cycle": c})
    assert isinstance(hold, HeadHold)
    await c.send(START)  # type: ignore[arg-type]
    assert t.calls == []  # the head waits for its body
    await c.send(BODY)  # type: ignore[arg-type]
    assert [kind for kind, _ in t.calls] == ["writelines"]
    assert t.wire == await unheld_wire(START, BODY)
    assert t.wire.startswith(b"HTTP/1.1 200 OK\r\n") and t.wire.endswith(b'\r\n\r\n{"ok":true}')
    assert c.transport is t  # the cycle has its transport back after the first piece
    hold.release()
    assert len(t.calls) == 1  # nothing more, nothing twice


async def test_a_head_whose_body_never_comes_is_written_on_release() -> None:
    """Something fails between the head and the body: the client still gets the head it would
    have got (then uvicorn closes the connection, as before)."""
    t = Recorder()
    c = cycle_over(t)
    hold = hold_head({"gateway.cycle": c})
    assert isinstance(hold, HeadHold)
    with pytest.raises(RuntimeError, match="upstream gone"), hold:
        await c.send(START)  # type: ignore[arg-type]
        raise RuntimeError("upstream gone")
    assert t.calls == [("write", await unheld_wire(START))]
    assert c.transport is t
    hold.release()  # idempotent
    assert len(t.calls) == 1


async def test_release_before_any_write_sends_nothing_and_restores_the_transport() -> None:
    t = Recorder()
    c = cycle_over(t)
    hold = hold_head({"gateway.cycle": c})
    assert isinstance(hold, HeadHold) and c.transport is hold
    hold.release()
    assert t.calls == [] and c.transport is t


async def test_a_head_request_gets_its_head_in_one_send() -> None:
    """uvicorn writes no body for HEAD: the head leaves on release, once."""
    t = Recorder()
    c = cycle_over(t, "HEAD")
    hold = hold_head({"gateway.cycle": c})
    assert isinstance(hold, HeadHold)
    await c.send(START)  # type: ignore[arg-type]
    await c.send({"type": "http.response.body", "body": b""})  # type: ignore[arg-type]
    assert t.calls == []
    hold.release()
    assert len(t.calls) == 1
    assert t.wire == await unheld_wire(START, {"type": "http.response.body", "body": b""}, method="HEAD")


async def test_other_transport_calls_reach_the_real_transport_while_held() -> None:
    t = Recorder()
    c = cycle_over(t)
    hold = hold_head({"gateway.cycle": c})
    assert isinstance(hold, HeadHold)
    assert c.transport.is_closing() is False
    c.transport.close()
    assert t.closed and c.transport.is_closing() is True
    hold.release()


def test_outside_a_live_server_nothing_is_held() -> None:
    """`gateway explain` and tests that call the app directly have no cycle in the scope."""
    outside = hold_head({"type": "http"})
    assert not isinstance(outside, HeadHold)
    with outside:  # usable the same way, and holds nothing
        pass


# The forwarder over a real upstream socket, answering into a real uvicorn cycle.

SIZED = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
CHUNKED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
           b"7\r\ndata: 1\r\n0\r\n\r\n")


async def forward_into(cycle: RequestResponseCycle, answer: bytes, method: str = "GET") -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scope = forwarder_scope(port, method, **{"gateway.cycle": cycle})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    fwd = Forwarder()
    await fwd.start()
    try:
        await asyncio.wait_for(fwd(scope, receive, cycle.send), 20)  # type: ignore[arg-type]
    finally:
        await fwd.close()
        server.close()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_forwarder_sends_a_sized_answer_in_one_send(method: str) -> None:
    t = Recorder()
    c = cycle_over(t, method)
    await forward_into(c, SIZED if method == "GET" else SIZED.split(b"\r\n\r\n")[0] + b"\r\n\r\n", method)
    assert len(t.calls) == 1, t.calls  # one send: head and body together (HEAD: the head alone)
    assert t.calls[0][0] == ("writelines" if method == "GET" else "write")
    head, _, body = t.wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 11" in head.lower()
    assert body == (b'{"ok":true}' if method == "GET" else b"")
    assert c.transport is t and c.response_complete


async def test_a_streams_head_is_never_held_back() -> None:
    """Server-Sent Events: the head goes out alone, at once, before any event."""
    t = Recorder()
    c = cycle_over(t)
    await forward_into(c, CHUNKED)
    kinds = [kind for kind, _ in t.calls]
    assert kinds[0] == "write" and "writelines" not in kinds, t.calls
    assert t.calls[0][1].startswith(b"HTTP/1.1 200 OK\r\n") and t.calls[0][1].endswith(b"\r\n\r\n")
    assert b"data: 1" in t.wire and c.transport is t


async def test_a_refusal_leaves_in_one_send() -> None:
    """The pipeline's problem+json answers (a flood of 401s or 429s) are held the same way."""
    from gateway.errors import Unauthorized
    from gateway.pipeline.requestid import RequestIdStage

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        raise Unauthorized("auth.missing_token", "no token")

    policy = SimpleNamespace(limits=SimpleNamespace(max_in_flight=100, max_in_flight_per_org=8), sections={})
    stage = RequestIdStage(refuse, lambda: policy, [])
    t = Recorder()
    c = cycle_over(t)
    scope: Any = dict(c.scope, headers=[], client=("203.0.113.9", 5000), path="/v1/x", query_string=b"")
    scope["gateway.cycle"] = c
    c.scope = scope
    await stage(scope, lambda: None, c.send)  # type: ignore[arg-type]
    assert [kind for kind, _ in t.calls] == ["writelines"], t.calls
    head, _, body = t.wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ") and b"application/problem+json" in head
    assert b"auth.missing_token" in body and c.transport is t and c.response_complete
