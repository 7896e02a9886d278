"""A hostile upstream over real sockets: a header bomb costs the worker little memory and ends in
a quick 502 upstream.bad_response; Transfer-Encoding is read as a coding list (RFC 9112 §6.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import Proc, gateway, write_policy
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


class Script:
    def __init__(self) -> None:
        self.bomb_sent = 0
        self.bomb_closed = threading.Event()

    def __call__(self, conn: socket.socket, raw: bytes) -> bool:
        path = raw.split(b" ", 2)[1]
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
