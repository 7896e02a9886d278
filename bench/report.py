"""The table, the issue's two bars, and the raw figures as JSON.

A row whose run saw any non-2xx answer or socket error is flagged, and a bar computed from a
flagged row fails: throughput of 401s or 429s says nothing about the proxy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.wrk import WrkResult

SWEEP_BAR = 0.8   # issue 2: gateway req/s at c=hi >= 0.8 x at c=lo
FLOOR_BAR = 0.5   # issue 2: gateway req/s >= 0.5 x Fastify floor, same run


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

    @property
    def flagged(self) -> bool:
        bad_probe = self.probe is not None and not 200 <= self.probe < 300
        return self.result is not None and (self.result.errors > 0 or bad_probe)

    def to_json(self) -> dict[str, object]:
        return {"target": self.label, "kind": self.kind, "conns": self.conns, "workers": self.workers,
                "skipped": self.skipped, "probe_status": self.probe, "anon_probe_status": self.anon_probe,
                "flagged": self.flagged,
                **({"wrk": self.result.to_json()} if self.result else {})}


@dataclass
class Bar:
    name: str
    verdict: str          # PASS | FAIL | n/a
    detail: str


@dataclass
class Report:
    conns: int
    duration: int
    comparable: bool                    # False when the Python fallback upstream stood in for nginx
    rows: list[Row] = field(default_factory=list)

    def find(self, kind: str, conns: int, workers: int | None = None) -> Row | None:
        for r in self.rows:
            if r.kind == kind and r.conns == conns and r.workers == workers and r.result is not None:
                return r
        return None

    def bars(self, sweep: list[int]) -> list[Bar]:
        out: list[Bar] = []
        lo, hi = min(sweep), max(sweep)
        floor = self.find("floor", self.conns)
        for w in sorted({r.workers for r in self.rows if r.kind == "gateway" and r.workers}):
            a, b = self.find("gateway", lo, w), self.find("gateway", hi, w)
            out.append(_bar(f"gateway w{w} c{hi} >= {SWEEP_BAR} x c{lo}", b, a, SWEEP_BAR))
            g = self.find("gateway", self.conns, w)
            out.append(_bar(f"gateway w{w} c{self.conns} >= {FLOOR_BAR} x fastify floor", g, floor,
                            FLOOR_BAR))
        return out

    def table(self, sweep: list[int]) -> str:
        nginx, floor = self.find("nginx", self.conns), self.find("floor", self.conns)
        head = (f"{'target':24} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
                f"{'sock err':>8} {'x nginx':>8} {'x floor':>8}  note")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            if r.result is None:
                lines.append(f"{r.label:24} {r.conns:>3} {'-':>9} {'-':>8} {'-':>8} {'-':>8} {'-':>8} "
                             f"{'-':>8} {'-':>8}  skipped: {r.skipped}")
                continue
            x = r.result
            same_c = r.conns == self.conns
            note = (f"ERRORS: {x.non_2xx} non-2xx, {x.socket_errors or 'no'} socket errors; probe "
                    f"HTTP {r.probe} {r.probe_body[:60]!r}") if r.flagged else ""
            if r.anon_probe is not None and 200 <= r.anon_probe < 300:
                note = f"{note} auth NOT enforced (no token -> HTTP {r.anon_probe})".strip()
            lines.append(
                f"{r.label:24} {r.conns:>3} {x.rps:>9,.0f} {x.p50_ms:>8.2f} {x.p99_ms:>8.2f} "
                f"{x.non_2xx:>8} {sum(x.socket_errors.values()):>8} "
                f"{_ratio(x, nginx, same_c):>8} {_ratio(x, floor, same_c):>8}  {note}".rstrip())
        lo, hi = min(sweep), max(sweep)
        for w in sorted({r.workers for r in self.rows if r.kind == "gateway" and r.workers}):
            a, b = self.find("gateway", lo, w), self.find("gateway", hi, w)
            if a and b and a.result and b.result and a.result.rps:
                lines.append(f"gateway w{w}: c{hi}/c{lo} = {b.result.rps / a.result.rps:.2f}")
        if not self.comparable:
            lines.append("NOTE: nginx is not installed; the Python fallback upstream was used. "
                         "Figures are NOT comparable with DESIGN.md §4.")
        return "\n".join(lines)

    def write_json(self, path: Path, sweep: list[int], meta: dict[str, object]) -> None:
        data = {"meta": {**meta, "conns": self.conns, "duration_s": self.duration,
                         "comparable": self.comparable, "sweep": sweep},
                "results": [r.to_json() for r in self.rows],
                "bars": [vars(b) for b in self.bars(sweep)]}
        path.write_text(json.dumps(data, indent=2) + "\n")


def _ratio(x: WrkResult, base: Row | None, same_conns: bool) -> str:
    if not same_conns or base is None or base.result is None or not base.result.rps:
        return "-"
    return f"{x.rps / base.result.rps:.2f}"


def _bar(name: str, num: Row | None, den: Row | None, need: float) -> Bar:
    if num is None or den is None or num.result is None or den.result is None or not den.result.rps:
        return Bar(name, "n/a", "a run it needs was skipped or failed")
    ratio = num.result.rps / den.result.rps
    detail = f"{num.result.rps:,.0f} / {den.result.rps:,.0f} = {ratio:.2f}"
    if num.flagged or den.flagged:
        return Bar(name, "FAIL", detail + " (a run had errors: not a valid measurement)")
    return Bar(name, "PASS" if ratio >= need else "FAIL", detail)
