"""Signed checkpoints catch what a keyed chain alone cannot: a cut tail, a rollback to an earlier
copy, and a writer that would otherwise carry on from a doctored file."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from gateway.audit import AuditKeys, AuditLog, audit_verify_main, verify_files
from gateway.audit.checkpoints import read_redis_checkpoints
from tests.audit.conftest import make_record, read_lines, records, wait_for, write_records
from tests.support.procs import redis_server

KEY = "k1:" + "s" * 40
KEYS = AuditKeys.parse(KEY)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUDIT_KEY", KEY)
    monkeypatch.delenv("GATEWAY_AUDIT_CHECKPOINTS", raising=False)


def cps(path: Path) -> list[bytes]:
    return read_lines(Path(f"{path}.checkpoints"))


def verify(path: Path, **kw: object) -> object:
    return verify_files([str(path)], KEYS, checkpoints=cps(path), **kw)  # type: ignore[arg-type]


async def test_checkpoint_at_close_anchors_everything(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 7, keys=KEYS)
    cp = json.loads(cps(path)[-1])
    assert (cp["cp"], cp["seq"], cp["log"], cp["kid"]) == (1, 7, "audit.log", "k1")
    assert cp["mac"] == json.loads(read_lines(path)[-1])["mac"]
    result = verify(path)
    assert result.ok and result.unanchored == 0 and result.checkpoints == 1  # type: ignore[attr-defined]


async def test_periodic_checkpoints_while_running(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), keys=KEYS, checkpoint_interval=0.05)
    await log.start()
    log.submit(make_record(1))
    await wait_for(lambda: Path(f"{path}.checkpoints").exists() and len(cps(path)) >= 1)
    log.submit(make_record(2))
    await wait_for(lambda: len(cps(path)) >= 2)
    n = len(cps(path))
    await log.close()
    assert len(cps(path)) == n  # nothing new since the last one: no duplicate checkpoint
    assert [json.loads(c)["seq"] for c in cps(path)] == [1, 2]


@pytest.mark.parametrize("keep", [7, 4, 0])
async def test_tail_truncation_is_caught(tmp_path: Path, keep: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 10, keys=KEYS)
    path.write_bytes(b"".join(read_lines(path)[:keep]))
    result = verify(path)
    assert not result.ok and "truncated" in result.kinds  # type: ignore[attr-defined]
    assert audit_verify_main([str(path)]) == 1
    assert "tail truncated: checkpoint #1" in capsys.readouterr().out


def test_last_line_changed_from_401_to_200_is_caught(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "audit.log"
    log = AuditLog(str(path), keys=KEYS)
    asyncio.run(log.start())
    log.submit(make_record(1) | {"status": 401, "decision": "deny"})
    asyncio.run(log.close())
    path.write_bytes(path.read_bytes().replace(b'"status":401', b'"status":200'))
    assert not verify(path).ok  # type: ignore[attr-defined]


async def test_restart_after_truncation_starts_a_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The scenario of the report: 7 lines cut to 4, then the gateway carries on writing."""
    path = tmp_path / "audit.log"
    await write_records(path, 7, keys=KEYS)
    genuine = read_lines(path)
    path.write_bytes(b"".join(genuine[:4]))
    segments: list[int] = []
    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        log = await write_records(path, 3, start=7, keys=KEYS, on_segment=segments.append)
    assert log.segments == 1 and segments == [1]
    assert any("truncated" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    seg = records(path)[4]
    assert seg["event"] == "audit.segment" and seg["reason"] == "truncated"
    assert (seg["found_seq"], seg["checkpoint_seq"], seg["seq"]) == (4, 7, 8)
    assert seg["prev"] == json.loads(genuine[6])["mac"]  # chained to what was checkpointed
    assert [r["seq"] for r in records(path)] == [1, 2, 3, 4, 8, 9, 10, 11]
    result = verify(path)
    assert not result.ok and "segment" in result.kinds  # type: ignore[attr-defined]
    assert "seq 5..7 are lost" in result.problem  # type: ignore[attr-defined]
    # The next restart finds the file consistent with the checkpoints: no second segment.
    again = await write_records(path, 2, start=10, keys=KEYS)
    assert again.segments == 0


async def test_rollback_to_an_earlier_copy_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 5, keys=KEYS)
    snapshot = path.read_bytes()
    await write_records(path, 5, start=5, keys=KEYS)  # checkpoint at seq 10
    path.write_bytes(snapshot)
    # Someone continues the old copy with the key but without the checkpoints (another machine,
    # a writer pointed elsewhere): a chain that verifies on its own, past the checkpointed seq.
    await write_records(path, 8, start=100, keys=KEYS, checkpoints=str(tmp_path / "elsewhere"))
    result = verify(path)
    assert not result.ok and result.kinds == {"rollback"}, result.findings  # type: ignore[attr-defined]
    assert "checkpoint #2" in result.problem  # type: ignore[attr-defined]


