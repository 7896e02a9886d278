"""Readiness for a replicated edge, over real sockets: a hung upstream, a dead upstream, Redis down.

Ready = policy loaded, not draining, and Redis only where the policy makes it mandatory. The
upstream is probed with a timeout and reported (admin detail, `gateway_upstream_up`), but never
takes the replica out of rotation: every replica shares it.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway_proc import Proc, echo_upstream, gateway, wait_until, write_policy
from tests.support.procs import RedisServer, free_port

POLICY = """
    upstream: {{url: "${{GATEWAY_UPSTREAM_URL}}"}}
    rate_limits: {{on_storage_error: {mode}}}
    routes:
      - {{id: echo, path: /v1/echo, methods: [GET], auth: none, upstream_path: /echo,
          rate_limit: {{limits: "1000/minute", key: ip}}}}
"""
FAST_PROBE = {"GATEWAY_UPSTREAM_PROBE_INTERVAL": "0.3", "GATEWAY_UPSTREAM_PROBE_TIMEOUT": "0.5",
              "GATEWAY_UPSTREAM_PROBE_PATH": "/echo", "GATEWAY_ACCESS_LOG": "off"}


def policy(tmp: Path, mode: str = "local") -> Path:
    return write_policy(tmp / f"pol-{mode}", gateway=POLICY.format(mode=mode))


def admin(gw: Proc, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gw.admin_port}{path}", timeout=5)  # type: ignore[attr-defined]


def admin_ready(gw: Proc) -> tuple[int, dict[str, Any]]:
    r = admin(gw, "/readyz")
    return r.status_code, r.json()


def metric(gw: Proc, name: str) -> float | None:
    for line in admin(gw, "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def upstream_state(gw: Proc) -> dict[str, Any]:
    return admin_ready(gw)[1]["checks"]["upstream"]


@pytest.fixture
def up() -> Iterator[Proc]:
    with echo_upstream() as proc:
        yield proc


def test_public_readyz_is_minimal_admin_has_detail(tmp_path: Path, up: Proc) -> None:
    with gateway(policy(tmp_path), up.url, FAST_PROBE) as gw:
        r = httpx.get(f"{gw.url}/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready"}
        assert wait_until(lambda: upstream_state(gw)["ok"] is True)
        status, body = admin_ready(gw)
        assert status == 200 and body["status"] == "ready"
        assert "digest" in body["checks"]["policy"]["detail"] and body["checks"]["draining"]["ok"] is True
        assert body["checks"]["upstream"]["affects_readiness"] is False
        assert body["checks"]["upstream"]["latency_ms"] is not None
        assert admin(gw, "/healthz").json()["status"] == "ok"
        assert metric(gw, "gateway_upstream_up") == 1.0 and metric(gw, "gateway_ready") == 1.0


def test_hung_upstream_is_not_ok_but_replica_stays_ready(tmp_path: Path, up: Proc) -> None:
    with gateway(policy(tmp_path), up.url, FAST_PROBE) as gw:
        assert wait_until(lambda: upstream_state(gw)["ok"] is True)
        os.kill(up.proc.pid, signal.SIGSTOP)  # accepts connections (kernel backlog), never answers
        try:
            assert wait_until(lambda: upstream_state(gw)["ok"] is False, timeout=15)
            assert "timeout" in upstream_state(gw)["detail"]
            assert metric(gw, "gateway_upstream_up") == 0.0
            assert httpx.get(f"{gw.url}/readyz").status_code == 200
            assert admin_ready(gw)[0] == 200
        finally:
            os.kill(up.proc.pid, signal.SIGCONT)
        assert wait_until(lambda: upstream_state(gw)["ok"] is True, timeout=15)


def test_dead_upstream_is_unreachable_but_replica_stays_ready(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway(policy(tmp_path), dead, FAST_PROBE) as gw:
        assert wait_until(lambda: upstream_state(gw)["ok"] is False, timeout=15)
        assert "unreachable" in upstream_state(gw)["detail"]
        assert httpx.get(f"{gw.url}/v1/echo").status_code == 502  # the gateway's own answer
        assert httpx.get(f"{gw.url}/readyz").status_code == 200


@pytest.mark.parametrize(("mode", "ready_when_down"), [("local", True), ("open", True), ("closed", False)])
def test_redis_down_affects_readiness_only_when_mandatory(tmp_path: Path, up: Proc, mode: str,
                                                          ready_when_down: bool) -> None:
    redis = RedisServer().start()
    try:
        env = {**FAST_PROBE, "GATEWAY_REDIS_URL": redis.url}
        with gateway(policy(tmp_path, mode), up.url, env) as gw:
            assert wait_until(lambda: admin_ready(gw)[1]["checks"].get("redis", {}).get("ok") is True)
            assert httpx.get(f"{gw.url}/readyz").status_code == 200
            redis.kill()
            assert wait_until(lambda: admin_ready(gw)[1]["checks"]["redis"]["ok"] is False, timeout=15)
            assert admin_ready(gw)[1]["checks"]["redis"]["affects_readiness"] is (not ready_when_down)
            expected = 200 if ready_when_down else 503
            assert wait_until(lambda: httpx.get(f"{gw.url}/readyz").status_code == expected, timeout=10)
            assert admin_ready(gw)[0] == expected
            assert metric(gw, "gateway_redis_up") == 0.0
            if ready_when_down:  # and the replica still serves
                assert httpx.get(f"{gw.url}/v1/echo").status_code == 200
    finally:
        redis.stop()


def test_admin_speaks_http11_with_keep_alive(tmp_path: Path, up: Proc) -> None:
    with gateway(policy(tmp_path), up.url, FAST_PROBE) as gw:
        with socket.create_connection(("127.0.0.1", gw.admin_port), timeout=5) as s:  # type: ignore[attr-defined]
            for path in ("/healthz", "/readyz"):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    head += s.recv(4096)
                assert head.startswith(b"HTTP/1.1 200 "), head
                length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
                             .split(b":")[1])
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += s.recv(4096)
        assert admin(gw, "/readyz").http_version == "HTTP/1.1"


def test_fresh_deploy_has_zero_series_and_process_metrics(tmp_path: Path, up: Proc) -> None:
    with gateway(policy(tmp_path), up.url, FAST_PROBE) as gw:
        text = admin(gw, "/metrics").text
    for series in ('gateway_policy_reloads_total{result="failed"} 0.0',
                   'gateway_policy_reloads_total{result="ok"} 0.0',
                   'gateway_redis_errors_total{component="ratelimit"} 0.0',
                   'gateway_requests_total{decision="allow",method="GET",route="echo",status_class="2xx"} 0.0',
                   'gateway_ratelimit_total{outcome="denied",route="echo"} 0.0',
                   'gateway_denials_total{reason="ratelimit.exceeded",route="echo"} 0.0',
                   'gateway_denials_total{reason="route.not_found",route="none"} 0.0'):
        assert series in text, series
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info",
                 "gateway_upstream_up", "gateway_audit_segments_total"):
        assert f"\n{name}" in text, name


def test_two_workers_admin_reports_workers(tmp_path: Path, up: Proc) -> None:
    with gateway(policy(tmp_path), up.url, {**FAST_PROBE, "GATEWAY_WORKERS": "2"}) as gw:
        assert wait_until(lambda: admin_ready(gw)[1]["checks"].get("workers", {}).get("detail") == "2 of 2 alive",
                          timeout=20)
        status, body = admin_ready(gw)
        assert status == 200 and body["checks"]["policy"]["ok"] is True
        # The workers' series reach the supervisor's /metrics with their once-a-second flush: on a
        # busy machine the first scrape after "2 of 2 alive" can come before it (seen in CI).
        wanted = ("\nprocess_resident_memory_bytes", 'gateway_policy_reloads_total{result="ok"} 0.0')
        assert wait_until(lambda: all(w in admin(gw, "/metrics").text for w in wanted), timeout=20), \
            admin(gw, "/metrics").text[-3000:]
