"""make bench's reading of wrk, of the gateway's lag histogram, and its PASS/FAIL bars."""

from __future__ import annotations

import pytest

from bench import gwstats, report, wrk

WRK_OUT = """Running 8s test @ http://127.0.0.1:1/v1/agents?orgId=org-1
  1 threads and 32 connections
  Latency Distribution
     50%    4.10ms
     75%    5.00ms
     90%    6.20ms
     99%   17.50ms
  39600 requests in 8.00s, 10.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4950.00
Transfer/sec:      1.25MB
BENCH_P999_US 31250
BENCH_MAX_US 48000
"""


def test_wrk_output_with_the_tail_lines() -> None:
    r = wrk.parse(WRK_OUT)
    assert (r.rps, r.requests, r.p50_ms, r.p90_ms, r.p99_ms) == (4950.0, 39600, 4.1, 6.2, 17.5)
    assert (r.p999_ms, r.max_ms, r.non_2xx, r.errors) == (31.25, 48.0, 3, 3)


def test_wrk_output_without_latency_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse("Requests/sec: 10\n")


def test_lag_quantiles_from_histogram_difference() -> None:
    inf = float("inf")
    before = {0.001: 10.0, 0.005: 10.0, 0.02: 10.0, inf: 10.0}
    # 1,000 new samples: 980 under 1 ms, 15 in (1, 5] ms, 5 in (5, 20] ms
    after = {0.001: 990.0, 0.005: 1005.0, 0.02: 1010.0, inf: 1010.0}
    lag = gwstats.lag_between(before, after)
    assert lag is not None
    assert lag.samples == 1000
    assert lag.p50_ms <= 1.0
    assert 1.0 < lag.p99_ms <= 5.0
    assert 5.0 < lag.p999_ms <= 20.0
    assert (lag.over_5ms, lag.over_20ms) == (5, 0)
    assert gwstats.lag_between(None, after) is None
    assert gwstats.lag_between(after, after) is None  # no samples in the run


def _row(kind: str, conns: int, rps: float, p99: float, workers: int | None = 1, non_2xx: int = 0) -> report.Row:
    res = wrk.WrkResult(rps=rps, requests=int(rps * 8), p50_ms=p99 / 3, p75_ms=p99 / 2, p90_ms=p99 / 1.5,
                        p99_ms=p99, non_2xx=non_2xx, socket_errors={})
    return report.Row(f"{kind} w{workers}", kind, conns, workers, res, probe=200)


def _bars(rows: list[report.Row]) -> dict[str, str]:
    r = report.Report(32, 8, True, rows)
    return {b.name: b.verdict for b in r.bars([8, 64])}


def test_issue_bars_pass_and_fail() -> None:
    full = _row("full", 32, 5000, 17.5, workers=None)
    good = [full, _row("gateway-redis", 32, 5200, 12.0), _row("gateway-redis", 8, 5000, 3.0),
            _row("gateway-redis", 64, 4800, 8.0)]
    bars = _bars(good)
    assert bars["gateway w1 +redis c32 req/s >= 1.0 x fastify full"] == "PASS"
    assert bars["gateway w1 +redis c32 p99 <= fastify full p99"] == "PASS"
    assert bars["gateway-redis w1 c64 req/s >= 0.9 x c8"] == "PASS"
    assert bars["gateway-redis w1 c64 p99 <= 3 x c8 p99"] == "PASS"

    bad = [full, _row("gateway-redis", 32, 4683, 46.7), _row("gateway-redis", 8, 5834, 2.85),
           _row("gateway-redis", 64, 5000, 52.2)]
    bars = _bars(bad)
    assert bars["gateway w1 +redis c32 req/s >= 1.0 x fastify full"] == "FAIL"
    assert bars["gateway w1 +redis c32 p99 <= fastify full p99"] == "FAIL"
    assert bars["gateway-redis w1 c64 req/s >= 0.9 x c8"] == "FAIL"
    assert bars["gateway-redis w1 c64 p99 <= 3 x c8 p99"] == "FAIL"


def test_a_run_with_errors_cannot_pass() -> None:
    rows = [_row("full", 32, 5000, 17.5, workers=None), _row("gateway-redis", 32, 9000, 5.0, non_2xx=10)]
    assert _bars(rows)["gateway w1 +redis c32 req/s >= 1.0 x fastify full"] == "FAIL"


def test_missing_runs_are_not_applicable() -> None:
    assert _bars([])["gateway w1 +redis c32 req/s >= 1.0 x fastify full"] == "n/a"
