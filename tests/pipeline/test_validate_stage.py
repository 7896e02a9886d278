"""ValidationStage on its own, driven over ASGI with real compiled rules: declared parameters refused
before the body is read, the JSON body's media type (415), its strict parse (once, into
`ctx.body_json`) and its schema (422), and the requests the stage steps aside for (no route, a
preflight, no rules)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.openapi.parameters import ParamRule, compile_param_rule
from gateway.openapi.validation import BodyRule, compile_body_rule
from gateway.pipeline.validate import ValidationStage
from gateway.policy.compiled import CompiledRoute
from tests.pipeline.stage_kit import RECEIVE, SEND, chunk, feed, stage_route, stage_scope

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain")]

ITEM_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "count": {"type": "integer", "minimum": 0}},
}

LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
ITEM_ID = {"name": "id", "in": "path", "schema": {"type": "integer"}}


def params(*declared: dict[str, Any]) -> ParamRule:
    rule = compile_param_rule({}, {}, {"parameters": list(declared)}, "test")
    assert rule is not None
    return rule


def body(schema: dict[str, Any] | None = ITEM_SCHEMA, required: bool = True, json_only: bool = True,
         validate: bool = True) -> BodyRule:
    return compile_body_rule(schema, required, json_only, validate)


def route(param_rules: dict[str, ParamRule] | None = None, body_rules: dict[str, BodyRule] | None = None,
          methods: frozenset[str] = frozenset({"GET", "HEAD", "POST", "PUT"})) -> CompiledRoute:
    return stage_route("items", methods, "/v1/items/{id}", auth="none", max_body_bytes=1000,
                       param_rules=param_rules, body_rules=body_rules)


def context(rt: CompiledRoute | None, query: bytes = b"", path_params: dict[str, str] | None = None) -> RequestContext:
    ctx = RequestContext("req-1", "192.0.2.1", SimpleNamespace())  # type: ignore[arg-type]
    ctx.route = rt
    ctx.query_string = query
    ctx.path_params = dict(path_params or {})
    return ctx


def sending(*parts: bytes) -> Any:
    """A receive() answering one http.request message per part, the last one final."""
    return feed(*(chunk(part, more=i < len(parts) - 1) for i, part in enumerate(parts)))


class Terminal:
    """The app after the stage: records each call and what the context's parsed body was then."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Any, Any]] = []
        self.body_json: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))
        self.body_json.append(scope["gateway"].body_json)


def scope_for(ctx: RequestContext, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None,
              has_body: bool | None = None, preflight: bool = False) -> dict[str, Any]:
    extra = {} if has_body is None else {"has_body": has_body}
    return stage_scope(ctx, method, headers, preflight, **extra)


async def passes(ctx: RequestContext, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None,
                 has_body: bool | None = None, receive: Any = RECEIVE, preflight: bool = False) -> Terminal:
    terminal = Terminal()
    scope = scope_for(ctx, method, headers, has_body, preflight)
    await ValidationStage(terminal)(scope, receive, SEND)
    assert len(terminal.calls) == 1
    assert terminal.calls[0] == (scope, receive, SEND)
    return terminal


async def refused(ctx: RequestContext, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None,
                  has_body: bool | None = None, receive: Any = RECEIVE) -> GatewayError:
    terminal = Terminal()
    with pytest.raises(GatewayError) as info:
        await ValidationStage(terminal)(scope_for(ctx, method, headers, has_body), receive, SEND)
    assert terminal.calls == []
    return info.value


# --- stepping aside -------------------------------------------------------------------------------

async def test_without_a_route_the_request_passes_unread() -> None:
    ctx = context(None, b"limit=0")
    terminal = await passes(ctx, headers=TEXT, has_body=True)
    assert terminal.body_json == [None]
    assert ctx.body is None


