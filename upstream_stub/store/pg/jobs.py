"""Durable jobs on PostgreSQL: the same states, lease and fencing as `store/jobs.py`.

The claim is the one cross-tenant step: `upstream_claim_job`, a SECURITY DEFINER function granted to
the application role alone, takes the oldest runnable job of any org with `FOR UPDATE SKIP LOCKED`
(concurrent workers never wait on, nor take, the same row) and returns just that job. Everything
after the claim (renew, complete, fail, release) runs in the job's own org, fenced by its claim token.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from upstream_stub.db import now
from upstream_stub.store.jobs import FAILED, QUEUED, Claim
from upstream_stub.store.pg.db import PgDatabase, Row


class PgJobStore:
    """The jobs table; reads and enqueues are org-scoped, the worker claim is the one exception."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def enqueue(self, org_id: str, type_: str, payload: dict[str, Any], max_attempts: int,
                      dedupe_key: str | None = None) -> Row:
        """Insert a queued job; with `dedupe_key`, an identical active job is returned instead."""
        ts = now()
        job_id = "job_" + uuid.uuid4().hex
        body = json.dumps(payload, separators=(",", ":"))
        for _ in range(5):
            async with self.db.tenant(org_id) as conn:
                # The partial unique index settles concurrent enqueues of the same key.
                cur = await conn.execute(
                    "INSERT INTO jobs (id, org_id, type, payload, status, max_attempts, run_after, dedupe_key,"
                    " created_at, updated_at) VALUES (%s,%s,%s,%s,'queued',%s,%s,%s,%s,%s)"
                    " ON CONFLICT (org_id, dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN"
                    " ('queued', 'running') DO NOTHING RETURNING *",
                    (job_id, org_id, type_, body, max_attempts, ts, dedupe_key, ts, ts))
                row = await cur.fetchone()
                if row is not None:
                    return row
                cur = await conn.execute(
                    "SELECT * FROM jobs WHERE org_id = %s AND dedupe_key = %s AND status IN ('queued','running')",
                    (org_id, dedupe_key))
                row = await cur.fetchone()
                if row is not None:
                    return row
            # The active duplicate ended between the two statements: try the insert again.
        raise RuntimeError("could not enqueue a deduplicated job")

    async def get(self, org_id: str, job_id: str) -> Row | None:
        return await self.db.one(org_id, "SELECT * FROM jobs WHERE org_id = %s AND id = %s", (org_id, job_id))

    async def list_page(self, org_id: str, after: int, limit: int, status: str | None = None) -> list[Row]:
        return await self.db.all(
            org_id, "SELECT * FROM jobs WHERE org_id = %s AND seq > %s AND (%s::text IS NULL OR status = %s)"
            " ORDER BY seq LIMIT %s", (org_id, after, status, status, limit + 1))

    async def claim_next_any_org(self, owner: str, lease: float) -> Claim | None:
        """Atomically take the oldest runnable job (queued and due, or running with a dead lease)."""
        token = uuid.uuid4().hex
        async with self.db.unscoped() as conn:
            cur = await conn.execute("SELECT * FROM upstream_claim_job(%s, %s, %s, %s)", (owner, token, lease, now()))
            row = await cur.fetchone()
        if row is None:
            return None
        return Claim(row["id"], row["org_id"], row["type"], json.loads(row["payload"]), row["attempts"],
                     row["max_attempts"], token)

    async def _fenced(self, claim: Claim, query: str, params: tuple[Any, ...]) -> bool:
        return await self.db.count(claim.org_id, query, params) == 1

    async def renew(self, claim: Claim, lease: float) -> bool:
        return await self._fenced(
            claim, "UPDATE jobs SET lease_until = %s WHERE org_id = %s AND id = %s AND claim_token = %s"
            " AND status = 'running'", (now() + lease, claim.org_id, claim.id, claim.token))

    async def complete(self, claim: Claim, result: dict[str, Any] | None) -> bool:
        """Mark succeeded; False when the claim was lost (the result is then discarded)."""
        ts = now()
        return await self._fenced(
            claim, "UPDATE jobs SET status = 'succeeded', result = %s, last_error = NULL, lease_owner = NULL,"
            " lease_until = NULL, completed_at = %s, updated_at = %s WHERE org_id = %s AND id = %s"
            " AND claim_token = %s AND status = 'running'",
            (json.dumps(result or {}), ts, ts, claim.org_id, claim.id, claim.token))

    async def fail(self, claim: Claim, error: str, retry_in: float | None) -> bool:
        """Retry after `retry_in` seconds, or fail for good when None or out of attempts."""
        ts = now()
        final = retry_in is None or claim.attempts >= claim.max_attempts
        return await self._fenced(
            claim, "UPDATE jobs SET status = %s, run_after = %s, last_error = %s, lease_owner = NULL,"
            " lease_until = NULL, claim_token = NULL, completed_at = %s, updated_at = %s WHERE org_id = %s"
            " AND id = %s AND claim_token = %s AND status = 'running'",
            (FAILED if final else QUEUED, ts + (retry_in or 0.0), error[:200], ts if final else None, ts,
             claim.org_id, claim.id, claim.token))

    async def release(self, claim: Claim) -> bool:
        """Give an unfinished job back (graceful stop); the attempt does not count."""
        ts = now()
        return await self._fenced(
            claim, "UPDATE jobs SET status = 'queued', attempts = GREATEST(attempts - 1, 0), run_after = %s,"
            " lease_owner = NULL, lease_until = NULL, claim_token = NULL, updated_at = %s"
            " WHERE org_id = %s AND id = %s AND claim_token = %s AND status = 'running'",
            (ts, ts, claim.org_id, claim.id, claim.token))
