"""The audit log of one process: a bounded queue in front of a writer thread.

The request path only calls `submit`, which never blocks and never raises: it sanitises the
record, stamps the time and `put_nowait`s it. A writer thread drains the queue in batches and
appends keyed, chained lines (`chain.py`), so file I/O, `flock` waits and rotation never run on
the event loop. The same thread writes a signed checkpoint every `checkpoint_interval` seconds
(`checkpoints.py`) and a last one at `close()`, which drains the queue completely: nothing
submitted before it is lost.

Failure policy (`on_failure`), decided by the operator:
- queue full (the sink cannot keep up): the record is dropped and counted in `dropped`
  (`gateway_audit_dropped_total`); `submit` returns False.
- sink error (disk full, directory gone, unwritable): the batch is retried once with freshly
  opened files, then counted in `failures` (`gateway_audit_failures_total`, one per failed
  batch or open) and `lost` (its records), and `healthy`
  turns False until a write succeeds again. Nothing is raised into the request path.
- with `on_failure="refuse"`, `refusing` is True while the sink is unhealthy or the queue is
  full; the pipeline must then refuse mutating requests (503) instead of serving them unaudited.
  With `"continue"` it serves and the metrics say what was lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from gateway.audit.chain import Sink, StreamSink
from gateway.audit.checkpoints import CheckpointWriter
from gateway.audit.filesink import FileSink
from gateway.audit.fold import DenialFolder
from gateway.audit.keys import AuditKeys
from gateway.audit.records import rfc3339_now, sanitize
from gateway.logs import take_batch

log = logging.getLogger("gateway.audit")

MiB = 1024 * 1024
_BATCH = 512
_STOP = object()

OnFailure = Literal["continue", "refuse"]


class AuditLog:
    """Tamper-evident audit trail: JSON lines, HMAC-chained, to a rotated file or stdout, with
    signed checkpoints kept apart."""

    def __init__(
        self,
        path: str | None,
        *,
        max_bytes: int = 50 * MiB,
        backups: int = 10,
        queue_size: int = 10000,
        on_failure: OnFailure = "continue",
        on_dropped: Callable[[int], None] | None = None,
        on_failed: Callable[[int], None] | None = None,
        keys: AuditKeys | None = None,
        checkpoints: str | None = None,
        checkpoint_interval: float = 30.0,
        redis_url: str | None = None,
        on_segment: Callable[[int], None] | None = None,
        fold: DenialFolder | None = None,
    ) -> None:
        if on_failure not in ("continue", "refuse"):
            raise ValueError(f"on_failure must be 'continue' or 'refuse', not {on_failure!r}")
        if max_bytes < 1024 or backups < 0 or queue_size < 1:
            raise ValueError("audit: max_bytes >= 1024, backups >= 0 and queue_size >= 1 required")
        if checkpoint_interval <= 0:
            raise ValueError("audit: checkpoint_interval must be > 0")
        self.path = path
        self.on_failure: OnFailure = on_failure
        self.keys = keys if keys is not None else AuditKeys.parse(None)
        self.checkpoint_interval = checkpoint_interval
        self._on_segment = on_segment
        self._fold = fold
        self.segments = 0
        self.checkpoints_path: str | None = None
        if path:
            self.checkpoints_path = checkpoints or f"{path}.checkpoints"
            writer = CheckpointWriter(self.checkpoints_path, self.keys, os.path.basename(path), redis_url)
            self._sink: Sink = FileSink(path, max_bytes, backups, self.keys, writer, self._segment_started)
        else:
            self._sink = StreamSink(sys.stdout.buffer, self.keys)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._on_dropped = on_dropped
        self._on_failed = on_failed
        self._thread: threading.Thread | None = None
        self._closed = False
        self._sink_ok = True
        # Counters (monotonic); the metrics layer exports them or is called through the hooks.
        self.written = 0
        self.dropped = 0
        self.failures = 0  # sink errors (a failed open, or a batch that failed twice)
        self.lost = 0  # records not written because of sink errors
        self.redactions = 0
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """The last write succeeded and the writer is running (or not started yet)."""
        writer_dead = self._thread is not None and not self._thread.is_alive() and not self._closed
        return self._sink_ok and not writer_dead

    @property
    def refusing(self) -> bool:
        """True when policy says mutating requests must be refused now."""
        return self.on_failure == "refuse" and (not self.healthy or self._queue.full())

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one record without blocking. False if it was not accepted (closed or full)."""
        clean, removed = sanitize(record)
        if removed:
            self.redactions += removed
        clean.setdefault("time", rfc3339_now())
        if self._closed:
            self._count_dropped()
            return False
        try:
            self._queue.put_nowait(clean)
        except queue.Full:
            self._count_dropped()
            return False
        return True

    async def start(self) -> None:
        """Open the sink and start the writer. A sink that cannot be opened makes the log
        unhealthy (and, with "refuse", mutating requests refused); it does not raise."""
        if self._thread is not None:
            return
        if isinstance(self._sink, FileSink):
            try:
                await asyncio.to_thread(self._sink.open)
            except OSError as exc:
                self._sink_failed(exc, 0)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop accepting, write everything already queued, close the files."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:  # never started: still write what was queued
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        self._sink.close()

    def _run(self) -> None:
        next_checkpoint = time.monotonic() + self.checkpoint_interval
        fold = self._fold
        while True:
            wake = next_checkpoint
            if fold is not None and fold.deadline is not None:
                wake = min(wake, fold.deadline)
            try:
                item = self._queue.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                if fold is not None and fold.due():
                    self._write(fold.drain())
                if time.monotonic() >= next_checkpoint:
                    self._checkpoint()
                    next_checkpoint = time.monotonic() + self.checkpoint_interval
                continue
            batch, stop = take_batch(self._queue, item, _BATCH, _STOP)
            if fold is not None:
                # Denials past the rate are counted, and their summaries written when due (and
                # at shutdown: nothing folded is ever left unwritten).
                batch = [record for record in batch if fold.admit(record)]
                if stop or fold.due():
                    batch.extend(fold.drain())
            if batch:
                self._write(batch)
            if time.monotonic() >= next_checkpoint:
                self._checkpoint()
                next_checkpoint = time.monotonic() + self.checkpoint_interval
            if stop:
                self._checkpoint()  # at shutdown: anchor everything written
                return

    def _checkpoint(self) -> None:
        try:
            self._sink.checkpoint()
        except Exception as exc:  # a checkpoint failure is a sink failure, nothing more
            self._sink_failed(exc, 0)

    def _segment_started(self, event: dict[str, Any]) -> None:
        """The writer found its file cut back or doctored and started a new segment."""
        self.segments += 1
        log.error("audit log %s: %s (file ends at seq %s, last checkpoint %s at seq %s); a new segment "
                  "starts here", self.path, event["reason"], event["found_seq"], event["checkpoint"],
                  event["checkpoint_seq"], extra={"event": "audit.segment"})
        _call(self._on_segment, 1)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in (1, 2):
            try:
                self._sink.write(batch)
            except Exception as exc:  # any sink error; the request path must never see it
                if attempt == 2:
                    self._sink_failed(exc, len(batch))
                continue
            self.written += len(batch)
            if not self._sink_ok:
                log.warning("audit sink recovered", extra={"audit_path": self.path})
            self._sink_ok = True
            self.last_error = None
            return

    def _sink_failed(self, exc: BaseException, lost: int) -> None:
        if self._sink_ok:
            log.error("audit sink failing: %s", exc, extra={"audit_path": self.path})
        self._sink_ok = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.failures += 1
        self.lost += lost
        _call(self._on_failed, 1)

    def _count_dropped(self) -> None:
        self.dropped += 1
        _call(self._on_dropped, 1)


def _call(hook: Callable[[int], None] | None, n: int) -> None:
    if hook is None:
        return
    try:
        hook(n)
    except Exception:  # a metrics hook must not break auditing
        log.exception("audit metrics hook failed")
