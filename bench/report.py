"""The table, the issues' bars (PASS/FAIL), and the raw figures as JSON.

A row whose run saw any non-2xx answer or socket error is flagged, and a bar computed from a
flagged row fails: throughput of 401s or 429s says nothing about the proxy. With `--runs N` every
target is measured N times, round by round, and the table and bars are those of the medians
(`median_report`), each bar followed by its value in every run (`bars_by_run`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.gwstats import Lag
from bench.wrk import WrkResult

SWEEP_BAR = 0.9       # issue 16 (was 0.8, issue 2): gateway req/s at c=hi >= 0.9 x at c=lo
SWEEP_P99_BAR = 3.0   # issue 16: gateway p99 at c=hi <= 3 x p99 at c=lo
FLOOR_BAR = 0.5       # issue 2: gateway req/s >= 0.5 x Fastify floor, same run
FULL_BAR = 1.0        # issue 16: gateway (1 worker, Redis-backed limits) req/s >= 1.0 x Fastify full
GATEWAY_KINDS = ("gateway", "gateway-redis", "gateway-nocache", "gateway-noaccesslog", "gateway-redis-noaccesslog",
                 "gateway-baseline",
                 "gateway-validate", "gateway-novalidate")


def is_gateway(kind: str) -> bool:
    """A gateway row: the kinds above, and `gateway-baseline-N` for the second and later --baseline."""
    return kind in GATEWAY_KINDS or kind.startswith("gateway-baseline-")


@dataclass
class Row:
    """One measurement (or one skipped target)."""

    label: str
    kind: str
    conns: int
    workers: int | None = None
    result: WrkResult | None = None
    probe: int | None = None
    probe_body: str = ""
    anon_probe: int | None = None       # status without a token (gateway, Fastify full)
    skipped: str | None = None
    cpu_us: float | None = None         # gateway CPU (user+sys, whole process tree) per request
    lag: Lag | None = None              # gateway event-loop lag during the run

    @property
    def flagged(self) -> bool:
        bad_probe = self.probe is not None and not 200 <= self.probe < 300
        return self.result is not None and (self.result.errors > 0 or bad_probe)

    def to_json(self) -> dict[str, object]:
        return {"target": self.label, "kind": self.kind, "conns": self.conns, "workers": self.workers,
                "skipped": self.skipped, "probe_status": self.probe, "anon_probe_status": self.anon_probe,
                "flagged": self.flagged, "cpu_us_per_request": self.cpu_us,
                "event_loop_lag_ms": self.lag.to_json() if self.lag else None,
                **({"wrk": self.result.to_json()} if self.result else {})}


@dataclass
class Bar:
    name: str
    verdict: str          # PASS | FAIL | n/a
    detail: str
    value: float | None = None  # the ratio compared with the bar


@dataclass
class Report:
    conns: int
    duration: int
    comparable: bool                    # False when the Python fallback upstream stood in for nginx
    rows: list[Row] = field(default_factory=list)
    runs: int = 1                       # > 1: every figure is the median of that many runs

    def find(self, kind: str, conns: int, workers: int | None = None) -> Row | None:
        for r in self.rows:
            if r.kind == kind and r.conns == conns and r.workers == workers and r.result is not None:
                return r
        return None

    def _families(self, peer: bool = False) -> list[tuple[str, int | None]]:
        """The gateway (kind, workers) measured at more than one concurrency: the sweep bars'. With
        `peer`, Fastify full too (swept as a reference: no bar of its own)."""
        seen: list[tuple[str, int | None]] = []
        for r in self.rows:
            wanted = (is_gateway(r.kind) and r.workers) or (peer and r.kind == "full")
            if wanted and (r.kind, r.workers) not in seen:
                if len({x.conns for x in self.rows if (x.kind, x.workers) == (r.kind, r.workers)}) > 1:
                    seen.append((r.kind, r.workers))
        return seen

    def _name(self, kind: str, workers: int | None) -> str:
        return next(r.label for r in self.rows if r.kind == kind and r.workers == workers)

    def _peer_sweep(self, lo: int, hi: int) -> str:
        """Fastify full's own c-hi / c-lo p99 ratio, for the sweep bars' detail ('' if not swept)."""
        a, b = self.find("full", lo), self.find("full", hi)
        if a is None or b is None or a.result is None or b.result is None or not a.result.p99_ms:
            return ""
        return f" (fastify full, same sweep: {b.result.p99_ms:.2f} ms / {a.result.p99_ms:.2f} ms = " \
               f"{b.result.p99_ms / a.result.p99_ms:.2f})"

    def bars(self, sweep: list[int]) -> list[Bar]:
        out: list[Bar] = []
        lo, hi = min(sweep), max(sweep)
        floor, full = self.find("floor", self.conns), self.find("full", self.conns)
        redis = self.find("gateway-redis", self.conns, 1)
        out.append(_bar(f"gateway w1 +redis c{self.conns} req/s >= {FULL_BAR} x fastify full", redis, full,
                        FULL_BAR))
        out.append(_p99_bar(f"gateway w1 +redis c{self.conns} p99 <= fastify full p99", redis, full, 1.0))
        peer = self._peer_sweep(lo, hi)
        for kind, w in self._families():
            name = self._name(kind, w)
            a, b = self.find(kind, lo, w), self.find(kind, hi, w)
            out.append(_bar(f"{name} c{hi} req/s >= {SWEEP_BAR} x c{lo}", b, a, SWEEP_BAR))
            p99 = _p99_bar(f"{name} c{hi} p99 <= {SWEEP_P99_BAR:g} x c{lo} p99", b, a, SWEEP_P99_BAR)
            if p99.value is not None:
                p99.detail += peer
            out.append(p99)
            if kind == "gateway":
                g = self.find(kind, self.conns, w)
                out.append(_bar(f"{name} c{self.conns} req/s >= {FLOOR_BAR} x fastify floor", g, floor,
                                FLOOR_BAR))
        return out

    def table(self, sweep: list[int]) -> str:
        nginx, full = self.find("nginx", self.conns), self.find("full", self.conns)
        head = (f"{'target':22} {'c':>3} {'req/s':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} "
                f"{'max':>7} {'cpu/req':>8} {'errors':>6} {'x nginx':>7} {'x full':>6}  note")
        what = f"medians of {self.runs} runs per target, each field on its own; " if self.runs > 1 else ""
        lines = [f"{what}latencies in ms; cpu/req = CPU (user+sys) of the server's process tree per "
                 "request in µs", head, "-" * len(head)]
        for r in self.rows:
            if r.result is None:
                lines.append(f"{r.label:22} {r.conns:>3} {'-':>8} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7} "
                             f"{'':>8} {'':>6} {'':>7} {'':>6}  skipped: {r.skipped}")
                continue
            x = r.result
            same_c = r.conns == self.conns
            note = (f"ERRORS: {x.non_2xx} non-2xx, {x.socket_errors or 'no'} socket errors; probe "
                    f"HTTP {r.probe} {r.probe_body[:60]!r}") if r.flagged else ""
            if r.anon_probe is not None and 200 <= r.anon_probe < 300:
                note = f"{note} auth NOT enforced (no token -> HTTP {r.anon_probe})".strip()
            cpu = f"{r.cpu_us:,.0f}" if r.cpu_us is not None else "-"
            lines.append(
                f"{r.label:22} {r.conns:>3} {x.rps:>8,.0f} {x.p50_ms:>7.2f} {x.p90_ms:>7.2f} {x.p99_ms:>7.2f} "
                f"{x.p999_ms:>7.2f} {x.max_ms:>7.1f} {cpu:>8} {x.errors:>6} "
                f"{_ratio(x, nginx, same_c):>7} {_ratio(x, full, same_c):>6}  {note}".rstrip())
        lag_rows = [r for r in self.rows if r.lag is not None]
        if lag_rows:
            lines += ["", "event-loop lag of the gateway during each run (ms, bucket-interpolated; a 10 ms "
                      "timer's lateness)",
                      f"{'target':22} {'c':>3} {'samples':>7} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>6} "
                      f"{'>5ms':>5} {'>20ms':>5}"]
            for r in lag_rows:
                if (g := r.lag) is None:
                    continue
                lines.append(f"{r.label:22} {r.conns:>3} {g.samples:>7} {g.p50_ms:>6.2f} {g.p90_ms:>6.2f} "
                             f"{g.p99_ms:>6.2f} {g.p999_ms:>6.2f} {g.over_5ms:>5} {g.over_20ms:>5}")
        lo, hi = min(sweep), max(sweep)
        ratios = []
        for kind, w in self._families(peer=True):
            a, b = self.find(kind, lo, w), self.find(kind, hi, w)
            if a and b and a.result and b.result and a.result.rps and a.result.p99_ms and b.result.rps:
                ratios.append(f"{self._name(kind, w)}: c{hi}/c{lo} req/s = {b.result.rps / a.result.rps:.2f}, "
                              f"p99 = {b.result.p99_ms / a.result.p99_ms:.2f} x; tail shape p99 / (c / req/s): "
                              f"c{lo} {_shape(a.conns, a.result):.1f}, c{hi} {_shape(b.conns, b.result):.1f}")
        if ratios:
            lines += ["", *ratios,
                      "(wrk is a closed loop: the mean latency is c / req/s (Little's law), so at equal req/s the "
                      f"c{hi} mean is {hi // lo} x the c{lo} mean; the tail shape, p99 over that mean, is what a "
                      "stall inflates)"]
        if not self.comparable:
            lines.append("NOTE: nginx is not installed; the Python fallback upstream was used. "
                         "Figures are NOT comparable with the published ones.")
        return "\n".join(lines)

    def pipeline_cost(self) -> str | None:
        """The line under the table when the core row ran (`bench/corefloor.py`): how much of each
        one-worker gateway row's CPU per request the pipeline adds to the bare server core."""
        core = self.find("core", self.conns, 1)
        if core is None or core.cpu_us is None or core.flagged:
            return None
        parts = [f"{r.label} {r.cpu_us:,.0f} - core {core.cpu_us:,.0f} = {r.cpu_us - core.cpu_us:,.0f} µs "
                 f"({(r.cpu_us - core.cpu_us) / r.cpu_us:.0%} of its CPU)"
                 for r in self.rows
                 if r.kind in ("gateway", "gateway-redis") and r.workers == 1 and r.conns == self.conns
                 and r.result is not None and r.cpu_us and not r.flagged]
        if not parts:
            return None
        return f"pipeline cost per request (c{self.conns}, gateway CPU minus the server core's): " + "; ".join(parts)

    def cpu_versus_peer(self) -> str | None:
        """The line comparing CPU per request of the Redis-backed one-worker gateway with Fastify
        full's (same concurrency): unlike req/s, it does not depend on what else had the CPU.
        Only the server's own process tree: Redis, the upstream and wrk are left out of both."""
        full, redis = self.find("full", self.conns), self.find("gateway-redis", self.conns, 1)
        if (full is None or redis is None or full.cpu_us is None or redis.cpu_us is None
                or full.flagged or redis.flagged or not full.cpu_us):
            return None
        return (f"CPU per request (c{self.conns}, the server's process tree): {redis.label} "
                f"{redis.cpu_us:,.0f} µs, fastify full {full.cpu_us:,.0f} µs = {redis.cpu_us / full.cpu_us:.2f} x")

    def _cpu(self, kind: str) -> tuple[list[float], bool]:
        """The CPU per request of every run of `kind` at the table's concurrency, and whether any
        run of it was flagged (an answer other than 2xx: a refused body is not validated)."""
        runs = [r for r in self.rows if r.kind == kind and r.conns == self.conns and r.result is not None]
        return [r.cpu_us for r in runs if r.cpu_us is not None], any(r.flagged for r in runs)

    def validation_cost_us(self) -> float | None:
        """Median CPU per request of the POST runs with body validation minus the median of those
        without (µs); None when either side has no figure or a run of it saw errors."""
        (on, bad_on), (off, bad_off) = self._cpu("gateway-validate"), self._cpu("gateway-novalidate")
        if not on or not off or bad_on or bad_off:
            return None
        return statistics.median(on) - statistics.median(off)

    def validation_cost(self) -> str | None:
        """The line under the table for `--variants validate`; None when that variant did not run."""
        if not any(r.kind in ("gateway-validate", "gateway-novalidate") for r in self.rows):
            return None
        cost = self.validation_cost_us()
        head = f"validation cost per request (POST /v1/agents, c{self.conns}):"
        if cost is None:
            return f"{head} n/a (a run was skipped, failed or saw non-2xx answers: a refused body is not validated)"
        on, off = self._cpu("gateway-validate")[0], self._cpu("gateway-novalidate")[0]
        spread = max(max(on) - min(on), max(off) - min(off))
        return (f"{head} median {statistics.median(on):,.1f} - median {statistics.median(off):,.1f} = "
                f"{cost:+,.1f} µs of gateway CPU ({len(on)} + {len(off)} runs; the runs of one side spread "
                f"up to {spread:,.1f} µs, so a difference smaller than that is noise; the in-process "
                "figure without the noise: python -m tests.openapi.bench_validate)")

    def write_json(self, path: Path, sweep: list[int], meta: dict[str, object],
                   per_run: list[list[dict[str, object]]] | None = None) -> None:
        """The figures (medians, with `--runs`), the bars; with `per_run`, every run's rows too."""
        data: dict[str, object] = {"meta": {**meta, "conns": self.conns, "duration_s": self.duration,
                         "comparable": self.comparable, "sweep": sweep, "runs": self.runs},
                "results": [r.to_json() for r in self.rows],
                "bars": [vars(b) for b in self.bars(sweep)],
                "validation_cost_us_per_request": self.validation_cost_us()}
        if per_run is not None:
            data["per_run"] = per_run
        path.write_text(json.dumps(data, indent=2) + "\n")


