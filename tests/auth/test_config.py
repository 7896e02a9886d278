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
