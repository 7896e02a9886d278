"""Request hygiene before routing: 414, 431, framing, and the bad-path table."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import BadPath, GatewayError
from gateway.pipeline.hygiene import HygieneStage, split_path
from gateway.policy.schema import Limits
from tests.core.conftest import core_policy, gw, upstream  # noqa: F401  (module fixtures)
from tests.support.gateway_proc import Proc
from tests.support.rawhttp import get, raw_request

BAD_PATHS = [
    ("/v1/./echo", "dot"),
    ("/v1/../v1/echo", "dotdot"),
    ("/v1/items/..", "dotdot_last"),
    ("/v1/items/%2e%2e", "encoded_dotdot"),
    ("/v1/items/%2E", "encoded_dot_upper"),
    ("/v1/items/a%2Fb", "encoded_slash"),
    ("/v1/items/a%2fb", "encoded_slash_lower"),
    ("/v1/items/a%5Cb", "encoded_backslash"),
    ("/v1/items/a%252Fb", "double_encoded"),
    ("/v1//echo", "double_slash"),
    ("//v1/echo", "leading_double_slash"),
    ("/v1/items/a\\b", "backslash"),
    ("/v1/items/a%00b", "encoded_nul"),
    ("/v1/items/a%0Ab", "encoded_newline"),
    ("/v1/items/a%7Fb", "encoded_del"),
    ("/v1/items/%ff%fe", "invalid_utf8"),
    ("/v1/items/%zz", "malformed_percent"),
    ("/v1/items/%4", "truncated_percent"),
]

# Which check refuses each bad path: the problem+json `detail` tells the client what was wrong.
CHARS = "path contains characters that are not allowed"
EMPTY = "empty path segment"
DOTS = "dot segments are not allowed"
MALFORMED = "malformed percent-encoding"
ENCODED = "encoded separators, dots or control bytes are not allowed"
NOT_UTF8 = "path is not valid UTF-8"
BAD_PATH_DETAIL = {
    "dot": DOTS, "dotdot": DOTS, "dotdot_last": DOTS,
    "encoded_dotdot": ENCODED, "encoded_dot_upper": ENCODED, "encoded_slash": ENCODED,
    "encoded_slash_lower": ENCODED, "encoded_backslash": ENCODED, "double_encoded": ENCODED,
    "double_slash": EMPTY, "leading_double_slash": EMPTY, "backslash": CHARS,
    "encoded_nul": ENCODED, "encoded_newline": ENCODED, "encoded_del": ENCODED,
    "invalid_utf8": NOT_UTF8, "malformed_percent": MALFORMED, "truncated_percent": MALFORMED,
}


def test_split_path_refuses_a_raw_final_newline() -> None:
    # `$` matched before a final newline; no HTTP/1.1 parser hands one over, so only directly.
    with pytest.raises(BadPath) as ei:
        split_path(b"/v1/items/a\n")
    assert ei.value.detail == CHARS


@pytest.mark.parametrize("path,case", BAD_PATHS, ids=[i for _, i in BAD_PATHS])
def test_split_path_refuses(path: str, case: str) -> None:
    with pytest.raises(BadPath) as ei:
        split_path(path.encode("latin-1"))
    assert ei.value.reason == "request.bad_path"
    assert ei.value.detail == BAD_PATH_DETAIL[case]


@pytest.mark.parametrize("raw,parts", [
    pytest.param(b"/", [], id="root"),
    pytest.param(b"/v1", ["v1"], id="one_segment"),
    pytest.param(b"/v1/echo", ["v1", "echo"], id="two_segments"),
    pytest.param(b"/v1/echo/", ["v1", "echo", ""], id="trailing_slash"),
    pytest.param(b"/v1/items/%61bc", ["v1", "items", "abc"], id="percent_decoded"),
    pytest.param(b"/v1/items/%C3%A9t%c3%a9", ["v1", "items", "\u00e9t\u00e9"], id="utf8_decoded"),
    pytest.param(b"/v1/items/a%20b", ["v1", "items", "a b"], id="space_decoded"),
    pytest.param(b"/v1/items/.a..b...", ["v1", "items", ".a..b..."], id="dots_inside_a_segment"),
    pytest.param(b"/v1/items/~a-b_c!$&'()*+,;=:@", ["v1", "items", "~a-b_c!$&'()*+,;=:@"], id="pchar"),
])
def test_split_path_accepts_canonical_paths(raw: bytes, parts: list[str]) -> None:
    assert split_path(raw) == parts


@pytest.mark.parametrize("raw", [b"/v1/items/%2e", b"/v1/items/%1F", b"/v1/items/%25", b"/v1/items/ok%2F"])
def test_split_path_refuses_any_forbidden_escape_even_after_a_valid_one(raw: bytes) -> None:
    with pytest.raises(BadPath) as ei:
        split_path(raw.replace(b"/v1/items/", b"/v1/items/%61"))
    assert ei.value.detail == ENCODED


@pytest.mark.parametrize("raw", [b"v1/echo", b"", b"/v1/\xc3\xa9", b"/v1/a b", b"/v1/a?b", b"/v1/a#b", b"/v1/a\tb"])
def test_split_path_refuses_raw_bytes_outside_pchar(raw: bytes) -> None:
    with pytest.raises(BadPath) as ei:
        split_path(raw)
    assert ei.value.detail == CHARS


@pytest.mark.parametrize("path", [p for p, _ in BAD_PATHS], ids=[i for _, i in BAD_PATHS])
def test_bad_path_is_400_over_the_wire(gw: Proc, path: str) -> None:  # noqa: F811
    r = get(gw.port, path)
    assert r.status == 400, r.body
    assert r.json()["reason"] == "request.bad_path"


def test_good_percent_encoding_is_decoded_then_rebuilt(gw: Proc) -> None:  # noqa: F811
    r = get(gw.port, "/v1/items/%61bc")
    assert r.status == 200
    assert r.json()["raw_path"] == "/items/abc"


def test_param_with_disallowed_decoded_character_is_400(gw: Proc) -> None:  # noqa: F811
    r = get(gw.port, "/v1/items/a%20b")
    assert r.status == 400
    assert r.json()["reason"] == "request.bad_path"


def test_long_url_is_414(gw: Proc) -> None:  # noqa: F811
    r = get(gw.port, "/v1/echo?q=" + "a" * 600)
    assert r.status == 414
    assert r.json()["reason"] == "request.uri_too_long"


def test_large_header_block_is_431(gw: Proc) -> None:  # noqa: F811
    r = get(gw.port, "/v1/echo", extra="X-Big: " + "b" * 5000 + "\r\n")
    assert r.status == 431
    assert r.json()["reason"] == "request.headers_too_large"


def test_content_length_and_transfer_encoding_is_400(gw: Proc) -> None:  # noqa: F811
    req = (b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    try:
        r = raw_request(gw.port, req)
    except ConnectionError:
        pytest.fail("refused with a reset instead of a 400")
    assert r.status == 400


# --- HygieneStage in process: each refusal's status, reason id and detail, and what passes -----

LIMITS = Limits(max_url_bytes=256, max_header_bytes=1024, max_headers=10)
HOST = (b"host", b"gw.example")


def stage_scope(path: bytes = b"/v1/echo", *, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
                method: str = "GET", http_version: str = "1.1", raw: bool = True) -> dict[str, Any]:
    ctx = RequestContext("req-hygiene-000000000001", "198.51.100.7",
                         SimpleNamespace(limits=LIMITS))  # type: ignore[arg-type]
    scope: dict[str, Any] = {
        "type": "http", "method": method, "http_version": http_version, "path": path.decode(),
        "query_string": query, "headers": [HOST] if headers is None else headers, "gateway": ctx,
    }
    if raw:
        scope["raw_path"] = path
    return scope


async def run_stage(scope: dict[str, Any]) -> list[dict[str, Any]]:
    """The scopes the next stage was called with (one if the request passed)."""
    seen: list[dict[str, Any]] = []

    async def inner(s: Any, r: Any, w: Any) -> None:
        assert r is receive and w is send, "the next stage must get the same receive and send"
        seen.append(s)

    async def receive() -> dict[str, Any]:
        raise AssertionError("hygiene must not read the body")

    async def send(message: Any) -> None:
        raise AssertionError("hygiene refuses by raising, never by sending")

    await HygieneStage(inner)(scope, receive, send)
    return seen


async def refusal(scope: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        await run_stage(scope)
    return ei.value


def assert_refused(err: GatewayError, status: int, reason: str, detail: str) -> None:
    assert (err.status, err.reason, err.detail) == (status, reason, detail)


async def test_clean_request_passes_with_decoded_parts_and_query() -> None:
    scope = stage_scope(b"/v1/items/%61bc", query=b"a=1&b=2",
                        headers=[HOST, (b"content-length", b"2"), (b"connection", b"keep-alive")])
    seen = await run_stage(scope)
    assert len(seen) == 1 and seen[0] is scope
    assert scope["gateway.parts"] == ["v1", "items", "abc"]
    assert scope["gateway"].query_string == b"a=1&b=2"


async def test_path_is_taken_from_path_when_raw_path_is_absent() -> None:
    scope = stage_scope(b"/v1/echo", raw=False)
    await run_stage(scope)
    assert scope["gateway.parts"] == ["v1", "echo"]
    err = await refusal(stage_scope(b"/v1/../echo", raw=False))
    assert_refused(err, 400, "request.bad_path", DOTS)


async def test_raw_path_is_checked_not_the_decoded_path() -> None:
    # The server hands over `path` already percent-decoded; only `raw_path` shows the %2F.
    scope = stage_scope(b"/v1/items/a%2Fb")
    scope["path"] = "/v1/items/a/b"
    err = await refusal(scope)
    assert_refused(err, 400, "request.bad_path", ENCODED)
    scope = stage_scope(b"/v1/items/%61bc")
    scope["path"] = "/v1/items/abc"
    await run_stage(scope)
    assert scope["gateway.parts"] == ["v1", "items", "abc"]


async def test_bad_path_is_refused_by_the_stage() -> None:
    err = await refusal(stage_scope(b"/v1/items/a%2Fb"))
    assert_refused(err, 400, "request.bad_path", ENCODED)


@pytest.mark.parametrize("path,query", [
    pytest.param(b"/" + b"a" * 254, b"", id="path_only"),      # 255 + the '?' = 256
    pytest.param(b"/v1/echo", b"q=" + b"a" * 245, id="with_query"),  # 8 + 247 + 1 = 256
])
async def test_url_at_the_cap_passes(path: bytes, query: bytes) -> None:
    assert len(path) + len(query) + 1 == LIMITS.max_url_bytes
    assert len(await run_stage(stage_scope(path, query=query))) == 1


@pytest.mark.parametrize("path,query", [
    pytest.param(b"/" + b"a" * 255, b"", id="path_only"),
    pytest.param(b"/v1/echo", b"q=" + b"a" * 246, id="with_query"),
])
async def test_url_one_byte_over_the_cap_is_414(path: bytes, query: bytes) -> None:
    err = await refusal(stage_scope(path, query=query))
    assert_refused(err, 414, "request.uri_too_long", "URL longer than 256 bytes")


async def test_header_count_at_the_cap_passes_and_one_more_is_431() -> None:
    nine = [(b"x-h%d" % i, b"v") for i in range(9)]
    assert len(await run_stage(stage_scope(headers=[HOST, *nine]))) == 1
    err = await refusal(stage_scope(headers=[HOST, *nine, (b"x-h9", b"v")]))
    assert_refused(err, 431, "request.headers_too_large", "more than 10 header fields")


async def test_header_block_at_the_cap_passes_and_one_byte_more_is_431() -> None:
    # Each field counts name + value + 4 (": " and CRLF); the Host field is 4 + 10 + 4 = 18 bytes.
    filler = (b"x-big", b"b" * (1024 - 18 - 5 - 4))
    assert len(await run_stage(stage_scope(headers=[HOST, filler]))) == 1
    err = await refusal(stage_scope(headers=[HOST, (filler[0], filler[1] + b"b")]))
    assert_refused(err, 431, "request.headers_too_large", "header block larger than 1024 bytes")


async def test_each_field_of_the_header_block_counts() -> None:
    # Ten fields of at most 113 bytes each: over the cap only when every field is added up.
    fields = [HOST] + [(b"x-h%d" % i, b"v" * 105) for i in range(9)]
    assert sum(len(k) + len(v) + 4 for k, v in fields) > 1024
    err = await refusal(stage_scope(headers=fields))
    assert err.status == 431 and err.detail == "header block larger than 1024 bytes"


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED"])
async def test_chunked_transfer_encoding_passes(value: bytes) -> None:
    assert len(await run_stage(stage_scope(method="POST", headers=[HOST, (b"transfer-encoding", value)]))) == 1


@pytest.mark.parametrize("value", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity", b"xchunked", b""])
async def test_transfer_encoding_other_than_chunked_is_400(value: bytes) -> None:
    err = await refusal(stage_scope(method="POST", headers=[HOST, (b"transfer-encoding", value)]))
    assert_refused(err, 400, "request.bad_framing", "only chunked transfer-encoding is accepted")


async def test_content_length_and_transfer_encoding_in_process_is_400() -> None:
    for headers in ([HOST, (b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
                    [HOST, (b"transfer-encoding", b"chunked"), (b"content-length", b"5")]):
        err = await refusal(stage_scope(method="POST", headers=headers))
        assert_refused(err, 400, "request.bad_framing", "both Content-Length and Transfer-Encoding")


@pytest.mark.parametrize("headers", [
    pytest.param([HOST, (b"content-length", b"5"), (b"content-length", b"5")], id="two_content_lengths"),
    pytest.param([HOST, (b"content-length", b"5"), (b"content-length", b"6")], id="conflicting_lengths"),
    pytest.param([HOST, (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")], id="two_te"),
])
async def test_repeated_framing_header_is_400(headers: list[tuple[bytes, bytes]]) -> None:
    err = await refusal(stage_scope(method="POST", headers=headers))
    assert_refused(err, 400, "request.bad_framing", "repeated Content-Length or Transfer-Encoding")


async def test_one_content_length_passes() -> None:
    assert len(await run_stage(stage_scope(method="POST", headers=[HOST, (b"content-length", b"5")]))) == 1


@pytest.mark.parametrize("version", ["1.1", "2"])
async def test_missing_host_is_400(version: str) -> None:
    err = await refusal(stage_scope(headers=[(b"accept", b"*/*")], http_version=version))
    assert_refused(err, 400, "request.bad_host", "the Host header is missing")


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_repeated_host_is_400_on_every_version(version: str) -> None:
    err = await refusal(stage_scope(headers=[HOST, (b"host", b"evil.example")], http_version=version))
    assert_refused(err, 400, "request.bad_host", "exactly one Host header is required")


async def test_http_1_0_without_host_passes() -> None:
    assert len(await run_stage(stage_scope(headers=[], http_version="1.0"))) == 1


@pytest.mark.parametrize("connection", [b"upgrade", b"Upgrade", b"keep-alive, Upgrade", b"keep-alive,upgrade "])
async def test_upgrade_is_refused_and_closes_the_connection(connection: bytes) -> None:
    err = await refusal(stage_scope(headers=[HOST, (b"upgrade", b"websocket"), (b"connection", connection)]))
    assert_refused(err, 400, "request.upgrade_not_allowed", "protocol upgrades are not supported on this API")
    assert err.headers == {"Connection": "close"}


async def test_upgrade_is_refused_when_connection_comes_first() -> None:
    err = await refusal(stage_scope(headers=[HOST, (b"connection", b"Upgrade"), (b"upgrade", b"h2c")]))
    assert err.reason == "request.upgrade_not_allowed"


@pytest.mark.parametrize("headers", [
    pytest.param([HOST, (b"upgrade", b"websocket")], id="upgrade_without_connection_upgrade"),
    pytest.param([HOST, (b"connection", b"upgrade")], id="connection_upgrade_without_upgrade"),
    pytest.param([HOST, (b"upgrade", b"h2c"), (b"connection", b"keep-alive")], id="connection_keep_alive"),
    pytest.param([HOST, (b"upgrade", b"h2c"), (b"connection", b"upgrades")], id="connection_not_the_token"),
])
async def test_upgrade_header_that_asks_for_nothing_passes(headers: list[tuple[bytes, bytes]]) -> None:
    assert len(await run_stage(stage_scope(headers=headers))) == 1


async def test_connect_is_refused_and_closes_the_connection() -> None:
    err = await refusal(stage_scope(method="CONNECT"))
    assert_refused(err, 400, "request.upgrade_not_allowed", "CONNECT is not supported")
    assert err.headers == {"Connection": "close"}


# Written out here, not imported from the module, so a header dropped from PROTECTED fails a test.
END_TO_END = [
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "authorization",
    "cookie", "origin", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "forwarded", "via", "x-real-ip", "x-signature", "x-hub-signature", "x-hub-signature-256", "traceparent",
    "tracestate", "x-gateway-identity", "expect", "access-control-request-method",
    "access-control-request-headers", "x-gateway-anything",
]


@pytest.mark.parametrize("named", END_TO_END)
async def test_connection_naming_an_end_to_end_header_is_refused(named: str) -> None:
    for value in (named, named.upper(), f"keep-alive, {named} ", f"close,{named.title()}"):
        err = await refusal(stage_scope(headers=[HOST, (b"connection", value.encode())]))
        assert_refused(err, 400, "request.bad_framing",
                       "the Connection header names a header the gateway needs end to end")


async def test_a_second_connection_header_is_checked_too() -> None:
    err = await refusal(stage_scope(headers=[HOST, (b"connection", b"keep-alive"), (b"connection", b"cookie")]))
    assert err.reason == "request.bad_framing"


@pytest.mark.parametrize("value", [b"close", b"keep-alive", b"keep-alive, x-hop", b"te", b"x-gateway", b""])
async def test_connection_naming_hop_by_hop_headers_passes(value: bytes) -> None:
    assert len(await run_stage(stage_scope(headers=[HOST, (b"connection", value)]))) == 1
