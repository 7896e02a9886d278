"""Typed refusals of the upstream, rendered as `application/problem+json`.

Reuses the gateway's hierarchy (`gateway.errors`) so both halves speak the same body shape; adds the
few statuses only the upstream needs. `detail` never carries tokens, credentials or internals.
"""

from __future__ import annotations

import logging
import uuid

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from gateway.errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = [
    "ApiError", "BadGateway", "BadRequest", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge",
    "ServiceUnavailable", "Unauthorized", "Unprocessable", "UnsupportedMediaType", "problem",
    "request_id_of", "install",
]

ApiError = GatewayError
PROBLEM = "application/problem+json"
log = logging.getLogger("upstream_stub")


class Conflict(GatewayError):
    status, title, reason = 409, "Conflict", "conflict"


class Unprocessable(GatewayError):
    status, title, reason = 422, "Unprocessable Content", "validation.failed"


class Internal(GatewayError):
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


def problem(err: GatewayError, request_id: str) -> Response:
    return Response(err.body(request_id), status_code=err.status, media_type=PROBLEM, headers=err.headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    err = exc if isinstance(exc, GatewayError) else Internal()
    return problem(err, request_id_of(request.scope))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 500)
    err: GatewayError
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
    return {GatewayError: _on_api_error, HTTPException: _on_http_error, Exception: _on_crash}
