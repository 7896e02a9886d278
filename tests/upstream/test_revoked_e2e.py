"""Kommo's access-revoked hook end to end: the shared vector, sent to the real gateway (shipped
policy), verified there, forwarded to the real bundled upstream, which verifies it again and marks
the account's connections revoked and drops their tokens. On both store backends.

Before the fix the upstream read `client_id` while Kommo sends `client_uuid`, so every genuine
revocation the gateway passed was refused upstream with 403 webhook.bad_signature.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway_proc import BASE_ENV, ROOT, bundled_upstream, gateway
from upstream_stub.crypto import Sealed
from upstream_stub.store import open_stores

VECTOR = json.loads((Path(__file__).parent / "data" / "kommo_revoked.json").read_text())["kommo_revoked"][0]


async def _seed(target: str) -> None:
    stores = await open_stores(target)
    try:
        for org, conn_id, account in (("org_rev_a", "con_rev_a", int(VECTOR["account_id"])),
                                      ("org_rev_b", "con_rev_b", 55501)):
            await stores.connections.create(org, conn_id, "kommo", f"{org}.kommo.com",
                                            Sealed("k0", b"sealed-token-bytes"), 4102444800.0, account_id=account)
    finally:
        await stores.close()


async def _status(target: str, org: str, conn_id: str) -> tuple[str, Any]:
    stores = await open_stores(target)
    try:
        row = await stores.connections.get(org, conn_id)
    finally:
        await stores.close()
    return row["status"], row["secret_blob"]


def test_shared_kommo_revocation_vector_revokes_through_the_gateway(backend: str) -> None:
    # The vector was computed with the same client id and secret the test processes are given.
    assert (VECTOR["client_id"], VECTOR["client_secret"]) == (BASE_ENV["KOMMO_CLIENT_ID"],
                                                              BASE_ENV["KOMMO_CLIENT_SECRET"])
    asyncio.run(_seed(backend))
    store = {"UPSTREAM_DATABASE_URL": backend} if backend.startswith("postgresql://") else {"UPSTREAM_DB": backend}
    with bundled_upstream(store) as up, gateway(ROOT / "policies", up.url) as gw:
        url = f"{gw.url}/v1/webhooks/kommo/revoked"
        forged = {**VECTOR["query"], "signature": "0" * 64}
        r = httpx.get(url, params=forged, timeout=10)
        assert r.status_code == 401 and r.json()["reason"] == "webhook.bad_signature", r.text
        assert asyncio.run(_status(backend, "org_rev_a", "con_rev_a"))[0] == "active"

        # The shipped route gives the upstream 2 s; on a saturated test machine a first answer can take
        # longer (504). Kommo retries an unanswered hook, and revocation is idempotent: so do we.
        for _ in range(3):
            r = httpx.get(url, params=VECTOR["query"], timeout=10)
            if r.status_code not in (502, 503, 504):
                break
        assert r.status_code == 200, f"{r.text}\n{up.log()}"
        assert r.json() == {"revoked": True}
    assert asyncio.run(_status(backend, "org_rev_a", "con_rev_a")) == ("revoked", None)
    # Another account's connection is untouched.
    status, blob = asyncio.run(_status(backend, "org_rev_b", "con_rev_b"))
    assert status == "active" and bytes(blob) == b"sealed-token-bytes"
