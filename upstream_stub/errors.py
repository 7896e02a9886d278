"""Typed refusals of the upstream, rendered as `application/problem+json` (RFC 9457).

The upstream is a separate service and imports nothing from the gateway, so it carries its own small
hierarchy. The body has the same shape as the gateway's refusals, so a client parses both halves alike:
`{"type": "/v1/docs/errors#<reason>", "title", "status", "detail", "reason", "request_id"}` (compact JSON).
`detail` never carries tokens, credentials or internals.

Classes (status, default reason; a raise usually names its own reason): ApiError (500 base),
BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404, MethodNotAllowed 405, Conflict 409,
PayloadTooLarge 413, UnsupportedMediaType 415, Unprocessable 422, Internal 500 (`upstream.internal`,
any unhandled error), BadGateway 502, ServiceUnavailable 503.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

__all__ = [
    "ApiError", "BadGateway", "BadRequest", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge",
    "ServiceUnavailable", "Unauthorized", "Unprocessable", "UnsupportedMediaType", "problem",
    "request_id_of", "install",
]

PROBLEM = "application/problem+json"
# The reason catalogue page (served by the gateway in front); every problem's `type` points into it.
ERRORS_PAGE = "/v1/docs/errors"
log = logging.getLogger("upstream_stub")


class ApiError(Exception):
    """A refusal with an HTTP status and a stable reason id."""

    status: int = 500
    title: str = "Internal Server Error"
    reason: str = "gateway.internal"

    def __init__(self, reason: str | None = None, detail: str | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail or self.title
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{self.reason}: {self.detail}")

    def body(self, request_id: str) -> bytes:
        doc: dict[str, object] = {
            "type": f"{ERRORS_PAGE}#{self.reason}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
            "request_id": request_id,
        }
        return json.dumps(doc, separators=(",", ":")).encode()


class BadRequest(ApiError):
    status, title, reason = 400, "Bad Request", "request.invalid"


class Unauthorized(ApiError):
    """401; an `auth.*` reason carries the RFC 6750 challenge unless the caller sets its own."""

    status, title, reason = 401, "Unauthorized", "auth.invalid_token"

    def __init__(self, reason: str | None = None, detail: str | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason, detail, headers=headers)
        if self.reason.startswith("auth.") and "WWW-Authenticate" not in self.headers:
            if self.reason == "auth.missing_token":
                self.headers["WWW-Authenticate"] = 'Bearer realm="api"'
            else:
                self.headers["WWW-Authenticate"] = 'Bearer realm="api", error="invalid_token"'


class Forbidden(ApiError):
    status, title, reason = 403, "Forbidden", "authz.forbidden"


class NotFound(ApiError):
    status, title, reason = 404, "Not Found", "route.not_found"


class MethodNotAllowed(ApiError):
    status, title, reason = 405, "Method Not Allowed", "route.method_not_allowed"


class PayloadTooLarge(ApiError):
    status, title, reason = 413, "Content Too Large", "request.body_too_large"


class UnsupportedMediaType(ApiError):
    status, title, reason = 415, "Unsupported Media Type", "request.unsupported_media_type"


class BadGateway(ApiError):
    status, title, reason = 502, "Bad Gateway", "upstream.unavailable"


class ServiceUnavailable(ApiError):
    status, title, reason = 503, "Service Unavailable", "gateway.overloaded"


class Conflict(ApiError):
    status, title, reason = 409, "Conflict", "conflict"


class Unprocessable(ApiError):
    status, title, reason = 422, "Unprocessable Content", "validation.failed"


class Internal(ApiError):
    status, title, reason = 500, "Internal Server Error", "upstream.internal"


def request_id_of(scope: Scope) -> str:
    """This request's id: decided once per request (caller's bounded `X-Request-ID`, or fresh)."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if isinstance(rid, str):
        return rid
    rid = Headers(scope=scope).get("x-request-id")
    if not (isinstance(rid, str) and 0 < len(rid) <= 128 and rid.isprintable()):
        rid = uuid.uuid4().hex
    state["request_id"] = rid
    return rid


def problem(err: ApiError, request_id: str) -> Response:
    return Response(err.body(request_id), status_code=err.status, media_type=PROBLEM, headers=err.headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    err = exc if isinstance(exc, ApiError) else Internal()
    return problem(err, request_id_of(request.scope))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 500)
    err: ApiError
    if code == 404:
        err = NotFound("not_found", "no such route")
    elif code == 405:
        err = MethodNotAllowed("route.method_not_allowed", "method not allowed")
    else:
        err = Internal()
    return problem(err, request_id_of(request.scope))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # Log the class only: exception text from third-party code may echo secrets or payloads.
    log.error("unhandled error %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return problem(Internal(), request_id_of(request.scope))


def install() -> dict[object, object]:
    """Exception handlers for `Starlette(exception_handlers=...)`."""
    return {ApiError: _on_api_error, HTTPException: _on_http_error, Exception: _on_crash}
