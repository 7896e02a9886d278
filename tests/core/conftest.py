from __future__ import annotations

from collections.abc import Iterator

import pytest

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
