"""JwtVerifier: every attacker move is a 401 with a stable reason; valid tokens pass."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from gateway.auth.config import JwtConfigError
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import StaticKeySet, VerifyKey
from gateway.errors import Unauthorized
from tests.auth.factories import (
    HS_SECRET,
    NOW,
    Keys,
    asym_verifier,
    b64,
    claims,
    hs_sign,
    hs_token,
    hs_verifier,
    key_set,
    policy,
    rs_token,
    seg,
    sign_with,
)

SECRET = HS_SECRET.encode()


def reason_of(verifier: JwtVerifier, token: str, now: float = NOW) -> str:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(token, now=now)
    err = info.value
    assert err.status == 401
    assert err.headers["WWW-Authenticate"].startswith("Bearer")
    return err.reason


# ---- accepted -------------------------------------------------------------------------------


def test_hs256_valid_token_returns_claims() -> None:
    out = hs_verifier().verify(hs_token(), now=NOW)
    assert out["sub"] == "user-1" and out["org_id"] == "org-a"


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_asymmetric_valid_tokens(keys: Keys, alg: str) -> None:
    kid = {"RS": "rsa-1", "PS": "rsa-1", "ES": "ec-1", "Ed": "ed-1"}[alg[:2]]
    rsa_jwk = {k: v for k, v in keys.rsa_jwk.items() if k != "alg"}  # one RSA key for RS256 and PS256
    algs = ["RS256", "PS256", "ES256", "EdDSA"]
    verifier = JwtVerifier(
        policy(algorithms=algs), jwks=key_set(keys, rsa_jwk, keys.ec_jwk, keys.ed_jwk, allowed=tuple(algs))
    )
    assert verifier.verify(rs_token(keys, alg, kid=kid), now=NOW)["sub"] == "user-1"


def test_audience_list_and_policy_list() -> None:
    v = hs_verifier(audience=["api", "authenticated"])
    assert v.verify(hs_token(aud=["other", "api"]), now=NOW)["sub"] == "user-1"


def test_single_key_set_accepts_token_without_kid(keys: Keys) -> None:
    v = JwtVerifier(policy(algorithms=["RS256"]), jwks=key_set(keys, keys.rsa_jwk, allowed=("RS256",)))
    assert v.verify(rs_token(keys, kid=None), now=NOW)["sub"] == "user-1"


# ---- refused: table of every reason -----------------------------------------------------------

Builder = Callable[[Keys], str]
_HS = {"alg": "HS256", "typ": "JWT"}


def _raw(header: bytes) -> str:
    return f"{seg(header)}.{seg(claims())}.AAAA"


def _unsigned(alg: str) -> Builder:
    return lambda k: f"{seg({'alg': alg, 'typ': 'JWT'})}.{seg(claims())}."


def _unsigned_with_mac(alg: str) -> Builder:
    return lambda k: hs_sign({"alg": alg}, claims(), SECRET)


HS_CASES = [
    pytest.param(lambda k: "a" * 9000, "auth.token_too_large", id="too_large"),
    pytest.param(lambda k: hs_token() + "x" * 8200, "auth.token_too_large", id="too_large_valid_prefix"),
    pytest.param(lambda k: "", "auth.malformed", id="empty"),
    pytest.param(lambda k: "abc", "auth.malformed", id="one_segment"),
    pytest.param(lambda k: "a.b", "auth.malformed", id="two_segments"),
    pytest.param(lambda k: hs_token() + ".x", "auth.malformed", id="four_segments"),
    pytest.param(lambda k: hs_token().replace(".", ". ", 1), "auth.malformed", id="space_in_token"),
    pytest.param(lambda k: "e30=." + hs_token().split(".", 1)[1], "auth.malformed", id="padded_base64"),
    pytest.param(lambda k: "*" + hs_token(), "auth.malformed", id="bad_base64_char"),
    pytest.param(lambda k: "A" + hs_token(), "auth.malformed", id="bad_base64_length"),
    pytest.param(lambda k: _raw(b"not json"), "auth.malformed", id="header_not_json"),
    pytest.param(lambda k: _raw(b"[1, 2]"), "auth.malformed", id="header_not_object"),
    pytest.param(lambda k: _raw('{"alg":"HS256"}'.encode("utf-16")), "auth.malformed", id="header_utf16"),
    pytest.param(lambda k: _raw(b'{"alg":"none","alg":"HS256"}'), "auth.malformed", id="dup_alg"),
    pytest.param(lambda k: _raw(b"\xff\xfe"), "auth.malformed", id="header_not_utf8"),
    pytest.param(lambda k: hs_sign(_HS, b"not json", SECRET), "auth.malformed", id="payload_not_json"),
    pytest.param(lambda k: hs_sign(_HS, b"[1]", SECRET), "auth.malformed", id="payload_not_object"),
    pytest.param(
        lambda k: hs_sign(_HS, b'{"sub":"a","exp":1800000000,"sub":"b"}', SECRET),
        "auth.malformed",
        id="dup_claim",
    ),
    pytest.param(
        lambda k: hs_sign(_HS, b'{"sub":"a","exp":NaN,"aud":"authenticated"}', SECRET),
        "auth.malformed",
        id="exp_nan",
    ),
    pytest.param(lambda k: hs_token(exp="tomorrow"), "auth.malformed", id="exp_string"),
    pytest.param(lambda k: hs_token(exp=True), "auth.malformed", id="exp_bool"),
    pytest.param(lambda k: hs_token(sub=42), "auth.malformed", id="sub_not_string"),
    pytest.param(lambda k: hs_token().rsplit(".", 1)[0] + ".", "auth.malformed", id="empty_signature"),
    pytest.param(_unsigned("none"), "auth.bad_algorithm", id="alg_none"),
    pytest.param(_unsigned("None"), "auth.bad_algorithm", id="alg_None"),
    pytest.param(_unsigned("NONE"), "auth.bad_algorithm", id="alg_NONE"),
    pytest.param(_unsigned("nOnE"), "auth.bad_algorithm", id="alg_nOnE"),
    pytest.param(_unsigned_with_mac("none"), "auth.bad_algorithm", id="alg_none_with_sig"),
    pytest.param(_unsigned_with_mac("hs256"), "auth.bad_algorithm", id="alg_lowercase"),
    pytest.param(_unsigned_with_mac("HS512"), "auth.bad_algorithm", id="alg_not_allowed"),
    pytest.param(lambda k: rs_token(k), "auth.bad_algorithm", id="rs256_against_hs_policy"),
    pytest.param(lambda k: hs_sign({"typ": "JWT"}, claims(), SECRET), "auth.bad_algorithm", id="alg_missing"),
    pytest.param(
        lambda k: hs_sign({"alg": ["HS256"]}, claims(), SECRET), "auth.bad_algorithm", id="alg_list"
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "jwk": k.rsa_jwk}, claims(), SECRET), "auth.bad_header", id="embedded_jwk"
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "jku": "https://evil.test/jwks"}, claims(), SECRET),
        "auth.bad_header",
        id="jku",
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "x5u": "https://evil.test/c"}, claims(), SECRET),
        "auth.bad_header",
        id="x5u",
    ),
    pytest.param(lambda k: hs_sign({**_HS, "x5c": ["MIIB"]}, claims(), SECRET), "auth.bad_header", id="x5c"),
    pytest.param(lambda k: hs_sign({**_HS, "x5t": "abc"}, claims(), SECRET), "auth.bad_header", id="x5t"),
    pytest.param(
        lambda k: hs_sign({**_HS, "x5t#S256": "abc"}, claims(), SECRET), "auth.bad_header", id="x5t_s256"
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "crit": ["exp"], "exp": 1}, claims(), SECRET),
        "auth.bad_header",
        id="crit_unknown",
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "crit": []}, claims(), SECRET), "auth.bad_header", id="crit_empty"
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "b64": False, "crit": ["b64"]}, claims(), SECRET),
        "auth.bad_header",
        id="b64_false",
    ),
    pytest.param(
        lambda k: hs_sign({**_HS, "b64": False}, claims(), SECRET), "auth.bad_header", id="b64_false_no_crit"
    ),
    pytest.param(
        lambda k: hs_token().rsplit(".", 1)[0] + ".AAAA", "auth.bad_signature", id="wrong_signature"
    ),
    pytest.param(
        lambda k: jwt.encode(claims(), "another-secret-0123456789abcdef01"),
        "auth.bad_signature",
        id="wrong_key",
    ),
    pytest.param(
        lambda k: hs_sign(_HS, claims(), SECRET, hashlib.sha512),
        "auth.bad_signature",
        id="hs512_mac_as_hs256",
    ),
    pytest.param(
        lambda k: hs_token().split(".")[0] + "." + seg(claims(sub="admin")) + "." + hs_token().split(".")[2],
        "auth.bad_signature",
        id="payload_swapped",
    ),
    pytest.param(lambda k: hs_token(exp=NOW - 31), "auth.expired", id="expired"),
    pytest.param(lambda k: hs_token(exp=NOW - 30), "auth.expired", id="expired_at_leeway_edge"),
    pytest.param(lambda k: hs_token(nbf=NOW + 31), "auth.not_yet_valid", id="nbf_future"),
    pytest.param(lambda k: hs_token(iat=NOW + 31), "auth.iat_in_future", id="iat_future"),
    pytest.param(lambda k: hs_token(iss="https://evil.test"), "auth.bad_issuer", id="wrong_iss"),
    pytest.param(lambda k: hs_token(iss=None), "auth.bad_issuer", id="missing_iss"),
    pytest.param(lambda k: hs_token(iss=["https://issuer.test"]), "auth.bad_issuer", id="iss_list"),
    pytest.param(lambda k: hs_token(aud="other"), "auth.bad_audience", id="wrong_aud"),
    pytest.param(lambda k: hs_token(aud=["a", "b"]), "auth.bad_audience", id="wrong_aud_list"),
    pytest.param(lambda k: hs_token(aud=None), "auth.bad_audience", id="missing_aud"),
    pytest.param(lambda k: hs_token(aud=[["authenticated"]]), "auth.bad_audience", id="aud_nested"),
    pytest.param(lambda k: hs_token(exp=None), "auth.missing_claim", id="missing_exp"),
    pytest.param(lambda k: hs_token(sub=None), "auth.missing_claim", id="missing_sub"),
]


@pytest.mark.parametrize("build,reason", HS_CASES)
def test_hs_policy_refusals(keys: Keys, build: Builder, reason: str) -> None:
    assert reason_of(hs_verifier(), build(keys)) == reason


ASYM_CASES = [
    pytest.param(lambda k: rs_token(k, kid="nope"), "auth.unknown_kid", id="unknown_kid"),
    pytest.param(lambda k: rs_token(k, kid="../../../../etc/passwd"), "auth.unknown_kid", id="kid_path"),
    pytest.param(lambda k: rs_token(k, kid="/dev/null"), "auth.unknown_kid", id="kid_dev_null"),
    pytest.param(lambda k: rs_token(k, kid="' OR '1'='1' --"), "auth.unknown_kid", id="kid_sql"),
    pytest.param(lambda k: rs_token(k, kid="x'; DROP TABLE keys;--"), "auth.unknown_kid", id="kid_sql_drop"),
    pytest.param(lambda k: rs_token(k, kid="https://evil.test/key.pem"), "auth.unknown_kid", id="kid_url"),
    pytest.param(lambda k: rs_token(k, kid="rsa-1\x00"), "auth.unknown_kid", id="kid_nul"),
    pytest.param(lambda k: rs_token(k, kid=""), "auth.unknown_kid", id="kid_empty"),
    pytest.param(lambda k: rs_token(k, kid=None), "auth.unknown_kid", id="no_kid_many_keys"),
    pytest.param(
        lambda k: sign_with({"alg": "RS256", "kid": 7}, claims(), k.rsa), "auth.bad_header", id="kid_int"
    ),
    pytest.param(lambda k: rs_token(k, "ES256", kid="rsa-1"), "auth.bad_algorithm", id="es256_on_rsa_key"),
    pytest.param(lambda k: rs_token(k, "PS256", kid="rsa-1"), "auth.bad_algorithm", id="ps256_on_rs256_key"),
    pytest.param(lambda k: rs_token(k, "RS256", kid="ec-1"), "auth.bad_algorithm", id="rs256_on_ec_key"),
    pytest.param(
        lambda k: hs_sign({"alg": "HS256", "kid": "rsa-1"}, claims(), SECRET),
        "auth.bad_algorithm",
        id="hs256",
    ),
    pytest.param(
        lambda k: jwt.encode(claims(), k.rsa, algorithm="RS256", headers={"kid": "rsa-1", "jwk": k.rsa_jwk}),
        "auth.bad_header",
        id="embedded_own_jwk",
    ),
    pytest.param(
        lambda k: jwt.encode(
            claims(), k.rsa, algorithm="RS256", headers={"kid": "rsa-1", "jku": "https://evil.test"}
        ),
        "auth.bad_header",
        id="jku",
    ),
    pytest.param(
        lambda k: rs_token(k).rsplit(".", 1)[0] + "." + rs_token(k, sub="x").rsplit(".", 1)[1],
        "auth.bad_signature",
        id="signature_of_other_token",
    ),
    pytest.param(
        lambda k: rs_token(k, "ES256", kid="ec-1").rsplit(".", 1)[0] + "." + b64(b"\x00" * 64),
        "auth.bad_signature",
        id="ec_zero_signature",
    ),
    pytest.param(
        lambda k: rs_token(k, "ES256", kid="ec-1").rsplit(".", 1)[0] + "." + b64(b"\x01" * 63),
        "auth.bad_signature",
        id="ec_short_signature",
    ),
    pytest.param(lambda k: rs_token(k, exp=NOW - 100), "auth.expired", id="expired"),
]


@pytest.mark.parametrize("build,reason", ASYM_CASES)
def test_asymmetric_policy_refusals(keys: Keys, build: Builder, reason: str) -> None:
    assert reason_of(asym_verifier(keys), build(keys)) == reason


# ---- HMAC signed with the public key (algorithm confusion) ------------------------------------

CONFUSION = [(which, form) for which in ("rsa", "ec") for form in ("pem", "der", "ssh", "jwk", "pem_pkcs1")]
CONFUSION = [c for c in CONFUSION if not (c[0] == "ec" and c[1] == "pem_pkcs1")]


@pytest.mark.parametrize("which,form", CONFUSION, ids=[f"{w}_{f}" for w, f in CONFUSION])
@pytest.mark.parametrize("hs_alg", ["HS256", "HS512"])
def test_hmac_signed_with_public_key_is_refused(keys: Keys, which: str, form: str, hs_alg: str) -> None:
    secret = keys.public_forms(which)[form]
    kid = {"rsa": "rsa-1", "ec": "ec-1"}[which]
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[hs_alg]
    token = hs_sign({"alg": hs_alg, "kid": kid}, claims(), secret, digest)
    allowed = {"rsa": ["RS256"], "ec": ["ES256"]}[which]
    jwk = {"rsa": keys.rsa_jwk, "ec": keys.ec_jwk}[which]
    v = JwtVerifier(policy(algorithms=allowed), jwks=key_set(keys, jwk, allowed=tuple(allowed)))
    assert reason_of(v, token) == "auth.bad_algorithm"
    # An HMAC policy keyed with its real secret does not accept it either.
    assert reason_of(hs_verifier(algorithms=[hs_alg]), token) == "auth.bad_signature"


@pytest.mark.parametrize("which,form", CONFUSION, ids=[f"{w}_{f}" for w, f in CONFUSION])
def test_public_key_refused_as_hmac_secret_at_build(keys: Keys, which: str, form: str) -> None:
    with pytest.raises(JwtConfigError):
        JwtVerifier(policy(), hs_secret=keys.public_forms(which)[form])


# ---- building -----------------------------------------------------------------------------------


def test_build_requires_matching_key_material(keys: Keys) -> None:
    with pytest.raises(JwtConfigError):
        JwtVerifier(policy(), hs_secret=None)
    with pytest.raises(JwtConfigError):
        JwtVerifier(policy(algorithms=["RS256"]), hs_secret=HS_SECRET)
    with pytest.raises(JwtConfigError):
        JwtVerifier(policy(), hs_secret="")


# ---- time: leeway and maximum age ---------------------------------------------------------------

TIME_CASES = [
    pytest.param({"exp": NOW - 29}, {}, None, id="exp_within_leeway"),
    pytest.param({"exp": NOW - 1}, {"leeway_seconds": 0}, "auth.expired", id="exp_no_leeway"),
    pytest.param({"exp": NOW + 1}, {"leeway_seconds": 0}, None, id="exp_just_ahead"),
    pytest.param({"nbf": NOW + 30}, {}, None, id="nbf_within_leeway"),
    pytest.param({"nbf": NOW + 1}, {"leeway_seconds": 0}, "auth.not_yet_valid", id="nbf_no_leeway"),
    pytest.param({"iat": NOW + 30}, {}, None, id="iat_within_leeway"),
    pytest.param({"iat": NOW - 600}, {"max_age_seconds": 600}, None, id="max_age_edge"),
    pytest.param({"iat": NOW - 631}, {"max_age_seconds": 600}, "auth.too_old", id="too_old"),
    pytest.param({"iat": None}, {"max_age_seconds": 600}, "auth.missing_claim", id="max_age_needs_iat"),
    pytest.param({"exp": NOW + 10**12}, {}, None, id="far_future_exp"),
    pytest.param({"exp": 10**400}, {}, None, id="huge_int_exp"),
]


@pytest.mark.parametrize("claim_over,policy_over,reason", TIME_CASES)
def test_time_claims(claim_over: dict[str, Any], policy_over: dict[str, Any], reason: str | None) -> None:
    v = hs_verifier(**policy_over)
    token = hs_sign(_HS, claims(**claim_over), SECRET)
    if reason is None:
        assert v.verify(token, now=NOW)["sub"] == "user-1"
    else:
        assert reason_of(v, token) == reason


def test_no_audience_configured_accepts_token_without_aud() -> None:
    v = hs_verifier(audience=None, issuer=None)
    assert v.verify(hs_token(aud=None, iss=None), now=NOW)["sub"] == "user-1"
    assert reason_of(v, hs_token()) == "auth.bad_audience"  # addressed to someone we are not


def test_required_claims_from_policy() -> None:
    v = hs_verifier(required_claims=["exp", "sub", "org_id"])
    assert reason_of(v, hs_token(org_id=None)) == "auth.missing_claim"


def test_a_subject_of_256_characters_is_the_longest_accepted() -> None:
    """The bound is the identity contract's (1..256 characters, counted as characters, not bytes)."""
    v = hs_verifier()
    assert v.verify(hs_token(sub="u" * 256), now=NOW)["sub"] == "u" * 256
    assert v.verify(hs_token(sub="é" * 256), now=NOW)["sub"] == "é" * 256
    assert v.verify(hs_token(sub="u"), now=NOW)["sub"] == "u"


