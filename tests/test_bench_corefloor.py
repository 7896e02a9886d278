"""`bench/corefloor.py`, the bench's server-core row: it must forward what it got, as it got it,
or the row would measure less work than a proxy does (and make the pipeline look dearer)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.corefloor import CoreFloor
from tests.support.gateway_proc import echo_upstream


def _scope(method: str, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
            "headers": [(b"host", b"gateway.example"), *(headers or [])]}


async def _call(app: CoreFloor, scope: dict[str, Any], pieces: list[bytes]) -> list[dict[str, Any]]:
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_forwards_method_path_query_headers_and_body_and_relays_the_answer() -> None:
    async def run(url: str) -> None:
        app = CoreFloor(url)
        try:
            get = await _call(app, _scope("GET", "/v1/echo", b"orgId=org-1", [(b"authorization", b"Bearer t")]), [b""])
            post = await _call(app, _scope("POST", "/v1/echo"), [b'{"a":', b"1}"])
            status = await _call(app, _scope("GET", "/v1/status", b"code=503"), [b""])
        finally:
            assert app.pool is not None
            await app.pool.close()
        start, body = get
        assert start["status"] == 200
        assert dict(start["headers"])[b"content-length"] == b"%d" % len(body["body"])
        seen = json.loads(body["body"])
        assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/echo", "orgId=org-1")
        assert ["authorization", "Bearer t"] in seen["headers"]
        assert not any(k == "host" and v == "gateway.example" for k, v in seen["headers"])  # the pool's own Host
        assert json.loads(post[1]["body"])["body"] == '{"a":1}'  # both pieces, in order
        assert status[0]["status"] == 503

    with echo_upstream() as up:
        asyncio.run(run(up.url))


def test_lifespan_completes_and_closes_the_pool() -> None:
    async def run(url: str) -> list[str]:
        app = CoreFloor(url)
        await _call(app, _scope("GET", "/v1/echo"), [b""])
        assert app.pool is not None and app.pool.connections == 1
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan"}, receive, send)
        assert app.pool.connections == 0
        return sent

    with echo_upstream() as up:
        assert asyncio.run(run(up.url)) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
