"""CRM connections on PostgreSQL, scoped by org; the same refresh lease and compare-and-swap as SQLite."""

from __future__ import annotations

from upstream_stub.crypto import Sealed
from upstream_stub.db import now
from upstream_stub.store.connections import ACTIVE, PENDING
from upstream_stub.store.pg.db import PgDatabase, Row


class PgConnectionStore:
    """CRUD and token bookkeeping on one org's CRM connections."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    @staticmethod
    def new_id() -> str:
        from upstream_stub.store.connections import ConnectionStore

        return ConnectionStore.new_id()

    async def create(self, org_id: str, conn_id: str, name: str, base_domain: str | None,
                     sealed: Sealed | None, expires_at: float | None,
                     account_id: int | None = None, amojo_id: str | None = None) -> Row:
        ts = now()
        row = await self.db.one(
            org_id,
            "INSERT INTO crm_connections (id, org_id, provider, name, base_domain, status, kommo_account_id,"
            " amojo_id, secret_kid, secret_blob, token_expires_at, created_at, updated_at)"
            " VALUES (%s,%s,'kommo',%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
            (conn_id, org_id, name, base_domain, ACTIVE if sealed else PENDING, account_id, amojo_id,
             sealed.kid if sealed else None, sealed.blob if sealed else None, expires_at, ts, ts))
        assert row is not None
        return row

    async def get(self, org_id: str, conn_id: str) -> Row | None:
        return await self.db.one(org_id, "SELECT * FROM crm_connections WHERE org_id = %s AND id = %s",
                                 (org_id, conn_id))

    async def get_by_account(self, org_id: str, account_id: int) -> Row | None:
        return await self.db.one(
            org_id, "SELECT * FROM crm_connections WHERE org_id = %s AND kommo_account_id = %s ORDER BY seq LIMIT 1",
            (org_id, account_id))

    async def list_page(self, org_id: str, after: int, limit: int) -> list[Row]:
        return await self.db.all(
            org_id, "SELECT * FROM crm_connections WHERE org_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (org_id, after, limit + 1))

    async def rename(self, org_id: str, conn_id: str, name: str) -> Row | None:
        return await self.db.one(
            org_id, "UPDATE crm_connections SET name = %s, updated_at = %s WHERE org_id = %s AND id = %s RETURNING *",
            (name, now(), org_id, conn_id))

    async def set_tokens(self, org_id: str, conn_id: str, sealed: Sealed, expires_at: float | None,
                         *, base_domain: str | None = None, account_id: int | None = None,
                         amojo_id: str | None = None) -> Row | None:
        """New credentials from the user or an OAuth grant: a fresh version, status active."""
        return await self.db.one(
            org_id,
            "UPDATE crm_connections SET secret_kid = %s, secret_blob = %s, token_expires_at = %s,"
            " token_version = token_version + 1, status = 'active', refresh_owner = NULL,"
            " refresh_until = NULL, base_domain = COALESCE(%s, base_domain),"
            " kommo_account_id = COALESCE(%s, kommo_account_id), amojo_id = COALESCE(%s, amojo_id),"
            " updated_at = %s WHERE org_id = %s AND id = %s RETURNING *",
            (sealed.kid, sealed.blob, expires_at, base_domain, account_id, amojo_id, now(), org_id, conn_id))

    async def delete(self, org_id: str, conn_id: str) -> bool:
        async with self.db.tenant(org_id) as conn:
            await conn.execute("DELETE FROM crm_leads WHERE org_id = %s AND connection_id = %s", (org_id, conn_id))
            cur = await conn.execute("DELETE FROM crm_connections WHERE org_id = %s AND id = %s", (org_id, conn_id))
            return bool(cur.rowcount)

    async def touch_sync(self, org_id: str, conn_id: str) -> None:
        await self.db.count(org_id, "UPDATE crm_connections SET last_sync_at = %s WHERE org_id = %s AND id = %s",
                            (now(), org_id, conn_id))

    # -- refresh coordination (single flight across processes) --

    async def try_lease_refresh(self, org_id: str, conn_id: str, version: int, owner: str,
                                seconds: float) -> bool:
        """Take the refresh lease for `version`, unless someone holds a live one or moved on."""
        ts = now()
        row = await self.db.one(
            org_id,
            "UPDATE crm_connections SET refresh_owner = %s, refresh_until = %s WHERE org_id = %s AND id = %s"
            " AND token_version = %s AND status = 'active' AND (refresh_until IS NULL OR refresh_until < %s)"
            " RETURNING id", (owner, ts + seconds, org_id, conn_id, version, ts))
        return row is not None

    async def store_refreshed(self, org_id: str, conn_id: str, version: int, owner: str,
                              sealed: Sealed, expires_at: float) -> Row | None:
        """Compare-and-swap the new pair in; None when another writer got there first."""
        return await self.db.one(
            org_id,
            "UPDATE crm_connections SET secret_kid = %s, secret_blob = %s, token_expires_at = %s,"
            " token_version = token_version + 1, refresh_owner = NULL, refresh_until = NULL, updated_at = %s"
            " WHERE org_id = %s AND id = %s AND token_version = %s AND refresh_owner = %s RETURNING *",
            (sealed.kid, sealed.blob, expires_at, now(), org_id, conn_id, version, owner))

    async def release_refresh(self, org_id: str, conn_id: str, owner: str) -> None:
        await self.db.count(
            org_id, "UPDATE crm_connections SET refresh_owner = NULL, refresh_until = NULL"
            " WHERE org_id = %s AND id = %s AND refresh_owner = %s", (org_id, conn_id, owner))

    async def mark(self, org_id: str, conn_id: str, status: str, *, wipe: bool = False) -> None:
        """Set a status; `wipe` also drops the sealed secrets (revoked or dead tokens)."""
        query = (
            "UPDATE crm_connections SET status = %s, refresh_owner = NULL, refresh_until = NULL,"
            " secret_kid = CASE WHEN %s THEN NULL ELSE secret_kid END,"
            " secret_blob = CASE WHEN %s THEN NULL ELSE secret_blob END,"
            " token_expires_at = CASE WHEN %s THEN NULL ELSE token_expires_at END,"
            " token_version = token_version + 1, updated_at = %s WHERE org_id = %s AND id = %s")
        await self.db.count(org_id, query, (status, wipe, wipe, wipe, now(), org_id, conn_id))

    # -- the narrow cross-tenant lookups of the webhook receivers (SECURITY DEFINER functions) --

    async def orgs_for_kommo_account_for_webhook(self, account_id: int, *, active_only: bool = True,
                                                 ) -> list[tuple[str, str]]:
        async with self.db.unscoped() as conn:
            cur = await conn.execute("SELECT org_id, id FROM upstream_kommo_account_targets(%s, %s)",
                                     (account_id, active_only))
            return [(r["org_id"], r["id"]) for r in await cur.fetchall()]

    async def orgs_for_kommo_amojo_for_webhook(self, amojo_id: str) -> list[tuple[str, str]]:
        async with self.db.unscoped() as conn:
            cur = await conn.execute("SELECT org_id, id FROM upstream_kommo_amojo_targets(%s)", (amojo_id,))
            return [(r["org_id"], r["id"]) for r in await cur.fetchall()]
