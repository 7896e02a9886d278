"""Single-use nonces of OAuth `state` values on PostgreSQL, scoped by the org the state was issued to."""

from __future__ import annotations

from upstream_stub.db import now
from upstream_stub.store.pg.db import PgDatabase


class PgOAuthStateStore:
    """Remember issued nonces; consuming one succeeds once, before its expiry."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def remember(self, org_id: str, nonce: str, expires_at: float) -> None:
        async with self.db.tenant(org_id) as conn:
            # Row-level security limits the sweep to this org's expired nonces.
            await conn.execute("DELETE FROM oauth_states WHERE org_id = %s AND expires_at < %s", (org_id, now()))
            await conn.execute("INSERT INTO oauth_states (nonce, org_id, expires_at) VALUES (%s,%s,%s)",
                               (nonce, org_id, expires_at))

    async def consume(self, org_id: str, nonce: str) -> bool:
        return bool(await self.db.count(
            org_id, "DELETE FROM oauth_states WHERE org_id = %s AND nonce = %s AND expires_at >= %s",
            (org_id, nonce, now())))
