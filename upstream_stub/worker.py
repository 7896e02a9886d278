"""The in-process job worker: claim with a lease, heartbeat, retry with backoff, stop gracefully.

A worker that dies mid-job (crash, SIGKILL) stops renewing its lease; once the lease lapses another
worker claims the job again. Completion is fenced by the claim token (`store/jobs.py`), so a job is
never completed twice, nor run by two workers at once while a lease is live. On graceful stop
running jobs get `grace` seconds to finish; the rest are released back to the queue, uncounted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from upstream_stub.store.jobs import Claim, JobStore

log = logging.getLogger("upstream_stub.jobs")
Handler = Callable[[Claim], Awaitable[dict[str, Any] | None]]


class PermanentJobError(Exception):
    """The job cannot succeed by retrying (its connection is gone or needs re-authorisation)."""


class RetryableJobError(Exception):
    """A failure worth another attempt; its message is safe to store and show."""


def safe_error(exc: BaseException) -> str:
    """Our own exception messages are written to be shown; anything else is named by class only."""
    if type(exc).__module__.startswith("upstream_stub"):
        return f"{type(exc).__name__}: {exc}"[:200]
    return type(exc).__name__


class Worker:
    """Runs jobs from the shared table with bounded concurrency."""

    def __init__(self, jobs: JobStore, handlers: Mapping[str, Handler], *, concurrency: int = 1,
                 lease: float = 30.0, poll: float = 0.5, backoff_base: float = 2.0,
                 backoff_max: float = 300.0) -> None:
        self.jobs = jobs
        self.handlers = dict(handlers)
        self.lease, self.poll = lease, poll
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.owner)

    def notify(self) -> None:
        """A job was enqueued: look now instead of at the next poll."""
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(attempts - 1, 0))
        return delay * random.uniform(0.5, 1.0)  # jitter: failed jobs do not come back in lockstep

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            claim = None
            try:
                if not self._stopping.is_set():
                    claim = await self.jobs.claim_next_any_org(self.owner, self.lease)
            except Exception as exc:  # a busy or broken database must not kill the worker
                log.error("job claim failed: %s", type(exc).__name__)
            if claim is None:
                self._slots.release()
                if not self._stopping.is_set():
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    except TimeoutError:
                        pass
                    self._wake.clear()
                continue
            if self._stopping.is_set():
                await self.jobs.release(claim)
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(claim))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _heartbeat(self, claim: Claim, runner: asyncio.Task[Any], lost: list[bool]) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if not await self.jobs.renew(claim, self.lease):
                lost.append(True)
                runner.cancel()
                return

    async def _execute(self, claim: Claim) -> None:
        lost: list[bool] = []
        me = asyncio.current_task()
        hb = asyncio.create_task(self._heartbeat(claim, me, lost)) if me else None
        try:
            await self._run(claim)
        except asyncio.CancelledError:
            if lost:
                log.warning("job %s lost its lease; abandoned", claim.id)
                return
            await self.jobs.release(claim)
            log.info("job %s released on shutdown", claim.id)
            raise
        finally:
            if hb:
                hb.cancel()
            self._slots.release()

    async def _run(self, claim: Claim) -> None:
        handler = self.handlers.get(claim.type)
        if handler is None:
            await self.jobs.fail(claim, f"no handler for job type {claim.type}", None)
            return
        try:
            result = await handler(claim)
        except PermanentJobError as exc:
            await self.jobs.fail(claim, safe_error(exc), None)
            log.warning("job %s (%s) failed for good: %s", claim.id, claim.type, safe_error(exc))
            return
        except Exception as exc:
            retry_in = self.backoff(claim.attempts)
            await self.jobs.fail(claim, safe_error(exc), retry_in)
            log.warning("job %s (%s) attempt %d failed: %s", claim.id, claim.type, claim.attempts,
                        safe_error(exc))
            return
        if await self.jobs.complete(claim, result):
            log.info("job %s (%s) succeeded on attempt %d", claim.id, claim.type, claim.attempts)
        else:
            log.warning("job %s finished after losing its lease; result discarded", claim.id)

    async def stop(self, grace: float) -> None:
        """Stop claiming; let running jobs finish for `grace` seconds, then release the rest."""
        self._stopping.set()
        self._wake.set()
        running = set(self._inflight)
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
