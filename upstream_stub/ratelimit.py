"""Outbound pacing per Kommo account: at most N calls in any one-second window.

Kommo answers 429 above 7 requests/second per account and blocks the IP after repeated 429s, so we
never send the 8th. The window is a sliding log kept in SQLite and updated under the write lock, so
every process sharing the database paces against the same log.
"""

from __future__ import annotations

import asyncio
import sqlite3

from upstream_stub.db import Database, now

WINDOW = 1.0


class AccountRateLimiter:
    """`await acquire(account)` returns once a call to that account fits within the limit."""

    def __init__(self, db: Database, per_second: int) -> None:  # PostgreSQL: store/pg/calls.py
        self.db = db
        self.limit = per_second

    def _reserve(self, account: str) -> float:
        """Record a call and return 0, or return how long to wait before trying again."""

        def q(c: sqlite3.Connection) -> float:
            ts = now()
            c.execute("DELETE FROM kommo_calls WHERE account = ? AND ts <= ?", (account, ts - WINDOW))
            count, oldest = c.execute(
                "SELECT COUNT(*), MIN(ts) FROM kommo_calls WHERE account = ?", (account,)).fetchone()
            if count < self.limit:
                c.execute("INSERT INTO kommo_calls (account, ts) VALUES (?, ?)", (account, ts))
                return 0.0
            return max(float(oldest) + WINDOW - ts, 0.001)

        return self.db.tx(q)

    async def reserve(self, account: str) -> float:
        return await self.db.run(self._reserve, account)

    async def acquire(self, account: str) -> None:
        while True:
            wait = await self.reserve(account)
            if wait <= 0:
                return
            await asyncio.sleep(wait + 0.005)
