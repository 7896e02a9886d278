"""make bench's reading of wrk, of the gateway's lag histogram, and its PASS/FAIL bars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import gwstats, report, targets, tokens, wrk

ROOT = Path(__file__).resolve().parents[1]

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


# --- --variants validate: the policy copy, the request it sends, the cost line --------------------

def _cpu_row(kind: str, cpu_us: float | None, non_2xx: int = 0, conns: int = 32) -> report.Row:
    row = _row(kind, conns, 2000, 30.0, non_2xx=non_2xx)
    row.cpu_us = cpu_us
    return row


def test_validation_cost_is_the_difference_of_medians() -> None:
    rows = [_cpu_row("gateway-validate", 310), _cpu_row("gateway-novalidate", 300),
            _cpu_row("gateway-validate", 400), _cpu_row("gateway-novalidate", 290),
            _cpu_row("gateway-validate", 305), _cpu_row("gateway-novalidate", 302),
            _cpu_row("gateway-validate", 999, conns=8)]  # another concurrency: not part of it
    r = report.Report(32, 8, True, rows)
    assert r.validation_cost_us() == pytest.approx(310 - 300)
    line = r.validation_cost()
    assert line is not None and "+10.0 µs" in line and "3 + 3 runs" in line
    # no sweep bars (all n/a) for variants measured at one concurrency only
    one_c = report.Report(32, 8, True, rows[:-1])
    assert not any("POST" in b.name or "validate" in b.name for b in one_c.bars([8, 64]))
    assert any("gateway-validate" in b.name for b in r.bars([8, 64]))


def test_validation_cost_refuses_runs_with_errors_or_missing_sides() -> None:
    bad = report.Report(32, 8, True, [_cpu_row("gateway-validate", 310, non_2xx=5),
                                      _cpu_row("gateway-novalidate", 300)])
    assert bad.validation_cost_us() is None
    assert "n/a" in (bad.validation_cost() or "")
    one_side = report.Report(32, 8, True, [_cpu_row("gateway-validate", 310)])
    assert one_side.validation_cost_us() is None
    no_cpu = report.Report(32, 8, True, [_cpu_row("gateway-validate", None), _cpu_row("gateway-novalidate", 1)])
    assert no_cpu.validation_cost_us() is None
    assert report.Report(32, 8, True, [_cpu_row("gateway", 100)]).validation_cost() is None


def _load(policy_dir: Path) -> Any:
    from gateway.policy.loader import load_policy
    from gateway.settings import Settings, effective_env

    return load_policy(policy_dir, effective_env(Settings(), {}), False)


def _post_rule(policy: Any) -> Any:
    route = next(r for r in policy.routes if r.id == targets.POST_ROUTE)
    return route.body_rules["POST"]


def test_policy_copy_turns_validation_off_on_the_post_route_only(tmp_path: Path) -> None:
    shipped = ROOT / "policies"
    before = {p.name: p.read_bytes() for p in shipped.glob("*.yaml")}
    copy = targets.policy_copy(shipped, tmp_path / "p", no_validate=(targets.POST_ROUTE,))
    assert {p.name: p.read_bytes() for p in shipped.glob("*.yaml")} == before  # shipped untouched
    on, off = _load(shipped), _load(copy)
    assert _post_rule(on).validator is not None
    assert _post_rule(off).validator is None
    assert _post_rule(off).json_only  # still parsed strictly (duplicate keys), just not validated
    # every other route is as shipped
    def validated(p: Any) -> set[str]:
        return {r.id for r in p.routes if r.body_rules and any(x.validator for x in r.body_rules.values())}
    assert validated(on) - validated(off) == {targets.POST_ROUTE}
    # the POST route's limit is per user, and the bench's default 5,000 users stay under it up to
    # 10,000 req/s (otherwise the copy would have to raise it: a run of 429s measures nothing)
    limit = next(r for r in on.routes if r.id == targets.POST_ROUTE).rate_limit
    assert limit.key == ("sub",)
    assert all(item.amount / item.get_expiry() * 5000 >= 10_000 for item in limit.items)


def test_policy_copy_token_cache_and_unknown_route(tmp_path: Path) -> None:
    copy = targets.policy_copy(ROOT / "policies", tmp_path / "p", cache_size=0)
    assert yaml.safe_load((copy / "gateway.yaml").read_text())["auth"]["jwt"]["cache_size"] == 0
    assert (copy / "routes.yaml").read_bytes() == (ROOT / "policies" / "routes.yaml").read_bytes()
    with pytest.raises(ValueError, match="no.such.route"):
        targets.policy_copy(ROOT / "policies", tmp_path / "q", no_validate=("no.such.route",))


def test_the_bench_post_body_is_accepted_by_the_shipped_schema() -> None:
    rule = _post_rule(_load(ROOT / "policies"))
    body = json.loads(targets.AGENT_BODY)
    assert rule.errors(body) == []
    assert body["orgId"] == tokens.ORG  # the route's tenant rule: the body's org is the token's
    assert 150 <= len(targets.AGENT_BODY) <= 400  # a typical agent, not a minimal one


def test_wrk_script_sends_the_method_and_body_given(tmp_path: Path) -> None:
    script, _ = wrk.write_script(tmp_path, ["t1"])
    lua = script.read_text()
    assert 'wrk.format(method, nil, headers, body)' in lua
    assert '"Content-Type"' in lua and "args[2]" in lua and "args[3]" in lua


def test_validate_variant_alternates_the_order_of_its_pairs() -> None:
    kinds = [t.kind for t in targets.all_targets([1], False, True, ["validate"]) if "validate" in t.kind]
    assert kinds == ["gateway-validate", "gateway-novalidate", "gateway-novalidate", "gateway-validate",
                     "gateway-validate", "gateway-novalidate"]
    posts = [t for t in targets.all_targets([1], False, True, ["validate"]) if t.method == "POST"]
    assert posts and all(t.body == targets.AGENT_BODY and t.workers == 1 for t in posts)
    assert not [t for t in targets.all_targets([1], False, True, ["redis"]) if t.method == "POST"]


def test_several_baselines_are_separate_families(tmp_path: Path) -> None:
    """`--baseline A,B`: each checkout is its own row family (label and kind), so the report's sweep
    and CPU figures never mix two checkouts."""
    a, b = tmp_path / "before-10", tmp_path / "after-10"
    base = [t for t in targets.all_targets([1], False, True, [], [a, b]) if t.kind.startswith("gateway-baseline")]
    assert [(t.label, t.kind) for t in base] == [("base before-10 w1 +redis", "gateway-baseline"),
                                                 ("base after-10 w1 +redis", "gateway-baseline-1")]
    assert all(report.is_gateway(t.kind) for t in base) and not report.is_gateway("full")
    one = [t for t in targets.all_targets([1], False, True, [], [a]) if t.kind.startswith("gateway-baseline")]
    assert [(t.label, t.kind) for t in one] == [("baseline w1 +redis", "gateway-baseline")]
    from bench.run import parse_args

    for d in (a, b):
        (d / "gateway").mkdir(parents=True)
        (d / "gateway" / "__main__.py").write_text("")
    assert parse_args(["--baseline", f"{a},{b}"]).baseline == [a, b]
    with pytest.raises(SystemExit):
        parse_args(["--baseline", f"{a},{tmp_path / 'nope'}"])


def test_the_redis_row_without_the_access_log_and_unknown_variants() -> None:
    """`--variants redis-noaccesslog`: the Redis-backed one-worker row with GATEWAY_ACCESS_LOG=off
    (comparable with a baseline from before the access log); a misspelt variant is refused, not
    silently measured as nothing."""
    from bench.run import parse_args

    rows = [t for t in targets.all_targets([1], False, True, ["redis-noaccesslog"]) if t.kind.startswith("gateway-")]
    assert [(t.label, t.kind, t.workers) for t in rows] == [
        ("gateway w1 +redis noaccesslog", "gateway-redis-noaccesslog", 1)]
    assert report.is_gateway("gateway-redis-noaccesslog")
    assert parse_args(["--variants", "redis,redis-noaccesslog"]).variants == ["redis", "redis-noaccesslog"]
    with pytest.raises(SystemExit):
        parse_args(["--variants", "redis,noacceslog"])


def test_ab_arguments_and_summary(tmp_path: Path) -> None:
    """`python -m bench.ab`: checkouts must be gateway checkouts; `--env` goes to one side or all;
    the summary gives each side's medians and its CPU ratio to the first side."""
    from bench.ab import Sample, parse_args, summary

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "gateway").mkdir(parents=True)
        (d / "gateway" / "__main__.py").write_text("")
    args = parse_args([str(a), str(b), "--env", "2:GATEWAY_ACCESS_LOG=off", "--env", "X=1=2", "-n", "5"])
    assert args.rounds == 5
    assert args.side_env == [{"X": "1=2"}, {"GATEWAY_ACCESS_LOG": "off", "X": "1=2"}]
    for bad in (["--env", "3:X=1"], ["--env", "no-equals"], ["--env", "1:=v"], ["-n", "0"]):
        with pytest.raises(SystemExit):
            parse_args([str(a), str(b), *bad])
    with pytest.raises(SystemExit):
        parse_args([str(a), str(tmp_path / "nope")])
    lines = summary(["1:a", "2:b", "3:c"], [
        [Sample(100, 200, 5.0), Sample(120, 220, 6.0), Sample(90, 180, 4.0)],
        [Sample(110, 100, 3.0)],
        [],
    ])
    assert lines[0] == "1:a: median 100 req/s, 200 us CPU/req, p99 5.00 ms over 3 run(s)  cpu x 1.000 of the first"
    assert lines[1].endswith("cpu x 0.500 of the first")
    assert lines[2] == "3:c: no run completed"


