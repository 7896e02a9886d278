"""The `webhook:` section of a route, validated once at policy load.

    webhook:
      type: hmac                  # url_token | hmac | standard_webhooks | kommo_revoked
      secret_env: KOMMO_CHANNEL_SECRET
      header: X-Signature
      algorithm: sha1
      encoding: hex
      source_ips: any             # required: a list of CIDRs, or `any` written out
      dedupe: {window_seconds: 86400, in_progress_seconds: 30}   # or `dedupe: false`
      max_body_bytes: 1048576

Secrets are named by environment variable, never written in policy. `source_ips` has no default
on purpose: "from anywhere" must be a visible decision in review. `dedupe: false` turns replay
protection off for a route whose deliveries are idempotent and carry no id (e.g. the Kommo
access-revoked GET, where the same account may legitimately be revoked twice).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from gateway.clientaddr import parse_network

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# RFC 9110 token characters: what a header name may contain.
_HEADER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # \Z: `$` would take a final newline
MIB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DedupeConfig(_Strict):
    """Replay window: a delivery seen (and answered 2xx upstream) within it is not forwarded again."""

    window_seconds: int = Field(default=86400, ge=1, le=30 * 86400)
    # Must outlast one forwarding attempt (body read + upstream timeout); if it expires mid-way,
    # a concurrent duplicate could be forwarded too.
    in_progress_seconds: int = Field(default=30, ge=1, le=3600)

    @model_validator(mode="after")
    def _window_covers_lock(self) -> DedupeConfig:
        if self.in_progress_seconds > self.window_seconds:
            raise ValueError("in_progress_seconds must not exceed window_seconds")
        return self


def _cidr(value: str) -> str:
    parse_network(value)  # raises ValueError naming the entry
    return value


_Cidr = Annotated[str, AfterValidator(_cidr)]


class _WebhookBase(_Strict):
    # Tagged by shape, so a bad CIDR gets one error pointing at its index, not two.
    source_ips: Annotated[
        Annotated[list[_Cidr], Tag("list")] | Annotated[Literal["any"], Tag("any")],
        Discriminator(lambda v: "any" if isinstance(v, str) else "list"),
    ]
    dedupe: DedupeConfig | Literal[False] = DedupeConfig()
    max_body_bytes: int = Field(default=MIB, ge=1, le=64 * MIB)

    @model_validator(mode="before")
    @classmethod
    def _source_ips_written_out(cls, data: object) -> object:
        if isinstance(data, dict) and "source_ips" not in data:
            raise ValueError('source_ips is required: list CIDRs, or write "any" to accept every address')
        return data

    @field_validator("source_ips")
    @classmethod
    def _not_empty(cls, value: list[str] | str) -> list[str] | str:
        if not value:
            raise ValueError('empty list would refuse every delivery; list CIDRs or write "any"')
        return value

    @field_validator("dedupe", mode="before")
    @classmethod
    def _dedupe_shape(cls, value: object) -> object:
        if value is True or value is None:
            raise ValueError("dedupe is on by default: give a mapping to tune it, or false to turn it off")
        return value


class UrlTokenWebhook(_WebhookBase):
    """A secret path segment (Kommo account webhooks are unsigned; the URL is the secret)."""

    type: Literal["url_token"]
    secret_env: str = Field(pattern=_ENV_NAME)
    param: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class HmacWebhook(_WebhookBase):
    """An HMAC of the raw body in one header, e.g. GitHub's `X-Hub-Signature-256: sha256=<hex>`."""

    type: Literal["hmac"]
    secret_env: str = Field(pattern=_ENV_NAME)
    header: str
    algorithm: Literal["sha1", "sha256", "sha512"]
    encoding: Literal["hex", "base64"]
    prefix: str = ""

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_TOKEN.match(value):
            raise ValueError(f'"{value}" is not a valid header name')
        return value


class StandardWebhooksWebhook(_WebhookBase):
    """Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`, `whsec_` keys)."""

    type: Literal["standard_webhooks"]
    secret_env: str = Field(pattern=_ENV_NAME)
    tolerance_seconds: int = Field(default=300, ge=1, le=3600)


class KommoRevokedWebhook(_WebhookBase):
    """Kommo's access-revoked GET: `signature` = hex HMAC-SHA256(client_secret, client_id|account_id)."""

    type: Literal["kommo_revoked"]
    client_id_env: str = Field(pattern=_ENV_NAME)
    client_secret_env: str = Field(pattern=_ENV_NAME)


WebhookConfig = Annotated[
    UrlTokenWebhook | HmacWebhook | StandardWebhooksWebhook | KommoRevokedWebhook,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[WebhookConfig] = TypeAdapter(WebhookConfig)


def parse_webhook_config(data: object) -> WebhookConfig:
    """Validate one `webhook:` mapping; raises pydantic.ValidationError with field locations."""
    return _ADAPTER.validate_python(data)
