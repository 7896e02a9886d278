"""CRM connections, always scoped by org; secrets stay sealed (see `crypto.py`).

Token refresh coordination lives here as plain SQL so it also holds across processes sharing the
file: a refresh lease (`refresh_owner`/`refresh_until`) taken by a conditional UPDATE, and the new
token pair stored by compare-and-swap on `token_version`.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from upstream_stub.crypto import Sealed
from upstream_stub.db import Database, now

ACTIVE, PENDING, REAUTH, REVOKED = "active", "pending_auth", "reauth_required", "revoked"


def sealed_of(row: sqlite3.Row) -> Sealed | None:
    return Sealed(row["secret_kid"], bytes(row["secret_blob"])) if row["secret_blob"] is not None else None


class ConnectionStore:
    """CRUD and token bookkeeping on one org's CRM connections."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.db.run(lambda: self.db.conn.execute(sql, params).fetchone())

    @staticmethod
    def new_id() -> str:
        return "con_" + uuid.uuid4().hex

    async def create(self, org_id: str, conn_id: str, name: str, base_domain: str | None,
                     sealed: Sealed | None, expires_at: float | None,
                     account_id: int | None = None, amojo_id: str | None = None) -> sqlite3.Row:
        ts = now()
        status = ACTIVE if sealed else PENDING
        return await self._one(
            "INSERT INTO crm_connections (id, org_id, provider, name, base_domain, status, kommo_account_id,"
            " amojo_id, secret_kid, secret_blob, token_expires_at, created_at, updated_at)"
            " VALUES (?,?,'kommo',?,?,?,?,?,?,?,?,?,?) RETURNING *",
            (conn_id, org_id, name, base_domain, status, account_id, amojo_id,
             sealed.kid if sealed else None, sealed.blob if sealed else None, expires_at, ts, ts))

    async def get(self, org_id: str, conn_id: str) -> sqlite3.Row | None:
        return await self._one("SELECT * FROM crm_connections WHERE org_id = ? AND id = ?", (org_id, conn_id))

    async def get_by_account(self, org_id: str, account_id: int) -> sqlite3.Row | None:
        return await self._one(
            "SELECT * FROM crm_connections WHERE org_id = ? AND kommo_account_id = ? ORDER BY seq LIMIT 1",
            (org_id, account_id))

    async def list_page(self, org_id: str, after: int, limit: int) -> list[sqlite3.Row]:
        return await self.db.run(lambda: self.db.conn.execute(
            "SELECT * FROM crm_connections WHERE org_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (org_id, after, limit + 1)).fetchall())

    async def rename(self, org_id: str, conn_id: str, name: str) -> sqlite3.Row | None:
        return await self._one(
            "UPDATE crm_connections SET name = ?, updated_at = ? WHERE org_id = ? AND id = ? RETURNING *",
            (name, now(), org_id, conn_id))

    async def set_tokens(self, org_id: str, conn_id: str, sealed: Sealed, expires_at: float | None,
                         *, base_domain: str | None = None, account_id: int | None = None,
                         amojo_id: str | None = None) -> sqlite3.Row | None:
        """New credentials from the user or an OAuth grant: a fresh version, status active."""
        return await self._one(
            "UPDATE crm_connections SET secret_kid = ?, secret_blob = ?, token_expires_at = ?,"
            " token_version = token_version + 1, status = 'active', refresh_owner = NULL,"
            " refresh_until = NULL, base_domain = COALESCE(?, base_domain),"
            " kommo_account_id = COALESCE(?, kommo_account_id), amojo_id = COALESCE(?, amojo_id),"
            " updated_at = ? WHERE org_id = ? AND id = ? RETURNING *",
            (sealed.kid, sealed.blob, expires_at, base_domain, account_id, amojo_id, now(), org_id, conn_id))

    async def delete(self, org_id: str, conn_id: str) -> bool:
        def q() -> bool:
            def body(c: sqlite3.Connection) -> bool:
                c.execute("DELETE FROM crm_leads WHERE org_id = ? AND connection_id = ?", (org_id, conn_id))
                cur = c.execute("DELETE FROM crm_connections WHERE org_id = ? AND id = ?", (org_id, conn_id))
                return bool(cur.rowcount)
            return self.db.tx(body)
        return await self.db.run(q)

    async def touch_sync(self, org_id: str, conn_id: str) -> None:
        await self._one("UPDATE crm_connections SET last_sync_at = ? WHERE org_id = ? AND id = ?",
                        (now(), org_id, conn_id))

    # -- refresh coordination (single flight across processes) --

    async def try_lease_refresh(self, org_id: str, conn_id: str, version: int, owner: str,
                                seconds: float) -> bool:
        """Take the refresh lease for `version`, unless someone holds a live one or moved on."""
        ts = now()
        row = await self._one(
            "UPDATE crm_connections SET refresh_owner = ?, refresh_until = ? WHERE org_id = ? AND id = ?"
            " AND token_version = ? AND status = 'active' AND (refresh_until IS NULL OR refresh_until < ?)"
            " RETURNING id", (owner, ts + seconds, org_id, conn_id, version, ts))
        return row is not None

    async def store_refreshed(self, org_id: str, conn_id: str, version: int, owner: str,
                              sealed: Sealed, expires_at: float) -> sqlite3.Row | None:
        """Compare-and-swap the new pair in; None when another writer got there first."""
        return await self._one(
            "UPDATE crm_connections SET secret_kid = ?, secret_blob = ?, token_expires_at = ?,"
            " token_version = token_version + 1, refresh_owner = NULL, refresh_until = NULL, updated_at = ?"
            " WHERE org_id = ? AND id = ? AND token_version = ? AND refresh_owner = ? RETURNING *",
            (sealed.kid, sealed.blob, expires_at, now(), org_id, conn_id, version, owner))

    async def release_refresh(self, org_id: str, conn_id: str, owner: str) -> None:
        await self._one(
            "UPDATE crm_connections SET refresh_owner = NULL, refresh_until = NULL"
            " WHERE org_id = ? AND id = ? AND refresh_owner = ?", (org_id, conn_id, owner))

    async def mark(self, org_id: str, conn_id: str, status: str, *, wipe: bool = False) -> None:
        """Set a status; `wipe` also drops the sealed secrets (revoked or dead tokens)."""
        wipe_sql = ", secret_kid = NULL, secret_blob = NULL, token_expires_at = NULL" if wipe else ""
        await self._one(
            f"UPDATE crm_connections SET status = ?, refresh_owner = NULL, refresh_until = NULL{wipe_sql},"  # noqa: S608
            " token_version = token_version + 1, updated_at = ? WHERE org_id = ? AND id = ?",
            (status, now(), org_id, conn_id))

    # -- the narrow unscoped lookups of the webhook receivers --

    async def orgs_for_kommo_account_for_webhook(self, account_id: int, *, active_only: bool = True,
                                                 ) -> list[tuple[str, str]]:
        rows = await self.db.run(lambda: self.db.conn.execute(
            "SELECT org_id, id FROM crm_connections WHERE kommo_account_id = ?"
            " AND (status = 'active' OR (? = 0 AND status != 'revoked')) ORDER BY seq",
            (account_id, int(active_only))).fetchall())
        return [(r["org_id"], r["id"]) for r in rows]

    async def orgs_for_kommo_amojo_for_webhook(self, amojo_id: str) -> list[tuple[str, str]]:
        rows = await self.db.run(lambda: self.db.conn.execute(
            "SELECT org_id, id FROM crm_connections WHERE amojo_id = ? AND status = 'active' ORDER BY seq",
            (amojo_id,)).fetchall())
        return [(r["org_id"], r["id"]) for r in rows]
