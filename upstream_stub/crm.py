"""CRM connection routes. Credentials go in sealed and never come out: views show only whether
they exist. Writes need `admin` or `owner`; another org's connection is simply not found (404).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from upstream_stub.errors import Conflict, NotFound, Unprocessable
from upstream_stub.identity import ADMINS, user
from upstream_stub.kommo_client import TokenPair
from upstream_stub.kommo_hosts import kommo_host
from upstream_stub.kommo_tokens import seal_pair
from upstream_stub.services import services
from upstream_stub.store.connections import ACTIVE
from upstream_stub.web import check_org, check_query_org, iso, page, page_args, parse_json

SYNC = "crm.sync"


class Credentials(BaseModel):
    """A Kommo token pair given directly (e.g. a long-lived token of a private integration)."""

    model_config = ConfigDict(extra="forbid")
    accessToken: str = Field(min_length=1, max_length=8192)  # noqa: N815
    refreshToken: str | None = Field(None, min_length=1, max_length=8192)  # noqa: N815
    expiresIn: int | None = Field(None, gt=0, le=10 * 365 * 86400)  # noqa: N815

    def pair(self) -> TokenPair:
        exp = time.time() + self.expiresIn if self.expiresIn else None
        return TokenPair(self.accessToken, self.refreshToken, exp)


class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orgId: str | None = Field(None, max_length=256)  # noqa: N815
    provider: Literal["kommo"] = "kommo"
    name: str = Field(min_length=1, max_length=100)
    baseDomain: str | None = Field(None, max_length=253)  # noqa: N815
    credentials: Credentials | None = None


class ConnectionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orgId: str | None = Field(None, max_length=256)  # noqa: N815
    name: str | None = Field(None, min_length=1, max_length=100)
    credentials: Credentials | None = None


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orgId: str | None = Field(None, max_length=256)  # noqa: N815


def connection_view(row: sqlite3.Row) -> dict[str, Any]:
    """The public shape of a connection: never a secret, only whether one is stored."""
    return {
        "id": row["id"], "orgId": row["org_id"], "provider": row["provider"], "name": row["name"],
        "baseDomain": row["base_domain"], "status": row["status"], "accountId": row["kommo_account_id"],
        "hasCredentials": row["secret_blob"] is not None, "tokenExpiresAt": iso(row["token_expires_at"]),
        "lastSyncAt": iso(row["last_sync_at"]), "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _missing() -> NotFound:
    return NotFound("not_found", "no such connection")


async def list_connections(request: Request) -> JSONResponse:
    ident = user(request)
    check_query_org(request, ident)
    limit, after = page_args(request)
    rows = await services(request).connections.list_page(ident.org_id, after, limit)
    return page([connection_view(r) for r in rows], [r["seq"] for r in rows], limit)


async def create_connection(request: Request) -> JSONResponse:
    ident = user(request, ADMINS)
    body = await parse_json(request, ConnectionCreate)
    check_org(ident, body.orgId)
    host = kommo_host(body.baseDomain) if body.baseDomain else None
    if body.credentials is not None and host is None:
        raise Unprocessable("validation.failed", "credentials need a baseDomain")
    svc = services(request)
    conn_id = svc.connections.new_id()
    pair = body.credentials.pair() if body.credentials else None
    sealed = seal_pair(svc.keys, ident.org_id, conn_id, pair) if pair else None
    row = await svc.connections.create(ident.org_id, conn_id, body.name, host, sealed,
                                       pair.expires_at if pair else None)
    return JSONResponse(connection_view(row), status_code=201)


async def update_connection(request: Request) -> JSONResponse:
    ident = user(request, ADMINS)
    check_query_org(request, ident)
    body = await parse_json(request, ConnectionPatch)
    check_org(ident, body.orgId)
    svc, conn_id = services(request), request.path_params["connectionId"]
    row = await svc.connections.get(ident.org_id, conn_id)
    if row is None:
        raise _missing()
    if body.name is not None:
        row = await svc.connections.rename(ident.org_id, conn_id, body.name)
    if body.credentials is not None:
        if not row or not row["base_domain"]:
            raise Unprocessable("validation.failed", "credentials need a baseDomain")
        pair = body.credentials.pair()
        row = await svc.connections.set_tokens(
            ident.org_id, conn_id, seal_pair(svc.keys, ident.org_id, conn_id, pair), pair.expires_at)
    if row is None:
        raise _missing()
    return JSONResponse(connection_view(row))


async def delete_connection(request: Request) -> Response:
    ident = user(request, ADMINS)
    check_query_org(request, ident)
    if not await services(request).connections.delete(ident.org_id, request.path_params["connectionId"]):
        raise _missing()
    return Response(status_code=204)


async def sync_connection(request: Request) -> JSONResponse:
    ident = user(request, ADMINS)
    check_query_org(request, ident)
    body = await parse_json(request, SyncRequest, optional=True)
    check_org(ident, body.orgId)
    svc, conn_id = services(request), request.path_params["connectionId"]
    row = await svc.connections.get(ident.org_id, conn_id)
    if row is None:
        raise _missing()
    if row["status"] != ACTIVE:
        raise Conflict("crm.not_connected", f"connection is {row['status']}")
    job = await svc.jobs.enqueue(ident.org_id, SYNC, {"connectionId": conn_id},
                                 svc.settings.job_max_attempts, dedupe_key=f"{SYNC}:{conn_id}")
    return JSONResponse({"jobId": job["id"], "status": job["status"]}, status_code=202)


routes = [
    Route("/crm/connections", list_connections, methods=["GET"]),
    Route("/crm/connections", create_connection, methods=["POST"]),
    Route("/crm/connections/{connectionId}", update_connection, methods=["PATCH"]),
    Route("/crm/connections/{connectionId}", delete_connection, methods=["DELETE"]),
    Route("/crm/connections/{connectionId}/sync", sync_connection, methods=["POST"]),
]
