"""Per-request state shared by the pipeline stages.

Stored in `scope["gateway"]`. Every stage reads what earlier stages decided (client address,
matched route, identity) from here instead of re-deriving it, so there is one answer per request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.policy.compiled import CompiledPolicy, CompiledRoute
    from gateway.tracing import Span


class RequestContext:
    """What the pipeline knows about one request so far."""

    __slots__ = (
        "request_id",
        "started",
        "client_ip",
        "policy",
        "route",
        "path_params",
        "upstream_path",
        "query_string",
        "claims",
        "token",
        "body",
        "body_replaced",
        "body_json",
        "decision",
        "reason",
        "status",
        "response_headers",
        "audit_extra",
        "upstream_seconds",
        "client_request_id",
        "trace",
        "bytes_in",
        "bytes_out",
    )

    def __init__(self, request_id: str, client_ip: str, policy: CompiledPolicy) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.client_ip = client_ip
        self.policy = policy
        self.route: CompiledRoute | None = None
        self.path_params: dict[str, str] = {}
        self.upstream_path: str = ""
        # Raw query string as forwarded upstream (a stage may rewrite it, e.g. tenant injection).
        self.query_string: bytes = b""
        self.claims: dict[str, Any] | None = None
        self.token: str | None = None
        # Buffered body, set only when a stage had to read it (tenant body binding, webhooks).
        self.body: bytes | None = None
        self.body_replaced = False
        # The body parsed strictly (duplicate keys refused), once, by the first stage that needs it.
        self.body_json: Any = None
        self.decision = "allow"
        self.reason: str | None = None
        self.status = 0
        # Extra headers the response must carry (CORS, RateLimit); added by the forwarder and
        # by the error renderer alike.
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.audit_extra: dict[str, Any] = {}
        self.upstream_seconds: float | None = None
        # The caller's X-Request-ID when it was not adopted (untrusted peer), capped.
        self.client_request_id: str | None = None
        self.trace: Span | None = None
        self.bytes_in = 0
        self.bytes_out = 0


def get_context(scope: dict[str, Any]) -> RequestContext:
    ctx: RequestContext = scope["gateway"]
    return ctx
