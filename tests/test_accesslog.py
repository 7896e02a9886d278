"""gateway/accesslog.py: off the request path, bounded, survives rotation, never the token."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

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
    from gateway.logs import PIPE_BUF, write_lines

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


HOSTILE = [
    'quote " backslash \\ slash / done',
    "newline\nreturn\rtab\tnul\x00 bell\x07 esc\x1b del\x7f",
    "line sep \u2028 para sep \u2029 bom \ufeff",
    "latin-1 \xe9\xff and beyond \u4e2d\U0001f600",
    'forged","status":200,"decision":"allow',
    "lone surrogate \ud800 end",
    "",
]


def test_hostile_strings_stay_one_valid_json_line_equal_to_json_dumps() -> None:
    from gateway.accesslog import encode_line

    for s in HOSTILE:
        entry = (1764461523.118, 0.0031234, s, s, s, s, 200, s, s, 0.0024, s, s, s, 0, 512, s, s)
        line = encode_line(entry, lambda t: "2025-11-30T00:12:03.118Z")
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line and line.isascii()
        want = {"type": "access", "time": "2025-11-30T00:12:03.118Z", "request_id": s, "trace_id": s,
                "route": s, "method": s, "status": 200, "decision": s, "reason": s, "duration_ms": 3.123,
                "upstream_ms": 2.4, "client_ip": s, "org": s, "sub": s, "bytes_in": 0, "bytes_out": 512,
                "user_agent": s, "client_request_id": s}
        assert json.loads(line) == want
        assert line == (json.dumps(want, separators=(",", ":")) + "\n").encode()  # the encoder it replaces


def test_odd_values_are_json_and_nulls_are_null() -> None:
    from gateway.accesslog import encode_line

    entry = (0.0, float("nan"), "r", None, None, None, 404, "deny", None, None, "ip", None, None, 0, 0, None, None)
    got = json.loads(encode_line(entry, lambda t: "t"))
    assert (got["duration_ms"], got["route"], got["user_agent"], got["upstream_ms"]) == (None, None, None, None)
    assert "client_request_id" not in got
    weird = (0.0, 0.001, True, 7, 1.5, b"x", 200, "allow", None, None, "ip", None, None, 0, 0, None, None)
    got = json.loads(encode_line(weird, lambda t: "t"))
    assert (got["request_id"], got["trace_id"], got["route"], got["method"]) == (True, 7, 1.5, "b'x'")


@pytest.mark.parametrize("entry", [
    (1764461523.118, 0.0031234, "a" * 24, "b" * 32, "agents.list", "GET", 200, "allow", None, 0.0012,
     "127.0.0.1", "org-1", "user-1", 0, 27, "wrk/4.2", None),
    (0.0, 0.5, "r", None, None, None, True, "deny", "x", None, "::1", None, None, False, 1, "ua", "c"),
    (0.0, 0.5, "r", None, None, None, 200, "deny", "x", float("inf"), "::1", None, None, 0, 1, "ua", "c"),
    (0.0, 0.5, "r", None, None, None, None, "deny", "x", 1.0, "::1", 7, None, 0, 1.5, None, None),
])
def test_a_line_is_what_json_dumps_writes_for_its_fields(entry: tuple) -> None:
    """Ordinary and odd field types (a bool where an int goes, a non-finite float, a number where
    a string goes): the line is json.dumps of the fields, milliseconds rounded to 3 places and a
    non-finite one null."""
    from gateway.accesslog import encode_line

    (_t, duration, rid, trace_id, route, method, status, decision, reason, upstream, ip, org, sub,
     bytes_in, bytes_out, ua, client_rid) = entry

    def ms(seconds: float | None) -> float | None:
        return round(seconds * 1000, 3) if seconds is not None and math.isfinite(seconds) else None

    want = {"type": "access", "time": "t", "request_id": rid, "trace_id": trace_id, "route": route,
            "method": method, "status": status, "decision": decision, "reason": reason,
            "duration_ms": ms(duration), "upstream_ms": ms(upstream), "client_ip": ip, "org": org,
            "sub": sub, "bytes_in": bytes_in, "bytes_out": bytes_out, "user_agent": ua}
    if client_rid is not None:
        want["client_request_id"] = client_rid
    assert encode_line(entry, lambda t: "t") == (json.dumps(want, separators=(",", ":")) + "\n").encode()


def test_hostile_user_agent_and_client_id_from_the_request(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.start()
    ua = b'evil"\n{"type":"access","status":200}\\\x00\xff' + b"x" * 400
    c = ctx()
    c.client_request_id = 'id"\n'
    log({"method": "GET", "headers": [(b"user-agent", ua)]}, c)
    log.close()
    text = path.read_text()
    assert text.count("\n") == 1
    (entry,) = lines(path)
    assert entry["user_agent"] == ua[:256].decode("latin-1") and entry["client_request_id"] == 'id"\n'


def test_close_writes_everything_queued_in_batches(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a.log"))
    for i in range(2500):  # more than one batch, queued before the writer starts
        log(SCOPE, ctx(f"{i:024d}"))
    log.start()
    log.close()
    assert [e["request_id"] for e in lines(tmp_path / "a.log")] == [f"{i:024d}" for i in range(2500)]
    assert log.written == 2500 and log.dropped == 0


def test_writer_is_not_woken_per_line(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a.log"), interval=0.5)
    log.start()
    for i in range(300):
        log(SCOPE, ctx(f"{i:024d}"))
        time.sleep(0.001)  # lets the writer run between lines, as a serving event loop does
    log.close()
    assert log.written == 300
    # A wake-up per line would be ~300; one per batch (0.5 s apart while lines come) is a handful
    # (a few dozen even if each sleep above took 50 ms on a loaded machine).
    assert log.wakeups < 80, log.wakeups


def test_idle_writer_is_woken_by_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = AccessLog(str(path), interval=0.05)
    log.start()
    try:
        for n in (1, 2, 3):
            for _ in range(3000):  # polling, generous ceiling: wait until the writer sleeps untimed
                if log._idle:
                    break
                time.sleep(0.01)
            assert log._idle
            log(SCOPE, ctx(f"{n}" * 24))
            for _ in range(3000):  # only the line's own wake-up can write it now
                if path.exists() and len(path.read_text().splitlines()) == n:
                    break
                time.sleep(0.01)
            assert len(lines(path)) == n
    finally:
        log.close()


@pytest.mark.parametrize(("org", "seen"), [(42, "42"), ("   ", None), (True, None), ("org-a", "org-a")])
def test_org_is_read_as_tenant_binding_reads_it(tmp_path: Path, org: object, seen: str | None) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), org_claim="app_metadata.org_id")
    log.start()
    c = ctx()
    c.claims = {"sub": "alice", "app_metadata": {"org_id": org}}
    log(SCOPE, c)
    log.close()
    (entry,) = lines(path)
    assert entry["org"] == seen
