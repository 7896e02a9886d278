"""`python -m upstream_stub migrate`: the privileged schema step of the PostgreSQL store.

Connects with `UPSTREAM_DATABASE_OWNER_URL` (the role that owns the tables), and in ONE transaction,
under an advisory lock (so two concurrent runs serialise): applies the schema steps this database
has not seen, then re-applies row-level security, policies, definer functions and the grants of the
application role, which is the user named in `UPSTREAM_DATABASE_URL`. That role must already exist
(operators create it: `CREATE ROLE app LOGIN PASSWORD '...' NOSUPERUSER NOBYPASSRLS`) and is refused
when it could bypass row-level security. Nothing is half-applied: any failure rolls everything back.

Exit codes: 0 schema at head (also when there was nothing to do); 1 database unreachable or a step
failed (rolled back; safe to run again); 2 configuration refused (a variable missing or malformed,
the application role missing, unsafe, or the owner itself, or the database newer than this code).
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from upstream_stub.migrations.postgres import HEAD, STEPS, TENANT_GRANTS, security_sql

LOCK_KEY = 0x75707374  # "upst": the advisory lock of the migrate step


class MigrateError(Exception):
    """A refusal or failure; `code` is the process exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _app_role(app_url: str | None) -> str:
    if not app_url:
        raise MigrateError(2, "UPSTREAM_DATABASE_URL must be set: its user is the application role to grant")
    if not app_url.startswith(("postgresql://", "postgres://")):
        raise MigrateError(2, "UPSTREAM_DATABASE_URL must be a postgresql:// URL")
    role = urlsplit(app_url).username
    if not role:
        raise MigrateError(2, "UPSTREAM_DATABASE_URL must name its user (the application role)")
    return role


def migrate(owner_url: str | None, app_url: str | None) -> str:
    """Bring the database to `HEAD` and re-apply its security; returns the one-line summary."""
    import psycopg

    if not owner_url:
        raise MigrateError(2, "UPSTREAM_DATABASE_OWNER_URL must be set (the owner connection used only by migrate)")
    if not owner_url.startswith(("postgresql://", "postgres://")):
        raise MigrateError(2, "UPSTREAM_DATABASE_OWNER_URL must be a postgresql:// URL")
    app_role = _app_role(app_url)
    try:
        conn = psycopg.connect(owner_url, connect_timeout=15)
    except psycopg.Error as exc:
        raise MigrateError(1, f"cannot connect with UPSTREAM_DATABASE_OWNER_URL: {_one_line(exc)}") from None
    try:
        with conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            owner, schema = conn.execute("SELECT current_user, current_schema()").fetchone() or ("", "")
            if not schema:
                raise MigrateError(2, "the owner connection has no current schema (check its search_path)")
            _check_app_role(conn, app_role, owner)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
            version = int(row[0]) if row else 0
            if version > HEAD:
                raise MigrateError(2, f"database schema is at version {version}, newer than this upstream ({HEAD})")
            for step in range(version + 1, HEAD + 1):
                conn.execute(STEPS[step - 1])  # type: ignore[arg-type]  # our own constant SQL
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (step,))
            for statement in security_sql(schema, owner, app_role):
                conn.execute(statement)
    except MigrateError:
        raise
    except psycopg.Error as exc:
        raise MigrateError(1, f"migration failed and was rolled back: {_one_line(exc)}") from None
    finally:
        conn.close()
    applied = HEAD - version
    return (f"schema at version {HEAD} ({applied} step(s) applied); row-level security forced on"
            f" {len(TENANT_GRANTS)} tables; grants for role {app_role!r} in schema {schema!r}")


def _check_app_role(conn: object, app_role: str, owner: str) -> None:
    from psycopg import Connection

    assert isinstance(conn, Connection)
    if app_role == owner:
        raise MigrateError(2, f"the application role {app_role!r} is the owner role; use a separate role")
    row = conn.execute("SELECT rolsuper, rolbypassrls, pg_has_role(oid, %s, 'MEMBER') FROM pg_roles"
                       " WHERE rolname = %s", (owner, app_role)).fetchone()
    if row is None:
        raise MigrateError(2, f"the application role {app_role!r} does not exist; create it first"
                              f" (CREATE ROLE {app_role} LOGIN NOSUPERUSER NOBYPASSRLS)")
    superuser, bypass, member_of_owner = row
    if superuser or bypass:
        raise MigrateError(2, f"the application role {app_role!r} is superuser or has BYPASSRLS; refused")
    if member_of_owner:
        raise MigrateError(2, f"the application role {app_role!r} is a member of the owner role {owner!r};"
                              " it would own the tables")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    """The `migrate` subcommand; prints one line and returns the exit code."""
    from upstream_stub.settings import UpstreamSettings

    settings = UpstreamSettings()
    try:
        summary = migrate(settings.database_owner_url, settings.database_url)
    except MigrateError as exc:
        print(f"upstream_stub migrate: {exc}", file=sys.stderr)
        return exc.code
    print(f"upstream_stub migrate: {summary}")
    return 0
