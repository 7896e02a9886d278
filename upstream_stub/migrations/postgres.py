"""PostgreSQL schema of the bundled upstream, its row-level security and the application role's grants.

`STEPS` are applied in order, each once; `schema_migrations` records how far a database got. Append
new steps; never edit a shipped one. `security_sql` is re-applied on every `migrate` (it is
idempotent): row-level security ENABLEd and FORCEd on every table with an `org_id`, one policy per
such table comparing `org_id` with `current_setting('app.org_id', true)`, the three SECURITY DEFINER
functions of the cross-tenant paths, and the application role's grants (revoked first, so a grant
removed here is removed from the database too).

Timestamps are epoch seconds (`double precision`) and JSON columns are text, as in the SQLite
schema, so both stores hand the routes the same values.
"""

from __future__ import annotations

from psycopg import sql

STEPS: list[str] = [
    """
    CREATE TABLE agents (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        org_id text NOT NULL CHECK (org_id <> ''),
        name text NOT NULL,
        description text NOT NULL DEFAULT '',
        model text NOT NULL,
        config text NOT NULL DEFAULT '{}',
        created_by text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX agents_org ON agents (org_id, seq);

    CREATE TABLE crm_connections (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        org_id text NOT NULL CHECK (org_id <> ''),
        provider text NOT NULL,
        name text NOT NULL,
        base_domain text,
        status text NOT NULL,
        kommo_account_id bigint,
        amojo_id text,
        secret_kid text,
        secret_blob bytea,
        token_expires_at double precision,
        token_version integer NOT NULL DEFAULT 0,
        refresh_owner text,
        refresh_until double precision,
        last_sync_at double precision,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX crm_connections_org ON crm_connections (org_id, seq);
    CREATE INDEX crm_connections_account ON crm_connections (kommo_account_id);
    CREATE INDEX crm_connections_amojo ON crm_connections (amojo_id);

    CREATE TABLE jobs (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        org_id text NOT NULL CHECK (org_id <> ''),
        type text NOT NULL,
        payload text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        run_after double precision NOT NULL,
        lease_owner text,
        claim_token text,
        lease_until double precision,
        last_error text,
        result text,
        dedupe_key text,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        completed_at double precision
    );
    CREATE INDEX jobs_org ON jobs (org_id, seq);
    CREATE INDEX jobs_ready ON jobs (status, run_after);
    CREATE UNIQUE INDEX jobs_active_dedupe ON jobs (org_id, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');

    CREATE TABLE crm_leads (
        org_id text NOT NULL CHECK (org_id <> ''),
        connection_id text NOT NULL,
        lead_id bigint NOT NULL,
        name text NOT NULL DEFAULT '',
        status_id bigint,
        pipeline_id bigint,
        price bigint,
        updated_at double precision NOT NULL,
        PRIMARY KEY (org_id, connection_id, lead_id)
    );

    CREATE TABLE crm_events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        org_id text NOT NULL CHECK (org_id <> ''),
        connection_id text NOT NULL,
        source text NOT NULL,
        kind text NOT NULL,
        job_id text NOT NULL,
        received_at double precision NOT NULL,
        UNIQUE (org_id, job_id, kind)
    );

    CREATE TABLE oauth_states (
        nonce text PRIMARY KEY,
        org_id text NOT NULL CHECK (org_id <> ''),
        expires_at double precision NOT NULL
    );

    CREATE TABLE kommo_calls (
        account text NOT NULL,
        ts double precision NOT NULL
    );
    CREATE INDEX kommo_calls_account ON kommo_calls (account, ts);
    """,
]

HEAD = len(STEPS)

# Tables holding tenant rows (each has org_id) and what the application role may do on each.
TENANT_GRANTS: dict[str, str] = {
    "agents": "SELECT, INSERT, UPDATE, DELETE",
    "crm_connections": "SELECT, INSERT, UPDATE, DELETE",
    "jobs": "SELECT, INSERT, UPDATE",
    "crm_leads": "SELECT, INSERT, UPDATE, DELETE",
    "crm_events": "SELECT, INSERT",
    "oauth_states": "SELECT, INSERT, DELETE",
}
# Not tenant data: the outbound pacing log (Kommo account id + time) and the schema version.
OTHER_GRANTS: dict[str, str] = {
    "kommo_calls": "SELECT, INSERT, DELETE",
    "schema_migrations": "SELECT",
}

