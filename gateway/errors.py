"""Typed refusals. Every denial the gateway makes is one of these.

    GatewayError                     status, reason (stable id), title, headers
    ├── BadRequest (400)             request.bad_path, request.ambiguous, request.bad_framing,
    │                                request.bad_host, request.upgrade_not_allowed, ...
    ├── Unauthorized (401)           auth.*, webhook.bad_signature, webhook.stale
    ├── Forbidden (403)              tenant.*, authz.forbidden, cors.*, webhook.source_denied
    ├── NotFound (404)               route.not_found
    ├── MethodNotAllowed (405)       route.method_not_allowed (+ Allow)
    ├── RequestTimeout (408)         request.body_timeout, request.header_timeout
    ├── Conflict (409)               webhook.in_progress (+ Retry-After)
    ├── PayloadTooLarge (413)        request.body_too_large
    ├── UriTooLong (414)             request.uri_too_long
    ├── UnsupportedMediaType (415)   request.unsupported_media_type
    ├── HeadersTooLarge (431)        request.headers_too_large
    ├── TooManyRequests (429)        ratelimit.exceeded, ratelimit.concurrency, auth.too_many_failures,
    │                                webhook.too_many_failures (+ Retry-After)
    ├── Gone (410)                   route.sunset (a deprecated route past its sunset date)
    ├── UnprocessableContent (422)   request.invalid_body (+ `errors`: JSON pointer and detail per field)
    │   └── InvalidParameter         request.invalid_parameter (+ `errors`: in, name and detail per parameter)
    ├── BadGateway (502)             upstream.unavailable, upstream.bad_response
    ├── ServiceUnavailable (503)     gateway.overloaded, gateway.draining, ratelimit.unavailable,
    │                                upstream.saturated (+ Retry-After)
    └── GatewayTimeout (504)         upstream.timeout

A stage denies by raising; the outermost stage renders the problem+json body (RFC 9457), so
the reason id is the same in the response, the audit record and the metrics label. The body's `type`
is `/v1/docs/errors#<reason>`, a page the gateway serves (`gateway.reasons` is its one source). `detail` is
written for the client: it never carries token contents, secrets or upstream internals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# The reason catalogue page; every problem's `type` points into it.
ERRORS_PAGE = "/v1/docs/errors"


class GatewayError(Exception):
    """A refusal with an HTTP status and a stable reason id."""

    status: int = 500
    title: str = "Internal Server Error"
    reason: str = "gateway.internal"
    # RFC 9457 extension members (e.g. `errors` of a 422); None for most refusals.
    extensions: dict[str, object] | None = None

    def __init__(
        self,
        reason: str | None = None,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        route_id: str | None = None,
    ) -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail or self.title
        self.headers: dict[str, str] = dict(headers or {})
        self.route_id = route_id
        super().__init__(f"{self.reason}: {self.detail}")

    def body(self, request_id: str) -> bytes:
        doc: dict[str, object] = {
            # A URI the gateway serves, so a client can follow it to the reason's meaning.
            "type": f"{ERRORS_PAGE}#{self.reason}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
            "request_id": request_id,
        }
        if self.extensions:
            doc.update(self.extensions)
        return json.dumps(doc, separators=(",", ":")).encode()


class BadRequest(GatewayError):
    status, title, reason = 400, "Bad Request", "request.invalid"


class Unauthorized(GatewayError):
    """401; carries the RFC 6750 challenge unless the caller sets its own."""

    status, title, reason = 401, "Unauthorized", "auth.invalid_token"

    def __init__(self, reason: str | None = None, detail: str | None = None, **kw: object) -> None:
        super().__init__(reason, detail, **kw)  # type: ignore[arg-type]
        if self.reason.startswith("auth.") and "WWW-Authenticate" not in self.headers:
            if self.reason == "auth.missing_token":
                self.headers["WWW-Authenticate"] = 'Bearer realm="api"'
            else:
                self.headers["WWW-Authenticate"] = 'Bearer realm="api", error="invalid_token"'


class Forbidden(GatewayError):
    status, title, reason = 403, "Forbidden", "authz.forbidden"


class NotFound(GatewayError):
    status, title, reason = 404, "Not Found", "route.not_found"


class MethodNotAllowed(GatewayError):
    status, title, reason = 405, "Method Not Allowed", "route.method_not_allowed"


class RequestTimeout(GatewayError):
    status, title, reason = 408, "Request Timeout", "request.body_timeout"


class Conflict(GatewayError):
    status, title, reason = 409, "Conflict", "webhook.in_progress"


class PayloadTooLarge(GatewayError):
    status, title, reason = 413, "Content Too Large", "request.body_too_large"


class UriTooLong(GatewayError):
    status, title, reason = 414, "URI Too Long", "request.uri_too_long"


class UnsupportedMediaType(GatewayError):
    status, title, reason = 415, "Unsupported Media Type", "request.unsupported_media_type"


class HeadersTooLarge(GatewayError):
    status, title, reason = 431, "Request Header Fields Too Large", "request.headers_too_large"


class TooManyRequests(GatewayError):
    status, title, reason = 429, "Too Many Requests", "ratelimit.exceeded"


class Gone(GatewayError):
    status, title, reason = 410, "Gone", "route.sunset"


class UnprocessableContent(GatewayError):
    """422 with one `{pointer, detail}` entry per failing field (RFC 9457 `errors` member)."""

    status, title, reason = 422, "Unprocessable Content", "request.invalid_body"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None, **kw: object) -> None:
        super().__init__(None, detail or "the request body does not match the operation's schema",
                         **kw)  # type: ignore[arg-type]
        self.extensions = {"errors": errors}


class InvalidParameter(UnprocessableContent):
    """422 with one `{in, name, detail}` entry per failing query or path parameter."""

    reason = "request.invalid_parameter"

    def __init__(self, errors: list[dict[str, str]], **kw: object) -> None:
        super().__init__(errors, "a query or path parameter does not match the operation's schema", **kw)


class BadGateway(GatewayError):
    status, title, reason = 502, "Bad Gateway", "upstream.unavailable"


class ServiceUnavailable(GatewayError):
    status, title, reason = 503, "Service Unavailable", "gateway.overloaded"


class GatewayTimeout(GatewayError):
    status, title, reason = 504, "Gateway Timeout", "upstream.timeout"


# Convenience names used by stages; each is a class so `except TenantMismatch` reads well.
class TenantMismatch(Forbidden):
    reason = "tenant.mismatch"


class TenantMissingClaim(Forbidden):
    reason = "tenant.missing_claim"


class UnknownRole(Forbidden):
    """The token's role claim is missing or not one of the roles the policy declares."""

    reason = "authz.unknown_role"

    def __init__(self, detail: str | None = None, **kw: object) -> None:
        super().__init__(None, detail or "your token carries no role this service knows", **kw)  # type: ignore[arg-type]