async def test_writer_finds_same_seq_with_another_mac(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 5, keys=KEYS)
    snapshot = path.read_bytes()
    await write_records(path, 5, start=5, keys=KEYS)  # checkpoint at seq 10
    path.write_bytes(snapshot)
    await write_records(path, 5, start=100, keys=KEYS, checkpoints=str(tmp_path / "elsewhere"))  # seq 10 again
    log = await write_records(path, 1, start=200, keys=KEYS)
    assert log.segments == 1
    assert records(path)[10]["reason"] == "rolled_back"


async def test_lines_after_the_last_checkpoint_are_unanchored(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    await write_records(path, 5, keys=KEYS)
    await write_records(path, 3, start=5, keys=KEYS, checkpoints=str(tmp_path / "elsewhere"))
    result = verify(path)
    assert result.ok and result.unanchored == 3  # type: ignore[attr-defined]
    assert audit_verify_main([str(path)]) == 0
    assert "warning: 3 line(s) after the last checkpoint (#1, seq 5" in capsys.readouterr().out
    assert audit_verify_main(["--strict", str(path)]) == 1


@pytest.mark.parametrize("edit", ["delete_middle", "alter", "forge_other_key"])
async def test_tampered_checkpoint_file_is_caught(tmp_path: Path, edit: str) -> None:
    path = tmp_path / "audit.log"
    for i in range(3):
        await write_records(path, 2, start=2 * i, keys=KEYS)
    lines = cps(path)
    assert len(lines) == 3
    if edit == "delete_middle":
        del lines[1]
    elif edit == "alter":
        lines[1] = lines[1].replace(b'"seq":4', b'"seq":3')
    else:
        from gateway.audit.checkpoints import encode_checkpoint

        obj = json.loads(lines[2])
        lines[2] = encode_checkpoint(AuditKeys.parse("k1:" + "x" * 40), cp=3, time=obj["time"], log_name="audit.log",
                                     seq=obj["seq"], mac=obj["mac"], prev=obj["prev"])
    Path(f"{path}.checkpoints").write_bytes(b"".join(lines))  # noqa: ASYNC240
    result = verify(path)
    assert not result.ok and "checkpoint" in result.kinds  # type: ignore[attr-defined]


async def test_checkpoints_file_elsewhere_via_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "vol2"
    other.mkdir()
    path = tmp_path / "audit.log"
    await write_records(path, 4, keys=KEYS, checkpoints=str(other / "cp"))
    assert not Path(f"{path}.checkpoints").exists() and (other / "cp").exists()  # noqa: ASYNC240
    path.write_bytes(b"".join(read_lines(path)[:2]))
    monkeypatch.setenv("GATEWAY_AUDIT_CHECKPOINTS", str(other / "cp"))
    assert audit_verify_main([str(path)]) == 1


async def test_redis_copy_catches_a_cut_checkpoint_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An attacker cuts the log and the checkpoint file consistently; the Redis copy remembers."""
    path = tmp_path / "audit.log"
    with redis_server() as redis:
        await write_records(path, 4, keys=KEYS, redis_url=redis.url)
        keep_log, keep_cp = path.read_bytes(), cps(path)
        await write_records(path, 4, start=4, keys=KEYS, redis_url=redis.url)
        assert len(read_redis_checkpoints(redis.url, "audit.log")) == 2
        path.write_bytes(keep_log)
        Path(f"{path}.checkpoints").write_bytes(b"".join(keep_cp))  # noqa: ASYNC240
        assert audit_verify_main([str(path)]) == 0  # the local files alone look fine
        capsys.readouterr()
        assert audit_verify_main(["--redis", redis.url, str(path)]) == 1
        assert "tail truncated: checkpoint #2" in capsys.readouterr().out


@pytest.mark.parametrize(("url", "message"), [
    # redis-py alone reads '/abc' as database 0: the check against the copies would say OK.
    pytest.param("redis://127.0.0.1:6379/abc", "--redis: the database number must be digits", id="db_not_a_number"),
    pytest.param("http://127.0.0.1:6379/0", "--redis must start with redis:// or rediss://", id="scheme"),
])
def test_a_malformed_redis_url_is_refused_not_read_as_another_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, message: str) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    assert audit_verify_main(["--redis", url, str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "OK" not in err


async def test_redis_down_does_not_stop_the_audit(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = await write_records(path, 3, keys=KEYS, redis_url="redis://127.0.0.1:9/0")
    assert log.healthy and len(cps(path)) == 1


def test_deleted_log_restart_is_a_segment(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "audit.log"
    asyncio.run(write_records(path, 3, keys=KEYS))
    path.unlink()
    log = asyncio.run(write_records(path, 1, start=3, keys=KEYS))
    assert log.segments == 1 and records(path)[0]["reason"] == "truncated"
    assert not verify(path).ok  # type: ignore[attr-defined]
    shutil.rmtree(tmp_path, ignore_errors=True)
