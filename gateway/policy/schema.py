"""The policy file schema (`policies/*.yaml`). Unknown keys are refused everywhere.

A policy directory holds any number of YAML files. `routes:` lists are concatenated in file-name
order; every other top-level section may appear in one file only (two files setting `cors:`
would leave a reviewer guessing which one wins, so it is a load error).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.clientaddr import parse_network

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _cidr(value: str) -> str:
    parse_network(value)  # ValueError names the entry
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    """Timeouts in seconds. `body_read` bounds each wait for a client body chunk, `body_total` the
    whole body; `stream_idle` ends a response whose upstream stays silent that long mid-body."""

    connect: float | None = Field(default=None, gt=0, le=60)
    total: float | None = Field(default=None, gt=0, le=3600)
    body_read: float | None = Field(default=None, gt=0, le=600)
    body_total: float | None = Field(default=None, gt=0, le=3600)
    stream_idle: float | None = Field(default=None, gt=0, le=3600)


class UpstreamSpec(Strict):
    url: str = "http://127.0.0.1:8081"
    # Audience of the identity assertion; the upstream checks it.
    name: str = Field(default="upstream", min_length=1, max_length=64)
    pool_size: int = Field(default=256, ge=1, le=10000)
    keepalive_seconds: float = Field(default=30, gt=0, le=600)
    # Longest wait for a free upstream connection before 503 upstream.saturated.
    pool_wait: float = Field(default=1.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"upstream url must be http:// or https://, got {v!r}")
        # What the upstream pool will connect to: a host, and a port it can dial (checked here, so
        # `gateway check` refuses what `serve` would fail on).
        try:
            parts = urlsplit(v)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"upstream url is malformed ({exc}): {v!r}") from None
        if not parts.hostname:
            raise ValueError(f"upstream url names no host: {v!r}")
        if port == 0:
            raise ValueError(f"upstream url port must be 1-65535: {v!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"upstream url takes no query or fragment: {v!r}")
        return v.rstrip("/")


class Defaults(Strict):
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=0, le=1 << 34)
    timeouts: Timeouts = Timeouts(connect=2.0, total=30.0, body_read=15.0, body_total=30.0, stream_idle=60.0)


class Limits(Strict):
    """Request hygiene caps, checked before routing."""

    max_url_bytes: int = Field(default=8192, ge=256, le=1 << 20)
    max_header_bytes: int = Field(default=16384, ge=1024, le=1 << 20)
    max_headers: int = Field(default=100, ge=10, le=1000)
    max_in_flight: int = Field(default=1024, ge=1, le=1_000_000)
    shed_retry_after: int = Field(default=1, ge=1, le=600)
    # Fair share of the upstream, per worker: in-flight upstream requests of one org (or, without an
    # identity, of one client address) before 429 ratelimit.concurrency.
    max_in_flight_per_org: int = Field(default=64, ge=1, le=1_000_000)
    # Request body bytes held in buffers by one worker; past it, new bodies get 503.
    max_buffered_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024, le=1 << 40)
    # Client connections: the request head must arrive within `header_timeout`; a worker keeps at
    # most `max_connections` open and closes new ones at once beyond that.
    header_timeout: float = Field(default=10.0, gt=0, le=600)
    max_connections: int = Field(default=10_000, ge=1, le=1_000_000)
    # An idle keep-alive connection is closed after this long. Longer than the idle timeout of a
    # load balancer in front (nginx upstream keepalive and AWS ALB: 60 s), so the balancer, the
    # side that sends requests, always closes first and never sends on a closing connection.
    keepalive_timeout: float = Field(default=75.0, gt=0, le=3600)


class AuditSpec(Strict):
    """The audit trail's sink policy, rotation, and how many denials get a line each: past
    `denial_lines_per_second` (burst `denial_burst`) per process, denials are counted into one
    `request.denials_folded` record per reason, route, address and subject every 10 s, so a flood
    cannot rotate the trail away."""

    on_failure: Literal["continue", "refuse"] = "continue"
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=4096)
    backups: int = Field(default=10, ge=1, le=1000)
    denial_lines_per_second: float = Field(default=20.0, gt=0, le=100_000)
    denial_burst: int = Field(default=200, ge=1, le=1_000_000)


class ApiSpec(Strict):
    """`api:` — the API contract at the edge: the OpenAPI document (`openapi.yaml` in the policy
    directory, reserved name), what of it the gateway serves, and edge validation (bodies and
    parameters) by default."""

    document: bool = True
    serve_document: bool = True   # GET /v1/openapi.json
    serve_docs: bool = True       # GET /v1/docs (rendered page) and /v1/docs/errors (reason catalogue)
    # Validate JSON bodies, and query and path parameters, against the operation's schemas
    # (`validate:` in YAML); routes may opt out.
    validate_bodies: bool = Field(default=True, alias="validate")


class DeprecationSpec(Strict):
    """`deprecated:` on a route: Deprecation/Sunset/Link headers, then 410 route.sunset after `sunset`."""

    since: date
    sunset: date | None = None
    link: str | None = None        # documentation of the deprecation (Link rel="deprecation")
    successor: str | None = None   # the replacement (Link rel="successor-version")

    @field_validator("link", "successor")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("https://") or v.startswith("http://") or v.startswith("/")):
            raise ValueError(f"must be an absolute http(s) URL or a path, got {v!r}")
        if v is not None and any(c in v for c in '<>" \r\n,;'):
            raise ValueError("must not contain spaces, quotes, angle brackets, commas or semicolons")
        return v

    @model_validator(mode="after")
    def _order(self) -> DeprecationSpec:
        if self.sunset is not None and self.sunset < self.since:
            raise ValueError(f"sunset {self.sunset} is before since {self.since}")
        return self


class RouteSpec(Strict):
    """One public route. `auth` must be written on every route: there is no implicit public route."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    path: str
    methods: list[str] = Field(min_length=1)
    upstream_path: str | None = None
    auth: Literal["jwt", "none", "webhook"]
    tenant: Any = None
    roles: list[str] | None = None
    scopes: list[str] | None = None
    rate_limit: Any = None
    cors: Any = None
    webhook: Any = None
    max_body_bytes: int | None = Field(default=None, ge=0, le=1 << 34)
    timeouts: Timeouts | None = None
    forward_token: bool = False
    # True (default): the body is read whole at the edge before an upstream connection is taken.
    # False: streamed to the upstream as it arrives (large uploads); the fairness limits bound it.
    request_buffering: bool = True
    description: str | None = None
    # Edge validation of this route's JSON bodies and query/path parameters; None: the `api.validate` default.
    validate_body: bool | None = Field(default=None, alias="validate")
    deprecated: DeprecationSpec | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out = []
        for m in v:
            mu = m.upper()
            if mu not in HTTP_METHODS or mu == "OPTIONS":
                raise ValueError(f"unknown method {m!r} (OPTIONS preflights are answered by cors)")
            if mu in out:
                raise ValueError(f"method {m!r} listed twice")
            out.append(mu)
        return out

    @model_validator(mode="after")
    def _coherent(self) -> RouteSpec:
        if self.auth == "webhook" and self.webhook is None:
            raise ValueError("auth: webhook needs a `webhook:` section")
        if self.auth != "webhook" and self.webhook is not None:
            raise ValueError("a `webhook:` section needs auth: webhook")
        if self.auth != "jwt":
            for name in ("tenant", "roles", "scopes"):
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}` needs auth: jwt (there is no identity to check)")
            if self.forward_token:
                raise ValueError("forward_token needs auth: jwt")
        return self


class PolicyFile(Strict):
    """Everything one file may declare."""

    version: Literal[1] | None = None
    upstream: UpstreamSpec | None = None
    defaults: Defaults | None = None
    limits: Limits | None = None
    trusted_proxies: list[Annotated[str, AfterValidator(_cidr)]] | None = None
    auth: Any = None
    cors: Any = None
    rate_limits: Any = None
    audit: AuditSpec | None = None
    api: ApiSpec | None = None
    routes: list[RouteSpec] | None = None
