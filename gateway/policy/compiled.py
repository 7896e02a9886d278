"""The compiled policy: everything the request path needs, resolved once at load."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from gateway.policy.router import PathTemplate, RouteTable
from gateway.policy.schema import Limits, UpstreamSpec


@dataclass(slots=True)
class CompiledRoute:
    """One route with its parts compiled; a stage steps aside when its part is None."""

    id: str
    methods: frozenset[str]
    template: PathTemplate
    upstream_template: PathTemplate
    auth: str  # "jwt" | "none" | "webhook"
    max_body_bytes: int
    connect_timeout: float
    total_timeout: float
    body_read_timeout: float
    forward_token: bool = False
    body_total_timeout: float = 30.0
    stream_idle_timeout: float = 60.0
    request_buffering: bool = True
    roles: frozenset[str] | None = None
    scopes: frozenset[str] | None = None
    tenant: Any = None  # gateway.tenant.TenantBinder
    rate_limit: Any = None  # compiled rate-limit rule
    cors: Any = None  # gateway.cors.CorsMatcher
    webhook: Any = None  # compiled webhook verifier + its config
    mutating: bool = False
    body_rules: Any = None  # {METHOD: gateway.openapi.BodyRule}: JSON body checks from the document
    param_rules: Any = None  # {METHOD: gateway.openapi.parameters.ParamRule}: query and path parameter checks
    deprecation: Any = None  # gateway.openapi.deprecation.Deprecation
    source: str = ""  # "file:line", for `gateway routes` and explain

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "methods": sorted(self.methods),
            "path": self.template.text,
            "upstream": self.upstream_template.text,
            "auth": self.auth,
            "tenant": self.tenant.describe() if hasattr(self.tenant, "describe") else bool(self.tenant),
            "roles": sorted(self.roles) if self.roles else None,
            "scopes": sorted(self.scopes) if self.scopes else None,
            "rate_limit": bool(self.rate_limit),
            "max_body_bytes": self.max_body_bytes,
            "timeouts": [self.connect_timeout, self.total_timeout],
            "source": self.source,
        }


@dataclass(slots=True)
class CompiledPolicy:
    """A whole, validated policy. Replaced as one object on reload; never mutated."""

    upstream: UpstreamSpec
    limits: Limits
    routes: list[CompiledRoute]
    table: RouteTable[CompiledRoute]
    trusted_proxies: list[str]
    digest: str
    sections: dict[str, Any] = field(default_factory=dict)

    def route(self, route_id: str) -> CompiledRoute | None:
        for r in self.routes:
            if r.id == route_id:
                return r
        return None


def digest_of(files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, text in sorted(files):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:16]
