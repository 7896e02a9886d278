"""Bench tokens: HS256 JWTs minted here with pyjwt (not via `gateway token`, which may be mid-change).

The same secret goes to the gateway (GATEWAY_JWT_SECRET) and the Fastify peer (JWT_SECRET), and the
claims satisfy both: `aud` for the gateway, `org_id` for both tenant checks.
"""

from __future__ import annotations

import time

import jwt

# Benchmark-only secret (the Fastify peer's default); never a deployment secret.
BENCH_SECRET = "bench-secret-bench-secret-bench-secret!!"
ORG = "org-1"


def mint(count: int, secret: str = BENCH_SECRET, ttl: int = 7200) -> list[str]:
    """`count` tokens, one per distinct user of org-1, so per-user rate limits never bind."""
    now = int(time.time())
    return [
        jwt.encode({"sub": f"bench-user-{i}", "org_id": ORG, "org_role": "member",
                    "aud": "authenticated", "iat": now, "exp": now + ttl}, secret, algorithm="HS256")
        for i in range(count)
    ]
