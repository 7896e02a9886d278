"""No credential or token in any response body, header or log line — nor in plaintext on disk."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from tests.upstream.identity import mint, service_headers, user_headers
from tests.upstream.kommo_fake import ACCOUNT_ID, FakeKommo
from tests.upstream.pg import dump_all
from tests.upstream.support import SECRETS, Upstream, connect
from tests.upstream.test_webhooks import _jobs_done, _revoked_params

LONG_LIVED = "long-lived-kommo-token-PRIVATE-0123456789"
LONG_LIVED_2 = "replacement-kommo-token-PRIVATE-9876543210"


async def _exercise(up: Upstream, kommo: FakeKommo) -> None:
    """Touch every path that handles a secret: grant, refresh, 401 retry, sync, webhooks, CRUD, errors."""
    h = user_headers("org_a")
    kommo.expires_in = 60
    conn_id = await connect(up, kommo)
    kommo.expires_in = 86400
    await up.client.post(f"/crm/connections/{conn_id}/sync", json={"orgId": "org_a"}, headers=h)
    await _jobs_done(up)
    kommo.force_401 = 1
    await up.client.post("/jobs", json={"type": "crm.sync", "payload": {"connectionId": conn_id}}, headers=h)
    await _jobs_done(up)
    await up.client.post("/webhooks/kommo", content=f"account[id]={ACCOUNT_ID}&leads[add][0][id]=9".encode(),
                         headers={**service_headers(), "content-type": "application/x-www-form-urlencoded"})
    await _jobs_done(up)
    await up.client.get("/kommo/oauth/callback", headers=service_headers("cb"),
                        params={"code": kommo.code, "state": "forged.state", "referer": "evil.example"})
    await up.client.get("/kommo/oauth/callback", headers=service_headers("cb"),
                        params={"code": kommo.code, "state": "forged.state", "referer": kommo.host})
    r = await up.client.post("/crm/connections", headers=h, json={
        "name": "private", "baseDomain": "acme.kommo.com", "credentials": {"accessToken": LONG_LIVED}})
    other = r.json()["id"]
    await up.client.patch(f"/crm/connections/{other}", headers=h,
                          json={"credentials": {"accessToken": LONG_LIVED_2, "refreshToken": LONG_LIVED}})
    await up.client.post("/crm/connections", headers=h,
                         json={"name": "x", "credentials": {"accessToken": LONG_LIVED}})
    await up.client.get("/crm/connections", headers=h)
    await up.client.get("/jobs", headers=h)
    await up.client.get("/agents", headers={"X-Gateway-Identity": mint(secret="forged-" + SECRETS[0])})
    kommo.revoked = True
    kommo.force_401 = 1
    await up.client.post(f"/crm/connections/{conn_id}/sync", json={}, headers=h)
    await _jobs_done(up)
    await up.client.get("/webhooks/kommo/revoked", params=_revoked_params(), headers=service_headers("rv"))
    await asyncio.sleep(0)


async def test_no_secret_in_responses_logs_or_database(up: Upstream, kommo: FakeKommo,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await _exercise(up, kommo)
    secrets = [*kommo.all_tokens, *SECRETS, LONG_LIVED, LONG_LIVED_2]
    assert kommo.refreshes >= 2 and len(up.responses) > 10 and caplog.records  # the flow really ran

    responses = "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in up.responses)
    # The test's own httpx client logs the URLs *it* requests (http://upstream/...?code=...); those lines
    # are the test harness, not the service. Everything else — the service and its Kommo client — counts.
    logs = "\n".join(f"{rec.getMessage()} {rec.exc_text or ''}" for rec in caplog.records
                     if "http://upstream/" not in rec.getMessage())
    for secret in secrets:
        assert secret not in responses, "a secret appeared in a response"
        assert secret not in logs, "a secret appeared in a log line"

    # At rest the tokens are sealed: the raw database files (and WAL) never hold them in plaintext.
    if up.svc.settings.database_url:  # PostgreSQL: every row of every table, bytea as hex and as text
        raw = dump_all(up.svc.settings.database_url)
        raw += bytes.fromhex("".join(h for h in re.findall(r"\\x([0-9a-f]+)", raw.decode())))
    else:
        await up.svc.db.run(lambda: up.svc.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        raw = b"".join(p.read_bytes() for p in Path(up.svc.settings.db_path).parent.glob("upstream.db*"))
    for secret in [*kommo.all_tokens[1:], LONG_LIVED, LONG_LIVED_2]:
        assert secret.encode() not in raw, "a token is stored in plaintext"
