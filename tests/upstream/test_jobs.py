"""Durable jobs: lease, retry with backoff, max attempts, crash recovery, graceful stop, no double run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from upstream_stub.db import Database
from upstream_stub.store import open_stores
from upstream_stub.store.jobs import Claim, JobStore
from upstream_stub.worker import RetryableJobError, Worker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def jobs(backend: str) -> AsyncIterator[JobStore]:
    """The job store on each backend (SQLite file; PostgreSQL as the application role)."""
    stores = await open_stores(backend)
    yield stores.jobs
    await stores.close()


async def _until(jobs: JobStore, job_id: str, statuses: set[str], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await jobs.get("org_a", job_id)
        if row["status"] in statuses:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}: {dict(row)}")


def _worker(jobs: JobStore, handler: Any, **kw: Any) -> Worker:
    opts: dict[str, Any] = {"lease": 2.0, "poll": 0.02, "backoff_base": 0.02, "backoff_max": 0.1}
    opts.update(kw)
    w = Worker(jobs, {"crm.sync": handler}, **opts)
    w.start()
    return w


async def test_job_of_a_sigkilled_worker_is_completed_later_exactly_once(jobs: JobStore,
                                                                        tmp_path: Path) -> None:
    job = await jobs.enqueue("org_a", "crm.sync", {"connectionId": "c1"}, max_attempts=3)
    marker = tmp_path / "claimed"
    # A real process with its own connection to the file, killed without any chance to clean up.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.upstream.crash_worker", jobs.db.path, str(marker), "1.0",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert proc.returncode is None, "crash worker exited early"
            assert time.monotonic() < deadline, "crash worker never claimed the job"
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    dead = await jobs.get("org_a", job["id"])
    assert dead["status"] == "running" and dead["attempts"] == 1

    ran: list[str] = []

    async def handler(claim: Claim) -> dict[str, Any]:
        ran.append(claim.id)
        return {"done": True}

    survivor = _worker(jobs, handler, lease=1.0)
    try:
        row = await _until(jobs, job["id"], {"succeeded", "failed"})
    finally:
        await survivor.stop(1.0)
    assert row["status"] == "succeeded" and row["attempts"] == 2 and ran == [job["id"]]
    # The dead worker's claim is fenced off: it can no longer complete, fail or renew the job.
    stale = Claim(job["id"], "org_a", "crm.sync", {}, 1, 3, dead["claim_token"])
    assert not await jobs.complete(stale, {"late": True})
    assert not await jobs.fail(stale, "late", 0.0)
    assert not await jobs.renew(stale, 10)
    assert (await jobs.get("org_a", job["id"]))["completed_at"] == row["completed_at"]


async def test_expired_lease_is_reclaimed_and_old_claim_is_fenced(jobs: JobStore) -> None:
    job = await jobs.enqueue("org_a", "crm.sync", {}, max_attempts=3)
    # A lease long enough that a busy machine cannot outlast it between the two claims.
    first = await jobs.claim_next_any_org("w1", lease=2.0)
    assert first is not None and await jobs.claim_next_any_org("w2", lease=5) is None  # live lease: not taken
    await asyncio.sleep(2.1)
    second = await jobs.claim_next_any_org("w2", lease=5)
    assert second is not None and second.id == job["id"] and second.attempts == 2
    assert not await jobs.complete(first, {})
    assert await jobs.complete(second, {})
    assert not await jobs.complete(second, {})  # exactly once


async def test_retry_with_backoff_then_success(jobs: JobStore) -> None:
    job = await jobs.enqueue("org_a", "crm.sync", {}, max_attempts=5)
    seen: list[float] = []

    async def flaky(claim: Claim) -> dict[str, Any]:
        seen.append(time.monotonic())
        if claim.attempts < 3:
            raise RetryableJobError("kommo answered 503")
        return {"ok": True}

    w = _worker(jobs, flaky)
    try:
        row = await _until(jobs, job["id"], {"succeeded", "failed"})
    finally:
        await w.stop(1.0)
    assert row["status"] == "succeeded" and row["attempts"] == 3 and row["last_error"] is None
    assert len(seen) == 3


async def test_max_attempts_then_failed_and_foreign_errors_are_not_echoed(jobs: JobStore) -> None:
    job = await jobs.enqueue("org_a", "crm.sync", {}, max_attempts=2)

    async def broken(claim: Claim) -> dict[str, Any]:
        raise ValueError("Bearer kommo-access-SECRET leaked in a library message")

    w = _worker(jobs, broken)
    try:
        row = await _until(jobs, job["id"], {"failed"})
    finally:
        await w.stop(1.0)
    assert row["attempts"] == 2 and row["last_error"] == "ValueError" and row["completed_at"] is not None


async def test_graceful_stop_releases_unfinished_jobs(jobs: JobStore) -> None:
    job = await jobs.enqueue("org_a", "crm.sync", {}, max_attempts=3)
    started = asyncio.Event()

    async def slow(claim: Claim) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(60)
        return {}

    w = _worker(jobs, slow)
    await asyncio.wait_for(started.wait(), 5)
    await w.stop(grace=0.05)
    row = await jobs.get("org_a", job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0 and row["lease_owner"] is None

    async def quick(claim: Claim) -> dict[str, Any]:
        return {}

    w2 = _worker(jobs, quick)
    try:
        row = await _until(jobs, job["id"], {"succeeded"})
    finally:
        await w2.stop(1.0)
    assert row["attempts"] == 1  # the released run did not count


async def test_graceful_stop_lets_a_short_job_finish(jobs: JobStore) -> None:
    job = await jobs.enqueue("org_a", "crm.sync", {}, max_attempts=3)
    started = asyncio.Event()

    async def short(claim: Claim) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(0.2)
        return {"finished": True}

    w = _worker(jobs, short)
    await asyncio.wait_for(started.wait(), 5)
    await w.stop(grace=5)
    row = await jobs.get("org_a", job["id"])
    assert row["status"] == "succeeded" and row["attempts"] == 1


async def test_competing_workers_run_each_job_once(jobs: JobStore, tmp_path: Path) -> None:
    ids = [(await jobs.enqueue("org_a", "crm.sync", {"n": i}, max_attempts=3))["id"] for i in range(12)]
    other = await open_stores(jobs.db.path)  # a second connection (pool), as another process would have
    runs: list[str] = []

    async def work(claim: Claim) -> dict[str, Any]:
        runs.append(claim.id)
        await asyncio.sleep(0.02)
        return {}

    workers = [_worker(jobs, work, concurrency=2), _worker(other.jobs, work, concurrency=2)]
    try:
        for job_id in ids:
            await _until(jobs, job_id, {"succeeded"})
    finally:
        for w in workers:
            await w.stop(1.0)
        await other.close()
    assert sorted(runs) == sorted(ids)


async def test_dedupe_key_returns_the_active_job(jobs: JobStore) -> None:
    a = await jobs.enqueue("org_a", "crm.sync", {}, 3, dedupe_key="crm.sync:c1")
    b = await jobs.enqueue("org_a", "crm.sync", {}, 3, dedupe_key="crm.sync:c1")
    c = await jobs.enqueue("org_b", "crm.sync", {}, 3, dedupe_key="crm.sync:c1")
    assert a["id"] == b["id"] != c["id"]


async def test_app_shutdown_releases_a_job_stuck_on_kommo(tmp_path: Path) -> None:
    """Lifespan wiring: a crm.sync blocked on a slow Kommo is released when the app stops."""
    import respx

    from tests.upstream.identity import user_headers
    from tests.upstream.kommo_fake import FakeKommo
    from tests.upstream.support import connect, make_settings, running

    entered = asyncio.Event()

    async def stuck(request: Any) -> Any:
        entered.set()
        await asyncio.sleep(60)

    with respx.mock(assert_all_called=False) as router:
        kommo = FakeKommo().install(router)
        async with running(make_settings(tmp_path, shutdown_grace=0.1)) as up:
            conn_id = await connect(up, kommo)
            router.get(f"https://{kommo.host}/api/v4/leads").mock(side_effect=stuck)
            r = await up.client.post(f"/crm/connections/{conn_id}/sync", headers=user_headers())
            job_id = r.json()["jobId"]
            await asyncio.wait_for(entered.wait(), 5)
        # lifespan has exited: worker stopped, database closed; reopen to look
        db = Database(up.svc.settings.db_path)
        await db.open()
        try:
            row = await JobStore(db).get("org_a", job_id)
        finally:
            await db.close()
    assert row["status"] == "queued" and row["attempts"] == 0 and row["lease_owner"] is None
