"""Map the upstream's own OpenAPI document onto the public route table: the public document.

For each route and method, the upstream operation at the route's upstream path gives parameters,
request body and responses; the route gives the rest: the public path, the bearer JWT scheme on
`auth: jwt` routes (public routes say `security: []`), the webhook's signature header or path
token, every refusal the gateway can give on that route (from `gateway.reasons`, merged with the
upstream's own per status, as `application/problem+json` with the `reason` values as an enum),
the RateLimit headers on rate-limited routes, and deprecation. The gateway never imports the
upstream: its document comes in as JSON (`python -m upstream_stub openapi`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs
from pydantic import ValidationError

from gateway.errors import PolicyError
from gateway.openapi.docs import DOCS, ERRORS, OPENAPI_JSON
from gateway.openapi.document import BUILTIN
from gateway.policy.loader import read_sources
from gateway.policy.schema import MUTATING, ApiSpec, RouteSpec
from gateway.reasons import BY_ID, reasons_for
from gateway.webhooks.verifiers import KommoRevokedVerifier

PROBLEM = "GatewayProblem"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          408: "Request Timeout", 409: "Conflict", 410: "Gone", 413: "Content Too Large", 414: "URI Too Long",
          415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
          431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
          503: "Service Unavailable", 504: "Gateway Timeout"}

HEADER_DEFS = {
    "RateLimit": {"description": "Remaining quota of the limit closest to exhaustion (IETF "
                                 "draft-ietf-httpapi-ratelimit-headers).", "schema": {"type": "string"}},
    "RateLimit-Policy": {"description": "The limits that apply to this route.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
    "Allow": {"description": "The methods this path has.", "schema": {"type": "string"}},
    "Deprecation": {"description": "RFC 9745: when this operation was deprecated (`@<epoch seconds>`).",
                    "schema": {"type": "string"}},
    "Sunset": {"description": "RFC 8594: when it stops answering (HTTP-date).", "schema": {"type": "string"}},
    "Link": {"description": 'The deprecation notice (rel="deprecation") and the successor '
                            '(rel="successor-version").', "schema": {"type": "string"}},
}


def _refs(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in names}


RATE_HEADERS = _refs("RateLimit", "RateLimit-Policy")
RETRY_AFTER = _refs("Retry-After")
DEPRECATION_HEADERS = _refs("Deprecation", "Sunset", "Link")


class RouteInfo:
    """What the generator needs of the policy: the raw route specs and a few section facts."""

    def __init__(self, routes: list[RouteSpec], default_rate_limit: bool, api: ApiSpec | None,
                 title: str = "API") -> None:
        self.routes = routes
        self.default_rate_limit = default_rate_limit
        self.api = api or ApiSpec()
        self.title = title


def read_routes(policy_dir: str | Path, env: Mapping[str, str] | None = None) -> RouteInfo:
    """The policy's routes as written (no secrets needed: nothing is compiled)."""
    errors: list[str] = []
    sources = read_sources(policy_dir, env or {}, errors)
    routes: list[RouteSpec] = []
    default_rl, api = False, None
    bad = []
    for src, _ in sources:
        data = src.data if isinstance(src.data, dict) else {}
        for i, raw in enumerate(data.get("routes") or []):
            try:
                routes.append(RouteSpec.model_validate(raw))
            except ValidationError as exc:
                bad.append(f"{src.where(('routes', i))}: {exc.errors()[0]['msg']}")
        rl = data.get("rate_limits")
        if isinstance(rl, dict) and rl.get("default"):
            default_rl = True
        if data.get("api") is not None:
            api = ApiSpec.model_validate(data["api"])
    if bad:
        raise PolicyError(bad)
    return RouteInfo(routes, default_rl, api)


def _upstream_path(spec: RouteSpec) -> str:
    if spec.upstream_path is not None:
        return spec.upstream_path
    return spec.path[3:] if spec.path.startswith("/v1/") else spec.path


