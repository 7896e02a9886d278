"""Kommo OAuth: signed state, code exchange, strict referer allowlist (no SSRF), tokens sealed."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.upstream.identity import service_headers, user_headers
from tests.upstream.kommo_fake import ACCOUNT_ID, FakeKommo
from tests.upstream.support import CLIENT_ID, Upstream, connect
from upstream_stub.errors import BadRequest
from upstream_stub.kommo_hosts import kommo_host


def cb() -> dict[str, str]:
    """A fresh service identity per request (identities live 30 s; never mint them at import time)."""
    return service_headers("kommo-oauth-callback")


async def _state(up: Upstream, org: str = "org_a") -> str:
    r = await up.client.get("/kommo/oauth/authorize", params={"orgId": org}, headers=user_headers(org))
    url = urlsplit(r.json()["url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "www.kommo.com", "/oauth")
    q = parse_qs(url.query)
    assert q["client_id"] == [CLIENT_ID]
    return q["state"][0]


async def test_code_exchange_stores_an_active_connection(up: Upstream, kommo: FakeKommo) -> None:
    conn_id = await connect(up, kommo)
    assert kommo.grants == 1
    r = await up.client.get("/crm/connections", params={"orgId": "org_a"}, headers=user_headers("org_a"))
    (conn,) = r.json()["items"]
    assert conn["id"] == conn_id and conn["status"] == "active" and conn["accountId"] == ACCOUNT_ID
    assert conn["baseDomain"] == kommo.host and conn["hasCredentials"] is True
    assert kommo.access not in r.text and kommo.refresh not in r.text
    # the pair is stored sealed, bound to its org and row
    row = await up.svc.connections.get("org_a", conn_id)
    assert row["secret_kid"] == "k0" and kommo.access.encode() not in bytes(row["secret_blob"])


async def test_reconnecting_the_same_account_updates_the_connection(up: Upstream, kommo: FakeKommo) -> None:
    first = await connect(up, kommo)
    second = await connect(up, kommo)
    assert first == second and kommo.grants == 2


@pytest.mark.parametrize("referer", [
    pytest.param("evil.com", id="other_domain"),
    pytest.param("kommo.com.evil.com", id="suffix_trick"),
    pytest.param("acme.kommo.com.evil.com", id="suffix_trick_2"),
    pytest.param("acme.kommo.com@evil.com", id="userinfo"),
    pytest.param("evil.com#.kommo.com", id="fragment"),
    pytest.param("evil.com/.kommo.com", id="path"),
    pytest.param("acme.kommo.com:8443", id="port"),
    pytest.param("127.0.0.1", id="ip_literal"),
    pytest.param("a.b.kommo.com", id="extra_label"),
    pytest.param("http://acme.kommo.com", id="plain_http"),
    pytest.param("kommo.com", id="apex"),
    pytest.param("www.kommo.com", id="reserved_label"),
    pytest.param("acme.kommo.com\r\nHost: evil", id="crlf"),
    pytest.param("acme.kommo.co", id="lookalike"),
])
async def test_non_kommo_referer_is_refused_without_any_request(up: Upstream, kommo: FakeKommo,
                                                               referer: str) -> None:
    state = await _state(up)
    r = await up.client.get("/kommo/oauth/callback", headers=cb(),
                            params={"code": kommo.code, "state": state, "referer": referer})
    assert r.status_code == 400 and r.json()["reason"] == "kommo.bad_host"
    assert kommo.grants == 0 and kommo.refreshes == 0
    # the state was not burnt: the genuine callback still works
    r = await up.client.get("/kommo/oauth/callback", headers=cb(),
                            params={"code": kommo.code, "state": state, "referer": kommo.host})
    assert r.status_code == 200


@pytest.mark.parametrize("host", ["acme.kommo.com", "https://acme.kommo.com/", "ACME.amocrm.ru",
                                  "x-1.amocrm.com"])
def test_kommo_hosts_allowed(host: str) -> None:
    assert kommo_host(host).endswith((".kommo.com", ".amocrm.ru", ".amocrm.com"))


def test_kommo_host_rejects_lookalike() -> None:
    with pytest.raises(BadRequest):
        kommo_host("acme.kommo.com.")


async def test_state_is_single_use(up: Upstream, kommo: FakeKommo) -> None:
    state = await _state(up)
    params = {"code": kommo.code, "state": state, "referer": kommo.host}
    assert (await up.client.get("/kommo/oauth/callback", headers=cb(), params=params)).status_code == 200
    r = await up.client.get("/kommo/oauth/callback", headers=cb(), params=params)
    assert r.status_code == 400 and r.json()["reason"] == "oauth.bad_state"


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"), id="bad_mac"),
    pytest.param(lambda s: "x" + s, id="tampered_body"),
    pytest.param(lambda s: "", id="empty"),
    pytest.param(lambda s: s.split(".")[0], id="no_mac"),
])
async def test_tampered_state_is_refused(up: Upstream, kommo: FakeKommo, mutate) -> None:  # type: ignore[no-untyped-def]
    state = mutate(await _state(up))
    r = await up.client.get("/kommo/oauth/callback", headers=cb(),
                            params={"code": kommo.code, "state": state, "referer": kommo.host})
    assert r.status_code == 400 and r.json()["reason"] in {"oauth.bad_state", "oauth.bad_request"}
    assert kommo.grants == 0


async def test_refused_code_is_400(up: Upstream, kommo: FakeKommo) -> None:
    state = await _state(up)
    r = await up.client.get("/kommo/oauth/callback", headers=cb(),
                            params={"code": "not-the-code", "state": state, "referer": kommo.host})
    assert r.status_code == 400 and r.json()["reason"] == "oauth.grant_refused"


async def test_consent_denied(up: Upstream, kommo: FakeKommo) -> None:
    r = await up.client.get("/kommo/oauth/callback", headers=cb(), params={"error": "access_denied"})
    assert r.status_code == 400 and r.json()["reason"] == "oauth.denied"
