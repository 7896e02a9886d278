"""`gateway audit verify` names every edited, deleted, inserted, reordered or forged line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import GENESIS, AuditKeys, audit_verify_main, discover_chain, verify_files
from gateway.audit.chain import encode_line, parse_line
from tests.audit.conftest import WriteLog, make_record, read_lines

Lines = list[bytes]
DEV = AuditKeys.parse(None)
OTHER = AuditKeys.parse("k1:" + "o" * 40)  # an attacker's own key, with any key id they like
FORGED_DEV_KID = AuditKeys.parse("dev:" + "f" * 40)


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_AUDIT_KEY", raising=False)
    monkeypatch.delenv("GATEWAY_AUDIT_CHECKPOINTS", raising=False)


def mac_of(line: bytes) -> str:
    parsed = parse_line(line)
    assert parsed is not None
    return parsed.mac


def edit_field(lines: Lines) -> Lines:
    lines[4] = lines[4].replace(b'"status":201', b'"status":200')  # hide that it was a 201
    return lines


def edit_and_reseal_with_other_key(lines: Lines) -> Lines:
    # A forger who knows the scheme but not the key: re-signs the edited line with their own key
    # under our key id; the next line still chains to the genuine MAC.
    obj = json.loads(parse_line(lines[4]).body)  # type: ignore[union-attr]
    obj["status"] = 200
    seq, prev = obj.pop("seq"), obj.pop("prev")
    obj.pop("kid")
    lines[4], _ = encode_line(obj, seq, prev, FORGED_DEV_KID)
    return lines


def delete_line(lines: Lines) -> Lines:
    del lines[4]
    return lines


def delete_two_lines(lines: Lines) -> Lines:
    del lines[4:6]
    return lines


def insert_forged(lines: Lines) -> Lines:
    forged, _ = encode_line(make_record(999), 5, mac_of(lines[3]), FORGED_DEV_KID)
    lines.insert(4, forged)
    return lines


def duplicate_line(lines: Lines) -> Lines:
    lines.insert(5, lines[4])
    return lines


def swap_adjacent(lines: Lines) -> Lines:
    lines[4], lines[5] = lines[5], lines[4]
    return lines


def swap_distant(lines: Lines) -> Lines:
    lines[2], lines[6] = lines[6], lines[2]
    return lines


def edit_seq(lines: Lines) -> Lines:
    lines[4] = lines[4].replace(b'"seq":5,', b'"seq":9,')
    return lines


def truncate_last(lines: Lines) -> Lines:
    lines[-1] = lines[-1][:-12]
    return lines


def drop_last_newline(lines: Lines) -> Lines:
    lines[-1] = lines[-1][:-1]
    return lines


def blank_line(lines: Lines) -> Lines:
    lines.insert(6, b"\n")
    return lines


def strip_mac(lines: Lines) -> Lines:
    body = parse_line(lines[4]).body  # type: ignore[union-attr]
    lines[4] = body + b"\n"
    return lines


def unknown_kid(lines: Lines) -> Lines:
    lines[4] = lines[4].replace(b'"kid":"dev"', b'"kid":"k9"')
    return lines


TAMPERS = [
    pytest.param(edit_field, 5, "MAC does not verify", id="edit_field"),
    pytest.param(edit_and_reseal_with_other_key, 5, "MAC does not verify", id="reseal_other_key"),
    pytest.param(delete_line, 5, "1 line(s) missing", id="delete_line"),
    pytest.param(delete_two_lines, 5, "2 line(s) missing", id="delete_two_lines"),
    pytest.param(insert_forged, 5, "MAC does not verify", id="insert_forged"),
    pytest.param(duplicate_line, 6, "seq goes back", id="duplicate_line"),
    pytest.param(swap_adjacent, 5, "missing or moved", id="swap_adjacent"),
    pytest.param(swap_distant, 3, "missing or moved", id="swap_distant"),
    pytest.param(edit_seq, 5, "MAC does not verify", id="edit_seq"),
    pytest.param(truncate_last, 10, "truncated", id="truncate_last_line"),
    pytest.param(drop_last_newline, 10, "truncated", id="drop_last_newline"),
    pytest.param(blank_line, 7, "not an audit line", id="blank_line"),
    pytest.param(strip_mac, 5, "not an audit line", id="strip_mac"),
    pytest.param(unknown_kid, 5, "not among the keys", id="unknown_kid"),
]


def test_untouched_log_verifies(write_log: WriteLog, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(10)
    result = verify_files([str(path)], DEV)
    assert result.ok and result.lines == 10 and result.anchored
    assert result.head == mac_of(read_lines(path)[-1])
    assert audit_verify_main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "OK: 10 lines in 1 files, 1 checkpoints" in out
    assert f"head: seq 10 mac {result.head}" in out


@pytest.mark.parametrize(("tamper", "bad_line", "problem"), TAMPERS)
def test_tampering_names_first_broken_line(
    write_log: WriteLog, capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Lines], Lines], bad_line: int, problem: str,
) -> None:
    path = write_log(10)
    path.write_bytes(b"".join(tamper(read_lines(path))))
    result = verify_files([str(path)], DEV)
    assert not result.ok
    assert (result.first_bad_file, result.first_bad_line) == (str(path), bad_line), result.findings
    assert problem in (result.problem or "")
    assert audit_verify_main([str(path)]) == 1
    assert f"BROKEN: {path}:{bad_line}: " in capsys.readouterr().out


def test_wrong_key_fails_every_line(write_log: WriteLog, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(10, keys=AuditKeys.parse("k1:" + "a" * 40))
    assert verify_files([str(path)], AuditKeys.parse("k1:" + "a" * 40)).ok
    wrong = verify_files([str(path)], AuditKeys.parse("k1:" + "b" * 40),
                         checkpoints=read_lines(Path(f"{path}.checkpoints")))
    assert not wrong.ok and wrong.first_bad_line == 1 and "MAC does not verify" in (wrong.problem or "")
    assert "checkpoint" in wrong.kinds  # the checkpoints do not verify either
    monkeypatch.setenv("GATEWAY_AUDIT_KEY", "k1:" + "b" * 40)
    assert audit_verify_main([str(path)]) == 1
    monkeypatch.setenv("GATEWAY_AUDIT_KEY", "k1:" + "a" * 40)
    assert audit_verify_main([str(path)]) == 0
    capsys.readouterr()


def test_rewrite_with_another_key_is_caught(write_log: WriteLog) -> None:
    """Someone with write access re-signs the whole log (and its checkpoints) with their own key."""
    path = write_log(10)
    out, prev = [], GENESIS
    for i, raw in enumerate(read_lines(path), start=1):
        obj = json.loads(parse_line(raw).body)  # type: ignore[union-attr]
        for k in ("seq", "prev", "kid"):
            obj.pop(k)
        obj["status"] = 200
        line, prev = encode_line(obj, i, prev, FORGED_DEV_KID)
        out.append(line)
    path.write_bytes(b"".join(out))
    result = verify_files([str(path)], DEV, checkpoints=read_lines(Path(f"{path}.checkpoints")))
    assert not result.ok and result.first_bad_line == 1
    assert "rollback" in result.kinds  # and the genuine checkpoint does not match the rewrite


def test_key_rotation_old_lines_verify_with_both_keys(tmp_path: Path) -> None:
    old, new = "k1:" + "a" * 40, "k2:" + "c" * 40
    import asyncio

    from tests.audit.conftest import write_records

    path = tmp_path / "audit.log"
    asyncio.run(write_records(path, 5, keys=AuditKeys.parse(old)))
    asyncio.run(write_records(path, 5, start=5, keys=AuditKeys.parse(f"{new},{old}")))
    kids = [json.loads(line)["kid"] for line in read_lines(path)]
    assert kids == ["k1"] * 5 + ["k2"] * 5
    cps = read_lines(Path(f"{path}.checkpoints"))
    assert verify_files([str(path)], AuditKeys.parse(f"{new},{old}"), checkpoints=cps).ok
    only_new = verify_files([str(path)], AuditKeys.parse(new), checkpoints=cps)
    assert not only_new.ok and "not among the keys" in (only_new.problem or "")


def test_gateway_cli_audit_verify(write_log: WriteLog, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    path = write_log(10)
    assert main(["audit", "verify", str(path)]) == 0
    assert "OK: 10 lines in 1 files" in capsys.readouterr().out
    lines = read_lines(path)
    del lines[2]
    path.write_bytes(b"".join(lines))
    assert main(["audit", "verify", str(path)]) == 1
    assert f"BROKEN: {path}:3: seq jumps from 2 to 4" in capsys.readouterr().out


def test_first_line_deleted_is_caught_only_when_genesis_required(write_log: WriteLog) -> None:
    path = write_log(10)
    path.write_bytes(b"".join(read_lines(path)[1:]))
    loose = verify_files([str(path)], DEV)
    assert loose.ok and not loose.anchored and loose.first_seq == 2
    strict = verify_files([str(path)], DEV, require_genesis=True)
    assert (strict.ok, strict.first_bad_line) == (False, 1)
    assert audit_verify_main(["--from-genesis", str(path)]) == 1


def test_rotation_keeps_one_chain_across_files(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=50)
    chain = discover_chain(str(path))
    assert len(chain) >= 4 and chain[-1] == str(path) and chain[-2] == f"{path}.1"
    for name in chain:
        assert os.path.getsize(name) <= 2048
    result = verify_files(chain, DEV, checkpoints=read_lines(Path(f"{path}.checkpoints")))
    assert result.ok and result.lines == 60 and result.files == len(chain) and result.anchored
    assert result.unanchored == 0
    for older, newer in zip(chain, chain[1:], strict=False):
        assert json.loads(read_lines(Path(newer))[0])["prev"] == mac_of(read_lines(Path(older))[-1])


def test_tampering_across_rotated_files(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=50)
    chain = discover_chain(str(path))
    middle = Path(chain[1])
    lines = read_lines(middle)
    lines[-1] = lines[-1].replace(b'"status":201', b'"status":404')
    middle.write_bytes(b"".join(lines))
    result = verify_files(chain, DEV)
    assert (result.first_bad_file, result.first_bad_line) == (str(middle), len(lines))


def test_deleted_rotated_file_is_a_gap(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=50)
    chain = discover_chain(str(path))
    os.unlink(chain[1])
    result = verify_files(discover_chain(str(path)), DEV)
    assert (result.first_bad_file, result.first_bad_line) == (chain[2], 1)
    assert "missing" in (result.problem or "")


def test_dropped_backups_leave_an_unanchored_but_valid_chain(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=2)
    chain = discover_chain(str(path))
    assert chain == [f"{path}.2", f"{path}.1", str(path)]
    result = verify_files(chain, DEV, checkpoints=read_lines(Path(f"{path}.checkpoints")))
    assert result.ok and not result.anchored and (result.first_seq or 0) > 1


def test_discover_chain_orders_numerically(tmp_path: Path) -> None:
    base = tmp_path / "audit.log"
    for name in ("audit.log", "audit.log.1", "audit.log.2", "audit.log.10", "audit.log.lock",
                 "audit.log.bak", "audit.log.checkpoints", "other.log.1"):
        (tmp_path / name).write_text("")
    assert discover_chain(str(base)) == [f"{base}.10", f"{base}.2", f"{base}.1", str(base)]
    assert discover_chain(str(tmp_path / "missing.log")) == []


@pytest.mark.parametrize(
    ("argv", "env", "code"),
    [
        pytest.param([], {}, 2, id="no_file"),
        pytest.param(["/nonexistent/audit.log"], {}, 2, id="missing_file"),
        pytest.param(["--bogus", "x"], {}, 2, id="unknown_flag"),
        pytest.param(["x"], {"GATEWAY_AUDIT_KEY": "bad kid!:secret"}, 2, id="malformed_key"),
        pytest.param(["--checkpoints", "/nonexistent/cp", "{log}"], {}, 2, id="missing_checkpoints"),
    ],
)
def test_cli_usage_errors(write_log: WriteLog, monkeypatch: pytest.MonkeyPatch, argv: list[str],
                          env: dict[str, str], code: int) -> None:
    path = write_log(3)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert audit_verify_main([a.replace("{log}", str(path)) for a in argv]) == code
