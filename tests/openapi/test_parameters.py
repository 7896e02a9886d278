"""Query and path parameter checks compiled from the document (gateway/openapi/parameters.py).

The wire tests are in tests/e2e/test_api_contract.py; here every decision of the compiled rule is
pinned at its edges: the decoding, each type's reading of a text, the schema keywords, repeats,
`;`, required parameters, the error cap, and the documents the edge refuses to half-check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import PolicyError
from gateway.openapi.parameters import SEMICOLON, ParamRule, compile_param_rule, form_decode
from gateway.policy.loader import load_policy
from tests.support.gateway_proc import BASE_ENV, shipped_policy


def rule(*params: dict[str, Any], item: list[dict[str, Any]] | None = None,
         doc: dict[str, Any] | None = None) -> ParamRule:
    compiled = compile_param_rule(doc or {}, {"parameters": item or []}, {"parameters": list(params)}, "here")
    assert compiled is not None
    return compiled


def q(name: str, schema: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, **kw}


def errors(r: ParamRule, qs: bytes, path: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    return [(e["in"], e["name"], e["detail"]) for e in r.errors(qs, path or {})]


@pytest.mark.parametrize("raw,text", [
    (b"abc", "abc"), (b"a+b", "a b"), (b"+", " "), (b"+a%2B", " a+"), (b"a%2Bb", "a+b"), (b"%20", " "), (b"%e2%82%ac", "\u20ac"),
    (b"", ""), (b"%41%42", "AB"),
    (b"%", None), (b"%4", None), (b"%G1", None), (b"%C3", None), (b"\xff", None), (b"%ff", None),
])
def test_form_decode(raw: bytes, text: str | None) -> None:
    assert form_decode(raw) == text


INTEGER = q("limit", {"type": "integer", "minimum": 1, "maximum": 100})


@pytest.mark.parametrize("value,detail", [
    ("1", None), ("100", None), ("007", None), ("0", "must be >= 1"), ("101", "must be <= 100"),
    ("-1", "must be >= 1"), ("1" * 64, "must be <= 100"), ("1" * 65, "must be an integer"),
    ("", "must be an integer"), ("1.0", "must be an integer"), ("1e2", "must be an integer"),
    ("%2B5", "must be an integer"), ("+5", "must be an integer"), ("%D9%A5", "must be an integer"),
    ("0x10", "must be an integer"), ("5%00", "must be an integer"), ("--5", "must be an integer"),
    ("5%0A", "must be an integer"),
])
def test_integer(value: str, detail: str | None) -> None:
    got = errors(rule(INTEGER), b"limit=" + value.encode())
    assert got == ([] if detail is None else [("query", "limit", detail)])


@pytest.mark.parametrize("value,detail", [
    ("0.5", None), ("-2", None), ("1e-3", None), ("1E0", None), ("1E2", "must be <= 2"), ("0", None),
    ("2.5", "must be <= 2"), ("1e999", "must be a finite number"), ("nan", "must be a number"),
    ("Infinity", "must be a number"), (".5", "must be a number"), ("1.", "must be a number"),
    ("01", "must be a number"), ("", "must be a number"),
])
def test_number(value: str, detail: str | None) -> None:
    got = errors(rule(q("x", {"type": "number", "maximum": 2})), b"x=" + value.encode())
    assert got == ([] if detail is None else [("query", "x", detail)])


@pytest.mark.parametrize("value,detail", [
    ("true", None), ("false", None), ("True", "must be true or false"), ("1", "must be true or false"),
    ("", "must be true or false"),
])
def test_boolean(value: str, detail: str | None) -> None:
    got = errors(rule(q("b", {"type": "boolean"})), b"b=" + value.encode())
    assert got == ([] if detail is None else [("query", "b", detail)])


def test_boolean_const_applies_to_the_parsed_value() -> None:
    r = rule(q("b", {"type": "boolean", "const": True}))
    assert errors(r, b"b=true") == []
    assert errors(r, b"b=false") == [("query", "b", "must be True")]


def test_string_keywords_and_an_untyped_enum() -> None:
    r = rule(q("s", {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"}),
             q("status", {"enum": ["queued", "running"]}))
    assert errors(r, b"s=ab&status=queued") == []
    assert errors(r, b"s=abc") == []
    assert errors(r, b"s=a") == [("query", "s", "must be at least 2 characters")]
    assert errors(r, b"s=abcd") == [("query", "s", "must be at most 3 characters")]
    assert errors(r, b"s=A1") == [("query", "s", "must match the pattern ^[a-z]+$")]
    assert errors(r, b"status=done") == [("query", "status", "must be one of queued, running")]
    assert errors(r, b"status=queued+") == [("query", "status", "must be one of queued, running")]
    # characters count after decoding: %C3%A9 is one
    assert errors(rule(q("s", {"type": "string", "maxLength": 1})), b"s=%C3%A9") == []


def test_an_untyped_schema_checks_the_text() -> None:
    """With no `type` the text itself is validated, even by keywords a missing value would pass."""
    r = rule(q("s", {"maxLength": 1}))
    assert errors(r, b"s=a") == []
    assert errors(r, b"s=ab") == [("query", "s", "must be at most 1 characters")]


def test_format_is_an_annotation_only() -> None:
    """`format` is not asserted (the validator is compiled with validate_formats=False)."""
    r = rule(q("d", {"type": "string", "format": "date"}), q("e", {"type": "string", "format": "email"}))
    assert errors(r, b"d=not-a-date&e=nobody") == []


def test_a_value_that_is_not_percent_encoded_utf8_is_refused() -> None:
    r = rule(INTEGER, q("s", {"type": "string"}))
    bad = "is not valid percent-encoded UTF-8"
    assert errors(r, b"limit=%FF") == [("query", "limit", bad)]
    assert errors(r, b"s=%C3&limit=%") == [("query", "s", bad), ("query", "limit", bad)]


def test_names_are_decoded_exactly_and_repeats_refused() -> None:
    r = rule(INTEGER)
    assert errors(r, b"limit=5&limit=5") == [("query", "limit", "must be given once")]
    assert errors(r, b"limit=5&limit=5&limit=0") == [("query", "limit", "must be given once")] * 2
    assert errors(r, b"limit=5&li%6Dit=6") == [("query", "limit", "must be given once")]
    assert errors(r, b"li%6Dit=0") == [("query", "limit", "must be >= 1")]
    # other spellings are other parameters to a case-sensitive upstream: forwarded unchecked
    assert errors(r, b"Limit=x&limit%5B%5D=x&limit[]=x&limi=x&%FF=1&=&&") == []
    # an undecodable or undeclared name is skipped, and the parameters after it are still checked
    assert errors(r, b"%FF=1&limit=0") == [("query", "limit", "must be >= 1")]
    assert errors(r, b"x=1&limit=0") == [("query", "limit", "must be >= 1")]
    two = rule(INTEGER, q("s", {"type": "string", "maxLength": 1}))
    assert errors(two, b"limit=5&limit=5&s=ab") == [("query", "limit", "must be given once"),
                                                     ("query", "s", "must be at most 1 characters")]


def test_a_semicolon_never_hides_a_declared_parameter() -> None:
    r = rule(INTEGER)
    assert errors(r, b"a=1;limit=50") == [("query", "limit", SEMICOLON)]
    assert errors(r, b"a=1;li%6Dit=50") == [("query", "limit", SEMICOLON)]
    # a raw `;` in a declared parameter's own segment: a `;`-splitting upstream reads `limit=5`
    assert errors(r, b"limit=5;x=1") == [("query", "limit", SEMICOLON), ("query", "limit", "must be an integer")]
    s = rule(q("s", {"type": "string", "minLength": 2}))
    assert errors(s, b"s=a;bc") == [("query", "s", SEMICOLON)]
    assert errors(s, b"s=a%3Bbc") == []  # an encoded `;` is part of the value for every parser
    assert errors(r, b"a=1;b=2&limit=5") == []
    assert errors(r, b";limit=50") == [("query", "limit", SEMICOLON)]  # a leading `;` too
    assert errors(r, b"a=1;limit") == [("query", "limit", SEMICOLON)]  # a name with no `=`
    assert errors(r, b"a=1;limit=5=6") == [("query", "limit", SEMICOLON)]


def test_required_query_parameters_and_the_error_cap() -> None:
    r = rule(q("code", {"type": "string", "minLength": 1}, required=True), q("state", {"type": "string"}, required=True))
    assert errors(r, b"") == [("query", "code", "is required"), ("query", "state", "is required")]
    assert errors(r, b"code=&state=s") == [("query", "code", "must be at least 1 characters")]
    assert errors(r, b"code=c&state=") == []
    many = rule(*[q(f"p{i}", {"type": "integer"}) for i in range(15)])
    got = many.errors(b"&".join(f"p{i}=x".encode() for i in range(15)), {})
    assert len(got) == 10


def test_path_parameters() -> None:
    r = rule({"name": "id", "in": "path", "required": True,
              "schema": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"}})
    assert errors(r, b"", {"id": "abc"}) == []
    assert errors(r, b"", {"id": "abcd"}) == [("path", "id", "must be at most 3 characters")]
    assert errors(r, b"", {"id": "a.b"}) == [("path", "id", "must match the pattern ^[a-z]+$")]
    assert errors(r, b"id=x", {}) == []  # a query parameter of the same name is another parameter


def test_each_check_knows_where_it_is_and_path_parameters_default_to_required() -> None:
    r = rule(q("limit", {"type": "integer"}), {"name": "id", "in": "path", "schema": {"type": "string"}})
    (limit,), (path,) = r.query.values(), r.path
    assert (limit.name, limit.where, limit.required, limit.kind) == ("limit", "query", False, "integer")
    assert (path.name, path.where, path.required, path.kind) == ("id", "path", True, "string")
    assert r.required_query == ()


def test_operation_parameters_override_the_path_items_and_refs_resolve() -> None:
    doc = {"components": {"parameters": {"Lim": INTEGER},
                          "schemas": {"Small": {"type": "integer", "maximum": 5}}}}
    r = rule(q("limit", {"$ref": "#/components/schemas/Small"}), item=[{"$ref": "#/components/parameters/Lim"}],
             doc=doc)
    assert errors(r, b"limit=6") == [("query", "limit", "must be <= 5")]
    assert errors(r, b"limit=0") == []  # the path item's minimum is replaced, not added
    r = rule(item=[{"$ref": "#/components/parameters/Lim"}], doc=doc)
    assert errors(r, b"limit=0") == [("query", "limit", "must be >= 1")]


def test_a_type_beside_a_ref_is_the_one_read() -> None:
    """The text is read as the schema's own `type`; the `$ref` beside it still applies."""
    r = rule(q("n", {"type": "integer", "$ref": "#/components/schemas/Max5"}),
             doc={"components": {"schemas": {"Max5": {"maximum": 5}}}})
    assert r.query["n"].kind == "integer"
    assert errors(r, b"n=5") == []
    assert errors(r, b"n=6") == [("query", "n", "must be <= 5")]


