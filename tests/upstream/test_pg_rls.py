"""PostgreSQL row-level security: the database itself keeps tenants apart, whatever the code forgets.

Raw-driver tests connect as the application role (the user of UPSTREAM_DATABASE_URL) and bypass the
store entirely, so they test the database's policies, not our WHERE clauses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.upstream import pg
from tests.upstream.identity import user_headers
from tests.upstream.support import make_settings, running
from upstream_stub.migrations import MigrateError, migrate
from upstream_stub.migrations.postgres import HEAD, TENANT_GRANTS
from upstream_stub.store import open_stores
from upstream_stub.store.pg.db import UnsafeDatabase, check_role_sync

REPO = Path(__file__).resolve().parents[2]
ORG_A, ORG_B = "org_rls_a", "org_rls_b"


@pytest.fixture
def env(pg_env: pg.PgEnv) -> Iterator[pg.PgEnv]:
    """The run's migrated database, emptied, with one agent, connection, job, lead, event, state per org."""
    pg_env.truncate()
    with psycopg.connect(pg_env.app_url, autocommit=True) as conn:
        for org in (ORG_A, ORG_B):
            with conn.transaction():
                conn.execute("SELECT set_config('app.org_id', %s, true)", (org,))
                conn.execute("INSERT INTO agents (id, org_id, name, model, created_by, created_at, updated_at)"
                             " VALUES (%s, %s, 'n', 'm', 'u', 0, 0)", (f"agt_{org}", org))
                conn.execute("INSERT INTO crm_connections (id, org_id, provider, name, status, kommo_account_id,"
                             " created_at, updated_at) VALUES (%s, %s, 'kommo', 'c', 'active', 7, 0, 0)",
                             (f"con_{org}", org))
                conn.execute("INSERT INTO jobs (id, org_id, type, payload, status, max_attempts, run_after,"
                             " created_at, updated_at) VALUES (%s, %s, 'crm.sync', '{}', 'queued', 3, 0, 0, 0)",
                             (f"job_{org}", org))
                conn.execute("INSERT INTO crm_leads (org_id, connection_id, lead_id, updated_at)"
                             " VALUES (%s, %s, 1, 0)", (org, f"con_{org}"))
                conn.execute("INSERT INTO crm_events (org_id, connection_id, source, kind, job_id, received_at)"
                             " VALUES (%s, %s, 's', 'k', 'j', 0)", (org, f"con_{org}"))
                conn.execute("INSERT INTO oauth_states (nonce, org_id, expires_at) VALUES (%s, %s, 0)",
                             (f"n_{org}", org))
    yield pg_env


