"""Agents table on PostgreSQL, always scoped by org (query filter + row-level security)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import sql

from upstream_stub.db import now
from upstream_stub.store.pg.db import PgDatabase, Row

_COLUMNS = ("name", "description", "model", "config")


class PgAgentStore:
    """CRUD on agents of one org at a time."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def create(self, org_id: str, created_by: str, fields: dict[str, Any]) -> Row:
        agent_id = "agt_" + uuid.uuid4().hex
        ts = now()
        row = await self.db.one(
            org_id,
            "INSERT INTO agents (id, org_id, name, description, model, config, created_by, created_at, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
            (agent_id, org_id, fields["name"], fields["description"], fields["model"], fields["config"],
             created_by, ts, ts))
        assert row is not None
        return row

    async def get(self, org_id: str, agent_id: str) -> Row | None:
        return await self.db.one(org_id, "SELECT * FROM agents WHERE org_id = %s AND id = %s", (org_id, agent_id))

    async def list_page(self, org_id: str, after: int, limit: int) -> list[Row]:
        return await self.db.all(
            org_id, "SELECT * FROM agents WHERE org_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (org_id, after, limit + 1))

    async def update(self, org_id: str, agent_id: str, fields: dict[str, Any]) -> Row | None:
        sets = [(k, v) for k, v in fields.items() if k in _COLUMNS]
        if not sets:
            return await self.get(org_id, agent_id)
        # Column names come from the fixed _COLUMNS whitelist and are quoted as identifiers.
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k, _ in sets)
        query = sql.SQL("UPDATE agents SET {}, updated_at = %s WHERE org_id = %s AND id = %s RETURNING *").format(
            assignments)
        async with self.db.tenant(org_id) as conn:
            cur = await conn.execute(query, [v for _, v in sets] + [now(), org_id, agent_id])
            return await cur.fetchone()

    async def delete(self, org_id: str, agent_id: str) -> bool:
        return bool(await self.db.count(org_id, "DELETE FROM agents WHERE org_id = %s AND id = %s",
                                        (org_id, agent_id)))
