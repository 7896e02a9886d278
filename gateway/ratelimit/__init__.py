"""Rate limiting and brute-force protection on `limits` (async API), shared through Redis.

policy.py      RateLimitPolicy / RateLimitSettings / BruteForcePolicy, compile_policy
backend.py     storage from GATEWAY_REDIS_URL, timeouts, degraded state and error policy
limiter.py     RateLimiter.hit -> Decision (+ IETF RateLimit headers)
bruteforce.py  BruteForceGuard (failed verifications per client IP, per scope: auth, webhook;
               blocks, the verification budget of a blocked address)
memory.py      BoundedMap / BoundedMemoryStorage: in-process per-key state under max_tracked_keys
"""

from gateway.ratelimit.backend import Backend, storage_from_url
from gateway.ratelimit.bruteforce import BruteForceGuard
from gateway.ratelimit.limiter import Decision, RateLimiter, claim_values
from gateway.ratelimit.policy import (
    BruteForcePolicy,
    CompiledRateLimit,
    RateLimitPolicy,
    RateLimitSettings,
    compile_policy,
)

__all__ = [
    "Backend",
    "BruteForceGuard",
    "BruteForcePolicy",
    "CompiledRateLimit",
    "Decision",
    "RateLimitPolicy",
    "RateLimitSettings",
    "RateLimiter",
    "claim_values",
    "compile_policy",
    "storage_from_url",
]
