"""Kommo webhook receivers, reached only through the gateway with a service identity.

The gateway has already authenticated each hook (secret path token + source IPs for account hooks,
`X-Signature` for chat hooks, `client_uuid`/`account_id`/`signature` for the revoked hook) and
stripped the path token. Here we parse bounded bodies, map the Kommo account to its connections (the
one unscoped lookup, by Kommo account id) and enqueue one `kommo.webhook` job per connection,
answering fast. Unknown accounts get the same 200 so the answer reveals nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from upstream_stub.errors import BadRequest, Forbidden
from upstream_stub.formparse import FormError, parse_nested_form
from upstream_stub.identity import service
from upstream_stub.services import Services, services
from upstream_stub.store.connections import REVOKED
from upstream_stub.web import ascii_digits, read_body

log = logging.getLogger("upstream_stub.webhooks")
MAX_HOOK_BODY = 256 * 1024
KIND = "kommo.webhook"


async def _enqueue(request: Request, svc: Services, targets: list[tuple[str, str]], source: str,
                   data: dict[str, Any], raw: bytes) -> JSONResponse:
    digest = hashlib.sha256(raw).hexdigest()
    for org_id, conn_id in targets:
        # Same body twice while the first is still pending → one job (Kommo retries slow receivers).
        await svc.jobs.enqueue(org_id, KIND, {"source": source, "connectionId": conn_id, "data": data},
                               svc.settings.job_max_attempts, dedupe_key=f"{KIND}:{conn_id}:{digest}")
    worker = getattr(request.app.state, "worker", None)
    if worker is not None and targets:
        worker.notify()
    return JSONResponse({"accepted": True})


async def account_hook(request: Request) -> JSONResponse:
    service(request)
    svc = services(request)
    raw = await read_body(request, MAX_HOOK_BODY)
    try:
        data = parse_nested_form(raw)
    except FormError as exc:
        raise BadRequest("webhook.malformed", str(exc)) from None
    account = data.get("account")
    account = account if isinstance(account, dict) else {}
    account_id = str(account.get("id", ""))
    if not ascii_digits(account_id):
        raise BadRequest("webhook.malformed", "account[id] is missing")
    targets = await svc.connections.orgs_for_kommo_account_for_webhook(int(account_id))
    log.info("kommo account webhook for account %s → %d connection(s)", account_id, len(targets))
    return await _enqueue(request, svc, targets, "account", data, raw)


async def chat_hook(request: Request) -> JSONResponse:
    service(request)
    svc = services(request)
    raw = await read_body(request, MAX_HOOK_BODY)
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadRequest("webhook.malformed", "body is not JSON") from None
    amojo = data.get("account_id") if isinstance(data, dict) else None
    if not isinstance(amojo, str) or not 0 < len(amojo) <= 64:
        raise BadRequest("webhook.malformed", "account_id is missing")
    targets = await svc.connections.orgs_for_kommo_amojo_for_webhook(amojo)
    log.info("kommo chat webhook → %d connection(s)", len(targets))
    return await _enqueue(request, svc, targets, "chat", {"keys": sorted(data)[:50]}, raw)


async def revoked_hook(request: Request) -> JSONResponse:
    """Kommo says the account withdrew our access: mark its connections revoked and drop the tokens."""
    service(request)
    svc = services(request)
    q = request.query_params
    # Kommo's parameters: client_uuid (our integration id), account_id, and signature =
    # hex HMAC-SHA256(client_secret, "<client_uuid>|<account_id>").
    client_uuid, account_id, signature = q.get("client_uuid", ""), q.get("account_id", ""), q.get("signature", "")
    secret = svc.settings.kommo_client_secret or ""
    if not ascii_digits(account_id):
        raise BadRequest("webhook.malformed", "account_id is missing")
    # Depth behind the gateway's check: the same signature, verified with our own copy of the secret.
    expected = hmac.new(secret.encode(), f"{client_uuid}|{account_id}".encode(), hashlib.sha256).hexdigest()
    if not secret or not client_uuid or not hmac.compare_digest(client_uuid, svc.settings.kommo_client_id or "") \
            or not hmac.compare_digest(signature.lower(), expected):
        raise Forbidden("webhook.bad_signature", "revocation signature does not verify")
    targets = await svc.connections.orgs_for_kommo_account_for_webhook(int(account_id), active_only=False)
    for org_id, conn_id in targets:
        await svc.connections.mark(org_id, conn_id, REVOKED, wipe=True)
    log.info("kommo access revoked for account %s: %d connection(s)", account_id, len(targets))
    return JSONResponse({"revoked": True})


routes = [
    Route("/webhooks/kommo", account_hook, methods=["POST"]),
    Route("/webhooks/kommo-chat", chat_hook, methods=["POST"]),
    Route("/webhooks/kommo/revoked", revoked_hook, methods=["GET"]),
]
