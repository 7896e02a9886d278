"""The event-loop lag monitor: a blocked loop shows as lag, and the metric is exported."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from gateway.looplag import LoopLagMonitor
from gateway.metrics import Metrics


async def test_a_blocking_callback_shows_as_lag() -> None:
    seen: list[float] = []
    mon = LoopLagMonitor(seen.append, interval=0.005)
    mon.start()
    try:
        await asyncio.sleep(0.05)  # let it sample an idle loop first
        time.sleep(0.08)  # noqa: ASYNC251 - the stall under test: the loop cannot run the timer
        deadline = time.monotonic() + 10
        while mon.max_lag < 0.05 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        await mon.stop()
    assert mon.max_lag >= 0.05, seen
    assert max(seen) == mon.max_lag
    assert mon.samples == len(seen) >= 2


async def test_a_failing_sink_does_not_stop_the_monitor() -> None:
    calls = 0

    def broken(_lag: float) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("sink down")

    mon = LoopLagMonitor(broken, interval=0.002)
    mon.start()
    deadline = time.monotonic() + 10
    while calls < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await mon.stop()
    assert calls >= 3
    await mon.stop()  # idempotent


def test_interval_must_be_positive() -> None:
    import pytest

    with pytest.raises(ValueError):
        LoopLagMonitor(lambda _x: None, interval=0)


def test_metric_is_exported() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_loop_lag(0.004)
    m.observe_loop_lag(0.0001)
    text = generate_latest(m.registry).decode()
    assert 'gateway_event_loop_lag_seconds_bucket{le="0.005"} 2.0' in text
    assert 'gateway_event_loop_lag_seconds_bucket{le="0.003"} 1.0' in text
    assert "gateway_event_loop_lag_seconds_count 2.0" in text
