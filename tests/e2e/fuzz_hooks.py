"""schemathesis hooks for tests/e2e/test_schemathesis.py: the fuzzer signs the Kommo webhooks.

Without them the three webhook operations met only 401s (a random token, signature or client id
never verifies) and nothing behind the verification was fuzzed: the edge's body and parameter
checks, the dedupe, the upstream's handlers. The secrets are the test stack's, passed in the
environment (`FUZZ_KOMMO_*`). Only what the case generated in positive mode is signed: a negative
signature header, token or query (missing, too long, of the wrong type) is sent as generated, and
must still be refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

CHAT = "/v1/webhooks/kommo-chat"
TOKEN = "/v1/webhooks/kommo/{token}"
REVOKED = "/v1/webhooks/kommo/revoked"


def _secret(name: str) -> str:
    value = os.environ.get(f"FUZZ_{name}")
    if not value:
        raise RuntimeError(f"FUZZ_{name} is not set: the fuzz test passes the stack's webhook secrets")
    return value


def _negative(case: Any, location: ParameterLocation) -> bool:
    meta = case.meta
    return meta is not None and meta.is_negative_at(location)


class _SignBody:
    """A requests auth hook: it sees the prepared request, so it signs the exact bytes sent."""

    def __init__(self, header: str, secret: str) -> None:
        self.header, self.secret = header, secret.encode()

    def __call__(self, request: Any) -> Any:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        request.headers[self.header] = hmac.new(self.secret, body, hashlib.sha1).hexdigest()
        return request


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.operation.path
    if path == CHAT:
        headers = case.headers or {}
        if "X-Signature" in headers and not _negative(case, ParameterLocation.HEADER):
            kwargs["auth"] = _SignBody("X-Signature", _secret("KOMMO_CHANNEL_SECRET"))
    elif path == TOKEN:
        if case.path_parameters and "token" in case.path_parameters \
                and not _negative(case, ParameterLocation.PATH):
            case.path_parameters["token"] = _secret("KOMMO_WEBHOOK_SECRET")
    elif path == REVOKED:
        query = case.query or {}
        account = query.get("account_id")
        if isinstance(account, str) and {"client_uuid", "signature"} <= set(query) \
                and not _negative(case, ParameterLocation.QUERY):
            client = _secret("KOMMO_CLIENT_ID")
            query["client_uuid"] = client
            query["signature"] = hmac.new(_secret("KOMMO_CLIENT_SECRET").encode(),
                                          f"{client}|{account}".encode(), hashlib.sha256).hexdigest()
