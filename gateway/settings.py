"""Process settings from the environment (the variables are listed in README.md and docs/operations.md).

Development defaults are marked as such and refused when `GATEWAY_ENV=production`.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only secrets. Anything starting with this marker is refused in production.
DEV_MARKER = "dev-only-"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # "_": container names
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_IDENTITY_SECRET = "dev-only-identity-secret-change-me-0123456789"
MIN_SECRET_BYTES = 32
MIN_DISTINCT_CHARS = 16
MIN_DISTINCT_HEX = 8
_HEX = frozenset("0123456789abcdef")

if TYPE_CHECKING:
    from gateway.auth.sources import KeySources


def weak_secret(value: str) -> str | None:
    """Why a secret is plainly guessable (production refuses it), or None.

    Length alone is not enough: 32 x "a" or "abcd" x 8 pass a length check and fall to the first
    guess. So: at least MIN_SECRET_BYTES bytes, MIN_DISTINCT_CHARS distinct characters, and not
    a shorter pattern repeated.
    """
    if value.startswith(DEV_MARKER):
        return "is a development default"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    return guessable_secret(value)


def guessable_secret(value: str) -> str | None:
    """The pattern part of `weak_secret`: too few distinct characters, or a pattern repeated.

    Hex-encoded random keys (`openssl rand -hex 32`) use a 16-character alphabet, so a random one
    often shows fewer than 16 distinct characters; for them the floor is MIN_DISTINCT_HEX (a random
    32-character hex key falls below it with probability under 1e-6).
    """
    distinct = len(set(value))
    floor = MIN_DISTINCT_HEX if set(value.lower()) <= _HEX else MIN_DISTINCT_CHARS
    if distinct < floor:
        return f"has only {distinct} distinct characters (a weak, guessable value; at least {floor} needed)"
    # Smallest period: a string that is a shorter pattern repeated equals itself rotated by it.
    period = (value + value).find(value, 1)
    if period < len(value):
        return f"is a {period}-character pattern repeated (a weak, guessable value)"
    return None


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
    audit_checkpoint_interval: float = Field(default=30.0, gt=0, le=86400, allow_inf_nan=False)
    # One JSON line per request: `stdout`, a file path, or `off`.
    access_log: str = "stdout"
    # Active upstream probe (admin /readyz detail, gateway_upstream_up; never readiness itself).
    upstream_probe_path: str = "/healthz"
    # Durations are finite and bounded: `inf` passed `gt=0` and then failed `serve` at start
    # (OverflowError in a timer or in uvicorn's graceful-shutdown timeout).
    upstream_probe_interval: float = Field(default=5.0, gt=0, le=3600, allow_inf_nan=False)
    upstream_probe_timeout: float = Field(default=2.0, gt=0, le=600, allow_inf_nan=False)
    drain_delay: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    grace_timeout: float = Field(default=30.0, ge=0, le=3600, allow_inf_nan=False)
    log_level: str = "info"

    @field_validator("host", "admin_host")
    @classmethod
    def _listen_host(cls, value: str) -> str:
        # An address, or a name as DNS writes it (check resolves nothing): "not a host" and
        # 256.1.1.1 passed check and were refused by serve only.
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.rstrip(".").split(".")
        if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
            raise ValueError("must be an IP address or a host name")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("upstream_probe_path")
    @classmethod
    def _probe_path(cls, value: str) -> str:
        if not value.startswith("/") or any(not 0x21 <= ord(c) <= 0x7E for c in value):
            raise ValueError("must be a path starting with / (visible ASCII, no spaces)")
        return value

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

    def problems(self) -> list[str]:  # noqa: C901 - one list of independent rules
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
            elif (why := weak_secret(value)) is not None:
                out.append(f"{name} {why}; refused in production")
        if self.identity_secret and self.identity_secret == self.jwt_secret:
            # Whoever can mint user tokens could then mint upstream identity assertions directly.
            out.append("GATEWAY_IDENTITY_SECRET equals GATEWAY_JWT_SECRET; each key must be distinct "
                       "(refused in production)")
        return out

    def jwks_problem(self) -> str | None:
        if not self.jwt_jwks_url:
            return None
        from gateway.auth.sources import jwks_url_problem

        return jwks_url_problem(self.jwt_jwks_url, self.production)

    def redis_problem(self) -> str | None:
        """Syntax of GATEWAY_REDIS_URL (no connection is made)."""
        return redis_url_problem(self.redis_url) if self.redis_url else None


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster",
                  "rediss+sentinel", "redis+unix")


def redis_url_problem(url: str, name: str = "GATEWAY_REDIS_URL") -> str | None:
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"{name} is not a valid URL ({exc})"
    if parts.scheme not in _REDIS_SCHEMES:
        return f"{name} must start with redis:// or rediss:// (got {url.split(':', 1)[0]!r}:)"
    if "unix" not in parts.scheme and not parts.hostname:
        return f"{name} names no host"
    # The database number, read as the Redis clients read it (?db=, else the path of a plain
    # redis:// or rediss:// URL; a sentinel URL's path names the service): digits only, or `serve`
    # would fail at start with what `check` had passed.
    query_db = parse_qs(parts.query).get("db")
    db = query_db[0] if query_db else (parts.path.strip("/") if parts.scheme in ("redis", "rediss") else "")
    if db and not (db.isascii() and db.isdigit() and len(db) <= 5):
        return f"{name}: the database number must be digits, e.g. /0 (got {db[:20]!r})"
    return None


def key_sources(settings: Settings) -> KeySources:
    """The JWT key sources this environment configures (development default secret included)."""
    from gateway.auth.sources import KeySources

    return KeySources(secret=settings.effective_jwt_secret(), jwks_url=settings.jwt_jwks_url or None,
                      secret_explicit=bool(settings.jwt_secret))


# GATEWAY_* variables read outside `Settings` (by the shipped policy through ${VAR}, or by scripts).
KNOWN_EXTRA_VARIABLES = frozenset({
    "GATEWAY_CORS_ORIGINS", "GATEWAY_REPLICAS", "GATEWAY_JWT_ORG_CLAIM", "GATEWAY_JWT_ROLE_CLAIM",
})
_VAR_IN_SOURCE = re.compile(rb"\bGATEWAY_[A-Z0-9_]+\b")


def _variables_named_in_package() -> set[str]:
    # Anything the gateway's own code names is read somewhere (other modules read a few variables
    # directly); this keeps the warning free of false alarms as features are added.
    names: set[str] = set()
    for path in Path(__file__).resolve().parent.rglob("*.py"):
        try:
            names.update(m.decode() for m in _VAR_IN_SOURCE.findall(path.read_bytes()))
        except OSError:
            continue
    return names


def unknown_variable_warnings(environ: Mapping[str, str] | None = None,
                              referenced: Iterable[str] = ()) -> list[str]:
    """One warning per GATEWAY_* variable nothing reads (usually a typo), with a suggestion."""
    env = os.environ if environ is None else environ
    given = sorted(k for k in env if k.startswith("GATEWAY_"))
    if not given:
        return []
    known = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    known |= KNOWN_EXTRA_VARIABLES | set(referenced)
    unknown = [k for k in given if k not in known]
    if unknown:
        known |= _variables_named_in_package()
    out = []
    for name in unknown:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{name} is set but no part of the gateway reads it{hint}")
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


def load_settings_quietly() -> Settings | None:
    """Settings, or None when the environment is malformed (for tools that can do without)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError:
        return None
