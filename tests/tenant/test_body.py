"""JSON body binding: every mode, nested and array paths, and every body with two readings."""

from __future__ import annotations

import json
import sys

import pytest

from gateway.errors import GatewayError
from gateway.tenant import MAX_DEPTH
from gateway.tenant.body import check_json_media_type, is_json_media_type

from .factories import MODES, ORG, expect_refusal, make_binder

JSON = b"application/json"
PATHS = ["orgId", "owner.orgId", "items[*].orgId"]


def bind(mode: str, body: bytes, paths: list[str] | str = "orgId", ct: bytes | None = JSON):
    return make_binder(mode, body=paths).bind_body(body, ct, ORG)


def refused(mode: str, body: bytes, status: int, reason: str, **kw) -> None:
    with pytest.raises(GatewayError) as exc:
        bind(mode, body, **kw)
    expect_refusal(exc, status, reason)


# (path, body in, {mode: expected}) where expected is "same" (None returned), "403",
# or (body out, rewritten).
MATRIX = {
    "top_equal": ("orgId", b'{"orgId":"org-a","n":1}', dict.fromkeys(MODES, "same")),
    "top_different": (
        "orgId",
        b'{"orgId":"org-b","n":1}',
        {"verify": "403", "require": "403", "rewrite": (b'{"orgId":"org-a","n":1}', True)},
    ),
    "top_absent": (
        "orgId",
        b'{"n":1}',
        {
            "verify": (b'{"n":1,"orgId":"org-a"}', False),
            "require": "403",
            "rewrite": (b'{"n":1,"orgId":"org-a"}', False),
        },
    ),
    "top_empty_body": (
        "orgId",
        b"",
        {"verify": (b'{"orgId":"org-a"}', False), "require": "403", "rewrite": (b'{"orgId":"org-a"}', False)},
    ),
    "nested_equal": ("owner.orgId", b'{"owner":{"orgId":"org-a"}}', dict.fromkeys(MODES, "same")),
    "nested_different": (
        "owner.orgId",
        b'{"owner":{"orgId":"org-b","x":1}}',
        {"verify": "403", "require": "403", "rewrite": (b'{"owner":{"orgId":"org-a","x":1}}', True)},
    ),
    "nested_absent_leaf": (
        "owner.orgId",
        b'{"owner":{}}',
        {
            "verify": (b'{"owner":{"orgId":"org-a"}}', False),
            "require": "403",
            "rewrite": (b'{"owner":{"orgId":"org-a"}}', False),
        },
    ),
    "nested_absent_parent": (
        "owner.orgId",
        b'{"n":1}',
        {
            "verify": (b'{"n":1,"owner":{"orgId":"org-a"}}', False),
            "require": "403",
            "rewrite": (b'{"n":1,"owner":{"orgId":"org-a"}}', False),
        },
    ),
    "array_all_equal": (
        "items[*].orgId",
        b'{"items":[{"orgId":"org-a"},{"orgId":"org-a"}]}',
        dict.fromkeys(MODES, "same"),
    ),
    "array_one_wrong": (
        "items[*].orgId",
        b'{"items":[{"orgId":"org-a"},{"orgId":"org-b"},{"orgId":"org-a"}]}',
        {
            "verify": "403",
            "require": "403",
            "rewrite": (b'{"items":[{"orgId":"org-a"},{"orgId":"org-a"},{"orgId":"org-a"}]}', True),
        },
    ),
    "array_one_absent": (
        "items[*].orgId",
        b'{"items":[{"orgId":"org-a"},{"k":1}]}',
        {
            "verify": (b'{"items":[{"orgId":"org-a"},{"k":1,"orgId":"org-a"}]}', False),
            "require": "403",
            "rewrite": (b'{"items":[{"orgId":"org-a"},{"k":1,"orgId":"org-a"}]}', False),
        },
    ),
    "array_absent": ("items[*].orgId", b'{"n":1}', dict.fromkeys(MODES, "same")),
    "array_empty": ("items[*].orgId", b'{"items":[]}', dict.fromkeys(MODES, "same")),
    "nested_arrays_one_wrong": (
        "groups[*].members[*].orgId",
        b'{"groups":[{"members":[{"orgId":"org-a"}]},{"members":[{"orgId":"org-b"}]}]}',
        {
            "verify": "403",
            "require": "403",
            "rewrite": (
                b'{"groups":[{"members":[{"orgId":"org-a"}]},{"members":[{"orgId":"org-a"}]}]}',
                True,
            ),
        },
    ),
}
CASES = [
    pytest.param(mode, path, body, expected[mode], id=f"{mode}-{name}")
    for name, (path, body, expected) in MATRIX.items()
    for mode in MODES
]


