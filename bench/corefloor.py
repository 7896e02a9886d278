"""The gateway's server core with no policy: uvicorn (httptools, uvloop, one worker) and the
gateway's upstream pool (`gateway.h1pool`), forwarding every request as it came. `make bench`
runs it as the row `core uvicorn+h1pool`.

It is a measuring stick, never a proxy to deploy: no authentication, no limits, no header
hygiene, no timeouts worth the name. The gap between this row and the gateway's rows is what the
pipeline (the stages, the observers, the forwarder's header work) costs per request; the gap
between this row and `upstream direct` is what the server core and the pool cost.

    BENCH_UPSTREAM=http://127.0.0.1:9001 python -m uvicorn bench.corefloor:app --loop uvloop --http httptools

`/v1/...` is forwarded as `/...`, as the shipped routes rewrite it. The response keeps the
upstream's status, `content-type` and body (sized, so uvicorn sends a `content-length`).
"""

from __future__ import annotations

import os
from typing import Any

from gateway.h1pool import H1Pool

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 30.0
IDLE_TIMEOUT = 30.0
_KEEP = frozenset({b"content-type"})


class CoreFloor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.pool: H1Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        pool = self.pool
        if pool is None:
            pool = self.pool = H1Pool(self.upstream)
        path: bytes = scope["raw_path"]
        if path.startswith(b"/v1/"):
            path = path[3:]
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        resp = await pool.request(scope["method"], path, headers, body or None,
                                  connect_timeout=CONNECT_TIMEOUT, total_timeout=TOTAL_TIMEOUT)
        chunks = []
        try:
            while chunk := await resp.read_chunk(IDLE_TIMEOUT):
                chunks.append(chunk)
        finally:
            resp.release()
        out = b"".join(chunks)
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(k, v) for k, v in resp.headers if k in _KEEP]
                    + [(b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = CoreFloor(os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9001"))