def _ref_chain(refs: int) -> dict[str, Any]:
    """A document whose S0 reaches `{type: integer, maximum: 5}` after `refs` - 1 more `$ref`s."""
    schemas: dict[str, Any] = {f"S{i}": {"$ref": f"#/components/schemas/S{i + 1}"} for i in range(refs - 1)}
    schemas[f"S{refs - 1}"] = {"type": "integer", "maximum": 5}
    return {"components": {"schemas": schemas}}


def test_the_type_is_read_through_at_most_16_refs() -> None:
    """Deeper chains are not followed: the text is checked as text, and fails an integer schema (fail closed)."""
    deep = q("n", {"$ref": "#/components/schemas/S0"})
    r = rule(deep, doc=_ref_chain(16))
    assert r.query["n"].kind == "integer"
    assert errors(r, b"n=5") == []
    assert errors(r, b"n=6") == [("query", "n", "must be <= 5")]
    r = rule(deep, doc=_ref_chain(17))
    assert r.query["n"].kind is None
    assert errors(r, b"n=5") == [("query", "n", "must be of type integer")]


def test_parameter_references_are_followed_through_a_chain() -> None:
    doc = {"components": {"parameters": {
        "A": {"$ref": "#/components/parameters/B"},
        "B": {"name": "limit", "in": "query", "required": True, "schema": {"type": "integer", "maximum": 5}},
        "Loop": {"$ref": "#/components/parameters/Loop"}}}}
    r = compile_param_rule(doc, {}, {"parameters": [{"$ref": "#/components/parameters/A"}]}, "here")
    assert r is not None
    assert errors(r, b"limit=6") == [("query", "limit", "must be <= 5")]
    assert errors(r, b"") == [("query", "limit", "is required")]
    with pytest.raises(ValueError, match="more than 16 deep"):
        compile_param_rule(doc, {}, {"parameters": [{"$ref": "#/components/parameters/Loop"}]}, "here")


