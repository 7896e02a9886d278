"""The data-access layer. Every function takes the org as a required argument and scopes by it.

The only queries not scoped by an org are named for their single purpose: the webhook lookups by
Kommo account id (`*_for_webhook`) and the job worker's claim (`claim_next_any_org`), whose result
is then handled strictly within the job's own org.

Two backends with the same classes' methods and results: SQLite (the embedded default, `store/*.py`)
and PostgreSQL with row-level security (`store/pg/`), chosen by `UPSTREAM_DATABASE_URL`.
`open_stores` opens one and returns its stores; the same test suite runs against both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Stores:
    """One opened backend and its stores (typed loosely: either backend's classes)."""

    db: Any
    agents: Any
    connections: Any
    jobs: Any
    leads: Any
    states: Any
    kind: str

    def rate_limiter(self, per_second: int) -> Any:
        if self.kind == "postgresql":
            from upstream_stub.store.pg.calls import PgAccountRateLimiter

            return PgAccountRateLimiter(self.db, per_second)
        from upstream_stub.ratelimit import AccountRateLimiter

        return AccountRateLimiter(self.db, per_second)

    async def close(self) -> None:
        await self.db.close()


async def open_stores(target: str, *, pool_size: int = 10, check: bool = True) -> Stores:
    """Open `target` (a postgresql:// URL, or an SQLite path) and build its stores."""
    if target.startswith(("postgresql://", "postgres://")):
        from upstream_stub.store.pg.agents import PgAgentStore
        from upstream_stub.store.pg.connections import PgConnectionStore
        from upstream_stub.store.pg.db import PgDatabase
        from upstream_stub.store.pg.jobs import PgJobStore
        from upstream_stub.store.pg.leads import PgLeadStore
        from upstream_stub.store.pg.oauth_states import PgOAuthStateStore

        pg = PgDatabase(target, max_size=pool_size)
        await pg.open(check=check)
        return Stores(pg, PgAgentStore(pg), PgConnectionStore(pg), PgJobStore(pg), PgLeadStore(pg),
                      PgOAuthStateStore(pg), "postgresql")
    from upstream_stub.db import Database
    from upstream_stub.store.agents import AgentStore
    from upstream_stub.store.connections import ConnectionStore
    from upstream_stub.store.jobs import JobStore
    from upstream_stub.store.leads import LeadStore
    from upstream_stub.store.oauth_states import OAuthStateStore

    db = Database(target)
    await db.open()
    return Stores(db, AgentStore(db), ConnectionStore(db), JobStore(db), LeadStore(db), OAuthStateStore(db),
                  "sqlite")
