"""Single-use nonces of OAuth `state` values, scoped by the org the state was issued to."""

from __future__ import annotations

from upstream_stub.db import Database, now


class OAuthStateStore:
    """Remember issued nonces; consuming one succeeds once, before its expiry."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def remember(self, org_id: str, nonce: str, expires_at: float) -> None:
        def q() -> None:
            c = self.db.conn
            c.execute("DELETE FROM oauth_states WHERE expires_at < ?", (now(),))
            c.execute("INSERT INTO oauth_states (nonce, org_id, expires_at) VALUES (?,?,?)",
                      (nonce, org_id, expires_at))
        await self.db.run(q)

    async def consume(self, org_id: str, nonce: str) -> bool:
        cur = await self.db.run(lambda: self.db.conn.execute(
            "DELETE FROM oauth_states WHERE org_id = ? AND nonce = ? AND expires_at >= ?",
            (org_id, nonce, now())))
        return bool(cur.rowcount)
