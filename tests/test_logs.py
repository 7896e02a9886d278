"""The server log (gateway/logs.py): JSON lines to stderr written by a thread, so a stderr that
nobody reads can never block the event loop; lines dropped meanwhile are counted and reported."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import termios
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.logs import (  # the plain form of redact, as the oracle
    _BEARER,
    _JWT,
    CURRENT_REQUEST,
    BackgroundHandler,
    JsonFormatter,
    Rfc3339Clock,
    redact,
    report_dropped_lines,
)
from gateway.metrics import Metrics


def pending(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def logger_to(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(JsonFormatter())
    lg = logging.getLogger(name)
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.INFO)
    return lg


def test_lines_are_whole_json_in_order_with_the_request_ids(pipe: tuple[int, int]) -> None:
    r, w = pipe
    h = BackgroundHandler(w)
    lg = logger_to(h, "test.logs.order")
    token = CURRENT_REQUEST.set(("rid-1", "trace-1"))
    try:
        for i in range(200):
            lg.info("line %d", i, extra={"reason": "auth.missing_token"})
    finally:
        CURRENT_REQUEST.reset(token)
    h.flush()
    h.close()
    lines = [json.loads(x) for x in drain(r).splitlines()]
    assert [x["msg"] for x in lines] == [f"line {i}" for i in range(200)]
    assert all(x["request_id"] == "rid-1" and x["trace_id"] == "trace-1" for x in lines)  # formatted at the call
    assert lines[0]["level"] == "info" and lines[0]["reason"] == "auth.missing_token"


def test_a_full_stderr_never_blocks_the_caller_and_the_gap_is_reported(pipe: tuple[int, int]) -> None:
    """Nobody reads the pipe: the caller still returns at once for every line; the lines that did
    not fit are dropped and counted, and a warning says how many once the pipe takes lines."""
    r, w = pipe
    h = BackgroundHandler(w, queue_size=100)
    counted: list[int] = []
    h.on_dropped = counted.append
    lg = logger_to(h, "test.logs.full")
    done = threading.Event()

    def flood() -> None:
        for i in range(20000):
            lg.info("GET - -> 404 route.not_found %d", i)
        done.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    # A blocking write would hang here for good; 60 s only bounds a broken build's failure.
    assert done.wait(60), "logging blocked on a full stderr"
    # The pipe really is full: its 16 pages hold up to 64 KiB, less the room left at the end of a
    # page where the next whole-line write (under 4 KiB) did not fit (59,404 and, in an e2e test,
    # 39,286 bytes seen).
    assert pending(r) >= 16_384, pending(r)
    assert h.dropped > 0 and counted == [1] * h.dropped  # each drop counted as it happens
    got = drain(r)  # the reader comes back: the writer carries on and reports the gap
    for _ in range(600):
        got += drain(r)
        if b"log.dropped" in got:
            break
        threading.Event().wait(0.05)
    h.close()
    got += drain(r)
    lines = [json.loads(x) for x in got.splitlines()]  # every line whole
    notes = [x for x in lines if x.get("event") == "log.dropped"]
    assert notes and notes[0]["level"] == "warning" and "stderr did not keep up" in notes[0]["msg"]
    reported = sum(int(x["msg"].split()[0]) for x in notes)
    assert reported == h.dropped
    assert len(lines) - len(notes) + h.dropped == 20000  # written + dropped = logged


def test_close_writes_what_is_queued(pipe: tuple[int, int]) -> None:
    r, w = pipe
    h = BackgroundHandler(w)
    lg = logger_to(h, "test.logs.close")
    for i in range(50):
        lg.warning("w %d", i)
    h.close()
    assert len(drain(r).splitlines()) == 50


def test_a_record_that_cannot_be_formatted_is_reported_not_raised(pipe: tuple[int, int],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = pipe
    h = BackgroundHandler(w)
    lg = logger_to(h, "test.logs.bad")
    seen: list[Any] = []
    monkeypatch.setattr(h, "handleError", lambda record: seen.append(record.msg))
    lg.info("%d", "not a number")  # the message cannot be formatted
    lg.info("fine")
    h.close()
    assert seen == ["%d"]
    assert [json.loads(x)["msg"] for x in drain(r).splitlines()] == ["fine"]


def fill(fd: int) -> None:
    """Fill the pipe `fd` writes to, so that the next blocking write on it waits for a reader."""
    os.set_blocking(fd, False)
    try:
        for size in (4096, 1):  # then byte by byte: not even a short line fits after this
            try:
                while True:
                    os.write(fd, b"x" * size)
            except BlockingIOError:
                pass
    finally:
        os.set_blocking(fd, True)


def test_the_worker_metric_counts_every_dropped_line_those_before_it_was_attached_included(
        pipe: tuple[int, int]) -> None:
    """`gateway_server_log_dropped_total` is what an alert can watch while stderr is stuck (the
    log.dropped note itself only arrives once stderr takes lines again)."""
    r, w = pipe
    fill(w)
    h = BackgroundHandler(w, queue_size=5)
    h.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [h]
    lg = logging.getLogger("test.logs.metric")
    lg.setLevel(logging.INFO)
    try:
        for i in range(40):  # the writer holds one line and waits on the full pipe; 5 more queue
            lg.info("early %d", i)
        early = h.dropped
        assert early >= 30
        metrics = Metrics(CollectorRegistry())

        def value() -> float | None:
            return metrics.registry.get_sample_value("gateway_server_log_dropped_total")

        assert value() == 0
        report_dropped_lines(metrics.server_log_dropped)
        assert value() == early
        for i in range(25):
            lg.info("late %d", i)
        assert h.dropped >= early + 20 and value() == h.dropped
    finally:
        root.handlers[:] = saved
        got = drain(r)  # the filler, then whatever the writer manages to write meanwhile
        h.close()
    got += drain(r)
    assert b'"event":"log.dropped"' in got.replace(b" ", b"")  # the gap is reported in the log too


@pytest.mark.parametrize("t", [1764461523.118, 1764461523.9996, 1764461524.0, 0.5, 951782400.001, 4102444799.999])
def test_the_clock_is_rfc3339_utc_milliseconds_as_isoformat_truncates(t: float) -> None:
    from datetime import UTC, datetime

    want = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    clock = Rfc3339Clock()
    assert clock(t) == want
    assert clock(t) == want  # the cached second gives the same text
    assert clock(t + 1) == datetime.fromtimestamp(t + 1, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(("text", "want"), [
    ("auth header Bearer abc.DEF-123~+/= seen", "auth header Bearer [redacted] seen"),
    ("BEARER\tabc and bearer  xyz", "BEARER\t[redacted] and bearer  [redacted]"),
    (f"token {JWT} refused", "token [redacted-jwt] refused"),
    (f"Authorization: Bearer {JWT}", "Authorization: Bearer [redacted]"),
    ("GET agents.list -> 401 auth.missing_token", "GET agents.list -> 401 auth.missing_token"),
    ("bearer", "bearer"),  # the word alone carries no credential
    ("eyJ.short.x", "eyJ.short.x"),  # too short for a JWT
])
def test_redact_masks_bearer_credentials_and_jwts(text: str, want: str) -> None:
    assert redact(text) == want


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["Bearer ", "bEaReR\u2003", "bearer", "eyJ", JWT, "eyJabcde.fghij.", ".", " ", "ſ", "İ", "x"])), max_size=8))
def test_redact_changes_exactly_what_both_patterns_change(parts: list[str]) -> None:
    text = "".join(parts)
    assert redact(text) == _JWT.sub("[redacted-jwt]", _BEARER.sub(r"\1[redacted]", text))


def test_a_formatted_line_is_stamped_with_the_records_time_and_redacted() -> None:
    record = logging.makeLogRecord({"name": "gateway.test", "levelno": logging.WARNING, "levelname": "WARNING",
                                    "msg": "refused Bearer %s", "args": ("s3cr3t",), "created": 1764461523.9996,
                                    "reason": "auth.invalid_token"})
    line = json.loads(JsonFormatter().format(record))
    assert line == {"time": "2025-11-30T00:12:03.999Z", "level": "warning", "logger": "gateway.test",
                    "msg": "refused Bearer [redacted]", "reason": "auth.invalid_token"}
