"""Micro-benchmark: H1Pool vs aiohttp.ClientSession against one local uvicorn (uvloop, httptools).

Not collected by pytest. Run: .venv/bin/python -m tests.bench_h1pool [seconds] [concurrency]

Prints requests/s and client CPU per request (process_time of this process only, which is what the
gateway pays; the upstream runs in its own process). On a 2-core box the two processes compete, so
req/s is the coarser number and µs CPU/request the one to compare.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from gateway.h1pool import H1Pool
from tests.support.procs import free_port, wait_port

UPSTREAM = '''
SEEN = [0]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/count":
        body = str(SEEN[0]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    SEEN[0] += 1
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")]})
    await send({"type": "http.response.body", "body": b'{"ok":true,"n":1}'})
'''
TOTAL = [0]
HEADERS = [(b"accept", b"application/json"), (b"user-agent", b"bench"), (b"x-request-id", b"abc123")]


async def run(name: str, one: Callable[[], Awaitable[None]], seconds: float, concurrency: int) -> None:
    for _ in range(200):  # warm up the pool
        await one()
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await one()
            done += 1

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    TOTAL[0] += done + 200
    print(f"{name:8s} {done / wall:9.0f} req/s   {cpu / done * 1e6:6.1f} µs client CPU/request   ({done} requests)")


async def main(port: int, seconds: float, concurrency: int) -> None:
    url = f"http://127.0.0.1:{port}"
    pool = H1Pool(url, max_connections=256)

    async def h1() -> None:
        resp = await pool.request("GET", b"/items?x=1", HEADERS, None, connect_timeout=2, total_timeout=10)
        try:
            body = b""
            while chunk := await resp.read_chunk():
                body += chunk
        finally:
            resp.release()
        if resp.status != 200 or body != b'{"ok":true,"n":1}':
            raise RuntimeError(f"bad answer {resp.status} {body!r}")

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=30),
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"))
    timeout = aiohttp.ClientTimeout(total=10, connect=2, sock_connect=2)
    hdrs = [(k.decode(), v.decode()) for k, v in HEADERS]

    async def aio() -> None:
        resp = await session.request("GET", url + "/items?x=1", headers=hdrs, timeout=timeout,
                                     allow_redirects=False)
        try:
            body = b""
            while chunk := await resp.content.readany():
                body += chunk
        finally:
            resp.release()
        if resp.status != 200 or body != b'{"ok":true,"n":1}':
            raise RuntimeError(f"bad answer {resp.status} {body!r}")

    for _ in range(2):  # alternate, so drift on a shared machine hits both
        await run("h1pool", h1, seconds, concurrency)
        await run("aiohttp", aio, seconds, concurrency)
    resp = await pool.request("GET", b"/count", [], None, connect_timeout=2, total_timeout=10)
    print("upstream saw", (await resp.read_chunk()).decode(), "requests; clients counted", TOTAL[0])
    resp.release()
    await pool.close()
    await session.close()


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    conc = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    upstream_port = free_port()
    with open("/tmp/bench_h1pool_upstream.py", "w") as f:
        f.write(UPSTREAM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench_h1pool_upstream:app", "--app-dir", "/tmp",
         "--port", str(upstream_port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
         "--no-access-log"])
    try:
        wait_port(upstream_port)
        uvloop.run(main(upstream_port, secs, conc))
    finally:
        proc.terminate()
        proc.wait(5)