async def test_a_preflight_passes_without_any_check() -> None:
    rt = route({"OPTIONS": params(LIMIT), "POST": params(LIMIT)}, {"OPTIONS": body(), "POST": body()})
    ctx = context(rt, b"limit=0")
    terminal = await passes(ctx, "OPTIONS", TEXT, has_body=True, preflight=True)
    assert terminal.body_json == [None]
    assert ctx.body is None


async def test_a_route_without_rules_passes_a_non_json_body_unread() -> None:
    ctx = context(route(), b"limit=0")
    terminal = await passes(ctx, headers=TEXT, has_body=True)
    assert terminal.body_json == [None]
    assert ctx.body is None


async def test_a_route_without_rules_still_parses_a_json_body_strictly() -> None:
    ctx = context(route())
    receive = sending(b'{"a": [1, ', b'2]}')
    terminal = await passes(ctx, headers=JSON, has_body=True, receive=receive)
    assert terminal.body_json == [{"a": [1, 2]}]
    assert ctx.body_json == {"a": [1, 2]}
    assert receive.calls == 2


async def test_a_route_without_rules_refuses_a_duplicate_key_with_its_route_id() -> None:
    ctx = context(route())
    err = await refused(ctx, headers=[(b"content-type", b"application/merge-patch+json")], has_body=True,
                        receive=sending(b'{"a": 1, "a": 2}'))
    assert (err.status, err.reason, err.route_id) == (400, "request.ambiguous", "items")


async def test_rules_for_another_method_do_not_apply() -> None:
    rt = route({"PUT": params(LIMIT)}, {"PUT": body()})
    ctx = context(rt, b"limit=0")
    terminal = await passes(ctx, headers=TEXT, has_body=True)
    assert terminal.body_json == [None]
    assert ctx.body is None


# --- parameters -----------------------------------------------------------------------------------

async def test_an_invalid_query_parameter_is_refused_before_the_body_is_read() -> None:
    rt = route({"POST": params(LIMIT)}, {"POST": body()})
    ctx = context(rt, b"limit=0")
    err = await refused(ctx, headers=JSON, has_body=True)  # RECEIVE fails the test if the body is read
    assert (err.status, err.reason, err.route_id) == (422, "request.invalid_parameter", "items")
    assert err.detail == "a query or path parameter does not match the operation's schema"
    assert err.extensions == {"errors": [{"in": "query", "name": "limit", "detail": "must be >= 1"}]}
    assert ctx.body is None and ctx.body_json is None


async def test_every_failing_parameter_is_named() -> None:
    rt = route({"GET": params(LIMIT, ITEM_ID, {**LIMIT, "name": "page", "required": True})})
    err = await refused(context(rt, b"limit=x", {"id": "seven"}), "GET")
    assert err.extensions == {"errors": [
        {"in": "path", "name": "id", "detail": "must be an integer"},
        {"in": "query", "name": "limit", "detail": "must be an integer"},
        {"in": "query", "name": "page", "detail": "is required"},
    ]}
    assert err.route_id == "items"


async def test_valid_parameters_pass_to_the_body_checks() -> None:
    rt = route({"POST": params(LIMIT, ITEM_ID)}, {"POST": body()})
    ctx = context(rt, b"limit=5&other=0", {"id": "7"})
    terminal = await passes(ctx, headers=JSON, has_body=True, receive=sending(b'{"name": "a"}'))
    assert terminal.body_json == [{"name": "a"}]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_bodiless_method_has_its_parameters_checked(method: str) -> None:
    rt = route({method: params(LIMIT)})
    err = await refused(context(rt, b"limit=-3"), method)
    assert err.reason == "request.invalid_parameter"
    assert err.extensions == {"errors": [{"in": "query", "name": "limit", "detail": "must be >= 1"}]}
    terminal = await passes(context(rt, b"limit=3"), method)
    assert terminal.body_json == [None]


async def test_a_get_with_a_json_only_rule_and_no_body_passes_without_a_media_type() -> None:
    rt = route({"GET": params(LIMIT)}, {"GET": body(required=False)})
    ctx = context(rt, b"limit=2")
    terminal = await passes(ctx, "GET", has_body=False)
    assert terminal.body_json == [None]
    assert ctx.body is None


