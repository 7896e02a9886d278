"""Issue 7, must show: a real Prometheus scrapes a gateway running two workers and counts our requests.

The gateway runs as `python -m gateway serve` with `GATEWAY_WORKERS=2`; Prometheus (Debian's
package, installed by scripts/setup.sh) scrapes its admin port every second. The metrics directory
starts with a stale file from a "previous run" claiming 1000 requests: the count must still be
exactly what this test sent, which shows the directory is cleaned at start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from tests.support.gateway_proc import Proc, echo_upstream, start_gateway, write_policy
from tests.support.procs import free_port, wait_port

SENT = 37
POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    defaults:
      timeouts: {connect: 1, total: 5, body_read: 1}
    limits: {max_in_flight: 256}
    routes:
      - {id: echo.get, path: /v1/echo, methods: [GET], auth: none}
      - {id: echo.item, path: "/v1/items/{itemId}", methods: [GET], auth: none,
         upstream_path: "/items/{itemId}"}
"""


def prometheus_binary() -> str:
    exe = shutil.which("prometheus") or "/usr/bin/prometheus"
    if os.access(exe, os.X_OK):
        return exe
    if os.environ.get("GATEWAY_TEST_NO_PROMETHEUS") == "1":
        pytest.skip("GATEWAY_TEST_NO_PROMETHEUS=1 and no prometheus binary")
    pytest.fail("prometheus is not installed; scripts/setup.sh installs Debian's `prometheus` package")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stale_counter(directory: Path) -> None:
    """A leftover worker file from a previous run: 1000 `echo.get` requests that never happened."""
    d = MmapedDict(str(directory / "counter_999999.db"))
    key = mmap_key("gateway_requests", "gateway_requests_total",
                   ["route", "method", "status_class", "decision"],
                   ["echo.get", "GET", "2xx", "allow"], "stale")
    d.write_value(key, 1000.0, 0.0)
    d.close()


class Prometheus:
    """A prometheus server of our own, scraping one target every second."""

    def __init__(self, exe: str, target: str, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: gateway\n"
            "    scrape_interval: 1s\n"
            "    metrics_path: /metrics\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        status, body = get(f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert status == 200, body
        return json.loads(body)["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def prometheus_exe() -> str:
    return prometheus_binary()


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    policy = write_policy(tmp_path / "policy", gateway=POLICY)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale_counter(metrics_dir)
    with echo_upstream() as up:
        gw = start_gateway(policy, up.url, {"GATEWAY_WORKERS": "2",
                                            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        try:
            yield gw, metrics_dir
        finally:
            gw.stop()


def worker_pids(gw: Proc) -> set[int]:
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    return {int(p) for p in children}


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last answer: {last!r}")


def test_prometheus_counts_requests_across_two_workers(
    prometheus_exe: str, two_workers: tuple[Proc, Path], tmp_path: Path
) -> None:
    gw, metrics_dir = two_workers
    admin = gw.admin_port  # type: ignore[attr-defined]
    try:
        wait_port(admin, timeout=15)
    except TimeoutError:
        raise AssertionError(f"no admin listener on {admin}:\n{gw.log()}") from None

    # Both workers write to the shared directory (each creates its metrics at start-up).
    workers = wait_for(lambda: len(worker_pids(gw)) == 2 and worker_pids(gw), 15, "two workers")
    wait_for(lambda: workers <= {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir.glob("gauge_*.db")},
             15, "both workers' metric files")
    assert not (metrics_dir / "counter_999999.db").exists()

    # New connection per request, eight at a time, so the kernel spreads them over both workers.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: get(f"{gw.url}/v1/echo")[0], range(SENT)))
        noise = list(pool.map(lambda i: get(f"{gw.url}/v1/items/{1000 + i}")[0], range(5)))
        unrouted = list(pool.map(lambda i: get(f"{gw.url}/v1/nope/{i}")[0], range(3)))
    assert statuses == [200] * SENT
    assert noise == [200] * 5
    assert all(s == 404 for s in unrouted)

    # Metrics are never on the public listener.
    status, body = get(f"{gw.url}/metrics")
    assert status == 404 and b"gateway_requests_total" not in body
    assert get(f"http://127.0.0.1:{admin}/")[0] == 404

    prom = Prometheus(prometheus_exe, f"127.0.0.1:{admin}", tmp_path)
    try:
        wait_port(prom.port, timeout=20)
        # It answers 503 while its storage starts; /-/ready turns 200 when queries work.
        wait_for(lambda: get(f"http://127.0.0.1:{prom.port}/-/ready")[0] == 200, 20,
                 f"prometheus to be ready ({prom.log_path})")
        wait_for(lambda: any(t["health"] == "up" for t in prom.api("targets")["activeTargets"]), 20,
                 f"the gateway target to be up ({prom.log_path})")
        expr = 'sum(gateway_requests_total{route="echo.get"})'
        # Counts are flushed to the shared files once a second: wait for the full count.
        result = wait_for(lambda: (r := prom.query(expr)) and float(r[0]["value"][1]) >= SENT and r, 15, expr)
        assert float(result[0]["value"][1]) == SENT

        series = prom.query("gateway_requests_total")
        assert {s["metric"]["route"] for s in series} == {"echo.get", "echo.item", "none"}
        for s in series:  # no raw path or id ever becomes a label value
            for label in ("route", "method", "status_class", "decision"):
                v = s["metric"][label]
                assert "/" not in v and "100" not in v and "nope" not in v, (label, v)
        unmatched = prom.query('sum(gateway_requests_total{route="none",status_class="4xx"})')
        assert float(unmatched[0]["value"][1]) == 3 + 1  # the three above and the public /metrics probe
        assert prom.query("gateway_build_info"), "build info is missing"
    finally:
        prom.stop()
