"""A webhook route's policy, compiled: verifier, source allowlist, dedupe and body cap.

What the pipeline holds per route, so the request path does lookups only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.clientaddr import CidrSet
from gateway.errors import Forbidden
from gateway.webhooks.config import DedupeConfig, WebhookConfig
from gateway.webhooks.errors import WebhookConfigError
from gateway.webhooks.verifiers import Verifier, compile_verifier


@dataclass(frozen=True, slots=True)
class CompiledWebhook:
    """Everything the webhook stage needs for one route."""

    verifier: Verifier
    sources: CidrSet | None  # None: `source_ips: any`, written out in policy
    dedupe: DedupeConfig | None  # None: `dedupe: false`
    max_body_bytes: int
    # Names of the environment variables holding this route's secrets (for set-up checks).
    secret_vars: tuple[str, ...] = ()

    def check_source(self, client_ip: str) -> None:
        """`client_ip` must be the trusted-proxy model's answer, never a raw header."""
        if self.sources is not None and client_ip not in self.sources:
            raise Forbidden("webhook.source_denied", "webhook not accepted from this address")


def compile_webhook(
    cfg: WebhookConfig, env: Mapping[str, str], production: bool, *, route_id: str | None = None
) -> CompiledWebhook:
    """Compile one route's `webhook:`; WebhookConfigError names the route and the variable."""
    try:
        verifier = compile_verifier(cfg, env, production)
    except WebhookConfigError as exc:
        raise (exc.with_route(route_id) if route_id else exc) from None
    return CompiledWebhook(
        verifier=verifier,
        sources=None if cfg.source_ips == "any" else CidrSet(cfg.source_ips),
        dedupe=cfg.dedupe or None,
        max_body_bytes=cfg.max_body_bytes,
        secret_vars=tuple(v for v in (getattr(cfg, "secret_env", None), getattr(cfg, "client_secret_env", None))
                          if isinstance(v, str)),
    )