def test_pipeline_cost_is_the_gateway_cpu_minus_the_core_rows() -> None:
    core = _row("core", 32, 22000, 3.0)
    core.cpu_us = 40.0
    gw, redis = _row("gateway", 32, 6000, 12.0), _row("gateway-redis", 32, 5500, 13.0)
    gw.cpu_us, redis.cpu_us = 150.0, 160.0
    sweep = _row("gateway", 8, 6000, 5.0)
    sweep.cpu_us = 999.0  # another concurrency: not the table's, not counted
    line = report.Report(32, 8, True, [core, gw, redis, sweep]).pipeline_cost()
    assert line is not None
    assert "gateway w1 150 - core 40 = 110 µs (73% of its CPU)" in line
    assert "gateway-redis w1 160 - core 40 = 120 µs (75% of its CPU)" in line
    assert "999" not in line


def test_no_pipeline_cost_without_a_clean_core_row() -> None:
    gw = _row("gateway", 32, 6000, 12.0)
    gw.cpu_us = 150.0
    assert report.Report(32, 8, True, [gw]).pipeline_cost() is None
    core = _row("core", 32, 22000, 3.0, non_2xx=5)  # answered errors: says nothing of a proxy
    core.cpu_us = 40.0
    assert report.Report(32, 8, True, [core, gw]).pipeline_cost() is None
    clean = _row("core", 32, 22000, 3.0)
    clean.cpu_us = 40.0
    assert report.Report(32, 8, True, [clean]).pipeline_cost() is None  # no gateway row to compare


