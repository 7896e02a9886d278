"""Request hygiene before routing: 414, 431, framing, and the bad-path table."""

from __future__ import annotations

import pytest

from gateway.errors import BadPath
from gateway.pipeline.hygiene import split_path
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


@pytest.mark.parametrize("path", [p for p, _ in BAD_PATHS], ids=[i for _, i in BAD_PATHS])
def test_split_path_refuses(path: str) -> None:
    with pytest.raises(BadPath):
        split_path(path.encode("latin-1"))


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