def _ratio(x: WrkResult, base: Row | None, same_conns: bool) -> str:
    if not same_conns or base is None or base.result is None or not base.result.rps:
        return "-"
    return f"{x.rps / base.result.rps:.2f}"


def _shape(conns: int, x: WrkResult) -> float:
    """p99 over the mean latency Little's law gives a closed loop of `conns` clients."""
    return x.p99_ms / (conns / x.rps * 1000) if x.rps else 0.0


def _valid(num: Row | None, den: Row | None) -> tuple[WrkResult, WrkResult] | None:
    if num is None or den is None or num.result is None or den.result is None:
        return None
    return num.result, den.result


def _bar(name: str, num: Row | None, den: Row | None, need: float) -> Bar:
    pair = _valid(num, den)
    if pair is None or not pair[1].rps:
        return Bar(name, "n/a", "a run it needs was skipped or failed")
    ratio = pair[0].rps / pair[1].rps
    detail = f"{pair[0].rps:,.0f} / {pair[1].rps:,.0f} = {ratio:.2f}"
    if num.flagged or den.flagged:  # type: ignore[union-attr]
        return Bar(name, "FAIL", detail + " (a run had errors: not a valid measurement)", ratio)
    return Bar(name, "PASS" if ratio >= need else "FAIL", detail, ratio)


