"""gateway/health.py: what makes a replica ready, and the active probe against real sockets."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.health import HealthBoard, ProbeResult, probe_http

UP, DOWN = ProbeResult(True, "status 200", 0.001), ProbeResult(False, "timeout: no answer within 1s")


def board(mandatory: bool = False, **state: Any) -> HealthBoard:
    b = HealthBoard()
    rl = SimpleNamespace(on_storage_error="closed" if mandatory else "local")
    b.set_policy(SimpleNamespace(digest="abc123", routes=[1, 2], upstream=SimpleNamespace(url="http://u"),
                                 sections={"compiled.rate_limits": rl}))
    b.redis_configured = True
    b.redis, b.upstream = UP, UP
    for k, v in state.items():
        setattr(b, k, v)
    return b


@pytest.mark.parametrize(("b", "ready"), [
    pytest.param(board(), True, id="all_good"),
    pytest.param(board(upstream=DOWN), True, id="upstream_down_still_ready"),
    pytest.param(board(redis=DOWN), True, id="redis_down_not_mandatory"),
    pytest.param(board(True, redis=DOWN), False, id="redis_down_mandatory"),
    pytest.param(board(True, redis=None), False, id="redis_not_probed_yet_mandatory"),
    pytest.param(board(draining=True), False, id="draining"),
    pytest.param(board(policy=None), False, id="no_policy"),
    pytest.param(board(workers=(0, 2)), False, id="no_worker_alive"),
    pytest.param(board(workers=(1, 2)), True, id="one_worker_alive"),
    pytest.param(board(extra={"jwks": lambda: (False, "no keys")}), False, id="jwks_not_loaded"),
])
def test_readiness_decision(b: HealthBoard, ready: bool) -> None:
    got, checks = b.readiness()
    assert got is ready
    assert checks["upstream"]["affects_readiness"] is False
    assert checks["redis"]["affects_readiness"] is (b.policy is not None and b.policy["redis_mandatory"])


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def test_probe_hung_server_times_out() -> None:
    s = _listener()  # accepts (backlog) and never answers: a SIGSTOPped process looks like this
    try:
        r = probe_http(f"http://127.0.0.1:{s.getsockname()[1]}", "/healthz", 0.3)
        assert not r.ok and r.detail.startswith("timeout")
    finally:
        s.close()


def test_probe_dead_port_is_unreachable() -> None:
    s = _listener()
    port = s.getsockname()[1]
    s.close()
    r = probe_http(f"http://127.0.0.1:{port}", "/healthz", 1.0)
    assert not r.ok and r.detail.startswith("unreachable")


@pytest.mark.parametrize(("status", "ok"), [(200, True), (404, True), (503, False)])
def test_probe_status(status: int, ok: bool) -> None:
    s = _listener()

    def answer() -> None:
        conn, _ = s.accept()
        conn.recv(4096)
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        conn.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        r = probe_http(f"http://127.0.0.1:{s.getsockname()[1]}", "/healthz", 5.0)
        assert r.ok is ok and r.detail == f"status {status}"
    finally:
        t.join(5)
        s.close()
