"""AuditLog: off the request path, flushed on close, continues its chain, survives a bad sink."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import GENESIS, AuditKeys, AuditLog, discover_chain, sanitize, verify_files
from gateway.audit.chain import StreamSink, parse_line
from gateway.audit.records import CHAIN_KEYS, REDACTED, SECRET_KEY, SECRET_VALUE
from tests.audit.conftest import make_record, read_lines, records, wait_for, write_records

ROOT = Path(__file__).resolve().parents[2]


def mac_of(line: bytes) -> str:
    parsed = parse_line(line)
    assert parsed is not None
    return parsed.mac


async def test_lines_carry_seq_prev_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    await log.start()
    log.submit(make_record(1, tenant_rewritten=True))
    log.submit({"event": "policy.reload", "result": "ok", "routes_added": ["a"], "hash_before": "x"})
    await log.close()
    first, second = records(path)
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert (second["seq"], second["prev"]) == (2, mac_of(read_lines(path)[0]))
    assert first["kid"] == "dev" and len(first["mac"]) == 64
    assert first["event"] == "request" and first["tenant_rewritten"] is True
    assert first["time"].endswith("Z") and len(first["time"]) == len("2025-01-31T12:00:00.123Z")
    for key in ("request_id", "sub", "org", "client_ip", "method", "route_id", "path", "status",
                "decision", "reason", "duration_ms"):
        assert key in first
    assert second["event"] == "policy.reload" and "time" in second
    assert log.written == 2


async def test_close_flushes_everything_under_load(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    await log.start()
    accepted = [log.submit(make_record(i)) for i in range(5000)]
    await log.close()
    assert all(accepted)
    lines = records(path)
    assert len(lines) == 5000
    assert [r["request_id"] for r in lines] == [f"req-{i}" for i in range(5000)]
    assert verify_files([str(path)]).ok
    assert log.submit(make_record(1)) is False  # closed: refused, counted, not raised
    assert log.dropped == 1


async def test_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 10)
    await write_records(path, 10, start=10)
    lines = records(path)
    assert [r["seq"] for r in lines] == list(range(1, 21))
    result = verify_files([str(path)])
    assert result.ok and result.lines == 20 and result.anchored


async def test_restart_after_rotation_continues_from_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 40, max_bytes=2048, backups=50)
    await write_records(path, 40, start=40, max_bytes=2048, backups=50)
    result = verify_files(discover_chain(str(path)))
    assert result.ok and result.lines == 80 and result.last_seq == 80


async def test_torn_last_line_stays_visible_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 5)
    lines = read_lines(path)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # crash mid-write
    log = await write_records(path, 3, start=5)
    assert len(read_lines(path)) == 9  # the fragment was terminated, then a segment line, then 3
    segment = json.loads(read_lines(path)[5])
    assert segment["event"] == "audit.segment" and segment["reason"] == "unverifiable_tail"
    assert (segment["seq"], segment["prev"]) == (6, mac_of(lines[-1]))  # chained to the checkpoint
    assert log.segments == 1
    result = verify_files([str(path)])
    assert (result.ok, result.first_bad_line) == (False, 5)
    assert "not an audit line" in (result.problem or "")
    assert "segment" in result.kinds


@pytest.mark.parametrize(
    ("record", "gone"),
    [
        pytest.param({"access_token": "abc"}, "access_token", id="token_key"),
        pytest.param({"client_secret": "abc"}, "client_secret", id="secret_key"),
        pytest.param({"X-Signature": "abc"}, "X-Signature", id="signature_key"),
        pytest.param({"Authorization": "Bearer abc"}, "Authorization", id="authorization_key"),
        pytest.param({"password": "hunter2"}, "password", id="password_key"),
        pytest.param({"body": "{}"}, "body", id="body_key"),
        pytest.param({"request_body": "{}"}, "request_body", id="body_suffix"),
        pytest.param({"headers": {"cookie": "sid=1", "x": "1"}}, "cookie", id="nested_cookie"),
        pytest.param({"seq": 99, "prev": "f" * 64}, "seq", id="chain_fields_reserved"),
    ],
)
def test_sanitize_drops_secret_like_keys(record: dict[str, Any], gone: str) -> None:
    clean, removed = sanitize({"event": "request", **record})
    assert removed >= 1
    assert gone not in json.dumps(clean)
    assert clean["event"] == "request"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", id="jwt"),
        pytest.param("Bearer abc.def", id="bearer"),
    ],
)
def test_sanitize_masks_credential_values(value: str) -> None:
    clean, removed = sanitize({"note": value, "items": [{"v": value}]})
    assert removed == 2 and value not in json.dumps(clean)


def reference_sanitize(record: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The plain recursive walk `sanitize` was before its inline fast path: the oracle."""
    removed = 0

    def clean(value: Any, depth: int) -> Any:
        nonlocal removed
        if depth > 8:
            removed += 1
            return REDACTED
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if SECRET_KEY.search(str(key)):
                    removed += 1
                    continue
                out[str(key)] = clean(item, depth + 1)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            return [clean(item, depth + 1) for item in value]
        if isinstance(value, str) and SECRET_VALUE.search(value):
            removed += 1
            return REDACTED
        return value

    cleaned: dict[str, Any] = clean(record, 0)
    for key in CHAIN_KEYS & cleaned.keys():
        del cleaned[key]
        removed += 1
    return cleaned, removed