class Ambiguous(BadRequest):
    reason = "request.ambiguous"


class BadPath(BadRequest):
    reason = "request.bad_path"


class BadHost(BadRequest):
    """Host missing or given more than once (RFC 9112 §3.2): the authority is ambiguous."""

    reason = "request.bad_host"


class UpgradeNotAllowed(BadRequest):
    """A protocol upgrade (WebSocket, h2c, ...) on a route that does not proxy one."""

    reason = "request.upgrade_not_allowed"


class HeaderTimeout(RequestTimeout):
    reason = "request.header_timeout"


class ConcurrencyExceeded(TooManyRequests):
    """One org (or one anonymous client address) has its share of upstream requests in flight."""

    reason = "ratelimit.concurrency"


class UpstreamSaturated(ServiceUnavailable):
    """No upstream connection became free within `upstream.pool_wait`."""

    reason = "upstream.saturated"


class TooManyAuthFailures(TooManyRequests):
    """A failing token from an address blocked for failed verifications (valid ones still pass)."""

    reason = "auth.too_many_failures"


class TooManyWebhookFailures(TooManyRequests):
    """A delivery from an address blocked for failed webhook verifications; body never read."""

    reason = "webhook.too_many_failures"


class PolicyError(Exception):
    """Policy could not be loaded; `errors` lists every problem as `file:line path: message`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))
