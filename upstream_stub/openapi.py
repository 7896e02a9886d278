"""The upstream's own OpenAPI 3.1 document: `python -m upstream_stub openapi` prints it as JSON.

Request bodies come from the route modules' pydantic models (the ones that validate them), responses
from the view models below (each mirrors a `*_view` function), errors from the reasons each handler
raises. Paths are the upstream's own, unversioned; the gateway maps this document onto its public
route table (`gateway openapi generate`), adding authentication, tenant rules and its refusals.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from upstream_stub.agents import AgentCreate, AgentPatch
from upstream_stub.crm import ConnectionCreate, ConnectionPatch, SyncRequest
from upstream_stub.jobs import JobCreate
from upstream_stub.web import MAX_LIMIT

REF = "#/components/schemas/{model}"


class Agent(BaseModel):
    id: str
    orgId: str  # noqa: N815
    name: str
    description: str
    model: str
    config: dict[str, Any]
    createdBy: str  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class Connection(BaseModel):
    """A CRM connection; credentials are never returned, only whether they are stored."""

    id: str
    orgId: str  # noqa: N815
    provider: str
    name: str
    baseDomain: str | None  # noqa: N815
    status: str
    accountId: int | None  # noqa: N815
    hasCredentials: bool  # noqa: N815
    tokenExpiresAt: str | None  # noqa: N815
    lastSyncAt: str | None  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815


class Job(BaseModel):
    id: str
    orgId: str  # noqa: N815
    type: str
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    maxAttempts: int  # noqa: N815
    lastError: str | None  # noqa: N815
    result: dict[str, Any] | None
    runAfter: str | None  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    completedAt: str | None  # noqa: N815


class AgentPage(BaseModel):
    items: list[Agent]
    nextCursor: str | None  # noqa: N815


class ConnectionPage(BaseModel):
    items: list[Connection]
    nextCursor: str | None  # noqa: N815


class JobPage(BaseModel):
    items: list[Job]
    nextCursor: str | None  # noqa: N815


class SyncAccepted(BaseModel):
    jobId: str  # noqa: N815
    status: str


class ConsentUrl(BaseModel):
    url: str
    expiresAt: str | None  # noqa: N815


class WebhookAccepted(BaseModel):
    accepted: bool


class Revoked(BaseModel):
    revoked: bool


class ChatHook(BaseModel):
    """A Kommo Chats webhook: the upstream reads `account_id` (the amojo id); other keys pass."""

    model_config = ConfigDict(extra="allow")
    account_id: str = Field(min_length=1, max_length=64)


class Problem(BaseModel):
    """RFC 9457 problem details; `reason` is the stable reason id."""

    type: str
    title: str
    status: int
    detail: str
    reason: str
    request_id: str


MODELS: list[type[BaseModel]] = [
    AgentCreate, AgentPatch, ConnectionCreate, ConnectionPatch, SyncRequest, JobCreate, ChatHook,
    Agent, AgentPage, Connection, ConnectionPage, Job, JobPage, SyncAccepted, ConsentUrl,
    WebhookAccepted, Revoked, Problem,
]

ORG = {"name": "orgId", "in": "query", "required": False,
       "description": "Your organisation; must match your token's.", "schema": {"type": "string", "maxLength": 256}}
PAGE = [{"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 20}},
        {"name": "cursor", "in": "query", "required": False,
         "description": "`nextCursor` of the previous page (opaque; a made-up cursor is 422 validation.failed).",
         "schema": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9_-]*$"}}]

IDENTITY = {401: ["identity.missing", "identity.invalid", "identity.expired"], 403: ["identity.wrong_kind"],
            500: ["upstream.internal"]}
USER = {403: ["authz.forbidden", "tenant.mismatch"], 400: ["request.ambiguous"]}
BODY = {413: ["request.body_too_large"], 415: ["request.unsupported_media_type"], 422: ["validation.failed"]}


def _merge(*tables: dict[int, list[str]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for t in tables:
        for status, reasons in t.items():
            out.setdefault(status, [])
            out[status] += [r for r in reasons if r not in out[status]]
    return out


def _json(model: type[BaseModel] | None) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)} if model else {}}}


def _op(op_id: str, tag: str, summary: str, ok: tuple[int, type[BaseModel] | None], errors: dict[int, list[str]],
        params: list[dict[str, Any]] | None = None, body: type[BaseModel] | None = None,
        body_required: bool = True, body_content: dict[str, Any] | None = None) -> dict[str, Any]:
    status, model = ok
    responses: dict[str, Any] = {str(status): {"description": summary}}
    if model is not None:
        responses[str(status)]["content"] = _json(model)
    for code, reasons in sorted(_merge(IDENTITY, errors).items()):
        responses[str(code)] = {
            "description": "refused by the API",
            "content": {"application/problem+json": {"schema": {
                "allOf": [{"$ref": REF.format(model="Problem")},
                          {"type": "object", "properties": {"reason": {"enum": reasons}}}]}}},
        }
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None or body_content is not None:
        op["requestBody"] = {"required": body_required, "content": body_content or _json(body)}
    return op


def _sse(op: dict[str, Any]) -> dict[str, Any]:
    """A streaming operation: `event: status` lines whose data is the job as JSON (upstream_stub/events.py)."""
    # The schema describes one event (field -> value), as SSE-aware tools read it, not the stream.
    event = {"type": "object", "properties": {
        "event": {"type": "string", "enum": ["status"]}, "id": {"type": "string"},
        "data": {"type": "string", "description": "the job as JSON"}, "retry": {"type": "integer"}}}
    op["responses"]["200"]["content"] = {"text/event-stream": {"schema": event}}
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}}


def _query(name: str, required: bool = False, max_length: int = 256, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, **({"minLength": 1} if required else {})}
    if pattern is not None:
        schema["pattern"] = pattern
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _after_consent(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": "Sent by Kommo after consent; required unless `error` is present."}


NOT_FOUND = {404: ["not_found"]}


def paths() -> dict[str, dict[str, Any]]:
    user = _merge(USER)
    listing = _merge(user, {422: ["validation.failed"]})
    writes = _merge(user, BODY)
    return {
        "/agents": {
            "get": _op("listAgents", "agents", "List the organisation's agents", (200, AgentPage), listing,
                       [ORG, *PAGE]),
            "post": _op("createAgent", "agents", "Create an agent", (201, Agent), writes, body=AgentCreate),
        },
        "/agents/{agentId}": {
            "parameters": [_path_param("agentId")],
            "get": _op("getAgent", "agents", "Read an agent", (200, Agent), _merge(user, NOT_FOUND), [ORG]),
            "patch": _op("updateAgent", "agents", "Update an agent", (200, Agent), _merge(writes, NOT_FOUND), [ORG],
                         body=AgentPatch),
            "delete": _op("deleteAgent", "agents", "Delete an agent", (204, None), _merge(user, NOT_FOUND), [ORG]),
        },
        "/jobs": {
            "get": _op("listJobs", "jobs", "List the organisation's jobs", (200, JobPage), listing,
                       [ORG, *PAGE, {"name": "status", "in": "query", "required": False,
                                     "schema": {"enum": ["queued", "running", "succeeded", "failed"]}}]),
            "post": _op("createJob", "jobs", "Enqueue a CRM sync job", (202, Job),
                        _merge(writes, NOT_FOUND, {409: ["crm.not_connected"]}), body=JobCreate),
        },
        "/jobs/{jobId}": {
            "parameters": [_path_param("jobId")],
            "get": _op("getJob", "jobs", "Read a job's status", (200, Job), _merge(user, NOT_FOUND), [ORG]),
        },
        "/jobs/{jobId}/events": {
            "parameters": [_path_param("jobId")],
            "get": _sse(_op("getJobEvents", "jobs", "The job's status changes as Server-Sent Events, until it ends",
                            (200, None), _merge(user, NOT_FOUND), [ORG])),
        },
        "/crm/connections": {
            "get": _op("listConnections", "crm", "List CRM connections", (200, ConnectionPage), listing,
                       [ORG, *PAGE]),
            "post": _op("createConnection", "crm", "Create a CRM connection", (201, Connection),
                        _merge(writes, {400: ["kommo.bad_host"]}), body=ConnectionCreate),
        },
        "/crm/connections/{connectionId}": {
            "parameters": [_path_param("connectionId")],
            "patch": _op("updateConnection", "crm", "Rename a connection or replace its credentials",
                         (200, Connection), _merge(writes, NOT_FOUND), [ORG], body=ConnectionPatch),
            "delete": _op("deleteConnection", "crm", "Delete a connection", (204, None), _merge(user, NOT_FOUND),
                          [ORG]),
        },
        "/crm/connections/{connectionId}/sync": {
            "parameters": [_path_param("connectionId")],
            "post": _op("syncConnection", "crm", "Start a sync of the connection's leads", (202, SyncAccepted),
                        _merge(writes, NOT_FOUND, {409: ["crm.not_connected"]}), [ORG], body=SyncRequest,
                        body_required=False),
        },
        "/kommo/oauth/authorize": {
            "get": _op("kommoAuthorize", "kommo", "The Kommo consent URL, with a signed single-use state",
                       (200, ConsentUrl), _merge(user, NOT_FOUND, {503: ["kommo.not_configured"]}),
                       [ORG, _query("connectionId", max_length=64)]),
        },
        "/kommo/oauth/callback": {
            "get": _op("kommoCallback", "kommo", "Where Kommo returns the browser after consent",
                       (200, Connection),
                       {400: ["oauth.denied", "oauth.bad_request", "oauth.bad_state", "oauth.grant_refused",
                              "kommo.bad_host"], 404: ["not_found"], 502: ["kommo.unavailable"]},
                       # Kommo sends code, state and referer after consent; a refusal brings `error`
                       # instead (400 oauth.denied), so none of the three is required by itself.
                       [_after_consent("code", {"type": "string", "minLength": 1, "maxLength": 4096}),
                        _after_consent("state", {"type": "string", "minLength": 1, "maxLength": 2048}),
                        _after_consent("referer", {"type": "string", "pattern": KOMMO_HOST}),
                        _query("client_id"), _query("error")]),
        },
        "/webhooks/kommo": {
            "post": _op("kommoAccountWebhook", "webhooks", "Kommo account webhook (form-encoded)",
                        (200, WebhookAccepted), {400: ["webhook.malformed"], 413: ["request.body_too_large"]},
                        # Kommo's form always names the account (`account[id]`); the rest varies by event.
                        # Field names are `name[key][0]...` (formparse.py), at most 256 characters.
                        body_content={"application/x-www-form-urlencoded": {"schema": {
                            "type": "object", "required": ["account[id]"],
                            "propertyNames": {"maxLength": 256, "pattern": r"^[^\[\]]+(\[[^\[\]]+\])*$"},
                            "properties": {"account[id]": {"type": "string", "pattern": ACCOUNT_ID}}}}}),
        },
        "/webhooks/kommo-chat": {
            "post": _op("kommoChatWebhook", "webhooks", "Kommo Chats webhook", (200, WebhookAccepted),
                        {400: ["webhook.malformed"], 413: ["request.body_too_large"]}, body=ChatHook),
        },
        "/webhooks/kommo/revoked": {
            "get": _op("kommoRevokedWebhook", "webhooks", "Kommo access-revoked hook", (200, Revoked),
                       {400: ["webhook.malformed"], 403: ["webhook.bad_signature"]},
                       # Kommo's names: client_uuid (the integration's client id), account_id, signature.
                       [_query("client_uuid", required=True),
                        _query("account_id", required=True, max_length=18, pattern=ACCOUNT_ID),
                        _query("signature", required=True, max_length=128)]),
        },
    }


ACCOUNT_ID = "^[0-9]{1,18}$"  # a Kommo account id: ASCII digits (web.ascii_digits)
KOMMO_HOST = (r"^(https://)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.(?:kommo\.com|amocrm\.ru|amocrm\.com)/?$")
PATCHES = {"AgentPatch": ["name", "description", "model", "config"], "ConnectionPatch": ["name", "credentials"]}


def _refine(schemas: dict[str, Any]) -> None:
    """Say in the schema what the handlers enforce beyond the models, so a client can rely on it:
    a patch sets at least one field and none to null; a Kommo host has one of Kommo's forms;
    credentials need a baseDomain."""
    for name, fields in PATCHES.items():
        props = schemas[name]["properties"]
        for field in fields:
            options = [o for o in props[field].get("anyOf", []) if o.get("type") != "null"]
            if options:
                props[field].pop("anyOf")
                props[field].pop("default", None)
                props[field].update(options[0] if len(options) == 1 else {"anyOf": options})
        schemas[name]["anyOf"] = [{"required": [f]} for f in fields]
    create = schemas["ConnectionCreate"]
    create["properties"]["baseDomain"] = {"type": "string", "maxLength": 253, "pattern": KOMMO_HOST}
    create["dependentRequired"] = {"credentials": ["baseDomain"]}


def document() -> dict[str, Any]:
    _, schemas = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF)
    _refine(schemas["$defs"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "upstream", "version": "1"},
        "paths": paths(),
        "components": {"schemas": schemas.get("$defs", {})},
    }


def main(argv: list[str] | None = None) -> int:
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
