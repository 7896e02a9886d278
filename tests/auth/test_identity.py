"""IdentitySigner (X-Gateway-Identity), claim_at, and the development token helper."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from gateway.auth.dev import mint_dev_token
from gateway.auth.identity import IdentitySigner, claim_at
from gateway.auth.jwt_verifier import JwtVerifier
from tests.auth.factories import NOW, policy

SECRET = "identity-secret-0123456789-0123456789"


def decode(token: str, audience: str = "upstream") -> dict[str, Any]:
    return jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience=audience,
        issuer="edge-gateway",
        options={"verify_exp": False},
    )


def test_user_identity_carries_verified_claims() -> None:
    claims = {"sub": "u1", "app_metadata": {"org_id": "org-a", "role": "admin"}, "org_id": "ignored"}
    token = IdentitySigner(SECRET).mint(
        request_id="req-1",
        route_id="agents.list",
        claims=claims,
        org_claim_path="app_metadata.org_id",
        role_claim="app_metadata.role",
        now=NOW,
    )
    out = decode(token)
    assert out == {
        "iss": "edge-gateway",
        "aud": "upstream",
        "iat": NOW,
        "exp": NOW + 30,
        "rid": "req-1",
        "kind": "user",
        "sub": "u1",
        "org_id": "org-a",
        "org_role": "admin",
    }
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_service_identity_for_public_routes() -> None:
    out = decode(
        IdentitySigner(SECRET, audience="stub").mint(request_id="r", route_id="health", claims=None), "stub"
    )
    assert out["kind"] == "service" and out["sub"] == "gateway:health"
    assert "org_id" not in out
    assert 0 < out["exp"] - out["iat"] <= 60


def test_missing_or_odd_claims_become_null() -> None:
    token = IdentitySigner(SECRET).mint(
        request_id="r", route_id="x", claims={"sub": "u", "org_id": {"nested": 1}, "org_role": 7}, now=NOW
    )
    out = decode(token)
    assert out["org_id"] is None and out["org_role"] == "7"


def test_identity_is_fresh_and_verifiable() -> None:
    token = IdentitySigner(SECRET, lifetime=60).mint(request_id="r", route_id="x", claims={"sub": "u"})
    out = jwt.decode(token, SECRET, algorithms=["HS256"], audience="upstream")  # checks exp against now
    assert out["exp"] - out["iat"] == 60


def test_identity_signed_with_other_secret_fails() -> None:
    token = IdentitySigner("another-secret-0123456789-0123456789").mint(
        request_id="r", route_id="x", claims=None
    )
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token)


@pytest.mark.parametrize("lifetime", [0, 61, 3600])
def test_lifetime_capped(lifetime: int) -> None:
    with pytest.raises(ValueError):
        IdentitySigner(SECRET, lifetime=lifetime)


def test_empty_secret_refused() -> None:
    with pytest.raises(ValueError):
        IdentitySigner("")


CLAIMS = {
    "org_id": "top",
    "app_metadata": {"org_id": "nested", "deep": {"x": 1}},
    "https://ns.example/org": "namespaced",
    "list": [1, 2],
}


@pytest.mark.parametrize(
    "path,expected",
    [
        pytest.param("org_id", "top", id="top_level"),
        pytest.param("app_metadata.org_id", "nested", id="dotted"),
        pytest.param("app_metadata.deep.x", 1, id="deeper"),
        # A top-level member whose name contains dots never stands in for the dotted path.
        pytest.param("https://ns.example/org", None, id="namespaced_with_dots_not_a_member"),
        pytest.param("app_metadata.missing", None, id="missing_leaf"),
        pytest.param("nope.org_id", None, id="missing_parent"),
        pytest.param("org_id.x", None, id="through_scalar"),
        pytest.param("list.0", None, id="no_list_indexing"),
    ],
)
def test_claim_at(path: str, expected: Any) -> None:
    assert claim_at(CLAIMS, path) == expected


def test_claim_at_none_claims() -> None:
    assert claim_at(None, "org_id") is None


def test_dev_token_verifies_with_default_policy() -> None:
    secret = "dev-only-jwt-secret-change-me-0123456789abcdef"
    token = mint_dev_token(
        secret, "alice", "org-a", role="admin", issuer="https://issuer.test", extra={"scope": "x"}
    )
    out = JwtVerifier(policy(), hs_secret=secret).verify(token)
    assert (out["sub"], out["org_id"], out["org_role"], out["aud"], out["scope"]) == (
        "alice",
        "org-a",
        "admin",
        "authenticated",
        "x",
    )
    assert out["exp"] - out["iat"] == 3600


def test_dev_token_rejects_nonpositive_ttl() -> None:
    with pytest.raises(ValueError):
        mint_dev_token("s" * 32, "a", "o", ttl=0)


def test_cached_identity_parts_never_mix_users() -> None:
    """The signer caches the identity part of the payload; each user still gets their own."""
    import jwt as pyjwt

    from gateway.auth import IdentitySigner

    signer = IdentitySigner("k" * 40)
    users = [("alice", "org-a", "admin"), ("bob", "org-b", "viewer"), ("alice", "org-b", "member")] * 2
    for i, (sub, org, role) in enumerate(users):
        token = signer.mint(request_id=f"rid-{i:08d}", route_id="r",
                            claims={"sub": sub, "org_id": org, "org_role": role})
        got = pyjwt.decode(token, "k" * 40, algorithms=["HS256"], audience="upstream")
        assert (got["sub"], got["org_id"], got["org_role"], got["rid"]) == (sub, org, role, f"rid-{i:08d}")
    service = pyjwt.decode(signer.mint(request_id="rid-x", route_id="webhooks.kommo", claims=None),
                           "k" * 40, algorithms=["HS256"], audience="upstream")
    assert service["kind"] == "service" and service["sub"] == "gateway:webhooks.kommo" and "org_id" not in service


def test_claim_at_reads_any_mapping_and_never_a_non_mapping() -> None:
    from types import MappingProxyType

    nested = MappingProxyType({"app_metadata": MappingProxyType({"org_id": "org-m"})})
    assert claim_at(nested, "app_metadata.org_id") == "org-m"  # not only dict: any Mapping
    assert claim_at({"app_metadata": ["org_id"]}, "app_metadata.org_id") is None
    assert claim_at({"app_metadata": "org_id"}, "app_metadata.org_id") is None
    assert claim_at({"app_metadata.org_id": "org-b"}, "app_metadata.org_id") is None


def test_identity_is_an_unpadded_compact_jws() -> None:
    """RFC 7515 compact form has no base64 padding: a strict upstream verifier (like ours) refuses
    '=' in a segment, so every assertion must be three unpadded base64url segments."""
    import re

    signer = IdentitySigner(SECRET)
    for rid in ("r", "r1", "r12", "r123"):  # payload lengths of every residue mod 3
        token = signer.mint(request_id=rid, route_id="x", claims={"sub": "u"}, now=NOW)
        assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token), token
        assert decode(token)["rid"] == rid


def test_service_identities_of_different_routes_never_mix() -> None:
    """The cached payload part of a service identity is per route: route b is never told it is a."""
    signer = IdentitySigner(SECRET)
    subs = [decode(signer.mint(request_id="r", route_id=route, claims=None, now=NOW))["sub"]
            for route in ("a", "b", "a")]
    assert subs == ["gateway:a", "gateway:b", "gateway:a"]


@pytest.mark.parametrize(
    "sub,expected",
    [("u1", "u1"), (123, "123"), (True, None), (1.5, None), (["u1"], None), ({"id": "u1"}, None)],
)
def test_subject_is_a_string_or_int_else_null(sub: Any, expected: str | None) -> None:
    """Only string (or integer) subjects reach the upstream; a bool, float or structure becomes null
    instead of a made-up subject such as "True" or "['u1']"."""
    token = IdentitySigner(SECRET).mint(request_id="r", route_id="x", claims={"sub": sub}, now=NOW)
    out = jwt.decode(token, SECRET, algorithms=["HS256"], audience="upstream",
                     options={"verify_exp": False, "verify_sub": False})  # pyjwt refuses a null sub
    assert out["sub"] == expected


def test_bytes_secret_signs_like_its_text() -> None:
    """A secret given as bytes is used as is (the same key as its text form)."""
    token = IdentitySigner(SECRET.encode()).mint(request_id="r", route_id="x", claims={"sub": "u"}, now=NOW)
    assert decode(token)["sub"] == "u"


def test_one_second_lifetime_is_allowed() -> None:
    """1..60 s inclusive: the shortest lifetime is accepted and honoured."""
    token = IdentitySigner(SECRET, lifetime=1).mint(request_id="r", route_id="x", claims=None, now=NOW)
    out = decode(token)
    assert out["exp"] - out["iat"] == 1


def test_signer_config_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="^identity secret is empty$"):
        IdentitySigner(b"")
    with pytest.raises(ValueError, match=r"identity lifetime must be 1\.\.60 seconds"):
        IdentitySigner(SECRET, lifetime=61)
