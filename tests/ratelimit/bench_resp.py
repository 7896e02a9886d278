"""Micro-benchmark: client CPU per fixed-window batch (2 items = 6 commands in MULTI/EXEC),
RespClient vs redis-py `pipeline(transaction=True)`, against one private redis-server, on uvloop.

    .venv/bin/python -m tests.ratelimit.bench_resp [seconds per variant] [concurrent callers]

Reports µs of this process's CPU per call (time.process_time: what the gateway pays) and calls/s
(bounded by the redis-server sharing the machine). Not collected by pytest.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
import uvloop
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio import BlockingConnectionPool

from gateway.ratelimit import resp
from tests.support.procs import RedisServer

KEYS = [f"LIMITS:LIMITER/rl/orders/fixed-window/ip=10.0.{i // 256}.{i % 256}" for i in range(1000)]
ITEMS = [("/10/1/second", 1), ("/300/15/minute", 900)]


async def drive(call: Callable[[int], Awaitable[Any]], secs: float, conc: int) -> tuple[float, float]:
    for i in range(200):  # warm up: connections, caches
        await call(i)
    stop = False
    n = 0

    async def worker(w: int) -> None:
        nonlocal n
        i = w
        while not stop:
            await call(i)
            i += conc
            n += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.ensure_future(worker(w)) for w in range(conc)]
    await asyncio.sleep(secs)
    stop = True
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / n * 1e6, n / wall


async def bench_resp(url: str, secs: float, conc: int, reader: str) -> tuple[float, float]:
    if reader == "python":
        resp.new_reader = resp.PyReader
    client = resp.RespClient(url)

    async def call(i: int) -> Any:
        key = KEYS[i % len(KEYS)]
        cmds: list[tuple[Any, ...]] = []
        for suffix, window in ITEMS:
            k = key + suffix
            cmds += [(b"SET", k, b"0", b"EX", window, b"NX"), (b"INCR", k), (b"TTL", k)]
        res = await client.execute(cmds)
        return [(int(res[3 * j + 1]), int(res[3 * j + 2])) for j in range(len(ITEMS))]

    try:
        return await drive(call, secs, conc)
    finally:
        await client.close()


async def bench_redispy(url: str, secs: float, conc: int, parser: str) -> tuple[float, float]:
    extra = {"parser_class": _AsyncRESP2Parser} if parser == "python" else {}
    pool = BlockingConnectionPool.from_url(url, max_connections=128, timeout=0.25, **extra)  # as backend.py
    client = aioredis.Redis(connection_pool=pool)

    async def call(i: int) -> Any:
        key = KEYS[i % len(KEYS)]
        pipe = client.pipeline(transaction=True)
        for suffix, window in ITEMS:
            k = key + suffix
            pipe.set(k, 0, ex=window, nx=True)
            pipe.incr(k)
            pipe.ttl(k)
        res = await pipe.execute()
        return [(int(res[3 * j + 1]), int(res[3 * j + 2])) for j in range(len(ITEMS))]

    try:
        return await drive(call, secs, conc)
    finally:
        await client.aclose()
        await pool.disconnect()


def main() -> None:
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    conc = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    default_reader = resp.new_reader
    server = RedisServer().start()
    try:
        variants: list[tuple[str, Callable[[], Coroutine[Any, Any, tuple[float, float]]]]] = [
            ("RespClient, hiredis reader", lambda: bench_resp(server.url, secs, conc, "hiredis")),
            ("RespClient, pure-Python reader", lambda: bench_resp(server.url, secs, conc, "python")),
            ("redis-py pipeline, hiredis parser", lambda: bench_redispy(server.url, secs, conc, "hiredis")),
            ("redis-py pipeline, Python parser", lambda: bench_redispy(server.url, secs, conc, "python")),
        ]
        print(f"{conc} concurrent callers, {secs:.0f} s each, 2-item fixed-window batch (6 commands in MULTI/EXEC)")
        for name, run in variants:
            resp.new_reader = default_reader
            cpu_us, rate = uvloop.run(run())
            print(f"  {name:36s} {cpu_us:7.1f} µs CPU/call  {rate:8.0f} calls/s")
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
