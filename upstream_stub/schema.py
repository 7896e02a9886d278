"""Schema steps, applied in order at start-up; `PRAGMA user_version` records how far a file got.

Append new steps; never edit a shipped one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    """
    CREATE TABLE agents (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX agents_org ON agents (org_id, seq);

    CREATE TABLE crm_connections (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        name TEXT NOT NULL,
        base_domain TEXT,
        status TEXT NOT NULL,
        kommo_account_id INTEGER,
        amojo_id TEXT,
        secret_kid TEXT,
        secret_blob BLOB,
        token_expires_at REAL,
        token_version INTEGER NOT NULL DEFAULT 0,
        refresh_owner TEXT,
        refresh_until REAL,
        last_sync_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX crm_connections_org ON crm_connections (org_id, seq);
    CREATE INDEX crm_connections_account ON crm_connections (kommo_account_id);
    CREATE INDEX crm_connections_amojo ON crm_connections (amojo_id);

    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        run_after REAL NOT NULL,
        lease_owner TEXT,
        claim_token TEXT,
        lease_until REAL,
        last_error TEXT,
        result TEXT,
        dedupe_key TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        completed_at REAL
    );
    CREATE INDEX jobs_org ON jobs (org_id, seq);
    CREATE INDEX jobs_ready ON jobs (status, run_after);
    CREATE UNIQUE INDEX jobs_active_dedupe ON jobs (org_id, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');

    CREATE TABLE crm_leads (
        org_id TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        lead_id INTEGER NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        status_id INTEGER,
        pipeline_id INTEGER,
        price INTEGER,
        updated_at REAL NOT NULL,
        PRIMARY KEY (org_id, connection_id, lead_id)
    );

    CREATE TABLE crm_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        job_id TEXT NOT NULL,
        received_at REAL NOT NULL,
        UNIQUE (org_id, job_id, kind)
    );

    CREATE TABLE oauth_states (
        nonce TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        expires_at REAL NOT NULL
    );

    CREATE TABLE kommo_calls (
        account TEXT NOT NULL,
        ts REAL NOT NULL
    );
    CREATE INDEX kommo_calls_account ON kommo_calls (account, ts)
    """,
]
