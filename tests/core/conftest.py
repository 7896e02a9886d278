from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from tests.support.gateway_proc import Proc, echo_upstream, gateway, write_policy

CORE_POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    defaults:
      max_body_bytes: 1024
      timeouts: {connect: 1, total: 2, body_read: 1}
    limits: {max_url_bytes: 512, max_header_bytes: 4096, max_in_flight: 4}
    routes:
      - {id: echo.get, path: /v1/echo, methods: [GET], auth: none}
      - {id: echo.post, path: /v1/echo, methods: [POST, PUT], auth: none}
      - {id: echo.item, path: "/v1/items/{itemId}", methods: [GET, DELETE], auth: none, upstream_path: "/items/{itemId}"}
      - {id: echo.big, path: /v1/big, methods: [POST], auth: none, max_body_bytes: 2097152, upstream_path: /big}
      - {id: slow, path: /v1/slow, methods: [GET, POST], auth: none, timeouts: {total: 5}}
      - {id: slow.short, path: /v1/slow-short, methods: [GET], auth: none, upstream_path: /slow, timeouts: {total: 0.3}}
      - {id: stream, path: /v1/stream, methods: [GET], auth: none}
      - {id: status, path: /v1/status, methods: [GET], auth: none}
      - {id: count, path: /v1/count, methods: [GET], auth: none}
      - {id: tokenfwd, path: /v1/tokenfwd, methods: [GET], auth: none, upstream_path: /tokenfwd}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def core_policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("core-policy")
    write_policy(d, gateway=CORE_POLICY)
    return str(d)


@pytest.fixture(scope="module")
def gw(upstream: Proc, core_policy: str) -> Iterator[Proc]:
    with gateway(core_policy, upstream.url) as g:
        yield g


def forwarder_scope(upstream_port: int, method: str = "GET", upstream_path: str = "/x",
                    **extra: Any) -> dict[str, Any]:
    """An ASGI scope the Forwarder accepts on its own (no pipeline before it): a request context
    with a minimal policy and route aimed at 127.0.0.1:`upstream_port`, plus `extra` scope keys."""
    policy = SimpleNamespace(
        upstream=SimpleNamespace(url=f"http://127.0.0.1:{upstream_port}", pool_wait=1.0),
        limits=SimpleNamespace(max_in_flight_per_org=8), sections={})
    route = SimpleNamespace(forward_token=False, request_buffering=True, connect_timeout=5.0,
                            total_timeout=30.0, stream_idle_timeout=30.0)
    ctx = RequestContext("r" * 24, "203.0.113.9", policy)  # type: ignore[arg-type]
    ctx.route, ctx.upstream_path, ctx.query_string = route, upstream_path, b""
    return {"type": "http", "method": method, "headers": [(b"host", b"gw")], "gateway": ctx, **extra}