# Text near the patterns' edges: JWT-ish dots, "bearer" in any case after any whitespace (Unicode
# too), non-ASCII letters, and the plain ids and paths a request record carries.
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["eyJhbGciOi.eyJzdWIi.", "EYJabcd.efgh.", "eyJab.cd.ef", "a.b.c", "127.0.0.1",
                     "Bearer x", " \tbearer  y", "\u2003BEARER z", "bearer", "xbearer y", "beárer x",
                     "/v1/agents", "auth.missing_token", "9f0c1234abcd5678", "ſ.eyJaaaa.bbbb."]),
    st.builds(lambda a, b, c: a + b + c, st.sampled_from(["", " ", "\u00a0", "x", "é"]),
              st.sampled_from(["eyJ", "Bearer ", "bEaReR\t", ".", "eyj"]), st.text(max_size=12)),
)
_KEYS = st.one_of(st.sampled_from(["request_id", "path", "note", "token", "X-Signature", "seq", "mac",
                                   "headers", "cookie", "api_key", "items", "reason"]), st.text(max_size=8))
_VALUES = st.recursive(
    st.one_of(_TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.frozensets(_TEXT, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=30,
)


def nested(depth: int, leaf: Any) -> Any:
    return leaf if depth == 0 else {"items": [nested(depth - 1, leaf)]}


def test_no_character_outside_ascii_matches_a_letter_of_bearer() -> None:
    """What sanitize's "bearer" pre-check relies on: the pattern's letters match only themselves."""
    import sys

    letters = re.compile(r"[bear]", re.IGNORECASE)
    assert [c for c in range(128, sys.maxunicode + 1) if letters.fullmatch(chr(c))] == []
    assert all(letters.fullmatch(c) for c in "bearBEAR")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=8), st.integers(0, 6), _TEXT)
def test_sanitize_decides_exactly_as_the_plain_recursive_walk(record: dict[str, Any], depth: int,
                                                              deep: str) -> None:
    record = {**record, "deep": nested(depth, deep)}  # past depth 8: redacted whole
    assert sanitize(record) == reference_sanitize(record)


