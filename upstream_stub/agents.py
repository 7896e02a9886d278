"""Agent routes: create, list (cursor pagination), read, update, delete — all within the caller's org.

Writes need a writing role (`viewer` only reads); delete needs `admin` or `owner`. The `config`
document is bounded (16 KiB, depth 8) so one agent cannot bloat the database or a response.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from upstream_stub.errors import NotFound, Unprocessable
from upstream_stub.identity import ADMINS, WRITERS, user
from upstream_stub.services import services
from upstream_stub.web import bounded_json, check_org, check_query_org, iso, page, page_args, parse_json

MAX_CONFIG_BYTES = 16 * 1024
MAX_CONFIG_DEPTH = 8
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_CONFIG_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


class _ConfigMixin(BaseModel):
    @field_validator("config", check_fields=False)
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        if _depth(value) > MAX_CONFIG_DEPTH:
            raise ValueError(f"config nests deeper than {MAX_CONFIG_DEPTH}")
        if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_CONFIG_BYTES:
            raise ValueError(f"config is over {MAX_CONFIG_BYTES} bytes")
        return value


class AgentCreate(_ConfigMixin):
    model_config = ConfigDict(extra="forbid")
    orgId: str | None = Field(None, max_length=256)  # noqa: N815
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    model: str = Field(pattern=MODEL_PATTERN)
    config: dict[str, Any] = Field(default_factory=dict)


class AgentPatch(_ConfigMixin):
    model_config = ConfigDict(extra="forbid")
    orgId: str | None = Field(None, max_length=256)  # noqa: N815
    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=2000)
    model: str | None = Field(None, pattern=MODEL_PATTERN)
    config: dict[str, Any] | None = None


def agent_view(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "orgId": row["org_id"], "name": row["name"], "description": row["description"],
        "model": row["model"], "config": json.loads(row["config"]), "createdBy": row["created_by"],
        "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"]),
    }


def _missing() -> NotFound:
    return NotFound("not_found", "no such agent")


async def list_agents(request: Request) -> JSONResponse:
    ident = user(request)
    check_query_org(request, ident)
    limit, after = page_args(request)
    rows = await services(request).agents.list_page(ident.org_id, after, limit)
    return page([agent_view(r) for r in rows], [r["seq"] for r in rows], limit)


async def create_agent(request: Request) -> JSONResponse:
    ident = user(request, WRITERS)
    body = await parse_json(request, AgentCreate)
    check_org(ident, body.orgId)
    fields = body.model_dump(exclude={"orgId"})
    fields["config"] = bounded_json(body.config, MAX_CONFIG_BYTES)
    row = await services(request).agents.create(ident.org_id, ident.sub, fields)
    return JSONResponse(agent_view(row), status_code=201)


async def get_agent(request: Request) -> JSONResponse:
    ident = user(request)
    check_query_org(request, ident)
    row = await services(request).agents.get(ident.org_id, request.path_params["agentId"])
    if row is None:
        raise _missing()
    return JSONResponse(agent_view(row))


async def update_agent(request: Request) -> JSONResponse:
    ident = user(request, WRITERS)
    check_query_org(request, ident)
    body = await parse_json(request, AgentPatch)
    check_org(ident, body.orgId)
    fields = body.model_dump(exclude={"orgId"}, exclude_unset=True)
    if not fields:
        raise Unprocessable("validation.failed", "nothing to update")
    if any(v is None for v in fields.values()):
        raise Unprocessable("validation.failed", "fields cannot be set to null")
    if "config" in fields:
        fields["config"] = bounded_json(fields["config"], MAX_CONFIG_BYTES)
    row = await services(request).agents.update(ident.org_id, request.path_params["agentId"], fields)
    if row is None:
        raise _missing()
    return JSONResponse(agent_view(row))


async def delete_agent(request: Request) -> Response:
    ident = user(request, ADMINS)
    check_query_org(request, ident)
    if not await services(request).agents.delete(ident.org_id, request.path_params["agentId"]):
        raise _missing()
    return Response(status_code=204)


routes = [
    Route("/agents", list_agents, methods=["GET"]),
    Route("/agents", create_agent, methods=["POST"]),
    Route("/agents/{agentId}", get_agent, methods=["GET"]),
    Route("/agents/{agentId}", update_agent, methods=["PATCH"]),
    Route("/agents/{agentId}", delete_agent, methods=["DELETE"]),
]
