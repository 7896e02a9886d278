"""A hostile upstream over real sockets: a header bomb costs the worker little memory and ends in
a quick 502 upstream.bad_response; so does an endless trailer section of a chunked answer (the head
has gone out by then, so the client sees the stream cut); Transfer-Encoding is read as a coding
list (RFC 9112 §6.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import Proc, gateway, wait_until, write_policy
from tests.support.rogue_upstream import RogueUpstream

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    defaults:
      timeouts: {connect: 1, total: 30, body_read: 2}
    routes:
      - {id: any, path: "/v1/{what}", methods: [GET], auth: none, upstream_path: "/{what}"}
"""
ANSWERS = {
    b"/te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"/te-chunked-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
    b"/te-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"/te-and-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"/te-substring": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunkedx\r\n\r\nabc",
    b"/cl-twice": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"/many-headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(400))
                      + b"Content-Length: 2\r\n\r\nok",
    b"/ok-chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
}


TRAILER_BOMBS = {
    # one trailer line that never ends
    b"/trailer-line": (b"X-Trailer: ", b"a" * (1 << 20)),
    # a trailer section of short lines that never ends
    b"/trailer-lines": (b"", b"".join(b"X-T%d: a\r\n" % i for i in range(80_000))[: 1 << 20]),
}


class Script:
    def __init__(self) -> None:
        self.bomb_sent = 0
        self.bomb_closed = threading.Event()
        self.trailer_sent: dict[bytes, int] = {}
        self.trailer_closed = {path: threading.Event() for path in TRAILER_BOMBS}

    def __call__(self, conn: socket.socket, raw: bytes) -> bool:
        path = raw.split(b" ", 2)[1]
        if path in TRAILER_BOMBS:
            start, piece = TRAILER_BOMBS[path]
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + start)
            self.trailer_sent[path] = 0
            try:
                while self.trailer_sent[path] < 100 * (1 << 20):
                    conn.sendall(piece)
                    self.trailer_sent[path] += len(piece)
            except OSError:
                self.trailer_closed[path].set()
            return False
        if path == b"/bomb":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Bomb: ")
            line = b"a" * (1 << 20)
            try:
                while self.bomb_sent < 100 * (1 << 20):  # a 100 MB header line
                    conn.sendall(line)
                    self.bomb_sent += len(line)
            except OSError:
                self.bomb_closed.set()
            return False
        # Anything else (the gateway's own upstream health probe) gets a plain 404.
        conn.sendall(ANSWERS.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        return False


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Script]]:
    d = write_policy(Path(tmp_path_factory.mktemp("hostile")), gateway=POLICY)
    script = Script()
    with RogueUpstream(script) as up, gateway(d, up.url) as gw:
        yield gw, script


def test_a_100mb_header_is_a_quick_502_and_costs_little_memory(rig: tuple[Proc, Script]) -> None:
    gw, script = rig
    assert httpx.get(f"{gw.url}/v1/ok-chunked", timeout=10).status_code == 200  # warm the worker
    before = rss_kb(gw.proc.pid)
    r = httpx.get(f"{gw.url}/v1/bomb", timeout=20)
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "upstream.bad_response"
    assert script.bomb_closed.wait(10), "the gateway keeps reading the bomb"
    assert script.bomb_sent < 50 * (1 << 20), "the gateway read far past its head limit"
    assert rss_kb(gw.proc.pid) - before < 16 * 1024, "the header bomb grew the worker by more than 16 MB"
    assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("path", [b"/trailer-line", b"/trailer-lines"])
def test_an_endless_trailer_section_is_cut_quickly_and_costs_little_memory(rig: tuple[Proc, Script],
                                                                          path: bytes) -> None:
    gw, script = rig
    assert httpx.get(f"{gw.url}/v1/ok-chunked", timeout=10).status_code == 200  # warm the worker
    before = rss_kb(gw.proc.pid)
    logged = gw.log().count("upstream.bad_response")
    with httpx.stream("GET", f"{gw.url}/v1{path.decode()}", timeout=30) as r:
        # A chunked answer streams: its head has gone out before the trailer arrives, so the
        # client sees the body cut off (no last chunk) rather than a 502.
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()
    assert script.trailer_closed[path].wait(20), "the gateway keeps reading the trailer"
    assert script.trailer_sent[path] < 50 * (1 << 20), "the gateway read far past its trailer limit"
    assert rss_kb(gw.proc.pid) - before < 16 * 1024, "the trailer grew the worker by more than 16 MB"
    assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200
    # Recorded as the upstream's bad response (log, access log, audit), not as unavailable.
    assert wait_until(lambda: gw.log().count("upstream.bad_response") > logged, 20), gw.log()[-2000:]


@pytest.mark.parametrize("path", ["te-gzip-chunked", "te-chunked-gzip", "te-twice", "te-and-cl", "te-substring",
                                  "cl-twice", "many-headers"])
def test_bad_response_framing_is_502_bad_response(rig: tuple[Proc, Script], path: str) -> None:
    gw, _ = rig
    r = httpx.get(f"{gw.url}/v1/{path}", timeout=10)
    assert r.status_code == 502, r.text
    assert r.json()["reason"] == "upstream.bad_response"


def test_chunked_in_any_case_is_accepted(rig: tuple[Proc, Script]) -> None:
    gw, _ = rig
    r = httpx.get(f"{gw.url}/v1/ok-chunked", timeout=10)
    assert r.status_code == 200 and r.text == "abc"
    started = time.monotonic()
    assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < 5
