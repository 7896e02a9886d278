"""Durable jobs: claimed with a lease, fenced by a claim token, retried with backoff.

State machine: queued → running → succeeded | queued (retry, `run_after` in the future) | failed.
A running job whose lease ran out (its worker crashed or hung) is claimable again. Every transition
out of `running` names the claim token it came from, so a worker that lost its lease can neither
complete nor fail a job someone else now owns: completion happens exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from upstream_stub.db import Database, now

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker holds until `lease_until` (renewable with its `token`)."""

    id: str
    org_id: str
    type: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    token: str


class JobStore:
    """The jobs table; reads and enqueues are org-scoped, the worker claim is the one exception."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, org_id: str, type_: str, payload: dict[str, Any], max_attempts: int,
                      dedupe_key: str | None = None) -> sqlite3.Row:
        """Insert a queued job; with `dedupe_key`, an identical active job is returned instead."""
        ts = now()
        job_id = "job_" + uuid.uuid4().hex
        body = json.dumps(payload, separators=(",", ":"))

        def q(c: sqlite3.Connection) -> sqlite3.Row:
            if dedupe_key is not None:
                row = c.execute("SELECT * FROM jobs WHERE org_id = ? AND dedupe_key = ? AND status IN"
                                " ('queued','running')", (org_id, dedupe_key)).fetchone()
                if row is not None:
                    return row
            return c.execute(
                "INSERT INTO jobs (id, org_id, type, payload, status, max_attempts, run_after, dedupe_key,"
                " created_at, updated_at) VALUES (?,?,?,?,'queued',?,?,?,?,?) RETURNING *",
                (job_id, org_id, type_, body, max_attempts, ts, dedupe_key, ts, ts)).fetchone()

        return await self.db.run(self.db.tx, q)

    async def get(self, org_id: str, job_id: str) -> sqlite3.Row | None:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM jobs WHERE org_id = ? AND id = ?", (org_id, job_id)).fetchone())

    async def list_page(self, org_id: str, after: int, limit: int,
                        status: str | None = None) -> list[sqlite3.Row]:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM jobs WHERE org_id = ? AND seq > ? AND (? IS NULL OR status = ?)"
            " ORDER BY seq LIMIT ?", (org_id, after, status, status, limit + 1)).fetchall())

    async def claim_next_any_org(self, owner: str, lease: float) -> Claim | None:
        """Atomically take the oldest runnable job (queued and due, or running with a dead lease)."""
        token = uuid.uuid4().hex

        def q(c: sqlite3.Connection) -> sqlite3.Row | None:
            ts = now()
            # A dead lease on a job that has used all its attempts ends it rather than running it again.
            c.execute("UPDATE jobs SET status = 'failed', last_error = 'lease expired on last attempt',"
                      " lease_owner = NULL, claim_token = NULL, lease_until = NULL, updated_at = ?"
                      " WHERE status = 'running' AND lease_until < ? AND attempts >= max_attempts", (ts, ts))
            return c.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?,"
                " claim_token = ?, lease_until = ?, updated_at = ? WHERE id = (SELECT id FROM jobs WHERE"
                " (status = 'queued' AND run_after <= ?) OR (status = 'running' AND lease_until < ?)"
                " ORDER BY run_after, seq LIMIT 1) RETURNING *",
                (owner, token, ts + lease, ts, ts, ts)).fetchone()

        row = await self.db.run(self.db.tx, q)
        if row is None:
            return None
        return Claim(row["id"], row["org_id"], row["type"], json.loads(row["payload"]), row["attempts"],
                     row["max_attempts"], token)

    def _fenced(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.run(lambda: self.db.conn.execute(sql, params).rowcount == 1)

    async def renew(self, claim: Claim, lease: float) -> bool:
        return bool(await self._fenced(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND claim_token = ? AND status = 'running'",
            (now() + lease, claim.id, claim.token)))

    async def complete(self, claim: Claim, result: dict[str, Any] | None) -> bool:
        """Mark succeeded; False when the claim was lost (the result is then discarded)."""
        ts = now()
        return bool(await self._fenced(
            "UPDATE jobs SET status = 'succeeded', result = ?, last_error = NULL, lease_owner = NULL,"
            " lease_until = NULL, completed_at = ?, updated_at = ? WHERE id = ? AND claim_token = ?"
            " AND status = 'running'", (json.dumps(result or {}), ts, ts, claim.id, claim.token)))

    async def fail(self, claim: Claim, error: str, retry_in: float | None) -> bool:
        """Retry after `retry_in` seconds, or fail for good when None or out of attempts."""
        ts = now()
        final = retry_in is None or claim.attempts >= claim.max_attempts
        return bool(await self._fenced(
            "UPDATE jobs SET status = ?, run_after = ?, last_error = ?, lease_owner = NULL,"
            " lease_until = NULL, claim_token = NULL, completed_at = ?, updated_at = ? WHERE id = ?"
            " AND claim_token = ? AND status = 'running'",
            (FAILED if final else QUEUED, ts + (retry_in or 0.0), error[:200], ts if final else None, ts,
             claim.id, claim.token)))

    async def release(self, claim: Claim) -> bool:
        """Give an unfinished job back (graceful stop); the attempt does not count."""
        ts = now()
        return bool(await self._fenced(
            "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), run_after = ?,"
            " lease_owner = NULL, lease_until = NULL, claim_token = NULL, updated_at = ?"
            " WHERE id = ? AND claim_token = ? AND status = 'running'", (ts, ts, claim.id, claim.token)))
