"""Path parameter binding (always "must equal") and the org claim lookup."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.tenant import org_from_claims

from .factories import MODES, ORG, expect_refusal, make_binder


@pytest.mark.parametrize("mode", MODES)
def test_path_equal_passes(mode: str) -> None:
    assert make_binder(mode, path="orgId").check_path({"orgId": ORG, "agentId": "x"}, ORG) is None


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"orgId": "org-b"}, id="different"),
        pytest.param({"orgId": "ORG-A"}, id="case"),
        pytest.param({"orgId": ""}, id="empty"),
        pytest.param({"orgId": "org%2Da"}, id="still_encoded"),
        pytest.param({}, id="absent"),
        pytest.param({"orgid": ORG}, id="other_name"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_path_mismatch_in_every_mode(mode: str, params: dict[str, str]) -> None:
    """A path can be neither injected nor rewritten: rewrite and verify also mean "must equal"."""
    with pytest.raises(GatewayError) as exc:
        make_binder(mode, path="orgId").check_path(params, ORG)
    expect_refusal(exc, 403, "tenant.mismatch")
    assert exc.value.route_id == "r1"


def test_unbound_path_is_not_checked() -> None:
    assert make_binder("verify", query="orgId").check_path({"orgId": "org-b"}, ORG) is None


@pytest.mark.parametrize(
    ("claims", "path", "org"),
    [
        pytest.param({"org_id": "org-a"}, "org_id", "org-a", id="top"),
        pytest.param({"app_metadata": {"org_id": "org-a"}}, "app_metadata.org_id", "org-a", id="nested"),
        # Some IdPs emit numeric org ids: every reader (tenant, identity, rate-limit keys) sees "7".
        pytest.param({"org_id": 7}, "org_id", "7", id="number"),
        # A literal top-level "app_metadata.org_id" member never stands in for the nested path.
        pytest.param({"app_metadata.org_id": "org-b", "app_metadata": {"org_id": "org-a"}},
                     "app_metadata.org_id", "org-a", id="dotted_key_ignored"),
    ],
)
def test_claim_lookup(claims: dict[str, Any], path: str, org: str) -> None:
    assert org_from_claims(claims, path) == org


@pytest.mark.parametrize(
    ("claims", "path"),
    [
        pytest.param({}, "org_id", id="absent"),
        pytest.param({"org_id": ""}, "org_id", id="empty"),
        pytest.param({"org_id": "  "}, "org_id", id="blank"),
        pytest.param({"org_id": None}, "org_id", id="null"),
        pytest.param({"org_id": True}, "org_id", id="bool"),
        pytest.param({"org_id": 7.5}, "org_id", id="float"),
        pytest.param({"org_id": ["org-a"]}, "org_id", id="list"),
        pytest.param({"org_id": {"id": "org-a"}}, "org_id", id="object"),
        pytest.param({"app_metadata": "org-a"}, "app_metadata.org_id", id="parent_not_object"),
        pytest.param({"app_metadata": {}}, "app_metadata.org_id", id="nested_absent"),
        pytest.param({"app_metadata.org_id": "org-a"}, "app_metadata.org_id", id="literal_dotted_key"),
        pytest.param({"org_id": "org-a"}, "app_metadata.org_id", id="wrong_place"),
    ],
)
def test_missing_claim(claims: dict[str, Any], path: str) -> None:
    with pytest.raises(GatewayError) as exc:
        org_from_claims(claims, path)
    expect_refusal(exc, 403, "tenant.missing_claim")


def test_path_mismatch_detail_names_the_parameter() -> None:
    """The 403 body tells the client which path parameter failed, not a bare "Forbidden"."""
    with pytest.raises(GatewayError) as exc:
        make_binder("verify", path="orgId").check_path({"orgId": "org-b"}, ORG)
    expect_refusal(exc, 403, "tenant.mismatch")
    assert exc.value.detail == 'path parameter "orgId" does not match your organisation'


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({}, id="absent"),
        pytest.param({"org_id": True}, id="bool"),
        pytest.param({"org_id": "  "}, id="blank"),
    ],
)
def test_missing_claim_detail(claims: dict[str, Any]) -> None:
    """A token without a usable org claim is told so in the 403 body, in these exact words."""
    with pytest.raises(GatewayError) as exc:
        org_from_claims(claims, "org_id")
    expect_refusal(exc, 403, "tenant.missing_claim")
    assert exc.value.detail == "the token carries no organisation"
