"""A small real upstream for gateway tests: echoes what it received, and misbehaves on request.

    /slow?ms=N          answer after N ms
    /stream?chunks=N    a chunked answer of N chunks
    /status?code=N      answer with that status
    /count              how many requests (per path) it has seen, as JSON
    anything else       echo: method, path, query, headers, body (base64-free, latin-1 text)

Run: python -m tests.support.echo_upstream PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

SEEN: Counter[str] = Counter()
BODIES: list[dict[str, Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    body = b""
    complete = True
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            complete = False
            break
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if path != "/count":
        SEEN[path] += 1
        BODIES.append({"path": path, "len": len(body), "complete": complete})
    if path.endswith("/slow"):
        await asyncio.sleep(int(q.get("ms", "1000")) / 1000)
    if path.endswith("/stream"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(int(q.get("chunks", "3"))):
            await send({"type": "http.response.body", "body": f"chunk{i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    status = int(q.get("code", "200")) if path.endswith("/status") else 200
    if path == "/count":
        out = json.dumps({"seen": SEEN, "bodies": BODIES}).encode()
    else:
        out = json.dumps({
            "method": scope["method"], "path": path, "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": body.decode("latin-1"),
        }).encode()
    extra = []
    if q.get("acao"):  # a careless upstream that answers CORS itself
        extra = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-credentials", b"true"),
                 (b"Access-Control-Allow-Methods", b"*")]
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode()),
        (b"connection", b"x-hop"), (b"x-hop", b"secret-hop"), (b"keep-alive", b"timeout=5"), *extra]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
