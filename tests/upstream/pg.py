"""A private PostgreSQL database and two roles per test run, on the machine's server (127.0.0.1:5432).

Each run creates a uniquely named database, an owner role (owns the tables, runs `migrate`) and an
application role (not superuser, no BYPASSRLS, owns nothing), so parallel runs never collide, and
drops all three afterwards. `PG_ADMIN_URL` overrides the superuser connection used for that.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ("agents", "crm_connections", "jobs", "crm_leads", "crm_events", "oauth_states", "kommo_calls")


def _url(role: str, db: str) -> str:
    base = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    host, port = base.get("host", "127.0.0.1"), base.get("port", "5432")
    return f"postgresql://{role}@{host}:{port}/{db}"


@dataclass
class PgEnv:
    db: str
    owner: str
    app: str

    @property
    def owner_url(self) -> str:
        return _url(self.owner, self.db)

    @property
    def app_url(self) -> str:
        return _url(self.app, self.db)

    @property
    def admin_db_url(self) -> str:
        """Superuser connection to this run's database (for catalogue and setup steps only)."""
        return _url("postgres", self.db)

    def truncate(self) -> None:
        """Empty every table (as the owner, whose TRUNCATE is not subject to row-level security)."""
        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))


def create(prefix: str = "upt") -> PgEnv:
    tag = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    env = PgEnv(db=f"{tag}_db", owner=f"{tag}_owner", app=f"{tag}_app")
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB").format(
            sql.Identifier(env.owner)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB").format(
            sql.Identifier(env.app)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(env.db), sql.Identifier(env.owner)))
    return env


def sweep_stale() -> int:
    """Drop what test runs killed before their teardown left behind: databases and roles named by
    this module whose creating process no longer exists. Returns how many databases went."""
    import re

    pattern = re.compile(r"^(up[tm])_(\d+)_([0-9a-f]{8})_db$")
    gone = 0
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname ~ '^up[tm]_'").fetchall():
            m = pattern.match(name)
            if m is None or os.path.exists(f"/proc/{m.group(2)}"):
                continue
            drop(PgEnv(db=name, owner=name[:-3] + "_owner", app=name[:-3] + "_app"))
            gone += 1
    return gone


def drop(env: PgEnv) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(env.db)))
        for role in (env.app, env.owner):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def migrated(prefix: str = "upt") -> PgEnv:
    """A fresh database with the schema applied by the real migrate step."""
    from upstream_stub.migrations import migrate

    env = create(prefix)
    try:
        migrate(env.owner_url, env.app_url)
    except BaseException:
        drop(env)
        raise
    return env


def dump_all(app_url: str) -> bytes:
    """Every row of every table of the database behind `app_url`, as text, read as the superuser."""
    info = psycopg.conninfo.conninfo_to_dict(app_url)
    with psycopg.connect(_url("postgres", str(info["dbname"])), autocommit=True) as conn:
        parts = [conn.execute(sql.SQL("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {} t").format(
            sql.Identifier(table))).fetchone()[0] for table in TABLES]  # type: ignore[index]
    return "\n".join(parts).encode()