@pytest.mark.parametrize(("mode", "path", "body", "expected"), CASES)
def test_mode_matrix(mode: str, path: str, body: bytes, expected) -> None:
    if expected == "403":
        refused(mode, body, 403, "tenant.mismatch", paths=path)
    elif expected == "same":
        assert bind(mode, body, path) == (None, False)
    else:
        assert bind(mode, body, path) == expected


def test_require_missing_says_required() -> None:
    with pytest.raises(GatewayError) as exc:
        bind("require", b"")
    assert "required" in exc.value.detail


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"orgId":null}', id="null"),
        pytest.param(b'{"orgId":42}', id="number"),
        pytest.param(b'{"orgId":true}', id="bool"),
        pytest.param(b'{"orgId":["org-a"]}', id="list"),
        pytest.param(b'{"orgId":{"id":"org-a"}}', id="object"),
        pytest.param(b'{"orgId":"ORG-A"}', id="case"),
        pytest.param(b'{"orgId":"org-a "}', id="trailing_space"),
        pytest.param(b'{"orgId":""}', id="empty"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_non_matching_values(mode: str, body: bytes) -> None:
    """A non-string is a mismatch (one reading, not the caller's org); rewrite replaces it."""
    if mode == "rewrite":
        assert bind(mode, body) == (b'{"orgId":"org-a"}', True)
    else:
        refused(mode, body, 403, "tenant.mismatch")


# Prefixes that satisfy the other bound paths, so each case fails on its ambiguity only.
OK = b'{"orgId":"org-a",'
DONE = OK + b'"owner":{"orgId":"org-a"},'

AMBIGUOUS = [
    pytest.param(OK + b'"orgId":"org-a"}', id="dup_depth0_same"),
    pytest.param(b'{"orgId":"org-b","orgId":"org-a"}', id="dup_depth0_different"),
    pytest.param(OK + b'"x":{"k":1,"k":2}}', id="dup_depth1"),
    pytest.param(OK + b'"a":{"b":{"c":{"k":1,"k":1}}}}', id="dup_depth3"),
    pytest.param(OK + b'"owner":{"orgId":"org-a","orgId":"org-b"}}', id="dup_in_bound_object"),
    pytest.param(DONE + b'"items":[{"orgId":"org-a"},{"orgId":"org-a","orgId":"org-b"}]}', id="dup_in_array"),
    pytest.param(OK + b'"list":[1,[{"z":1,"z":2}]]}', id="dup_in_unbound_array"),
    pytest.param(OK + b'"org\\u0049d":"org-b"}', id="dup_via_unicode_escape"),
    pytest.param(b'{"\\u006frg\\u0049d":"org-a","orgId":"org-a"}', id="dup_all_escaped"),
    pytest.param(OK + b'"orgid":"org-b"}', id="case_variant_lower"),
    pytest.param(b'{"OrgId":"org-b","owner":{"orgId":"org-a"}}', id="case_variant_alone"),
    pytest.param(b'{"ORGID":"org-b","orgId":"org-a"}', id="case_variant_upper"),
    pytest.param(b'{"org\\u0069d":"org-b","owner":{"orgId":"org-a"}}', id="case_variant_escaped"),
    pytest.param('{"ｏｒｇＩｄ":"org-b"}'.encode(), id="fullwidth_variant"),
    pytest.param(b'{"orgId ":"org-b","owner":{"orgId":"org-a"}}', id="trailing_space_variant"),
    pytest.param(OK + b'"owner":{"orgId":"org-a","OrgID":"org-b"}}', id="nested_case_variant"),
    pytest.param(OK + b'"Owner":{"orgId":"org-b"},"owner":{"orgId":"org-a"}}', id="parent_case_variant"),
    pytest.param(
        DONE + b'"items":[{"orgId":"org-a"},{"orgId":"org-a","ORGID":"x"}]}', id="array_case_variant"
    ),
    pytest.param(DONE + b'"items":{"orgId":"org-a"}}', id="array_not_list"),
    pytest.param(DONE + b'"items":["org-a"]}', id="array_of_strings"),
    pytest.param(DONE + b'"items":[{"orgId":"org-a"},null]}', id="array_with_null"),
    pytest.param(DONE + b'"items":[[{"orgId":"org-a"}]]}', id="array_of_arrays"),
    pytest.param(DONE + b'"items":null}', id="array_null"),
    pytest.param(OK + b'"owner":null}', id="parent_null"),
    pytest.param(OK + b'"owner":"org-a"}', id="parent_string"),
    pytest.param(OK + b'"owner":[{"orgId":"org-a"}]}', id="parent_list"),
    pytest.param(b'[{"orgId":"org-a"}]', id="top_array"),
    pytest.param(b'[{"op":"replace","path":"/orgId","value":"org-b"}]', id="json_patch"),
    pytest.param(b'"org-a"', id="top_string"),
    pytest.param(b"42", id="top_number"),
    pytest.param(b"null", id="top_null"),
    pytest.param(b"true", id="top_bool"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", AMBIGUOUS)
def test_ambiguity_is_refused(mode: str, body: bytes) -> None:
    # Each case is otherwise complete, so `require` fails on the ambiguity, not on a missing field.
    refused(mode, body, 400, "request.ambiguous", paths=PATHS)


def nested(depth: int) -> bytes:
    """An object whose total nesting (the top-level object included) is `depth`."""
    inner = depth - 1
    return b'{"orgId":"org-a","x":' + b"[" * inner + b"]" * inner + b"}"


BAD_JSON = [
    pytest.param(b'{"orgId":', id="truncated"),
    pytest.param(b'{"orgId":"org-a"} x', id="trailing_garbage"),
    pytest.param(b'{"orgId":"org-a"}{"orgId":"org-b"}', id="two_documents"),
    pytest.param(b"{'orgId':'org-a'}", id="single_quotes"),
    pytest.param(b'{"orgId":"org-a",}', id="trailing_comma"),
    pytest.param(b'{"orgId":"org-a","n":NaN}', id="nan"),
    pytest.param(b'{"orgId":"org-a","n":Infinity}', id="infinity"),
    pytest.param(b'{"orgId":"org-a","n":-Infinity}', id="minus_infinity"),
    pytest.param(b'{"orgId":"org-a","n":1e400}', id="float_overflow"),
    pytest.param(b'{"orgId":"org-a","n":' + b"9" * 5000 + b"}", id="huge_int"),
    # 1e400 written out in digits: Python reads it exactly, most parsers as Infinity.
    pytest.param(b'{"orgId":"org-a","n":1' + b"0" * 400 + b"}", id="int_overflow"),
    pytest.param(b'{"orgId":"org-a","n":' + str(int(sys.float_info.max) + 1).encode() + b"}", id="int_just_over"),
    pytest.param(b'{"orgId":"org-a","n":-' + str(int(sys.float_info.max) + 1).encode() + b"}", id="neg_int_over"),
    pytest.param(b'{"orgId":"org-\xff"}', id="invalid_utf8"),
    pytest.param(b'{"orgId":"org-\xc0\xafa"}', id="overlong_utf8"),
    pytest.param(b'\xef\xbb\xbf{"orgId":"org-a"}', id="utf8_bom"),
    pytest.param('{"orgId":"org-a"}'.encode("utf-16"), id="utf16"),
    pytest.param('{"orgId":"org-a"}'.encode("utf-16-le"), id="utf16_no_bom"),
    pytest.param(b'{"orgId":"org\x01-a"}', id="raw_control_char"),
    pytest.param(b"   ", id="whitespace_only"),
    pytest.param(nested(MAX_DEPTH + 1), id="depth_65"),
    pytest.param(b'{"a":' * 100 + b"1" + b"}" * 100, id="deep_objects"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="recursion_bomb"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", BAD_JSON)
def test_bad_json_is_refused(mode: str, body: bytes) -> None:
    refused(mode, body, 400, "request.bad_json", paths=PATHS)


def test_the_largest_integers_a_double_holds_are_accepted() -> None:
    for n in (int(sys.float_info.max), -int(sys.float_info.max), 2**53 + 1, -(10**308)):
        assert bind("verify", b'{"orgId":"org-a","n":%d}' % n) == (None, False)


def test_depth_64_is_accepted() -> None:
    assert bind("verify", nested(MAX_DEPTH)) == (None, False)


def test_depth_is_measured_when_brackets_exceed_the_limit() -> None:
    # More than MAX_DEPTH brackets in all, so the real depth walk runs: 64 levels pass, 65 do not.
    siblings = b',"y":[' + b"[]," * MAX_DEPTH + b"[]]"
    ok = nested(MAX_DEPTH)[:-1] + siblings + b"}"
    assert ok.count(b"[") > MAX_DEPTH
    assert bind("verify", ok) == (None, False)
    refused("verify", nested(MAX_DEPTH + 1)[:-1] + siblings + b"}", 400, "request.bad_json")


def test_many_brackets_in_strings_are_not_depth() -> None:
    body = b'{"orgId":"org-a","s":"' + b"[{" * 100 + b'"}'
    assert bind("verify", body) == (None, False)


@pytest.mark.parametrize(
    "ct",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"", id="empty"),
        pytest.param(b"text/plain", id="text_plain"),
        pytest.param(b"text/json", id="text_json"),
        pytest.param(b"application/x-www-form-urlencoded", id="form"),
        pytest.param(b"multipart/form-data; boundary=x", id="multipart"),
        pytest.param(b"application/jsonx", id="jsonx"),
        pytest.param(b"application/+json", id="bare_suffix"),
        pytest.param(b"application/json-seq", id="json_seq"),
        pytest.param(b"application/json; charset=latin-1", id="latin1"),
        pytest.param(b"application/json; charset=utf-16", id="utf16"),
        pytest.param(b"application/json; charset=utf-8; charset=utf-16", id="two_charsets"),
        pytest.param(b"application/json; garbage", id="bad_param"),
        pytest.param(b"application/json\xff", id="non_ascii"),
        pytest.param(b"application / json", id="spaces"),
        pytest.param(b"application/json; charset=utf-8=x", id="charset_value_with_equals"),
        pytest.param(b"application/json; ; charset=latin-1", id="charset_after_empty_param"),
        pytest.param(b"application/json; charset=Xutf-8X", id="charset_padded"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_non_json_media_types_are_415(mode: str, ct: bytes | None) -> None:
    refused(mode, b'{"orgId":"org-a"}', 415, "request.unsupported_media_type", ct=ct)


@pytest.mark.parametrize(
    "ct",
    [
        b"application/json",
        b"Application/JSON",
        b"application/json; charset=utf-8",
        b"application/json;charset=UTF-8",
        b'application/json; charset="utf-8"',
        b"application/merge-patch+json",
        b"application/vnd.api+json; charset=utf-8",
        b"application/json;",
        b"application/a+json",
    ],
)
def test_json_media_types_are_accepted(ct: bytes) -> None:
    assert bind("verify", b'{"orgId":"org-a"}', ct=ct) == (None, False)


def test_unchanged_body_is_not_reserialised() -> None:
    """Passthrough keeps the client's exact bytes: spacing, escapes, number spelling."""
    body = (
        '{ "orgId" : "org-a",\n "name": "Zoë \\u00e9", "n": 1.50, "big": 1e2,'
        ' "s": "\\ud800",\n "owner": {"orgId": "org-a"} }'
    ).encode()
    assert bind("verify", body, PATHS) == (None, False)


def test_injected_body_is_compact_utf8_with_correct_length() -> None:
    out, rewritten = bind(
        "verify", '{"name": "Zoë ✓", "n": 1.50, "big": 123456789012345678901234567890}'.encode()
    )
    assert out == '{"name":"Zoë ✓","n":1.5,"big":123456789012345678901234567890,"orgId":"org-a"}'.encode()
    assert not rewritten
    # Content-Length counts bytes, not characters: "ë" and "✓" are 2 and 3 bytes.
    assert len(out) == len(out.decode()) + 3


def test_rewritten_body_keeps_lone_surrogate_escaped() -> None:
    out, rewritten = bind("rewrite", b'{"s":"\\ud800","orgId":"org-b"}')
    assert rewritten
    assert out == b'{"s":"\\ud800","orgId":"org-a"}'
    assert json.loads(out) == {"s": "\ud800", "orgId": "org-a"}


def test_several_paths_bound_together() -> None:
    body = b'{"orgId":"org-a","owner":{"orgId":"org-b"},"items":[{"orgId":"org-a"}]}'
    assert bind("rewrite", body, PATHS) == (
        DONE + b'"items":[{"orgId":"org-a"}]}',
        True,
    )
    refused("verify", body, 403, "tenant.mismatch", paths=PATHS)


def test_injected_org_is_json_escaped() -> None:
    out, _ = make_binder("verify", body="orgId").bind_body(b"{}", JSON, 'a"b\\c')
    assert out == b'{"orgId":"a\\"b\\\\c"}'
    assert json.loads(out)["orgId"] == 'a"b\\c'


def test_unbound_route_leaves_body_alone() -> None:
    assert make_binder("verify", query="orgId").bind_body(b"not json", None, ORG) == (None, False)


@pytest.mark.parametrize(
    ("body", "ct", "status", "detail"),
    [
        (b"{}", None, 415, "a JSON body is required (Content-Type: application/json)"),
        (b"{}", b"text/plain", 415, "Content-Type must be application/json (charset utf-8)"),
        (b"[]", JSON, 400, "the JSON body must be an object"),
        (b'{"a":1,"a":2}', JSON, 400, "duplicate key in the JSON body"),
        (b"{", JSON, 400, "body is not valid UTF-8 JSON"),
        (nested(MAX_DEPTH + 1), JSON, 400, f"JSON nested deeper than {MAX_DEPTH} levels"),
    ],
)
def test_refusal_details_and_route_id(body: bytes, ct: bytes | None, status: int, detail: str) -> None:
    with pytest.raises(GatewayError) as exc:
        bind("verify", body, ct=ct)
    assert exc.value.status == status
    assert exc.value.detail == detail
    assert exc.value.route_id == "r1"


@pytest.mark.parametrize(
    ("ct", "expected"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=latin-1", True),
        (b"application/json;charset=utf-8", True),
        (b"application/json; a=1; b=2", True),
        (b" application/vnd.api+json ; x=1", True),
        (None, False),
        (b"", False),
        (b"text/plain", False),
        (b"application/xml", False),
        (b"text/x+json", False),
        (b"application/jsonx", False),
        (b"x; application/json", False),
    ],
)
def test_is_json_media_type(ct: bytes | None, expected: bool) -> None:
    assert is_json_media_type(ct) is expected


def test_check_json_media_type() -> None:
    check_json_media_type(b"application/json", "r9")
    for ct in (None, b"text/plain"):
        with pytest.raises(GatewayError) as exc:
            check_json_media_type(ct, "r9")
        expect_refusal(exc, 415, "request.unsupported_media_type")
        assert exc.value.route_id == "r9"


@pytest.mark.parametrize(
    ("mode", "path", "body", "status", "reason", "detail"),
    [
        pytest.param("verify", "orgId", b'{"orgId":"org-b"}', 403, "tenant.mismatch",
                     'body field "orgId" does not match your organisation', id="top_mismatch"),
        pytest.param("require", "orgId", b'{"n":1}', 403, "tenant.mismatch",
                     'body field "orgId" is required', id="top_required"),
        pytest.param("verify", "owner.orgId", b'{"owner":{"orgId":"org-b"}}', 403, "tenant.mismatch",
                     'body field "owner.orgId" does not match your organisation', id="nested_mismatch"),
        pytest.param("require", "owner.orgId", b'{"n":1}', 403, "tenant.mismatch",
                     'body field "owner.orgId" is required', id="parent_required"),
        pytest.param("verify", "items[*].orgId", b'{"items":[{"orgId":"org-a"},{"orgId":"org-b"}]}', 403,
                     "tenant.mismatch", 'body field "items[*].orgId" does not match your organisation',
                     id="element_mismatch"),
        pytest.param("verify", "items[*].orgId", b'{"items":{"orgId":"org-a"}}', 400, "request.ambiguous",
                     'body field "items[*].orgId": "items" must be a list of objects', id="array_not_list"),
        pytest.param("verify", "owner.orgId", b'{"owner":"org-a"}', 400, "request.ambiguous",
                     'body field "owner.orgId": "owner" must be an object', id="parent_not_object"),
        pytest.param("verify", "orgId", b'{"orgId":"org-a","OrgId":"org-b"}', 400, "request.ambiguous",
                     'body field "orgId": "OrgId" is a variant of "orgId"', id="case_variant"),
        pytest.param("verify", "owner.orgId", b'{"owner":{"orgId":"org-a","ORGID":"org-b"}}', 400,
                     "request.ambiguous", 'body field "owner.orgId": "ORGID" is a variant of "orgId"',
                     id="nested_case_variant"),
    ],
)
def test_binding_refusal_details_and_route_id(
    mode: str, path: str, body: bytes, status: int, reason: str, detail: str
) -> None:
    """Every binding refusal names the configured path (not "None", not a bare title) and carries
    the route id, so the client's 4xx and the audit line say which field of which route failed."""
    with pytest.raises(GatewayError) as exc:
        bind(mode, body, path)
    expect_refusal(exc, status, reason)
    assert exc.value.detail == detail
    assert exc.value.route_id == "r1"


def test_an_absent_parent_of_an_array_is_nothing_to_bind_in_every_mode() -> None:
    """`owner.items[*].orgId` with no `owner`: no array, so no elements naming any org, as when
    `items` alone is absent. It was refused as "required" in `require` mode, and in `verify` and
    `rewrite` the body was forwarded with an empty `"owner":{}` added that named no org."""
    for mode in MODES:
        assert bind(mode, b'{"n":1}', "owner.items[*].orgId") == (None, False), mode
        assert bind(mode, b'{"n":1,"owner":{}}', "owner.items[*].orgId") == (None, False), mode
        assert bind(mode, b'{"groups":[{"n":1}]}', "groups[*].owner.items[*].orgId") == (None, False), mode
    # below the array the rule for an absent object is unchanged: required, or injected
    with pytest.raises(GatewayError) as exc:
        bind("require", b'{"owner":{"items":[{"n":1}]}}', "owner.items[*].meta.orgId")
    expect_refusal(exc, 403, "tenant.mismatch")
    assert exc.value.detail == 'body field "owner.items[*].meta.orgId" is required'
    assert bind("verify", b'{"owner":{"items":[{"n":1}]}}', "owner.items[*].meta.orgId") == (
        b'{"owner":{"items":[{"n":1,"meta":{"orgId":"org-a"}}]}}', False)
