"""`gateway check` semantics: `load_policy(dir, env, production)` and its `PolicyError(errors)`.

Every error names `file:line field.path`; every problem in a policy is reported in one run.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.loader import load_policy
from gateway.settings import DEV_ENV_DEFAULTS, Settings, effective_env

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies"

AUTH = """\
auth:
  jwt: {algorithms: [HS256]}
"""

HMAC_WEBHOOK = ("{type: hmac, secret_env: WH_SECRET, header: X-Signature, algorithm: sha1, "
                "encoding: hex, source_ips: any}")
WH_ENV = {"WH_SECRET": "webhook-secret-for-loader-tests-000000000"}


def write(d: Path, **files: str) -> Path:
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(textwrap.dedent(text))
    return d


def load_ok(d: Path, env: Mapping[str, str] | None = None, production: bool = False) -> CompiledPolicy:
    return load_policy(d, dict(env or {}), production)


def errors_of(d: Path, env: Mapping[str, str] | None = None, production: bool = False) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        load_policy(d, dict(env or {}), production)
    assert exc.value.errors, "PolicyError without any message"
    return exc.value.errors


def has(errors: list[str], prefix: str, *words: str) -> bool:
    """Some error starts with the exact `file:line path` prefix and mentions every word."""
    return any(e.startswith(prefix) and all(w in e for w in words) for e in errors)


# --- all errors at once, with file and line ---------------------------------------------------

THREE_MISTAKES = AUTH + """\
routes:
  - id: a.list
    path: /v1/a
    methods: [GET]
    auth: jwt
    tenant: {mode: verify, qery: orgId}
  - id: b.list
    path: /v1/b
    methods: [GETT]
    auth: jwt
  - id: c.list
    path: /v1/c
    methods: [GET]
    auth: jwt
    timeouts: {total: -1}
