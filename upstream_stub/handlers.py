"""Job handlers: `crm.sync` (pull leads page by page) and `kommo.webhook` (apply a webhook).

Both are idempotent — leads are upserted by id and events recorded once per job — so a job re-run
after a crash leaves the same rows as a single run.
"""

from __future__ import annotations

import logging
from typing import Any

from upstream_stub.kommo_client import KommoError, ReauthRequired
from upstream_stub.services import Services
from upstream_stub.store.jobs import Claim
from upstream_stub.web import ascii_digits
from upstream_stub.worker import Handler, PermanentJobError, RetryableJobError

log = logging.getLogger("upstream_stub.jobs")
PAGE_SIZE = 250
MAX_PAGES = 400
LEAD_EVENTS = ("add", "update", "status", "restore", "responsible")


def _conn_id(claim: Claim) -> str:
    conn_id = claim.payload.get("connectionId")
    if not isinstance(conn_id, str):
        raise PermanentJobError("job payload has no connectionId")
    return conn_id


def make_handlers(svc: Services) -> dict[str, Handler]:
    """The handler table for a worker bound to these services."""

    async def crm_sync(claim: Claim) -> dict[str, Any]:
        conn_id = _conn_id(claim)
        if await svc.connections.get(claim.org_id, conn_id) is None:
            raise PermanentJobError("connection no longer exists")
        total = 0
        try:
            for page in range(1, MAX_PAGES + 1):
                resp = await svc.api.get(claim.org_id, conn_id, "/api/v4/leads",
                                         {"page": page, "limit": PAGE_SIZE})
                if resp.status_code == 204:
                    break
                if resp.status_code != 200:
                    raise RetryableJobError(f"kommo leads answered {resp.status_code}")
                doc = resp.json()
                leads = (doc.get("_embedded") or {}).get("leads") or []
                total += await svc.leads.upsert(claim.org_id, conn_id, leads)
                if not (doc.get("_links") or {}).get("next") or len(leads) < PAGE_SIZE:
                    break
        except ReauthRequired as exc:
            raise PermanentJobError(f"connection needs re-authorisation ({exc})") from None
        except KommoError as exc:
            raise RetryableJobError(str(exc)) from None
        except ValueError:
            raise RetryableJobError("kommo leads answer is malformed") from None
        await svc.connections.touch_sync(claim.org_id, conn_id)
        return {"leads": total, "pages": page}

    async def kommo_webhook(claim: Claim) -> dict[str, Any]:
        conn_id = _conn_id(claim)
        if await svc.connections.get(claim.org_id, conn_id) is None:
            raise PermanentJobError("connection no longer exists")
        source, data = claim.payload.get("source"), claim.payload.get("data") or {}
        applied = 0
        if source == "account":
            leads = data.get("leads")
            leads = leads if isinstance(leads, dict) else {}
            for kind, items in leads.items():
                if not isinstance(items, list):
                    continue
                rows = [i for i in items if isinstance(i, dict)]
                if kind == "delete":
                    await svc.leads.delete(claim.org_id, conn_id, [int(i["id"]) for i in rows
                                                                    if ascii_digits(str(i.get("id", "")))])
                elif kind in LEAD_EVENTS:
                    await svc.leads.upsert(claim.org_id, conn_id, rows)
                else:
                    continue
                applied += await svc.leads.record_event(claim.org_id, conn_id, source, f"leads.{kind}",
                                                        claim.id)
        elif source == "chat":
            applied += await svc.leads.record_event(claim.org_id, conn_id, "chat", "message", claim.id)
        return {"applied": applied}

    return {"crm.sync": crm_sync, "kommo.webhook": kommo_webhook}
