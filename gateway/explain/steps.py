"""The per-stage verdicts of one explained request, read from the trace and the route's compiled parts.

What a stage "steps aside" from is read from the same compiled route parts the stage itself reads.
"""

from __future__ import annotations

from gateway.app import Gateway
from gateway.auth import claim_at
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.explain.model import Step
from gateway.explain.stub import _Trace
from gateway.pipeline.base import Scope


def _steps(gw: Gateway, labels: list[str], trace: _Trace, scope: Scope, ctx: RequestContext | None,
           status: int) -> list[Step]:
    entered = set(trace.entered)
    if ctx is not None:
        entered.add(labels[0])
    out = []
    for i, label in enumerate(labels):
        if label not in entered:
            out.append(Step(label, "not reached"))
        elif trace.error is not None and trace.error[0] == label:
            err = trace.error[1]
            out.append(Step(label, "denied", f"{err.status} {err.reason}: {err.detail}{_listed(err)}"))
        elif i == len(labels) - 1:
            out.append(Step(label, "forwarded", "stub upstream answered 200; nothing was sent"))
        elif labels[i + 1] not in entered:
            what = "preflight answered" if scope.get("gateway.preflight") else "answered here"
            out.append(Step(label, "answered", f"{what} with {status}"))
        elif ctx is None:
            out.append(Step(label, "passed"))
        else:
            aside, note = _part(gw, label, scope, ctx)
            out.append(Step(label, "stepped aside" if aside else "passed", note))
    return out


def _part(gw: Gateway, label: str, scope: Scope, ctx: RequestContext) -> tuple[bool, str]:
    """(stepped aside?, note) for a stage the request passed, from the part of the route it reads."""
    route = ctx.route
    if label == "client address":
        how = "X-Forwarded-For walked through trusted proxies" if gw.proxies.networks else \
            "peer address; no trusted proxies configured"
        return False, f"client {ctx.client_ip} ({how})"
    if label == "hygiene":
        return False, "URL, header block and path are canonical and within limits"
    if route is None:
        return False, ""
    claims = ctx.claims or {}
    jwt_policy = gw.jwt_policy
    if label == "route match":
        return False, f"{route.id} ({route.source})"
    if label == "cors":
        origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
        if route.cors is None:
            return True, "no CORS policy on this route"
        if origin is None:
            return True, "no Origin header"
        if any(k == b"access-control-allow-origin" for k, _ in ctx.response_headers):
            return False, f"origin {origin} allowed"
        return False, f"origin {origin} not allowed: no Access-Control-Allow-Origin (the browser hides the answer)"
    if label == "size caps":
        return False, f"body within {route.max_body_bytes} bytes"
    if label == "authentication":
        if route.auth != "jwt":
            return True, f"auth: {route.auth}"
        return False, f"bearer token verified (sub={claims.get('sub')!r})"
    if label == "webhook":
        if route.webhook is None:
            return True, "not a webhook route"
        return False, f"{route.webhook.verifier.scheme} verified"
    if label == "tenant":
        if route.tenant is None:
            return True, "no tenant binding on this route"
        org = claim_at(claims, jwt_policy.org_claim if jwt_policy else "org_id")
        done = []
        if route.tenant.binds_query:
            done.append("query already names it" if ctx.query_string == scope["query_string"]
                        else "query changed (org added or rewritten)")
        if route.tenant.needs_body:
            done.append("body changed (org added or rewritten)" if ctx.body_replaced else "body already names it")
        return False, f"bound to org {org!r}: " + ", ".join(done or ["path checked"])
    if label == "authorization":
        if not route.roles and not route.scopes:
            return True, "route requires no role or scope"
        role = claim_at(claims, jwt_policy.role_claim if jwt_policy else "org_role")
        return False, f"role {role!r} is one of {sorted(route.roles or [])}" + (
            f"; scopes {sorted(route.scopes)} present" if route.scopes else "")
    if label == "address limits":
        if route.rate_limit is not None and route.rate_limit.by_address:
            return False, f"within limit {route.rate_limit.name!r} per address (in-memory counters)"
        return True, "no per-address limit" + ("; no webhook failure block" if route.auth == "webhook" else "")
    if label == "rate limit":
        if route.rate_limit is None:
            return True, "no rate limit"
        if route.rate_limit.by_address:
            return True, "per-address limit already applied (address limits)"
        return False, f"within limit {route.rate_limit.name!r} (in-memory counters)"
    return False, ""


def _listed(err: GatewayError) -> str:
    """What a 422 names in its `errors` member (a field's pointer, or a parameter), in brackets."""
    listed = (err.extensions or {}).get("errors")
    if not isinstance(listed, list) or not listed:
        return ""
    parts = [f'{e["in"]} parameter "{e["name"]}" {e["detail"]}' if "name" in e
             else f'{e.get("pointer") or "/"} {e["detail"]}' for e in listed]
    return " (" + "; ".join(parts) + ")"
