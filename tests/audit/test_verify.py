"""`gateway audit verify` names the first edited, deleted, inserted or reordered line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import GENESIS, audit_verify_main, discover_chain, verify_files
from gateway.audit.chain import encode_line, line_hash
from tests.audit.conftest import WriteLog, make_record, read_lines

Lines = list[bytes]


def edit_field(lines: Lines) -> Lines:
    obj = json.loads(lines[4])
    obj["status"] = 200  # line 5: someone hides that the request was a 201
    lines[4] = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    return lines


def edit_decision_bytes(lines: Lines) -> Lines:
    lines[4] = lines[4].replace(b'"decision":"allow"', b'"decision":"deny!"')
    return lines


def delete_line(lines: Lines) -> Lines:
    del lines[4]
    return lines


def delete_two_lines(lines: Lines) -> Lines:
    del lines[4:6]
    return lines


def insert_forged(lines: Lines) -> Lines:
    # A forger who knows the scheme: right seq and right prev for the forged line itself,
    # but the following line still points at the genuine line 4.
    forged = encode_line(make_record(999), 5, line_hash(lines[3]))
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


def move_line_later(lines: Lines) -> Lines:
    lines.insert(8, lines.pop(4))
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


def restart_chain(lines: Lines) -> Lines:
    # Someone deletes lines 1-5 and re-chains the rest from genesis, but not line 7 onwards.
    tail = lines[5:]
    tail[0] = encode_line(json.loads(tail[0]) | {"seq": 1, "prev": GENESIS}, 1, GENESIS)
    return lines[:5] + tail


TAMPERS = [
    pytest.param(edit_field, 5, "altered", id="edit_field"),
    pytest.param(edit_decision_bytes, 5, "altered", id="edit_bytes"),
    pytest.param(delete_line, 5, "missing", id="delete_line"),
    pytest.param(delete_two_lines, 5, "2 line(s) missing", id="delete_two_lines"),
    pytest.param(insert_forged, 5, "inserted", id="insert_forged"),
    pytest.param(duplicate_line, 5, "inserted", id="duplicate_line"),
    pytest.param(swap_adjacent, 5, "missing or moved", id="swap_adjacent"),
    pytest.param(swap_distant, 3, "missing or moved", id="swap_distant"),
    pytest.param(move_line_later, 5, "missing or moved", id="move_line_later"),
    pytest.param(edit_seq, 5, "missing or moved", id="edit_seq"),
    pytest.param(truncate_last, 10, "truncated", id="truncate_last_line"),
    pytest.param(drop_last_newline, 10, "truncated", id="drop_last_newline"),
    pytest.param(blank_line, 7, "not an audit line", id="blank_line"),
    pytest.param(restart_chain, 6, "new chain", id="restart_chain"),
]


def test_untouched_log_verifies(write_log: WriteLog, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(10)
    result = verify_files([str(path)])
    assert result.ok and result.lines == 10 and result.anchored
    assert result.head == line_hash(read_lines(path)[-1])
    assert audit_verify_main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "OK: 10 lines in 1 files"
    assert out[1] == f"head: seq 10 sha256 {result.head}"


@pytest.mark.parametrize(("tamper", "bad_line", "problem"), TAMPERS)
def test_tampering_names_first_broken_line(
    write_log: WriteLog, capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Lines], Lines], bad_line: int, problem: str,
) -> None:
    path = write_log(10)
    path.write_bytes(b"".join(tamper(read_lines(path))))
    result = verify_files([str(path)])
    assert not result.ok
    assert (result.first_bad_file, result.first_bad_line) == (str(path), bad_line)
    assert problem in (result.problem or "")
    assert audit_verify_main([str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"BROKEN: {path}:{bad_line}: ")


def test_gateway_cli_audit_verify(write_log: WriteLog, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    path = write_log(10)
    assert main(["audit", "verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("OK: 10 lines in 1 files\n")
    lines = read_lines(path)
    del lines[2]
    path.write_bytes(b"".join(lines))
    assert main(["audit", "verify", str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"BROKEN: {path}:3: seq jumps from 2 to 4")


def test_first_line_deleted_is_caught_only_when_genesis_required(write_log: WriteLog) -> None:
    path = write_log(10)
    path.write_bytes(b"".join(read_lines(path)[1:]))
    # Without the genesis requirement this looks like a chain whose oldest files rotated away.
    loose = verify_files([str(path)])
    assert loose.ok and not loose.anchored and loose.first_seq == 2
    strict = verify_files([str(path)], require_genesis=True)
    assert (strict.ok, strict.first_bad_line) == (False, 1)
    assert audit_verify_main(["--from-genesis", str(path)]) == 1


def test_rotation_keeps_one_chain_across_files(write_log: WriteLog, tmp_path: Path) -> None:
    path = write_log(60, max_bytes=2048, backups=50)
    chain = discover_chain(str(path))
    assert len(chain) >= 4 and chain[-1] == str(path) and chain[-2] == f"{path}.1"
    for name in chain:
        assert os.path.getsize(name) <= 2048
    result = verify_files(chain)
    assert result.ok and result.lines == 60 and result.files == len(chain) and result.anchored
    # The first line of each newer file chains to the last line of the older one.
    for older, newer in zip(chain, chain[1:], strict=False):
        assert json.loads(read_lines(Path(newer))[0])["prev"] == line_hash(read_lines(Path(older))[-1])


def test_tampering_across_rotated_files(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=50)
    chain = discover_chain(str(path))
    middle = Path(chain[1])
    lines = read_lines(middle)
    lines[-1] = lines[-1].replace(b'"status":201', b'"status":404')
    middle.write_bytes(b"".join(lines))
    result = verify_files(chain)
    assert (result.first_bad_file, result.first_bad_line) == (str(middle), len(lines))


def test_deleted_rotated_file_is_a_gap(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=50)
    chain = discover_chain(str(path))
    os.unlink(chain[1])
    result = verify_files(discover_chain(str(path)))
    assert (result.first_bad_file, result.first_bad_line) == (chain[2], 1)
    assert "missing" in (result.problem or "")


def test_dropped_backups_leave_an_unanchored_but_valid_chain(write_log: WriteLog) -> None:
    path = write_log(60, max_bytes=2048, backups=2)
    chain = discover_chain(str(path))
    assert chain == [f"{path}.2", f"{path}.1", str(path)]
    result = verify_files(chain)
    assert result.ok and not result.anchored and (result.first_seq or 0) > 1


def test_discover_chain_orders_numerically(tmp_path: Path) -> None:
    base = tmp_path / "audit.log"
    for name in ("audit.log", "audit.log.1", "audit.log.2", "audit.log.10", "audit.log.lock",
                 "audit.log.bak", "other.log.1"):
        (tmp_path / name).write_text("")
    assert discover_chain(str(base)) == [f"{base}.10", f"{base}.2", f"{base}.1", str(base)]
    assert discover_chain(str(tmp_path / "missing.log")) == []


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        pytest.param([], 2, id="no_file"),
        pytest.param(["/nonexistent/audit.log"], 2, id="missing_file"),
        pytest.param(["--bogus", "x"], 2, id="unknown_flag"),
    ],
)
def test_cli_usage_errors(argv: list[str], code: int) -> None:
    assert audit_verify_main(argv) == code