def _p99_bar(name: str, num: Row | None, den: Row | None, most: float) -> Bar:
    """PASS when num's p99 <= most x den's p99."""
    pair = _valid(num, den)
    if pair is None or not pair[1].p99_ms:
        return Bar(name, "n/a", "a run it needs was skipped or failed")
    ratio = pair[0].p99_ms / pair[1].p99_ms
    detail = f"{pair[0].p99_ms:.2f} ms / {pair[1].p99_ms:.2f} ms = {ratio:.2f}"
    if num.flagged or den.flagged:  # type: ignore[union-attr]
        return Bar(name, "FAIL", detail + " (a run had errors: not a valid measurement)", ratio)
    return Bar(name, "PASS" if ratio <= most else "FAIL", detail, ratio)


def _key(r: Row) -> tuple[str, str, int, int | None]:
    return r.label, r.kind, r.conns, r.workers


def median_report(rounds: list[Report]) -> Report:
    """One report from several rounds of the same targets: per target and concurrency, the median
    of each figure on its own (req/s, every percentile, CPU per request), over the runs that were
    measured. Errors are summed, so a target flagged in any run stays flagged (and fails its bars);
    a probe that was not 2xx, or a 2xx without a token, in any run is the one kept. The event-loop
    lag is that of the run with the median req/s. A target skipped in every run stays skipped."""
    if not rounds:
        raise ValueError("no rounds to take medians of")
    keys: list[tuple[str, str, int, int | None]] = []
    for rep in rounds:
        keys += [k for k in map(_key, rep.rows) if k not in keys]
    rows = []
    for k in keys:
        runs = [r for rep in rounds for r in rep.rows if _key(r) == k]
        measured = [r for r in runs if r.result is not None]
        rows.append(_median_row(measured) if measured else runs[0])
    first = rounds[0]
    return Report(first.conns, first.duration, all(rep.comparable for rep in rounds), rows, runs=len(rounds))


