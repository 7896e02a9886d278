"""The signature layer: a compact JWS in, (header, payload bytes) out, or a 401.

Everything here treats the token as hostile input:
- size is capped before any work; only the compact form with three base64url segments is
  accepted, decoded strictly (no padding, no stray characters, no non-zero trailing bits), so two
  different strings never verify as the same token;
- header JSON with duplicate members is refused (parsers disagree on which one wins);
- `alg` is only looked up in the allowlist; `none` in any casing is never on it;
- key-bearing headers (`jwk`, `jku`, `x5u`, `x5c`, `x5t`, `x5t#S256`) are refused and never
  fetched, `crit` is refused (we implement no extensions), and so is unencoded payload `b64`;
- `kid` is only a dictionary key: paths, URLs or SQL in it are simply unknown kids.
Any exception raised by pyjwt or cryptography is translated to `auth.bad_signature` here.
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import urlsafe_b64decode
from collections.abc import Mapping
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from gateway.auth.config import HMAC_ALGORITHMS, JwtConfigError
from gateway.auth.keys import KeySource, VerifyKey
from gateway.errors import Unauthorized

_SEGMENT = r"[A-Za-z0-9_-]*"
_COMPACT = re.compile(rf"({_SEGMENT})\.({_SEGMENT})\.({_SEGMENT})")
# Last character of an unpadded segment whose length is 2 or 3 (mod 4): its unused low bits must
# be zero, otherwise several encodings decode to the same bytes.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"})

_ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()


def b64url_decode(segment: str) -> bytes:
    """Strict unpadded base64url; raises ValueError on anything non-canonical."""
    rem = len(segment) % 4
    if rem == 1 or (rem and segment[-1] not in _CANONICAL_LAST[rem]):
        raise ValueError("non-canonical base64url")
    try:
        return urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("bad base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member")
    return out


def _no_constants(name: str) -> Any:
    # NaN/Infinity are not JSON; an `exp` of NaN would compare false against every clock.
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json_object(data: bytes) -> dict[str, Any]:
    """JSON object with unique member names and no NaN/Infinity, or ValueError."""
    value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


class SignatureVerifier:
    """Checks structure, header and signature of compact JWS tokens against fixed keys."""

    def __init__(
        self,
        algorithms: list[str] | tuple[str, ...] | frozenset[str],
        max_token_bytes: int,
        hs_secret: str | bytes | None = None,
        keys: KeySource | None = None,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        self.max_token_bytes = max_token_bytes
        self._keys = keys
        self._hmac_key: bytes | None = None
        # Each family is bound to its own key source: HMAC algorithms to the secret only,
        # asymmetric ones to the key set only (see gateway.auth.sources).
        if self.algorithms & HMAC_ALGORITHMS:
            if not hs_secret:
                raise JwtConfigError("an HMAC algorithm is allowed but no secret is configured")
            # pyjwt refuses PEM, DER, SSH and JWK-shaped secrets: a public key must never become
            # an HMAC key. Prepared once, here; the request path only compares MACs.
            try:
                self._hmac_key = _ALGORITHMS["HS256"].prepare_key(hs_secret)
            except Exception as exc:
                raise JwtConfigError(f"unusable HMAC secret: {exc}") from None
        if self.algorithms - HMAC_ALGORITHMS and keys is None:
            raise JwtConfigError("an asymmetric algorithm is allowed but no key set (JWKS) is configured")

    def verify_signature(self, token: str) -> tuple[dict[str, Any], bytes]:
        """Return (header, payload bytes) of a correctly signed token, or raise Unauthorized."""
        if len(token) > self.max_token_bytes:
            raise Unauthorized("auth.token_too_large", "token too large")
        match = _COMPACT.fullmatch(token)
        if match is None:
            raise Unauthorized("auth.malformed", "token is not a compact JWS")
        h64, p64, s64 = match.groups()
        try:
            header = parse_json_object(b64url_decode(h64))
        except (ValueError, RecursionError):
            raise Unauthorized("auth.malformed", "token header is not valid") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized("auth.bad_algorithm", "token algorithm not accepted")
        self._check_header(header)
        key = self._key_for(header, alg)
        try:
            signature = b64url_decode(s64)
            payload = b64url_decode(p64)
        except ValueError:
            raise Unauthorized("auth.malformed", "token is not valid base64url") from None
        if not signature:
            raise Unauthorized("auth.malformed", "token has no signature")
        try:
            ok = _ALGORITHMS[alg].verify(f"{h64}.{p64}".encode("ascii"), key, signature)
        except Exception:  # any pyjwt/cryptography failure is a bad signature, never a 500
            ok = False
        if not ok:
            raise Unauthorized("auth.bad_signature", "token signature is not valid")
        return header, payload

    @staticmethod
    def _check_header(header: Mapping[str, Any]) -> None:
        if FORBIDDEN_HEADERS & header.keys():
            raise Unauthorized("auth.bad_header", "token carries a key or key reference")
        if "crit" in header:
            raise Unauthorized("auth.bad_header", "token requires an unsupported extension")
        if header.get("b64", True) is not True:
            raise Unauthorized("auth.bad_header", "unencoded payloads are not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("auth.bad_header", "token kid is not a string")

    def _key_for(self, header: Mapping[str, Any], alg: str) -> Any:
        if alg in HMAC_ALGORITHMS:
            # On the allowlist, so the secret exists (checked at build); a `kid` plays no part.
            return self._hmac_key
        keys = self._keys.keys if self._keys is not None else {}
        kid = header.get("kid")
        entry: VerifyKey | None
        if kid is None:
            # No kid: acceptable only when the key set leaves no choice.
            entry = next(iter(keys.values())) if len(keys) == 1 else None
        else:
            entry = keys.get(kid)
        if entry is None:
            if self._keys is not None:
                self._keys.request_refresh()  # schedules a rate-limited refetch; never waits
            raise Unauthorized("auth.unknown_kid", "token key is not known")
        if alg not in entry.algorithms:
            raise Unauthorized("auth.bad_algorithm", "token algorithm does not fit its key")
        return entry.key

    async def await_new_keys(self) -> bool:
        return self._keys is not None and await self._keys.await_refresh()

    def current_key(self, kid: str | None, alg: str | None = None) -> Any:
        """The key object `kid` resolves to right now (None for HMAC or when gone).

        The token cache compares it by identity with the key a token was verified with, so a key
        removed or rotated out of the JWKS stops vouching for cached tokens at once.
        """
        if alg in HMAC_ALGORITHMS or self._keys is None:
            return None
        keys = self._keys.keys
        if kid is None:
            entry = next(iter(keys.values())) if len(keys) == 1 else None
        else:
            entry = keys.get(kid)
        return entry.key if entry is not None else None
