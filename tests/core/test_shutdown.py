"""Graceful shutdown: SIGTERM with slow requests in flight; each completes with the upstream's answer."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx

from tests.support.gateway_proc import Proc, start_gateway


def test_sigterm_drains_then_finishes_in_flight_requests(core_policy: str, upstream: Proc) -> None:
    g = start_gateway(core_policy, upstream.url, {"GATEWAY_DRAIN_DELAY": "1", "GATEWAY_GRACE_TIMEOUT": "10"})
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.get, f"{g.url}/v1/slow?ms=2500", timeout=15) for _ in range(3)]
            time.sleep(0.5)  # all three are in flight at the upstream
            g.signal(signal.SIGTERM)
            time.sleep(0.3)
            ready = httpx.get(f"{g.url}/readyz")  # during the drain delay: still serving, not ready
            assert ready.status_code == 503 and ready.json() == {"status": "not_ready"}
            admin = httpx.get(f"http://127.0.0.1:{g.admin_port}/readyz")  # type: ignore[attr-defined]
            assert admin.status_code == 503 and admin.json()["checks"]["draining"]["ok"] is False
            results = [f.result() for f in futures]
        for r in results:
            assert r.status_code == 200
            assert r.json()["path"] == "/slow"
        assert g.wait(20) == 0
    finally:
        g.stop()
    log = g.log()
    assert "Traceback" not in log


def test_sigterm_with_idle_gateway_exits_zero(core_policy: str, upstream: Proc) -> None:
    g = start_gateway(core_policy, upstream.url)
    try:
        g.signal(signal.SIGTERM)
        assert g.wait(15) == 0
    finally:
        g.stop()


def test_two_workers_sigterm_completes_in_flight(core_policy: str, upstream: Proc) -> None:
    g = start_gateway(core_policy, upstream.url, {"GATEWAY_WORKERS": "2", "GATEWAY_DRAIN_DELAY": "0.5"})
    try:
        time.sleep(1.0)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(httpx.get, f"{g.url}/v1/slow?ms=2000", timeout=15) for _ in range(4)]
            time.sleep(0.5)
            g.signal(signal.SIGTERM)
            results = [f.result() for f in futures]
        assert [r.status_code for r in results] == [200] * 4
        assert g.wait(20) == 0
    finally:
        g.stop()
