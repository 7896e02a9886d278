"""Token refresh against a respx-mocked Kommo: on expiry, on 401, revoked, single-flight, pacing."""

from __future__ import annotations

import asyncio

import pytest

from tests.upstream.identity import user_headers
from tests.upstream.kommo_fake import FakeKommo
from tests.upstream.support import Upstream, connect
from upstream_stub.crypto import Keyring
from upstream_stub.kommo_client import ReauthRequired
from upstream_stub.oauth_state import StateSigner
from upstream_stub.services import Services

LEADS = "/api/v4/leads"


async def _stored_version(up: Upstream, conn_id: str) -> int:
    return int((await up.svc.connections.get("org_a", conn_id))["token_version"])


async def test_token_expiring_within_5_minutes_is_refreshed_first(up: Upstream, kommo: FakeKommo) -> None:
    kommo.expires_in = 120  # the granted token expires in 2 minutes
    conn_id = await connect(up, kommo)
    old_access, v0 = kommo.access, await _stored_version(up, conn_id)
    kommo.expires_in = 86400
    r = await up.svc.api.get("org_a", conn_id, LEADS)
    assert r.status_code == 200
    assert kommo.refreshes == 1 and kommo.access != old_access
    assert await _stored_version(up, conn_id) == v0 + 1
    # the fresh pair was stored: later calls use it without another refresh
    assert (await up.svc.api.get("org_a", conn_id, LEADS)).status_code == 200
    assert kommo.refreshes == 1


async def test_401_triggers_one_refresh_and_one_retry(up: Upstream, kommo: FakeKommo) -> None:
    conn_id = await connect(up, kommo)
    kommo.force_401 = 1
    r = await up.svc.api.get("org_a", conn_id, LEADS)
    assert r.status_code == 200 and kommo.refreshes == 1


async def test_persistent_401_marks_reauth_after_a_single_retry(up: Upstream, kommo: FakeKommo) -> None:
    conn_id = await connect(up, kommo)
    kommo.force_401 = 5
    calls_before = len(kommo.calls)
    with pytest.raises(ReauthRequired):
        await up.svc.api.get("org_a", conn_id, LEADS)
    assert kommo.refreshes == 1 and len(kommo.calls) - calls_before == 3  # call, refresh, retry
    assert (await up.svc.connections.get("org_a", conn_id))["status"] == "reauth_required"


async def test_revoked_refresh_token_marks_connection_reauth_required(up: Upstream, kommo: FakeKommo) -> None:
    kommo.expires_in = 60
    conn_id = await connect(up, kommo)
    kommo.revoked = True
    h = user_headers("org_a")
    r = await up.client.post(f"/crm/connections/{conn_id}/sync", json={"orgId": "org_a"}, headers=h)
    assert r.status_code == 202
    job_id = r.json()["jobId"]
    for _ in range(100):
        job = (await up.client.get(f"/jobs/{job_id}", headers=h)).json()
        if job["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "failed" and job["attempts"] == 1  # permanent: not retried
    assert "re-authorisation" in job["lastError"]
    conn = (await up.client.get("/crm/connections", headers=h)).json()["items"][0]
    assert conn["status"] == "reauth_required" and conn["hasCredentials"] is False
    assert kommo.refreshes == 1
    r = await up.client.post(f"/crm/connections/{conn_id}/sync", json={}, headers=h)
    assert r.status_code == 409 and r.json()["reason"] == "crm.not_connected"


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))


async def test_20_concurrent_calls_on_an_expired_token_refresh_once(up: Upstream, kommo: FakeKommo) -> None:
    kommo.expires_in = 1  # already inside the 5-minute window
    conn_id = await connect(up, kommo)
    kommo.expires_in = 86400
    kommo.calls.clear()
    results = await asyncio.gather(*(up.svc.api.get("org_a", conn_id, LEADS) for _ in range(20)))
    assert [r.status_code for r in results] == [200] * 20
    assert kommo.refreshes == 1
    # Kommo's limit is 7 requests/second per account; allow for scheduling jitter in the window.
    assert len(kommo.calls) == 21 and _max_in_window(kommo.calls, 0.9) <= 7


async def test_refresh_is_single_flight_across_processes(up: Upstream, kommo: FakeKommo) -> None:
    """Two service instances on one database file (as two processes would be) refresh once."""
    kommo.expires_in = 1
    conn_id = await connect(up, kommo)
    kommo.expires_in = 86400
    settings = up.svc.settings
    other = await Services.start(settings, Keyring(settings.key_spec()),
                                 StateSigner(settings.effective_state_secret()))
    try:
        assert other.db is not up.svc.db and other.tokens.owner != up.svc.tokens.owner
        calls = [svc.api.get("org_a", conn_id, LEADS) for _ in range(5) for svc in (up.svc, other)]
        results = await asyncio.gather(*calls)
    finally:
        await other.close()
    assert [r.status_code for r in results] == [200] * 10
    assert kommo.refreshes == 1