def test_garbage_never_escapes_as_other_exception(keys: Keys) -> None:
    """Random mutations of valid tokens: only Unauthorized ever comes out."""
    import random

    rnd = random.Random(7)
    verifiers = [hs_verifier(), asym_verifier(keys)]
    tokens = [
        hs_token(),
        rs_token(keys),
        rs_token(keys, "ES256", kid="ec-1"),
        rs_token(keys, "EdDSA", kid="ed-1"),
    ]
    alphabet = "ABCxyz019-_.=+/ \x00é"
    seen = 0
    for _ in range(1500):
        t = list(rnd.choice(tokens))
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(t))
            t[i] = rnd.choice(alphabet)
        for v in verifiers:
            try:
                v.verify("".join(t), now=NOW)
            except Unauthorized as exc:
                assert exc.reason.startswith("auth.")
                seen += 1
    assert seen > 0


# ---- client-visible detail of every refusal (RFC 9457 `detail` member) --------------------------

# The `detail` of a 401 goes to the client in the problem+json body next to `reason`; both are a
# stable contract (clients and runbooks match on them), and a refusal must never fall back to the
# generic "Unauthorized" detail or to the generic `auth.invalid_token` reason.
DETAIL_CASES = [
    pytest.param({}, lambda k: "x" * 9000, "auth.token_too_large", "token too large", id="too_large"),
    pytest.param({}, lambda k: "a.b", "auth.malformed", "token is not a compact JWS", id="not_compact"),
    pytest.param(
        {}, lambda k: _raw(b'{"alg":"HS256","alg":"none"}'), "auth.malformed", "token header is not valid",
        id="header_dup",
    ),
    pytest.param(
        {}, lambda k: _raw(b'{"alg":"none"}'), "auth.bad_algorithm", "token algorithm not accepted", id="alg_none"
    ),
    pytest.param(
        {}, lambda k: hs_token({"jku": "https://evil.test/jwks"}), "auth.bad_header",
        "token carries a key or key reference", id="jku",
    ),
    pytest.param(
        {}, lambda k: hs_token({"crit": ["exp"]}), "auth.bad_header", "token requires an unsupported extension",
        id="crit",
    ),
    pytest.param(
        {}, lambda k: hs_token({"b64": False}), "auth.bad_header", "unencoded payloads are not accepted", id="b64"
    ),
    pytest.param({}, lambda k: hs_token({"kid": 7}), "auth.bad_header", "token kid is not a string", id="kid_int"),
    pytest.param(
        # "eyJ9B" would decode like "eyJ9" plus non-zero trailing bits: not the canonical encoding
        {}, lambda k: f"{seg(_HS)}.{seg(claims())}B.AAAA", "auth.malformed", "token is not valid base64url",
        id="payload_non_canonical",
    ),
    pytest.param(
        {}, lambda k: hs_token().rsplit(".", 1)[0] + ".", "auth.malformed", "token has no signature",
        id="no_signature",
    ),
    pytest.param(
        {}, lambda k: hs_sign(_HS, claims(), b"another-secret-0123456789-0123456789"), "auth.bad_signature",
        "token signature is not valid", id="bad_signature",
    ),
    pytest.param(
        {}, lambda k: hs_sign(_HS, b"[1]", SECRET), "auth.malformed", "token payload is not a JSON object",
        id="payload_array",
    ),
    pytest.param(
        {}, lambda k: hs_token(exp=True), "auth.malformed", "claim exp is not a number", id="exp_bool"
    ),
    pytest.param(
        # JSON 1e400 parses to float("inf"): an exp that never comes
        {}, lambda k: hs_sign(_HS, b'{"sub":"u","exp":1e400}', SECRET), "auth.malformed",
        "claim exp is not a number", id="exp_infinite",
    ),
    pytest.param({}, lambda k: hs_token(sub=None), "auth.missing_claim", "token has no sub claim", id="no_sub"),
    pytest.param({}, lambda k: hs_token(exp=NOW - 31), "auth.expired", "token expired", id="expired"),
    pytest.param(
        {}, lambda k: hs_token(nbf=NOW + 31), "auth.not_yet_valid", "token is not valid yet", id="nbf_future"
    ),
    pytest.param(
        {}, lambda k: hs_token(iat=NOW + 31), "auth.iat_in_future", "token was issued in the future",
        id="iat_future",
    ),
    pytest.param(
        {"max_age_seconds": 600}, lambda k: hs_token(iat=None), "auth.missing_claim", "token has no iat claim",
        id="max_age_no_iat",
    ),
    pytest.param(
        {"max_age_seconds": 600}, lambda k: hs_token(iat=NOW - 631), "auth.too_old", "token is too old",
        id="too_old",
    ),
    pytest.param(
        {}, lambda k: hs_token(iss="https://evil.test"), "auth.bad_issuer", "token issuer not accepted",
        id="bad_issuer",
    ),
    pytest.param(
        {}, lambda k: hs_token(aud="other"), "auth.bad_audience", "token audience not accepted", id="bad_audience"
    ),
    pytest.param(
        {"audience": None}, lambda k: hs_token(), "auth.bad_audience", "token audience not accepted",
        id="aud_but_none_configured",
    ),
    pytest.param({}, lambda k: hs_token(sub=42), "auth.malformed", "claim sub is not a string", id="sub_int"),
    pytest.param({}, lambda k: hs_token(sub=None), "auth.missing_claim", "token has no sub claim", id="sub_absent"),
    pytest.param(
        {}, lambda k: hs_token(sub=""), "auth.malformed", "claim sub is empty or over 256 characters", id="sub_empty"
    ),
    pytest.param(
        {}, lambda k: hs_token(sub="u" * 257), "auth.malformed", "claim sub is empty or over 256 characters",
        id="sub_over_256",
    ),
    pytest.param(
        {"asym": True}, lambda k: rs_token(k, kid="nope"), "auth.unknown_kid", "token key is not known",
        id="unknown_kid",
    ),
    pytest.param(
        {"asym": True}, lambda k: rs_token(k, kid="ec-1"), "auth.bad_algorithm",
        "token algorithm does not fit its key", id="alg_not_of_key",
    ),
]