async def test_sanitize_applies_on_submit(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    await log.start()
    log.submit(make_record(1, token="T0KEN", reload={"signature": "S1G", "routes_added": ["r"]}))
    await log.close()
    text = path.read_text()
    assert "T0KEN" not in text and "S1G" not in text and '"routes_added":["r"]' in text
    assert log.redactions == 2


async def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = AuditLog(str(tmp_path / "a.log"), queue_size=2, on_failure="refuse", on_dropped=dropped.append)
    # Not started: nothing drains the queue.
    assert [log.submit(make_record(i)) for i in range(4)] == [True, True, False, False]
    assert log.dropped == 2 and dropped == [1, 1]
    assert log.refusing  # "refuse": a full queue means mutating requests must be refused
    await log.start()
    await log.close()
    assert len(records(tmp_path / "a.log")) == 2


async def test_failing_sink_flips_healthy_and_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    failed: list[int] = []
    log = AuditLog(str(folder / "audit.log"), on_failure="refuse", on_failed=failed.append)
    await log.start()
    assert log.submit(make_record(1))
    await wait_for(lambda: log.written == 1)
    assert log.healthy and not log.refusing

    shutil.rmtree(folder)  # the sink goes away under the writer
    assert log.submit(make_record(2)) is True  # the request path neither blocks nor raises
    await wait_for(lambda: log.failures == 1)
    assert not log.healthy and log.refusing and log.lost == 1 and failed == [1]
    assert log.last_error and "FileNotFoundError" in log.last_error

    folder.mkdir()
    log.submit(make_record(3))
    await wait_for(lambda: log.healthy)
    await log.close()
    assert [r["request_id"] for r in records(folder / "audit.log")] == ["req-3"]


async def test_unopenable_sink_at_start_does_not_raise(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "missing-dir" / "audit.log"))
    await log.start()
    assert not log.healthy and log.failures == 1 and not log.refusing  # "continue" policy
    assert log.submit(make_record(1))
    await log.close()
    assert log.failures >= 2 and log.lost == 1  # the open, the batch, the last checkpoint


async def test_path_that_is_a_directory_fails_cleanly(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path))
    await log.start()
    log.submit(make_record(1))
    await log.close()
    assert not log.healthy and log.failures >= 1


def test_stream_sink_chains_lines() -> None:
    buf = io.BytesIO()
    sink = StreamSink(buf, AuditKeys.parse(None))
    sink.write([{"a": 1}, {"a": 2}])
    sink.write([{"a": 3}])
    first, *rest = buf.getvalue().splitlines(keepends=True)
    assert json.loads(first)["prev"] == GENESIS
    assert [json.loads(line)["seq"] for line in rest] == [2, 3]
    assert json.loads(rest[0])["prev"] == mac_of(first)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"on_failure": "ignore"}, id="bad_policy"),
        pytest.param({"max_bytes": 10}, id="tiny_rotation"),
        pytest.param({"queue_size": 0}, id="no_queue"),
        pytest.param({"checkpoint_interval": 0}, id="no_checkpoint_interval"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AuditLog(None, **kwargs)


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.audit import AuditLog

    async def main(path, worker, n):
        log = AuditLog(path, max_bytes=4096, backups=1000, checkpoint_interval=0.01)
        await log.start()
        for i in range(n):
            log.submit({"event": "request", "worker": worker, "i": i})
            if i % 50 == 0:
                await asyncio.sleep(0)
        await log.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def test_worker_processes_share_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), f"w{w}", "400"], cwd=ROOT)
        for w in range(3)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    chain = discover_chain(str(path))
    checkpoints = read_lines(Path(f"{path}.checkpoints"))
    result = verify_files(chain, checkpoints=checkpoints)
    assert result.ok and result.lines == 1200 and result.anchored and len(chain) > 3, result.findings
    # Every close checkpoints the head unless the last checkpoint already says exactly that, so
    # workers that close after the last write add nothing: one checkpoint may be all there is.
    # What must hold is that it covers the end: no line after it is unanchored.
    assert result.unanchored == 0 and result.checkpoints >= 1
    assert not any(json.loads(line).get("event") == "audit.segment" for n in chain for line in read_lines(Path(n)))
    seen = [json.loads(line) for name in chain for line in read_lines(Path(name))]
    for w in range(3):
        assert [r["i"] for r in seen if r["worker"] == f"w{w}"] == list(range(400))
