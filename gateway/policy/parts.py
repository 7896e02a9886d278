"""Compilers for the feature sections of a policy, registered with the loader in one place.

Each turns raw YAML into the feature's own validated model and compiled object, so the request
path only does lookups. Errors are raised as ValueError / pydantic.ValidationError and located by
the loader (`file:line routes[i].tenant.query: ...`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from gateway.auth import JwtPolicy
from gateway.cors import CorsOverride, CorsPolicy, compile_cors, load_cors
from gateway.policy.compiled import CompiledRoute
from gateway.policy.loader import ROUTE_FIXUPS, ROUTE_PARTS, SECTIONS, FieldError, LoadContext
from gateway.policy.schema import RouteSpec
from gateway.policy.suggest import close_match
from gateway.ratelimit import RateLimitPolicy, RateLimitSettings, compile_policy
from gateway.tenant import TenantPolicy, compile_tenant
from gateway.webhooks import compile_webhook, parse_webhook_config

# Kommo waits 2 s for a 2xx and disables a webhook after repeated failures: a webhook route's
# upstream budget must fit inside the sender's.
WEBHOOK_MAX_DEFAULT_TOTAL = 2.0


class AuthSection(BaseModel):
    """`auth:` — how user tokens are verified."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    jwt: JwtPolicy | None = None


def _auth(raw: Any, ctx: LoadContext) -> AuthSection:
    return AuthSection.model_validate(raw or {})


def _cors_section(raw: Any, ctx: LoadContext) -> CorsPolicy | None:
    if raw is None:
        return None
    policy = load_cors(raw, production=ctx.production)
    ctx.shared["cors.matcher"] = compile_cors(policy)
    return policy


def _cors(raw: Any, spec: RouteSpec, ctx: LoadContext) -> Any:
    """A route override replaces the global fields it sets; routes without one share the global
    matcher. No `cors:` anywhere: no cross-origin access at all (preflights are refused)."""
    base: CorsPolicy | None = ctx.shared.get("cors")
    if raw is None:
        return ctx.shared.get("cors.matcher")
    if base is None:
        base = load_cors({"allow_origins": []}, production=ctx.production)
    override = CorsOverride.model_validate(raw, context={"production": ctx.production})
    return compile_cors(base, override)


def _rate_limits_section(raw: Any, ctx: LoadContext) -> RateLimitSettings:
    return RateLimitSettings.model_validate(raw or {})


def _rate_limit(raw: Any, spec: RouteSpec, ctx: LoadContext) -> Any:
    settings: RateLimitSettings = ctx.shared.get("rate_limits") or RateLimitSettings()
    if raw is None:
        if settings.default is None:
            return None
        return compile_policy(settings.default, "default", settings.replicas)
    return compile_policy(RateLimitPolicy.model_validate(raw), spec.id, settings.replicas)


def _tenant(raw: Any, spec: RouteSpec, ctx: LoadContext) -> Any:
    if raw is None:
        return None
    policy = TenantPolicy.model_validate(raw)
    if policy.path is not None and ("{" + policy.path + "}") not in spec.path:
        raise ValueError(f"tenant.path names {policy.path!r}, which is not a parameter of {spec.path}")
    return compile_tenant(policy, spec.id)


def _webhook(raw: Any, spec: RouteSpec, ctx: LoadContext) -> Any:
    if raw is None:
        return None
    cfg = parse_webhook_config(raw)
    return compile_webhook(cfg, ctx.env, ctx.production, route_id=spec.id)


def _auth_required(route: CompiledRoute, spec: RouteSpec, ctx: LoadContext) -> None:
    if "auth" in ctx.failed:
        return  # the auth section's own error is the one message
    auth: AuthSection | None = ctx.shared.get("auth")
    if spec.auth == "jwt" and (auth is None or auth.jwt is None):
        raise ValueError(f"route {spec.id!r} says auth: jwt but the policy has no auth.jwt section")


def _declared_roles(route: CompiledRoute, spec: RouteSpec, ctx: LoadContext) -> None:
    """`roles:` on a route may only name roles declared in `auth.jwt.roles` (a typo such as
    `admn` would otherwise silently lock everyone out, or read as protection it is not)."""
    if not spec.roles or "auth" in ctx.failed or ctx.earlier_rules:
        return
    auth: AuthSection | None = ctx.shared.get("auth")
    if auth is None or auth.jwt is None:
        return  # reported by _auth_required
    declared = auth.jwt.roles
    for i, role in enumerate(spec.roles):
        if role not in declared:
            hint = close_match(role, declared, cutoff=0.6)
            extra = f' (did you mean "{hint}"?)' if hint else ""
            raise FieldError(("roles", i), f"unknown role {role!r}{extra}; auth.jwt.roles declares {declared}")


def _webhook_timeouts(route: CompiledRoute, spec: RouteSpec, ctx: LoadContext) -> None:
    if route.webhook is None:
        return
    if spec.timeouts is None or spec.timeouts.total is None:
        route.total_timeout = min(route.total_timeout, WEBHOOK_MAX_DEFAULT_TOTAL)
        route.connect_timeout = min(route.connect_timeout, route.total_timeout)
    route.max_body_bytes = min(route.max_body_bytes, route.webhook.max_body_bytes)


SECTIONS["auth"] = _auth
SECTIONS["cors"] = _cors_section
SECTIONS["rate_limits"] = _rate_limits_section
ROUTE_PARTS["cors"] = _cors
ROUTE_PARTS["rate_limit"] = _rate_limit
ROUTE_PARTS["tenant"] = _tenant
ROUTE_PARTS["webhook"] = _webhook
ROUTE_FIXUPS.append(_auth_required)
ROUTE_FIXUPS.append(_declared_roles)
ROUTE_FIXUPS.append(_webhook_timeouts)