def _median_row(runs: list[Row]) -> Row:
    results = [r.result for r in runs if r.result is not None]

    def med(name: str) -> float:
        return float(statistics.median(getattr(x, name) for x in results))

    sockets: dict[str, int] = {}
    for x in results:
        for what, n in x.socket_errors.items():
            sockets[what] = sockets.get(what, 0) + n
    result = WrkResult(rps=med("rps"), requests=round(med("requests")), p50_ms=med("p50_ms"),
                       p75_ms=med("p75_ms"), p90_ms=med("p90_ms"), p99_ms=med("p99_ms"),
                       non_2xx=sum(x.non_2xx for x in results), socket_errors=sockets,
                       p999_ms=med("p999_ms"), max_ms=med("max_ms"))
    by_rps = sorted(runs, key=lambda r: r.result.rps if r.result else 0.0)
    middle = by_rps[(len(by_rps) - 1) // 2]
    bad = [r for r in runs if r.probe is not None and not 200 <= r.probe < 300]
    probe_from = bad[0] if bad else middle
    open_ = [r for r in runs if r.anon_probe is not None and 200 <= r.anon_probe < 300]
    cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
    return Row(middle.label, middle.kind, middle.conns, middle.workers, result, probe_from.probe,
               probe_from.probe_body, (open_[0] if open_ else middle).anon_probe,
               cpu_us=statistics.median(cpus) if cpus else None, lag=middle.lag)


def bars_by_run(rounds: list[Report], sweep: list[int]) -> list[str]:
    """Each bar's ratio and verdict in every run, in run order: how far apart the runs were."""
    per_run = [{b.name: b for b in rep.bars(sweep)} for rep in rounds]
    names = [b.name for b in median_report(rounds).bars(sweep)]
    lines = []
    for name in names:
        cells = []
        for bars in per_run:
            b = bars.get(name)
            cells.append("n/a" if b is None else f"{b.value:.2f} {b.verdict}" if b.value is not None else b.verdict)
        lines.append(f"  {name}: " + " | ".join(cells))
    return lines