def test_header_and_cookie_parameters_are_not_compiled_here() -> None:
    only = [{"name": "X-Signature", "in": "header", "schema": {"type": "string"}},
            {"name": "sid", "in": "cookie", "schema": {"type": "string"}}]
    assert compile_param_rule({}, {}, {"parameters": only}, "here") is None
    assert compile_param_rule({}, {}, {}, "here") is None
    r = compile_param_rule({}, {}, {"parameters": [*only, INTEGER]}, "here")  # the ones after them still are
    assert r is not None and set(r.query) == {"limit"} and r.path == ()


@pytest.mark.parametrize("param,why", [
    (q("ids", {"type": "array", "items": {"type": "string"}}), "type 'array'"),
    (q("f", {"type": "object"}), "type 'object': only string, integer, number, boolean are checked; "
                                 "set validate: false on the route)"),
    (q("f", {"type": ["string", "null"]}), "type ['string', 'null']"),
    ({"name": "f", "in": "query", "content": {"application/json": {"schema": {}}}}, "only a parameter with a `schema`"),
    ({"name": "f", "in": "query"}, "only a parameter with a `schema`"),
    ({"name": "f", "in": "query", "schema": {"type": "string"}, "content": {"text/plain": {"schema": {}}}},
     "only a parameter with a `schema`"),
    (q("f", {"type": "string"}, style="deepObject"), "style 'deepObject'"),
    ({"name": "id", "in": "path", "style": "matrix", "schema": {"type": "string"}}, "style 'matrix'"),
    ({"$ref": "#/components/parameters/Nope"}, "does not resolve"),
    ({"$ref": "other.yaml#/x"}, "does not resolve"),
    (q("f", {"type": "string", "pattern": "("}), "does not compile"),
    (q("f", {"type": "string", "minLength": -1}), "does not compile"),
    (q("f", {"$ref": "#/components/schemas/Nope"}), "does not compile"),
    (q("f", {"$ref": "#/components/schemas/Arr"}), "type 'array'"),
    ("limit", "must be a mapping"),
    ({"in": "query", "schema": {"type": "string"}}, "needs a `name`"),
    ({"name": "f", "schema": {"type": "string"}}, "needs a `name` and an `in`"),
    ({"name": "f", "in": "body", "schema": {"type": "string"}}, "an `in` of query, path, header or cookie"),
    ({"name": 5, "in": "query", "schema": {"type": "string"}}, "needs a `name`"),
])
def test_documents_the_edge_cannot_enforce_are_refused_at_load(param: Any, why: str) -> None:
    with pytest.raises(ValueError, match="here") as exc:
        compile_param_rule({"components": {"schemas": {"Arr": {"type": "array"}}}}, {}, {"parameters": [param]},
                           "here")
    assert why in str(exc.value)


