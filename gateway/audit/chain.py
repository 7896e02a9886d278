"""Keyed, chained JSON lines and the sinks that append them.

Every line is one JSON object followed by `\\n`:

    {"seq":7,"prev":"<mac of line 6>","kid":"k1",...record...,"mac":"<hex>"}

`mac` is the HMAC-SHA-256 (key `kid`, see `keys.py`) of the line's bytes without the `,"mac":...`
part, so it covers the content, the seq and the previous line's MAC. The first line of a fresh
chain has `prev` = 64 zeros and `seq` = 1. Without the key nobody can produce a line that
verifies, so an edited, inserted or re-chained line is caught even by an attacker who knows the
scheme; what the chain alone cannot show, the end being cut off, the checkpoints show
(`checkpoints.py`).

The sinks: `StreamSink` here (stdout), `FileSink` in `filesink.py` (shared file, rotation,
checkpoints).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from gateway.audit.keys import LINE, AuditKeys
from gateway.logs import write_lines

GENESIS = "0" * 64
_TAIL_CHUNK = 8192
_MAC_TAIL = re.compile(rb',"mac":"([0-9a-f]{64})"\}\n\Z')
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _dumps(obj: dict[str, Any]) -> bytes:
    # ensure_ascii: the line's bytes do not depend on anyone's locale or terminal.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def seal(body: bytes, mac: str) -> bytes:
    """`{...}` + its MAC -> `{...,"mac":"..."}\\n`."""
    return body[:-1] + b',"mac":"' + mac.encode() + b'"}\n'


def unseal(line: bytes) -> tuple[bytes, str] | None:
    """The signed body and the MAC of a sealed line, or None when it is not one."""
    m = _MAC_TAIL.search(line)
    if m is None:
        return None
    return line[: m.start()] + b"}", m.group(1).decode()


def encode_line(record: dict[str, Any], seq: int, prev: str, keys: AuditKeys) -> tuple[bytes, str]:
    """The sealed line and its MAC (the next line's `prev`)."""
    body = _dumps({"seq": seq, "prev": prev, "kid": keys.active.kid, **record})
    mac = keys.sign(LINE, body)
    return seal(body, mac), mac


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """A structurally valid audit line (its MAC not yet checked)."""

    seq: int
    prev: str
    kid: str
    mac: str
    body: bytes
    event: str | None


def parse_line(raw: bytes) -> ParsedLine | None:
    sealed = unseal(raw)
    if sealed is None:
        return None
    body, mac = sealed
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    seq, prev, kid, event = obj.get("seq"), obj.get("prev"), obj.get("kid"), obj.get("event")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev) or not isinstance(kid, str):
        return None
    return ParsedLine(seq, prev, kid, mac, body, event if isinstance(event, str) else None)


def verify_line(line: ParsedLine, keys: AuditKeys) -> bool | None:
    """True / False; None when the line names a key id we do not hold."""
    return keys.check(LINE, line.body, line.kid, line.mac)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the next line attaches: its `seq` is `seq + 1`, its `prev` is `prev`."""

    seq: int
    prev: str


FRESH = ChainHead(0, GENESIS)


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

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """Keyed chained lines to a stream (stdout). The chain lives in this process only and restarts
    with the process; with several workers their lines interleave, so use a file for evidence."""

    def __init__(self, stream: BinaryIO, keys: AuditKeys) -> None:
        self._stream = stream
        self._keys = keys
        self._head = FRESH

    def write(self, records: list[dict[str, Any]]) -> None:
        head, out = self._head, []
        for record in records:
            line, mac = encode_line(record, head.seq + 1, head.prev, self._keys)
            out.append(line)
            head = ChainHead(head.seq + 1, mac)
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (tests: BytesIO)
            fd = None
        if fd is None:
            self._stream.write(b"".join(out))
        else:
            self._stream.flush()
            write_lines(fd, out)  # whole lines, never interleaved with another worker's
        self._stream.flush()
        self._head = head

    def checkpoint(self) -> None:
        """No checkpoints for a stream: whoever collects it keeps the order."""

    def close(self) -> None:
        self._stream.flush()
