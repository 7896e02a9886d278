"""Forwarding: header rebuild, hop-by-hop, identity headers, streaming both ways."""

from __future__ import annotations

import httpx
import pytest

from tests.support.gateway_proc import Proc
from tests.support.rawhttp import raw_request


def sent_headers(r: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in r.json()["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


@pytest.mark.parametrize("name", [
    "X-User-Id", "x-user-id", "X_User_Id", "x_org_id", "X-Org-Id", "X-Gateway-Identity", "x_gateway_identity",
    "X-Forwarded-User", "X-Auth-Request-Email", "X-Tenant", "Remote-User", "X-Remote-User", "X-Role",
], ids=lambda n: n)
def test_client_identity_headers_are_dropped(gw: Proc, name: str) -> None:
    r = raw_request(gw.port, f"GET /v1/echo HTTP/1.1\r\nHost: gw\r\n{name}: attacker\r\nConnection: close\r\n\r\n".encode())
    assert r.status == 200
    assert "attacker" not in r.body.decode()


def test_authorization_is_not_forwarded(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/echo", headers={"Authorization": "Bearer secret-token-value"})
    assert "secret-token-value" not in r.text


def test_hop_by_hop_and_connection_named_headers_are_dropped(gw: Proc) -> None:
    r = raw_request(gw.port, b"GET /v1/echo HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Private\r\n"
                             b"X-Private: p\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\n"
                             b"Upgrade: h2c\r\nX-Kept: yes\r\n\r\n")
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    for gone in ("x-private", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert gone not in seen, gone
    assert seen["x-kept"] == "yes"


def test_response_hop_by_hop_dropped_and_via_added(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/echo")
    assert "x-hop" not in r.headers  # named in the upstream's Connection header
    assert "keep-alive" not in r.headers
    assert r.headers["via"] == "1.1 edge-gateway"
    assert "server" not in r.headers


def test_forwarded_headers_rebuilt_not_passed_through(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/echo", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "Forwarded": "for=6.6.6.6", "Via": "1.0 spoofed", "X-Real-IP": "6.6.6.6"})
    h = sent_headers(r)
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == [r.request.headers["host"]]
    assert "forwarded" not in h and "x-real-ip" not in h
    assert h["via"] == ["1.1 edge-gateway"]


def test_request_body_streams_to_upstream(gw: Proc) -> None:
    def gen():  # chunked, no Content-Length
        for _ in range(10):
            yield b"x" * 100
    r = httpx.post(f"{gw.url}/v1/echo", content=gen())
    assert r.status_code == 200
    assert r.json()["body"] == "x" * 1000


def test_response_streams_chunked(gw: Proc) -> None:
    with httpx.stream("GET", f"{gw.url}/v1/stream?chunks=5") as r:
        parts = list(r.iter_bytes())
    assert b"".join(parts) == b"".join(f"chunk{i}\n".encode() for i in range(5))


def test_head_has_no_body(gw: Proc) -> None:
    r = httpx.head(f"{gw.url}/v1/echo")
    assert r.status_code == 200 and r.content == b""


def test_upstream_error_status_is_passed_through(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/status?code=418")
    assert r.status_code == 418


def test_upstream_cors_headers_never_reach_the_client(gw: Proc) -> None:
    # The core policy has no CORS section: no origin is allowed, whatever the upstream says.
    r = httpx.get(f"{gw.url}/v1/echo?acao=1", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert not [k for k in r.headers if k.lower().startswith("access-control-")]
    assert r.headers["vary"] == "Origin"