def _problem_content(reasons: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {"type": "object", "properties": {"reason": {"enum": reasons}}}
    schema = {"allOf": [{"$ref": f"#/components/schemas/{PROBLEM}"}, extra]}
    errors = [{"$ref": f"#/components/schemas/{name}"} for reason, name in
              (("request.invalid_body", "FieldErrors"), ("request.invalid_parameter", "ParameterErrors"))
              if reason in reasons]
    if errors:
        extra["properties"]["errors"] = errors[0] if len(errors) == 1 else {"oneOf": errors}
    return {"application/problem+json": {"schema": schema}}


def _kinds(spec: RouteSpec, method: str, has_json_body: bool, has_params: bool, info: RouteInfo) -> set[str]:
    kinds: set[str] = set()
    validate = info.api.validate_bodies if spec.validate_body is None else spec.validate_body
    if method in BODY_METHODS:
        kinds.add("body")
    if has_json_body and validate:
        kinds.add("validate")
    if has_params and validate:
        kinds.add("params")
    if spec.auth == "jwt":
        kinds.add("jwt")
    if spec.auth == "webhook":
        kinds.add("webhook")
    if spec.tenant is not None:
        kinds.add("tenant")
    if spec.roles or spec.scopes:
        kinds.add("roles")
    if spec.rate_limit is not None or info.default_rate_limit:
        kinds.add("ratelimit")
    if method in MUTATING:
        kinds.add("mutating")
    if spec.deprecated is not None:
        kinds.add("deprecated")
    if _PARAM.search(spec.path):
        kinds.add("unrouted")  # a parameter value that is not one segment matches no route
    return kinds


# The schema and description of each parameter the kommo_revoked verifier reads
# (KommoRevokedVerifier.QUERY: a name it reads without an entry here fails generation loudly).
# The upstream's declaration of a name is kept (its schema may be stricter) and made required.
_REVOKED_QUERY = {
    "client_uuid": ({"type": "string", "minLength": 1, "maxLength": 256},
                    "The integration's client id: the gateway's `client_id_env` value."),
    "account_id": ({"type": "string", "minLength": 1, "maxLength": 256}, "The Kommo account whose access was revoked."),
    "signature": ({"type": "string", "minLength": 1, "maxLength": 128},
                  "Hex HMAC-SHA256 of `<client_uuid>|<account_id>` with the integration's client secret."),
}


def _declare_revoked_query(params: list[dict[str, Any]]) -> None:
    for name in KommoRevokedVerifier.QUERY:
        schema, text = _REVOKED_QUERY[name]
        mine = next((p for p in params if p.get("in") == "query" and p.get("name") == name), None)
        if mine is None:
            mine = {"name": name, "in": "query", "schema": dict(schema)}
            params.append(mine)
        mine["required"] = True
        mine.setdefault("description", text)


def _describe_bound_query(param: dict[str, Any]) -> None:
    """The org parameter as the tenant stage reads it: a `+` in its value is refused (400
    request.ambiguous: a form decoder reads a space, RFC 3986 a plus), so a value with a space
    has no unambiguous `+` spelling. Org ids carry no whitespace; the schema says so, and the
    description says how to send a literal plus or space anyway."""
    schema = param.setdefault("schema", {"type": "string"})
    schema.update({"minLength": 1, "pattern": "^\\S+$"})
    note = ("Percent-encode the value: a `+` in it is refused as ambiguous (400 request.ambiguous), "
            "so send a plus as %2B and a space as %20.")
    param["description"] = f"{param['description']} {note}" if param.get("description") else note


def _operation(spec: RouteSpec, method: str, up: dict[str, Any] | None, info: RouteInfo) -> dict[str, Any]:
    up = copy.deepcopy(up) if up else {"responses": {}}
    multi = len(spec.methods) > 1
    op: dict[str, Any] = {
        "operationId": f"{spec.id}.{method.lower()}" if multi else spec.id,
        "x-gateway-route": spec.id,
    }
    for key in ("tags", "summary"):
        if key in up:
            op[key] = up[key]
    if spec.description:
        op["description"] = spec.description
    params = [p for p in up.get("parameters", []) if p.get("in") != "path"]
    bound = spec.tenant.get("query") if isinstance(spec.tenant, dict) else getattr(spec.tenant, "query", None)
    for p in params:
        if bound and p.get("in") == "query" and p.get("name") == bound:
            _describe_bound_query(p)
    path_params = {p["name"]: p for p in up.get("_path_parameters", [])}
    # The gateway refuses a path parameter outside these characters (400 request.bad_path).
    public = [path_params.get(name, {"name": name, "in": "path", "required": True,
                                     "schema": {"type": "string", "minLength": 1, "maxLength": 256,
                                                "pattern": "^[A-Za-z0-9._~@:+=-]+$"}})
              for name in _PARAM.findall(spec.path)]
    webhook = spec.webhook if isinstance(spec.webhook, dict) else {}
    if spec.auth == "webhook" and webhook.get("type") == "url_token":
        for p in public:
            if p["name"] == webhook.get("param"):
                p["description"] = "The secret path token of the webhook URL (never forwarded)."
                p["schema"] = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9._~-]+$"}
    if spec.auth == "webhook" and webhook.get("header"):
        params.append({"name": webhook["header"], "in": "header", "required": True,
                       "description": f"Signature of the raw body: {webhook.get('encoding', 'hex')} "
                                      f"HMAC-{str(webhook.get('algorithm', 'sha256')).upper()} with the "
                                      "shared secret.", "schema": {"type": "string", "maxLength": 512}})
    if spec.auth == "webhook" and webhook.get("type") == "kommo_revoked":
        op["description"] = ("Kommo access-revoked hook: `signature` is the hex HMAC-SHA256 of "
                             "`<client_uuid>|<account_id>` with the integration's client secret.")
        _declare_revoked_query(params)
    if public or params:
        op["parameters"] = public + params
    body = up.get("requestBody")
    has_json_body = bool(body and "application/json" in (body.get("content") or {}))
    if body:
        op["requestBody"] = body
    if spec.auth == "jwt":
        op["security"] = [{"bearerAuth": []}]
    else:
        op["security"] = []
    has_params = any(p.get("in") in ("query", "path") for p in public + params)
    kinds = _kinds(spec, method, has_json_body, has_params, info)
    responses: dict[str, Any] = {}
    upstream_reasons: dict[int, list[str]] = {}
    for code, resp in up.get("responses", {}).items():
        status = int(code)
        if status >= 400:
            schema = resp.get("content", {}).get("application/problem+json", {}).get("schema", {})
            enum: list[str] = next((part["properties"]["reason"]["enum"] for part in schema.get("allOf", [])
                         if "properties" in part), [])
            upstream_reasons[status] = list(enum)
        else:
            responses[code] = resp
    gateway_reasons: dict[int, list[str]] = {}
    for r in reasons_for(kinds):
        gateway_reasons.setdefault(r.status, []).append(r.id)
    if spec.auth == "webhook":
        for code, resp in list(responses.items()):
            if code == "200" and "content" in resp:
                schema = resp["content"]["application/json"]["schema"]
                resp["content"]["application/json"]["schema"] = {
                    "anyOf": [schema, {"$ref": "#/components/schemas/WebhookDuplicate"}]}
    for status in sorted(set(upstream_reasons) | set(gateway_reasons)):
        reasons = sorted(set(upstream_reasons.get(status, [])) | set(gateway_reasons.get(status, [])))
        if 200 <= status < 300:
            continue
        resp = {"description": TITLES.get(status, "Error") + ": " + ", ".join(reasons),
                "content": _problem_content(reasons)}
        if status in (429, 503) or "webhook.in_progress" in reasons:
            resp["headers"] = dict(RETRY_AFTER)
        if status == 405:
            resp["headers"] = _refs("Allow")
        responses[str(status)] = resp
    for code, resp in responses.items():
        headers = resp.setdefault("headers", {})
        if "ratelimit" in kinds and code not in ("401",):
            headers.update(RATE_HEADERS)
        if spec.deprecated is not None:
            headers.update(DEPRECATION_HEADERS)
        if not headers:
            del resp["headers"]
    op["responses"] = dict(sorted(responses.items()))
    if spec.deprecated is not None:
        op["deprecated"] = True
        dep = spec.deprecated
        note = f"Deprecated since {dep.since}"
        if dep.sunset:
            note += f"; sunset {dep.sunset} (then 410 route.sunset)"
        if dep.successor:
            note += f"; use {dep.successor}"
        op["description"] = (op.get("description", "") + "\n\n" + note + ".").strip()
    return op


