"""Graceful shutdown: SIGTERM with slow requests in flight; each completes with the upstream's answer."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx

from tests.support.gateway_proc import Proc, start_gateway, wait_until


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _workers_alive(url: str) -> int:
    try:
        return int(httpx.get(url, timeout=5).json().get("workers", {}).get("alive", 0))
    except (httpx.HTTPError, ValueError, AttributeError):
        return 0


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
        # The supervisor listens before its workers run: wait until a worker answers, and until the
        # supervisor counts both alive, so the SIGTERM below meets serving workers, not start-up.
        assert wait_until(lambda: _ok(f"{g.url}/healthz"), timeout=90)
        admin = f"http://127.0.0.1:{g.admin_port}/healthz"  # type: ignore[attr-defined]
        assert wait_until(lambda: _workers_alive(admin) == 2, timeout=90)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(httpx.get, f"{g.url}/v1/slow?ms=2000", timeout=60) for _ in range(4)]
            time.sleep(0.5)
            g.signal(signal.SIGTERM)
            results = [f.result() for f in futures]
        assert [r.status_code for r in results] == [200] * 4
        assert g.wait(20) == 0
    finally:
        g.stop()


def test_drain_closes_keep_alive_connections_without_failing_a_reused_one(core_policy: str, upstream: Proc) -> None:
    """Keep-alive clients hammering the gateway through a SIGTERM: every response from the drain
    on carries `Connection: close`, so no request is ever sent on a connection the gateway closes.
    A refused *new* connection after the listener closed is expected; a failure on a reused
    connection is the bug."""
    import http.client
    import select
    import threading

    g = start_gateway(core_policy, upstream.url, {"GATEWAY_DRAIN_DELAY": "2", "GATEWAY_GRACE_TIMEOUT": "10"})
    stop = threading.Event()
    stats = {"ok": 0, "closed_by_header": 0, "reused_failures": 0, "idle_closed_failures": 0}
    lock = threading.Lock()

    def client(idle: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        served = 0
        while not stop.is_set():
            if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                # What urllib3 and httpx do before reusing a pooled connection: the server closed
                # it while idle, so it is dropped, not written to.
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
                served = 0
            try:
                conn.request("GET", "/v1/echo")
                resp = conn.getresponse()
                resp.read()
            except (ConnectionRefusedError, OSError) as exc:
                with lock:
                    if served and not isinstance(exc, ConnectionRefusedError):
                        stats["reused_failures"] += 1
                conn.close()
                conn = None
                if isinstance(exc, ConnectionRefusedError):
                    return  # the listener is closed: done
                continue
            served += 1
            with lock:
                stats["ok"] += 1
            if resp.getheader("connection", "").lower() == "close":
                with lock:
                    stats["closed_by_header"] += 1
                conn.close()
                conn = None
            # One client idles long between requests: its idle connection is closed by the
            # drain, and http.client then sees a clean close (never a half-sent request).
            time.sleep(3.0 if idle else 0.02)
        if conn is not None:
            conn.close()

    try:
        threads = [threading.Thread(target=client, args=(i == 0,)) for i in range(5)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        g.signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        stop.set()
        assert g.wait(20) == 0
    finally:
        stop.set()
        g.stop()
    assert stats["ok"] > 20
    assert stats["closed_by_header"] >= 4, stats
    assert stats["reused_failures"] == 0, stats


def test_connection_close_lasts_the_whole_drain(core_policy: str, upstream: Proc) -> None:
    """uvicorn rebuilds its default headers every second; the drain's `Connection: close` must
    survive that, or a load balancer's keep-alive connection stays open through the drain and
    meets the lifespan shutdown (seen as a 502 in the compose smoke test)."""
    import http.client

    g = start_gateway(core_policy, upstream.url, {"GATEWAY_DRAIN_DELAY": "6", "GATEWAY_GRACE_TIMEOUT": "10"})
    try:
        assert wait_until(lambda: _ok(f"{g.url}/healthz"), timeout=90)
        g.signal(signal.SIGTERM)
        seen = []
        deadline = time.monotonic() + 3.5  # well past two of uvicorn's once-a-second rebuilds
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
            conn.request("GET", "/v1/echo")
            resp = conn.getresponse()
            resp.read()
            seen.append((resp.status, (resp.getheader("connection") or "").lower()))
            conn.close()
            time.sleep(0.25)
        assert len(seen) >= 5
        assert all(conn_header == "close" for _status, conn_header in seen), seen
        assert g.wait(30) == 0
    finally:
        g.stop()
