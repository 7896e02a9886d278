"""Key sources bound to their algorithms: secret only, JWKS only, both (migration), and the set-up
errors when a source and the allowlist do not fit."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway.auth.config import DEFAULT_ALGORITHMS, JwtConfigError, JwtPolicy
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.sources import KeySources, bind_algorithms, build_verifier, describe, jwks_url_problem
from gateway.errors import Unauthorized
from tests.auth.factories import HS_SECRET, NOW, Keys, claims, hs_sign, hs_token, key_set, rs_token

JWKS = "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
SHIPPED = JwtPolicy(algorithms=list(DEFAULT_ALGORITHMS), issuer="https://issuer.test", audience="authenticated")


def reason(v: JwtVerifier, token: str) -> str | None:
    try:
        v.verify(token, now=NOW)
    except Unauthorized as exc:
        return exc.reason
    return None


def verifier(keys: Keys, secret: str | None, jwks: bool, policy: JwtPolicy = SHIPPED) -> JwtVerifier:
    sources = KeySources(secret=secret, jwks_url=JWKS if jwks else None)
    return build_verifier(policy, sources, key_set(keys) if jwks else None)


def test_shipped_allowlist_is_every_family_each_bound_to_a_source() -> None:
    assert JwtPolicy().algorithms == ["HS256", "RS256", "ES256", "EdDSA"]
    both = bind_algorithms(SHIPPED, KeySources(secret=HS_SECRET, jwks_url=JWKS))
    assert both.hmac == ("HS256",) and both.asymmetric == ("RS256", "ES256", "EdDSA")
    assert bind_algorithms(SHIPPED, KeySources(secret=HS_SECRET, jwks_url=None)).all == ("HS256",)
    assert bind_algorithms(SHIPPED, KeySources(secret=None, jwks_url=JWKS)).all == ("RS256", "ES256", "EdDSA")


def test_secret_only_accepts_hs256_and_refuses_asymmetric(keys: Keys) -> None:
    v = verifier(keys, HS_SECRET, jwks=False)
    assert reason(v, hs_token()) is None
    assert reason(v, rs_token(keys)) == "auth.bad_algorithm"
    assert reason(v, rs_token(keys, "ES256", kid="ec-1")) == "auth.bad_algorithm"


@pytest.mark.parametrize("alg,kid", [("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")])
def test_jwks_only_accepts_asymmetric_by_kid_and_refuses_hs256(keys: Keys, alg: str, kid: str) -> None:
    v = verifier(keys, None, jwks=True)
    assert reason(v, rs_token(keys, alg, kid=kid)) is None
    assert reason(v, rs_token(keys, alg, kid="not-in-set")) == "auth.unknown_kid"
    assert reason(v, hs_token()) == "auth.bad_algorithm"


def test_both_sources_accept_both_kinds(keys: Keys) -> None:
    v = verifier(keys, HS_SECRET, jwks=True)
    assert reason(v, hs_token()) is None
    assert reason(v, rs_token(keys)) is None
    assert reason(v, rs_token(keys, "ES256", kid="ec-1")) is None


CONFUSION = [
    pytest.param("rsa", "pem", "rsa-1", id="hs256_keyed_with_rsa_pem"),
    pytest.param("rsa", "jwk", "rsa-1", id="hs256_keyed_with_rsa_jwk"),
    pytest.param("ec", "pem", "ec-1", id="hs256_keyed_with_ec_pem"),
    pytest.param("ec", "der", "ec-1", id="hs256_keyed_with_ec_der"),
]


@pytest.mark.parametrize("which,form,kid", CONFUSION)
def test_migration_period_keeps_algorithm_confusion_impossible(keys: Keys, which: str, form: str,
                                                               kid: str) -> None:
    """With both sources, an HS256 token MACed with a JWKS public key (and naming its kid) is
    checked against the secret only, so it fails."""
    v = verifier(keys, HS_SECRET, jwks=True)
    forged = hs_sign({"alg": "HS256", "kid": kid}, claims(), keys.public_forms(which)[form])
    assert reason(v, forged) == "auth.bad_signature"
    forged512 = hs_sign({"alg": "HS512", "kid": kid}, claims(), keys.public_forms(which)[form], hashlib.sha512)
    assert reason(v, forged512) == "auth.bad_algorithm"  # not on the allowlist


def test_migration_period_secret_never_verifies_an_asymmetric_alg(keys: Keys) -> None:
    """An "RS256" token whose signature is an HMAC with the real secret is not accepted."""
    v = verifier(keys, HS_SECRET, jwks=True)
    forged = hs_sign({"alg": "RS256", "kid": "rsa-1"}, claims(), HS_SECRET.encode())
    assert reason(v, forged) == "auth.bad_signature"
    forged_no_kid = hs_sign({"alg": "ES256"}, claims(), HS_SECRET.encode())
    assert reason(v, forged_no_kid) == "auth.unknown_kid"


def test_policy_allowlist_still_narrows(keys: Keys) -> None:
    only_es = JwtPolicy(algorithms=["HS256", "ES256"], issuer="https://issuer.test", audience="authenticated")
    v = verifier(keys, HS_SECRET, jwks=True, policy=only_es)
    assert reason(v, rs_token(keys, "ES256", kid="ec-1")) is None
    assert reason(v, rs_token(keys, "RS256", kid="rsa-1")) == "auth.bad_algorithm"


MISFITS: list[Any] = [
    pytest.param(["HS256"], None, None, "no JWT key source", id="no_source"),
    pytest.param(["RS256"], HS_SECRET, None, "GATEWAY_JWT_SECRET is set", id="rs_only_with_secret"),
    pytest.param(["HS256"], None, JWKS, "GATEWAY_JWT_JWKS_URL is set", id="hs_only_with_jwks"),
]


@pytest.mark.parametrize("algorithms,secret,jwks,needle", MISFITS)
def test_sources_that_do_not_fit_the_allowlist_are_set_up_errors(algorithms: list[str], secret: str | None,
                                                                  jwks: str | None, needle: str) -> None:
    with pytest.raises(JwtConfigError) as exc:
        bind_algorithms(JwtPolicy(algorithms=algorithms), KeySources(secret=secret, jwks_url=jwks))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_asymmetric_policy_without_jwks_names_the_variable() -> None:
    # The development default secret (not explicit) is simply not used by an RS256-only policy.
    with pytest.raises(JwtConfigError, match="needs GATEWAY_JWT_JWKS_URL"):
        bind_algorithms(JwtPolicy(algorithms=["RS256"]), KeySources(secret="dev", jwks_url=None,
                                                                     secret_explicit=False))


@pytest.mark.parametrize("url,production,needle", [
    pytest.param("notaurl", False, "https://", id="not_a_url"),
    pytest.param("ftp://x.test/jwks", False, "https://", id="ftp"),
    pytest.param("https://u:p@x.test/jwks", False, "credentials", id="userinfo"),
    pytest.param("https://x.test:99999/jwks", False, "not a valid URL", id="bad_port"),
    pytest.param("http://ref.supabase.co/auth/v1/.well-known/jwks.json", True, "https:// in production",
                 id="http_in_production"),
])
def test_jwks_url_problems(url: str, production: bool, needle: str) -> None:
    problem = jwks_url_problem(url, production)
    assert problem is not None and needle in problem and "GATEWAY_JWT_JWKS_URL" in problem


def test_jwks_url_accepted() -> None:
    assert jwks_url_problem(JWKS, True) is None
    assert jwks_url_problem("http://127.0.0.1:8999/jwks.json", False) is None  # development


def test_describe_never_prints_the_secret() -> None:
    lines = describe(SHIPPED, KeySources(secret=HS_SECRET, jwks_url=JWKS))
    assert lines == ["HS256 with GATEWAY_JWT_SECRET", f"RS256, ES256, EdDSA with keys from {JWKS} (by kid)"]
    assert HS_SECRET not in " ".join(lines)


@pytest.mark.parametrize("roles,needle", [
    pytest.param([], "at least one", id="empty"),
    pytest.param(["admin", "admin"], "twice", id="duplicate"),
    pytest.param([" admin"], "spaces", id="padded"),
])
def test_declared_roles_are_validated(roles: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        JwtPolicy(roles=roles)


@pytest.mark.parametrize("url", [
    pytest.param("https://token@x.test/jwks", id="username_only"),
    pytest.param("https://:secret@x.test/jwks", id="password_only"),
    pytest.param("https://u:p@x.test/jwks", id="both"),
])
def test_jwks_url_with_any_credential_part_is_refused(url: str) -> None:
    assert jwks_url_problem(url, False) == "GATEWAY_JWT_JWKS_URL must not carry credentials"


def test_jwks_url_problem_messages_read_exactly() -> None:
    assert jwks_url_problem("ftp://x.test/jwks", False) == (
        "GATEWAY_JWT_JWKS_URL must be an https:// URL, got 'ftp://x.test/jwks'")
    assert jwks_url_problem("http://x.test/jwks", True) == (
        "GATEWAY_JWT_JWKS_URL must use https:// in production (keys fetched over http can be swapped)")


MISFIT_MESSAGES: list[Any] = [
    pytest.param(["HS256"], None, None, True,
                 "no JWT key source: set GATEWAY_JWT_SECRET (HS256) or GATEWAY_JWT_JWKS_URL (RS256, ES256, EdDSA)",
                 id="no_source"),
    pytest.param(["HS256", "HS384"], None, JWKS, True,
                 "GATEWAY_JWT_JWKS_URL is set but auth.jwt.algorithms ['HS256', 'HS384'] allows no asymmetric "
                 "algorithm (add RS256, ES256 or EdDSA, or unset the variable)",
                 id="hs_only_with_jwks"),
    pytest.param(["RS256", "ES256"], HS_SECRET, None, True,
                 "GATEWAY_JWT_SECRET is set but auth.jwt.algorithms ['RS256', 'ES256'] allows no HMAC algorithm "
                 "(add HS256, or unset the variable)",
                 id="rs_only_with_secret"),
    pytest.param(["RS256", "EdDSA"], "dev", None, False,
                 "auth.jwt.algorithms ['RS256', 'EdDSA'] needs GATEWAY_JWT_JWKS_URL (no key source for them is "
                 "configured)",
                 id="rs_only_with_default_secret"),
]


@pytest.mark.parametrize("algorithms,secret,jwks,explicit,message", MISFIT_MESSAGES)
def test_set_up_error_messages_read_exactly(algorithms: list[str], secret: str | None, jwks: str | None,
                                            explicit: bool, message: str) -> None:
    sources = KeySources(secret=secret, jwks_url=jwks, secret_explicit=explicit)
    with pytest.raises(JwtConfigError) as exc:
        bind_algorithms(JwtPolicy(algorithms=algorithms), sources)
    assert str(exc.value) == message


def test_jwks_url_without_a_built_key_set_is_a_set_up_error() -> None:
    with pytest.raises(JwtConfigError) as exc:
        build_verifier(SHIPPED, KeySources(secret=None, jwks_url=JWKS), None)
    assert str(exc.value) == "GATEWAY_JWT_JWKS_URL is set but no key set was built for it"


class _RefreshingKeySet:
    """A key set that always claims a refresh brought new keys."""

    keys: dict[str, Any] = {}

    def request_refresh(self) -> bool:
        return True

    async def await_refresh(self) -> bool:
        return True


async def test_secret_only_verifier_never_waits_on_a_key_set_it_does_not_use() -> None:
    # A key set handed in without GATEWAY_JWT_JWKS_URL verifies nothing, so the verifier never
    # reports new keys (the caller would otherwise retry an HS256 token in vain).
    v = build_verifier(SHIPPED, KeySources(secret=HS_SECRET, jwks_url=None), _RefreshingKeySet())
    assert v.algorithms == ("HS256",)
    assert await v.await_new_keys() is False


def test_describe_names_the_development_default_secret() -> None:
    sources = KeySources(secret="dev", jwks_url=None, secret_explicit=False)
    assert describe(SHIPPED, sources) == ["HS256 with development default secret"]


def test_describe_lists_every_bound_hmac_algorithm() -> None:
    policy = JwtPolicy(algorithms=["HS256", "HS384", "HS512"])
    assert describe(policy, KeySources(secret=HS_SECRET, jwks_url=None)) == [
        "HS256, HS384, HS512 with GATEWAY_JWT_SECRET"]