def test_cpu_versus_the_peer_compares_the_redis_gateway_with_fastify_full() -> None:
    full, redis = _row("full", 32, 9000, 7.0, workers=None), _row("gateway-redis", 32, 4300, 16.0)
    full.cpu_us, redis.cpu_us = 112.0, 235.0
    other = _row("gateway-redis", 8, 4000, 6.0)
    other.cpu_us = 999.0  # another concurrency: not the table's
    line = report.Report(32, 8, True, [full, redis, other]).cpu_versus_peer()
    assert line == ("CPU per request (c32, the server's process tree): gateway-redis w1 235 µs, "
                    "fastify full 112 µs = 2.10 x")


def test_no_cpu_versus_the_peer_without_both_clean_rows() -> None:
    full, redis = _row("full", 32, 9000, 7.0, workers=None), _row("gateway-redis", 32, 4300, 16.0)
    redis.cpu_us = 235.0
    assert report.Report(32, 8, True, [full, redis]).cpu_versus_peer() is None  # the peer's CPU unread
    full.cpu_us = 112.0
    assert report.Report(32, 8, True, [full]).cpu_versus_peer() is None
    bad = _row("gateway-redis", 32, 4300, 16.0, non_2xx=3)
    bad.cpu_us = 100.0
    assert report.Report(32, 8, True, [full, bad]).cpu_versus_peer() is None  # errors are cheap: no claim


