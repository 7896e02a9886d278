"""The `api:` policy section and what it compiles into each route, registered with the loader.

    api.document     openapi.yaml must exist and agree with the route table, operation for
                     operation (a route without an operation, or an operation without a route,
                     is a load error, so `gateway check` refuses them)
    route.validate   per-method body rules compiled from the operation's request body schema, and
                     parameter rules from its query and path parameters' schemas
    route.deprecated Deprecation / Sunset / Link headers and the sunset instant
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import PolicyError
from gateway.openapi.deprecation import compile_deprecation
from gateway.openapi.document import DOCUMENT_NAME, ApiDocument, json_body_schema, load_document
from gateway.openapi.parameters import ParamRule, compile_param_rule
from gateway.openapi.validation import BodyRule, compile_body_rule
from gateway.policy.compiled import CompiledRoute
from gateway.policy.loader import POLICY_CHECKS, ROUTE_FIXUPS, SECTIONS, LoadContext
from gateway.policy.schema import ApiSpec, RouteSpec

REGENERATE = "regenerate it: python -m upstream_stub openapi | gateway openapi generate --upstream -"


@dataclass(frozen=True, slots=True)
class ApiPolicy:
    """The compiled `api:` section: its switches and the loaded document (None when off)."""

    spec: ApiSpec
    document: ApiDocument | None


def _api_section(raw: Any, ctx: LoadContext) -> ApiPolicy | None:
    if raw is None:
        return None
    spec: ApiSpec = raw if isinstance(raw, ApiSpec) else ApiSpec.model_validate(raw)
    doc = None
    if spec.document and ctx.policy_dir is not None:
        errors: list[str] = []
        doc = load_document(ctx.policy_dir, errors)
        if errors:
            raise PolicyError(errors)
        if doc is not None:
            ctx.digest_files.append((DOCUMENT_NAME, doc.text))
    return ApiPolicy(spec, doc)


def _api_route(route: CompiledRoute, spec: RouteSpec, ctx: LoadContext) -> None:
    if spec.deprecated is not None:
        route.deprecation = compile_deprecation(spec.deprecated)
    api: ApiPolicy | None = ctx.shared.get("api")
    doc = api.document if api is not None else None
    if doc is None:
        if spec.validate_body:
            raise ValueError("validate: true needs an OpenAPI document (the `api:` section with "
                             "document: true)")
        return
    validate = api.spec.validate_bodies if spec.validate_body is None else spec.validate_body  # type: ignore[union-attr]
    rules: dict[str, BodyRule] = {}
    params: dict[str, ParamRule] = {}
    for method in spec.methods:
        op = doc.operation(method, spec.path)
        if op is None:
            continue  # reported by the cross-check with both locations
        schema, required, json_only = json_body_schema(doc, op)
        if schema is not None or json_only:
            rules[method] = compile_body_rule(schema, required, json_only, validate)
        if validate:
            item = doc.data["paths"][op.path]
            rule = compile_param_rule(doc.data, item, op.spec, op.where)
            if rule is not None:
                params[method] = rule
    if "HEAD" in route.methods and "HEAD" not in params and "GET" in params:
        params["HEAD"] = params["GET"]  # a HEAD is a GET without the body: the same parameters
    route.body_rules = rules or None
    route.param_rules = params or None


def crosscheck(routes: list[CompiledRoute], ctx: LoadContext) -> list[str]:
    """Every route method has an operation, every operation a route, and they agree on deprecation."""
    api: ApiPolicy | None = ctx.shared.get("api")
    doc = api.document if api is not None else None
    if doc is None:
        return []
    errors = []
    covered: set[tuple[str, str]] = set()
    for r in routes:
        for method in sorted(r.methods - {"HEAD"}):
            key = (method, r.template.text)
            op = doc.operations.get(key)
            if op is None:
                errors.append(f"{r.source} routes: route {r.id!r} ({method} {r.template.text}) has no "
                              f"operation in {DOCUMENT_NAME}; {REGENERATE}")
                continue
            covered.add(key)
            if bool(op.spec.get("deprecated")) != (r.deprecation is not None):
                errors.append(f"{op.where}: `deprecated` disagrees with route {r.id!r} ({r.source}); "
                              f"{REGENERATE}")
    for key, op in doc.operations.items():
        if key not in covered and not op.builtin:
            errors.append(f"{op.where}: operation {key[0]} {key[1]} has no route in the route table; "
                          f"add a route or {REGENERATE}")
    return errors


SECTIONS["api"] = _api_section
ROUTE_FIXUPS.append(_api_route)
POLICY_CHECKS.append(crosscheck)
