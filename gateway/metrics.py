"""Prometheus metrics of one gateway process, correct with several worker processes.

Names and labels are a contract (deploy/prometheus alerts and the dashboard use them). Labels are
low-cardinality by construction: the route label is the route id (or `none`), never the raw path,
so a client cannot mint new series by requesting `/v1/agents/<random>` (a memory-exhaustion
attack on both the gateway and Prometheus). Methods outside a fixed set become `OTHER`.

Fresh deploys: the label sets the policy makes known (each route's requests and durations, its
rate-limit and webhook outcomes, its likely denial reasons, reload results, Redis components) are
created at zero when a policy is installed (`init_series`), so dashboards and `rate()` work before
the first event.

Batching: per-request counts go to plain dicts and are written once a second (`flush`). Histogram
buckets are written through two private attributes of prometheus_client's histogram child
(`_buckets`, `_sum`, next to the public `_upper_bounds`); the dependency is pinned to a tested
range and tests/test_metrics.py fails on a release that changes them.

Several workers: prometheus_client's multiprocess mode. Each worker writes its values to mmap files
in `PROMETHEUS_MULTIPROC_DIR`; the admin listener (gateway/admin.py) sums them. The supervisor calls
`prepare_multiprocess_dir` before forking workers and `mark_process_dead` when one exits.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import tempfile
import time
import weakref
from bisect import bisect_left
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import prometheus_client.values as _values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as _mp

from gateway.context import RequestContext
from gateway.looplag import LAG_BUCKETS

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
NO_ROUTE = "none"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DECISIONS = frozenset({"allow", "deny", "error", "client_closed"})
RATELIMIT_OUTCOMES = frozenset({"allowed", "denied", "shadow_denied"})
WEBHOOK_OUTCOMES = frozenset(
    {"accepted", "duplicate", "bad_signature", "stale", "source_denied", "upstream_failed"}
)
RELOAD_RESULTS = frozenset({"ok", "failed"})
REDIS_COMPONENTS = ("ratelimit", "webhook_dedupe")
# Refusals made by the HTTP server layer (gateway/protocol.py), before a request reaches the
# pipeline: malformed HTTP, a request head that did not arrive in time, a connection over
# limits.max_connections (closed before any byte is read, so no response and no catalogue entry),
# and the idle keep-alive connections closed at the cap to make room for a new one.
PROTOCOL_REFUSALS = ("request.invalid", "request.header_timeout", "connection.limit", "connection.reclaimed")
# Denial reasons worth a zero series per route, by what the route declares.
_JWT_REASONS = ("auth.missing_token", "auth.invalid_token", "auth.expired")
# 1 ms .. 30 s: the fast path is a few ms; 30 s is the longest upstream timeout we expect.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(ENV_DIR))


def prepare_multiprocess_dir(path: str | None = None) -> str:
    """Make `path` (or `$PROMETHEUS_MULTIPROC_DIR`, or a new temp dir) the clean metrics directory.

    Call once in the supervisor before any worker starts. Stale files from a previous run would be
    summed into this run's counters, so every `*.db` file is removed.
    """
    path = path or os.environ.get(ENV_DIR) or None
    if path is None:
        path = tempfile.mkdtemp(prefix="gateway-metrics-")
        _remove_at_exit(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    os.environ[ENV_DIR] = path
    # prometheus_client picks its value class when `prometheus_client.values` is imported (0.2x),
    # and this module imports it, so re-pick now that the variable is set. Metrics created from
    # here on (in this process and in forked workers) write to the directory.
    _values.ValueClass = _values.get_value_class()
    return path


def _remove_at_exit(path: str) -> None:
    import atexit

    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # forked workers must not delete the supervisor's directory
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (in flight, degraded, policy info); counters stay."""
    if multiprocess_enabled():
        _mp.mark_process_dead(pid)