def test_the_core_row_runs_by_default_between_the_peers_and_the_gateway() -> None:
    from bench.run import parse_args

    assert "core" in parse_args([]).only
    assert parse_args(["--only", "core,gateway"]).only == ["core", "gateway"]
    kinds = [t.kind for t in targets.all_targets([1], False, True)]
    assert kinds.index("full") < kinds.index("core") < kinds.index("gateway")
    assert not report.is_gateway("core")  # no sweep, no bars: a measuring stick


# --- --runs N: medians of rounds, each bar in each run -----------------------------------------------


def _round(full_rps: float, redis_rps: float, redis_p99: float, **kw: Any) -> report.Report:
    full = _row("full", 32, full_rps, 5.0, workers=None)
    redis = _row("gateway-redis", 32, redis_rps, redis_p99, non_2xx=kw.get("non_2xx", 0))
    redis.cpu_us = kw.get("cpu")
    rows = [full, redis, _row("gateway-redis", 8, 5000, 3.0), _row("gateway-redis", 64, 4900, 8.0)]
    return report.Report(32, 8, True, rows)


def test_median_report_takes_each_figure_s_median_over_the_runs(tmp_path: Path) -> None:
    rounds = [_round(10000, 6000, 12.0, cpu=150.0), _round(12000, 9000, 30.0, cpu=140.0),
              _round(11000, 7000, 9.0, cpu=200.0)]
    med = report.median_report(rounds)
    redis = med.find("gateway-redis", 32, 1)
    full = med.find("full", 32)
    assert redis is not None and redis.result is not None and full is not None and full.result is not None
    # each field on its own: req/s from one run, p99 from another
    assert (redis.result.rps, redis.result.p99_ms, redis.cpu_us) == (7000, 12.0, 150.0)
    assert full.result.rps == 11000 and med.runs == 3
    bars = {b.name: b for b in med.bars([8, 64])}
    ratio = bars["gateway w1 +redis c32 req/s >= 1.0 x fastify full"]
    assert (ratio.verdict, round(ratio.value or 0, 3)) == ("FAIL", round(7000 / 11000, 3))
    assert "medians of 3 runs" in med.table([8, 64])
    lines = report.bars_by_run(rounds, [8, 64])
    assert lines[0] == "  gateway w1 +redis c32 req/s >= 1.0 x fastify full: 0.60 FAIL | 0.75 FAIL | 0.64 FAIL"
    assert any(line.startswith("  gateway w1 +redis c32 p99 <= fastify full p99: 2.40 FAIL | 6.00 FAIL | 1.80 FAIL")
               for line in lines)
    out = tmp_path / "bench.json"
    med.write_json(out, [8, 64], {}, [[r.to_json() for r in rep.rows] for rep in rounds])
    data = json.loads(out.read_text())
    assert data["meta"]["runs"] == 3 and [len(run) for run in data["per_run"]] == [4, 4, 4]
    assert [run[1]["wrk"]["rps"] for run in data["per_run"]] == [6000, 9000, 7000]


