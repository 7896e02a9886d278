"""Verification keys: loading a JWK once into a key object bound to the algorithms it may verify.

A key is only ever used with the algorithms recorded here, which are the intersection of the policy
allowlist and what the key itself declares (`alg`, `kty`, `crv`). That is what makes a token's
`alg` header harmless: it selects among pre-approved (key, algorithm) pairs, it never widens them.
Refused at load, with a reason for the log: symmetric (`oct`) keys (a JWKS host must not be able to
hand us an HMAC secret), private key material, `use` other than `sig`, `key_ops` without `verify`,
RSA moduli under 2048 bits, curves that do not match the declared algorithm.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from gateway.auth.config import OKP_ALGORITHMS, RSA_ALGORITHMS

log = logging.getLogger("gateway.auth.keys")

MIN_RSA_BITS = 2048
_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public key object, loaded once, and the algorithms it may verify."""

    kid: str
    key: Any
    algorithms: frozenset[str]


class KeySource(Protocol):
    """Where the verifier looks up asymmetric keys by `kid` (a JwksCache or a StaticKeySet)."""

    @property
    def keys(self) -> Mapping[str, VerifyKey]: ...

    def request_refresh(self) -> bool: ...

    async def await_refresh(self) -> bool: ...


_OCT_REFUSED = "symmetric (oct) keys are never accepted from a key set"


class KeyRejected(ValueError):
    """A JWK that will not be used, with the reason."""


def _candidate_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        return RSA_ALGORITHMS
    if kty == "EC":
        alg = _EC_CURVE_ALG.get(jwk.get("crv"))  # type: ignore[arg-type]
        if alg is None:
            raise KeyRejected(f"unsupported EC curve {jwk.get('crv')!r}")
        return frozenset({alg})
    if kty == "OKP":
        if jwk.get("crv") not in _OKP_CURVES:
            raise KeyRejected(f"unsupported OKP curve {jwk.get('crv')!r}")
        return OKP_ALGORITHMS
    raise KeyRejected(f"unsupported kty {kty!r}")


def load_jwk(jwk: Mapping[str, Any], allowed_algorithms: frozenset[str] | set[str]) -> VerifyKey:
    """Load one public JWK for the allowlist, or raise KeyRejected saying why not."""
    if not isinstance(jwk, Mapping):
        raise KeyRejected("not a JSON object")
    kid = jwk.get("kid", "")
    if not isinstance(kid, str):
        raise KeyRejected("kid is not a string")
    if jwk.get("kty") == "oct":
        # Said before the private-member check: an HMAC secret's `k` is key material, but what the
        # operator must learn is that a key set never supplies symmetric keys at all.
        raise KeyRejected(_OCT_REFUSED)
    if _PRIVATE_MEMBERS & jwk.keys():
        raise KeyRejected("contains private key material")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeyRejected(f"use is {use!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise KeyRejected("key_ops does not include 'verify'")
    algorithms = _candidate_algorithms(jwk)
    declared = jwk.get("alg")
    if declared is not None:
        # The key says what it is for; a token may not use it for anything else (RS256 vs PS256,
        # or a P-256 key claimed for ES512).
        if declared not in algorithms:
            raise KeyRejected(f"alg {declared!r} does not fit kty/crv")
        algorithms = frozenset({declared})
    algorithms = algorithms & frozenset(allowed_algorithms)
    if not algorithms:
        raise KeyRejected("no algorithm of this key is on the allowlist")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=min(algorithms)).key
    except Exception as exc:  # pyjwt/cryptography raise many types for bad key material
        raise KeyRejected(f"unusable key material: {type(exc).__name__}") from None
    if jwk.get("kty") == "RSA" and key.key_size < MIN_RSA_BITS:
        raise KeyRejected(f"RSA key of {key.key_size} bits is below {MIN_RSA_BITS}")
    return VerifyKey(kid=kid, key=key, algorithms=algorithms)


def load_jwks(
    document: Any,
    allowed_algorithms: frozenset[str] | set[str],
    previous: Mapping[str, VerifyKey] | None = None,
    previous_raw: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, VerifyKey], dict[str, Mapping[str, Any]]]:
    """Load every usable key of a JWKS document; unusable keys are logged and skipped.

    Keys whose JWK is unchanged since `previous` keep their object, so the verifier's token cache
    can tell "same key" from "rotated key" by identity.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeyRejected('JWKS is not an object with a "keys" list')
    keys: dict[str, VerifyKey] = {}
    raw: dict[str, Mapping[str, Any]] = {}
    kids = [jwk.get("kid") if isinstance(jwk, Mapping) else None for jwk in document["keys"]]
    seen = Counter(k for k in kids if isinstance(k, str))
    for index, jwk in enumerate(document["keys"]):
        kid = kids[index]
        try:
            if not isinstance(kid, str) or not kid:
                raise KeyRejected("missing kid")
            if seen[kid] > 1:
                # Two keys under one kid would make the lookup ambiguous; keep neither.
                raise KeyRejected(f"duplicate kid {kid!r}")
            if previous is not None and previous_raw is not None and previous_raw.get(kid) == jwk:
                kept = previous.get(kid)
                keys[kid] = kept if kept is not None else load_jwk(jwk, allowed_algorithms)
            else:
                keys[kid] = load_jwk(jwk, allowed_algorithms)
            raw[kid] = jwk
        except KeyRejected as exc:
            log.warning("jwks key %d skipped: %s", index, exc)
    return keys, raw


class StaticKeySet:
    """A fixed key set (tests, or keys configured at start-up)."""

    def __init__(self, keys: Mapping[str, VerifyKey]) -> None:
        self._keys = dict(keys)

    @property
    def keys(self) -> Mapping[str, VerifyKey]:
        return self._keys

    def request_refresh(self) -> bool:
        return False

    async def await_refresh(self) -> bool:
        return False
