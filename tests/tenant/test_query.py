"""Query parameter binding: every mode, and every spelling that could be read two ways."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError

from .factories import MODES, ORG, expect_refusal, make_binder


def bind(mode: str, qs: bytes, org: str = ORG) -> tuple[bytes, bool]:
    return make_binder(mode, query="orgId").bind_query(qs, org)


# (mode, query in, expected query out or None for a 403 tenant.mismatch, rewritten flag)
MATRIX = [
    ("verify", b"orgId=org-a", b"orgId=org-a", False),
    ("require", b"orgId=org-a", b"orgId=org-a", False),
    ("rewrite", b"orgId=org-a", b"orgId=org-a", False),
    ("verify", b"orgId=org-b", None, False),
    ("require", b"orgId=org-b", None, False),
    ("rewrite", b"orgId=org-b", b"orgId=org-a", True),
    ("verify", b"a=1", b"a=1&orgId=org-a", False),
    ("require", b"a=1", None, False),
    ("rewrite", b"a=1", b"a=1&orgId=org-a", False),
    ("verify", b"", b"orgId=org-a", False),
    ("require", b"", None, False),
    ("rewrite", b"", b"orgId=org-a", False),
]
MATRIX_IDS = [
    f"{m}-{kind}"
    for kind in ("equal", "different", "absent", "empty")
    for m in ("verify", "require", "rewrite")
]


@pytest.mark.parametrize(("mode", "qs", "out", "rewritten"), MATRIX, ids=MATRIX_IDS)
def test_mode_matrix(mode: str, qs: bytes, out: bytes | None, rewritten: bool) -> None:
    if out is None:
        with pytest.raises(GatewayError) as exc:
            bind(mode, qs)
        expect_refusal(exc, 403, "tenant.mismatch")
    else:
        assert bind(mode, qs) == (out, rewritten)


AMBIGUOUS = [
    pytest.param(b"orgId=org-a&orgId=org-b", id="repeated_different"),
    pytest.param(b"orgId=org-a&orgId=org-a", id="repeated_same"),
    pytest.param(b"x=1&orgId=org-a&y=2&orgId=org-a", id="repeated_apart"),
    pytest.param(b"orgid=org-a", id="lowercase"),
    pytest.param(b"ORGID=org-a", id="uppercase"),
    pytest.param(b"orgId=org-a&orgid=org-b", id="exact_plus_case_variant"),
    pytest.param(b"org%49d=org-a", id="pct_encoded_I"),
    pytest.param(b"%6FrgId=org-a", id="pct_encoded_o"),
    pytest.param(b"%6f%72%67%49%64=org-a", id="pct_encoded_all"),
    pytest.param(b"orgId=org-a&org%49d=org-b", id="exact_plus_pct_variant"),
    pytest.param(b"org%2549d=org-b", id="double_encoded_name"),
    pytest.param(b"%EF%BD%8F%EF%BD%92%EF%BD%87%EF%BC%A9%EF%BD%84=org-b", id="fullwidth_name"),
    pytest.param("ｏｒｇＩｄ=org-b".encode(), id="raw_fullwidth_name"),
    pytest.param(b"orgId[]=org-a", id="brackets"),
    pytest.param(b"orgId%5B%5D=org-a", id="brackets_encoded"),
    pytest.param(b"orgId[0]=org-b", id="indexed"),
    pytest.param(b"orgId[id]=org-b", id="nested_brackets"),
    pytest.param(b"orgId.id=org-b", id="dotted"),
    pytest.param(b"orgId%20=org-b", id="trailing_space_encoded"),
    pytest.param(b"orgId+=org-b", id="trailing_plus_space"),
    pytest.param(b"%20orgId=org-b", id="leading_space"),
    pytest.param(b"orgId%00=org-b", id="nul_suffix"),
    pytest.param(b"orgId%00[]=org-b", id="nul_before_brackets"),
    pytest.param(b"+orgId=org-b", id="leading_plus_space"),
    pytest.param(b"orgId=org-a;orgId=org-b", id="semicolon_repeat"),
    pytest.param(b"a=1;orgId=org-b", id="semicolon_hidden"),
    pytest.param(b"orgId=org-a;x=1", id="semicolon_in_value"),
    pytest.param(b"a=1&b=2;ORGID=org-b", id="semicolon_case_variant"),
    pytest.param(b"a=1&;orgId=org-b", id="semicolon_leading"),
    pytest.param(b"x=1;orgId=org-b=c", id="semicolon_value_with_equals"),
    pytest.param(b"a=1;b=2&orgId=org-a&orgId=org-b", id="repeated_after_semicolon_segment"),
    pytest.param(b"orgId=org%2", id="truncated_pct"),
    pytest.param(b"orgId=org%zza", id="bad_pct_hex"),
    pytest.param(b"orgId=org-a%", id="trailing_pct"),
    pytest.param(b"orgId=%ff", id="invalid_utf8_value"),
    pytest.param(b"orgId=%C0%AF", id="overlong_utf8_value"),
    pytest.param(b"orgId=\xff", id="raw_invalid_utf8_value"),
    pytest.param(b"orgId=org+a", id="plus_in_value"),
    pytest.param(b"orgId=+org-a", id="leading_plus_in_value"),
    pytest.param(b"org%4=x", id="bad_pct_in_name"),
    pytest.param(b"%ff=1&orgId=org-a", id="invalid_utf8_name"),
    pytest.param(b"\xff=1", id="raw_invalid_utf8_name"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("qs", AMBIGUOUS)
def test_ambiguity_is_refused(mode: str, qs: bytes) -> None:
    with pytest.raises(GatewayError) as exc:
        bind(mode, qs)
    expect_refusal(exc, 400, "request.ambiguous")


@pytest.mark.parametrize(
    "qs",
    [
        pytest.param(b"orgId=org%2Da", id="pct_encoded_dash"),
        pytest.param(b"orgId=%6F%72%67%2D%61", id="fully_encoded"),
        pytest.param(b"a=%ZZ&orgId=org-a&b=x+y&c=%E2%82%AC&d&&e=", id="others_untouched"),
        pytest.param(b"orgIdx=1&xorgId=2&orgId=org-a", id="similar_names"),
        pytest.param(b"caf%C3%A9=1&x+y=2&orgId=org-a", id="other_encoded_names"),
        pytest.param(b"x%25zz=1&orgId=org-a", id="other_name_not_decodable_twice"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_equal_after_decoding_forwards_bytes_unchanged(mode: str, qs: bytes) -> None:
    assert bind(mode, qs) == (qs, False)


@pytest.mark.parametrize(
    ("qs", "out"),
    [
        pytest.param(b"a=%ZZ&orgId=org-b&b=x+y", b"a=%ZZ&orgId=org-a&b=x+y", id="in_place"),
        pytest.param(b"orgId=", b"orgId=org-a", id="empty_value"),
        pytest.param(b"orgId", b"orgId=org-a", id="no_equals"),
        pytest.param(b"x=1&orgId=org%2Db&y=2", b"x=1&orgId=org-a&y=2", id="encoded_other"),
    ],
)
def test_rewrite_replaces_in_place(qs: bytes, out: bytes) -> None:
    assert bind("rewrite", qs) == (out, True)


@pytest.mark.parametrize(
    ("qs", "out"),
    [
        pytest.param(b"a=1&", b"a=1&orgId=org-a", id="trailing_ampersand"),
        pytest.param(b"a=%ZZ&b=x+y", b"a=%ZZ&b=x+y&orgId=org-a", id="others_untouched"),
        pytest.param(b"q=orgid", b"q=orgid&orgId=org-a", id="name_only_in_value"),
        pytest.param(b"orgIdx=org-b", b"orgIdx=org-b&orgId=org-a", id="longer_name"),
    ],
)
def test_verify_injects_when_absent(qs: bytes, out: bytes) -> None:
    assert bind("verify", qs) == (out, False)


def test_injected_value_is_percent_encoded() -> None:
    assert bind("verify", b"", org="a b&c=d/é") == (b"orgId=a%20b%26c%3Dd%2F%C3%A9", False)


def test_encoded_org_compares_decoded() -> None:
    assert bind("require", b"orgId=a%20b%26c", org="a b&c") == (b"orgId=a%20b%26c", False)


@pytest.mark.parametrize("qs", [b"orgId=", b"orgId", b"orgId=ORG-A", b"orgId=org-a%20", b"orgId=x=org-a"])
def test_near_misses_are_mismatches(qs: bytes) -> None:
    with pytest.raises(GatewayError) as exc:
        bind("verify", qs)
    expect_refusal(exc, 403, "tenant.mismatch")


def test_errors_carry_route_id_and_no_client_value() -> None:
    with pytest.raises(GatewayError) as exc:
        bind("verify", b"orgId=secret-org-b")
    assert exc.value.route_id == "r1"
    assert "secret-org-b" not in exc.value.detail


@pytest.mark.parametrize(
    ("mode", "qs", "status", "detail"),
    [
        ("verify", b"orgId=1&orgId=2", 400, 'query parameter "orgId": repeated'),
        ("verify", b"orgid=1", 400, 'query parameter "orgId": present under a variant spelling of its name'),
        ("verify", b"a=1;orgId=2", 400, 'query parameter "orgId": ";" used as a separator next to the bound parameter'),
        ("verify", b"orgId=a+b", 400, 'query parameter "orgId": "+" in the value (send %2B or %20)'),
        ("verify", b"orgId=%ff", 400, 'query parameter "orgId": value is not valid percent-encoded UTF-8'),
        ("verify", b"%ff=1", 400, "query parameter name is not valid percent-encoded UTF-8"),
        ("require", b"a=1", 403, 'query parameter "orgId" is required'),
        ("verify", b"orgId=org-b", 403, 'query parameter "orgId" does not match your organisation'),
    ],
)
def test_refusal_details_and_route_id(mode: str, qs: bytes, status: int, detail: str) -> None:
    with pytest.raises(GatewayError) as exc:
        bind(mode, qs)
    assert exc.value.status == status
    assert exc.value.detail == detail
    assert exc.value.route_id == "r1"
