from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditLog, request_record


def make_record(i: int, **extra: Any) -> dict[str, Any]:
    return request_record(
        request_id=f"req-{i}", sub=f"user-{i % 7}", org="org-1", client_ip="203.0.113.9",
        method="POST", route_id="agents.create", path="/v1/agents", status=201,
        decision="allow", reason=None, duration_ms=1.5, **extra,
    )


async def write_records(path: Path, n: int, start: int = 0, **kwargs: Any) -> AuditLog:
    """Write `n` request records through a real AuditLog (started and closed)."""
    log = AuditLog(str(path), **kwargs)
    await log.start()
    for i in range(start, start + n):
        assert log.submit(make_record(i))
    await log.close()
    assert log.failures == 0 and log.dropped == 0
    return log


WriteLog = Callable[..., Path]


@pytest.fixture
def write_log(tmp_path: Path) -> WriteLog:
    """Sync helper for sync tests: write `n` records to tmp_path/audit.log, return its path."""

    def write(n: int, **kwargs: Any) -> Path:
        path = tmp_path / "audit.log"
        asyncio.run(write_records(path, n, **kwargs))
        return path

    return write


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


async def wait_for(cond: Callable[[], bool]) -> None:
    """Poll a condition the writer thread will make true (not a timing assertion)."""
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not reached in 10 s")
