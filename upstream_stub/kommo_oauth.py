"""Kommo OAuth: the consent URL (authorize) and the public callback that stores the grant.

The callback is reached by the user's browser through the gateway with a service identity; the org
comes only from the signed, single-use `state`, and the account host only from an allowlisted
`referer` (see `kommo_hosts.py`), so no caller can make us send a code or a secret elsewhere.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from upstream_stub.crm import connection_view
from upstream_stub.errors import BadGateway, BadRequest, NotFound, ServiceUnavailable
from upstream_stub.identity import ADMINS, service, user
from upstream_stub.kommo_client import KommoError, ReauthRequired, TokenPair
from upstream_stub.kommo_hosts import kommo_host
from upstream_stub.kommo_tokens import seal_pair
from upstream_stub.services import Services, services
from upstream_stub.web import check_query_org, iso

log = logging.getLogger("upstream_stub.kommo")
CONSENT_URL = "https://www.kommo.com/oauth"


async def authorize(request: Request) -> JSONResponse:
    ident = user(request, ADMINS)
    check_query_org(request, ident)
    svc = services(request)
    if not svc.kommo.configured:
        raise ServiceUnavailable("kommo.not_configured", "the Kommo integration is not configured")
    conn_id = request.query_params.get("connectionId")
    if conn_id is not None and await svc.connections.get(ident.org_id, conn_id) is None:
        raise NotFound("not_found", "no such connection")
    state, st = svc.signer.issue(ident.org_id, ident.sub, conn_id)
    await svc.states.remember(ident.org_id, st.nonce, st.expires_at)
    query = urlencode({"client_id": svc.settings.kommo_client_id, "state": state, "mode": "post_message"})
    return JSONResponse({"url": f"{CONSENT_URL}?{query}", "expiresAt": iso(st.expires_at)})


def _param(request: Request, name: str, limit: int) -> str:
    values = request.query_params.getlist(name)
    if len(values) != 1 or not 0 < len(values[0]) <= limit:
        raise BadRequest("oauth.bad_request", f"{name} is missing or malformed")
    return values[0]


async def callback(request: Request) -> JSONResponse:
    service(request)
    svc = services(request)
    if request.query_params.get("error"):
        raise BadRequest("oauth.denied", "the Kommo consent was not granted")
    host = kommo_host(_param(request, "referer", 253))  # before anything else: no SSRF
    state = svc.signer.verify(_param(request, "state", 2048))
    code = _param(request, "code", 4096)
    client_id = request.query_params.get("client_id")
    if client_id is not None and not hmac.compare_digest(client_id, svc.settings.kommo_client_id or ""):
        raise BadRequest("oauth.bad_request", "client_id does not match this integration")
    if not await svc.states.consume(state.org_id, state.nonce):
        raise BadRequest("oauth.bad_state", "state is invalid or expired")
    try:
        pair = await svc.kommo.exchange_code(host, code)
        account = await _account(svc, host, pair)
    except ReauthRequired:
        raise BadRequest("oauth.grant_refused", "Kommo refused the authorization code") from None
    except KommoError:
        raise BadGateway("kommo.unavailable", "Kommo could not be reached") from None
    row = await _store(svc, state.org_id, state.connection_id, host, pair, account)
    log.info("kommo connection %s authorised for org %s", row["id"], state.org_id)
    return JSONResponse(connection_view(row))


async def _account(svc: Services, host: str, pair: TokenPair) -> dict[str, Any]:
    resp = await svc.kommo.api(host, pair.access_token, "/api/v4/account", {"with": "amojo_id"})
    if resp.status_code != 200:
        raise KommoError(f"kommo account lookup answered {resp.status_code}")
    try:
        doc = resp.json()
        return {"id": int(doc["id"]), "amojo_id": str(doc.get("amojo_id") or "")[:64] or None}
    except (ValueError, KeyError, TypeError):
        raise KommoError("kommo account answer is malformed") from None


async def _store(svc: Services, org_id: str, conn_id: str | None, host: str, pair: TokenPair,
                 account: dict[str, Any]) -> Any:
    store = svc.connections
    if conn_id:
        existing = await store.get(org_id, conn_id)
    else:
        existing = await store.get_by_account(org_id, account["id"])
    target = existing["id"] if existing is not None else store.new_id()
    sealed = seal_pair(svc.keys, org_id, target, pair)
    if existing is None:
        return await store.create(org_id, target, host.split(".")[0], host, sealed, pair.expires_at,
                                  account["id"], account["amojo_id"])
    row = await store.set_tokens(org_id, target, sealed, pair.expires_at, base_domain=host,
                                 account_id=account["id"], amojo_id=account["amojo_id"])
    if row is None:
        raise NotFound("not_found", "the connection was deleted during authorisation")
    return row


routes = [
    Route("/kommo/oauth/authorize", authorize, methods=["GET"]),
    Route("/kommo/oauth/callback", callback, methods=["GET"]),
]
