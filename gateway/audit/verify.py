"""`gateway audit verify FILE`: find the first line that breaks the hash chain.

Reads the files oldest -> newest as one stream. For each line it checks, in order: a complete
line (ends with a newline) of valid JSON with an integer `seq` and a 64-hex `prev`; then `seq` is
the previous seq + 1 and `prev` is the SHA-256 of the previous line. When both break, the seq
tells which line to blame:

- edited line k            -> line k+1's prev does not match            -> blames k
- deleted line(s) before k -> seq jumps forward at k                    -> blames k
- forged line inserted at k (own prev right, next line's prev not)
                           -> line k+1's seq goes back, prev mismatch   -> blames k
- lines k and m swapped    -> seq jumps forward at k                    -> blames k
- last line cut short      -> no newline / not JSON                     -> blames it

What a chain alone cannot show: lines removed from the *end* (record the printed head hash
elsewhere, e.g. ship it to your log store, to detect that), and a chain whose oldest files were
rotated away (its first line does not start at the genesis hash; reported, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass

from gateway.audit.chain import GENESIS, line_hash

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify_files`: ok, or where the chain first breaks and why."""

    ok: bool
    first_bad_file: str | None = None
    first_bad_line: int | None = None
    problem: str | None = None
    lines: int = 0
    files: int = 0
    anchored: bool = True  # the chain starts at the genesis hash (nothing rotated away)
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None  # SHA-256 of the last line: what the next line's prev must be


def discover_chain(path: str) -> list[str]:
    """`path.N ... path.2, path.1, path`: the existing files of one chain, oldest first."""
    directory = os.path.dirname(path) or "."
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.(\d+)")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    rotated = sorted(
        ((int(m.group(1)), name) for name in names if (m := pattern.fullmatch(name))), reverse=True
    )
    out = [os.path.join(directory, name) for _, name in rotated]
    if os.path.exists(path):
        out.append(path)
    return out


def verify_files(paths: list[str], *, require_genesis: bool = False) -> VerifyResult:
    """Verify one chain spread over `paths` (oldest -> newest). With `require_genesis` the
    first line must start the chain (nothing rotated away), which also catches a deleted head."""
    prev_loc: tuple[str, int] | None = None
    prev_hash, prev_seq = GENESIS, 0
    first_seq: int | None = None
    anchored, count = True, 0

    def bad(loc: tuple[str, int], problem: str) -> VerifyResult:
        return VerifyResult(False, loc[0], loc[1], problem, count, len(paths), anchored, first_seq)

    for path in paths:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                here = (path, lineno)
                if not raw.endswith(b"\n"):
                    return bad(here, "line is truncated (no trailing newline)")
                seq, prev = _fields(raw)
                if seq is None or prev is None:
                    return bad(here, "not an audit line (need JSON with integer seq and hex prev)")
                if prev_loc is None:  # first line of the whole chain
                    first_seq = seq
                    if prev == GENESIS and seq != 1:
                        return bad(here, f"chain starts at the genesis hash with seq {seq}, not 1")
                    anchored = prev == GENESIS
                    if require_genesis and not anchored:
                        return bad(here, "chain does not start at the genesis hash: earlier lines missing")
                else:
                    problem = _link(prev_loc, here, prev_seq, prev_hash, seq, prev)
                    if problem is not None:
                        return bad(*problem)
                prev_loc, prev_hash, prev_seq = here, line_hash(raw), seq
                count += 1
    last = prev_seq if prev_loc else None
    return VerifyResult(True, None, None, None, count, len(paths), anchored, first_seq, last,
                        prev_hash if prev_loc else None)


def _link(
    prev_loc: tuple[str, int], here: tuple[str, int], prev_seq: int, prev_hash: str, seq: int, prev: str
) -> tuple[tuple[str, int], str] | None:
    """None if `here` follows `prev_loc`; else (line to blame, why)."""
    expected = prev_seq + 1
    if seq == expected and prev == prev_hash:
        return None
    if prev == GENESIS:
        return here, "a new chain starts here (prev is the genesis hash): earlier lines were removed"
    if seq > expected:
        missing = seq - expected
        return here, f"seq jumps from {prev_seq} to {seq}: {missing} line(s) missing or moved before this"
    if seq == expected:
        return prev_loc, f"line altered: its hash does not match prev of the next line (seq {seq})"
    if prev == prev_hash:
        return here, f"seq goes back from {prev_seq} to {seq}"
    return prev_loc, f"line inserted or altered: the next line has seq {seq} and does not chain to it"


def _fields(raw: bytes) -> tuple[int | None, str | None]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    seq, prev = obj.get("seq"), obj.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool):
        seq = None
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        prev = None
    return seq, prev


def audit_verify_main(argv: list[str]) -> int:
    """`gateway audit verify FILE [FILE ...]`. argv is what follows `audit`, with or without the
    leading `verify` (pass `./verify` for a file of that name). Exit 0 OK, 1 broken, 2 usage or
    unreadable file. One FILE means its whole rotated set (FILE.N ... FILE.1, FILE)."""
    if argv[:1] == ["verify"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="gateway audit verify",
        description="Check the SHA-256 chain of audit log files and name the first broken line.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="the live audit file (its rotated files are found), or files oldest first")
    parser.add_argument("--only", action="store_true", help="verify exactly the files given")
    parser.add_argument("--from-genesis", action="store_true",
                        help="fail unless the chain starts at its first line (no rotated-away files)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    files: list[str] = args.files
    paths = files if (args.only or len(files) > 1) else discover_chain(files[0])
    if not paths:
        print(f"gateway audit verify: {files[0]}: no such file", file=sys.stderr)
        return 2
    try:
        result = verify_files(paths, require_genesis=args.from_genesis)
    except OSError as exc:
        print(f"gateway audit verify: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"BROKEN: {result.first_bad_file}:{result.first_bad_line}: {result.problem}")
        return 1
    print(f"OK: {result.lines} lines in {result.files} files")
    if result.lines and not result.anchored:
        print(f"note: the chain starts at seq {result.first_seq}; older files were rotated away")
    if result.head:
        print(f"head: seq {result.last_seq} sha256 {result.head}")
    return 0
