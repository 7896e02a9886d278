"""Signed OAuth `state`: binds a consent flow to the org (and user) that started it, with an expiry.

Threat: login CSRF and cross-tenant linking — an attacker finishing their own Kommo consent into a
victim's org, or replaying a callback. The state is HMAC-signed with `UPSTREAM_STATE_SECRET`,
expires after ten minutes and carries a nonce that the callback consumes exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from upstream_stub.errors import BadRequest

STATE_TTL = 600
_DOMAIN = b"upstream-kommo-oauth-state-v1\x00"


@dataclass(frozen=True, slots=True)
class State:
    """What a verified state says: the org and user that asked, an optional connection, a nonce."""

    org_id: str
    sub: str
    connection_id: str | None
    nonce: str
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))


class StateSigner:
    """Issues and verifies states with one secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("UPSTREAM_STATE_SECRET is required")
        self._key = secret.encode()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, _DOMAIN + body.encode(), hashlib.sha256).digest())

    def issue(self, org_id: str, sub: str, connection_id: str | None) -> tuple[str, State]:
        st = State(org_id, sub, connection_id, secrets.token_urlsafe(18), int(time.time()) + STATE_TTL)
        doc = {"o": st.org_id, "u": st.sub, "c": st.connection_id, "n": st.nonce, "e": st.expires_at}
        body = _b64(json.dumps(doc, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}", st

    def verify(self, token: str) -> State:
        bad = BadRequest("oauth.bad_state", "state is invalid or expired")
        body, _, mac = token.partition(".")
        if len(token) > 2048 or not body or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            raise bad
        try:
            doc = json.loads(_unb64(body))
            st = State(str(doc["o"]), str(doc["u"]), doc["c"], str(doc["n"]), int(doc["e"]))
        except (ValueError, KeyError, TypeError):
            raise bad from None
        if st.expires_at < time.time() or not isinstance(st.connection_id, str | None):
            raise bad
        return st
