"""The admin listener on `GATEWAY_ADMIN_HOST:GATEWAY_ADMIN_PORT` (HTTP/1.1, keep-alive):

    GET /metrics   Prometheus exposition (text or OpenMetrics by `Accept`)
    GET /healthz   this process is alive (pid, uptime, workers)
    GET /readyz    readiness with every check: policy, draining, workers, Redis, upstream probe

It never shares the public listener: metrics and readiness detail reveal route ids, denial
reasons, the policy digest and the state of dependencies, which help an attacker map the
deployment, so they are served only where operators can reach them (127.0.0.1 by default). It
runs in the supervisor (or the single in-process worker) as daemon threads; with several workers
it sums their multiprocess files on every scrape. The upstream and Redis probes run here too
(`gateway/health.py`), so their cost does not depend on the number of workers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.health import BOARD, HealthBoard, Prober, dumps
from gateway.metrics import multiprocess_enabled, process_metrics
from gateway.settings import Settings

log = logging.getLogger("gateway.admin")
# Info gauges whose 0-valued series are stale (a hash a worker moved away from). Multiprocess mode
# cannot remove a label set, so they are hidden here; otherwise "two policy hashes live" would
# stay true forever after the first reload.
_INFO_METRICS = frozenset({"gateway_policy_info"})


class _LiveInfoFilter(Collector):
    """Wraps a collector and drops info-gauge samples whose value is 0."""

    def __init__(self, inner: Collector | CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        for metric in self.inner.collect():
            if metric.name in _INFO_METRICS:
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric


class _ProbeCollector(Collector):
    """The upstream and Redis probes as gauges (present from the first scrape on)."""

    def __init__(self, board: HealthBoard) -> None:
        self.board = board

    def collect(self) -> Iterable[Metric]:
        b = self.board
        up = GaugeMetricFamily("gateway_upstream_up",
                               "1 when the active upstream probe got an answer below 500 in time.")
        up.add_metric([], 1.0 if b.upstream and b.upstream.ok else 0.0)
        yield up
        took = GaugeMetricFamily("gateway_upstream_probe_duration_seconds",
                                 "Duration of the last successful upstream probe (NaN when it failed).")
        took.add_metric([], b.upstream.seconds if b.upstream and b.upstream.seconds is not None else float("nan"))
        yield took
        ready = GaugeMetricFamily("gateway_ready", "1 while this replica reports ready on /readyz.")
        ready.add_metric([], 1.0 if b.readiness()[0] else 0.0)
        yield ready
        if b.redis_configured:
            redis_up = GaugeMetricFamily("gateway_redis_up", "1 when the Redis probe answered PING.")
            redis_up.add_metric([], 1.0 if b.redis and b.redis.ok else 0.0)
            yield redis_up


def metrics_registry(board: HealthBoard | None = None) -> CollectorRegistry:
    """What a scrape sees: all workers' files summed (or this process's own metrics), the probes,
    and the process / platform collectors of the process serving the admin listener."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_enabled():
        registry.register(_LiveInfoFilter(MultiProcessCollector(None)))
    else:
        registry.register(_LiveInfoFilter(process_metrics().registry))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)  # registers nothing in multiprocess mode (per-process data)
    registry.register(_ProbeCollector(board or BOARD))
    return registry


def _handler(registry: CollectorRegistry, board: HealthBoard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # an idle keep-alive connection does not hold a thread forever
        server_version = "edge-gateway-admin"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(head=True)

        def _not_allowed(self) -> None:
            self._reply(405, b"method not allowed\n", "text/plain", extra={"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

        def _serve(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._reply(200, encoder(registry), content_type, head)
            elif path == "/healthz":
                self._reply(200, dumps(board.health()), "application/json", head)
            elif path == "/readyz":
                ready, checks = board.readiness()
                body = dumps({"status": "ready" if ready else "not_ready", "checks": checks})
                self._reply(200 if ready else 503, body, "application/json", head)
            else:
                self._reply(404, b"not found\n", "text/plain", head)

        def _reply(self, status: int, body: bytes, content_type: str, head: bool = False,
                   extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # scrapes every few seconds would drown the structured logs

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scrape must not keep the process alive at exit


class _Server6(_Server):
    address_family = socket.AF_INET6


def start_admin(settings: Settings, board: HealthBoard | None = None) -> Callable[[], None]:
    """Serve the admin listener and run the probes in daemon threads; returns a function that
    stops both. Call after `prepare_multiprocess_dir` when workers are forked. Raises OSError when
    the port is taken (refuse to start rather than run without metrics)."""
    board = board or BOARD
    server_class = _Server6 if ":" in settings.admin_host else _Server
    server = server_class((settings.admin_host, settings.admin_port), _handler(metrics_registry(board), board))
    thread = threading.Thread(target=server.serve_forever, name="gateway-admin", daemon=True)
    thread.start()
    prober = Prober(board, lambda: board.policy["upstream"] if board.policy else settings.upstream_url,
                    settings.upstream_probe_path, settings.redis_url, settings.upstream_probe_interval,
                    settings.upstream_probe_timeout)
    prober.start()
    log.info("admin listener on %s:%d (GET /metrics, /healthz, /readyz)", settings.admin_host, settings.admin_port)

    def stop() -> None:
        prober.stop()
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
