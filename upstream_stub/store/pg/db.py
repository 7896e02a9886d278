"""PostgreSQL access: a psycopg 3 connection pool, and every statement inside a tenant transaction.

`tenant(org_id)` opens a transaction and first runs `set_config('app.org_id', org_id, true)` — the
transaction-local form of `SET LOCAL` — so the row-level security policies see that org and no
other; the setting ends with the transaction, so a pooled connection never carries one request's
org into the next. `unscoped()` is a transaction with no org at all: the policies then match no row,
and it is used only to call the narrowly granted SECURITY DEFINER functions (job claim, webhook
lookups) and for the org-less Kommo pacing log.

Before serving, `check_role` refuses a connection whose role could bypass row-level security
(superuser, BYPASSRLS, membership in such a role, owning a table) or whose schema is not migrated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from psycopg import AsyncClientCursor, AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from upstream_stub.migrations.postgres import HEAD

Row = dict[str, Any]
_TENANT_PREFIX = "BEGIN; SELECT set_config('app.org_id', %s, true); "

# One row per reason this role could read or write another tenant's rows; none = safe.
ROLE_PROBLEMS_SQL = """
SELECT 'is a superuser' FROM pg_roles WHERE rolname = current_user AND rolsuper
UNION ALL
SELECT 'has BYPASSRLS' FROM pg_roles WHERE rolname = current_user AND rolbypassrls
UNION ALL
SELECT 'can act as role ' || quote_ident(r.rolname) || ', which bypasses row-level security'
  FROM pg_roles r
 WHERE r.rolname <> current_user AND (r.rolsuper OR r.rolbypassrls) AND pg_has_role(current_user, r.oid, 'MEMBER')
UNION ALL
SELECT 'owns table ' || quote_ident(c.relname)
       || CASE WHEN c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
               THEN ' (as a member of ' || quote_ident(pg_get_userbyid(c.relowner)) || ')' ELSE '' END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
   AND pg_has_role(current_user, c.relowner, 'MEMBER')
UNION ALL
SELECT 'table ' || quote_ident(c.relname) || ' has org_id but no forced row-level security'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
   AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
