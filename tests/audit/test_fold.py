"""Denials past a rate are folded into chained summary records (gateway/audit/fold.py): a flood of
refused requests cannot rotate the audit trail away, and no denial goes uncounted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditLog, request_record, verify_files
from gateway.audit.fold import FOLDED_EVENT, OTHERS, DenialFolder
from tests.audit.conftest import make_record, records


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def denial(i: int, ip: str = "198.51.100.7", reason: str = "auth.missing_token", sub: str | None = None,
           route: str = "agents.list", status: int = 401) -> dict[str, Any]:
    record = request_record(
        request_id=f"deny-{i}", sub=sub, org=None, client_ip=ip, method="GET", route_id=route,
        path="/v1/agents", status=status, decision="deny", reason=reason, duration_ms=0.2)
    record["time"] = f"t{i}"
    return record


def counted(written: list[dict[str, Any]]) -> int:
    """Denials accounted for: one per individual line plus every summary's count."""
    return sum(r["count"] if r["event"] == FOLDED_EVENT else r["decision"] == "deny" for r in written)


def test_within_the_burst_every_denial_is_written() -> None:
    f = DenialFolder(5, 10, clock=Clock())
    assert all(f.admit(denial(i)) for i in range(10))
    assert f.deadline is None and f.drain() == [] and f.folded == 0


def test_past_the_burst_denials_are_counted_under_their_key() -> None:
    clock = Clock()
    f = DenialFolder(5, 10, interval=10, clock=clock)
    admitted = [f.admit(denial(i)) for i in range(100)]
    assert admitted == [True] * 10 + [False] * 90
    assert f.deadline == 1010.0 and not f.due()
    clock.now = 1010.0
    assert f.due()
    (summary,) = f.drain()
    assert summary["event"] == FOLDED_EVENT and summary["count"] == 90
    assert (summary["reason"], summary["route_id"], summary["client_ip"], summary["sub"], summary["status"]) == (
        "auth.missing_token", "agents.list", "198.51.100.7", None, 401)
    assert (summary["first"], summary["last"]) == ("t10", "t99")
    assert (summary["first_request_id"], summary["last_request_id"]) == ("deny-10", "deny-99")
    assert summary["window_seconds"] == 10 and summary["time"].endswith("Z")
    assert f.deadline is None and f.drain() == [] and f.folded == 90


def test_the_bucket_refills_at_the_rate_and_never_past_the_burst() -> None:
    clock = Clock()
    f = DenialFolder(5, 10, clock=clock)
    assert sum(f.admit(denial(i)) for i in range(20)) == 10
    clock.now += 1.0  # five more lines' worth
    assert sum(f.admit(denial(i)) for i in range(20)) == 5
    clock.now += 3600  # an hour idle: the bucket holds at most the burst
    assert sum(f.admit(denial(i)) for i in range(50)) == 10


@pytest.mark.parametrize("record", [
    make_record(1),  # a served mutating request
    {"event": "policy.reload", "result": "failed"},
    dict(denial(1), decision="error", status=502, reason="upstream.unavailable"),
    dict(denial(1), event="request.something_else"),
], ids=["allowed", "reload", "upstream_error", "other_event"])
def test_only_denials_are_ever_folded(record: dict[str, Any]) -> None:
    f = DenialFolder(1, 1, clock=Clock())
    assert f.admit(denial(0))  # the bucket is empty now
    assert not f.admit(denial(1))
    assert all(f.admit(dict(record)) for _ in range(100))


def test_keys_are_reason_route_address_subject_and_status() -> None:
    clock = Clock()
    f = DenialFolder(1, 1, clock=clock)
    f.admit(denial(0))
    for i, over in enumerate([{}, {"ip": "198.51.100.8"}, {"reason": "auth.bad_signature"}, {"sub": "mallory"},
                              {"route": "jobs.list"}, {"status": 429, "reason": "ratelimit.exceeded"}, {}]):
        assert not f.admit(denial(i, **over))
    summaries = f.drain()
    assert len(summaries) == 6
    assert sorted(s["count"] for s in summaries) == [1, 1, 1, 1, 1, 2]


def test_distinct_keys_past_the_bound_are_counted_as_others() -> None:
    """A botnet's many addresses cannot make the summaries a flood of their own."""
    f = DenialFolder(1, 1, max_keys=20, clock=Clock())
    f.admit(denial(0))
    for i in range(5000):
        f.admit(denial(i, ip=f"10.0.{i // 250}.{i % 250}"))
    summaries = f.drain()
    assert len(summaries) == 21
    others = [s for s in summaries if s["client_ip"] == OTHERS]
    assert len(others) == 1 and others[0]["sub"] == OTHERS and others[0]["count"] == 5000 - 20
    assert sum(s["count"] for s in summaries) == 5000


@pytest.mark.parametrize("kwargs", [
    {"per_second": 0, "burst": 1}, {"per_second": 1, "burst": 0}, {"per_second": 1, "burst": 1, "interval": 0},
    {"per_second": 1, "burst": 1, "max_keys": 0},
])
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="audit folding"):
        DenialFolder(**kwargs)


async def test_a_flood_through_the_log_leaves_a_short_verifiable_trail(tmp_path: Path) -> None:
    """5,000 denials and the served writes among them: every write has its line, the denials are
    a burst of lines plus summaries whose counts add up to the rest, and the chain verifies."""
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), fold=DenialFolder(20, 50, clock=Clock()))  # time stands still: no refill
    await log.start()
    for i in range(5000):
        assert log.submit(denial(i, ip=f"203.0.113.{i % 3}"))
        if i % 1000 == 0:
            assert log.submit(make_record(i))
    await log.close()  # the open interval's summaries are written before the last checkpoint
    written = records(path)
    assert [r["request_id"] for r in written if r.get("decision") == "allow"] == [f"req-{i}" for i in range(0, 5000, 1000)]
    individual = [r for r in written if r.get("decision") == "deny"]
    summaries = [r for r in written if r["event"] == FOLDED_EVENT]
    assert len(individual) == 50  # the burst
    assert sorted(s["client_ip"] for s in summaries) == ["203.0.113.0", "203.0.113.1", "203.0.113.2"]
    assert counted(written) == 5000
    assert len(written) == 5 + 50 + 3
    assert verify_files([str(path)]).ok


async def test_summaries_are_written_when_due_with_no_more_traffic(tmp_path: Path) -> None:
    """The flood stops: its summary still arrives, without another request and before close."""
    from tests.audit.conftest import wait_for

    path = tmp_path / "audit.log"
    log = AuditLog(str(path), fold=DenialFolder(1, 1, interval=0.05))
    await log.start()
    try:
        for i in range(30):
            log.submit(denial(i))
        await wait_for(lambda: path.exists() and FOLDED_EVENT.encode() in path.read_bytes())
        written = records(path)
        assert counted(written) == 30
    finally:
        await log.close()
