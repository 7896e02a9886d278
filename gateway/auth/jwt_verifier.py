"""JWT verification: the signature layer (`jws.SignatureVerifier`) plus claim checks and a cache.

Built once per policy; `verify()` is the request-path call. It never raises anything but
`Unauthorized` with one of the stable reasons:

    auth.token_too_large  auth.malformed     auth.bad_algorithm  auth.bad_header
    auth.unknown_kid      auth.bad_signature auth.expired        auth.not_yet_valid
    auth.iat_in_future    auth.too_old       auth.bad_issuer     auth.bad_audience
    auth.missing_claim

Verified tokens are cached (LRU keyed by the token string, bounded by `cache_size`). A cached
entry is re-checked on every hit against `exp` and the maximum age, and against the key it was
verified with (a key rotated out of the JWKS stops vouching for its cached tokens). Failures are
never cached.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

from gateway.auth.config import JwtPolicy
from gateway.auth.jws import SignatureVerifier, parse_json_object
from gateway.auth.keys import KeySource
from gateway.errors import Unauthorized

# The identity the upstream receives carries `sub` as a string of 1..256 characters; a token whose
# subject it could not carry is refused here, not after a rate-limit hit, by the upstream.
MAX_SUB_LENGTH = 256

# (claims, exp, iat or None, kid or None, key object or None)
_Entry = tuple[dict[str, Any], float, float | None, str | None, Any]


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized("auth.malformed", f"claim {name} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unauthorized("auth.malformed", f"claim {name} is not a number")
    return value


class JwtVerifier:
    """Verifies user JWTs against one policy; keys are loaded before the first request."""

    def __init__(
        self,
        policy: JwtPolicy,
        hs_secret: str | bytes | None = None,
        jwks: KeySource | None = None,
        algorithms: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        # `algorithms`: the allowlist narrowed to what the configured sources verify
        # (`sources.bind_algorithms`); the policy's whole list when not given.
        self.policy = policy
        self.algorithms = tuple(policy.algorithms if algorithms is None else algorithms)
        self._sig = SignatureVerifier(self.algorithms, policy.max_token_bytes, hs_secret, jwks)
        self._leeway = policy.leeway_seconds
        self._max_age = policy.max_age_seconds
        self._issuer = policy.issuer
        self._audiences = policy.audiences
        self._required = tuple(policy.required_claims)
        self._cache_size = policy.cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    async def await_new_keys(self) -> bool:
        """After `auth.unknown_kid`: wait for the JWKS fetch the unknown kid scheduled (bound the
        wait with `asyncio.timeout`); True when it installed a new key set, so verifying again may
        succeed."""
        return await self._sig.await_new_keys()

    def verify_signature(self, token: str) -> tuple[dict[str, Any], bytes]:
        """Structure, header and signature only: (header, payload bytes) or Unauthorized."""
        return self._sig.verify_signature(token)

    def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """Claims of a valid token (a fresh top-level dict; nested values are shared, read-only)."""
        now = time.time() if now is None else now
        cached = self._cache.get(token)
        if cached is not None:
            claims, exp, iat, kid, key = cached
            if exp <= now - self._leeway:
                self._cache.pop(token, None)
                raise Unauthorized("auth.expired", "token expired")
            if self._max_age is not None and iat is not None and now - iat > self._max_age + self._leeway:
                self._cache.pop(token, None)
                raise Unauthorized("auth.too_old", "token is too old")
            if key is None or self._sig.current_key(kid) is key:
                self._cache.move_to_end(token)
                return dict(claims)
            self._cache.pop(token, None)  # key rotated away: verify again from scratch
        header, payload = self._sig.verify_signature(token)
        try:
            claims = parse_json_object(payload)
        except (ValueError, RecursionError):
            raise Unauthorized("auth.malformed", "token payload is not a JSON object") from None
        exp, iat = self._check_claims(claims, now)
        if self._cache_size:
            kid = header.get("kid")
            self._cache[token] = (claims, exp, iat, kid, self._sig.current_key(kid, header.get("alg")))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return dict(claims)

    def _check_claims(self, claims: dict[str, Any], now: float) -> tuple[float, float | None]:
        for name in self._required:
            if claims.get(name) is None:
                raise Unauthorized("auth.missing_claim", f"token has no {name} claim")
        exp = _number(claims, "exp")
        if exp is None:  # unreachable while "exp" is required; kept so it can never be skipped
            raise Unauthorized("auth.missing_claim", "token has no exp claim")
        if exp <= now - self._leeway:
            raise Unauthorized("auth.expired", "token expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise Unauthorized("auth.not_yet_valid", "token is not valid yet")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise Unauthorized("auth.iat_in_future", "token was issued in the future")
        if self._max_age is not None:
            if iat is None:
                raise Unauthorized("auth.missing_claim", "token has no iat claim")
            if now - iat > self._max_age + self._leeway:
                raise Unauthorized("auth.too_old", "token is too old")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise Unauthorized("auth.bad_issuer", "token issuer not accepted")
        self._check_audience(claims.get("aud"))
        sub = claims.get("sub")
        if not isinstance(sub, str):  # present: "sub" is always required
            raise Unauthorized("auth.malformed", "claim sub is not a string")
        if not 0 < len(sub) <= MAX_SUB_LENGTH:
            raise Unauthorized("auth.malformed", f"claim sub is empty or over {MAX_SUB_LENGTH} characters")
        return exp, iat

    def _check_audience(self, aud: Any) -> None:
        if not self._audiences:
            # RFC 7519 §4.1.3: a token addressed to someone must be refused by anyone who does
            # not know they are that someone.
            if aud is not None:
                raise Unauthorized("auth.bad_audience", "token audience not accepted")
            return
        if isinstance(aud, str):
            if aud in self._audiences:
                return
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            if self._audiences.intersection(aud):
                return
        raise Unauthorized("auth.bad_audience", "token audience not accepted")

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()