"""
# -1: no schema_migrations table; -2: this role may not read it (migrate grants that); else the version.
READABLE_SQL = ("SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN -1"
                " WHEN NOT has_table_privilege('schema_migrations', 'SELECT') THEN -2 ELSE 0 END")
VERSION_SQL = "SELECT coalesce(max(version), 0) FROM schema_migrations"


class UnsafeDatabase(RuntimeError):
    """The configured role or schema must not serve tenant data; the message says why, in one line."""


def redact_url(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def role_refusal(role: str, problems: Sequence[str], version: int) -> str | None:
    """The one-line refusal for these catalogue findings, or None when the role is safe to serve."""
    if problems:
        return (f"database role {role!r} could bypass row-level security ({'; '.join(problems)});"
                " UPSTREAM_DATABASE_URL must name a role that owns no table, is not superuser and has no BYPASSRLS")
    if version == -2:
        return (f"database role {role!r} may not read schema_migrations; run `python -m upstream_stub migrate`"
                " with UPSTREAM_DATABASE_URL naming this role, so it gets its grants")
    if version < HEAD:
        state = "not migrated" if version < 0 else f"at version {version}"
        return (f"database schema is {state}, this upstream needs version {HEAD};"
                " run `python -m upstream_stub migrate` with UPSTREAM_DATABASE_OWNER_URL")
    if version > HEAD:
        return f"database schema is at version {version}, newer than this upstream ({HEAD}); upgrade the upstream"
    return None


class PgDatabase:
    """The pool of one upstream process; all access goes through `tenant()` or `unscoped()`."""

    kind = "postgresql"

    def __init__(self, url: str, max_size: int = 10) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[AsyncConnection[Row]] = AsyncConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=15.0, connection_class=AsyncConnection[Row],
            kwargs={"autocommit": True, "row_factory": dict_row}, name="upstream")

    @property
    def path(self) -> str:
        """What another process needs to open the same store (tests hand it to subprocesses)."""
        return self.url

    async def open(self, *, check: bool = True) -> None:
        await self.pool.open(wait=True, timeout=15.0)
        if check:
            await self.check_role()

    async def check_role(self) -> None:
        async with self.pool.connection() as conn:
            refusal = await check_role(conn)
        if refusal:
            await self.pool.close()
            raise UnsafeDatabase(refusal)

    @asynccontextmanager
    async def tenant(self, org_id: str) -> AsyncIterator[AsyncConnection[Row]]:
        """A transaction in which the database shows and accepts only `org_id`'s rows."""
        if not isinstance(org_id, str) or not org_id:
            raise ValueError("a tenant transaction needs a non-empty org id")
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('app.org_id', %s, true)", (org_id,))
            yield conn

    @asynccontextmanager
    async def unscoped(self) -> AsyncIterator[AsyncConnection[Row]]:
        """A transaction with no org: tenant tables show nothing; for definer functions and pacing."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def _single(self, org_id: str, query: str, params: Sequence[Any], fetch: str) -> Any:
        """One statement in its own tenant transaction, in ONE round trip.

        `BEGIN; SELECT set_config('app.org_id', <org>, true); <statement>; COMMIT` goes out as one
        simple-protocol message, its parameters bound client-side by psycopg's escaping (never by
        string concatenation); the four-round-trip form measured 2.5x slower per statement. The
        statements run in order, so the policies see the org; on any error the transaction is
        rolled back before the connection goes back to the pool.
        """
        if not isinstance(org_id, str) or not org_id:
            raise ValueError("a tenant transaction needs a non-empty org id")
        async with self.pool.connection() as conn:
            cur = AsyncClientCursor(conn, row_factory=dict_row)
            try:
                await cur.execute(_TENANT_PREFIX + query + "; COMMIT", (org_id, *params))  # type: ignore[arg-type]
            except BaseException:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.execute("ROLLBACK")
                raise
            cur.nextset()  # past BEGIN's result
            cur.nextset()  # past set_config's: now at the statement's own result
            if fetch == "count":
                return cur.rowcount
            if cur.description is None:
                return None if fetch == "one" else []
            return await (cur.fetchone() if fetch == "one" else cur.fetchall())

    async def one(self, org_id: str, query: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._single(org_id, query, params, "one")
        return row

    async def all(self, org_id: str, query: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = await self._single(org_id, query, params, "all")
        return rows

    async def count(self, org_id: str, query: str, params: Sequence[Any] = ()) -> int:
        """Rows changed by one statement."""
        n: int = await self._single(org_id, query, params, "count")
        return n

    async def close(self) -> None:
        await self.pool.close()


async def check_role(conn: AsyncConnection[Any]) -> str | None:
    """Ask the catalogue whether this connection's role could see past RLS; the refusal line or None."""
    role = (await (await conn.execute("SELECT current_user")).fetchall())[0]
    problems = [_first(r) for r in await (await conn.execute(ROLE_PROBLEMS_SQL)).fetchall()]
    version = _first((await (await conn.execute(READABLE_SQL)).fetchall())[0])
    if version == 0:
        version = _first((await (await conn.execute(VERSION_SQL)).fetchall())[0])
    return role_refusal(str(_first(role)), problems, int(version))


def check_role_sync(url: str) -> str | None:
    """The same check on a short-lived synchronous connection (`python -m upstream_stub` pre-flight)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=15) as conn:
        role = _first(conn.execute("SELECT current_user").fetchall()[0])
        problems = [_first(r) for r in conn.execute(ROLE_PROBLEMS_SQL).fetchall()]
        version = _first(conn.execute(READABLE_SQL).fetchall()[0])
        if version == 0:
            version = _first(conn.execute(VERSION_SQL).fetchall()[0])
    return role_refusal(str(role), problems, int(version))


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
