"""One store test suite, run against both backends (SQLite file; PostgreSQL as the application role).

The routes and the worker call these methods without knowing the backend, so each method's result
(rows as column → value, booleans, counts) must be the same on both; and each is scoped by org.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from upstream_stub.crypto import Sealed
from upstream_stub.store import Stores, open_stores

A, B = "org_store_a", "org_store_b"
FIELDS = {"name": "n1", "description": "d", "model": "m", "config": "{}"}


@pytest.fixture
async def st(backend: str) -> AsyncIterator[Stores]:
    stores = await open_stores(backend)
    yield stores
    await stores.close()


def d(row: Any) -> dict[str, Any]:
    return dict(row) if row is not None else {}


async def test_agents_crud_pagination_and_scope(st: Stores) -> None:
    made = [await st.agents.create(A, "u1", {**FIELDS, "name": f"a{i}"}) for i in range(5)]
    other = await st.agents.create(B, "u2", FIELDS)
    assert made[0]["org_id"] == A and made[0]["id"].startswith("agt_") and isinstance(made[0]["seq"], int)
    assert isinstance(made[0]["created_at"], float) and made[0]["created_by"] == "u1"
    page = await st.agents.list_page(A, 0, 2)
    assert [r["name"] for r in page] == ["a0", "a1", "a2"]  # limit + 1: the caller sees there is more
    rest = await st.agents.list_page(A, page[1]["seq"], 10)
    assert [r["name"] for r in rest] == ["a2", "a3", "a4"]
    assert d(await st.agents.get(A, made[0]["id"])) == d(made[0])
    updated = await st.agents.update(A, made[0]["id"], {"name": "renamed", "org_id": B, "id": "x"})
    assert updated["name"] == "renamed" and updated["org_id"] == A and updated["id"] == made[0]["id"]
    assert (await st.agents.update(A, made[0]["id"], {"nothing": 1}))["name"] == "renamed"
    # Org B's agent through org A: invisible, unchangeable, undeletable.
    assert await st.agents.get(A, other["id"]) is None
    assert await st.agents.update(A, other["id"], {"name": "pwned"}) is None
    assert await st.agents.delete(A, other["id"]) is False
    assert (await st.agents.get(B, other["id"]))["name"] == "n1"
    assert await st.agents.delete(A, made[1]["id"]) is True
    assert await st.agents.delete(A, made[1]["id"]) is False


async def test_connections_tokens_refresh_lease_and_webhook_lookups(st: Stores) -> None:
    c = st.connections
    sealed = Sealed("k0", b"blob-1")
    a = await c.create(A, c.new_id(), "kommo", "a.kommo.com", sealed, 100.0, account_id=42, amojo_id="amo-1")
    pending = await c.create(A, c.new_id(), "later", None, None, None)
    b = await c.create(B, c.new_id(), "kommo", "b.kommo.com", sealed, 100.0, account_id=42)
    assert (a["status"], pending["status"], bytes(a["secret_blob"]), a["token_version"]) == (
        "active", "pending_auth", b"blob-1", 0)
    assert (await c.get_by_account(A, 42))["id"] == a["id"] and await c.get(A, b["id"]) is None
    assert [r["id"] for r in await c.list_page(A, 0, 10)] == [a["id"], pending["id"]]
    assert (await c.rename(A, a["id"], "renamed"))["name"] == "renamed"
    assert await c.rename(A, b["id"], "x") is None

    v = (await c.set_tokens(A, a["id"], Sealed("k0", b"blob-2"), 200.0, base_domain=None))
    assert v["token_version"] == 1 and v["base_domain"] == "a.kommo.com" and bytes(v["secret_blob"]) == b"blob-2"
    # Single flight: one lease per version; the compare-and-swap needs the lease and the version.
    assert await c.try_lease_refresh(A, a["id"], 1, "w1", 30) is True
    assert await c.try_lease_refresh(A, a["id"], 1, "w2", 30) is False
    assert await c.store_refreshed(A, a["id"], 1, "w2", Sealed("k0", b"x"), 1.0) is None
    new = await c.store_refreshed(A, a["id"], 1, "w1", Sealed("k0", b"blob-3"), 300.0)
    assert new["token_version"] == 2 and new["refresh_owner"] is None
    assert await c.store_refreshed(A, a["id"], 1, "w1", Sealed("k0", b"x"), 1.0) is None  # exactly once
    assert await c.try_lease_refresh(A, a["id"], 2, "w2", 30) is True
    await c.release_refresh(A, a["id"], "w2")
    assert (await c.get(A, a["id"]))["refresh_owner"] is None
    assert await c.try_lease_refresh(B, a["id"], 2, "w3", 30) is False  # another org's row

    assert sorted(await c.orgs_for_kommo_account_for_webhook(42)) == sorted([(A, a["id"]), (B, b["id"])])
    assert await c.orgs_for_kommo_amojo_for_webhook("amo-1") == [(A, a["id"])]
    assert await c.orgs_for_kommo_amojo_for_webhook("amo-unknown") == []
    await c.mark(B, b["id"], "reauth_required")
    assert await c.orgs_for_kommo_account_for_webhook(42) == [(A, a["id"])]
    assert await c.orgs_for_kommo_account_for_webhook(42, active_only=False) == [(A, a["id"]), (B, b["id"])]
    await c.mark(A, a["id"], "revoked", wipe=True)
    row = await c.get(A, a["id"])
    assert (row["status"], row["secret_blob"], row["secret_kid"], row["token_version"]) == ("revoked", None, None, 3)
    assert await c.orgs_for_kommo_account_for_webhook(42, active_only=False) == [(B, b["id"])]
    await c.mark(A, b["id"], "revoked", wipe=True)  # aimed at B through A: nothing happens
    assert bytes((await c.get(B, b["id"]))["secret_blob"]) == b"blob-1"

    await c.touch_sync(A, pending["id"])
    assert (await c.get(A, pending["id"]))["last_sync_at"] is not None
    await st.leads.upsert(A, pending["id"], [{"id": 1}])
    assert await c.delete(B, pending["id"]) is False
    assert await c.delete(A, pending["id"]) is True
    assert await st.leads.for_connection(A, pending["id"]) == []  # its leads went with it


async def test_leads_upsert_idempotent_and_events_once(st: Stores) -> None:
    leads = [{"id": 1, "name": "one", "status_id": 5, "price": 10}, {"id": "2", "name": "two"}, {"id": "bad"}]
    assert await st.leads.upsert(A, "con1", leads) == 2
    assert await st.leads.upsert(A, "con1", [{"id": 1, "name": "one again"}]) == 1
    rows = await st.leads.for_connection(A, "con1")
    assert [(r["lead_id"], r["name"], r["status_id"], r["price"]) for r in rows] == [
        (1, "one again", 5, 10), (2, "two", None, None)]
    assert await st.leads.for_connection(B, "con1") == []
    await st.leads.delete(B, "con1", [1, 2])
    assert len(await st.leads.for_connection(A, "con1")) == 2
    await st.leads.delete(A, "con1", [1])
    assert [r["lead_id"] for r in await st.leads.for_connection(A, "con1")] == [2]
    assert await st.leads.upsert(A, "con1", []) == 0

    assert await st.leads.record_event(A, "con1", "account", "leads.update", "job_1") is True
    assert await st.leads.record_event(A, "con1", "account", "leads.update", "job_1") is False
    assert await st.leads.record_event(B, "con1", "account", "leads.update", "job_1") is True
    assert [e["job_id"] for e in await st.leads.events(A, "con1")] == ["job_1"]


async def test_oauth_states_single_use_unexpired_and_per_org(st: Stores) -> None:
    now = time.time()
    await st.states.remember(A, "n1", now + 60)
    await st.states.remember(A, "n-old", now - 1)
    assert await st.states.consume(B, "n1") is False
    assert await st.states.consume(A, "n1") is True
    assert await st.states.consume(A, "n1") is False
    assert await st.states.consume(A, "n-old") is False


async def test_jobs_enqueue_list_and_scope(st: Stores) -> None:
    j1 = await st.jobs.enqueue(A, "crm.sync", {"connectionId": "c1"}, 3)
    j2 = await st.jobs.enqueue(A, "crm.sync", {"connectionId": "c2"}, 3, dedupe_key="k")
    assert (await st.jobs.enqueue(A, "crm.sync", {}, 3, dedupe_key="k"))["id"] == j2["id"]
    jb = await st.jobs.enqueue(B, "crm.sync", {}, 3)
    assert (j1["status"], j1["attempts"], j1["payload"]) == ("queued", 0, '{"connectionId":"c1"}')
    assert [r["id"] for r in await st.jobs.list_page(A, 0, 10)] == [j1["id"], j2["id"]]
    assert await st.jobs.list_page(A, 0, 10, "running") == []
    assert await st.jobs.get(A, jb["id"]) is None
    claim = await st.jobs.claim_next_any_org("w", 30)
    assert claim is not None and (claim.id, claim.org_id, claim.payload) == (j1["id"], A, {"connectionId": "c1"})
    assert [r["id"] for r in await st.jobs.list_page(A, 0, 10, "running")] == [j1["id"]]


async def test_kommo_pacing_allows_the_limit_then_asks_to_wait(st: Stores) -> None:
    limiter = st.rate_limiter(3)
    waits = await asyncio.gather(*(limiter.reserve("acct-1") for _ in range(5)))
    assert sorted(w == 0 for w in waits) == [False, False, True, True, True]
    assert all(0 < w <= 1.0 for w in waits if w) and await limiter.reserve("acct-2") == 0


async def test_dead_lease_on_the_last_attempt_fails_the_job_instead_of_rerunning(st: Stores) -> None:
    job = await st.jobs.enqueue(A, "crm.sync", {}, 1)
    first = await st.jobs.claim_next_any_org("w1", 0.2)
    assert first is not None and first.attempts == 1
    await asyncio.sleep(0.4)  # the lease is dead (only ever more so), and no attempt is left
    assert await st.jobs.claim_next_any_org("w2", 30) is None
    row = await st.jobs.get(A, job["id"])
    assert (row["status"], row["last_error"], row["claim_token"]) == ("failed", "lease expired on last attempt", None)
    assert not await st.jobs.complete(first, {})  # the dead worker's claim is fenced off