def _policy(tmp_path: Path, routes_edit: tuple[str, str] | None = None, doc_edit: tuple[str, str] | None = None) -> Path:
    d = shipped_policy(tmp_path)
    for name, edit in (("routes.yaml", routes_edit), ("openapi.yaml", doc_edit)):
        if edit is not None:
            text = (d / name).read_text()
            assert edit[0] in text, edit[0]
            (d / name).write_text(text.replace(edit[0], edit[1], 1))
    return d


def test_the_shipped_policy_compiles_parameter_rules_and_head_shares_get(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path), BASE_ENV)
    routes = {r.id: r for r in policy.routes}
    agents = routes["agents.list"].param_rules
    assert set(agents) == {"GET", "HEAD"} and agents["HEAD"] is agents["GET"]
    assert set(agents["GET"].query) == {"orgId", "limit", "cursor"}
    assert [c.name for c in routes["agents.read"].param_rules["GET"].path] == ["agentId"]


def test_validate_false_on_a_route_compiles_no_parameter_rules(tmp_path: Path) -> None:
    d = _policy(tmp_path, routes_edit=("  - id: agents.list\n", "  - id: agents.list\n    validate: false\n"))
    routes = {r.id: r for r in load_policy(d, BASE_ENV).routes}
    assert routes["agents.list"].param_rules is None
    assert routes["agents.read"].param_rules is not None


def test_a_parameter_the_edge_cannot_check_fails_the_policy_load(tmp_path: Path) -> None:
    d = _policy(tmp_path, doc_edit=("        in: query\n        name: cursor\n",
                                    "        in: query\n        name: cursor\n        style: deepObject\n"))
    with pytest.raises(PolicyError) as exc:
        load_policy(d, BASE_ENV)
    text = str(exc.value)
    assert "openapi.yaml" in text and 'query parameter "cursor"' in text and "validate: false" in text
