"""Edge validation: the query and path parameters, and every JSON body, match the operation's schemas.

Parameters first (`gateway/openapi/parameters.py`): each query and path parameter the operation
declares must match its schema, or the request is 422 `request.invalid_parameter` before its body
is read.

Threat: a parser differential. The gateway checks one reading of a body and the upstream acts on
another (duplicate keys: first wins in one parser, last in another). So every body labelled JSON,
on every route, is parsed strictly once (`gateway.tenant.body`: duplicate keys at any depth are
400 `request.ambiguous`, NaN / 1e400 / bad UTF-8 400 `request.bad_json`), and where the route's
operation has a request body schema the parsed value is validated against it before anything is
forwarded: 422 `request.invalid_body` with a JSON pointer and a message per failing field. An
operation that reads only JSON refuses any other media type (415), so a body cannot dodge the check
by being labelled `text/plain`.

The stage sits last before the forwarder: it validates exactly the value the upstream will get
(after tenant binding), and an unauthenticated, unauthorized or rate-limited caller never gets
this far. A body the tenant stage already parsed is not parsed again.
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.errors import InvalidParameter, UnprocessableContent
from gateway.openapi.parameters import ParamRule
from gateway.openapi.validation import BodyRule
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header
from gateway.pipeline.bodylimit import read_body
from gateway.tenant.body import check_json_media_type, is_json_media_type, load_json


class ValidationStage:
    """Declared parameters checked; strict JSON parse (once) of every JSON body; body schema
    validation where the route has one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        route = ctx.route
        if route is None or scope.get("gateway.preflight"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        checks = route.param_rules
        if checks:
            params: ParamRule | None = checks.get(method)
            if params is not None:
                problems = params.errors(ctx.query_string, ctx.path_params)
                if problems:
                    raise InvalidParameter(problems, route_id=route.id)
        rules = route.body_rules
        rule: BodyRule | None = rules.get(method) if rules else None
        has_body = bool(scope.get("gateway.has_body"))
        value = ctx.body_json
        other_media = False  # a body of another media type the operation declares: the upstream's to read
        if value is None and has_body:
            content_type = header(scope, b"content-type")
            if rule is not None and rule.json_only:
                check_json_media_type(content_type, route.id)
            if rule is not None and rule.json_only or is_json_media_type(content_type):
                body = await read_body(scope, receive)
                if body:
                    value = ctx.body_json = load_json(body, route.id)
            else:
                other_media = True
        if rule is not None and rule.validator is not None:
            if value is None:
                if rule.required and not other_media:
                    raise UnprocessableContent([{"pointer": "", "detail": "a JSON body is required"}],
                                               route_id=route.id)
            else:
                errors = rule.errors(value)
                if errors:
                    raise UnprocessableContent(errors, route_id=route.id)
        await self.app(scope, receive, send)
