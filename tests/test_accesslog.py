"""gateway/accesslog.py: off the request path, bounded, survives rotation, never the token."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

from gateway.accesslog import AccessLog
from gateway.context import RequestContext
from gateway.tracing import Tracer

SCOPE = {"method": "GET", "headers": [(b"authorization", b"Bearer eyJhbGciOi.secret.sig"), (b"user-agent", b"ua/1")]}


def ctx(rid: str = "r" * 24) -> RequestContext:
    c = RequestContext(rid, "198.51.100.7", None)  # type: ignore[arg-type]
    c.route = SimpleNamespace(id="agents.list")  # type: ignore[assignment]
    c.status, c.claims, c.trace = 200, {"sub": "alice", "app_metadata": {"org_id": "org-a"}}, Tracer().start([])
    return c


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_file_lines_and_org_claim_path(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), org_claim="app_metadata.org_id")
    log.start()
    log(SCOPE, ctx())
    log.close()
    (entry,) = lines(path)
    assert (entry["org"], entry["sub"], entry["user_agent"], entry["status"]) == ("org-a", "alice", "ua/1", 200)
    assert str(entry["time"]).endswith("Z") and "secret" not in path.read_text()


def test_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.start()
    log(SCOPE, ctx("a" * 24))
    for _ in range(1000):  # the writer is a thread: wait for the first line (not a timing assertion)
        if path.exists() and path.read_text():
            break
        time.sleep(0.01)
    os.rename(path, tmp_path / "access.log.1")  # logrotate moves it away
    log(SCOPE, ctx("b" * 24))
    log.close()
    assert [e["request_id"] for e in lines(tmp_path / "access.log.1")] == ["a" * 24]
    assert [e["request_id"] for e in lines(path)] == ["b" * 24]


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = AccessLog(str(tmp_path / "a.log"), queue_size=2, on_dropped=dropped.append)
    for i in range(5):  # not started: nothing drains
        log(SCOPE, ctx(f"{i}" * 24))
    assert log.dropped == 3 and dropped == [1, 1, 1]
    log.start()
    log.close()
    assert len(lines(tmp_path / "a.log")) == 2


def test_off_writes_nothing(tmp_path: Path) -> None:
    log = AccessLog("off")
    assert not log.enabled
    log(SCOPE, ctx())
    log.start()
    log.close()
    assert log.written == 0 and log._thread is None


def test_unwritable_target_counts_failures(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path))  # a directory
    log.start()
    log(SCOPE, ctx())
    log.close()
    assert log.failures == 1 and log.written == 0


def test_write_lines_never_splits_a_line_across_pipe_writes() -> None:
    from gateway.accesslog import PIPE_BUF, write_lines

    r, w = os.pipe()
    try:
        lines = [(f'{{"n":{i:03d},"pad":"' + "x" * 700 + '"}\n').encode() for i in range(40)]
        writes: list[int] = []
        real = os.write

        def spy(fd: int, data: bytes | memoryview) -> int:
            writes.append(len(data))
            return real(fd, data)

        os.write = spy  # type: ignore[assignment]
        try:
            write_lines(w, lines)
        finally:
            os.write = real  # type: ignore[assignment]
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
    assert data == b"".join(lines)
    assert all(n <= PIPE_BUF for n in writes) and len(writes) > 1
    assert all(n % len(lines[0]) == 0 for n in writes)  # whole lines only (equal-length lines here)