# The cross-tenant paths, each a SECURITY DEFINER function running as the owner (whose own policy
# on that table lets it see every org) with a fixed search_path, executable by the app role only.
FUNCTIONS = """
CREATE OR REPLACE FUNCTION upstream_claim_job(p_owner text, p_token text, p_lease double precision,
                                              p_now double precision)
RETURNS SETOF jobs LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema} AS $$
BEGIN
    -- A dead lease on a job that has used all its attempts ends it rather than running it again.
    -- SKIP LOCKED here too: two claimers never wait on (or deadlock over) the same dead rows.
    UPDATE jobs SET status = 'failed', last_error = 'lease expired on last attempt', lease_owner = NULL,
        claim_token = NULL, lease_until = NULL, updated_at = p_now
     WHERE id IN (SELECT d.id FROM jobs d
                   WHERE d.status = 'running' AND d.lease_until < p_now AND d.attempts >= d.max_attempts
                   FOR UPDATE SKIP LOCKED);
    RETURN QUERY
    UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = p_owner, claim_token = p_token,
        lease_until = p_now + p_lease, updated_at = p_now
     WHERE id = (SELECT j.id FROM jobs j
                  WHERE (j.status = 'queued' AND j.run_after <= p_now)
                     OR (j.status = 'running' AND j.lease_until < p_now)
                  ORDER BY j.run_after, j.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING *;
END $$;

CREATE OR REPLACE FUNCTION upstream_kommo_account_targets(p_account bigint, p_active_only boolean)
RETURNS TABLE (org_id text, id text) LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, {schema} AS $$
    SELECT c.org_id, c.id FROM crm_connections c
     WHERE c.kommo_account_id = p_account
       AND (c.status = 'active' OR (NOT p_active_only AND c.status <> 'revoked'))
     ORDER BY c.seq
$$;

CREATE OR REPLACE FUNCTION upstream_kommo_amojo_targets(p_amojo text)
RETURNS TABLE (org_id text, id text) LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, {schema} AS $$
    SELECT c.org_id, c.id FROM crm_connections c
     WHERE c.amojo_id = p_amojo AND c.status = 'active'
     ORDER BY c.seq
$$;
"""
FUNCTION_SIGNATURES = (
    "upstream_claim_job(text, text, double precision, double precision)",
    "upstream_kommo_account_targets(bigint, boolean)",
    "upstream_kommo_amojo_targets(text)",
)


def security_sql(schema: str, owner: str, app_role: str) -> list[sql.Composed]:
    """Statements that (re)establish RLS, policies, definer functions and grants; idempotent."""
    s, own, app = sql.Identifier(schema), sql.Identifier(owner), sql.Identifier(app_role)
    out: list[sql.Composed] = []
    for table in TENANT_GRANTS:
        t = sql.Identifier(table)
        out += [
            sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t),
            sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(t),
            sql.SQL("DROP POLICY IF EXISTS tenant_isolation ON {}").format(t),
            # With app.org_id unset, current_setting(..., true) is NULL (or '' after an earlier
            # transaction set it): no row matches either, since org_id is never empty.
            sql.SQL("CREATE POLICY tenant_isolation ON {} AS PERMISSIVE FOR ALL TO PUBLIC"
                    " USING (org_id = current_setting('app.org_id', true))"
                    " WITH CHECK (org_id = current_setting('app.org_id', true))").format(t),
        ]
    # The owner's own view of every org, for the definer functions only: it can read and update jobs
    # (the claim) and read connections (the webhook lookups). The owner could switch RLS off anyway;
    # the application role gets none of this.
    for table, name, command in (("jobs", "definer_claim_read", "SELECT"), ("jobs", "definer_claim_update", "UPDATE"),
                                 ("crm_connections", "definer_webhook_read", "SELECT")):
        t = sql.Identifier(table)
        out.append(sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(name), t))
        out.append(sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR {} TO {} USING (true)").format(
            sql.Identifier(name), t, sql.SQL(command), own))
    out.append(sql.SQL(FUNCTIONS).format(schema=s))
    for table, privileges in {**TENANT_GRANTS, **OTHER_GRANTS}.items():
        t = sql.Identifier(table)
        out.append(sql.SQL("REVOKE ALL ON {} FROM PUBLIC, {}").format(t, app))
        out.append(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), t, app))
    for signature in FUNCTION_SIGNATURES:
        fn = sql.SQL(signature)
        out.append(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(fn))
        out.append(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(fn, app))
    out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, app))
    return out
