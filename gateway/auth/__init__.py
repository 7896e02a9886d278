"""Authentication core: JWT verification, JWKS keys, and the identity sent upstream.

    config.JwtPolicy          the `auth.jwt` policy section (validated at load)
    jws.SignatureVerifier     structure + header + signature  -> (header, payload bytes)
    jwt_verifier.JwtVerifier  + claims + verified-token cache  -> claims
    keys / jwks               JWK loading, static key sets, the refreshed JWKS cache
    identity.IdentitySigner   X-Gateway-Identity for the upstream; claim_at() for claim paths
    dev.mint_dev_token        development tokens for `gateway token`

Every refusal is `gateway.errors.Unauthorized` with an `auth.*` reason.
"""

from gateway.auth.claims import claim_at, claim_text
from gateway.auth.config import JwtConfigError, JwtPolicy
from gateway.auth.dev import mint_dev_token
from gateway.auth.identity import IdentitySigner
from gateway.auth.jwks import JwksCache
from gateway.auth.jws import SignatureVerifier
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import KeySource, StaticKeySet, VerifyKey, load_jwk

__all__ = [
    "IdentitySigner",
    "JwksCache",
    "JwtConfigError",
    "JwtPolicy",
    "JwtVerifier",
    "KeySource",
    "SignatureVerifier",
    "StaticKeySet",
    "VerifyKey",
    "claim_at",
    "claim_text",
    "load_jwk",
    "mint_dev_token",
]
