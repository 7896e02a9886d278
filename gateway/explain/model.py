"""What `gateway explain` reports: the request asked about and its outcome, stage by stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REDACTED = "<redacted>"
MEMORY_NOTE = "rate limits and webhook dedupe use an in-memory store here (explain never touches Redis)"


class UsageError(ValueError):
    """The request cannot be explained as given (bad URL, claims in production, no dev secret)."""


@dataclass
class ExplainRequest:
    """One synthetic request. `claims` are minted into a dev token; `token` is sent as given."""

    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    token: str | None = None
    claims: dict[str, Any] | None = None
    origin: str | None = None
    client_ip: str = "203.0.113.10"


@dataclass
class Step:
    stage: str
    decision: str  # passed | stepped aside | denied | answered | not reached | forwarded
    note: str = ""


@dataclass
class Upstream:
    """What the stub upstream received: the request the real forwarder would have sent."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: str
    json: Any
    identity: dict[str, Any] | None


@dataclass
class Explanation:
    """The outcome of one request, stage by stage."""

    method: str
    url: str
    allowed: bool
    status: int
    reason: str | None
    detail: str | None
    route: dict[str, Any] | None
    steps: list[Step]
    upstream: Upstream | None
    response_headers: list[tuple[str, str]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def denied_by(self) -> str | None:
        return next((s.stage for s in self.steps if s.decision == "denied"), None)