"""


def test_three_mistakes_in_one_file_are_all_reported_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, routes=THREE_MISTAKES)
    f = tmp_path / "routes.yaml"
    errors = errors_of(tmp_path)
    assert len(errors) == 3, errors
    assert has(errors, f"{f}:8 routes[0].tenant.qery:", "Extra inputs")
    assert has(errors, f"{f}:11 routes[1].methods:", "GETT")
    assert has(errors, f"{f}:17 routes[2].timeouts.total:", "greater than 0")


def test_errors_in_two_files_are_reported_together(tmp_path: Path) -> None:
    write(tmp_path,
          a="routes:\n  - {id: a, path: /v1/a, methods: [GETX], auth: none}\n",
          b="routes:\n  - {id: b, path: /v1/b, methods: [GET], auth: nobody}\n")
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'a.yaml'}:2 routes[0].methods:", "GETX")
    assert has(errors, f"{tmp_path / 'b.yaml'}:2 routes[0].auth:")
    assert len(errors) == 2, errors


def test_errors_in_several_sections_of_one_file_are_all_reported(tmp_path: Path) -> None:
    # One bad section must not hide the others: the security team fixes a policy in one pass.
    write(tmp_path, p=AUTH + """\
        upstream: {url: "http://127.0.0.1:1", extra: 1}
        cors: {allow_origins: [https://a.example], allow_origin: x}
        routes:
          - {id: a, path: /v1/a, methods: [GET], auth: jwt}
        """.replace("        ", ""))
    f = tmp_path / "p.yaml"
    errors = errors_of(tmp_path)
    assert has(errors, f"{f}:3 upstream.extra:", "Extra inputs")
    assert has(errors, f"{f}:4 cors", "allow_origin"), errors
    # ... and the valid `auth:` section of the same file is not dropped along the way.
    assert not any("no auth.jwt section" in e for e in errors), errors


def test_errors_after_an_invalid_route_keep_their_own_index_and_line(tmp_path: Path) -> None:
    # routes[0] fails validation; the webhook error of routes[1] must still point at routes[1].
    write(tmp_path, r=f"""\
        routes:
          - id: bad
            path: /v1/bad
            methods: [GET]
            auth: none
            bogus_key: 1
          - id: wh
            path: /v1/wh
            methods: [POST]
            auth: webhook
            webhook: {HMAC_WEBHOOK.replace("WH_SECRET", "UNSET_SECRET")}
        """)
    f = tmp_path / "r.yaml"
    errors = errors_of(tmp_path, WH_ENV)
    assert has(errors, f"{f}:6 routes[0].bogus_key:", "Extra inputs")
    assert has(errors, f"{f}:11 routes[1].webhook", "UNSET_SECRET"), errors


# --- YAML level --------------------------------------------------------------------------------

def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, r="routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: none}\n"
                      "  - id: b\n    path: /v1/b: x\n    methods: [GET]\n    auth: none\n")
    errors = errors_of(tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'r.yaml'}:4 (yaml):"), errors
    assert "mapping values" in errors[0]


def test_duplicate_key_is_an_error_naming_its_line(tmp_path: Path) -> None:
    # PyYAML would silently keep the last `auth:`, turning a reviewed `jwt` into `none`.
    write(tmp_path, r="""\
        routes:
          - id: a
            path: /v1/a
            methods: [GET]
            auth: jwt
            auth: none
        """)
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'r.yaml'}:6 routes[0].auth:", "duplicate key"), errors


def test_duplicate_top_level_section_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, r="routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: none}\n"
                      "routes:\n  - {id: b, path: /v1/b, methods: [GET], auth: none}\n")
    assert has(errors_of(tmp_path), f"{tmp_path / 'r.yaml'}:3 routes:", "duplicate key")


# --- ${VAR} expansion --------------------------------------------------------------------------

def test_env_expansion_with_and_without_default(tmp_path: Path) -> None:
    write(tmp_path, r="""\
        upstream: {url: "${UP}"}
        defaults:
          max_body_bytes: ${CAP:-1234}
        routes:
          - {id: a, path: "${A_PATH}", methods: [GET], auth: none}
          - {id: b, path: "${B_PATH:-/v1/b}", methods: [GET], auth: none}
        """)
    p = load_ok(tmp_path, {"UP": "http://127.0.0.1:9999", "A_PATH": "/v1/from-env"})
    assert p.upstream.url == "http://127.0.0.1:9999"
    assert {r.template.text for r in p.routes} == {"/v1/from-env", "/v1/b"}
    assert p.route("a") is not None and p.route("a").max_body_bytes == 1234  # type: ignore[union-attr]
    # An empty value takes the default too (`:-` semantics); a set value wins over it.
    p = load_ok(tmp_path, {"UP": "http://h", "A_PATH": "/v1/x", "B_PATH": "/v1/set", "CAP": "7"})
    assert {r.template.text for r in p.routes} == {"/v1/x", "/v1/set"}
    assert p.route("b").max_body_bytes == 7  # type: ignore[union-attr]


def test_unset_variable_without_default_is_an_error_with_line(tmp_path: Path) -> None:
    write(tmp_path, r="""\
        routes:
          - {id: a, path: /v1/a, methods: [GET], auth: none}
          - {id: b, path: "${NOT_SET_ANYWHERE}", methods: [GET], auth: none}
        """)
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'r.yaml'}:3 routes[1].path:", "NOT_SET_ANYWHERE", "not set")


# --- unknown keys everywhere --------------------------------------------------------------------

UNKNOWN_KEYS = [
    pytest.param("top", "colour: red\n", "colour", id="top_level"),
    pytest.param("route", "    colour: red\n", "routes[0].colour", id="route"),
    pytest.param("tenant", "    tenant: {mode: verify, query: orgId, colour: red}\n",
                 "routes[0].tenant.colour", id="tenant"),
    pytest.param("rate_limit", '    rate_limit: {limits: "1/second", key: ip, colour: red}\n',
                 "routes[0].rate_limit", id="route_rate_limit"),
    pytest.param("cors", "    cors: {allow_origins: [https://a.example], colour: red}\n",
                 "routes[0].cors", id="route_cors"),
    pytest.param("timeouts", "    timeouts: {total: 1, colour: red}\n", "routes[0].timeouts.colour",
                 id="route_timeouts"),
    pytest.param("gcors", "cors: {allow_origins: [https://a.example], colour: red}\n", "cors",
                 id="global_cors"),
    pytest.param("grl", 'rate_limits: {default: {limits: "1/second", key: ip}, colour: red}\n',
                 "rate_limits", id="global_rate_limits"),
    pytest.param("defaults", "defaults: {max_body_bytes: 1, colour: red}\n", "defaults.colour",
                 id="defaults"),
    pytest.param("limits", "limits: {colour: red}\n", "limits.colour", id="limits"),
    pytest.param("upstream", "upstream: {url: http://h, colour: red}\n", "upstream.colour", id="upstream"),
    pytest.param("jwt", None, "auth.jwt.colour", id="auth_jwt"),
]


@pytest.mark.parametrize(("where", "snippet", "path"), UNKNOWN_KEYS)
def test_unknown_keys_are_refused_everywhere(tmp_path: Path, where: str, snippet: str | None,
                                             path: str) -> None:
    auth = AUTH if where != "jwt" else "auth:\n  jwt: {algorithms: [HS256], colour: red}\n"
    route = "routes:\n  - id: a\n    path: /v1/a\n    methods: [GET]\n    auth: jwt\n"
    top = ""
    if snippet is not None and snippet.startswith("    "):
        route += snippet
    elif snippet is not None:
        top = snippet
    write(tmp_path, p=auth + top + route)
    errors = errors_of(tmp_path)
    assert any(f" {path}" in e and "colour" in e and e.startswith(f"{tmp_path / 'p.yaml'}:") for e in errors), \
        errors


def test_unknown_key_inside_webhook_section(tmp_path: Path) -> None:
    write(tmp_path, r=f"""\
        routes:
          - id: wh
            path: /v1/wh
            methods: [POST]
            auth: webhook
            webhook: {HMAC_WEBHOOK[:-1]}, colour: red}}
        """)
    errors = errors_of(tmp_path, WH_ENV)
    assert has(errors, f"{tmp_path / 'r.yaml'}:6 routes[0].webhook", "colour"), errors


# --- route semantics ----------------------------------------------------------------------------

def test_route_without_auth_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, r="routes:\n  - {id: a, path: /v1/a, methods: [GET]}\n")
    assert has(errors_of(tmp_path), f"{tmp_path / 'r.yaml'}:2 routes[0].auth:", "required")


@pytest.mark.parametrize(("a", "b", "common"), [
    pytest.param("{id: r1, path: /v1/a, methods: [GET, POST], auth: none}",
                 "{id: r2, path: /v1/a, methods: [POST, PATCH], auth: none}", "POST", id="same_template"),
    pytest.param('{id: r1, path: "/v1/a/{x}", methods: [DELETE], auth: none}',
                 '{id: r2, path: "/v1/a/{y}", methods: [DELETE], auth: none}', "DELETE", id="param_vs_param"),
    pytest.param("{id: r1, path: /v1/a, methods: [GET], auth: none}",
                 "{id: r2, path: /v1/a, methods: [HEAD], auth: none}", "HEAD", id="head_implied_by_get"),
])
def test_two_routes_that_can_match_one_request_are_a_load_error(tmp_path: Path, a: str, b: str,
                                                               common: str) -> None:
    write(tmp_path, r=f"routes:\n  - {a}\n  - {b}\n")
    errors = errors_of(tmp_path)
    assert len(errors) == 1, errors
    e = errors[0]
    assert e.startswith(f"{tmp_path / 'r.yaml'}:3 ")
    assert "'r1'" in e and "'r2'" in e and common in e
    assert f"{tmp_path / 'r.yaml'}:2" in e  # the other route's place too


def test_overlap_across_files_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, a="routes:\n  - {id: r1, path: /v1/a, methods: [GET], auth: none}\n",
          b="routes:\n  - {id: r2, path: /v1/a, methods: [GET], auth: none}\n")
    (e,) = errors_of(tmp_path)
    assert e.startswith(f"{tmp_path / 'b.yaml'}:2 ") and f"{tmp_path / 'a.yaml'}:2" in e


def test_disjoint_routes_on_one_path_load(tmp_path: Path) -> None:
    write(tmp_path, r='routes:\n  - {id: r1, path: "/v1/a/{x}", methods: [GET], auth: none}\n'
                      "  - {id: r2, path: /v1/a/b, methods: [POST], auth: none}\n"
                      '  - {id: r3, path: "/v1/a/{x}/c", methods: [GET], auth: none}\n')
    assert [r.id for r in load_ok(tmp_path).routes] == ["r1", "r2", "r3"]


def test_same_id_twice(tmp_path: Path) -> None:
    write(tmp_path, r="routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: none}\n"
                      "  - {id: a, path: /v1/b, methods: [GET], auth: none}\n")
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'r.yaml'}:3 routes[1].id:", "'a'", f"{tmp_path / 'r.yaml'}:2")


@pytest.mark.parametrize("extra", [
    pytest.param("roles: [admin]", id="roles"),
    pytest.param("scopes: [agents.read]", id="scopes"),
    pytest.param("tenant: {mode: verify, query: orgId}", id="tenant"),
    pytest.param("forward_token: true", id="forward_token"),
])
def test_identity_checks_on_a_public_route_are_an_error(tmp_path: Path, extra: str) -> None:
    write(tmp_path, r=f"routes:\n  - {{id: a, path: /v1/a, methods: [GET], auth: none, {extra}}}\n")
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'r.yaml'}:2 routes[0]", "auth: jwt"), errors


def test_upstream_path_with_undeclared_parameter(tmp_path: Path) -> None:
    write(tmp_path, r='routes:\n  - {id: a, path: "/v1/a/{x}", methods: [GET], auth: none, '
                      'upstream_path: "/a/{y}"}\n')
    assert has(errors_of(tmp_path), f"{tmp_path / 'r.yaml'}:2 routes[0].upstream_path:", "'y'")


def test_tenant_path_naming_a_parameter_not_in_the_path(tmp_path: Path) -> None:
    write(tmp_path, r=AUTH + 'routes:\n  - {id: a, path: "/v1/a/{x}", methods: [GET], auth: jwt, '
                             "tenant: {mode: verify, path: orgId}}\n")
    assert has(errors_of(tmp_path), f"{tmp_path / 'r.yaml'}:4 routes[0].tenant", "orgId")


def test_jwt_route_without_auth_jwt_section(tmp_path: Path) -> None:
    write(tmp_path, r="routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: jwt}\n")
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'r.yaml'}:2 routes[0]", "auth.jwt")


def test_a_section_in_two_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path,
          a=AUTH + "cors: {allow_origins: [https://a.example]}\n"
                   "routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: jwt}\n",
          b="cors: {allow_origins: [https://b.example]}\n")
    errors = errors_of(tmp_path)
    assert has(errors, f"{tmp_path / 'b.yaml'}:1 cors:", str(tmp_path / "a.yaml"))


def test_routes_lists_from_several_files_are_concatenated(tmp_path: Path) -> None:
    write(tmp_path, a="routes:\n  - {id: a, path: /v1/a, methods: [GET], auth: none}\n",
          b="routes:\n  - {id: b, path: /v1/b, methods: [GET], auth: none}\n")
    assert [r.id for r in load_ok(tmp_path).routes] == ["a", "b"]


# --- webhooks and production --------------------------------------------------------------------

def test_webhook_route_without_its_secret_names_route_and_variable(tmp_path: Path) -> None:
    write(tmp_path, r=f"routes:\n  - {{id: hook.one, path: /v1/h, methods: [POST], auth: webhook, "
                      f"webhook: {HMAC_WEBHOOK}}}\n")
    errors = errors_of(tmp_path, {})
    assert has(errors, f"{tmp_path / 'r.yaml'}:2 routes[0].webhook", "hook.one", "WH_SECRET"), errors


def test_shipped_policy_without_kommo_env_names_each_route_and_variable() -> None:
    settings = Settings(env="production")
    env = effective_env(settings, {})
    assert not any(k.startswith("KOMMO_") for k in env)
    errors = errors_of(SHIPPED, env, production=True)
    for route, var in [("webhooks.kommo", "KOMMO_WEBHOOK_SECRET"),
                       ("webhooks.kommo_chat", "KOMMO_CHANNEL_SECRET"),
                       ("webhooks.kommo_revoked", "KOMMO_CLIENT_")]:
        assert any(route + ":" in e and var in e for e in errors), (route, errors)


def test_production_refuses_the_development_defaults() -> None:
    errors = errors_of(SHIPPED, dict(DEV_ENV_DEFAULTS), production=True)
    for var in ("KOMMO_WEBHOOK_SECRET", "KOMMO_CHANNEL_SECRET", "KOMMO_CLIENT_SECRET"):
        assert any(var in e and "development default" in e for e in errors), (var, errors)
    # The same values are fine in development (the README's first command runs on them).
    load_ok(SHIPPED, dict(DEV_ENV_DEFAULTS), production=False)


def test_production_accepts_real_secrets() -> None:
    env = {"KOMMO_WEBHOOK_SECRET": "w" * 40, "KOMMO_CHANNEL_SECRET": "c" * 40,
           "KOMMO_CLIENT_ID": "11111111-2222-3333-4444-555555555555", "KOMMO_CLIENT_SECRET": "s" * 40,
           "GATEWAY_CORS_ORIGINS": "https://app.acme.io,https://admin.acme.io"}
    assert len(load_ok(SHIPPED, env, production=True).routes) == 18


def test_webhook_total_timeout_defaults_to_at_most_two_seconds(tmp_path: Path) -> None:
    write(tmp_path, r=f"""\
        defaults: {{timeouts: {{connect: 5, total: 60}}}}
        routes:
          - {{id: wh, path: /v1/wh, methods: [POST], auth: webhook, webhook: {HMAC_WEBHOOK}}}
          - {{id: wh.connect, path: /v1/wh2, methods: [POST], auth: webhook, timeouts: {{connect: 5}},
              webhook: {HMAC_WEBHOOK}}}
          - {{id: plain, path: /v1/p, methods: [POST], auth: none}}
        """)
    p = load_ok(tmp_path, WH_ENV)
    for rid in ("wh", "wh.connect"):
        r = p.route(rid)
        assert r is not None
        assert r.total_timeout <= 2.0 and r.connect_timeout <= r.total_timeout, rid
    assert p.route("plain").total_timeout == 60  # type: ignore[union-attr]


# --- the shipped policy -------------------------------------------------------------------------

PUBLIC_API = {
    ("GET", "/v1/agents"), ("POST", "/v1/agents"),
    ("GET", "/v1/agents/{agentId}"), ("PATCH", "/v1/agents/{agentId}"), ("DELETE", "/v1/agents/{agentId}"),
    ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/{jobId}"), ("GET", "/v1/jobs/{jobId}/events"),
    ("GET", "/v1/crm/connections"), ("POST", "/v1/crm/connections"),
    ("PATCH", "/v1/crm/connections/{connectionId}"), ("DELETE", "/v1/crm/connections/{connectionId}"),
    ("POST", "/v1/crm/connections/{connectionId}/sync"),
    ("GET", "/v1/kommo/oauth/authorize"), ("GET", "/v1/kommo/oauth/callback"),
    ("POST", "/v1/webhooks/kommo/{token}"), ("POST", "/v1/webhooks/kommo-chat"),
    ("GET", "/v1/webhooks/kommo/revoked"),
}


def test_shipped_policy_loads_and_declares_the_public_api() -> None:
    p = load_policy(SHIPPED, effective_env(Settings(), {}), False)
    declared = {(m, r.template.text) for r in p.routes for m in r.methods if m != "HEAD"}
    assert declared == PUBLIC_API
    by_path = {(m, r.template.text): r for r in p.routes for m in r.methods}
    # Only the Kommo callback is public; webhooks verify their own signature; the rest need a token.
    assert {k for k, r in by_path.items() if r.auth == "none"} == {
        ("GET", "/v1/kommo/oauth/callback"), ("HEAD", "/v1/kommo/oauth/callback")}
    assert {k[1] for k, r in by_path.items() if r.auth == "webhook"} == {
        "/v1/webhooks/kommo/{token}", "/v1/webhooks/kommo-chat", "/v1/webhooks/kommo/revoked"}
    for key in [("DELETE", "/v1/agents/{agentId}"), ("POST", "/v1/crm/connections"),
                ("PATCH", "/v1/crm/connections/{connectionId}"),
                ("POST", "/v1/crm/connections/{connectionId}/sync")]:
        assert by_path[key].roles == frozenset({"admin", "owner"}), key
    for key in [("GET", "/v1/agents"), ("POST", "/v1/agents"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"),
                ("GET", "/v1/crm/connections"), ("POST", "/v1/crm/connections"),
                ("GET", "/v1/kommo/oauth/authorize")]:
        assert by_path[key].tenant is not None, key
    # Versioned public paths map to the upstream's unversioned ones; the secret token is not forwarded.
    assert by_path[("GET", "/v1/agents/{agentId}")].upstream_template.text == "/agents/{agentId}"
    assert by_path[("POST", "/v1/webhooks/kommo/{token}")].upstream_template.text == "/webhooks/kommo"


def test_shipped_webhook_routes_fit_kommos_two_second_budget() -> None:
    p = load_policy(SHIPPED, effective_env(Settings(), {}), False)
    hooks = [r for r in p.routes if r.auth == "webhook"]
    assert len(hooks) == 3
    assert all(r.total_timeout <= 2.0 for r in hooks)


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "nope", {}, False)
    with pytest.raises(PolicyError):
        load_policy(tmp_path, {}, False)
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    errors = errors_of(tmp_path)
    assert any("no routes" in e for e in errors)


# --- authoring: precedence, suggestions, one message per root cause ---------------------------

AUTH_JWT = "auth: {jwt: {algorithms: [HS256], roles: [owner, admin, member, viewer]}}"


def test_users_me_beside_a_parameter_loads_and_static_wins(tmp_path: Path) -> None:
    write(tmp_path, r=f"""\
        {AUTH_JWT}
        routes:
          - {{id: agents.read, path: "/v1/agents/{{agentId}}", methods: [GET], auth: jwt}}
          - {{id: agents.me, path: /v1/agents/me, methods: [GET], auth: jwt}}
        """)
    p = load_ok(tmp_path)
    route, params, _ = p.table.lookup("GET", "/v1/agents/me", ["v1", "agents", "me"])
    assert route is not None and route.id == "agents.me" and params == {}


def test_unknown_key_gets_a_suggestion_and_no_follow_on_error(tmp_path: Path) -> None:
    write(tmp_path, r="""\
        routes:
          - {id: r1, path: /v1/a, methds: [GET], auth: none}
        """)
    errors = errors_of(tmp_path)
    assert len(errors) == 1, errors  # no "methods: Field required" besides
    assert 'routes[0].methds: Extra inputs are not permitted (did you mean "methods"?)' in errors[0]


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param("routes:\n  - {id: r1, path: /v1/a, methods: [GET], auth: none, timeuots: {total: 1}}",
                 '(did you mean "timeouts"?)', id="route_key"),
    pytest.param("cros: {}\nroutes:\n  - {id: r1, path: /v1/a, methods: [GET], auth: none}",
                 '(did you mean "cors"?)', id="section"),
    pytest.param("routes:\n  - {id: r1, path: /v1/a, methods: [GET], auth: none, timeouts: {totl: 1}}",
                 '(did you mean "total"?)', id="nested_model"),
    pytest.param(f"{AUTH_JWT}\nroutes:\n  - {{id: r1, path: /v1/a, methods: [GET], auth: jwt, "
                 "tenant: {mode: verify, qurey: orgId}}", '(did you mean "query"?)', id="feature_section"),
    pytest.param("auth: {jwt: {algorithms: [HS256], org_clam: org_id}}\nroutes:\n"
                 "  - {id: r1, path: /v1/a, methods: [GET], auth: jwt}", '(did you mean "org_claim"?)',
                 id="jwt_section"),
])
def test_did_you_mean(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and needle in errors[0], errors


def test_bad_auth_section_is_one_message_not_one_per_route(tmp_path: Path) -> None:
    write(tmp_path, r="""\
        auth: {jwt: {algorithms: [none]}}
        routes:
          - {id: r1, path: /v1/a, methods: [GET], auth: jwt, roles: [admin]}
          - {id: r2, path: /v1/b, methods: [GET], auth: jwt}
          - {id: r3, path: /v1/c, methods: [GET], auth: jwt}
        """)
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and '"none" is never an acceptable algorithm' in errors[0], errors


@pytest.mark.parametrize(("roles", "needle"), [
    pytest.param("[admn]", 'unknown role \'admn\' (did you mean "admin"?)', id="typo"),
    pytest.param("[Admin]", 'unknown role \'Admin\' (did you mean "admin"?)', id="case"),
    pytest.param("[superadmin]", "unknown role 'superadmin'", id="undeclared"),
])
def test_route_roles_must_be_declared(tmp_path: Path, roles: str, needle: str) -> None:
    write(tmp_path, r=f"""\
        {AUTH_JWT}
        routes:
          - {{id: r1, path: /v1/a, methods: [GET], auth: jwt, roles: {roles}}}
        """)
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and needle in errors[0] and "routes[0].roles[0]" in errors[0], errors


def test_undeclared_roles_default_to_the_token_contract(tmp_path: Path) -> None:
    write(tmp_path, r="""\
        auth: {jwt: {algorithms: [HS256]}}
        routes:
          - {id: r1, path: /v1/a, methods: [GET], auth: jwt, roles: [admin, owner]}
          - {id: r2, path: /v1/b, methods: [GET], auth: jwt, roles: [ownr]}
        """)
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and 'unknown role \'ownr\' (did you mean "owner"?)' in errors[0], errors
    assert "['owner', 'admin', 'member', 'viewer']" in errors[0]


def test_a_policy_file_that_is_not_utf8_is_named_with_the_others_problems(tmp_path: Path) -> None:
    """Every reader of a policy (serve, check, routes, explain, diff, openapi) goes through the
    loader: a file saved in another encoding is one error naming it, not a UnicodeDecodeError."""
    d = write(tmp_path, gateway="version: 1\n", routes="routes: [\n")
    (d / "zz.yaml").write_bytes(b"routes:\n  - id: caf\xe9\n")  # latin-1
    with pytest.raises(PolicyError) as exc:
        load_policy(d, {})
    assert f"{d / 'zz.yaml'}: not UTF-8 text (invalid continuation byte at byte 19)" in exc.value.errors
    assert any("routes.yaml" in e for e in exc.value.errors)  # the other files were still read


def test_the_document_generator_does_not_read_a_policy_without_its_unreadable_file(tmp_path: Path) -> None:
    """read_routes reads sources without compiling; skipping the file would have generated a
    document without that file's routes, silently."""
    from gateway.openapi.generate import read_routes

    d = write(tmp_path, gateway="version: 1\n", routes="routes: []\n")
    (d / "zz.yaml").write_bytes(b"routes:\n  - id: caf\xe9\n")
    with pytest.raises(PolicyError, match="zz.yaml: not UTF-8 text"):
        read_routes(d)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "gateway.internal", "edge_gw",
                                  "gw-1.prod.example.com."])
def test_listen_hosts_that_are_addresses_or_names_are_accepted(host: str) -> None:
    assert Settings(host=host, admin_host=host).host == host


@pytest.mark.parametrize("host", ["not a host", "256.1.1.1", "-bad.example", "a..b", "", "x" * 64 + ".example"])
def test_listen_hosts_that_cannot_be_bound_are_refused_before_serve(host: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be an IP address or a host name"):
        Settings(host=host)


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://cache:6379/0", None),
    ("rediss://cache:6380/15", None),
    ("redis://cache:6379", None),
    ("unix:///run/redis.sock?db=2", None),
    # A sentinel URL's path names the service, not a database.
    ("redis+sentinel://sentinel:26379/mymaster", None),
    ("redis://cache:6379/abc", "the database number must be digits"),
    ("redis://cache:6379/0?db=one", "the database number must be digits"),
    ("redis+sentinel://sentinel:26379/mymaster?db=x", "the database number must be digits"),
])
def test_redis_url_database_numbers(url: str, problem: str | None) -> None:
    from gateway.settings import redis_url_problem

    found = redis_url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found), found