# --- the body: presence ---------------------------------------------------------------------------

async def test_a_required_body_that_is_absent_is_refused() -> None:
    ctx = context(route(body_rules={"POST": body()}))
    err = await refused(ctx, has_body=False)
    assert (err.status, err.reason, err.route_id) == (422, "request.invalid_body", "items")
    assert err.detail == "the request body does not match the operation's schema"
    assert err.extensions == {"errors": [{"pointer": "", "detail": "a JSON body is required"}]}
    assert ctx.body is None


async def test_a_required_body_that_is_empty_is_refused() -> None:
    receive = sending(b"")
    ctx = context(route(body_rules={"POST": body()}))
    err = await refused(ctx, headers=JSON, has_body=True, receive=receive)
    assert err.reason == "request.invalid_body"
    assert err.extensions == {"errors": [{"pointer": "", "detail": "a JSON body is required"}]}
    assert receive.calls == 1


async def test_an_optional_body_may_be_absent() -> None:
    ctx = context(route(body_rules={"POST": body(required=False)}))
    terminal = await passes(ctx)
    assert terminal.body_json == [None]
    assert ctx.body is None


async def test_an_optional_body_may_be_empty() -> None:
    ctx = context(route(body_rules={"POST": body(required=False)}))
    terminal = await passes(ctx, headers=JSON, has_body=True, receive=sending(b""))
    assert terminal.body_json == [None]
    assert ctx.body == b""


# --- the body: media type -------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    pytest.param(TEXT, id="text_plain"),
    pytest.param([], id="no_content_type"),
    pytest.param([(b"content-type", b"application/json; charset=latin-1")], id="other_charset"),
])
async def test_a_json_only_operation_refuses_any_other_media_type_unread(headers: list[tuple[bytes, bytes]]) -> None:
    ctx = context(route(body_rules={"POST": body(required=False)}))
    err = await refused(ctx, headers=headers, has_body=True)
    assert (err.status, err.reason, err.route_id) == (415, "request.unsupported_media_type", "items")
    assert ctx.body is None


async def test_a_json_only_operation_reads_a_body_labelled_json_other_than_by_its_name() -> None:
    # `+json` is a JSON label: read and validated as such.
    ctx = context(route(body_rules={"POST": body()}))
    err = await refused(ctx, headers=[(b"content-type", b"application/vnd.x+json")], has_body=True,
                        receive=sending(b'{"name": ""}'))
    assert err.extensions == {"errors": [{"pointer": "/name", "detail": "must be at least 1 characters"}]}


async def test_a_json_only_operation_reads_a_json_body_whatever_its_header_case() -> None:
    # The header value is compared case-insensitively by the media-type checks; the header name is
    # the (lower-case) ASGI one.
    ctx = context(route(body_rules={"POST": body()}))
    terminal = await passes(ctx, headers=[(b"content-type", b"Application/JSON")], has_body=True,
                            receive=sending(b'{"name": "x"}'))
    assert terminal.body_json == [{"name": "x"}]


async def test_an_operation_that_also_reads_other_media_types_passes_them_unread_and_unvalidated() -> None:
    ctx = context(route(body_rules={"POST": body(required=False, json_only=False)}))
    terminal = await passes(ctx, headers=TEXT, has_body=True)
    assert terminal.body_json == [None]
    assert ctx.body is None


async def test_a_required_body_of_another_declared_media_type_passes_unread() -> None:
    ctx = context(route(body_rules={"POST": body(required=True, json_only=False)}))
    terminal = await passes(ctx, headers=TEXT, has_body=True)
    assert terminal.body_json == [None]


async def test_an_operation_that_also_reads_other_media_types_still_validates_json() -> None:
    ctx = context(route(body_rules={"POST": body(json_only=False)}))
    err = await refused(ctx, headers=JSON, has_body=True, receive=sending(b'{"count": 1}'))
    assert err.extensions == {"errors": [{"pointer": "/name", "detail": "is required"}]}


