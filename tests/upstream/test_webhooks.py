"""Webhook receivers (account, chat, revoked) and the nested-form parser."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.upstream.identity import service_headers, user_headers
from tests.upstream.kommo_fake import ACCOUNT_ID, AMOJO_ID, FakeKommo
from tests.upstream.support import CLIENT_ID, CLIENT_SECRET, Upstream, connect
from upstream_stub.formparse import FormError, parse_nested_form

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def _jobs_done(up: Upstream, org: str = "org_a", within: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        r = await up.client.get("/jobs", params={"orgId": org}, headers=user_headers(org))
        items = r.json()["items"]
        if all(j["status"] in ("succeeded", "failed") for j in items) or time.monotonic() > deadline:
            return list(items)
        await asyncio.sleep(0.03)


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(b"leads[status][0][id]=1&leads[status][0][status_id]=142",
                 {"leads": {"status": [{"id": "1", "status_id": "142"}]}}, id="nested_list"),
    pytest.param(b"a[5]=x&a[999999999]=y", {"a": ["x", "y"]}, id="sparse_index_compacted"),
    pytest.param(b"account[id]=7&account[subdomain]=acme", {"account": {"id": "7", "subdomain": "acme"}},
                 id="dict"),
    pytest.param(b"", {}, id="empty"),
])
def test_form_parser(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_nested_form(body) == expected


def test_form_parser_keeps_non_ascii_digit_keys_as_names() -> None:
    """'²' is a digit to str.isdigit() but int() refuses it: it was a 500 while sorting list
    indices. It is a name, so the node stays a mapping."""
    assert parse_nested_form("a[²]=x&a[1]=y".encode()) == {"a": {"²": "x", "1": "y"}}
    assert parse_nested_form("a[٣]=x".encode()) == {"a": {"٣": "x"}}


@pytest.mark.parametrize("body", [
    pytest.param(b"a=1&a[b]=2", id="value_then_container"),
    pytest.param(b"a[b]=2&a=1", id="container_then_value"),
    pytest.param(b"a[]=1", id="empty_brackets"),
    pytest.param(b"a[b]c=1", id="junk_after_bracket"),
    pytest.param(b"a" + b"[x]" * 9 + b"=1", id="too_deep"),
    pytest.param(b"&".join(b"k%d=1" % i for i in range(2001)), id="too_many_fields"),
    pytest.param(b"a=\xff", id="not_utf8"),
    pytest.param(b"a%5Bb%5D%0A=1", id="name_final_newline"),  # `$` dropped it: read as a[b]
])
def test_form_parser_rejects(body: bytes) -> None:
    with pytest.raises(FormError):
        parse_nested_form(body)


async def test_account_hook_enqueues_a_job_that_applies_lead_events(up: Upstream, kommo: FakeKommo) -> None:
    conn_id = await connect(up, kommo)
    body = urlencode({
        "account[id]": str(ACCOUNT_ID), "account[subdomain]": "acme",
        "leads[add][0][id]": "5002", "leads[add][0][name]": "New lead", "leads[add][0][status_id]": "142",
        "leads[status][0][id]": "5001", "leads[status][0][status_id]": "143",
        "leads[status][0][pipeline_id]": "7",
    })
    r = await up.client.post("/webhooks/kommo", content=body, headers={**service_headers(), **FORM})
    assert r.status_code == 200 and r.json() == {"accepted": True}
    (job,) = await _jobs_done(up)
    assert job["type"] == "kommo.webhook" and job["status"] == "succeeded", job
    leads = {row["lead_id"]: row for row in await up.svc.leads.for_connection("org_a", conn_id)}
    assert leads[5002]["name"] == "New lead" and leads[5001]["status_id"] == 143
    kinds = sorted(e["kind"] for e in await up.svc.leads.events("org_a", conn_id))
    assert kinds == ["leads.add", "leads.status"]
    body = urlencode({"account[id]": str(ACCOUNT_ID), "leads[delete][0][id]": "5002"})
    await up.client.post("/webhooks/kommo", content=body, headers={**service_headers(), **FORM})
    await _jobs_done(up)
    assert 5002 not in {row["lead_id"] for row in await up.svc.leads.for_connection("org_a", conn_id)}


async def test_account_hook_for_unknown_account_is_accepted_and_ignored(up: Upstream) -> None:
    body = urlencode({"account[id]": "999", "leads[add][0][id]": "1"})
    r = await up.client.post("/webhooks/kommo", content=body, headers={**service_headers(), **FORM})
    assert r.status_code == 200 and r.json() == {"accepted": True}
    assert await up.svc.jobs.list_page("org_a", 0, 10) == []


@pytest.mark.parametrize("body", [
    pytest.param(b"leads[add][0][id]=1", id="no_account"),
    pytest.param(b"account[id]=abc", id="account_not_numeric"),
    # Digits to str.isdigit(), not to int(): a 500 ('²') or another account's id ('٣' read as 3).
    pytest.param("account[id]=²".encode(), id="account_superscript"),
    pytest.param("account[id]=٣".encode(), id="account_arabic_indic"),
    pytest.param(b"a=1&a[b]=2", id="malformed_form"),
])
async def test_account_hook_rejects_malformed(up: Upstream, body: bytes) -> None:
    r = await up.client.post("/webhooks/kommo", content=body, headers={**service_headers(), **FORM})
    assert r.status_code == 400 and r.json()["reason"] == "webhook.malformed"


async def test_oversized_hook_is_413(up: Upstream) -> None:
    r = await up.client.post("/webhooks/kommo", content=b"a=" + b"x" * 300_000,
                             headers={**service_headers(), **FORM})
    assert r.status_code == 413


async def test_chat_hook_enqueues_for_the_amojo_account(up: Upstream, kommo: FakeKommo) -> None:
    conn_id = await connect(up, kommo)
    msg = {"account_id": AMOJO_ID, "time": 1, "message": {"receiver": {"id": "x"}, "message": {"text": "hi"}}}
    r = await up.client.post("/webhooks/kommo-chat", content=json.dumps(msg),
                             headers={**service_headers("kommo-chat"), "content-type": "application/json"})
    assert r.status_code == 200
    (job,) = await _jobs_done(up)
    assert job["status"] == "succeeded"
    assert [e["source"] for e in await up.svc.leads.events("org_a", conn_id)] == ["chat"]


def _revoked_params(account: int | str = ACCOUNT_ID, secret: str = CLIENT_SECRET, client_id: str = CLIENT_ID,
                    ) -> dict[str, str]:
    sig = hmac.new(secret.encode(), f"{client_id}|{account}".encode(), hashlib.sha256).hexdigest()
    return {"client_uuid": client_id, "account_id": str(account), "signature": sig}


async def test_revoked_hook_marks_connection_revoked_and_drops_tokens(up: Upstream, kommo: FakeKommo) -> None:
    conn_id = await connect(up, kommo)
    r = await up.client.get("/webhooks/kommo/revoked", params=_revoked_params(),
                            headers=service_headers("kommo-revoked"))
    assert r.status_code == 200
    row = await up.svc.connections.get("org_a", conn_id)
    assert row["status"] == "revoked" and row["secret_blob"] is None


@pytest.mark.parametrize(("params", "status"), [
    pytest.param(_revoked_params(secret="wrong-secret"), 403, id="bad_signature"),
    pytest.param(_revoked_params(client_id="someone-else"), 403, id="other_client"),
    pytest.param({"client_uuid": CLIENT_ID, "account_id": "x", "signature": "00"}, 400, id="bad_account"),
    # Signed, but not an account id: '²' was a 500 in int(), '٣' read as account 3.
    pytest.param(_revoked_params(account="²"), 400, id="superscript_account"),
    pytest.param(_revoked_params(account="٣"), 400, id="arabic_indic_account"),
    # The old, wrong parameter name: Kommo never sends client_id, so it verifies nothing.
    pytest.param({**_revoked_params(), "client_id": CLIENT_ID, "client_uuid": ""}, 403, id="client_id_not_uuid"),
    pytest.param({k: v for k, v in _revoked_params().items() if k != "signature"}, 403, id="no_signature"),
])
async def test_revoked_hook_refuses_unsigned(up: Upstream, kommo: FakeKommo, params: dict[str, str],
                                             status: int) -> None:
    conn_id = await connect(up, kommo)
    r = await up.client.get("/webhooks/kommo/revoked", params=params,
                            headers=service_headers("kommo-revoked"))
    assert r.status_code == status
    assert (await up.svc.connections.get("org_a", conn_id))["status"] == "active"


async def test_sync_pulls_all_lead_pages(up: Upstream, kommo: FakeKommo) -> None:
    kommo.leads = [{"id": 10_000 + i, "name": f"L{i}", "status_id": 1} for i in range(300)]
    conn_id = await connect(up, kommo)
    h = user_headers("org_a")
    r = await up.client.post("/jobs", json={"orgId": "org_a", "type": "crm.sync",
                                            "payload": {"connectionId": conn_id}}, headers=h)
    assert r.status_code == 202
    (job,) = await _jobs_done(up)
    assert job["status"] == "succeeded" and job["result"] == {"leads": 300, "pages": 2}
    assert len(await up.svc.leads.for_connection("org_a", conn_id)) == 300
    conn = (await up.client.get("/crm/connections", headers=h)).json()["items"][0]
    assert conn["lastSyncAt"] is not None


async def test_users_cannot_enqueue_webhook_jobs(up: Upstream) -> None:
    r = await up.client.post("/jobs", json={"type": "kommo.webhook", "payload": {"connectionId": "c"}},
                             headers=user_headers("org_a"))
    assert r.status_code == 422
