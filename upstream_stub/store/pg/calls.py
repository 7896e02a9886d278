"""Outbound pacing per Kommo account on PostgreSQL: the same sliding log, serialised per account.

The log holds no tenant data (a Kommo account id and a time), so it has no row-level security; a
transaction-scoped advisory lock on the account makes count-then-insert atomic across processes.
"""

from __future__ import annotations

from upstream_stub.db import now
from upstream_stub.ratelimit import WINDOW, AccountRateLimiter
from upstream_stub.store.pg.db import PgDatabase


class PgAccountRateLimiter(AccountRateLimiter):
    """`await acquire(account)` returns once a call to that account fits within the limit."""

    def __init__(self, db: PgDatabase, per_second: int) -> None:  # no super().__init__: that one takes SQLite
        self.pg = db
        self.limit = per_second

    async def reserve(self, account: str) -> float:
        async with self.pg.unscoped() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (account,))
            ts = now()
            await conn.execute("DELETE FROM kommo_calls WHERE account = %s AND ts <= %s", (account, ts - WINDOW))
            cur = await conn.execute("SELECT count(*) AS n, min(ts) AS oldest FROM kommo_calls WHERE account = %s",
                                     (account,))
            row = await cur.fetchone()
            assert row is not None
            if row["n"] < self.limit:
                await conn.execute("INSERT INTO kommo_calls (account, ts) VALUES (%s, %s)", (account, ts))
                return 0.0
            return max(float(row["oldest"]) + WINDOW - ts, 0.001)
