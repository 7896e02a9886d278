"""The gateway ASGI application: lifespan, health endpoints, and the pipeline.

The pipeline order is written once, in `build_pipeline`. Each stage reads its part of the matched
route's compiled policy and steps aside when that part is absent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.accesslog import AccessLog
from gateway.audit import AuditKeyError, AuditKeys, AuditLog
from gateway.audit.fold import DenialFolder
from gateway.auth import IdentitySigner, JwksCache, JwtPolicy, JwtVerifier
from gateway.auth.sources import bind_algorithms, build_verifier
from gateway.clientaddr import TrustedProxies
from gateway.context import RequestContext
from gateway.forwarder import Forwarder
from gateway.health import BOARD, Readiness, send_json
from gateway.looplag import LoopLagMonitor
from gateway.metrics import process_metrics
from gateway.operations import AuditGuardStage, AuditObserver, Reloader
from gateway.pipeline.addresslimit import AddressLimitStage
from gateway.pipeline.auth import AuthStage
from gateway.pipeline.authz import AuthzStage
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send
from gateway.pipeline.bodylimit import BodyLimitStage
from gateway.pipeline.clientaddr import ClientAddressStage
from gateway.pipeline.cors import CorsStage
from gateway.pipeline.deprecation import DeprecationStage
from gateway.pipeline.docs import DocsStage
from gateway.pipeline.hygiene import HygieneStage
from gateway.pipeline.ratelimit import RateLimitStage
from gateway.pipeline.requestid import InFlight, Observer, RequestIdStage
from gateway.pipeline.routing import RoutingStage
from gateway.pipeline.tenant import TenantStage
from gateway.pipeline.validate import ValidationStage
from gateway.pipeline.webhook import WebhookStage
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.loader import load_policy
from gateway.policy.schema import AuditSpec
from gateway.preflight import effective_jwt_policy
from gateway.ratelimit import RateLimiter, RateLimitSettings
from gateway.settings import Settings, effective_env, key_sources
from gateway.tracing import tracer_from_env
from gateway.webhooks import DedupeStore, dedupe_store_from_url

log = logging.getLogger("gateway")


class Gateway:
    """One worker's gateway: holds the current policy and the long-lived clients."""

    def __init__(self, settings: Settings, policy: CompiledPolicy | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = effective_env(settings) if env is None else env
        self.policy = policy or load_policy(settings.policy_dir, self.env, settings.production)
        self.readiness = Readiness()
        self.metrics = process_metrics()
        self.in_flight = InFlight()
        self._sampler: asyncio.Task[None] | None = None
        self.loop_lag = LoopLagMonitor(self.metrics.observe_loop_lag)
        self.metrics.policy_loaded(self.policy.digest)
        self.metrics.init_series(self.policy.routes)
        self.observers: list[Observer] = [self.metrics.observe]
        self.forwarder = Forwarder(identity=self.identity_for)
        # No fallback key: an empty identity secret (production without GATEWAY_IDENTITY_SECRET)
        # makes IdentitySigner refuse, so the gateway cannot start signing with a guessable key.
        self.signer = IdentitySigner(settings.effective_identity_secret(), audience=self.policy.upstream.name)
        self.dedupe: DedupeStore = dedupe_store_from_url(settings.redis_url)
        audit_spec = self.policy.sections.get("audit") or AuditSpec()
        # A missing or weak key in production refuses the start (lifespan startup); in-process tools
        # that never start the gateway (explain) can still build one.
        self._audit_key_error: AuditKeyError | None = None
        try:
            audit_keys = AuditKeys.parse(settings.audit_key, production=settings.production)
        except AuditKeyError as exc:
            self._audit_key_error, audit_keys = exc, AuditKeys.parse(None)
        self.audit = AuditLog(settings.audit_log, max_bytes=audit_spec.max_bytes, backups=audit_spec.backups,
                              on_failure=audit_spec.on_failure, on_dropped=self.metrics.audit_dropped,
                              fold=DenialFolder(audit_spec.denial_lines_per_second, audit_spec.denial_burst),
                              on_failed=self.metrics.audit_failure,
                              keys=audit_keys,
                              checkpoints=settings.audit_checkpoints,
                              checkpoint_interval=settings.audit_checkpoint_interval,
                              redis_url=settings.redis_url, on_segment=self.metrics.audit_segment)
        self.jwt_policy: JwtPolicy | None = self._jwt_policy(self.policy)
        self.key_sources = key_sources(settings)
        self.jwks: JwksCache | None = None
        if self.jwt_policy is not None and settings.jwt_jwks_url:
            p = self.jwt_policy
            bound = bind_algorithms(p, self.key_sources)  # JwtConfigError: one line naming the variable
            self.jwks = JwksCache(settings.jwt_jwks_url, p.jwks_refresh_seconds, p.jwks_cooldown_seconds,
                                  5.0, bound.asymmetric)
        self.limiter: RateLimiter | None = None
        self.reloader = Reloader(self)
        org_claim = self.jwt_policy.org_claim if self.jwt_policy else "org_id"
        self.observers.append(AuditObserver(self.audit, org_claim))
        self.access_log = AccessLog(settings.access_log, org_claim=org_claim,
                                    on_dropped=self.metrics.access_log_dropped)
        if self.access_log.enabled:
            self.observers.append(self.access_log)
        self.tracer = tracer_from_env(self.env)
        self.install_policy(self.policy)

    def install_policy(self, policy: CompiledPolicy) -> None:
        """Make `policy` the one new requests see. Objects derived from it are rebuilt first, so
        a request never meets half of an old policy and half of a new one."""
        settings = self.settings
        jwt = self._jwt_policy(policy)
        verifier = self._build_verifier(jwt)
        rl_settings = policy.sections.get("compiled.rate_limits") or RateLimitSettings()
        old_limiter = self.limiter
        if old_limiter is None or old_limiter.settings != rl_settings:
            self.limiter = RateLimiter.from_settings(rl_settings, settings.redis_url,
                                                     on_state_change=self._ratelimit_state)
            if old_limiter is not None:
                # In-flight requests may still hold it; close it once they have had time to finish.
                asyncio.get_running_loop().call_later(
                    settings.grace_timeout + 5, lambda: asyncio.ensure_future(old_limiter.aclose()))
        self.proxies = TrustedProxies([*settings.trusted_proxies.replace(",", " ").split(),
                                       *policy.trusted_proxies])
        self.jwt_policy, self.verifier = jwt, verifier
        self.policy = policy
        self.pipeline = self.build_pipeline()
        BOARD.set_policy(policy)

    def request_reload(self) -> None:
        """Called from the SIGHUP handler (main thread, loop running)."""
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.reloader.reload("SIGHUP")))

    def on_reload(self, result: str, digest: str) -> None:
        self.metrics.reload(result)
        if result == "ok":
            self.metrics.policy_loaded(digest)
            self.metrics.init_series(self.policy.routes)

    def current_policy(self) -> CompiledPolicy:
        return self.policy

    def _jwt_policy(self, policy: CompiledPolicy) -> JwtPolicy | None:
        # Environment wins where the policy is silent (issuer, audience); shared with `gateway check`.
        return effective_jwt_policy(policy, self.settings)

    def _build_verifier(self, jwt: JwtPolicy | None) -> JwtVerifier | None:
        if jwt is None:
            return None
        return build_verifier(jwt, self.key_sources, self.jwks)

    def identity_for(self, ctx: RequestContext) -> str | None:
        route = ctx.route
        if route is None:
            return None
        jwt = self.jwt_policy
        return self.signer.mint(
            request_id=ctx.request_id, route_id=route.id, claims=ctx.claims,
            org_claim_path=jwt.org_claim if jwt else "org_id", role_claim=jwt.role_claim if jwt else "org_role",
        )

    def build_pipeline(self) -> ASGIApp:
        jwt = self.jwt_policy
        org_claim = jwt.org_claim if jwt else "org_id"
        limiter = self.limiter
        if limiter is None:
            raise RuntimeError("install_policy builds the limiter before the pipeline")
        limiter.on_evict = self.metrics.abuse.evicted
        abuse = self.metrics.abuse
        # Innermost first: the request meets these in reverse order. The README table "What a
        # request goes through" gives the reason for each position; keep the two in step.
        app: ASGIApp = self.forwarder                                   # 11 forwarding
        app = ValidationStage(app)                                      # 10b parameters; JSON parsed once + schema
        app = RateLimitStage(app, lambda: limiter, org_claim,           # 10 rate limiting (sub/org keys)
                             self.metrics.ratelimit)
        app = AuthzStage(app, jwt.role_claim if jwt else "org_role",    # 9 authorization
                         jwt.scope_claim if jwt else "scope", roles=jwt.roles if jwt else None)
        app = TenantStage(app, org_claim)                               # 8 tenant binding
        app = WebhookStage(app, lambda: self.dedupe,                    # 7 webhook verification
                           self.metrics.webhook, self.metrics.redis_error,
                           guard=lambda: limiter.webhook_brute_force, event=abuse.event,
                           hmac_computed=abuse.hmac_computed)
        app = AuthStage(app, lambda: self.verifier,                     # 7 authentication
                        guard=lambda: limiter.brute_force, event=abuse.event)
        app = BodyLimitStage(app)                                       # 6 size caps
        app = AddressLimitStage(app, lambda: limiter,                   # 5b per-address limits
                                self.metrics.ratelimit, abuse.event)
        app = DeprecationStage(app, self.metrics.deprecated)            # 5a deprecation headers, sunset
        app = CorsStage(app)                                            # 5 CORS
        app = AuditGuardStage(app, self.audit)                          # (audit sink policy)
        app = RoutingStage(app)                                         # 4 route match
        app = DocsStage(app)                                            # 3b /v1/openapi.json, /v1/docs
        app = HygieneStage(app)
        app = ClientAddressStage(app, self.proxies)
        return RequestIdStage(app, self.current_policy, self.observers, self.in_flight,
                              trusted_peer=lambda ip: self.proxies.is_trusted(ip), tracer=self.tracer,
                              count_bytes=self.access_log.enabled)

    def _ratelimit_state(self, degraded: bool) -> None:
        self.metrics.set_degraded(degraded)
        if degraded:
            self.metrics.redis_error("ratelimit")

    async def _sample_in_flight(self) -> None:
        # Sampled, not counted per request: each multiprocess gauge write costs several µs.
        while True:
            self.metrics.set_in_flight(self.in_flight.n)
            self.metrics.flush()
            await asyncio.sleep(1.0)

    def _redis_mandatory(self) -> bool:
        rl = self.policy.sections.get("compiled.rate_limits")
        return getattr(rl, "on_storage_error", None) == "closed"

    async def startup(self) -> None:
        if self._audit_key_error is not None:
            raise self._audit_key_error
        up = self.policy.upstream
        await self.forwarder.start(up.pool_size, up.keepalive_seconds)
        await self.audit.start()
        self.access_log.start()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_in_flight())
        self.loop_lag.start()
        self.reloader.start_watching()
        if self.jwks is not None:
            await self.jwks.start()
            jwks = self.jwks
            self.readiness.checks["jwks"] = lambda: _const(jwks.ready, "keys loaded" if jwks.ready else "no keys")
            BOARD.extra["jwks"] = lambda: (jwks.ready, "keys loaded" if jwks.ready else "no keys")
        ping = getattr(self.dedupe, "ping", None)
        if ping is not None:
            # Only where the policy makes Redis mandatory: otherwise an outage of the Redis every
            # replica shares would take every replica out of rotation at once (gateway/health.py).
            self.readiness.checks["redis"] = lambda: _ping(ping) if self._redis_mandatory() else _const(True, "")

    async def shutdown(self) -> None:
        await self.reloader.stop()
        if self._sampler is not None:
            self._sampler.cancel()
        await self.loop_lag.stop()
        self.metrics.flush()
        await self.forwarder.close()
        if self.jwks is not None:
            await self.jwks.close()
        await self.dedupe.close()
        if self.limiter is not None:
            await self.limiter.aclose()
        await self.audit.close()
        await asyncio.to_thread(self.access_log.close)
        await asyncio.to_thread(self.tracer.shutdown)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/healthz":
                await send_json(send, 200, b'{"status":"ok"}')
                return
            if path == "/readyz":
                status, body = await self.readiness.evaluate()
                await send_json(send, status, body)
                return
            await self.pipeline(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not routed by this gateway; uvicorn closes it when we return.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: dict[str, Any] = await receive()  # type: ignore[assignment]
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return


async def _const(ok: bool, detail: str) -> tuple[bool, str]:
    return ok, detail


async def _ping(ping: Any) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(ping(), 1.0)
    except Exception:
        return False, "unreachable"
    return True, "ok"