@pytest.mark.parametrize("policy_over,build,reason,detail", DETAIL_CASES)
def test_refusal_reason_and_detail(
    keys: Keys, policy_over: dict[str, Any], build: Builder, reason: str, detail: str
) -> None:
    """Each refusal names its own reason and detail; none degrades to the generic 401."""
    over = dict(policy_over)
    v = asym_verifier(keys) if over.pop("asym", False) else hs_verifier(**over)
    with pytest.raises(Unauthorized) as info:
        v.verify(build(keys), now=NOW)
    assert (info.value.reason, info.value.detail) == (reason, detail)


def test_cached_token_refusals_keep_their_detail() -> None:
    """A token refused from the cache tells the client the same as a fresh refusal would."""
    v = hs_verifier(max_age_seconds=600)
    token = hs_token(iat=NOW - 10, exp=NOW + 6000)
    v.verify(token, now=NOW)
    with pytest.raises(Unauthorized) as info:
        v.verify(token, now=NOW + 700)
    assert (info.value.reason, info.value.detail) == ("auth.too_old", "token is too old")
    v.verify(token, now=NOW)
    with pytest.raises(Unauthorized) as info:
        v.verify(token, now=NOW + 6100)
    assert (info.value.reason, info.value.detail) == ("auth.expired", "token expired")


