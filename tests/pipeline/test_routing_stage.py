"""RoutingStage on its own, driven over ASGI with a small route table: the match and what it hands
on (route, parameters, upstream path, preflight flag), default deny (404), 405 with its `Allow`,
OPTIONS answered only as a CORS preflight of a declared method, and path parameters that may not
reach the upstream."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline.routing import RoutingStage
from gateway.policy.compiled import CompiledRoute
from gateway.policy.router import RouteTable
from tests.pipeline.stage_kit import stage_route


def route(rid: str, path: str, methods: set[str], upstream: str) -> CompiledRoute:
    return stage_route(rid, methods, path, upstream, auth="none")


ITEMS = route("items", "/v1/items", {"GET", "POST"}, "/items")
ITEM = route("item", "/v1/items/{id}", {"GET", "PUT"}, "/store/items/{id}")
ANY_KIND = route("any-kind", "/v1/{kind}/{id}", {"PUT", "DELETE"}, "/store/{kind}/{id}")
TABLE = RouteTable([(r.template, r.methods, r) for r in (ITEMS, ITEM, ANY_KIND)])


class Harness:
    def __init__(self) -> None:
        self.reached: list[dict[str, Any]] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            self.reached.append(scope)

        self.stage = RoutingStage(inner)
        self.ctx = RequestContext("req-1", "192.0.2.1", SimpleNamespace(table=TABLE))  # type: ignore[arg-type]

    async def call(self, method: str, parts: list[str], headers: list[tuple[bytes, bytes]] | None = None) -> Any:
        scope: dict[str, Any] = {"type": "http", "method": method, "gateway": self.ctx,
                                 "gateway.parts": parts, "headers": headers or []}
        await self.stage(scope, None, None)  # type: ignore[arg-type]
        return scope

    async def refused(self, method: str, parts: list[str],
                      headers: list[tuple[bytes, bytes]] | None = None) -> GatewayError:
        with pytest.raises(GatewayError) as info:
            await self.call(method, parts, headers)
        assert self.reached == []
        assert self.ctx.route is None
        return info.value


PREFLIGHT = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"GET")]


def preflight(method: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"origin", b"https://app.example"), (b"access-control-request-method", method)]


# --- the match ------------------------------------------------------------------------------------

async def test_a_literal_path_is_matched_and_handed_on_with_its_upstream_path() -> None:
    h = Harness()
    scope = await h.call("POST", ["v1", "items"])
    assert h.reached == [scope]
    assert (h.ctx.route, h.ctx.path_params, h.ctx.upstream_path) == (ITEMS, {}, "/items")
    assert scope["gateway.preflight"] is False


async def test_a_template_is_matched_with_its_parameters_rendered_into_the_upstream_path() -> None:
    h = Harness()
    scope = await h.call("GET", ["v1", "items", "i-42"])
    assert (h.ctx.route, h.ctx.path_params, h.ctx.upstream_path) == (ITEM, {"id": "i-42"}, "/store/items/i-42")
    assert scope["gateway.preflight"] is False
    assert h.reached == [scope]


async def test_every_character_a_parameter_may_carry_reaches_the_upstream_unencoded() -> None:
    h = Harness()
    value = "Az09.-_~@:+="
    await h.call("DELETE", ["v1", "things", value])
    assert h.ctx.route is ANY_KIND
    assert h.ctx.path_params == {"kind": "things", "id": value}
    assert h.ctx.upstream_path == f"/store/things/{value}"


# --- default deny and 405 -------------------------------------------------------------------------

@pytest.mark.parametrize("parts", [["v1", "nothing", "here", "x"], ["v1"], []])
async def test_a_path_no_route_declares_is_404(parts: list[str]) -> None:
    err = await Harness().refused("GET", parts)
    assert (err.status, err.reason, err.detail) == (404, "route.not_found", "no route for this path")
    assert err.headers == {}


async def test_a_method_the_path_does_not_declare_is_405_with_every_allowed_method_once_sorted() -> None:
    # /v1/items/x is both `item` (GET, PUT) and `any-kind` (PUT, DELETE).
    err = await Harness().refused("PATCH", ["v1", "items", "x"])
    assert (err.status, err.reason, err.detail) == (405, "route.method_not_allowed", "PATCH is not allowed here")
    assert err.headers == {"Allow": "DELETE, GET, PUT"}


async def test_405_on_a_literal_path() -> None:
    err = await Harness().refused("DELETE", ["v1", "items"])
    assert (err.status, err.reason) == (405, "route.method_not_allowed")
    assert err.headers == {"Allow": "GET, POST"}


# --- path parameters ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    pytest.param("a b", id="space"),
    pytest.param("a/b", id="slash"),
    pytest.param("caf\u00e9", id="not_ascii"),
    pytest.param("a%2Fb", id="percent"),
    pytest.param("x" * 257, id="too_long"),
    pytest.param("", id="empty"),
    pytest.param("abc\n", id="final_newline"),  # `$` matched before it; hygiene refuses %0A first on the wire
])
async def test_a_parameter_with_characters_that_are_not_allowed_is_400(value: str) -> None:
    err = await Harness().refused("GET", ["v1", "items", value])
    assert (err.status, err.reason, err.detail) == (
        400, "request.bad_path", "path parameter has characters that are not allowed")


async def test_every_parameter_is_checked_not_only_the_first() -> None:
    err = await Harness().refused("PUT", ["v1", "things", "a b"])
    assert (err.status, err.reason) == (400, "request.bad_path")


async def test_a_parameter_of_the_longest_allowed_length_is_accepted() -> None:
    h = Harness()
    await h.call("GET", ["v1", "items", "x" * 256])
    assert h.ctx.path_params == {"id": "x" * 256}


# --- OPTIONS --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", [b"GET", b"get", b"Get"])
async def test_a_preflight_is_matched_to_the_route_of_the_method_it_asks_about(method: bytes) -> None:
    h = Harness()
    scope = await h.call("OPTIONS", ["v1", "items", "i-1"], preflight(method))
    assert (h.ctx.route, h.ctx.path_params, h.ctx.upstream_path) == (ITEM, {"id": "i-1"}, "/store/items/i-1")
    assert scope["gateway.preflight"] is True
    assert scope["method"] == "OPTIONS"  # the request itself stays a preflight
    assert h.reached == [scope]


async def test_a_preflight_for_a_method_the_path_does_not_declare_is_403_cors_method_denied() -> None:
    err = await Harness().refused("OPTIONS", ["v1", "items"], preflight(b"DELETE"))
    assert (err.status, err.reason, err.detail) == (403, "cors.method_denied", "method not allowed for this path")
    assert err.headers == {"Vary": "Origin"}


async def test_a_preflight_asking_for_a_method_that_is_not_text_is_403_not_an_error() -> None:
    err = await Harness().refused("OPTIONS", ["v1", "items"], preflight(b"G\xffT"))
    assert (err.status, err.reason) == (403, "cors.method_denied")


async def test_a_preflight_for_a_path_no_route_declares_is_404() -> None:
    err = await Harness().refused("OPTIONS", ["v1", "nothing", "here", "x"], preflight(b"GET"))
    assert (err.status, err.reason, err.detail) == (404, "route.not_found", "no route for this path")


@pytest.mark.parametrize("headers", [
    pytest.param([], id="plain_options"),
    pytest.param([(b"origin", b"https://app.example")], id="origin_only"),
    pytest.param([(b"access-control-request-method", b"GET")], id="method_only"),
])
async def test_options_that_is_not_a_preflight_is_405_with_the_path_methods(headers: list) -> None:
    err = await Harness().refused("OPTIONS", ["v1", "items"], headers)
    assert (err.status, err.reason, err.detail) == (
        405, "route.method_not_allowed", "OPTIONS is only answered for CORS preflights")
    assert err.headers == {"Allow": "GET, POST"}


async def test_options_that_is_not_a_preflight_on_an_unknown_path_is_404() -> None:
    err = await Harness().refused("OPTIONS", ["v1", "nothing", "here", "x"])
    assert (err.status, err.reason, err.detail) == (404, "route.not_found", "no route for this path")