def _builtin(summary: str, content_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": "gateway." + summary.split()[0].lower(), "tags": ["gateway"],
                    "summary": summary, "security": [], BUILTIN: True,
                    "responses": {"200": {"description": summary, "headers": {"ETag": {"schema": {"type": "string"}}},
                                          "content": {content_type: {"schema": schema}}},
                                  "304": {"description": "Not modified (If-None-Match)"}}}}


# The parts of the upstream's document the generator reads, and the shape it reads them in. A
# document of another shape is refused with the place and the problem, never a traceback.
_CONTENT = {"type": "object", "additionalProperties": {
    "type": "object", "properties": {"schema": {"type": ["object", "boolean"]}}}}
_PARAMETER = {"type": "object", "required": ["name", "in"], "properties": {
    "name": {"type": "string"}, "in": {"type": "string"}, "schema": {"type": ["object", "boolean"]}}}
_OPERATION = {"type": "object", "properties": {
    "parameters": {"type": "array", "items": _PARAMETER},
    "requestBody": {"type": "object", "properties": {"content": _CONTENT}},
    # Explicit status codes: the generator adds the gateway's refusals by code (no `default`, no `4XX`).
    "responses": {"type": "object", "propertyNames": {"pattern": "^[1-5][0-9][0-9]$"},
                  "additionalProperties": {"type": "object", "properties": {
                      "content": _CONTENT, "headers": {"type": "object"}}}}}}