def test_fractional_time_claims_are_numbers() -> None:
    """RFC 7519 NumericDate may be fractional: a finite float exp/iat/nbf is valid, not malformed."""
    token = hs_sign(_HS, claims(exp=NOW + 600.5, iat=NOW - 0.5, nbf=NOW - 1.25), SECRET)
    assert hs_verifier().verify(token, now=NOW)["sub"] == "user-1"


def test_max_age_edge_includes_leeway() -> None:
    """Exactly max_age + leeway old is still accepted; one second more is too old."""
    v = hs_verifier(max_age_seconds=600)
    assert v.verify(hs_token(iat=NOW - 630), now=NOW)["sub"] == "user-1"
    assert reason_of(v, hs_token(iat=NOW - 631)) == "auth.too_old"


def test_header_with_nan_is_malformed() -> None:
    """NaN/Infinity are not JSON: a header using them is refused, as a strict parser would."""
    header = b'{"alg":"HS256","x":NaN}'
    token = f"{b64(header)}.{seg(claims())}.AAAA"
    with pytest.raises(Unauthorized) as info:
        hs_verifier().verify(token, now=NOW)
    assert (info.value.reason, info.value.detail) == ("auth.malformed", "token header is not valid")


def test_token_of_exactly_max_bytes_is_accepted() -> None:
    """The size cap is inclusive: a token of max_token_bytes passes, one byte more is refused."""
    token = hs_token(pad="p" * 300)
    v = hs_verifier(max_token_bytes=len(token))
    assert v.verify(token, now=NOW)["sub"] == "user-1"
    assert reason_of(hs_verifier(max_token_bytes=len(token) - 1), token) == "auth.token_too_large"


