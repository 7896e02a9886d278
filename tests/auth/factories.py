"""Factories for the auth tests: keys, policies, tokens and forgeries (`make_token` style)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.config import JwtPolicy
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import StaticKeySet, VerifyKey, load_jwk

NOW = 1_700_000_000
HS_SECRET = "test-secret-0123456789-0123456789-abcdef"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(obj: Any) -> str:
    return b64(obj if isinstance(obj, bytes) else json.dumps(obj).encode())


def hs_sign(header: Any, payload: Any, secret: bytes, digest: Any = hashlib.sha256) -> str:
    """HMAC-sign by hand, so any bytes (even a public key) can be the secret — as an attacker would."""
    signing_input = f"{seg(header)}.{seg(payload)}"
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "user-1",
        "org_id": "org-a",
        "org_role": "member",
        "iat": NOW - 10,
        "exp": NOW + 600,
        "iss": "https://issuer.test",
        "aud": "authenticated",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    rsa_jwk: dict[str, Any]
    ec_jwk: dict[str, Any]
    ed_jwk: dict[str, Any]

    def public_forms(self, which: str) -> dict[str, bytes]:
        """The public key of `which` ("rsa" / "ec") in every form an attacker may try as an HMAC secret."""
        pub = getattr(self, which).public_key()
        enc, fmt = serialization.Encoding, serialization.PublicFormat
        forms = {
            "pem": pub.public_bytes(enc.PEM, fmt.SubjectPublicKeyInfo),
            "der": pub.public_bytes(enc.DER, fmt.SubjectPublicKeyInfo),
            "ssh": pub.public_bytes(enc.OpenSSH, fmt.OpenSSH),
            "jwk": json.dumps(getattr(self, f"{which}_jwk")).encode(),
        }
        if which == "rsa":
            forms["pem_pkcs1"] = pub.public_bytes(enc.PEM, fmt.PKCS1)
        return forms


@pytest.fixture(scope="session")
def keys() -> Keys:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    d = ed25519.Ed25519PrivateKey.generate()

    def jwk(alg: Any, key: Any, kid: str, name: str) -> dict[str, Any]:
        out = json.loads(alg.to_jwk(key.public_key()))
        out.update(kid=kid, alg=name, use="sig")
        return out

    algs = jwt.algorithms
    return Keys(
        rsa=r,
        ec=e,
        ed=d,
        rsa_jwk=jwk(algs.RSAAlgorithm, r, "rsa-1", "RS256"),
        ec_jwk=jwk(algs.ECAlgorithm, e, "ec-1", "ES256"),
        ed_jwk=jwk(algs.OKPAlgorithm, d, "ed-1", "EdDSA"),
    )


def policy(**over: Any) -> JwtPolicy:
    base: dict[str, Any] = {
        "algorithms": ["HS256"],
        "issuer": "https://issuer.test",
        "audience": "authenticated",
    }
    base.update(over)
    return JwtPolicy(**base)


def key_set(
    keys: Keys, *jwks: dict[str, Any], allowed: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
) -> StaticKeySet:
    loaded: dict[str, VerifyKey] = {}
    for j in jwks or (keys.rsa_jwk, keys.ec_jwk, keys.ed_jwk):
        loaded[j["kid"]] = load_jwk(j, frozenset(allowed))
    return StaticKeySet(loaded)


def hs_verifier(**over: Any) -> JwtVerifier:
    return JwtVerifier(policy(**over), hs_secret=HS_SECRET)


def asym_verifier(keys: Keys, **over: Any) -> JwtVerifier:
    over.setdefault("algorithms", ["RS256", "ES256", "EdDSA"])
    return JwtVerifier(policy(**over), jwks=key_set(keys, allowed=tuple(over["algorithms"])))


def hs_token(headers: dict[str, Any] | None = None, **claim_over: Any) -> str:
    return hs_sign(
        {"alg": "HS256", "typ": "JWT", **(headers or {})}, claims(**claim_over), HS_SECRET.encode()
    )


def rs_token(keys: Keys, alg: str = "RS256", kid: str | None = "rsa-1", **claim_over: Any) -> str:
    key: Any = {"RS": keys.rsa, "PS": keys.rsa, "ES": keys.ec, "Ed": keys.ed}[alg[:2]]
    headers = {"kid": kid} if kid is not None else {}
    if kid is None:
        return jwt.encode(claims(**claim_over), key, algorithm=alg)
    return jwt.encode(claims(**claim_over), key, algorithm=alg, headers=headers)


def sign_with(header: dict[str, Any], payload: Any, key: Any) -> str:
    """Sign any header/payload with a private key via pyjwt's algorithm objects (no header checks)."""
    signing_input = f"{seg(header)}.{seg(payload)}"
    sig = jwt.algorithms.get_default_algorithms()[header["alg"]].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(sig)}"
