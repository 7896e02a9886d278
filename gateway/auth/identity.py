"""The identity assertion the gateway sends upstream (`X-Gateway-Identity`).

The upstream never parses user tokens: it verifies this short-lived HS256 JWT, signed with
`GATEWAY_IDENTITY_SECRET`, and reads `sub`, `org_id`, `org_role` from it. Claims are taken only
from the *verified* user token, through the claim paths of the policy, so a client cannot choose
them. Lifetime is capped at 60 s; `aud` names the upstream and `rid` ties it to one request, so a
leaked assertion is of little use elsewhere or later.

    {"iss": "edge-gateway", "aud": <audience>, "iat": .., "exp": iat+lifetime, "rid": <request id>,
     "kind": "user", "sub": .., "org_id": .. | null, "org_role": .. | null}
    {... "kind": "service", "sub": "gateway:<route id>"}      (routes with `auth: none`)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from gateway.auth.claims import claim_at, claim_text

__all__ = ["ISSUER", "MAX_LIFETIME", "IdentitySigner", "claim_at", "claim_text"]

ISSUER = "edge-gateway"
MAX_LIFETIME = 60
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _scalar(value: Any) -> str | None:
    # Tenant and role ids are strings; ints are tolerated (some IdPs emit numeric org ids).
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class IdentitySigner:
    """Mints the per-request identity JWT for the upstream; the key is prepared once."""

    def __init__(self, secret: str | bytes, audience: str = "upstream", lifetime: int = 30) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if not key:
            raise ValueError("identity secret is empty")
        if not 1 <= lifetime <= MAX_LIFETIME:
            raise ValueError(f"identity lifetime must be 1..{MAX_LIFETIME} seconds")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.audience = audience
        self.lifetime = lifetime
        self._head = f'{{"iss":{json.dumps(ISSUER)},"aud":{json.dumps(audience)},'
        # The identity part of the payload (`"kind":..,"sub":..,"org_id":..,"org_role":..}`) by
        # (sub, org, role): the same few users send most requests; only iat/exp/rid change.
        self._tails: dict[tuple[str | None, ...], str] = {}

    def mint(
        self,
        *,
        request_id: str,
        route_id: str,
        claims: Mapping[str, Any] | None,
        org_claim_path: str = "org_id",
        role_claim: str = "org_role",
        now: float | None = None,
    ) -> str:
        iat = int(time.time() if now is None else now)
        if claims is None:
            key: tuple[str | None, ...] = ("service", route_id)
        else:
            # The same reader as tenant binding and authorization: the upstream is told exactly
            # the org the tenant stage checked.
            key = (_scalar(claims.get("sub")), claim_text(claims, org_claim_path),
                   claim_text(claims, role_claim))
        tail = self._tails.get(key)
        if tail is None:
            if claims is None:
                part: dict[str, Any] = {"kind": "service", "sub": f"gateway:{route_id}"}
            else:
                part = {"kind": "user", "sub": key[0], "org_id": key[1], "org_role": key[2]}
            if len(self._tails) >= 10_000:
                self._tails.clear()
            tail = self._tails[key] = json.dumps(part, separators=(",", ":"))[1:]
        text = f'{self._head}"iat":{iat},"exp":{iat + self.lifetime},"rid":{json.dumps(request_id)},{tail}'
        payload = base64.urlsafe_b64encode(text.encode()).rstrip(b"=")
        signing_input = _HEADER + b"." + payload
        mac = self._mac.copy()
        mac.update(signing_input)
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
        return (signing_input + b"." + signature).decode("ascii")
