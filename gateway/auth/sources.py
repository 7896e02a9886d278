"""Key sources from the environment, each bound to the algorithms it can verify.

    GATEWAY_JWT_SECRET      HMAC (HS256, HS384, HS512), and nothing else
    GATEWAY_JWT_JWKS_URL    asymmetric (RS*, PS*, ES*, EdDSA), with the key whose `kid` is in the set

The policy's `auth.jwt.algorithms` is the allowlist; the algorithms actually accepted are those of
the allowlist that a configured source can verify. With both sources (a migration from a shared
secret to signing keys) an HS256 token is checked only against the secret and an RS256/ES256 token
only against the JWKS key named by its `kid`: the classic algorithm confusion (an HS256 token whose
HMAC key is the public RSA/EC key) has no path to succeed, because the JWKS never yields an HMAC
key (`keys.load_jwk` refuses `oct` keys) and the secret is never used for an asymmetric algorithm.

A configured source the allowlist cannot use, or an allowed family without a source, is a set-up
error raised as JwtConfigError with one line naming the variable to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.auth.config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, JwtConfigError, JwtPolicy
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import KeySource


@dataclass(frozen=True, slots=True)
class KeySources:
    """What the environment configures: the HMAC secret and / or the JWKS URL."""

    secret: str | None
    jwks_url: str | None
    # True when GATEWAY_JWT_SECRET was set (not the development default).
    secret_explicit: bool = True


@dataclass(frozen=True, slots=True)
class BoundAlgorithms:
    """The accepted algorithms, split by the key source that verifies them."""

    hmac: tuple[str, ...]
    asymmetric: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.hmac + self.asymmetric


def jwks_url_problem(url: str, production: bool) -> str | None:
    """Why GATEWAY_JWT_JWKS_URL is unusable, or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"GATEWAY_JWT_JWKS_URL is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return f"GATEWAY_JWT_JWKS_URL must be an https:// URL, got {url!r}"
    if parts.username or parts.password:
        return "GATEWAY_JWT_JWKS_URL must not carry credentials"
    if production and parts.scheme != "https":
        # Keys fetched in clear text can be replaced by anyone on the path: they would then sign
        # any token they like.
        return "GATEWAY_JWT_JWKS_URL must use https:// in production (keys fetched over http can be swapped)"
    return None


def bind_algorithms(policy: JwtPolicy, sources: KeySources) -> BoundAlgorithms:
    """Which allowed algorithms each configured source verifies; JwtConfigError when they do not fit."""
    allowed = policy.algorithms
    hmac = tuple(a for a in allowed if a in HMAC_ALGORITHMS) if sources.secret else ()
    asym = tuple(a for a in allowed if a in ASYMMETRIC_ALGORITHMS) if sources.jwks_url else ()
    if not sources.secret and not sources.jwks_url:
        raise JwtConfigError("no JWT key source: set GATEWAY_JWT_SECRET (HS256) or GATEWAY_JWT_JWKS_URL "
                             "(RS256, ES256, EdDSA)")
    if sources.jwks_url and not asym:
        raise JwtConfigError(f"GATEWAY_JWT_JWKS_URL is set but auth.jwt.algorithms {list(allowed)} allows no "
                             "asymmetric algorithm (add RS256, ES256 or EdDSA, or unset the variable)")
    if sources.secret and sources.secret_explicit and not hmac:
        raise JwtConfigError(f"GATEWAY_JWT_SECRET is set but auth.jwt.algorithms {list(allowed)} allows no "
                             "HMAC algorithm (add HS256, or unset the variable)")
    if not hmac and not asym:
        need = "GATEWAY_JWT_JWKS_URL" if policy.uses_asymmetric else "GATEWAY_JWT_SECRET"
        raise JwtConfigError(f"auth.jwt.algorithms {list(allowed)} needs {need} (no key source for them "
                             "is configured)")
    return BoundAlgorithms(hmac=hmac, asymmetric=asym)


def build_verifier(policy: JwtPolicy, sources: KeySources, jwks: KeySource | None) -> JwtVerifier:
    """The verifier for `policy` with each algorithm bound to its source."""
    bound = bind_algorithms(policy, sources)
    if bound.asymmetric and jwks is None:
        raise JwtConfigError("GATEWAY_JWT_JWKS_URL is set but no key set was built for it")
    return JwtVerifier(policy, hs_secret=sources.secret if bound.hmac else None,
                       jwks=jwks if bound.asymmetric else None, algorithms=bound.all)


def describe(policy: JwtPolicy, sources: KeySources) -> list[str]:
    """Human lines for `gateway check`: each source and what it verifies (never the secret)."""
    bound = bind_algorithms(policy, sources)
    out = []
    if bound.hmac:
        origin = "GATEWAY_JWT_SECRET" if sources.secret_explicit else "development default secret"
        out.append(f"{', '.join(bound.hmac)} with {origin}")
    if bound.asymmetric:
        out.append(f"{', '.join(bound.asymmetric)} with keys from {sources.jwks_url} (by kid)")
    return out