# --- the body: parse and schema -------------------------------------------------------------------

async def test_a_valid_body_is_parsed_once_and_handed_on() -> None:
    receive = sending(b'{"name": "a", "count": 2}')
    ctx = context(route(body_rules={"POST": body()}))
    terminal = await passes(ctx, headers=JSON, has_body=True, receive=receive)
    assert terminal.body_json == [{"name": "a", "count": 2}]
    assert ctx.body == b'{"name": "a", "count": 2}'
    assert receive.calls == 1


async def test_an_invalid_body_names_every_failing_field() -> None:
    ctx = context(route(body_rules={"POST": body()}))
    err = await refused(ctx, headers=JSON, has_body=True, receive=sending(b'{"count": -1}'))
    assert (err.status, err.reason, err.route_id) == (422, "request.invalid_body", "items")
    assert err.detail == "the request body does not match the operation's schema"
    errors = err.extensions["errors"] if err.extensions else None
    assert isinstance(errors, list)
    assert sorted(errors, key=lambda e: e["pointer"]) == [
        {"pointer": "/count", "detail": "must be >= 0"},
        {"pointer": "/name", "detail": "is required"},
    ]
    assert ctx.body_json == {"count": -1}


async def test_a_body_that_is_not_json_is_a_bad_json_refusal_with_the_route_id() -> None:
    ctx = context(route(body_rules={"POST": body()}))
    err = await refused(ctx, headers=JSON, has_body=True, receive=sending(b'{"name": NaN}'))
    assert (err.status, err.reason, err.route_id) == (400, "request.bad_json", "items")
    assert ctx.body_json is None


async def test_a_body_an_earlier_stage_parsed_is_not_read_again_but_is_validated() -> None:
    ctx = context(route(body_rules={"POST": body()}))
    ctx.body_json = {"name": ""}
    err = await refused(ctx, headers=JSON, has_body=True)  # RECEIVE fails the test if the body is read
    assert err.extensions == {"errors": [{"pointer": "/name", "detail": "must be at least 1 characters"}]}
    assert ctx.body is None


async def test_a_valid_body_an_earlier_stage_parsed_passes_unread() -> None:
    ctx = context(route(body_rules={"POST": body()}))
    ctx.body_json = {"name": "b"}
    terminal = await passes(ctx, headers=TEXT, has_body=True)
    assert terminal.body_json == [{"name": "b"}]
    assert ctx.body is None


@pytest.mark.parametrize("schema", [ITEM_SCHEMA, None])
async def test_without_a_validator_the_body_is_still_parsed_strictly_and_not_validated(
        schema: dict[str, Any] | None) -> None:
    # validate: false (or no schema): no 422, and no "body required" either, but one strict parse.
    rule = body(schema, validate=False)
    assert rule.validator is None
    ctx = context(route(body_rules={"POST": rule}))
    terminal = await passes(ctx, headers=JSON, has_body=True, receive=sending(b'{"count": -1}'))
    assert terminal.body_json == [{"count": -1}]
    absent = await passes(context(route(body_rules={"POST": rule})))  # required, yet not refused: nothing validates
    assert absent.body_json == [None]
    err = await refused(context(route(body_rules={"POST": rule})), headers=JSON, has_body=True,
                        receive=sending(b'{"x": 1, "x": 1}'))
    assert (err.reason, err.route_id) == ("request.ambiguous", "items")
    err = await refused(context(route(body_rules={"POST": rule})), headers=TEXT, has_body=True)
    assert (err.status, err.route_id) == (415, "items")


async def test_a_head_with_a_body_rule_and_no_body_passes() -> None:
    rt = route(body_rules={"HEAD": body(required=False)})
    terminal = await passes(context(rt), "HEAD", has_body=False)
    assert terminal.body_json == [None]
