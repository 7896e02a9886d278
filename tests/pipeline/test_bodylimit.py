"""Size caps and the client body clock: 413 both ways, 408 on a stalled body, 100-continue."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.core.conftest import core_policy, gw, upstream  # noqa: F401  (module fixtures)
from tests.support.gateway_proc import Proc
from tests.support.rawhttp import raw_request, read_response


def upstream_bodies(up: Proc) -> list[dict]:
    return httpx.get(f"{up.url}/count").json()["bodies"]


def test_content_length_over_cap_is_413_before_any_byte(gw: Proc) -> None:  # noqa: F811
    # Headers only: the gateway must answer without waiting for the 2000 declared bytes.
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 2000\r\n\r\n")
        r = read_response(s, timeout=3)
    assert r.status == 413
    assert r.json()["reason"] == "request.body_too_large"


def test_expect_100_continue_over_cap_gets_413_not_reset(gw: Proc) -> None:  # noqa: F811
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        r = read_response(s, timeout=3)
    assert r.status == 413


def test_expect_100_continue_within_cap_works(gw: Proc) -> None:  # noqa: F811
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n")
        first = read_response(s, timeout=3)
        assert first.status == 100
        s.sendall(b"hello")
        r = read_response(s, timeout=3)
    assert r.status == 200
    assert json.loads(r.body)["body"] == "hello"


def test_chunked_body_over_cap_is_cut_and_upstream_never_sees_it_complete(gw: Proc, upstream: Proc) -> None:  # noqa: F811
    before = len(upstream_bodies(upstream))
    chunk = b"y" * 400
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    r = raw_request(gw.port, b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: close\r\n\r\n" + body)
    assert r.status == 413
    time.sleep(0.3)
    after = upstream_bodies(upstream)[before:]
    # Either the upstream never got the request, or it saw a broken (incomplete) one: never a
    # complete body, whatever its length.
    assert not [b for b in after if b["complete"]], after


def test_per_route_cap_override(gw: Proc) -> None:  # noqa: F811
    r = httpx.post(f"{gw.url}/v1/big", content=b"z" * 100_000)
    assert r.status_code == 200
    assert len(r.json()["body"]) == 100_000
    r = httpx.post(f"{gw.url}/v1/echo", content=b"z" * 1025)
    assert r.status_code == 413


def test_stalled_body_is_408(gw: Proc) -> None:  # noqa: F811
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nonly-part")
        r = read_response(s, timeout=5)
    assert r.status == 408
    assert r.json()["reason"] == "request.body_timeout"


@pytest.mark.parametrize("value", [b"1e3", b"-1", b"+5", b"5, 5"], ids=["exponent", "negative", "plus", "list"])
def test_invalid_content_length_is_400(gw: Proc, value: bytes) -> None:  # noqa: F811
    # The HTTP parser refuses these before the app runs; either way the answer is a 400, not a reset.
    r = raw_request(gw.port, b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: " + value
                    + b"\r\nConnection: close\r\n\r\n")
    assert r.status == 400
