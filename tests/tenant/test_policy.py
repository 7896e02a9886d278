from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.tenant import TenantPolicy, parse_body_path

from .factories import make_binder


@pytest.mark.parametrize(
    "section",
    [
        pytest.param({"mode": "verify", "query": "orgId"}, id="query"),
        pytest.param({"mode": "require", "path": "orgId"}, id="path"),
        pytest.param({"mode": "rewrite", "body": "orgId"}, id="body_str"),
        pytest.param({"mode": "verify", "body": ["orgId", "owner.orgId", "items[*].orgId"]}, id="body_list"),
        pytest.param({"mode": "verify", "body": ["groups[*].members[*].orgId"]}, id="nested_arrays"),
        pytest.param({"mode": "verify", "path": "org_id", "query": "org-id", "body": "orgId"}, id="all"),
        # Digits after the first character, and "-" in body field names, are part of the plain set.
        pytest.param(
            {"mode": "verify", "path": "org_2", "query": "2org", "body": ["org-id", "items2[*].org_id2"]},
            id="digits_and_dashes",
        ),
    ],
)
def test_valid_sections_load(section: dict[str, Any]) -> None:
    policy = TenantPolicy.model_validate(section)
    assert policy.mode == section["mode"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param({"mode": "verify", "query": "orgId", "qery": "x"}, "Extra inputs", id="unknown_key"),
        pytest.param({"mode": "check", "query": "orgId"}, "verify", id="unknown_mode"),
        pytest.param({"query": "orgId"}, "mode", id="no_mode"),
        pytest.param({"mode": "verify"}, "at least one location", id="no_location"),
        pytest.param({"mode": "verify", "body": []}, "at least one field path", id="empty_body_list"),
        pytest.param({"mode": "verify", "body": ""}, "must not be empty", id="empty_body_path"),
        pytest.param({"mode": "verify", "body": "items[0].orgId"}, 'only "[*]"', id="index"),
        pytest.param({"mode": "verify", "body": "items[].orgId"}, 'only "[*]"', id="empty_brackets"),
        pytest.param({"mode": "verify", "body": "items[*]"}, "must end with a field name", id="ends_star"),
        pytest.param({"mode": "verify", "body": "a..b"}, 'bad segment ""', id="double_dot"),
        pytest.param({"mode": "verify", "body": ".orgId"}, "bad segment", id="leading_dot"),
        pytest.param({"mode": "verify", "body": "orgId."}, "bad segment", id="trailing_dot"),
        pytest.param({"mode": "verify", "body": "$.orgId"}, "bad segment", id="jsonpath"),
        pytest.param({"mode": "verify", "body": "org Id"}, "bad segment", id="space"),
        pytest.param({"mode": "verify", "body": "items[*][*].orgId"}, "bad segment", id="double_star"),
        pytest.param({"mode": "verify", "body": ["orgId", "orgId"]}, "overlap", id="duplicate"),
        pytest.param({"mode": "verify", "body": ["owner", "owner.orgId"]}, "overlap", id="prefix"),
        pytest.param(
            {"mode": "verify", "body": ["items[*].orgId", "items.orgId"]}, "overlap", id="array_vs_obj"
        ),
        # The overlap is found whichever of the two paths is listed first.
        pytest.param({"mode": "verify", "body": ["owner.orgId", "owner"]}, "overlap", id="prefix_second"),
        pytest.param({"mode": "verify", "body": "1orgId"}, "bad segment", id="body_leading_digit"),
        pytest.param({"mode": "verify", "body": "owner.org$Id"}, "bad segment", id="body_dollar_inside"),
        pytest.param({"mode": "verify", "body": 5}, "valid", id="body_not_str"),
        pytest.param({"mode": "verify", "query": "org Id"}, "must match", id="query_space"),
        pytest.param({"mode": "verify", "query": "org%49d"}, "must match", id="query_percent"),
        pytest.param({"mode": "verify", "query": "orgId[]"}, "must match", id="query_brackets"),
        pytest.param({"mode": "verify", "query": "org.id"}, "must match", id="query_dot"),
        pytest.param({"mode": "verify", "query": ""}, "must match", id="query_empty"),
        pytest.param({"mode": "verify", "path": "org-id"}, "must match", id="path_dash"),
        pytest.param({"mode": "verify", "path": "{orgId}"}, "must match", id="path_braces"),
        pytest.param({"mode": "verify", "path": "orgId}"}, "must match", id="path_trailing_brace"),
        pytest.param({"mode": "verify", "path": "1orgId"}, "must match", id="path_leading_digit"),
        pytest.param({"mode": "verify", "path": ""}, "must match", id="path_empty"),
    ],
)
def test_invalid_sections_refused_with_message(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TenantPolicy.model_validate(section)
    assert message in str(exc.value)


def test_body_path_compiles_to_steps() -> None:
    assert parse_body_path("orgId") == (("orgId", False),)
    assert parse_body_path("owner.orgId") == (("owner", False), ("orgId", False))
    assert parse_body_path("items[*].orgId") == (("items", True), ("orgId", False))


def test_policy_is_frozen_after_load() -> None:
    """The binder is compiled from the policy once: a policy changed afterwards would be silently
    ignored by it, so a loaded policy cannot be changed at all."""
    policy = TenantPolicy(mode="verify", query="orgId")
    with pytest.raises(ValidationError):
        policy.mode = "rewrite"
    assert policy.mode == "verify"


@pytest.mark.parametrize(
    ("locations", "body", "query", "path"),
    [
        pytest.param({"body": "orgId"}, True, False, False, id="body_only"),
        pytest.param({"query": "orgId"}, False, True, False, id="query_only"),
        pytest.param({"path": "orgId"}, False, False, True, id="path_only"),
    ],
)
def test_binder_flags_name_only_the_bound_locations(
    locations: dict[str, str], body: bool, query: bool, path: bool
) -> None:
    """The stage and `explain` act on these flags: a location the policy does not bind is not
    reported (or buffered) as bound."""
    b = make_binder(**locations)
    assert (b.needs_body, b.binds_query, b.binds_path) == (body, query, path)


def test_binder_flags() -> None:
    assert make_binder(body="orgId").needs_body
    b = make_binder(query="orgId", path="orgId")
    assert not b.needs_body and b.binds_query and b.binds_path
    assert make_binder(body="orgId").bind_query(b"orgId=x", "org-a") == (b"orgId=x", False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "body path must not be empty", id="empty"),
        # An upper-case array name with a bad index gets the "[*] only" hint, not "bad segment".
        pytest.param(
            "Items[0].orgId",
            'body path "Items[0].orgId": only "[*]" (every element) may follow an array name, not "[0]"',
            id="index_upper_case_name",
        ),
        # The refused suffix is quoted from the first "[", so the operator sees all of it.
        pytest.param(
            "items[[*].orgId",
            'body path "items[[*].orgId": only "[*]" (every element) may follow an array name, not "[[*]"',
            id="nested_bracket",
        ),
    ],
)
def test_body_path_errors_are_exact(text: str, message: str) -> None:
    """A policy author reads these at load time: each names the whole path and what is wrong."""
    with pytest.raises(ValueError) as exc:
        parse_body_path(text)
    assert str(exc.value) == message
