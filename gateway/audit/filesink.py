"""Chained lines appended to a shared, size-rotated file.

Several processes, one chain: every worker process appends to the same file under an exclusive
`flock` on `{path}.lock`. Under the lock a writer checks whether the file is still the one it
wrote last (same inode, same size); if another process wrote or rotated meanwhile, it re-reads
the last line to find the chain head. So there is one file set and one chain per `path`, it
continues across restarts, and `verify` needs no merging. (Local filesystems only: `flock` on
NFS is not reliable.)

Rotation happens under the same lock: `path` -> `path.1` -> ... -> `path.{backups}` (the oldest
is discarded). The chain is not reset: the first line of the new `path` carries the MAC of the
last line of `path.1`.

Checkpoints (`checkpoints.py`) are written under the same lock. Whenever the writer (re)reads the
head of the file, it compares it with the last checkpoint: a file that ends before the
checkpointed seq (cut, deleted, restored from an old copy), ends at that seq with another MAC,
or ends in a line that does not verify, is never continued silently. The writer starts a new
*segment*: an `audit.segment` line chained to the last checkpoint (not to the doctored file),
naming what it found; `on_segment` logs it at error level and counts it. `verify` reports the
gap. Without a checkpoint to compare with, an unverifiable last line still starts a segment.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gateway.audit.chain import FRESH, GENESIS, ChainHead, encode_line, parse_line, read_last_line, verify_line
from gateway.audit.checkpoints import CheckpointWriter
from gateway.audit.keys import AuditKeys
from gateway.audit.records import rfc3339_now
from gateway.logs import write_all


@dataclass(slots=True)
class _Seen:
    ino: int
    size: int
    head: ChainHead


class FileSink:
    """Chained lines appended to `path`, shared by processes through `flock`, size-rotated."""

    def __init__(self, path: str, max_bytes: int, backups: int, keys: AuditKeys,
                 checkpoints: CheckpointWriter | None = None,
                 on_segment: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.keys = keys
        self.checkpoints = checkpoints
        self.on_segment = on_segment
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock_path = f"{path}.lock"
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._seen: _Seen | None = None  # what this process left behind after its last write

    def open(self) -> None:
        """Fail now, at startup, if the file cannot be created."""
        with self._locked():
            self._current()

    def write(self, records: list[dict[str, Any]]) -> None:
        try:
            with self._locked():
                self._append(records)
        except BaseException:
            self._reset()  # never trust a cached head after a failure
            raise

    def checkpoint(self) -> None:
        """Record the current head in the checkpoint file (and Redis), if it moved."""
        if self.checkpoints is None:
            return
        with self._locked():
            fd, st = self._current()
            head, segment = self._head(fd, st)
            if segment is not None:
                self._append_lines(fd, [segment], head)
            if head.seq == 0:
                return
            line = self.checkpoints.append(head.seq, head.prev, rfc3339_now())
        if line is not None:
            self.checkpoints.ship(line)

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()
        self._reset()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _append(self, records: list[dict[str, Any]]) -> None:
        fd, st = self._current()
        head, segment = self._head(fd, st)
        size = os.fstat(fd).st_size
        pending: list[bytes] = []
        if segment is not None:
            pending.append(segment)
            size += len(segment)
        for record in records:
            line, mac = encode_line(record, head.seq + 1, head.prev, self.keys)
            if size > 0 and size + len(line) > self.max_bytes:
                write_all(fd, b"".join(pending))
                pending = []
                fd = self._rotate()
                size = 0
            pending.append(line)
            size += len(line)
            head = ChainHead(head.seq + 1, mac)
        write_all(fd, b"".join(pending))
        self._seen = _Seen(os.fstat(fd).st_ino, size, head)

    def _append_lines(self, fd: int, lines: list[bytes], head: ChainHead) -> None:
        write_all(fd, b"".join(lines))
        self._seen = _Seen(os.fstat(fd).st_ino, os.fstat(fd).st_size, head)

    def _current(self) -> tuple[int, os.stat_result]:
        """Our fd on the file now at `path` (reopened if someone rotated or removed it)."""
        try:
            on_disk: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        if self._fd is not None and on_disk is not None and _same(os.fstat(self._fd), on_disk):
            return self._fd, on_disk
        self._reset()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return self._fd, os.fstat(self._fd)

    def _head(self, fd: int, st: os.stat_result) -> tuple[ChainHead, bytes | None]:
        """Where the next line attaches, and the segment line to write first (if any)."""
        seen = self._seen
        if seen is not None and seen.ino == st.st_ino and seen.size == st.st_size:
            return seen.head, None
        found, verified = self._read_head(fd)
        expected = self.checkpoints.last() if self.checkpoints is not None else None
        reason = None
        if not verified:
            reason = "unverifiable_tail"
        elif expected is not None and found.seq < expected.seq:
            reason = "truncated"
        elif expected is not None and found.seq == expected.seq and found.prev != expected.mac:
            reason = "rolled_back"
        if reason is None:
            return found, None
        # Never continue silently from a doctored file: chain to the last checkpoint (what we
        # know was written), or start afresh when there is none, and say so in the log itself.
        base = ChainHead(expected.seq, expected.mac) if expected is not None and expected.seq >= found.seq \
            else ChainHead(found.seq, GENESIS)
        event: dict[str, Any] = {
            "time": rfc3339_now(), "event": "audit.segment", "reason": reason,
            "found_seq": found.seq, "found_mac": found.prev if verified else None,
            "checkpoint": expected.cp if expected else None,
            "checkpoint_seq": expected.seq if expected else None,
            "checkpoint_time": expected.time if expected else None,
        }
        line, mac = encode_line(event, base.seq + 1, base.prev, self.keys)
        if self.on_segment is not None:
            try:
                self.on_segment(event)
            except Exception:  # noqa: S110 - a hook must not stop the audit
                pass
        return ChainHead(base.seq + 1, mac), line

    def _read_head(self, fd: int) -> tuple[ChainHead, bool]:
        """The head the file claims, and whether its last line verifies with our keys."""
        last, in_current = read_last_line(self.path), True
        if last is None:  # empty file: just rotated, so the chain continues from `path.1`
            last, in_current = read_last_line(f"{self.path}.1"), False
            if last is None:
                return FRESH, True
        if not last.endswith(b"\n"):
            # A torn last line (crash mid-write, or tampering): terminate it so it stays a
            # visible, unverifiable line instead of being glued to the next record.
            if in_current:
                write_all(fd, b"\n")
            last += b"\n"
        parsed = parse_line(last)
        if parsed is None:
            return ChainHead(0, GENESIS), False
        return ChainHead(parsed.seq, parsed.mac), bool(verify_line(parsed, self.keys))

    def _rotate(self) -> int:
        self._reset()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        fd, _ = self._current()
        return fd

    def _reset(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        self._seen = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        while True:
            if self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                on_disk: os.stat_result | None = os.stat(self._lock_path)
            except FileNotFoundError:
                on_disk = None
            if on_disk is not None and _same(os.fstat(self._lock_fd), on_disk):
                break
            # The lock file was removed or replaced: a lock on it excludes nobody. Reopen.
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
