"""Leads pulled from Kommo and the record of processed webhook events, on PostgreSQL, scoped by org."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from upstream_stub.db import now
from upstream_stub.store.leads import _int
from upstream_stub.store.pg.db import PgDatabase, Row


class PgLeadStore:
    """Idempotent writes: re-running a sync or a webhook job leaves the same rows."""

    def __init__(self, db: PgDatabase) -> None:
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
        if not rows:
            return 0
        async with self.db.tenant(org_id) as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO crm_leads AS l (org_id, connection_id, lead_id, name, status_id, pipeline_id, price,"
                " updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (org_id, connection_id, lead_id)"
                " DO UPDATE SET name = excluded.name, status_id = COALESCE(excluded.status_id, l.status_id),"
                " pipeline_id = COALESCE(excluded.pipeline_id, l.pipeline_id),"
                " price = COALESCE(excluded.price, l.price), updated_at = excluded.updated_at", rows)
        return len(rows)

    async def delete(self, org_id: str, conn_id: str, lead_ids: Iterable[int]) -> None:
        ids = [(org_id, conn_id, i) for i in lead_ids]
        if not ids:
            return
        async with self.db.tenant(org_id) as conn, conn.cursor() as cur:
            await cur.executemany(
                "DELETE FROM crm_leads WHERE org_id = %s AND connection_id = %s AND lead_id = %s", ids)

    async def for_connection(self, org_id: str, conn_id: str) -> list[Row]:
        return await self.db.all(
            org_id, "SELECT * FROM crm_leads WHERE org_id = %s AND connection_id = %s ORDER BY lead_id",
            (org_id, conn_id))

    async def record_event(self, org_id: str, conn_id: str, source: str, kind: str, job_id: str) -> bool:
        """Note one processed event; False when this job already recorded it (a re-run)."""
        return bool(await self.db.count(
            org_id, "INSERT INTO crm_events (org_id, connection_id, source, kind, job_id, received_at)"
            " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING", (org_id, conn_id, source, kind, job_id, now())))

    async def events(self, org_id: str, conn_id: str) -> list[Row]:
        return await self.db.all(
            org_id, "SELECT * FROM crm_events WHERE org_id = %s AND connection_id = %s ORDER BY seq",
            (org_id, conn_id))
