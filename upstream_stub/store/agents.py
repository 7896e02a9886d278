"""Agents table, always scoped by org."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from upstream_stub.db import Database, now

_COLUMNS = ("name", "description", "model", "config")


class AgentStore:
    """CRUD on agents of one org at a time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, org_id: str, created_by: str, fields: dict[str, Any]) -> sqlite3.Row:
        agent_id = "agt_" + uuid.uuid4().hex
        ts = now()

        def q() -> sqlite3.Row:
            return self.db.conn.execute(
                "INSERT INTO agents (id, org_id, name, description, model, config, created_by,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) RETURNING *",
                (agent_id, org_id, fields["name"], fields["description"], fields["model"],
                 fields["config"], created_by, ts, ts),
            ).fetchone()

        return await self.db.run(q)

    async def get(self, org_id: str, agent_id: str) -> sqlite3.Row | None:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM agents WHERE org_id = ? AND id = ?", (org_id, agent_id)).fetchone())

    async def list_page(self, org_id: str, after: int, limit: int) -> list[sqlite3.Row]:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM agents WHERE org_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (org_id, after, limit + 1)).fetchall())

    async def update(self, org_id: str, agent_id: str, fields: dict[str, Any]) -> sqlite3.Row | None:
        sets = [(k, v) for k, v in fields.items() if k in _COLUMNS]
        if not sets:
            return await self.get(org_id, agent_id)
        # Column names come from the fixed _COLUMNS whitelist, never from the request.
        sql = ", ".join(f"{k} = ?" for k, _ in sets)
        params = [v for _, v in sets] + [now(), org_id, agent_id]
        return await self.db.run(lambda: self.db.conn.execute(
            f"UPDATE agents SET {sql}, updated_at = ? WHERE org_id = ? AND id = ? RETURNING *",  # noqa: S608
            params).fetchone())

    async def delete(self, org_id: str, agent_id: str) -> bool:
        cur = await self.db.run(lambda: self.db.conn.execute(
            "DELETE FROM agents WHERE org_id = ? AND id = ?", (org_id, agent_id)))
        return bool(cur.rowcount)
