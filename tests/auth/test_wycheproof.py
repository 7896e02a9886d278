"""Wycheproof JSON Web Signature vectors against the signature layer of JwtVerifier.

Data: tests/auth/data/json_web_signature_test.json (C2SP/wycheproof, Apache-2.0, see LICENSE next
to it). Payloads there are raw bytes, not claim sets, so each case goes through
`JwtVerifier.verify_signature` (structure, header, key, signature); `verify()` must also refuse
every invalid case. Each group gets a verifier whose allowlist is the group key's algorithm.

Eight vectors are handled explicitly, each for a stated reason (see KNOWN): two "invalid" vectors
are byte-identical to a "valid" one, two "valid" vectors are not base64url, and four "valid"
RFC 7520 vectors use a key whose JWK `alg` differs from the token's `alg`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.config import SUPPORTED_ALGORITHMS, JwtPolicy
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import KeyRejected, StaticKeySet, load_jwk
from gateway.errors import Unauthorized

DATA = json.loads((Path(__file__).parent / "data" / "json_web_signature_test.json").read_text())
GROUPS: list[dict[str, Any]] = DATA["testGroups"]
CASES = [(g, t) for g in GROUPS for t in g["tests"]]

# tcId -> (what we do, why). Every other vector must get exactly the file's verdict.
KNOWN: dict[int, tuple[str, str]] = {
    367: ("accept", "byte-identical to tcId 357 (valid); the padding this vector names is not in it"),
    370: ("accept", "byte-identical to tcId 357 (valid); the padding this vector names is not in it"),
    372: (
        "auth.malformed",
        "'?' inside the header segment is not base64url (RFC 7515 §2); the MAC is over the text without it",
    ),
    373: (
        "auth.malformed",
        "'?' inside the payload segment is not base64url (RFC 7515 §2); the MAC is over the text without it",
    ),
    346: ("auth.bad_algorithm", "JWK alg PS256, token alg PS384: PS384 is not on the group's allowlist"),
    350: ("auth.bad_algorithm", "JWK alg PS256, token alg PS384: PS384 is not on the group's allowlist"),
    347: ("auth.unknown_kid", 'JWK alg "ES521" is not a JWS algorithm; the key is refused at load'),
    351: ("auth.unknown_kid", 'JWK alg "ES521" is not a JWS algorithm; the key is refused at load'),
}


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def header_alg(token: str) -> str | None:
    try:
        alg = json.loads(b64d(token.split(".")[0]))["alg"]
    except Exception:
        return None
    return alg if alg in SUPPORTED_ALGORITHMS else None


def group_jwk(group: dict[str, Any]) -> dict[str, Any]:
    return group.get("public") or group["private"]


def allowlist(group: dict[str, Any], token: str) -> str:
    """The group key's algorithm; for keys that declare none (or a non-JWS one), the token's."""
    jwk = group_jwk(group)
    if jwk.get("alg") in SUPPORTED_ALGORITHMS:
        return str(jwk["alg"])
    return header_alg(token) or {"RSA": "RS256", "EC": "ES256", "oct": "HS256"}[jwk["kty"]]


def build(group: dict[str, Any], alg: str, jwk: dict[str, Any] | None = None) -> JwtVerifier:
    jwk = jwk or group_jwk(group)
    pol = JwtPolicy(algorithms=[alg])
    if jwk["kty"] == "oct":
        return JwtVerifier(pol, hs_secret=b64d(jwk["k"]))
    try:
        keys = {jwk["kid"]: load_jwk(jwk, frozenset({alg}))}
    except KeyRejected:
        keys = {}  # e.g. `use: enc`, `key_ops: [encrypt]`: the key never becomes usable
    return JwtVerifier(pol, jwks=StaticKeySet(keys))


def outcome(verifier: JwtVerifier, token: str) -> str:
    try:
        verifier.verify_signature(token)
    except Unauthorized as exc:
        assert exc.status == 401 and exc.reason.startswith("auth.")
        return exc.reason
    return "accept"


def test_vector_file_is_complete() -> None:
    assert DATA["numberOfTests"] == len(CASES) == 401


@pytest.mark.parametrize("group,case", CASES, ids=[f"tc{t['tcId']}-{t['comment']}" for _, t in CASES])
def test_vector(group: dict[str, Any], case: dict[str, Any]) -> None:
    token = case["jws"]
    verifier = build(group, allowlist(group, token))
    got = outcome(verifier, token)
    if case["tcId"] in KNOWN:
        assert got == KNOWN[case["tcId"]][0]
    elif case["result"] == "valid":
        assert got == "accept"
    else:
        assert got != "accept"
        with pytest.raises(Unauthorized):
            verifier.verify(token)  # the full path refuses it too


def test_identical_vectors_are_identical() -> None:
    by_id = {t["tcId"]: t for _, t in CASES}
    assert by_id[367]["jws"] == by_id[370]["jws"] == by_id[357]["jws"]
    assert by_id[357]["result"] == "valid"


@pytest.mark.parametrize("variant", ["header=", "payload=", "signature="])
def test_padding_named_by_367_and_370_is_refused(variant: str) -> None:
    """What tcIds 367/370 meant to test: '=' padding in a segment. Refused as malformed."""
    group = next(g for g in GROUPS if g["comment"] == "base64")
    token = next(t["jws"] for t in group["tests"] if t["tcId"] == 357)
    parts = token.split(".")
    index = ["header=", "payload=", "signature="].index(variant)
    parts[index] += "=" * (-len(parts[index]) % 4 or 1)
    assert outcome(build(group, "HS256"), ".".join(parts)) == "auth.malformed"


@pytest.mark.parametrize("tc_id", [346, 347, 350, 351])
def test_rfc7520_vectors_verify_when_the_key_does_not_pin_another_alg(tc_id: int) -> None:
    """The crypto is fine: with the JWK's conflicting `alg` removed and the token's alg allowed, accepted."""
    group, case = next((g, t) for g, t in CASES if t["tcId"] == tc_id)
    jwk = {k: v for k, v in group_jwk(group).items() if k != "alg"}
    alg = header_alg(case["jws"])
    assert alg is not None
    assert outcome(build(group, alg, jwk), case["jws"]) == "accept"


def test_counts() -> None:
    """The totals reported for issue 3 (recomputed here, so the report cannot drift from the code)."""
    tally = {"valid_accepted": 0, "valid_refused": 0, "invalid_refused": 0, "invalid_accepted": 0}
    for group, case in CASES:
        got = outcome(build(group, allowlist(group, case["jws"])), case["jws"])
        key = f"{case['result']}_{'accepted' if got == 'accept' else 'refused'}"
        tally[key] += 1
    assert tally == {"valid_accepted": 40, "valid_refused": 6, "invalid_refused": 353, "invalid_accepted": 2}
