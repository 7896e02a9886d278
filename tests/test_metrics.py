"""gateway/metrics.py and gateway/admin.py: label sets, cardinality, multiprocess sums, the listener."""

from __future__ import annotations

import multiprocessing
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client.values as values
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

import gateway.metrics as metrics_mod
from gateway.admin import metrics_registry, start_admin
from gateway.context import RequestContext
from gateway.health import HealthBoard
from gateway.metrics import Metrics, mark_process_dead, prepare_multiprocess_dir, status_class
from gateway.settings import Settings
from tests.support.procs import free_port


@pytest.fixture
def mp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Multiprocess mode in a private directory; value class and env restored afterwards."""
    d = tmp_path / "prom"
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "placeholder")
    monkeypatch.setattr(metrics_mod, "_process_metrics", None)
    prepare_multiprocess_dir(str(d))
    yield d


@pytest.fixture
def single(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    monkeypatch.setattr(metrics_mod, "_process_metrics", None)


def ctx_for(route: str | None, status: int = 200, decision: str = "allow", reason: str | None = None,
            upstream: float | None = None) -> RequestContext:
    ctx = RequestContext("req-00000001", "203.0.113.7", None)  # type: ignore[arg-type]
    ctx.route = SimpleNamespace(id=route) if route else None  # type: ignore[assignment]
    ctx.status, ctx.decision, ctx.reason, ctx.upstream_seconds = status, decision, reason, upstream
    return ctx


def samples(name: str | None = None) -> list[Sample]:
    """What a scrape of the admin listener would see, as samples."""
    metrics_mod.flush_all()
    out = [s for m in metrics_registry().collect() for s in m.samples]
    return [s for s in out if name is None or s.name == name]


def value(name: str, **labels: str) -> float:
    return sum(s.value for s in samples(name) if all(s.labels.get(k) == v for k, v in labels.items()))


REQUESTS = [  # (method, raw path the client sent, matched route id or None)
    ("GET", "/v1/agents/123", "agents.get"),
    ("DELETE", "/v1/agents/8c0f2e9a-1d7b-4f7e-9a51-3c2d9a6b7e10", "agents.delete"),
    ("GET", "/v1/agents/123/../../admin", None),
    ("PROPFIND", "/v1/agents/456", None),
    ("get", "/v1/crm/connections/conn_789/sync", None),
    ("POST", "/v1/webhooks/kommo/secret-path-token-0001", "webhooks.kommo"),
]


def test_labels_never_carry_a_path_an_id_or_a_raw_method(mp_dir: Path) -> None:
    m = Metrics()
    for method, path, route in REQUESTS:
        m.observe({"method": method, "path": path}, ctx_for(route, 404 if route is None else 200,
                                                          "deny" if route is None else "allow",
                                                          "route.not_found" if route is None else None))
    got = samples()
    assert got, "nothing was recorded"
    for s in got:
        for label, v in s.labels.items():
            assert "/" not in v, (s.name, label, v)
            for secret in ("123", "456", "789", "8c0f2e9a", "secret-path-token", "admin"):
                assert secret not in v, (s.name, label, v)
    routes = {s.labels["route"] for s in got if "route" in s.labels}
    assert routes == {"agents.get", "agents.delete", "webhooks.kommo", "none"}
    methods = {s.labels["method"] for s in samples("gateway_requests_total")}
    assert methods == {"GET", "DELETE", "POST", "OTHER"}  # "get" (not a method) and PROPFIND fold


@pytest.mark.parametrize(("status", "expected"), [
    pytest.param(200, "2xx", id="ok"),
    pytest.param(204, "2xx", id="no_content"),
    pytest.param(304, "3xx", id="not_modified"),
    pytest.param(403, "4xx", id="forbidden"),
    pytest.param(499, "4xx", id="client_closed"),
    pytest.param(504, "5xx", id="gateway_timeout"),
    pytest.param(0, "other", id="no_status"),
    pytest.param(999, "other", id="nonsense"),
])
def test_status_class(status: int, expected: str) -> None:
    assert status_class(status) == expected


def test_request_counter_duration_and_upstream(mp_dir: Path) -> None:
    m = Metrics()
    m.observe({"method": "GET"}, ctx_for("echo.get", 200, upstream=0.004))
    m.observe({"method": "GET"}, ctx_for("echo.get", 502, "error", "upstream.unavailable"))
    assert value("gateway_requests_total", route="echo.get", status_class="2xx", decision="allow") == 1
    assert value("gateway_requests_total", route="echo.get", status_class="5xx", decision="error") == 1
    assert value("gateway_request_duration_seconds_count", route="echo.get") == 2
    # Only the request that reached the upstream has an upstream time.
    assert value("gateway_upstream_duration_seconds_count", route="echo.get") == 1
    assert value("gateway_upstream_duration_seconds_bucket", route="echo.get", le="0.005") == 1


@pytest.mark.parametrize(("decision", "reason", "counted"), [
    pytest.param("deny", "tenant.mismatch", True, id="deny_with_reason"),
    pytest.param("error", "upstream.timeout", True, id="error_with_reason"),
    pytest.param("client_closed", "request.client_closed", True, id="client_closed"),
    pytest.param("deny", None, False, id="deny_without_reason"),
    pytest.param("allow", None, False, id="allowed"),
])
def test_denials_by_reason(mp_dir: Path, decision: str, reason: str | None, counted: bool) -> None:
    m = Metrics()
    m.observe({"method": "POST"}, ctx_for("agents.create", 403, decision, reason))
    denials = samples("gateway_denials_total")
    if counted:
        assert [(s.labels, s.value) for s in denials] == [({"route": "agents.create", "reason": reason}, 1.0)]
    else:
        assert denials == []


def test_label_children_are_cached(mp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics()
    m.observe({"method": "GET"}, ctx_for("echo.get", upstream=0.01))
    cached = dict(m._children)

    def no_more_lookups(*a: Any, **k: Any) -> Any:
        raise AssertionError("labels() called again for a label set already seen")

    for metric in (m.requests, m.duration, m.upstream):
        monkeypatch.setattr(metric, "labels", no_more_lookups)
    for _ in range(5):
        m.observe({"method": "GET"}, ctx_for("echo.get", upstream=0.01))
    assert m._children == cached
    assert value("gateway_requests_total", route="echo.get") == 6


def test_explicit_events(mp_dir: Path) -> None:
    m = Metrics()
    m.ratelimit("agents.list", "shadow_denied")
    m.ratelimit(None, "denied")
    m.webhook("webhooks.kommo_chat", "bad_signature")
    m.redis_error("ratelimit")
    m.set_degraded(True)
    m.reload("failed")
    m.audit_failure()
    m.audit_dropped(3)
    assert value("gateway_ratelimit_total", route="agents.list", outcome="shadow_denied") == 1
    assert value("gateway_ratelimit_total", route="none", outcome="denied") == 1
    assert value("gateway_webhook_total", route="webhooks.kommo_chat", outcome="bad_signature") == 1
    assert value("gateway_redis_errors_total", component="ratelimit") == 1
    assert value("gateway_ratelimit_degraded") == 1
    assert value("gateway_policy_reloads_total", result="failed") == 1
    assert value("gateway_audit_failures_total") == 1
    assert value("gateway_audit_dropped_total") == 3
    m.set_degraded(False)
    assert value("gateway_ratelimit_degraded") == 0
    build = samples("gateway_build_info")
    assert len(build) == 1 and build[0].value == 1 and set(build[0].labels) == {"version", "python"}


@pytest.mark.parametrize(("call", "arg"), [
    pytest.param("ratelimit", "blocked", id="ratelimit_typo"),
    pytest.param("webhook", "invalid", id="webhook_unknown"),
    pytest.param("reload", "success", id="reload_unknown"),
])
def test_unknown_outcomes_are_refused(mp_dir: Path, call: str, arg: str) -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="unknown metric label value"):
        if call == "reload":
            m.reload(arg)
        else:
            getattr(m, call)("r", arg)


def test_policy_info_shows_only_the_current_hash(mp_dir: Path) -> None:
    m = Metrics()
    m.policy_loaded("aaa111")
    m.policy_loaded("bbb222")
    assert [(s.labels, s.value) for s in samples("gateway_policy_info")] == [({"hash": "bbb222"}, 1.0)]


def _worker(n: int, route: str) -> None:
    m = metrics_mod.process_metrics()
    for _ in range(n):
        m.observe({"method": "GET"}, ctx_for(route))
    m.flush()
    m.set_in_flight(1)
    m.set_degraded(route == "b")
    m.policy_loaded("cafe01")


def test_several_processes_are_summed_and_dead_ones_drop_live_gauges(mp_dir: Path) -> None:
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_worker, args=(20, "a")), fork.Process(target=_worker, args=(17, "b"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
        assert p.exitcode == 0
    assert value("gateway_requests_total") == 37
    assert value("gateway_requests_total", route="b") == 17
    assert value("gateway_requests_in_flight") == 2
    assert value("gateway_ratelimit_degraded") == 1
    assert [s.labels for s in samples("gateway_policy_info")] == [{"hash": "cafe01"}]
    for p in procs:
        mark_process_dead(p.pid)  # type: ignore[arg-type]
    assert value("gateway_requests_total") == 37  # counters outlive their process
    assert value("gateway_requests_in_flight") == 0
    assert samples("gateway_ratelimit_degraded") == []
    assert samples("gateway_policy_info") == []


def test_prepare_cleans_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "placeholder")
    d = tmp_path / "prom"
    d.mkdir()
    (d / "counter_4242.db").write_bytes(b"stale")
    (d / "README").write_text("not ours")
    assert prepare_multiprocess_dir(str(d)) == str(d)
    assert sorted(os.listdir(d)) == ["README"]
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(d)
    assert values.ValueClass is not values.MutexValue


def test_prepare_without_a_path_makes_a_fresh_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # set but empty counts as unset
    d = prepare_multiprocess_dir(None)
    assert os.path.isdir(d) and os.listdir(d) == []
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == d


def test_single_process_mode_uses_private_registries(single: None) -> None:
    a, b = Metrics(), Metrics()  # no duplicate-registration error: each has its own registry
    a.observe({"method": "GET"}, ctx_for("echo.get"))
    a.flush()
    assert isinstance(a.registry, CollectorRegistry)
    assert a.registry.get_sample_value("gateway_requests_total", {
        "route": "echo.get", "method": "GET", "status_class": "2xx", "decision": "allow"}) == 1
    assert b.registry.get_sample_value("gateway_requests_total", {
        "route": "echo.get", "method": "GET", "status_class": "2xx", "decision": "allow"}) is None


def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_admin_listener_serves_metrics_and_nothing_else(mp_dir: Path) -> None:
    metrics_mod.process_metrics().observe({"method": "GET"}, ctx_for("echo.get"))
    metrics_mod.flush_all()
    port = free_port()
    stop = start_admin(Settings(admin_host="127.0.0.1", admin_port=port))
    try:
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        line = (b'gateway_requests_total{decision="allow",method="GET",'
                b'route="echo.get",status_class="2xx"} 1.0')
        assert line in body
        assert _get(f"http://127.0.0.1:{port}/metrics?name[]=gateway_requests_total")[0] == 200
        for path in ("/", "/metrics/", "/admin", "/favicon.ico", "/health"):
            assert _get(f"http://127.0.0.1:{port}{path}")[0] == 404, path
        assert _get(f"http://127.0.0.1:{port}/metrics", "POST")[0] == 405
    finally:
        stop()


def test_batched_histograms_match_prometheus_client(single: None) -> None:
    """The batching writes buckets through `_upper_bounds`, `_buckets` and `_sum` of a histogram
    child (private in prometheus_client). The dependency is pinned; this fails on a release that
    changes them: the batched exposition must equal what `Histogram.observe` itself produces."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    values = [0.0004, 0.001, 0.003, 0.02, 0.2, 3.0, 45.0, 0.0025]
    m = Metrics(CollectorRegistry())
    for v in values:
        m._observe(m._child(m.upstream, "echo.get"), v)
    m.flush()
    reference = CollectorRegistry()
    h = Histogram("gateway_upstream_duration_seconds", "Upstream time, by route id.", ["route"],
                  buckets=metrics_mod.DURATION_BUCKETS, registry=reference)
    for v in values:
        h.labels("echo.get").observe(v)

    def lines(reg: CollectorRegistry) -> list[str]:
        return [x for x in generate_latest(reg).decode().splitlines()
                if x.startswith("gateway_upstream_duration_seconds") and "_created" not in x]

    assert lines(m.registry) == lines(reference)
    assert len(lines(reference)) == len(metrics_mod.DURATION_BUCKETS) + 3  # +Inf, count, sum


def test_the_operators_metric_contract_lists_every_gateway_metric(single: None) -> None:
    """deploy/README.md's "Metrics (contract)" is what dashboards and alerts are written against:
    every gateway_* family a scrape can show is named there, and nothing named there is gone."""
    board = HealthBoard()
    board.redis_configured = True  # gateway_redis_up is shown only when Redis is configured
    registry = metrics_registry(board)
    served = {m.name for m in registry.collect() if m.name.startswith("gateway_")}
    served |= {m.name for m in Metrics(CollectorRegistry()).registry.collect() if m.name.startswith("gateway_")}
    text = (Path(__file__).resolve().parents[1] / "deploy" / "README.md").read_text()
    section = text.split("## Metrics (contract)", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(gateway_[a-z_]+)", section))
    # prometheus_client reports a counter's family without its _total suffix.
    named_families = {n.removesuffix("_total") for n in named}
    assert len(served) >= 20
    assert served - named_families == set(), "served but not in the contract"
    assert named_families - served == set(), "in the contract but no longer served"
