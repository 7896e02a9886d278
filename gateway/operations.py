"""Operations glue: the audit observer, the request log line, and safe policy reload.

Reload (SIGHUP, or a change in the policy directory): the new policy is fully validated before it
replaces the old one; an invalid one is refused and the old one keeps serving (log, metric, audit
record). Requests in flight keep the policy object they started with (`ctx.policy`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.audit import AuditLog, request_record
from gateway.auth.claims import claim_text
from gateway.context import RequestContext
from gateway.errors import PolicyError, ServiceUnavailable
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.loader import load_policy

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.request")
reload_log = logging.getLogger("gateway.reload")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def audit_path(scope: Scope, ctx: RequestContext) -> str:
    """The normalised path; for webhook routes the template (a path token is a secret)."""
    route = ctx.route
    if route is not None and route.webhook is not None:
        return route.template.text
    parts = scope.get("gateway.parts")
    if parts is None:
        return "(unparsed)"
    return ("/" + "/".join(parts))[:512]


class AuditObserver:
    """Writes one audit line per mutating request and per denial; logs one line per request."""

    def __init__(self, audit: AuditLog, org_claim: str = "org_id") -> None:
        self.audit = audit
        self.org_claim = org_claim

    def __call__(self, scope: Scope, ctx: RequestContext) -> None:
        method = scope["method"]
        route_id = ctx.route.id if ctx.route is not None else None
        if ctx.decision != "allow" or method in MUTATING or ctx.audit_extra:
            duration_ms = round((time.perf_counter() - ctx.started) * 1000, 3)
            claims = ctx.claims or {}
            sub = claims.get("sub")
            extra = dict(ctx.audit_extra)
            if ctx.trace is not None:
                extra.setdefault("trace_id", ctx.trace.trace_id)
            if ctx.client_request_id is not None:
                extra.setdefault("client_request_id", ctx.client_request_id)
            org = claim_text(claims, self.org_claim) if claims else None  # as tenant binding reads it
            self.audit.submit(request_record(
                request_id=ctx.request_id, sub=sub if isinstance(sub, str) else None,
                org=org, client_ip=ctx.client_ip, method=method,
                route_id=route_id, path=audit_path(scope, ctx), status=ctx.status, decision=ctx.decision,
                reason=ctx.reason, duration_ms=duration_ms, **extra,
            ))
        if ctx.decision != "allow" or log.isEnabledFor(logging.DEBUG):
            log.info("%s %s -> %d %s", method, route_id or "-", ctx.status, ctx.reason or "",
                     extra={"request_id": ctx.request_id, "route": route_id, "reason": ctx.reason,
                            "trace_id": ctx.trace.trace_id if ctx.trace is not None else None})


class AuditGuardStage:
    """With `audit.on_failure: refuse`, mutating requests are refused while the sink fails."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.audit.refusing and scope["method"] in MUTATING:
            raise ServiceUnavailable("audit.unavailable", "the audit log is unavailable; writes are refused",
                                     headers={"Retry-After": "5"})
        await self.app(scope, receive, send)


def diff_policies(old: CompiledPolicy, new: CompiledPolicy) -> dict[str, Any]:
    before = {r.id: r.describe() for r in old.routes}
    after = {r.id: r.describe() for r in new.routes}
    for d in (*before.values(), *after.values()):
        d.pop("source", None)
    return {
        "routes_added": sorted(set(after) - set(before)),
        "routes_removed": sorted(set(before) - set(after)),
        "routes_changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
        "sections_changed": sorted(
            k for k in set(old.sections) | set(new.sections)
            if not k.startswith("compiled.") and old.sections.get(k) != new.sections.get(k)
        ),
        "policy_before": old.digest,
        "policy_after": new.digest,
    }


class Reloader:
    """Validates a new policy off the event loop, then swaps it in as one object."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    async def reload(self, trigger: str) -> bool:
        gw = self.gateway
        async with self._lock:
            old = gw.policy
            try:
                new = await asyncio.to_thread(load_policy, gw.settings.policy_dir, gw.env, gw.settings.production)
            except PolicyError as exc:
                reload_log.error("policy reload refused (%s): %d error(s): %s", trigger, len(exc.errors),
                                 "; ".join(exc.errors[:5]), extra={"event": "policy.reload"})
                gw.on_reload("failed", old.digest)
                gw.audit.submit({"event": "policy.reload", "result": "failed", "trigger": trigger,
                                 "policy_before": old.digest, "errors": exc.errors[:20]})
                return False
            if new.digest == old.digest:
                return True
            changes = diff_policies(old, new)
            gw.install_policy(new)
            reload_log.info("policy reloaded (%s): %s -> %s", trigger, old.digest, new.digest,
                            extra={"event": "policy.reload"})
            gw.on_reload("ok", new.digest)
            gw.audit.submit({"event": "policy.reload", "result": "ok", "trigger": trigger, **changes})
            return True

    def start_watching(self, interval: float = 1.0) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._watch_dir(interval))

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except (asyncio.CancelledError, Exception):  # noqa: S110 - shutting down
                pass

    async def _watch_dir(self, interval: float) -> None:
        from watchfiles import awatch

        try:
            # Not recursive: policies/tests/ (YAML policy tests) is not policy.
            async for _changes in awatch(self.gateway.settings.policy_dir, step=int(interval * 1000),
                                         debounce=int(interval * 1000), recursive=False):
                await self.reload("file-change")
        except asyncio.CancelledError:
            raise
        except Exception:
            reload_log.exception("policy watcher stopped; SIGHUP still reloads")
