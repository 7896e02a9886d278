"""Environment of one upstream process (issue 6).

Development defaults are marked `dev-only` and refused when `GATEWAY_ENV=production`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Copies of the gateway's values (the upstream imports nothing from the gateway; it is a separate
# service). Both processes read the identity secret from GATEWAY_IDENTITY_SECRET, so the development
# default must stay byte-equal to the gateway's; tests/upstream/test_settings_shared.py asserts it.
DEV_MARKER = "dev-only-"
DEV_IDENTITY_SECRET = "dev-only-identity-secret-change-me-0123456789"
MIN_SECRET_BYTES = 32
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# 32 bytes, so it is a valid AES-256 key; the text makes it obvious in any dump. Refused in production.
DEV_ENCRYPTION_KEY = base64.b64encode(b"dev-only-upstream-aes-key-000000").decode()
DEV_STATE_SECRET = "dev-only-upstream-state-secret-change-me-0123"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class UpstreamSettings(BaseSettings):
    """Environment of the upstream service; field names work as keyword arguments in tests."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    env: Literal["development", "production"] = Field(
        default="development", validation_alias=_env("GATEWAY_ENV"))
    host: str = Field(default="127.0.0.1", validation_alias=_env("UPSTREAM_HOST"))
    port: int = Field(default=8081, ge=1, le=65535, validation_alias=_env("UPSTREAM_PORT"))
    db_path: str = Field(default="./upstream.db", validation_alias=_env("UPSTREAM_DB"))
    # postgresql://app-role@host/db selects the PostgreSQL store (row-level security); unset = SQLite at db_path.
    database_url: str | None = Field(default=None, validation_alias=_env("UPSTREAM_DATABASE_URL"))
    # Owner connection, used only by `python -m upstream_stub migrate`; never by the serving process.
    database_owner_url: str | None = Field(default=None, validation_alias=_env("UPSTREAM_DATABASE_OWNER_URL"))
    db_pool_size: int = Field(default=10, ge=1, le=100, validation_alias=_env("UPSTREAM_DATABASE_POOL_SIZE"))
    identity_secret: str | None = Field(default=None, validation_alias=_env("GATEWAY_IDENTITY_SECRET"))
    identity_audience: str = Field(default="upstream", min_length=1,
                                   validation_alias=_env("UPSTREAM_IDENTITY_AUDIENCE"))
    encryption_key: str | None = Field(default=None, validation_alias=_env("UPSTREAM_ENCRYPTION_KEY"))
    encryption_keys: str | None = Field(default=None, validation_alias=_env("UPSTREAM_ENCRYPTION_KEYS"))
    state_secret: str | None = Field(default=None, validation_alias=_env("UPSTREAM_STATE_SECRET"))
    kommo_client_id: str | None = Field(default=None, validation_alias=_env("KOMMO_CLIENT_ID"))
    kommo_client_secret: str | None = Field(default=None, validation_alias=_env("KOMMO_CLIENT_SECRET"))
    kommo_redirect_uri: str | None = Field(default=None, validation_alias=_env("KOMMO_REDIRECT_URI"))
    kommo_rate_per_second: int = Field(default=7, ge=1, le=7, validation_alias=_env("UPSTREAM_KOMMO_RATE"))
    kommo_timeout: float = Field(default=10.0, gt=0, le=60, validation_alias=_env("UPSTREAM_KOMMO_TIMEOUT"))
    worker_enabled: bool = Field(default=True, validation_alias=_env("UPSTREAM_WORKER_ENABLED"))
    worker_concurrency: int = Field(
        default=2, ge=1, le=16, validation_alias=_env("UPSTREAM_WORKER_CONCURRENCY"))
    # Durations are finite and bounded: `inf` passed `gt=0` (UPSTREAM_SHUTDOWN_GRACE=inf was an
    # OverflowError at start; an infinite lease would never hand a crashed worker's job on).
    job_lease_seconds: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False,
                                     validation_alias=_env("UPSTREAM_JOB_LEASE_SECONDS"))
    job_max_attempts: int = Field(default=5, ge=1, le=50, validation_alias=_env("UPSTREAM_JOB_MAX_ATTEMPTS"))
    job_backoff_base: float = Field(default=2.0, ge=0, le=3600, allow_inf_nan=False,
                                    validation_alias=_env("UPSTREAM_JOB_BACKOFF_BASE"))
    job_backoff_max: float = Field(default=300.0, ge=0, le=86400, allow_inf_nan=False,
                                   validation_alias=_env("UPSTREAM_JOB_BACKOFF_MAX"))
    job_poll_seconds: float = Field(default=0.5, gt=0, le=60, allow_inf_nan=False,
                                    validation_alias=_env("UPSTREAM_JOB_POLL_SECONDS"))
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600, allow_inf_nan=False,
                                  validation_alias=_env("UPSTREAM_SHUTDOWN_GRACE"))
    log_level: str = Field(default="info", validation_alias=_env("UPSTREAM_LOG_LEVEL"))

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def postgres(self) -> bool:
        return bool(self.database_url)

    def database_label(self) -> str:
        """Where the store lives, for logs: the SQLite path, or the PostgreSQL URL without its password."""
        if not self.database_url:
            return self.db_path
        from upstream_stub.store.pg.db import redact_url

        return redact_url(self.database_url)

    def effective_identity_secret(self) -> str:
        if self.identity_secret:
            return self.identity_secret
        return "" if self.production else DEV_IDENTITY_SECRET

    def effective_state_secret(self) -> str:
        if self.state_secret:
            return self.state_secret
        return "" if self.production else DEV_STATE_SECRET

    def key_spec(self) -> str:
        """`kid:base64,...`, newest first; the single-key form gets kid `k0`."""
        if self.encryption_keys:
            return self.encryption_keys
        if self.encryption_key:
            return f"k0:{self.encryption_key}"
        return "" if self.production else f"dev:{DEV_ENCRYPTION_KEY}"

    def problems(self) -> list[str]:
        """What stops a production start, each naming its variable."""
        out: list[str] = []
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            out.append("UPSTREAM_DATABASE_URL must be a postgresql:// URL (unset for the embedded SQLite file)")
        if not self.database_url:
            folder = Path(self.db_path).expanduser().parent
            if not folder.is_dir():
                out.append(f"UPSTREAM_DB: directory {folder} does not exist (the SQLite file is created there)")
        app_user = _user_of(self.database_url) if self.database_url else None
        if app_user and self.database_owner_url and app_user == _user_of(self.database_owner_url):
            out.append("UPSTREAM_DATABASE_URL must not use the owner role of UPSTREAM_DATABASE_OWNER_URL")
        if not self.production:
            return out
        for name, value in (
            ("GATEWAY_IDENTITY_SECRET", self.identity_secret),
            ("UPSTREAM_STATE_SECRET", self.state_secret),
        ):
            if not value:
                out.append(f"{name} must be set in production")
            elif value.startswith(DEV_MARKER):
                out.append(f"{name} is a development default; refused in production")
            elif len(value.encode()) < MIN_SECRET_BYTES:
                out.append(f"{name} is shorter than {MIN_SECRET_BYTES} bytes; refused in production")
        if not (self.encryption_key or self.encryption_keys):
            out.append("UPSTREAM_ENCRYPTION_KEY (or UPSTREAM_ENCRYPTION_KEYS) must be set in production")
        elif DEV_ENCRYPTION_KEY in (self.encryption_keys or "") + (self.encryption_key or ""):
            out.append("UPSTREAM_ENCRYPTION_KEY is the development default; refused in production")
        for name, value in (
            ("KOMMO_CLIENT_ID", self.kommo_client_id),
            ("KOMMO_CLIENT_SECRET", self.kommo_client_secret),
            ("KOMMO_REDIRECT_URI", self.kommo_redirect_uri),
        ):
            if not value:
                out.append(f"{name} must be set in production")
        return out


class SettingsError(Exception):
    """The environment cannot be read; `problems` are one line each, naming the variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_settings() -> UpstreamSettings:
    """UpstreamSettings from the environment, or SettingsError naming each bad variable. The value
    given is quoted back except for secrets, keys and URLs (a URL may carry a password)."""
    try:
        return UpstreamSettings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            quiet = any(word in name for word in ("SECRET", "KEY", "URL"))
            lines.append(f"{name}: {msg}" + ("" if quiet else f" (got {err.get('input')!r})"))
        raise SettingsError(lines) from None


def _user_of(url: str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).username
