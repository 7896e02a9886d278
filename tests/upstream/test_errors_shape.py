"""The upstream's own error classes render the same problem+json body as the gateway's."""

from __future__ import annotations

import json

import pytest

import gateway.errors as gw
import upstream_stub.errors as up

PAIRS = [(up.BadRequest, gw.BadRequest), (up.Unauthorized, gw.Unauthorized), (up.Forbidden, gw.Forbidden),
         (up.NotFound, gw.NotFound), (up.MethodNotAllowed, gw.MethodNotAllowed),
         (up.PayloadTooLarge, gw.PayloadTooLarge), (up.UnsupportedMediaType, gw.UnsupportedMediaType),
         (up.BadGateway, gw.BadGateway), (up.ServiceUnavailable, gw.ServiceUnavailable),
         (up.ApiError, gw.GatewayError)]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda c: c.__name__)
def test_same_body_and_headers_as_the_gateway(ours: type[up.ApiError], theirs: type[gw.GatewayError]) -> None:
    for args in ((), ("some.reason", "a detail"), ("auth.missing_token", None), ("auth.expired", "x")):
        a, b = ours(*args), theirs(*args)
        assert a.body("rid-1") == b.body("rid-1"), args
        assert (a.status, a.headers) == (b.status, b.headers), args


def test_body_fields_and_type_uri() -> None:
    doc = json.loads(up.Conflict("conflict", "already there").body("r"))
    assert doc == {"type": "/v1/docs/errors#conflict", "title": "Conflict", "status": 409,
                   "detail": "already there", "reason": "conflict", "request_id": "r"}