def test_a_run_with_errors_flags_the_median_and_a_skipped_run_is_left_out() -> None:
    clean, errors = _round(10000, 12000, 4.0), _round(10000, 12000, 4.0, non_2xx=7)
    med = report.median_report([clean, clean, errors])
    row = med.find("gateway-redis", 32, 1)
    assert row is not None and row.flagged and row.result is not None and row.result.non_2xx == 7
    assert {b.name: b.verdict for b in med.bars([8, 64])}["gateway w1 +redis c32 req/s >= 1.0 x fastify full"] == "FAIL"
    # skipped once: the medians of the other runs; skipped every time: still a skipped row
    skipped = report.Report(32, 8, True, [report.Row("fastify full", "full", 32, None, skipped="no node"),
                                          *_round(10000, 12000, 4.0).rows[1:]])
    med = report.median_report([_round(9000, 12000, 4.0), skipped, _round(11000, 12000, 4.0)])
    full = med.find("full", 32)
    assert full is not None and full.result is not None and full.result.rps == 10000
    alone = report.median_report([skipped, skipped])
    assert alone.find("full", 32) is None and any(r.skipped == "no node" for r in alone.rows)
    assert "n/a" in report.bars_by_run([skipped], [8, 64])[0]
    with pytest.raises(ValueError):
        report.median_report([])


def test_median_report_keeps_the_worst_probe_of_any_run() -> None:
    ok, open_ = _round(10000, 12000, 4.0), _round(10000, 12000, 4.0)
    open_.rows[1].anon_probe = 200  # one run answered without a token: auth not enforced then
    bad = _round(10000, 12000, 4.0)
    bad.rows[1].probe, bad.rows[1].probe_body = 502, "upstream down"
    med = report.median_report([ok, open_, bad])
    row = med.find("gateway-redis", 32, 1)
    assert row is not None and row.probe == 502 and row.anon_probe == 200 and row.flagged
    assert "auth NOT enforced" in med.table([8, 64])


def test_runs_argument() -> None:
    from bench.run import parse_args

    assert parse_args([]).runs == 1 and parse_args(["--runs", "3"]).runs == 3
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])


def test_fastify_full_is_swept_as_the_reference_of_the_sweep_bars() -> None:
    """At saturation a closed loop puts any server's c=64 latency near 8 x its c=8 one (Little's
    law): the peer's own ratio, same run, is printed beside each gateway sweep bar, and has no bar."""
    full = {t.kind: t for t in targets.all_targets([1], False, True)}["full"]
    assert full.sweep
    rows = [_row("full", 32, 2400, 28.0, workers=None), _row("full", 8, 2200, 8.0, workers=None),
            _row("full", 64, 2500, 136.0, workers=None),
            _row("gateway-redis", 32, 1800, 29.0), _row("gateway-redis", 8, 1800, 10.0),
            _row("gateway-redis", 64, 1750, 120.0)]
    for r in rows[:3]:
        r.label = "fastify full"
    rep = report.Report(32, 8, True, rows)
    bars = {b.name: b for b in rep.bars([8, 64])}
    assert not any(name.startswith("fastify") for name in bars)
    p99 = bars["gateway-redis w1 c64 p99 <= 3 x c8 p99"]
    assert p99.verdict == "FAIL" and p99.detail == (
        "120.00 ms / 10.00 ms = 12.00 (fastify full, same sweep: 136.00 ms / 8.00 ms = 17.00)")
    assert "fastify full: c64/c8 req/s = 1.14, p99 = 17.00 x" in rep.table([8, 64])
    # without the peer's sweep the bar's detail is the gateway's alone
    alone = report.Report(32, 8, True, rows[:1] + rows[3:]).bars([8, 64])
    assert {b.name: b.detail for b in alone}["gateway-redis w1 c64 p99 <= 3 x c8 p99"] == "120.00 ms / 10.00 ms = 12.00"