def _orgs(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(sql.SQL("SELECT org_id FROM {}").format(sql.Identifier(table))).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("table", sorted(TENANT_GRANTS))
def test_app_role_without_org_sees_no_rows(env: pg.PgEnv, table: str) -> None:
    with psycopg.connect(env.app_url, autocommit=True) as conn:
        assert _orgs(conn, table) == []
        # The same session after a transaction that set an org: the setting did not outlive it.
        with conn.transaction():
            conn.execute("SELECT set_config('app.org_id', %s, true)", (ORG_A,))
            assert _orgs(conn, table) == [ORG_A]
        assert conn.execute("SELECT current_setting('app.org_id', true)").fetchone()[0] in (None, "")
        assert _orgs(conn, table) == []
    # Sanity: the rows are really there (the superuser sees both orgs).
    with psycopg.connect(env.admin_db_url) as conn:
        assert sorted(_orgs(conn, table)) == [ORG_A, ORG_B]


@pytest.mark.parametrize("table", sorted(TENANT_GRANTS))
def test_app_role_with_org_a_sees_only_a(env: pg.PgEnv, table: str) -> None:
    with psycopg.connect(env.app_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.org_id', %s, true)", (ORG_A,))
        assert _orgs(conn, table) == [ORG_A]
        # Even an explicit filter on B, or none at all, returns nothing of B's.
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE org_id = %s").format(sql.Identifier(table)),
                            (ORG_B,)).fetchone()
        assert rows == (0,)


def test_update_and_delete_aimed_at_b_change_nothing(env: pg.PgEnv) -> None:
    with psycopg.connect(env.app_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.org_id', %s, true)", (ORG_A,))
        assert conn.execute("UPDATE agents SET name = 'pwned' WHERE org_id = %s", (ORG_B,)).rowcount == 0
        assert conn.execute("UPDATE agents SET name = 'pwned' WHERE id = %s", (f"agt_{ORG_B}",)).rowcount == 0
        assert conn.execute("UPDATE crm_connections SET status = 'revoked'").rowcount == 1  # A's own only
        assert conn.execute("DELETE FROM crm_leads WHERE org_id = %s", (ORG_B,)).rowcount == 0
        assert conn.execute("DELETE FROM oauth_states").rowcount == 1
    with psycopg.connect(env.admin_db_url) as conn:
        assert conn.execute("SELECT name FROM agents WHERE org_id = %s", (ORG_B,)).fetchone() == ("n",)
        assert conn.execute("SELECT status FROM crm_connections WHERE org_id = %s", (ORG_B,)).fetchone() == (
            "active",)
        assert conn.execute("SELECT count(*) FROM crm_leads WHERE org_id = %s", (ORG_B,)).fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM oauth_states WHERE org_id = %s", (ORG_B,)).fetchone() == (1,)


def test_writing_a_row_of_b_or_moving_a_row_to_b_is_refused(env: pg.PgEnv) -> None:
    with psycopg.connect(env.app_url) as conn:
        for statement, params in (
            ("INSERT INTO agents (id, org_id, name, model, created_by, created_at, updated_at)"
             " VALUES ('agt_x', %s, 'n', 'm', 'u', 0, 0)", (ORG_B,)),
            ("UPDATE agents SET org_id = %s", (ORG_B,)),
            ("INSERT INTO jobs (id, org_id, type, payload, status, max_attempts, run_after, created_at,"
             " updated_at) VALUES ('job_x', %s, 't', '{}', 'queued', 1, 0, 0, 0)", (ORG_B,)),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                with conn.transaction():
                    conn.execute("SELECT set_config('app.org_id', %s, true)", (ORG_A,))
                    conn.execute(statement, params)


def test_app_role_has_no_more_than_its_grants(env: pg.PgEnv) -> None:
    with psycopg.connect(env.app_url) as conn:
        for statement in ("DELETE FROM jobs", "TRUNCATE agents", "ALTER TABLE agents DISABLE ROW LEVEL SECURITY",
                          "DROP POLICY tenant_isolation ON agents", "UPDATE schema_migrations SET version = 0",
                          "CREATE TABLE public.mine (org_id text)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)  # type: ignore[arg-type]


def test_catalogue_rls_forced_everywhere_and_app_role_cannot_bypass(env: pg.PgEnv) -> None:
    with psycopg.connect(env.admin_db_url) as conn:
        tables = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' ORDER BY 1").fetchall()
        assert [t[0] for t in tables] == sorted(TENANT_GRANTS)
        for name, enabled, forced, owner in tables:
            assert enabled and forced, f"{name}: row-level security not enabled and forced"
            assert owner == env.owner
            policies = conn.execute("SELECT qual, with_check FROM pg_policies WHERE tablename = %s"
                                    " AND policyname = 'tenant_isolation'", (name,)).fetchall()
            assert len(policies) == 1 and all("current_setting('app.org_id'" in p for p in policies[0])
        role = conn.execute("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
                            " WHERE rolname = %s", (env.app,)).fetchone()
        assert role == (False, False, False, False)
        owned = conn.execute("SELECT relname FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
                             " WHERE rolname = %s)", (env.app,)).fetchall()
        assert owned == []
        assert conn.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                            " WHERE r.rolname = %s", (env.app,)).fetchone() == (0,)
        # The definer functions: fixed search_path, not executable by PUBLIC, executable by the app role.
        for fn in ("upstream_claim_job", "upstream_kommo_account_targets", "upstream_kommo_amojo_targets"):
            secdef, config, public_exec, app_exec = conn.execute(
                "SELECT prosecdef, proconfig, has_function_privilege('public', p.oid, 'EXECUTE'),"
                " has_function_privilege(%s, p.oid, 'EXECUTE') FROM pg_proc p WHERE proname = %s",
                (env.app, fn)).fetchone()
            assert secdef and any(c.startswith("search_path=") for c in config)
            assert not public_exec and app_exec
    # The application's own start-up check agrees.
    assert check_role_sync(env.app_url) is None


def test_definer_lookups_return_only_ids_and_claim_one_job(env: pg.PgEnv) -> None:
    with psycopg.connect(env.app_url, autocommit=True) as conn:
        targets = conn.execute("SELECT * FROM upstream_kommo_account_targets(7, true)").fetchall()
        assert sorted(targets) == [(ORG_A, f"con_{ORG_A}"), (ORG_B, f"con_{ORG_B}")]
        claimed = conn.execute("SELECT id, org_id, status FROM upstream_claim_job('w', 't', 30, 1)").fetchall()
        assert len(claimed) == 1 and claimed[0][2] == "running"
        # The claim did not open the table: without an org the app role still sees no job.
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_start_is_refused_for_roles_that_could_bypass(env: pg.PgEnv) -> None:
    assert "owns table" in (check_role_sync(env.owner_url) or "")
    assert "superuser" in (check_role_sync(env.admin_db_url) or "")
    bypass = f"{env.app}_bypass"
    member = f"{env.app}_member"
    with psycopg.connect(pg.ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS").format(sql.Identifier(bypass)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(member),
                                                                         sql.Identifier(env.owner)))
    try:
        bypass_url = env.app_url.replace(env.app, bypass)
        assert "BYPASSRLS" in (check_role_sync(bypass_url) or "")
        member_url = env.app_url.replace(env.app, member)
        assert f"(as a member of {env.owner})" in (check_role_sync(member_url) or "")
        with pytest.raises(UnsafeDatabase, match="could bypass row-level security"):
            asyncio.run(open_stores(bypass_url))
    finally:
        with psycopg.connect(pg.ADMIN_URL, autocommit=True) as conn:
            for role in (bypass, member):
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _serve(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upstream_stub", *env.pop("_args", "").split()],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "KOMMO_", "GATEWAY_"))}
    env.update(PYTHONPATH=str(REPO), UPSTREAM_PORT="1")  # port 1: it must never get as far as binding
    return env


def test_process_refuses_owner_role_in_one_line_and_exit_2(env: pg.PgEnv, tmp_path: Path) -> None:
    out = _serve({**_base_env(), "UPSTREAM_DATABASE_URL": env.owner_url}, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("upstream_stub: refusing to start: database role")
    assert "owns table" in lines[0] and "BYPASSRLS" in lines[0]


def test_process_refuses_unmigrated_database(tmp_path: Path) -> None:
    fresh = pg.create("upm")
    try:
        out = _serve({**_base_env(), "UPSTREAM_DATABASE_URL": fresh.app_url}, tmp_path)
        assert out.returncode == 2
        assert "schema is not migrated" in out.stderr and "migrate" in out.stderr
    finally:
        pg.drop(fresh)


def test_migrate_command_exit_codes_and_idempotence(tmp_path: Path) -> None:
    fresh = pg.create("upm")
    try:
        nobody = fresh.app_url.replace(fresh.app, fresh.app + "_missing")
        superuser = fresh.owner_url.replace(fresh.owner, "postgres")
        unreachable = fresh.owner_url.replace(fresh.db, fresh.db + "_x")
        for owner_url, app_url, code, message in (
            (None, fresh.app_url, 2, "UPSTREAM_DATABASE_OWNER_URL must be set"),
            (fresh.owner_url, None, 2, "UPSTREAM_DATABASE_URL must be set"),
            ("mysql://x@y/z", fresh.app_url, 2, "must be a postgresql:// URL"),
            (fresh.owner_url, nobody, 2, "does not exist"),
            (fresh.owner_url, superuser, 2, "superuser or has BYPASSRLS"),
            (fresh.owner_url, fresh.owner_url, 2, "is the owner role"),
            (unreachable, fresh.app_url, 1, "cannot connect"),
        ):
            with pytest.raises(MigrateError) as err:
                migrate(owner_url, app_url)
            assert (err.value.code, message in str(err.value)) == (code, True), str(err.value)
        assert "not migrated" in (check_role_sync(fresh.app_url) or "")  # the refusals applied nothing
        # The real command: a refusal is one line on stderr and exit 2; success is exit 0, twice.
        base = {**_base_env(), "_args": "migrate", "UPSTREAM_DATABASE_OWNER_URL": fresh.owner_url}
        out = _serve({**base, "UPSTREAM_DATABASE_URL": nobody}, tmp_path)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        good = {**base, "UPSTREAM_DATABASE_URL": fresh.app_url}
        first = _serve(dict(good), tmp_path)
        assert first.returncode == 0 and f"{HEAD} step(s) applied" in first.stdout, first.stderr
        assert "0 step(s) applied" in migrate(fresh.owner_url, fresh.app_url)
        assert check_role_sync(fresh.app_url) is None
    finally:
        pg.drop(fresh)


async def test_two_orgs_hammered_through_a_small_pool_never_mix(pg_env: pg.PgEnv, tmp_path: Path) -> None:
    """400 interleaved requests of two orgs over a pool of 2 connections: every answer is its own org's."""
    pg_env.truncate()
    settings = make_settings(tmp_path, database_url=pg_env.app_url, db_pool_size=2, worker_enabled=False)
    async with running(settings) as up:
        for org in (ORG_A, ORG_B):
            for i in range(3):
                r = await up.client.post("/agents", headers=user_headers(org), json={
                    "orgId": org, "name": f"{org}-{i}", "model": "gpt"})
                assert r.status_code == 201, r.text

        async def one(i: int) -> tuple[str, httpx.Response]:
            org = (ORG_A, ORG_B)[i % 2]
            if i % 5 == 0:  # writes interleaved with the reads
                return org, await up.client.post("/agents", headers=user_headers(org), json={
                    "orgId": org, "name": f"{org}-w{i}", "model": "gpt"})
            return org, await up.client.get("/agents", params={"orgId": org, "limit": 100},
                                            headers=user_headers(org))

        results = await asyncio.gather(*(one(i) for i in range(400)))
        for org, r in results:
            assert r.status_code in (200, 201), r.text
            body = r.json()
            items = body["items"] if "items" in body else [body]
            assert items and all(a["orgId"] == org and a["name"].startswith(org) for a in items), (org, body)
        assert up.svc.db.pool.get_stats()["pool_max"] == 2


async def test_two_processes_complete_200_jobs_exactly_once(pg_env: pg.PgEnv, tmp_path: Path) -> None:
    pg_env.truncate()
    stores = await open_stores(pg_env.app_url, pool_size=2)
    procs, outs = [], []
    ids: list[tuple[str, str]] = []
    rows = []
    try:
        for n in range(2):
            out, ready = tmp_path / f"ran-{n}", tmp_path / f"ready-{n}"
            outs.append(out)
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.upstream.count_worker", pg_env.app_url, str(out), str(ready),
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}))
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, "worker process never became ready"
                await asyncio.sleep(0.05)
        ids = [(org, (await stores.jobs.enqueue(org, "crm.sync", {"n": i}, 3))["id"])
               for i in range(100) for org in (ORG_A, ORG_B)]
        deadline = time.monotonic() + 120
        pending = list(ids)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} jobs never finished"
            await asyncio.sleep(0.2)
            pending = [(org, j) for org, j in pending if (await stores.jobs.get(org, j))["status"] != "succeeded"]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.wait_for(p.wait(), 30)
        rows = [await stores.jobs.get(org, j) for org, j in ids]
        await stores.close()
    assert all(p.returncode == 0 for p in procs)
    runs = [line for out in outs for line in out.read_text().split()]
    assert sorted(runs) == sorted(j for _, j in ids), "a job ran twice or never"
    assert all(out.read_text().strip() for out in outs), "both processes took part"
    assert all(r["attempts"] == 1 and r["status"] == "succeeded" for r in rows)


