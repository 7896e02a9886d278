"""Leads pulled from Kommo and the record of processed webhook events, scoped by org."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from upstream_stub.db import Database, now


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class LeadStore:
    """Idempotent writes: re-running a sync or a webhook job leaves the same rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, org_id: str, conn_id: str, leads: Iterable[dict[str, Any]]) -> int:
        rows = []
        for lead in leads:
            lead_id = _int(lead.get("id"))
            if lead_id is None:
                continue
            rows.append((org_id, conn_id, lead_id, str(lead.get("name") or "")[:255],
                         _int(lead.get("status_id")), _int(lead.get("pipeline_id")), _int(lead.get("price")),
                         now()))

        def q(c: sqlite3.Connection) -> int:
            c.executemany(
                "INSERT INTO crm_leads (org_id, connection_id, lead_id, name, status_id, pipeline_id, price,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (org_id, connection_id, lead_id) DO UPDATE"
                " SET name = excluded.name, status_id = COALESCE(excluded.status_id, status_id),"
                " pipeline_id = COALESCE(excluded.pipeline_id, pipeline_id),"
                " price = COALESCE(excluded.price, price), updated_at = excluded.updated_at", rows)
            return len(rows)

        return await self.db.run(self.db.tx, q)

    async def delete(self, org_id: str, conn_id: str, lead_ids: Iterable[int]) -> None:
        ids = [(org_id, conn_id, i) for i in lead_ids]
        await self.db.run(lambda: self.db.conn.executemany(
            "DELETE FROM crm_leads WHERE org_id = ? AND connection_id = ? AND lead_id = ?", ids))

    async def for_connection(self, org_id: str, conn_id: str) -> list[sqlite3.Row]:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM crm_leads WHERE org_id = ? AND connection_id = ? ORDER BY lead_id",
            (org_id, conn_id)).fetchall())

    async def record_event(self, org_id: str, conn_id: str, source: str, kind: str, job_id: str) -> bool:
        """Note one processed event; False when this job already recorded it (a re-run)."""
        cur = await self.db.run(lambda: self.db.conn.execute(
            "INSERT OR IGNORE INTO crm_events (org_id, connection_id, source, kind, job_id, received_at)"
            " VALUES (?,?,?,?,?,?)", (org_id, conn_id, source, kind, job_id, now())))
        return bool(cur.rowcount)

    async def events(self, org_id: str, conn_id: str) -> list[sqlite3.Row]:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM crm_events WHERE org_id = ? AND connection_id = ? ORDER BY seq",
            (org_id, conn_id)).fetchall())