def status_class(status: int) -> str:
    return _STATUS_CLASSES.get(status // 100, "other")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("edge-gateway")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        import tomllib

        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


_INSTANCES: weakref.WeakSet[Metrics] = weakref.WeakSet()


def flush_all() -> None:
    """Write every instance's batched counts (tests, and before a scrape in one process)."""
    for m in list(_INSTANCES):
        m.flush()


class Metrics:
    """Every gateway metric, with label children cached so an observation costs a few µs.

    Create one per process (`process_metrics()`); in multiprocess mode two instances in one
    process would overwrite each other's values in the shared files.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        _INSTANCES.add(self)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests_total",
                                "Requests by route id, method, status class and decision.",
                                ["route", "method", "status_class", "decision"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "Time in the gateway, by route id.",
                                  ["route"], buckets=DURATION_BUCKETS, registry=r)
        self.upstream = Histogram("gateway_upstream_duration_seconds", "Upstream time, by route id.",
                                  ["route"], buckets=DURATION_BUCKETS, registry=r)
        self.denials = Counter("gateway_denials_total", "Refused requests by route id and reason id.",
                               ["route", "reason"], registry=r)
        self.ratelimits = Counter("gateway_ratelimit_total", "Rate-limit decisions.", ["route", "outcome"],
                                  registry=r)
        self.degraded = Gauge("gateway_ratelimit_degraded", "1 while rate-limit storage is unreachable.",
                              multiprocess_mode="livemax", registry=r)
        self.webhooks = Counter("gateway_webhook_total", "Webhook outcomes.", ["route", "outcome"],
                                registry=r)
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being served.",
                               multiprocess_mode="livesum", registry=r)
        self.redis_errors = Counter("gateway_redis_errors_total", "Redis errors by component.", ["component"],
                                    registry=r)
        # livemax: a dead worker's old hash disappears; the admin listener also hides hashes at 0.
        self.policy_info = Gauge("gateway_policy_info", "Hash of the policy being served (value 1).",
                                 ["hash"], multiprocess_mode="livemax", registry=r)
        self.reloads = Counter("gateway_policy_reloads_total", "Policy reloads by result.", ["result"],
                               registry=r)
        self.build_info = Gauge("gateway_build_info", "Gateway version and Python version (value 1).",
                                ["version", "python"], multiprocess_mode="max", registry=r)
        self.audit_failures = Counter("gateway_audit_failures_total", "Audit sink failures.", registry=r)
        self.audit_drops = Counter("gateway_audit_dropped_total", "Audit records dropped (queue full).",
                                   registry=r)
        self.protocol_refusals = Counter("gateway_protocol_refusals_total",
                                         "Refusals by the HTTP server layer before the pipeline, by reason: "
                                         "malformed HTTP (request.invalid), request head too slow "
                                         "(request.header_timeout), over limits.max_connections "
                                         "(connection.limit), an idle keep-alive connection closed at the "
                                         "cap for a new one (connection.reclaimed).",
                                         ["reason"], registry=r)
        self.deprecated_calls = Counter("gateway_deprecated_calls_total",
                                        "Calls to deprecated routes (after sunset: refused), by route id.",
                                        ["route", "outcome"], registry=r)
        self.audit_segments = Counter("gateway_audit_segments_total",
                                      "New audit segments: the writer found its file cut back or doctored.",
                                      registry=r)
        self.access_log_drops = Counter("gateway_access_log_dropped_total",
                                        "Access-log lines dropped (queue full).", registry=r)
        self.server_log_drops = Counter("gateway_server_log_dropped_total",
                                        "Server-log (stderr) lines dropped: stderr did not keep up.",
                                        registry=r)
        self.loop_lag = Histogram("gateway_event_loop_lag_seconds",
                                  "How late the event loop ran a due 10 ms timer: time it was blocked.",
                                  buckets=LAG_BUCKETS, registry=r)
        self.abuse = AbuseMetrics(r)
        self._children: dict[tuple[object, ...], Any] = {}
        # Per-request counts are batched in plain dicts and written to the multiprocess files
        # by `flush()` (once a second): each mmap write costs several µs, a dict update ~0.1 µs.
        self._pending_inc: dict[Any, float] = {}
        self._pending_obs: dict[Any, list[Any]] = {}
        self._policy_hash: str | None = None
        for reason in PROTOCOL_REFUSALS:  # known series exist at zero (alerts see a rate, not absence)
            self._child(self.protocol_refusals, reason)
        self.build_info.labels(_version(), platform.python_version()).set(1)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def init_series(self, routes: Any) -> None:
        """Create the known label sets at zero (idempotent; call when a policy is installed)."""
        for result in sorted(RELOAD_RESULTS):
            self._child(self.reloads, result)
        for component in REDIS_COMPONENTS:
            self._child(self.redis_errors, component)
        self._child(self.denials, NO_ROUTE, "route.not_found")
        for route in routes:
            rid = route.id
            self._child(self.duration, rid)
            for method in sorted(set(route.methods) & KNOWN_METHODS - {"HEAD", "OPTIONS"}):
                self._child(self.requests, rid, method, "2xx", "allow")
            if getattr(route, "auth", None) == "jwt":
                for reason in _JWT_REASONS:
                    self._child(self.denials, rid, reason)
            if getattr(route, "tenant", None):
                self._child(self.denials, rid, "tenant.mismatch")
            if getattr(route, "rate_limit", None):
                self._child(self.denials, rid, "ratelimit.exceeded")
                for outcome in sorted(RATELIMIT_OUTCOMES):
                    self._child(self.ratelimits, rid, outcome)
            if getattr(route, "webhook", None):
                self._child(self.denials, rid, "webhook.bad_signature")
                for outcome in sorted(WEBHOOK_OUTCOMES):
                    self._child(self.webhooks, rid, outcome)

    # -- the request observer (RequestIdStage runs it in `finally`) --

    def observe(self, scope: MutableMapping[str, Any], ctx: RequestContext) -> None:
        route = ctx.route.id if ctx.route is not None else NO_ROUTE
        method = scope.get("method", "")
        if method not in KNOWN_METHODS:
            method = "OTHER"
        decision = ctx.decision if ctx.decision in DECISIONS else "error"
        self._inc(self._child(self.requests, route, method, status_class(ctx.status), decision))
        self._observe(self._child(self.duration, route), time.perf_counter() - ctx.started)
        if ctx.upstream_seconds is not None:
            self._observe(self._child(self.upstream, route), ctx.upstream_seconds)
        if decision != "allow" and ctx.reason:
            self._inc(self._child(self.denials, route, ctx.reason))

    def _inc(self, child: Any) -> None:
        pending = self._pending_inc
        pending[child] = pending.get(child, 0) + 1

    def _observe(self, child: Any, value: float) -> None:
        entry = self._pending_obs.get(child)
        if entry is None:
            entry = self._pending_obs[child] = [[0] * len(child._upper_bounds), 0.0]
        entry[0][bisect_left(child._upper_bounds, value)] += 1
        entry[1] += value

    def flush(self) -> None:
        """Write the batched counts. Histogram children keep one (non-cumulative) value per
        bucket plus a sum, as `Histogram.observe` writes them."""
        pending_inc, self._pending_inc = self._pending_inc, {}
        pending_obs, self._pending_obs = self._pending_obs, {}
        for child, n in pending_inc.items():
            child.inc(n)
        for child, (counts, total) in pending_obs.items():
            for i, c in enumerate(counts):
                if c:
                    child._buckets[i].inc(c)
            child._sum.inc(total)

    __call__ = observe

    def set_in_flight(self, n: int) -> None:
        self.in_flight.set(n)


    # -- explicit events --

    def ratelimit(self, route: str | None, outcome: str) -> None:
        self._inc(self._child(self.ratelimits, route or NO_ROUTE, _checked(outcome, RATELIMIT_OUTCOMES)))

    def webhook(self, route: str | None, outcome: str) -> None:
        self._inc(self._child(self.webhooks, route or NO_ROUTE, _checked(outcome, WEBHOOK_OUTCOMES)))

    def deprecated(self, route: str, outcome: str) -> None:
        self._inc(self._child(self.deprecated_calls, route, "sunset" if outcome == "sunset" else "served"))

    def redis_error(self, component: str) -> None:
        self._child(self.redis_errors, component).inc()

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.set(1 if degraded else 0)

    def policy_loaded(self, digest: str) -> None:
        """The policy with this hash now serves; the previous hash goes to 0."""
        if self._policy_hash is not None and self._policy_hash != digest:
            self._child(self.policy_info, self._policy_hash).set(0)
        self._child(self.policy_info, digest).set(1)
        self._policy_hash = digest

    def reload(self, result: str) -> None:
        self._child(self.reloads, _checked(result, RELOAD_RESULTS)).inc()

    def audit_failure(self, n: int = 1) -> None:
        self.audit_failures.inc(n)

    def protocol_refused(self, reason: str) -> None:
        """A refusal in gateway/protocol.py; batched like the request counts (flushed each second)."""
        if reason not in PROTOCOL_REFUSALS:
            raise ValueError(f"unknown protocol refusal {reason!r}; expected one of {PROTOCOL_REFUSALS}")
        self._inc(self._child(self.protocol_refusals, reason))

    def audit_dropped(self, n: int = 1) -> None:
        self.audit_drops.inc(n)

    def access_log_dropped(self, n: int = 1) -> None:
        self.access_log_drops.inc(n)

    def server_log_dropped(self, n: int = 1) -> None:
        self.server_log_drops.inc(n)

    def audit_segment(self, n: int = 1) -> None:
        self.audit_segments.inc(n)

    def observe_loop_lag(self, seconds: float) -> None:
        # ~100 samples a second: written directly, no batching needed.
        self.loop_lag.observe(seconds)


class AbuseMetrics:
    """Brute-force blocks and refusals, verification budget refusals, webhook HMAC computations,
    and evictions of in-process per-key state (issue 14). Self-contained: registered on the
    owning `Metrics`' registry, label children cached, bounded label values."""

    SCOPES = frozenset({"auth", "webhook"})
    EVENTS = frozenset({"block", "refused", "budget_refused"})

    def __init__(self, r: CollectorRegistry) -> None:
        self.blocks = Counter("gateway_bruteforce_blocks_total",
                              "Addresses blocked for failed verifications, by scope (auth, webhook).",
                              ["scope"], registry=r)
        self.refusals = Counter("gateway_bruteforce_refusals_total",
                                "Requests refused (429) because their address is blocked, by scope.",
                                ["scope"], registry=r)
        self.budget = Counter("gateway_auth_verify_budget_refusals_total",
                              "Tokens from a blocked address refused unverified (verifications/s budget spent).",
                              registry=r)
        self.hmac = Counter("gateway_webhook_hmac_total",
                            "Webhook signature verifications (one HMAC computation at most each), by route.",
                            ["route"], registry=r)
        self.evictions = Counter("gateway_ratelimit_evictions_total",
                                 "In-process per-key entries evicted (oldest first) to stay under max_tracked_keys.",
                                 ["store"], registry=r)
        self._children: dict[tuple[object, ...], Any] = {}
        for scope in sorted(self.SCOPES):  # known series exist at zero (alerts see a rate, not absence)
            self._child(self.blocks, scope)
            self._child(self.refusals, scope)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    def event(self, scope: str, what: str) -> None:
        scope = _checked(scope, self.SCOPES)
        what = _checked(what, self.EVENTS)
        if what == "block":
            self._child(self.blocks, scope).inc()
        elif what == "refused":
            self._child(self.refusals, scope).inc()
        else:
            self._child(self.budget).inc()
            self._child(self.refusals, scope).inc()

    def hmac_computed(self, route: str | None) -> None:
        self._child(self.hmac, route or NO_ROUTE).inc()

    def evicted(self, store: str, n: int) -> None:
        # store names are fixed strings of our own code (memory, fallback, known, auth_blocks, ...)
        self._child(self.evictions, store).inc(n)


def _checked(value: str, allowed: frozenset[str]) -> str:
    # Callers are our own code; an unknown value is a bug, and silently inventing a label value
    # would let a typo hide from the alerts that match on these names.
    if value not in allowed:
        raise ValueError(f"unknown metric label value {value!r}; expected one of {sorted(allowed)}")
    return value


_process_metrics: tuple[int, Metrics] | None = None


def process_metrics() -> Metrics:
    """The one Metrics of this process (created on first use, again after a fork)."""
    global _process_metrics
    if _process_metrics is None or _process_metrics[0] != os.getpid():
        _process_metrics = (os.getpid(), Metrics())
    return _process_metrics[1]


__all__ = ["Metrics", "mark_process_dead", "prepare_multiprocess_dir", "process_metrics", "status_class"]
