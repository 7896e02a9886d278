"""Mint the gateway's identity assertion for direct upstream tests (`X-Gateway-Identity`)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

SECRET = "test-identity-secret-0123456789abcdef-upstream-0123456789abcdef-padding"
AUDIENCE = "upstream"


def mint(kind: str = "user", *, org: str | None = "org_a", role: str | None = "owner", sub: str | None = None,
         secret: str = SECRET, lifetime: int = 30, alg: str = "HS256", drop: tuple[str, ...] = (),
         **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "edge-gateway", "aud": AUDIENCE, "iat": now, "exp": now + lifetime,
                              "rid": uuid.uuid4().hex, "kind": kind}
    if kind == "user":
        claims.update(sub=sub or f"user_{org}", org_id=org, org_role=role)
    else:
        claims.update(sub=sub or "gateway:kommo-webhook")
    claims.update(overrides)
    for key in drop:
        claims.pop(key, None)
    return jwt.encode(claims, secret, algorithm=alg)


def user_headers(org: str = "org_a", role: str = "owner", **kw: Any) -> dict[str, str]:
    return {"X-Gateway-Identity": mint("user", org=org, role=role, **kw), "X-Request-ID": uuid.uuid4().hex}


def service_headers(route: str = "kommo-webhook") -> dict[str, str]:
    return {"X-Gateway-Identity": mint("service", sub=f"gateway:{route}"), "X-Request-ID": uuid.uuid4().hex}
