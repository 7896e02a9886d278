"""Hash-chained JSON lines and the sinks that append them.

Every line is one JSON object followed by `\\n`. It carries `seq` (1, 2, 3, ... along the chain)
and `prev`, the hex SHA-256 of the previous line's exact bytes *including* its newline, so
`tail -n1 audit.log | sha256sum` prints what the next line's `prev` will be. The first line of a
fresh chain has `prev` = 64 zeros and `seq` = 1.

The sinks: `StreamSink` here (stdout), `FileSink` in `filesink.py` (shared file, rotation).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

GENESIS = "0" * 64
_TAIL_CHUNK = 8192


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def encode_line(record: dict[str, Any], seq: int, prev: str) -> bytes:
    body = {"seq": seq, "prev": prev, **record}
    # ensure_ascii: the line's bytes do not depend on anyone's locale or terminal.
    return (json.dumps(body, separators=(",", ":"), ensure_ascii=True, default=str) + "\n").encode()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the next line attaches: its `seq` is `seq + 1`, its `prev` is `prev`."""

    seq: int
    prev: str


FRESH = ChainHead(0, GENESIS)


def head_after(line: bytes) -> ChainHead:
    """The head after `line` (a complete line). An unparsable line keeps its hash; seq restarts."""
    try:
        seq = json.loads(line)["seq"]
    except (ValueError, TypeError, KeyError):
        seq = None
    return ChainHead(seq if isinstance(seq, int) and not isinstance(seq, bool) else 0, line_hash(line))


def read_last_line(path: str) -> bytes | None:
    """The last line of `path` with whatever bytes it has (maybe no newline), or None if empty."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        pos, buf = end, b""
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut >= 0:
                return buf[cut + 1 :]
        return buf


class Sink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """Chained lines to a stream (stdout). The chain lives in this process only and restarts
    with the process; with several workers their lines interleave, so use a file for evidence."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._head = FRESH

    def write(self, records: list[dict[str, Any]]) -> None:
        head, out = self._head, []
        for record in records:
            line = encode_line(record, head.seq + 1, head.prev)
            out.append(line)
            head = ChainHead(head.seq + 1, line_hash(line))
        self._stream.write(b"".join(out))
        self._stream.flush()
        self._head = head

    def close(self) -> None:
        self._stream.flush()
