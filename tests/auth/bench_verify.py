"""Micro-benchmark of JwtVerifier.verify() with and without the verified-token cache.

    .venv/bin/python -m tests.auth.bench_verify

Not a test (no timing assertions); single-threaded, a few seconds, safe on a shared machine.
Prints µs/op (best of 5) next to plain `jwt.decode` for reference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.identity import IdentitySigner
from gateway.auth.jwt_verifier import JwtVerifier
from tests.auth.factories import HS_SECRET, Keys, asym_verifier, policy


def best_us(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> None:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    d = ed25519.Ed25519PrivateKey.generate()

    def jwk(alg: type[jwt.algorithms.Algorithm], key: object, kid: str, name: str) -> dict[str, object]:
        out: dict[str, object] = json.loads(alg.to_jwk(key.public_key()))  # type: ignore[attr-defined]
        out.update(kid=kid, alg=name)
        return out

    algs = jwt.algorithms
    keys = Keys(
        r,
        e,
        d,
        jwk(algs.RSAAlgorithm, r, "rsa-1", "RS256"),
        jwk(algs.ECAlgorithm, e, "ec-1", "ES256"),
        jwk(algs.OKPAlgorithm, d, "ed-1", "EdDSA"),
    )
    now = int(time.time())
    claims = {
        "sub": "u",
        "org_id": "o",
        "org_role": "member",
        "iat": now,
        "exp": now + 3600,
        "iss": "https://issuer.test",
        "aud": "authenticated",
    }
    rows: list[tuple[str, JwtVerifier, JwtVerifier, str, object]] = [
        (
            "HS256",
            JwtVerifier(policy(cache_size=0), hs_secret=HS_SECRET),
            JwtVerifier(policy(), hs_secret=HS_SECRET),
            jwt.encode(claims, HS_SECRET, algorithm="HS256"),
            HS_SECRET,
        )
    ]
    for name, priv, kid in (("RS256", r, "rsa-1"), ("ES256", e, "ec-1"), ("EdDSA", d, "ed-1")):
        token = jwt.encode(claims, priv, algorithm=name, headers={"kid": kid})
        rows.append((name, asym_verifier(keys, cache_size=0), asym_verifier(keys), token, priv.public_key()))
    for name, nocache, cached, token, ref_key in rows:
        cached.verify(token)
        a = best_us(lambda v=nocache, t=token: v.verify(t), 500)  # type: ignore[misc]
        b = best_us(lambda v=cached, t=token: v.verify(t), 20000)  # type: ignore[misc]
        c = best_us(
            lambda t=token, k=ref_key, n=name: jwt.decode(t, k, algorithms=[n], audience="authenticated"),  # type: ignore[misc]
            500,
        )
        print(f"{name}: verify uncached {a:6.1f} µs  cached {b:5.2f} µs  (plain jwt.decode {c:6.1f} µs)")
    signer = IdentitySigner("x" * 32)
    mint = best_us(
        lambda: signer.mint(
            request_id="r", route_id="x", claims={"sub": "u", "org_id": "o", "org_role": "m"}
        ),
        5000,
    )
    print(f"IdentitySigner.mint {mint:.1f} µs")


if __name__ == "__main__":
    main()
