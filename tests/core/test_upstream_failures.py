"""Upstream down, slow, or overloaded: typed 502/504/503, never a hang or a stack trace."""

from __future__ import annotations

import concurrent.futures
import socket
import threading

import httpx

from tests.support.gateway_proc import Proc, gateway
from tests.support.procs import free_port


def test_upstream_down_is_502(core_policy: str) -> None:
    dead = free_port()  # nothing listens there
    with gateway(core_policy, f"http://127.0.0.1:{dead}") as g:
        r = httpx.get(f"{g.url}/v1/echo")
        assert r.status_code == 502
        body = r.json()
        assert body["reason"] == "upstream.unavailable"
        assert "127.0.0.1" not in r.text and "Traceback" not in r.text
        # The upstream is shared by every replica: its outage does not make this one unready
        # (tests/e2e/test_readiness_wire.py covers the admin detail).
        assert httpx.get(f"{g.url}/readyz").status_code == 200


def test_upstream_reset_is_502(core_policy: str) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def reset_all() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()  # RST

    t = threading.Thread(target=reset_all, daemon=True)
    t.start()
    try:
        with gateway(core_policy, f"http://127.0.0.1:{port}") as g:
            r = httpx.get(f"{g.url}/v1/echo")
            assert r.status_code == 502
            assert r.json()["reason"] == "upstream.unavailable"
    finally:
        stop.set()
        t.join()
        srv.close()


def test_slow_upstream_is_504(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/slow-short?ms=2000", timeout=10)
    assert r.status_code == 504
    assert r.json()["reason"] == "upstream.timeout"


def test_connect_timeout_is_504_or_502(core_policy: str) -> None:
    # A listener with a full backlog that never accepts: connecting hangs → connect timeout.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        with gateway(core_policy, f"http://127.0.0.1:{port}") as g:
            r = httpx.get(f"{g.url}/v1/echo", timeout=10)
            assert r.status_code in (502, 504)
            assert r.json()["reason"] in ("upstream.timeout", "upstream.unavailable")
    finally:
        for s in fillers:
            s.close()
        srv.close()


def test_over_in_flight_cap_is_503_with_retry_after(gw: Proc) -> None:
    # The core policy caps in-flight requests at 4 per process.
    def slow() -> int:
        return httpx.get(f"{gw.url}/v1/slow?ms=1500", timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(slow) for _ in range(6)]
        import time
        time.sleep(0.5)
        shed = httpx.get(f"{gw.url}/v1/echo", timeout=10)
        statuses = [f.result() for f in futures]
    assert shed.status_code == 503
    assert shed.json()["reason"] == "gateway.overloaded"
    assert shed.headers["retry-after"] == "1"
    assert statuses.count(200) == 4
    assert statuses.count(503) == 2
