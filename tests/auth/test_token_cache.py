"""The verified-token cache: bounded, exact-match, never past exp, honours max age and key rotation."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gateway.auth.config import JwtPolicy
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import VerifyKey, load_jwk
from gateway.errors import Unauthorized
from tests.auth.factories import NOW, Keys, hs_token, hs_verifier, policy, rs_token


def reason_of(v: JwtVerifier, token: str, now: float) -> str:
    with pytest.raises(Unauthorized) as info:
        v.verify(token, now=now)
    return info.value.reason


def test_cached_token_still_expires() -> None:
    v = hs_verifier()
    token = hs_token(exp=NOW + 60)
    assert v.verify(token, now=NOW)["sub"] == "user-1"
    assert v.cache_len == 1
    assert v.verify(token, now=NOW + 60 + 29)["sub"] == "user-1"  # within leeway, from the cache
    assert reason_of(v, token, NOW + 60 + 30) == "auth.expired"
    assert v.cache_len == 0  # evicted, and stays refused
    assert reason_of(v, token, NOW + 60 + 30) == "auth.expired"


def test_cached_token_honours_max_age() -> None:
    v = hs_verifier(max_age_seconds=100)
    token = hs_token(iat=NOW, exp=NOW + 3600)
    v.verify(token, now=NOW)
    assert v.verify(token, now=NOW + 130)["sub"] == "user-1"
    assert reason_of(v, token, NOW + 131) == "auth.too_old"


def test_cache_is_exact_match_only() -> None:
    v = hs_verifier()
    token = hs_token()
    v.verify(token, now=NOW)
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
    assert reason_of(v, forged, NOW) == "auth.bad_signature"


def test_failures_are_not_cached() -> None:
    v = hs_verifier()
    for token in (hs_token(aud="other"), hs_token() + "x", "garbage"):
        with pytest.raises(Unauthorized):
            v.verify(token, now=NOW)
    assert v.cache_len == 0


def test_not_yet_valid_token_is_not_cached_then_accepted_later() -> None:
    v = hs_verifier(leeway_seconds=0)
    token = hs_token(nbf=NOW + 10)
    assert reason_of(v, token, NOW) == "auth.not_yet_valid"
    assert v.verify(token, now=NOW + 10)["sub"] == "user-1"


def test_cache_is_bounded_lru() -> None:
    v = hs_verifier(cache_size=3)
    tokens = [hs_token(sub=f"user-{i}") for i in range(5)]
    for t in tokens[:3]:
        v.verify(t, now=NOW)
    v.verify(tokens[0], now=NOW)  # touch: tokens[1] is now the oldest
    for t in tokens[3:]:
        v.verify(t, now=NOW)
    assert v.cache_len == 3
    assert set(v._cache) == {tokens[0], tokens[3], tokens[4]}


def test_cache_disabled() -> None:
    v = hs_verifier(cache_size=0)
    v.verify(hs_token(), now=NOW)
    assert v.cache_len == 0


def test_returned_claims_do_not_alias_the_cache() -> None:
    v = hs_verifier()
    token = hs_token()
    first = v.verify(token, now=NOW)
    first["org_id"] = "org-b"
    assert v.verify(token, now=NOW)["org_id"] == "org-a"


class MutableKeys:
    """A key source whose key set can be swapped, as a JWKS refresh does."""

    def __init__(self, keys: dict[str, VerifyKey]) -> None:
        self.current = keys
        self.refreshes = 0

    @property
    def keys(self) -> Mapping[str, VerifyKey]:
        return self.current

    def request_refresh(self) -> bool:
        self.refreshes += 1
        return True


def test_key_removed_from_jwks_stops_cached_tokens(keys: Keys) -> None:
    source = MutableKeys({"rsa-1": load_jwk(keys.rsa_jwk, frozenset({"RS256"}))})
    v = JwtVerifier(JwtPolicy(**{**policy().model_dump(), "algorithms": ["RS256"]}), jwks=source)
    token = rs_token(keys)
    v.verify(token, now=NOW)
    assert v.cache_len == 1
    source.current = {}
    assert reason_of(v, token, NOW) == "auth.unknown_kid"
    assert source.refreshes == 1
    assert v.cache_len == 0


def test_key_removed_from_multi_key_jwks_stops_cached_tokens(keys: Keys) -> None:
    """With several keys, the cache must remember *which* key vouched (by kid): removing that key
    refuses its cached tokens while tokens of the other keys stay valid."""
    source = MutableKeys({
        "rsa-1": load_jwk(keys.rsa_jwk, frozenset({"RS256"})),
        "ec-1": load_jwk(keys.ec_jwk, frozenset({"ES256"})),
    })
    pol = JwtPolicy(**{**policy().model_dump(), "algorithms": ["RS256", "ES256"]})
    v = JwtVerifier(pol, jwks=source)
    rs, es = rs_token(keys), rs_token(keys, "ES256", kid="ec-1")
    v.verify(rs, now=NOW)
    v.verify(es, now=NOW)
    source.current = {"ec-1": source.current["ec-1"]}
    assert reason_of(v, rs, NOW) == "auth.unknown_kid"
    assert v.verify(es, now=NOW)["sub"] == "user-1"


def test_key_removed_stops_cached_tokens_without_kid(keys: Keys) -> None:
    """A kid-less token accepted because the key set had one key: once that key is gone the cached
    token is refused (401, never another exception)."""
    source = MutableKeys({"rsa-1": load_jwk(keys.rsa_jwk, frozenset({"RS256"}))})
    v = JwtVerifier(JwtPolicy(**{**policy().model_dump(), "algorithms": ["RS256"]}), jwks=source)
    token = rs_token(keys, kid=None)
    v.verify(token, now=NOW)
    assert v.cache_len == 1
    source.current = {}
    assert reason_of(v, token, NOW) == "auth.unknown_kid"
