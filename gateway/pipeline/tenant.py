"""Tenant binding: the token's org claim against `orgId` in path, query and JSON body.

The audit's central finding: `orgId` was taken from the client, so anyone could read another
company's data by changing it. Each bound route declares where its org lives; a mismatch is 403
`tenant.mismatch`, an ambiguous request 400 `request.ambiguous` (see `gateway.tenant`).
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header
from gateway.pipeline.bodylimit import read_body
from gateway.tenant import TenantBinder, org_from_claims
from gateway.tenant.body import load_object

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class TenantStage:
    """Binds the request to the caller's org, rewriting query/body where the policy says so."""

    def __init__(self, app: ASGIApp, org_claim: str) -> None:
        self.app = app
        self.org_claim = org_claim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        binder: TenantBinder | None = route.tenant if route is not None else None
        if binder is None or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        org = org_from_claims(ctx.claims or {}, self.org_claim)
        rewritten = False
        if binder.binds_path:
            binder.check_path(ctx.path_params, org)
        if binder.binds_query:
            ctx.query_string, changed = binder.bind_query(ctx.query_string, org)
            rewritten = rewritten or changed
        if binder.needs_body and scope["method"] in BODY_METHODS:
            body = await read_body(scope, receive)
            content_type = header(scope, b"content-type")
            # Parsed once: the body stage after us validates this same object, not a re-reading.
            root = ctx.body_json if ctx.body_json is not None else load_object(body, content_type, binder.route_id)
            ctx.body_json = root
            new_body, changed = binder.bind_body(body, content_type, org, root)
            if new_body is not None:
                ctx.body = new_body
                ctx.body_replaced = True
            rewritten = rewritten or changed
        if rewritten:
            ctx.audit_extra["tenant"] = "tenant.rewritten"
        await self.app(scope, receive, send)
