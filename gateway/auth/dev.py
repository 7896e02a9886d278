"""Development tokens for `gateway token` (the CLI refuses this in production)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt


def mint_dev_token(
    secret: str,
    sub: str,
    org: str,
    role: str = "member",
    ttl: int = 3600,
    issuer: str | None = None,
    audience: str | None = "authenticated",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 user token with `sub`, `org_id`, `org_role`, `iat`, `exp` (+ `iss`, `aud`)."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "org_id": org, "org_role": role, "iat": now, "exp": now + ttl}
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256")
