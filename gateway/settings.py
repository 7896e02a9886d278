"""Process settings from the environment (the variables are listed in README.md and docs/operations.md).

Development defaults are marked as such and refused when `GATEWAY_ENV=production`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only secrets. Anything starting with this marker is refused in production.
DEV_MARKER = "dev-only-"
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_IDENTITY_SECRET = "dev-only-identity-secret-change-me-0123456789"
MIN_SECRET_BYTES = 32


class Settings(BaseSettings):
    """Environment of one gateway process."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9090
    workers: int = Field(default=1, ge=1, le=64)
    policy_dir: str = "./policies"
    upstream_url: str = "http://127.0.0.1:8081"
    redis_url: str | None = None
    jwt_secret: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str = "authenticated"
    identity_secret: str | None = None
    trusted_proxies: str = ""
    audit_log: str | None = None
    # HMAC key(s) of the audit chain (`kid:secret,...`, first signs); required in production.
    audit_key: str | None = None
    # Signed checkpoints of the audit chain; default `<audit_log>.checkpoints`.
    audit_checkpoints: str | None = None
    audit_checkpoint_interval: float = Field(default=30.0, gt=0)
    # One JSON line per request: `stdout`, a file path, or `off`.
    access_log: str = "stdout"
    # Active upstream probe (admin /readyz detail, gateway_upstream_up; never readiness itself).
    upstream_probe_path: str = "/healthz"
    upstream_probe_interval: float = Field(default=5.0, gt=0)
    upstream_probe_timeout: float = Field(default=2.0, gt=0)
    drain_delay: float = Field(default=5.0, ge=0)
    grace_timeout: float = Field(default=30.0, ge=0)
    log_level: str = "info"

    @property
    def production(self) -> bool:
        return self.env == "production"

    def effective_jwt_secret(self) -> str | None:
        if self.jwt_secret:
            return self.jwt_secret
        if self.jwt_jwks_url:
            return None
        return None if self.production else DEV_JWT_SECRET

    def effective_identity_secret(self) -> str:
        if self.identity_secret:
            return self.identity_secret
        return "" if self.production else DEV_IDENTITY_SECRET

    def problems(self) -> list[str]:
        """What stops a start: malformed settings always; dev defaults and weak secrets in production."""
        out: list[str] = []
        from gateway.clientaddr import TrustedProxies

        try:
            TrustedProxies.from_env(self.trusted_proxies)
        except ValueError as exc:
            out.append(f"GATEWAY_TRUSTED_PROXIES: {exc}")
        from gateway.audit.keys import AuditKeyError, AuditKeys

        try:
            AuditKeys.parse(self.audit_key, production=self.production)
        except AuditKeyError as exc:
            out.append(str(exc))
        if not self.production:
            return out
        if not self.jwt_secret and not self.jwt_jwks_url:
            out.append("GATEWAY_JWT_SECRET or GATEWAY_JWT_JWKS_URL must be set in production")
        for name, value in (
            ("GATEWAY_JWT_SECRET", self.jwt_secret),
            ("GATEWAY_IDENTITY_SECRET", self.identity_secret),
        ):
            if name == "GATEWAY_JWT_SECRET" and not value and self.jwt_jwks_url:
                continue
            if not value:
                out.append(f"{name} must be set in production")
            elif value.startswith(DEV_MARKER):
                out.append(f"{name} is a development default; refused in production")
            elif len(value.encode()) < MIN_SECRET_BYTES:
                out.append(f"{name} is shorter than {MIN_SECRET_BYTES} bytes; refused in production")
        return out


# Development values for the secrets the shipped policy names, so the first README command runs
# with no setup. Each is marked "dev-only-" and refused when GATEWAY_ENV=production.
DEV_ENV_DEFAULTS = {
    "KOMMO_WEBHOOK_SECRET": "dev-only-kommo-webhook-path-token",
    "KOMMO_CHANNEL_SECRET": "dev-only-kommo-channel-secret",
    "KOMMO_CLIENT_ID": "dev-only-kommo-client-id",
    "KOMMO_CLIENT_SECRET": "dev-only-kommo-client-secret",
}


def effective_env(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment policy files are expanded against: the process environment, plus the
    marked development defaults when not in production."""
    import os

    env = dict(os.environ if environ is None else environ)
    if not settings.production:
        for key, value in DEV_ENV_DEFAULTS.items():
            env.setdefault(key, value)
    return env
