"""What the gateway itself reports about a run: CPU per request and event-loop lag.

CPU seconds per request (user + system of the gateway's process tree, from /proc, divided by the
requests wrk completed) is robust to a busy machine in a way req/s is not: other processes steal
wall time, not the gateway's own CPU time. Event-loop lag comes from the gateway's
`gateway_event_loop_lag_seconds` histogram on its admin listener, scraped before and after the
measured run (the difference is the run). Percentiles are interpolated inside histogram buckets,
as Prometheus' `histogram_quantile` does, so they are estimates at bucket resolution.
"""

from __future__ import annotations

import os
import re
import urllib.request
from dataclasses import dataclass

LAG_METRIC = "gateway_event_loop_lag_seconds_bucket"
_BUCKET = re.compile(r'^gateway_event_loop_lag_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\}\s+([0-9.eE+-]+)', re.M)
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # the command name may contain spaces and ')'
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by `root` and its live descendants (gateway workers)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                parents[int(name)], cpu[int(name)] = st
    total, seen = 0.0, set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in seen or pid not in cpu:
            continue
        seen.add(pid)
        total += cpu[pid]
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return total


def scrape_lag(admin_url: str | None) -> dict[float, float] | None:
    """Cumulative lag buckets {upper bound: count} from the admin listener, None if unavailable."""
    if not admin_url:
        return None
    try:
        # Built from LOOPBACK and a port by bench/targets.py: no file:// or foreign host.
        with urllib.request.urlopen(admin_url, timeout=5) as resp:  # noqa: S310
            text = resp.read().decode(errors="replace")
    except OSError:
        return None
    out: dict[float, float] = {}
    for le, value in _BUCKET.findall(text):
        bound = float("inf") if le == "+Inf" else float(le)
        out[bound] = out.get(bound, 0.0) + float(value)  # summed over worker processes
    return out or None


@dataclass(frozen=True)
class Lag:
    """Event-loop lag over one run, in milliseconds (bucket-interpolated estimates)."""

    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    over_5ms: int       # samples later than 5 ms
    over_20ms: int

    def to_json(self) -> dict[str, object]:
        return dict(vars(self))


def lag_between(before: dict[float, float] | None, after: dict[float, float] | None) -> Lag | None:
    if before is None or after is None:
        return None
    bounds = sorted(after)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cum[-1] if cum else 0.0
    if total <= 0:
        return None

    def quantile(q: float) -> float:
        rank = q * total
        prev_bound, prev_count = 0.0, 0.0
        for bound, count in zip(bounds, cum, strict=True):
            if count >= rank:
                if bound == float("inf"):
                    return prev_bound * 1000  # beyond the last finite bucket: its bound, a floor
                inside = count - prev_count
                frac = (rank - prev_count) / inside if inside else 1.0
                return (prev_bound + (bound - prev_bound) * frac) * 1000
            prev_bound, prev_count = bound, count
        return prev_bound * 1000

    def above(limit: float) -> int:
        at = max((c for b, c in zip(bounds, cum, strict=True) if b <= limit), default=0.0)
        return int(total - at)

    return Lag(int(total), quantile(0.5), quantile(0.9), quantile(0.99), quantile(0.999),
               above(0.005), above(0.02))
