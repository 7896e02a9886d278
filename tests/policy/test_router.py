"""Path templates and the default-deny route table (`gateway.policy.router`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.loader import load_policy
from gateway.policy.router import PathTemplate, RouteTable


def parts(path: str) -> list[str]:
    return path.split("/")[1:] if path != "/" else []


@pytest.mark.parametrize("text", [
    pytest.param("v1/agents", id="no_leading_slash"),
    pytest.param("", id="empty"),
    pytest.param("/v1/agents/", id="trailing_slash"),
    pytest.param("/v1//agents", id="empty_segment"),
    pytest.param("/v1/./agents", id="dot_segment"),
    pytest.param("/v1/../agents", id="dotdot_segment"),
    pytest.param("/v1/{a}/{a}", id="param_twice"),
    pytest.param("/v1/{}", id="empty_param"),
    pytest.param("/v1/{1a}", id="param_starts_with_digit"),
    pytest.param("/v1/{a-b}", id="param_with_dash"),
    pytest.param("/v1/x{a}", id="param_inside_literal"),
    pytest.param("/v1/{a}x", id="literal_after_param"),
    pytest.param("/v1/{a", id="unclosed_param"),
    pytest.param("/v1/a%2Fb", id="percent_in_literal"),
    pytest.param("/v1/a b", id="space"),
    pytest.param("/v1/a\\b", id="backslash"),
    pytest.param("/v1/*", id="wildcard"),
    pytest.param("/v1/a?x=1", id="query"),
    pytest.param("/v1/\u00e9", id="non_ascii"),
    pytest.param("/v1/a\x00", id="nul"),
    pytest.param("/v1/x\n", id="literal_final_newline"),  # `$` matched before it
    pytest.param("/v1/{a}\n", id="param_final_newline"),
])
def test_template_compile_errors(text: str) -> None:
    with pytest.raises(ValueError, match="path"):
        PathTemplate(text)


@pytest.mark.parametrize(("text", "params"), [
    ("/", ()),
    ("/v1/agents", ()),
    ("/v1/agents/{agentId}", ("agentId",)),
    ("/v1/orgs/{orgId}/agents/{agentId}", ("orgId", "agentId")),
    ("/v1/a.b_c~d-e", ()),
])
def test_template_compiles(text: str, params: tuple[str, ...]) -> None:
    t = PathTemplate(text)
    assert t.text == text
    assert t.params == params


@pytest.mark.parametrize(("template", "path", "expected"), [
    pytest.param("/v1/agents", "/v1/agents", {}, id="static"),
    pytest.param("/v1/agents/{agentId}", "/v1/agents/a1", {"agentId": "a1"}, id="one_param"),
    pytest.param("/v1/o/{orgId}/a/{agentId}", "/v1/o/org-a/a/x", {"orgId": "org-a", "agentId": "x"},
                 id="two_params"),
    pytest.param("/v1/agents/{agentId}", "/v1/agents", None, id="too_short"),
    pytest.param("/v1/agents/{agentId}", "/v1/agents/a1/extra", None, id="too_long"),
    pytest.param("/v1/agents", "/v1/Agents", None, id="case_sensitive"),
    pytest.param("/v1/agents/{agentId}", "/v1/jobs/a1", None, id="other_literal"),
    pytest.param("/", "/", {}, id="root"),
])
def test_template_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert PathTemplate(template).match(parts(path)) == expected


@pytest.mark.parametrize(("a", "b", "overlap"), [
    pytest.param("/v1/a", "/v1/a", True, id="same_static"),
    pytest.param("/v1/a/{x}", "/v1/a/b", True, id="param_vs_literal"),
    pytest.param("/v1/a/{x}", "/v1/a/{y}", True, id="param_vs_param"),
    pytest.param("/v1/{x}/b", "/v1/a/{y}", True, id="crossed_params"),
    pytest.param("/v1/a", "/v1/b", False, id="different_literals"),
    pytest.param("/v1/a/{x}", "/v1/a/{x}/c", False, id="different_lengths"),
    pytest.param("/v1/a/{x}/c", "/v1/a/{y}/d", False, id="different_tail"),
    pytest.param("/v1/webhooks/kommo/{token}", "/v1/webhooks/kommo/revoked", True, id="kommo_webhooks"),
])
def test_template_overlaps_is_symmetric(a: str, b: str, overlap: bool) -> None:
    ta, tb = PathTemplate(a), PathTemplate(b)
    assert ta.overlaps(tb) is overlap
    assert tb.overlaps(ta) is overlap


def test_render_builds_the_upstream_path_from_the_template() -> None:
    t = PathTemplate("/agents/{agentId}/runs/{runId}")
    assert t.render({"agentId": "a1", "runId": "r9"}) == "/agents/a1/runs/r9"
    assert PathTemplate("/agents").render({}) == "/agents"


GET_HEAD = frozenset({"GET", "HEAD"})


@pytest.fixture
def table() -> RouteTable[str]:
    entries = [
        (PathTemplate("/v1/agents"), GET_HEAD, "agents.list"),
        (PathTemplate("/v1/agents"), frozenset({"POST"}), "agents.create"),
        (PathTemplate("/v1/agents/{agentId}"), GET_HEAD, "agents.read"),
        (PathTemplate("/v1/agents/{agentId}"), frozenset({"PATCH", "DELETE"}), "agents.modify"),
        (PathTemplate("/v1/webhooks/kommo/{token}"), frozenset({"POST"}), "webhooks.kommo"),
        (PathTemplate("/v1/webhooks/kommo/revoked"), GET_HEAD, "webhooks.revoked"),
    ]
    return RouteTable(entries)


@pytest.mark.parametrize(("method", "path", "route", "params"), [
    pytest.param("GET", "/v1/agents", "agents.list", {}, id="static_get"),
    pytest.param("HEAD", "/v1/agents", "agents.list", {}, id="head_implied"),
    pytest.param("POST", "/v1/agents", "agents.create", {}, id="static_post"),
    pytest.param("GET", "/v1/agents/a1", "agents.read", {"agentId": "a1"}, id="param_get"),
    pytest.param("DELETE", "/v1/agents/a1", "agents.modify", {"agentId": "a1"}, id="param_delete"),
    pytest.param("GET", "/v1/webhooks/kommo/revoked", "webhooks.revoked", {}, id="static_beside_param"),
    pytest.param("POST", "/v1/webhooks/kommo/s3cret", "webhooks.kommo", {"token": "s3cret"}, id="token"),
])
def test_lookup_finds_the_single_route(table: RouteTable[str], method: str, path: str, route: str,
                                       params: dict[str, str]) -> None:
    got, got_params, _allow = table.lookup(method, path, parts(path))
    assert got == route
    assert got_params == params


@pytest.mark.parametrize("path", [
    pytest.param("/v1/agent", id="near_miss"),
    pytest.param("/v1/agents/a1/runs", id="longer"),
    pytest.param("/v1", id="prefix"),
    pytest.param("/", id="root"),
    pytest.param("/agents", id="unversioned"),
    pytest.param("/V1/agents", id="case"),
])
def test_undeclared_path_is_not_found(table: RouteTable[str], path: str) -> None:
    route, params, allow = table.lookup("GET", path, parts(path))
    assert route is None and params == {} and allow == []


@pytest.mark.parametrize(("method", "path", "allow"), [
    pytest.param("PUT", "/v1/agents", {"GET", "HEAD", "POST"}, id="static"),
    pytest.param("POST", "/v1/agents/a1", {"GET", "HEAD", "PATCH", "DELETE"}, id="param"),
    # A literal path shadows the template beside it: POST is not offered here (the document agrees).
    pytest.param("DELETE", "/v1/webhooks/kommo/revoked", {"GET", "HEAD"}, id="static_and_param"),
    pytest.param("POST", "/v1/webhooks/kommo/revoked", {"GET", "HEAD"}, id="param_beside_static"),
    pytest.param("GET", "/v1/webhooks/kommo/x", {"POST"}, id="post_only"),
    pytest.param("get", "/v1/agents", {"GET", "HEAD", "POST"}, id="method_case_sensitive"),
])
def test_declared_path_with_undeclared_method_gives_allow(table: RouteTable[str], method: str, path: str,
                                                          allow: set[str]) -> None:
    route, _params, got = table.lookup(method, path, parts(path))
    assert route is None
    assert set(got) == allow


def test_head_is_not_implied_without_get() -> None:
    t = RouteTable([(PathTemplate("/v1/x"), frozenset({"POST"}), "x")])
    route, _, allow = t.lookup("HEAD", "/v1/x", parts("/v1/x"))
    assert route is None and allow == ["POST"]


def test_loaded_route_with_get_also_answers_head(tmp_path: Path) -> None:
    d = tmp_path
    (d / "r.yaml").write_text("routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: none}\n"
                              "  - {id: b, path: /v1/b, methods: [POST], auth: none}\n")
    p = load_policy(d, {}, False)
    assert p.route("a").methods == GET_HEAD  # type: ignore[union-attr]
    assert p.route("b").methods == frozenset({"POST"})  # type: ignore[union-attr]
    route, _, _ = p.table.lookup("HEAD", "/v1/a", parts("/v1/a"))
    assert route is not None and route.id == "a"
    route, _, allow = p.table.lookup("HEAD", "/v1/b", parts("/v1/b"))
    assert route is None and allow == ["POST"]


# --- static segments beat parameters ----------------------------------------------------------


@pytest.mark.parametrize("order", ["static_first", "param_first"])
@pytest.mark.parametrize(("path", "route", "params"), [
    pytest.param("/v1/agents/me", "agents.me", {}, id="users_me"),
    pytest.param("/v1/agents/a1", "agents.read", {"agentId": "a1"}, id="other_id"),
    pytest.param("/v1/agents/me/runs", "me.runs", {}, id="static_then_static"),
    pytest.param("/v1/agents/a1/runs", "agent.runs", {"agentId": "a1"}, id="param_then_static"),
    pytest.param("/v1/agents/me/x", "me.any", {"sub": "x"}, id="leftmost_static_wins"),
])
def test_static_segment_beats_parameter_whatever_the_order(order: str, path: str, route: str,
                                                           params: dict[str, str]) -> None:
    entries = [
        (PathTemplate("/v1/agents/{agentId}"), GET_HEAD, "agents.read"),
        (PathTemplate("/v1/agents/me"), GET_HEAD, "agents.me"),
        (PathTemplate("/v1/agents/{agentId}/runs"), GET_HEAD, "agent.runs"),
        (PathTemplate("/v1/agents/me/runs"), GET_HEAD, "me.runs"),
        (PathTemplate("/v1/agents/me/{sub}"), GET_HEAD, "me.any"),
    ]
    if order == "param_first":
        entries.reverse()
    got, got_params, _ = RouteTable(entries).lookup("GET", path, parts(path))
    assert (got, got_params) == (route, params)


@pytest.mark.parametrize(("a", "b", "same"), [
    pytest.param("/v1/a/{x}", "/v1/a/{y}", True, id="param_names_differ"),
    pytest.param("/v1/a/b", "/v1/a/b", True, id="same_literal"),
    pytest.param("/v1/a/{x}", "/v1/a/b", False, id="static_vs_param"),
    pytest.param("/v1/{x}/b", "/v1/a/{y}", False, id="crossed"),
])
def test_only_same_shape_templates_are_ambiguous(a: str, b: str, same: bool) -> None:
    assert PathTemplate(a).same_shape(PathTemplate(b)) is same
