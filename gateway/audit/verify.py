"""`gateway audit verify FILE`: check the keyed chain and compare it with the signed checkpoints.

Reads the files oldest -> newest as one stream and reports every problem it finds (the first
one is the one to look at):

- a line that is torn, not an audit line, or whose MAC does not verify with `GATEWAY_AUDIT_KEY`
  (edited, forged, or written with another key: a re-keyed rewrite fails on its first line);
- a line that does not follow the previous one (seq jumps: lines deleted or moved; seq goes
  back: a line duplicated or inserted; prev is the genesis: earlier lines removed);
- an `audit.segment` line: the writer itself found its file cut back or doctored and started a
  new segment; the lost seq range is named;
- against the checkpoints (`GATEWAY_AUDIT_CHECKPOINTS`, default `FILE.checkpoints`, and with
  `--redis` the copies in Redis): a checkpoint beyond the end of the log (the tail was cut off),
  a checkpointed seq holding another MAC (the log was rolled back or rewritten), a checkpoint that
  does not verify or a gap in their chain (the checkpoint file was edited).

Lines after the last checkpoint are reported as "unanchored" (a warning: normally the last few
seconds; `--strict` makes it an error), as is a chain whose oldest files were rotated away.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.chain import GENESIS, ParsedLine, parse_line, verify_line
from gateway.audit.checkpoints import Checkpoint, check_checkpoint, read_checkpoints, read_redis_checkpoints
from gateway.audit.keys import AuditKeyError, AuditKeys

MAX_FINDINGS = 50


@dataclass(frozen=True)
class Finding:
    """One problem (or, with fatal=False, a warning) and where it is."""

    kind: str  # line | link | segment | truncated | rollback | missing | checkpoint | unanchored
    message: str
    file: str | None = None
    line: int | None = None
    fatal: bool = True

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        return f"{where}{self.message}"


@dataclass
class VerifyResult:
    """Outcome of `verify_files`."""

    findings: list[Finding] = field(default_factory=list)
    lines: int = 0
    files: int = 0
    anchored: bool = True  # the chain starts at the genesis (nothing rotated away)
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None  # MAC of the last line: what the next line's prev must be
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    unanchored: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.fatal]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def first_bad_file(self) -> str | None:
        return self.errors[0].file if self.errors else None

    @property
    def first_bad_line(self) -> int | None:
        return self.errors[0].line if self.errors else None

    @property
    def problem(self) -> str | None:
        return self.errors[0].message if self.errors else None

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.errors}


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


def verify_files(paths: list[str], keys: AuditKeys | None = None, *, checkpoints: list[bytes] | None = None,
                 log_name: str | None = None, require_genesis: bool = False,
                 strict: bool = False) -> VerifyResult:
    """Verify one chain spread over `paths` (oldest -> newest) with `keys`, and compare it with
    `checkpoints` (raw checkpoint lines, oldest first) of the log named `log_name`."""
    keys = keys if keys is not None else AuditKeys.parse(None)
    res = VerifyResult(files=len(paths))
    cp_res = VerifyResult()
    cps = _check_checkpoints(checkpoints or [], keys, cp_res)
    res.checkpoints = cp_res.checkpoints
    log_name = log_name or (os.path.basename(paths[-1]) if paths else "")
    mine = [cp for cp in cps if cp.log == log_name]
    wanted = {cp.seq for cp in mine}
    macs: dict[int, set[str]] = {}
    prev: tuple[int, str] | None = None  # seq and MAC of the previous well-formed line
    started = False

    def add(f: Finding) -> None:
        if len(res.findings) < MAX_FINDINGS:
            res.findings.append(f)

    for path in paths:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    add(Finding("line", "line is truncated (no trailing newline)", path, lineno))
                    prev = None
                    continue
                p = parse_line(raw)
                if p is None:
                    add(Finding("line", "not an audit line (need JSON with seq, prev, kid and a trailing mac)",
                                path, lineno))
                    prev = None
                    continue
                good = verify_line(p, keys)
                if good is None:
                    add(Finding("line", f"key id {p.kid!r} is not among the keys given (GATEWAY_AUDIT_KEY): "
                                        "written with another key", path, lineno))
                elif not good:
                    add(Finding("line", "MAC does not verify: the line was altered, or written with another key",
                                path, lineno))
                if p.event == "audit.segment" and good:
                    # Always a problem: the writer found its file cut back or doctored.
                    add(Finding("segment", _segment_message(p), path, lineno))
                    if not started:
                        started, res.first_seq, res.anchored = True, p.seq, False
                elif not started:
                    started = True
                    res.first_seq = p.seq
                    res.anchored = p.prev == GENESIS
                    if p.prev == GENESIS and p.seq != 1:
                        add(Finding("link", f"chain starts at the genesis with seq {p.seq}, not 1", path, lineno))
                    elif require_genesis and not res.anchored:
                        add(Finding("link", "chain does not start at the genesis: earlier lines missing",
                                    path, lineno))
                elif prev is not None and not (p.seq == prev[0] + 1 and p.prev == prev[1]):
                    add(Finding("link", _link_message(prev[0], p), path, lineno))
                if p.seq in wanted:
                    macs.setdefault(p.seq, set()).add(p.mac)
                prev = (p.seq, p.mac)
                res.lines += 1
                res.last_seq, res.head = p.seq, p.mac
    for f in cp_res.findings:
        add(f)
    _compare(res, mine, macs, add, strict)
    return res


def _segment_message(p: ParsedLine) -> str:
    obj: dict[str, Any] = json.loads(p.body)
    reason, found, cp_seq = obj.get("reason"), obj.get("found_seq"), obj.get("checkpoint_seq")
    lost = f"; seq {found + 1}..{cp_seq} are lost" if isinstance(found, int) and isinstance(cp_seq, int) \
        and cp_seq > found else ""
    return (f"the writer found the log {reason} at {obj.get('time')} (it ended at seq {found}, the last "
            f"checkpoint #{obj.get('checkpoint')} had seq {cp_seq}) and started a new segment here{lost}")


def _link_message(prev_seq: int, p: ParsedLine) -> str:
    if p.prev == GENESIS:
        return "a new chain starts here (prev is the genesis): earlier lines were removed"
    if p.seq > prev_seq + 1:
        return f"seq jumps from {prev_seq} to {p.seq}: {p.seq - prev_seq - 1} line(s) missing or moved before this"
    if p.seq <= prev_seq:
        return f"seq goes back from {prev_seq} to {p.seq}: a line duplicated, inserted or moved here"
    return "does not chain to the previous line: lines missing, moved or replaced before this"


def _check_checkpoints(lines: list[bytes], keys: AuditKeys, res: VerifyResult) -> list[Checkpoint]:
    """Verified checkpoints, in order; findings for forged ones and gaps in their chain."""
    out: list[Checkpoint] = []
    seen: dict[int, Checkpoint] = {}
    last: Checkpoint | None = None
    for n, raw in enumerate(lines, start=1):
        cp = check_checkpoint(raw, keys)
        if cp is None:
            res.findings.append(Finding("checkpoint", f"checkpoint {n} does not verify (altered, forged, or "
                                                      "signed with another key)"))
            last = None
            continue
        if cp.cp in seen:
            if seen[cp.cp].sig != cp.sig:
                res.findings.append(Finding("checkpoint", f"two different checkpoints #{cp.cp}"))
            continue  # the same checkpoint from the file and from Redis
        if last is not None and (cp.cp != last.cp + 1 or cp.prev != last.sig):
            res.findings.append(Finding("checkpoint", f"checkpoint chain broken before #{cp.cp} (after #{last.cp}):"
                                                      " checkpoints removed, inserted or reordered"))
        seen[cp.cp] = cp
        out.append(cp)
        last = cp
    res.checkpoints = len(out)
    return out


def _compare(res: VerifyResult, cps: list[Checkpoint], macs: dict[int, set[str]], add: Any, strict: bool) -> None:
    last_seq, first_seq = res.last_seq, res.first_seq
    beyond = [cp for cp in cps if last_seq is None or cp.seq > last_seq]
    if beyond:
        cp = max(beyond, key=lambda c: c.seq)
        add(Finding("truncated", f"tail truncated: checkpoint #{cp.cp} ({cp.time}) recorded seq {cp.seq}, "
                                 f"but the log ends at seq {last_seq}"))
    for cp in cps:
        if cp in beyond or first_seq is None or cp.seq < first_seq:
            continue  # beyond the end (reported) or rotated away (cannot be checked)
        found = macs.get(cp.seq)
        if not found:
            add(Finding("missing", f"checkpoint #{cp.cp} ({cp.time}) recorded seq {cp.seq}, which is not in the log"))
        elif cp.mac not in found:
            add(Finding("rollback", f"rollback or rewrite: checkpoint #{cp.cp} ({cp.time}) recorded seq {cp.seq} "
                                    "with another MAC than the log's line at that seq"))
    anchored_cps = [cp for cp in cps if cp not in beyond]
    if anchored_cps:
        top = max(anchored_cps, key=lambda c: c.seq)
        res.last_checkpoint = top
        res.unanchored = (last_seq or 0) - top.seq
        if res.unanchored > 0:
            add(Finding("unanchored", f"{res.unanchored} line(s) after the last checkpoint (#{top.cp}, seq {top.seq}, "
                                      f"{top.time}) are unanchored: cutting them off would not be detected",
                        fatal=strict))
    elif res.lines:
        res.unanchored = res.lines
        add(Finding("unanchored", "no checkpoint covers this log: all lines are unanchored (a cut tail or a "
                                  "rollback cannot be detected)", fatal=strict))


def audit_verify_main(argv: list[str]) -> int:
    """`gateway audit verify FILE [FILE ...]`. argv is what follows `audit`, with or without the
    leading `verify` (pass `./verify` for a file of that name). Exit 0 OK, 1 broken, 2 usage or
    unreadable file. One FILE means its whole rotated set (FILE.N ... FILE.1, FILE)."""
    if argv[:1] == ["verify"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="gateway audit verify",
        description="Check the keyed chain of audit log files against its signed checkpoints. The key is "
                    "read from GATEWAY_AUDIT_KEY, the checkpoints from GATEWAY_AUDIT_CHECKPOINTS "
                    "(default FILE.checkpoints).",
    )
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="the live audit file (its rotated files are found), or files oldest first")
    parser.add_argument("--only", action="store_true", help="verify exactly the files given")
    parser.add_argument("--from-genesis", action="store_true",
                        help="fail unless the chain starts at its first line (no rotated-away files)")
    parser.add_argument("--checkpoints", metavar="PATH", help="checkpoint file (overrides the variable)")
    parser.add_argument("--redis", metavar="URL", help="also read the checkpoints kept in this Redis")
    parser.add_argument("--strict", action="store_true", help="unanchored lines are an error")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        keys = AuditKeys.parse(os.environ.get("GATEWAY_AUDIT_KEY"))
    except AuditKeyError as exc:
        print(f"gateway audit verify: {exc}", file=sys.stderr)
        return 2
    files: list[str] = args.files
    paths = files if (args.only or len(files) > 1) else discover_chain(files[0])
    if not paths:
        print(f"gateway audit verify: {files[0]}: no such file", file=sys.stderr)
        return 2
    cp_path = args.checkpoints or os.environ.get("GATEWAY_AUDIT_CHECKPOINTS") or f"{files[-1]}.checkpoints"
    try:
        cp_lines = read_checkpoints(cp_path) if os.path.exists(cp_path) else []
        if args.checkpoints and not os.path.exists(cp_path):
            raise FileNotFoundError(f"{cp_path}: no such file")
        if args.redis:
            # The gateway's own rules: redis-py alone reads a malformed database ('/abc') as db 0,
            # so a typo would verify against no checkpoints and say OK.
            from gateway.settings import redis_url_problem

            if problem := redis_url_problem(args.redis, "--redis"):
                print(f"gateway audit verify: {problem}", file=sys.stderr)
                return 2
            cp_lines += read_redis_checkpoints(args.redis, os.path.basename(files[-1]))
        result = verify_files(paths, keys, checkpoints=cp_lines, log_name=os.path.basename(files[-1]),
                              require_genesis=args.from_genesis, strict=args.strict)
    except OSError as exc:
        print(f"gateway audit verify: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Redis unreachable and the like: a clear line, not a traceback
        print(f"gateway audit verify: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if keys.development:
        print("note: GATEWAY_AUDIT_KEY is not set; verifying with the development key")
    for f in result.errors:
        print(f"BROKEN: {f}")
    if result.ok:
        print(f"OK: {result.lines} lines in {result.files} files, {result.checkpoints} checkpoints")
    for f in result.findings:
        if not f.fatal:
            print(f"warning: {f}")
    if result.lines and not result.anchored:
        print(f"note: the chain starts at seq {result.first_seq}; older files were rotated away")
    if result.head:
        print(f"head: seq {result.last_seq} mac {result.head}")
    return 0 if result.ok else 1
