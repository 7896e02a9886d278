"""Job routes: list, enqueue (only `crm.sync` — `kommo.webhook` jobs come from webhooks alone, so
no user can forge CRM events) and status, all within the caller's org."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from upstream_stub.crm import SYNC
from upstream_stub.errors import Conflict, NotFound, Unprocessable
from upstream_stub.identity import ADMINS, user
from upstream_stub.services import services
from upstream_stub.store.connections import ACTIVE
from upstream_stub.web import check_org, check_query_org, iso, page, page_args, parse_json

STATUSES = frozenset({"queued", "running", "succeeded", "failed"})


class SyncPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connectionId: str = Field(min_length=1, max_length=64)  # noqa: N815


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orgId: str | None = Field(None, max_length=256)  # noqa: N815
    type: Literal["crm.sync"]
    payload: SyncPayload


def job_view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "orgId": row["org_id"], "type": row["type"], "status": row["status"],
        "attempts": row["attempts"], "maxAttempts": row["max_attempts"], "lastError": row["last_error"],
        "result": json.loads(row["result"]) if row["result"] else None, "runAfter": iso(row["run_after"]),
        "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"]),
        "completedAt": iso(row["completed_at"]),
    }


async def list_jobs(request: Request) -> JSONResponse:
    ident = user(request)
    check_query_org(request, ident)
    limit, after = page_args(request)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise Unprocessable("validation.failed", "unknown status")
    rows = await services(request).jobs.list_page(ident.org_id, after, limit, status)
    return page([job_view(r) for r in rows], [r["seq"] for r in rows], limit)


async def create_job(request: Request) -> JSONResponse:
    ident = user(request, ADMINS)
    body = await parse_json(request, JobCreate)
    check_org(ident, body.orgId)
    svc = services(request)
    conn_id = body.payload.connectionId
    conn = await svc.connections.get(ident.org_id, conn_id)
    if conn is None:
        raise NotFound("not_found", "no such connection")
    if conn["status"] != ACTIVE:
        raise Conflict("crm.not_connected", f"connection is {conn['status']}")
    row = await svc.jobs.enqueue(ident.org_id, SYNC, {"connectionId": conn_id}, svc.settings.job_max_attempts,
                                 dedupe_key=f"{SYNC}:{conn_id}")
    return JSONResponse(job_view(row), status_code=202)


async def get_job(request: Request) -> JSONResponse:
    ident = user(request)
    check_query_org(request, ident)
    row = await services(request).jobs.get(ident.org_id, request.path_params["jobId"])
    if row is None:
        raise NotFound("not_found", "no such job")
    return JSONResponse(job_view(row))


routes = [
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs", create_job, methods=["POST"]),
    Route("/jobs/{jobId}", get_job, methods=["GET"]),
]
