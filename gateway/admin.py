"""The admin listener: `GET /metrics` on `GATEWAY_ADMIN_HOST:GATEWAY_ADMIN_PORT`, 404 for anything else.

It never shares the public listener: metrics reveal route ids, denial reasons and traffic shape,
which help an attacker map the policy, so they are served only where operators can reach them
(127.0.0.1 by default). It runs in the supervisor (or the single in-process worker) as a daemon
thread; with several workers it sums their multiprocess files on every scrape.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

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


def metrics_registry() -> CollectorRegistry:
    """What a scrape sees: all workers' files summed, or this process's own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_enabled():
        registry.register(_LiveInfoFilter(MultiProcessCollector(None)))
    else:
        registry.register(_LiveInfoFilter(process_metrics().registry))
    return registry


def admin_app(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """WSGI app: `/metrics` (GET/HEAD) from the registry; 404 elsewhere, 405 for other methods."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
            return [b"not found\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        out: Iterable[bytes] = metrics(environ, start_response)
        return out

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung scrape must not keep the process alive at exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes every few seconds would drown the structured logs


def start_admin(settings: Settings) -> Callable[[], None]:
    """Serve the admin listener in a daemon thread; returns a function that stops it.

    Call after `prepare_multiprocess_dir` when workers are forked. Raises OSError when the port is
    taken (refuse to start rather than run without metrics).
    """
    server_class = _Server6 if ":" in settings.admin_host else _Server
    server = make_server(settings.admin_host, settings.admin_port, admin_app(metrics_registry()),
                         server_class, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="gateway-admin", daemon=True)
    thread.start()
    log.info("admin listener on %s:%d (GET /metrics)", settings.admin_host, settings.admin_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