async def test_a_failed_statement_leaves_the_pooled_connection_clean(pg_env: pg.PgEnv) -> None:
    """One connection, one failing tenant statement: the next user of it has no org and no transaction."""
    pg_env.truncate()
    stores = await open_stores(pg_env.app_url, pool_size=1)
    db = stores.db
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await db.one(ORG_A, "INSERT INTO oauth_states (nonce, org_id, expires_at) VALUES ('n', %s, 0)", (ORG_B,))
        with pytest.raises(psycopg.errors.UndefinedTable):
            await db.all(ORG_A, "SELECT * FROM no_such_table WHERE org_id = %s", (ORG_A,))
        async with db.unscoped() as conn:
            row = await (await conn.execute("SELECT current_setting('app.org_id', true) AS org,"
                                            " (SELECT count(*) FROM oauth_states) AS n")).fetchone()
        assert row is not None and row["org"] in (None, "") and row["n"] == 0
        await stores.states.remember(ORG_A, "n-ok", time.time() + 60)
        assert await stores.states.consume(ORG_B, "n-ok") is False and await stores.states.consume(ORG_A, "n-ok")
        with pytest.raises(ValueError):
            await db.all("", "SELECT 1")
    finally:
        await stores.close()


def test_settings_refuse_a_non_postgres_url_and_the_owner_as_app_role(tmp_path: Path) -> None:
    from upstream_stub.app import StartupError, create_app

    with pytest.raises(StartupError, match="UPSTREAM_DATABASE_URL must be a postgresql:// URL"):
        create_app(make_settings(tmp_path, database_url="mysql://app@db/x"))
    with pytest.raises(StartupError, match="must not use the owner role"):
        create_app(make_settings(tmp_path, database_url="postgresql://own@db/x",
                                 database_owner_url="postgresql://own@db/x"))
    ok = make_settings(tmp_path, database_url="postgresql://app:s3cret@db:5432/x")
    assert ok.problems() == [] and ok.database_label() == "postgresql://app:***@db:5432/x"
