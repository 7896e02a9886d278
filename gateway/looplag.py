"""Event-loop lag: how late a timer fires, i.e. how long the loop was busy with something else.

A stall (a callback that runs for milliseconds: a synchronous write, a big GC pass, a sweep
over thousands of keys) delays every request in flight at that moment; it shows in the latency
tail long before it shows in throughput. The monitor wakes every `interval` seconds and records
`actual wake-up - due time` in `gateway_event_loop_lag_seconds` (a histogram per process).

Timer resolution: uvloop (libuv) schedules timers in whole milliseconds, so an idle loop reads
0-1 ms; the figures that matter are the multi-millisecond ones. The cost is one timer callback
per interval (100 per second at the default 10 ms, the resolution Node's monitorEventLoopDelay
uses too): under load it rides on loop iterations that happen anyway; an idle worker wakes up for
it (measured 18 ms of CPU per second on a heavily overloaded 2-core VM, almost all of it the
wake-up itself, not the histogram).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 0.01
# Seconds. Fine below 10 ms, where a healthy loop under load lives, coarse above.
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
               0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLagMonitor:
    """Samples the running loop's lag into `observe(seconds)`; start() in the loop, stop() at shutdown."""

    def __init__(self, observe: Callable[[float], None], interval: float = DEFAULT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.observe = observe
        self.interval = interval
        self.samples = 0
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock, interval, observe = time.perf_counter, self.interval, self.observe
        while True:
            due = clock() + interval
            await asyncio.sleep(interval)
            lag = max(0.0, clock() - due)
            self.samples += 1
            if lag > self.max_lag:
                self.max_lag = lag
            # A broken metrics sink must not end the monitor.
            with contextlib.suppress(Exception):
                observe(lag)
