"""Request buffering over real sockets: a slow body holds no upstream connection, the body has a
total deadline, and the bytes buffered by a worker are bounded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import Proc, gateway, write_policy
from tests.support.rawhttp import read_response
from tests.support.rogue_upstream import RogueUpstream, read_body

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}", pool_size: 1, pool_wait: 5}
    defaults:
      max_body_bytes: 2097152
      timeouts: {connect: 1, total: 20, body_read: 8, body_total: 15}
    limits: {max_buffered_bytes: 1048576}
    routes:
      - {id: up, path: /v1/up, methods: [GET, POST], auth: none, upstream_path: /up}
      - {id: up.deadline, path: /v1/deadline, methods: [POST], auth: none, upstream_path: /up,
         timeouts: {body_read: 1, body_total: 2.5}}
      - {id: up.stream, path: /v1/stream-up, methods: [POST], auth: none, upstream_path: /up,
         request_buffering: false}
"""


def answer(conn: socket.socket, raw: bytes) -> bool:
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = read_body(conn, head, rest)
    out = b'{"len":%d}' % len(body)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                 % (len(out), out))
    return True


def heads(up: RogueUpstream) -> list[tuple[float, bytes]]:
    """Requests the tests sent (the gateway's own readiness probes are left out)."""
    return [h for h in up.heads if b" /up" in h[1].split(b"\r\n", 1)[0]]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, RogueUpstream]]:
    d = write_policy(Path(tmp_path_factory.mktemp("buffering")), gateway=POLICY)
    with RogueUpstream(answer) as up, gateway(d, up.url) as gw:
        yield gw, up


def open_post(port: int, path: str, length: int, first: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/octet-stream\r\n"
              f"Content-Length: {length}\r\n\r\n".encode() + first)
    return s


def test_slow_body_holds_no_upstream_connection(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, up = rig
    heads_before = len(heads(up))
    slow = open_post(gw.port, "/v1/up", 10, b"abc")
    time.sleep(0.5)
    # The pool has ONE connection. With the body streamed, the slow upload would hold it and this
    # request would wait; buffered, it is served while the upload is still incomplete.
    r = httpx.get(f"{gw.url}/v1/up", timeout=10)
    assert r.status_code == 200
    assert len(heads(up)) == heads_before + 1, "the slow upload must not have reached the upstream yet"
    last_byte_at = time.monotonic()
    slow.sendall(b"defghij")
    resp = read_response(slow)
    slow.close()
    assert resp.status == 200 and resp.json() == {"len": 10}
    # The upstream saw the slow request only once its body was complete.
    assert heads(up)[-1][0] >= last_byte_at


def test_streaming_route_sends_the_head_before_the_body(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, up = rig
    n = len(heads(up))
    s = open_post(gw.port, "/v1/stream-up", 6, b"abc")
    deadline = time.monotonic() + 10
    while len(heads(up)) == n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(heads(up)) == n + 1, "request_buffering: false streams: the upstream sees the head at once"
    s.sendall(b"def")
    resp = read_response(s)
    s.close()
    assert resp.status == 200 and resp.json() == {"len": 6}


def test_body_total_deadline_is_408(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, up = rig
    n = len(heads(up))
    s = open_post(gw.port, "/v1/deadline", 100, b"a")
    started = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.4 s: never idle for body_read (1 s)
        while not stop.is_set():
            time.sleep(0.4)
            try:
                s.sendall(b"a")
            except OSError:
                return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        resp = read_response(s, timeout=15)
    finally:
        stop.set()
        t.join()
        s.close()
    elapsed = time.monotonic() - started
    assert resp.status == 408
    assert resp.header("content-type") == "application/problem+json"
    assert resp.json()["reason"] == "request.body_timeout"
    assert "within" in resp.json()["detail"]
    assert elapsed >= 2.0  # the total clock (2.5 s), not the idle one, ended it
    assert len(heads(up)) == n, "an incomplete body never reaches the upstream"


def test_buffered_bytes_are_bounded_per_worker(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, _ = rig
    # Two 700 KiB uploads in progress: together over the 1 MiB bound, so the second is refused
    # before a byte of it is read; a small body still fits.
    first = open_post(gw.port, "/v1/up", 700 * 1024, b"x" * 1024)
    time.sleep(0.5)
    second = open_post(gw.port, "/v1/up", 700 * 1024, b"")
    resp = read_response(second)
    second.close()
    assert resp.status == 503
    assert resp.json()["reason"] == "gateway.overloaded"
    assert resp.header("retry-after") == "1"
    small = httpx.post(f"{gw.url}/v1/up", content=b"y" * 4096, timeout=10)
    assert small.status_code == 200 and small.json() == {"len": 4096}
    first.sendall(b"x" * (699 * 1024))
    done = read_response(first)
    first.close()
    assert done.status == 200 and done.json() == {"len": 700 * 1024}
    # The budget was given back: the same upload now fits.
    again = httpx.post(f"{gw.url}/v1/up", content=b"z" * (700 * 1024), timeout=10)
    assert again.status_code == 200
