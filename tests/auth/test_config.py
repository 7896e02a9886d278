"""JwtPolicy: what the security team may write in `auth.jwt`, and what is refused at load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.auth.config import JwtPolicy


def test_defaults() -> None:
    p = JwtPolicy(algorithms=["RS256", "ES256"])
    assert (p.leeway_seconds, p.max_token_bytes, p.cache_size, p.required_claims) == (
        30,
        8192,
        10000,
        ["exp", "sub"],
    )
    assert (p.org_claim, p.role_claim, p.scope_claim) == ("org_id", "org_role", "scope")
    assert p.audiences == frozenset() and not p.uses_hmac


def test_audience_forms() -> None:
    assert JwtPolicy(algorithms=["HS256"], audience="a").audiences == {"a"}
    assert JwtPolicy(algorithms=["HS256"], audience=["a", "b"]).audiences == {"a", "b"}


def test_duplicate_algorithms_collapse() -> None:
    assert JwtPolicy(algorithms=["RS256", "RS256", "PS256"]).algorithms == ["RS256", "PS256"]


@pytest.mark.parametrize(
    "fields,needle",
    [
        pytest.param({"algorithms": ["none"]}, "none", id="none"),
        pytest.param({"algorithms": ["None"]}, "none", id="None"),
        pytest.param({"algorithms": ["NONE"]}, "none", id="NONE"),
        pytest.param({"algorithms": ["RS256", " nOnE "]}, "none", id="none_padded_mixed"),
        pytest.param({"algorithms": []}, "at least 1", id="empty"),
        pytest.param({"algorithms": ["hs256"]}, 'did you mean "HS256"', id="wrong_case"),
        pytest.param({"algorithms": ["ES256K"]}, "unknown algorithm", id="unsupported"),
        pytest.param({"algorithms": ["ES521"]}, "unknown algorithm", id="es521"),
        pytest.param({"algorithms": ["HS256"], "extra": 1}, "Extra inputs", id="extra_field"),
        pytest.param({"algorithms": ["HS256"], "required_claims": ["sub"]}, '"exp"', id="exp_not_required"),
        pytest.param({"algorithms": ["HS256"], "required_claims": ["exp"]}, '"sub"', id="sub_not_required"),
        pytest.param({"algorithms": ["HS256"], "required_claims": []}, '"exp"', id="nothing_required"),
        pytest.param(
            {"algorithms": ["HS256"], "org_claim": "app_metadata..org"}, "claim path", id="bad_path"
        ),
        pytest.param({"algorithms": ["HS256"], "role_claim": ""}, "claim path", id="empty_path"),
        pytest.param({"algorithms": ["HS256"], "audience": []}, "audience", id="empty_audience_list"),
        pytest.param({"algorithms": ["HS256"], "audience": ""}, "audience", id="empty_audience"),
        pytest.param({"algorithms": ["HS256"], "leeway_seconds": -1}, "greater than", id="negative_leeway"),
        pytest.param({"algorithms": ["HS256"], "max_token_bytes": 10}, "greater than", id="tiny_cap"),
        pytest.param({"algorithms": ["HS256"], "max_age_seconds": 0}, "greater than", id="zero_max_age"),
        pytest.param(
            {"algorithms": ["RS256"], "jwks_refresh_seconds": 10, "jwks_cooldown_seconds": 60},
            "cooldown",
            id="cooldown",
        ),
    ],
)
def test_refused_at_load(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        JwtPolicy(**fields)
    assert needle in str(info.value)


ALLOWED = ("['ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512', 'PS256', 'PS384', 'PS512', "
           "'RS256', 'RS384', 'RS512']")


def refusals(**fields: Any) -> list[str]:
    """The messages an operator reads when `auth.jwt` is refused at load."""
    with pytest.raises(ValidationError) as info:
        JwtPolicy(**fields)
    return [e["msg"] for e in info.value.errors()]


@pytest.mark.parametrize(
    "fields,message",
    [
        pytest.param({"algorithms": ["RS256", "none"]}, '"none" is never an acceptable algorithm', id="none"),
        pytest.param({"algorithms": ["ES256K"]}, f'unknown algorithm "ES256K"; allowed: {ALLOWED}', id="no_hint"),
        pytest.param({"algorithms": ["eddsa"]}, f'unknown algorithm "eddsa" (did you mean "EdDSA"?); allowed: {ALLOWED}',
                     id="hint"),
        pytest.param({"roles": []}, "roles must list at least one role (or be omitted)", id="no_roles"),
        pytest.param({"roles": ["admin", "viewer", "admin"]}, "roles lists a value twice", id="duplicate_role"),
        pytest.param({"roles": ["admin", ""]}, "role '' must be a non-empty name without surrounding spaces",
                     id="empty_role"),
        pytest.param({"roles": ["   "]}, "role '   ' must be a non-empty name without surrounding spaces",
                     id="blank_role"),
        pytest.param({"roles": ["admin "]}, "role 'admin ' must be a non-empty name without surrounding spaces",
                     id="trailing_space_role"),
        pytest.param({"audience": ["authenticated", ""]},
                     "audience must be a non-empty string or a non-empty list of them", id="empty_audience_in_list"),
        pytest.param({"required_claims": ["exp", "sub", ""]}, "required_claims entries must be non-empty",
                     id="empty_required_claim"),
        pytest.param({"required_claims": ["sub"]}, 'required_claims must include "exp"', id="exp_missing"),
        pytest.param({"org_claim": "app metadata"}, 'bad claim path "app metadata" (expected names separated by dots)',
                     id="claim_path_with_space"),
        pytest.param({"jwks_refresh_seconds": 30, "jwks_cooldown_seconds": 31},
                     "jwks_cooldown_seconds must not exceed jwks_refresh_seconds", id="cooldown_over_refresh"),
    ],
)
def test_refusal_messages_read_exactly(fields: dict[str, Any], message: str) -> None:
    assert refusals(**fields) == [f"Value error, {message}"]


def test_cooldown_may_equal_refresh() -> None:
    p = JwtPolicy(jwks_refresh_seconds=30, jwks_cooldown_seconds=30)
    assert (p.jwks_refresh_seconds, p.jwks_cooldown_seconds) == (30, 30)


def test_accepted_values_are_kept() -> None:
    p = JwtPolicy(algorithms=["ES256", "HS256"], audience=["a", "b"], roles=["owner", "guest"],
                  required_claims=["exp", "sub", "iat", "exp"], org_claim="app_metadata.org_id")
    assert (p.algorithms, p.audience, p.roles, p.required_claims, p.org_claim) == (
        ["ES256", "HS256"], ["a", "b"], ["owner", "guest"], ["exp", "sub", "iat"], "app_metadata.org_id")
    assert p.uses_hmac and p.uses_asymmetric
    assert JwtPolicy(audience="authenticated").audience == "authenticated"


LIMITS = [  # field, lowest accepted, highest accepted (None: no upper bound)
    ("leeway_seconds", 0, 300),
    ("max_age_seconds", 1, None),
    ("max_token_bytes", 256, 65536),
    ("jwks_refresh_seconds", 5, None),
    ("cache_size", 0, 1_000_000),
]


@pytest.mark.parametrize("field,low,high", LIMITS, ids=[f for f, _, _ in LIMITS])
def test_numeric_limits_hold_at_both_edges(field: str, low: int, high: int | None) -> None:
    other = {"jwks_cooldown_seconds": 1}  # never above jwks_refresh_seconds, whatever that is
    assert getattr(JwtPolicy(**{field: low}, **other), field) == low
    with pytest.raises(ValidationError, match=field):
        JwtPolicy(**{field: low - 1}, **other)
    if high is not None:
        assert getattr(JwtPolicy(**{field: high}, **other), field) == high
        with pytest.raises(ValidationError, match=field):
            JwtPolicy(**{field: high + 1}, **other)


def test_jwks_cooldown_is_at_least_a_second() -> None:
    assert JwtPolicy(jwks_cooldown_seconds=1).jwks_cooldown_seconds == 1
    with pytest.raises(ValidationError, match="jwks_cooldown_seconds"):
        JwtPolicy(jwks_cooldown_seconds=0)
