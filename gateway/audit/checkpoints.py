"""Signed checkpoints of the audit chain, kept apart from the log (`GATEWAY_AUDIT_CHECKPOINTS`).

A keyed chain still cannot show that its *end* was cut off, or that the whole file was rolled
back to an earlier copy: what is left verifies. So every N seconds and at shutdown the writer
appends a checkpoint, "the log `audit.log` had reached seq S with MAC M at time T", signed with
the audit key and chained to the previous checkpoint (the idea of CloudTrail's digest files and
RFC 5848's signature blocks). The file is meant to live on another volume, or to be shipped
elsewhere; with Redis configured each checkpoint also goes to a Redis stream, so one attacker
with one disk cannot rewind both.

    {"cp":12,"time":"...","log":"audit.log","seq":4711,"mac":"<head mac>","kid":"k1",
     "prev":"<sig of checkpoint 11>","sig":"<hex>"}

`verify` compares them with the log: a checkpoint beyond the end of the log is a truncated
tail; one whose seq holds another MAC is a rollback or rewrite; lines after the last checkpoint
are "unanchored" (normally the last few seconds).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from gateway.audit.chain import GENESIS, _dumps, read_last_line
from gateway.audit.keys import CHECKPOINT, AuditKeys

log = logging.getLogger("gateway.audit")
REDIS_STREAM = "gateway:audit:checkpoints"
REDIS_MAXLEN = 100_000
_SIG_TAIL = re.compile(rb',"sig":"([0-9a-f]{64})"\}\n?\Z')


@dataclass(frozen=True, slots=True)
class Checkpoint:
    cp: int
    time: str
    log: str
    seq: int
    mac: str
    kid: str
    prev: str
    sig: str
    raw: bytes


def encode_checkpoint(keys: AuditKeys, *, cp: int, time: str, log_name: str, seq: int, mac: str,
                      prev: str) -> bytes:
    body = _dumps({"cp": cp, "time": time, "log": log_name, "seq": seq, "mac": mac,
                   "kid": keys.active.kid, "prev": prev})
    return body[:-1] + b',"sig":"' + keys.sign(CHECKPOINT, body).encode() + b'"}\n'


def parse_checkpoint(raw: bytes) -> tuple[Checkpoint, bytes] | None:
    """A checkpoint and its signed body, or None when the line is not one."""
    m = _SIG_TAIL.search(raw)
    if m is None:
        return None
    body = raw[: m.start()] + b"}"
    try:
        obj: dict[str, Any] = json.loads(body)
    except ValueError:
        return None
    try:
        cp = Checkpoint(int(obj["cp"]), str(obj["time"]), str(obj["log"]), int(obj["seq"]), str(obj["mac"]),
                        str(obj["kid"]), str(obj["prev"]), m.group(1).decode(), raw.rstrip(b"\n") + b"\n")
    except (KeyError, TypeError, ValueError):
        return None
    return cp, body


def check_checkpoint(raw: bytes, keys: AuditKeys) -> Checkpoint | None:
    """The checkpoint if its signature verifies with one of `keys`, else None."""
    parsed = parse_checkpoint(raw)
    if parsed is None:
        return None
    cp, body = parsed
    return cp if keys.check(CHECKPOINT, body, cp.kid, cp.sig) else None


def last_checkpoint(path: str, keys: AuditKeys) -> Checkpoint | None:
    """The last checkpoint in `path` that verifies (None when there is none or it is forged)."""
    raw = read_last_line(path)
    if raw is None:
        return None
    return check_checkpoint(raw, keys)


class CheckpointWriter:
    """Appends checkpoints to a file and, when configured, to a Redis stream (best effort)."""

    def __init__(self, path: str, keys: AuditKeys, log_name: str, redis_url: str | None = None) -> None:
        self.path = path
        self.keys = keys
        self.log_name = log_name
        self.redis_url = redis_url
        self._redis: Any = None
        self.written = 0
        self.redis_failures = 0

    def last(self) -> Checkpoint | None:
        cp = last_checkpoint(self.path, self.keys)
        return cp if cp is not None and cp.log == self.log_name else None

    def append(self, seq: int, mac: str, time: str) -> bytes | None:
        """Checkpoint the head (seq, mac) unless the last checkpoint already says exactly that.
        Call with the log's lock held, so the head and the checkpoint chain are consistent."""
        raw_last = read_last_line(self.path)
        last = None
        if raw_last is not None:
            parsed = parse_checkpoint(raw_last)
            last = parsed[0] if parsed is not None else None
        if last is not None and last.log == self.log_name and (last.seq, last.mac) == (seq, mac):
            return None
        line = encode_checkpoint(self.keys, cp=(last.cp + 1) if last else 1, time=time,
                                 log_name=self.log_name, seq=seq, mac=mac,
                                 prev=last.sig if last else GENESIS)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            if raw_last is not None and not raw_last.endswith(b"\n"):
                os.write(fd, b"\n")  # a torn line stays a visible, separate line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.written += 1
        return line

    def ship(self, line: bytes) -> None:
        """Copy a checkpoint to the Redis stream; a failure is logged and counted, never raised."""
        if not self.redis_url:
            return
        try:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self._redis.xadd(stream_name(self.log_name), {"line": line}, maxlen=REDIS_MAXLEN, approximate=True)
        except Exception as exc:  # Redis is a second copy; the file is the first
            self.redis_failures += 1
            self._redis = None
            log.warning("audit checkpoint not shipped to Redis: %s", type(exc).__name__)

    def close(self) -> None:
        if self._redis is not None:
            try:
                self._redis.close()
            except Exception:  # noqa: S110 - closing
                pass
            self._redis = None


def read_checkpoints(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return [line for line in f if line.strip()]


def read_redis_checkpoints(url: str, log_name: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        entries: Any = client.xrange(stream_name(log_name))
        return [bytes(fields[b"line"]) for _id, fields in entries or [] if b"line" in fields]
    finally:
        client.close()


def stream_name(log_name: str) -> str:
    """One Redis stream per log name: give each replica's audit file its own name."""
    return f"{REDIS_STREAM}:{log_name}"