def test_key_pyjwt_cannot_use_is_a_bad_signature_not_an_accept(keys: Keys) -> None:
    """A crypto-library exception during verification (here: a key source yielding an unusable key
    object) must end as auth.bad_signature, never as an accepted token."""
    source = StaticKeySet({"rsa-1": VerifyKey("rsa-1", object(), frozenset({"RS256"}))})
    v = JwtVerifier(policy(algorithms=["RS256"]), jwks=source)
    with pytest.raises(Unauthorized) as info:
        v.verify(rs_token(keys), now=NOW)
    assert info.value.reason == "auth.bad_signature"


def test_build_errors_name_the_missing_key_material(keys: Keys) -> None:
    """Operators are told which key material is missing, not a bare error."""
    with pytest.raises(JwtConfigError, match="^an HMAC algorithm is allowed but no secret is configured$"):
        JwtVerifier(policy(algorithms=["HS256"]))
    no_jwks = r"^an asymmetric algorithm is allowed but no key set \(JWKS\) is configured$"
    with pytest.raises(JwtConfigError, match=no_jwks):
        JwtVerifier(policy(algorithms=["RS256"]))
    with pytest.raises(JwtConfigError, match="unusable HMAC secret"):
        JwtVerifier(policy(), hs_secret=keys.public_forms("rsa")["pem"])