UPSTREAM_SHAPE = {"type": "object", "required": ["paths"], "properties": {
    "paths": {"type": "object", "additionalProperties": {"type": "object", "properties": {
        "parameters": {"type": "array", "items": _PARAMETER},
        **{m.lower(): _OPERATION for m in ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")}}}},
    "components": {"type": "object", "properties": {
        name: {"type": "object"} for name in ("schemas", "parameters", "responses", "headers")}}}}
_SHAPE = jsonschema_rs.validator_for(UPSTREAM_SHAPE)


def upstream_problems(upstream: Any, most: int = 10) -> list[str]:
    """Where the upstream's document is not of the shape the generator reads (at most `most`)."""
    out = []
    for err in _SHAPE.iter_errors(upstream):
        where = "".join(f"[{p}]" if isinstance(p, int) else f"[{p!r}]" if "/" in p or "." in p else f".{p}"
                        for p in err.instance_path).lstrip(".") or "(the document)"
        out.append(f"--upstream: {where}: {err.message}")
        if len(out) == most:
            break
    return out


def generate(upstream: dict[str, Any], info: RouteInfo, title: str = "Public API",
             version: str = "1") -> tuple[dict[str, Any], list[str]]:
    """(the public document, problems) — a route whose upstream operation is missing is a problem."""
    problems: list[str] = []
    up_paths: dict[str, Any] = upstream.get("paths", {})
    paths: dict[str, Any] = {}
    for spec in info.routes:
        up_item = up_paths.get(_upstream_path(spec)) or {}
        for method in spec.methods:
            up_op = up_item.get(method.lower())
            if up_op is None:
                problems.append(f"route {spec.id!r}: the upstream has no operation {method} {_upstream_path(spec)}")
            up_op = dict(up_op or {"responses": {}})
            up_op["_path_parameters"] = up_item.get("parameters", [])
            paths.setdefault(spec.path, {})[method.lower()] = _operation(spec, method, up_op, info)
    if info.api.serve_document:
        paths[OPENAPI_JSON] = _builtin("This OpenAPI document", "application/json", {"type": "object"})
    if info.api.serve_docs:
        if info.api.serve_document:
            paths[DOCS] = _builtin("Documentation page", "text/html", {"type": "string"})
        paths[ERRORS] = _builtin("Error reason catalogue", "text/html", {"type": "string"})
    refusals = _share_refusals(paths)
    schemas = dict(upstream.get("components", {}).get("schemas", {}))
    schemas[PROBLEM] = {
        "type": "object", "description": "RFC 9457 problem details. `type` links to the reason's entry in "
                                         f"{ERRORS}.",
        "required": ["type", "title", "status", "detail", "reason", "request_id"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "reason": {"type": "string"},
                       "request_id": {"type": "string"}}}
    schemas["FieldErrors"] = {
        "type": "array", "maxItems": 10, "description": "One entry per failing field (request.invalid_body).",
        "items": {"type": "object", "required": ["pointer", "detail"],
                  "properties": {"pointer": {"type": "string", "description": "RFC 6901 JSON pointer"},
                                 "detail": {"type": "string"}}}}
    schemas["ParameterErrors"] = {
        "type": "array", "maxItems": 10,
        "description": "One entry per failing query or path parameter (request.invalid_parameter).",
        "items": {"type": "object", "required": ["in", "name", "detail"],
                  "properties": {"in": {"enum": ["query", "path"]}, "name": {"type": "string"},
                                 "detail": {"type": "string"}}}}
    schemas["WebhookDuplicate"] = {
        "type": "object", "description": "A delivery already processed: acknowledged, not forwarded.",
        "required": ["status", "reason"],
        "properties": {"status": {"const": "duplicate"}, "reason": {"const": "webhook.duplicate"}}}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Generated by `gateway openapi generate` from the upstream's own document and "
                                f"the gateway's route table; do not edit by hand. Error reasons: {ERRORS}."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": refusals,
            "headers": HEADER_DEFS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                               "description": "An access token of the identity provider."}},
        },
    }
    unknown = sorted({r for r in _all_reasons(doc) if r not in BY_ID})
    if unknown:
        problems.append(f"reasons without a catalogue entry in gateway/reasons.py: {unknown}")
    return doc, problems


def _share_refusals(paths: dict[str, Any]) -> dict[str, Any]:
    """Identical refusal responses become one `components.responses` entry each (named by status
    and content), so the document stays small enough to load fast and to read."""
    shared: dict[str, Any] = {}
    for item in paths.values():
        for op in item.values():
            responses = op.get("responses", {})
            for code, resp in responses.items():
                if not code.isdigit() or int(code) < 400 or "$ref" in resp:
                    continue
                digest = hashlib.sha256(json.dumps(resp, sort_keys=True).encode()).hexdigest()[:8]
                name = f"Refusal{code}-{digest}"
                shared[name] = resp
                responses[code] = {"$ref": f"#/components/responses/{name}"}
    return dict(sorted(shared.items()))


def _all_reasons(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        reason = node.get("properties", {}).get("reason") if isinstance(node.get("properties"), dict) else None
        if isinstance(reason, dict) and isinstance(reason.get("enum"), list):
            out += reason["enum"]
        for v in node.values():
            out += _all_reasons(v)
    elif isinstance(node, list):
        for v in node:
            out += _all_reasons(v)
    return out
