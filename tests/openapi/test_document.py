"""The shipped OpenAPI document: valid OpenAPI 3.1, one operation per route method and no other,
generated from the upstream's models and the route table (a test fails on drift), and a route table
that disagrees with it is refused at load (so `gateway check` refuses it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from gateway.cli import main as cli_main
from gateway.errors import PolicyError
from gateway.openapi.command import build
from gateway.openapi.document import DOCUMENT_NAME
from gateway.policy.loader import load_policy
from gateway.reasons import BY_ID
from tests.support.gateway_proc import BASE_ENV, ROOT, shipped_policy
from upstream_stub.openapi import document as upstream_document

POLICIES = ROOT / "policies"


def shipped() -> dict:
    return yaml.safe_load((POLICIES / DOCUMENT_NAME).read_text())


def test_document_is_valid_openapi_31() -> None:
    doc = shipped()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_document_covers_every_route_and_nothing_else() -> None:
    policy = load_policy(POLICIES, BASE_ENV)
    doc = shipped()
    expected = {(m.lower(), r.template.text) for r in policy.routes for m in r.methods if m != "HEAD"}
    ops = {(m, p) for p, item in doc["paths"].items() for m, op in item.items()
           if isinstance(op, dict) and not op.get("x-gateway-builtin")}
    assert ops == expected
    assert len(expected) >= 17


def test_document_is_up_to_date_with_upstream_models_and_route_table() -> None:
    text, problems = build(json.dumps(upstream_document()), POLICIES)
    assert not problems
    assert (POLICIES / DOCUMENT_NAME).read_text() == text, (
        "policies/openapi.yaml has drifted; regenerate: "
        "python -m upstream_stub openapi | gateway openapi generate --upstream -")


def resolve(doc: dict, node: dict) -> dict:
    if "$ref" in node:
        target = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def test_security_webhooks_and_refusals_are_described() -> None:
    doc = shipped()
    paths = doc["paths"]
    create = paths["/v1/agents"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AgentCreate"}
    for status, reason in (("401", "auth.expired"), ("403", "tenant.mismatch"), ("422", "request.invalid_body"),
                           ("429", "ratelimit.exceeded"), ("413", "request.body_too_large"),
                           ("415", "request.unsupported_media_type"), ("502", "upstream.unavailable"),
                           ("504", "upstream.timeout"), ("503", "gateway.overloaded"), ("405", "route.method_not_allowed"),
                           ("408", "request.body_timeout"), ("422", "validation.failed")):
        resp = resolve(doc, create["responses"][status])
        schema = resp["content"]["application/problem+json"]["schema"]
        assert reason in schema["allOf"][1]["properties"]["reason"]["enum"], (status, reason)
    assert "Retry-After" in resolve(doc, create["responses"]["429"])["headers"]
    assert {"RateLimit", "RateLimit-Policy"} <= set(create["responses"]["201"]["headers"])
    chat = paths["/v1/webhooks/kommo-chat"]["post"]
    assert chat["security"] == []
    assert any(p["name"] == "X-Signature" and p["in"] == "header" and p["required"] for p in chat["parameters"])
    assert not any("auth.expired" in json.dumps(resolve(doc, r)) for r in chat["responses"].values())
    token_hook = paths["/v1/webhooks/kommo/{token}"]["post"]
    assert token_hook["parameters"][0]["name"] == "token"
    callback = paths["/v1/kommo/oauth/callback"]["get"]
    assert callback["security"] == []
    assert not any("auth.expired" in json.dumps(resolve(doc, r)) for r in callback["responses"].values())


def _revoked_query(doc: dict) -> dict[str, dict]:
    op = doc["paths"]["/v1/webhooks/kommo/revoked"]["get"]
    return {p["name"]: p for p in op["parameters"] if p["in"] == "query"}


def test_the_revoked_hook_declares_the_query_its_verifier_reads() -> None:
    """Kommo sends client_uuid, account_id and signature; the verifier refuses a request without
    each exactly once. The document once declared `client_id`, which nothing reads."""
    query = _revoked_query(shipped())
    assert set(query) == {"client_uuid", "account_id", "signature"}
    assert all(p["required"] for p in query.values())
    assert query["account_id"]["schema"]["maxLength"] == 18  # the upstream's stricter schema is kept


def test_the_generator_declares_the_revoked_query_when_the_upstream_does_not() -> None:
    up = upstream_document()
    up["paths"]["/webhooks/kommo/revoked"]["get"]["parameters"] = [
        {"name": "client_id", "in": "query", "required": False, "schema": {"type": "string"}}]
    text, problems = build(json.dumps(up), POLICIES)
    assert not problems
    query = _revoked_query(yaml.safe_load(text))
    assert {"client_uuid", "account_id", "signature"} <= set(query)
    for name in ("client_uuid", "account_id", "signature"):
        assert query[name]["required"] is True
        assert query[name]["schema"]["minLength"] == 1
    assert query["client_id"]["required"] is False  # the upstream's own parameter, left as it said


def test_tenant_bound_query_parameter_says_what_the_tenant_stage_accepts() -> None:
    """The tenant stage refuses a `+` in the org value (a space to a form decoder, a plus to RFC
    3986): the document must not promise values it refuses in their usual form encoding."""
    routes = yaml.safe_load((POLICIES / "routes.yaml").read_text())["routes"]
    bound = {r["id"]: r["tenant"]["query"] for r in routes if (r.get("tenant") or {}).get("query")}
    assert bound, "the shipped policy binds the org in the query somewhere"
    doc = shipped()
    seen = 0
    for item in doc["paths"].values():
        for op in item.values():
            if not isinstance(op, dict) or op.get("x-gateway-route") not in bound:
                continue
            name = bound[op["x-gateway-route"]]
            param = next(p for p in op["parameters"] if p["in"] == "query" and p["name"] == name)
            pattern = re.compile(param["schema"]["pattern"])
            assert pattern.search("org-a") and pattern.search("9f1c+x") is not None
            assert not pattern.search("org a") and not pattern.search("") and not pattern.search("a\tb")
            assert "%20" in param["description"] and "request.ambiguous" in param["description"]
            seen += 1
    assert seen == len(bound)


def test_every_reason_in_the_document_is_in_the_catalogue() -> None:
    text = (POLICIES / DOCUMENT_NAME).read_text()
    doc = yaml.safe_load(text)
    found = set()
    for item in doc["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                for resp in op.get("responses", {}).values():
                    resp = resolve(doc, resp)
                    schema = resp.get("content", {}).get("application/problem+json", {}).get("schema")
                    if schema:
                        found |= set(schema["allOf"][1]["properties"]["reason"]["enum"])
    assert found and found <= set(BY_ID)


def copy_policies(tmp_path: Path) -> Path:
    return shipped_policy(tmp_path)


def test_route_without_operation_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_policies(tmp_path)
    (d / "extra.yaml").write_text("routes:\n  - id: agents.export\n    path: /v1/agents/export/all\n"
                                  "    methods: [GET]\n    auth: jwt\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(d, BASE_ENV)
    assert any("extra.yaml:2" in e and "agents.export" in e and "has no operation" in e for e in exc.value.errors)
    # and the CLI says so, with a failing exit status
    assert cli_main(["check", str(d)]) != 0
    captured = capsys.readouterr()
    assert "has no operation" in captured.out + captured.err


def test_operation_without_route_is_refused(tmp_path: Path) -> None:
    d = copy_policies(tmp_path)
    routes = (d / "routes.yaml").read_text()
    start = routes.index("  - id: agents.delete")
    end = routes.index("  # --- jobs")
    (d / "routes.yaml").write_text(routes[:start] + routes[end:])
    with pytest.raises(PolicyError) as exc:
        load_policy(d, BASE_ENV)
    assert any("openapi.yaml:" in e and "DELETE /v1/agents/{agentId}" in e and "has no route" in e
               for e in exc.value.errors), exc.value.errors


def test_deprecation_disagreement_is_refused(tmp_path: Path) -> None:
    d = copy_policies(tmp_path)
    routes = (d / "routes.yaml").read_text().replace(
        "  - id: agents.read\n    path: /v1/agents/{agentId}\n    methods: [GET]\n",
        "  - id: agents.read\n    path: /v1/agents/{agentId}\n    methods: [GET]\n"
        "    deprecated: {since: 2026-01-01}\n", 1)
    (d / "routes.yaml").write_text(routes)
    with pytest.raises(PolicyError) as exc:
        load_policy(d, BASE_ENV)
    assert any("`deprecated` disagrees" in e for e in exc.value.errors)


@pytest.mark.parametrize("case,edit,message", [
    ("missing_document", lambda d: (d / DOCUMENT_NAME).unlink(), "there is no openapi.yaml"),
    ("not_31", lambda d: (d / DOCUMENT_NAME).write_text("openapi: 3.0.3\npaths: {}\n"), "OpenAPI 3.1"),
    ("bad_yaml", lambda d: (d / DOCUMENT_NAME).write_text("openapi: [\n"), "(yaml)"),
    ("sunset_before_since", lambda d: (d / "routes.yaml").write_text((d / "routes.yaml").read_text().replace(
        "  - id: agents.read\n", "  - id: agents.read\n    deprecated: {since: 2026-01-01, sunset: 2025-01-01}\n", 1)),
     "is before since"),
    ("bad_link", lambda d: (d / "routes.yaml").write_text((d / "routes.yaml").read_text().replace(
        "  - id: agents.read\n", "  - id: agents.read\n    deprecated: {since: 2026-01-01, link: 'javascript:x'}\n",
        1)), "absolute http(s) URL"),
])
def test_document_problems_are_located(tmp_path: Path, case: str, edit, message: str) -> None:
    d = copy_policies(tmp_path)
    edit(d)
    with pytest.raises(PolicyError) as exc:
        load_policy(d, BASE_ENV)
    assert any(message in e for e in exc.value.errors), exc.value.errors


def test_validate_true_without_a_document_is_refused(tmp_path: Path) -> None:
    d = copy_policies(tmp_path)
    (d / DOCUMENT_NAME).unlink()
    g = (d / "gateway.yaml").read_text().replace("  document: true", "  document: false")
    (d / "gateway.yaml").write_text(g)
    load_policy(d, BASE_ENV)  # no document: no validation, nothing to cross-check
    r = (d / "routes.yaml").read_text().replace("  - id: agents.update\n", "  - id: agents.update\n    validate: true\n", 1)
    (d / "routes.yaml").write_text(r)
    with pytest.raises(PolicyError) as exc:
        load_policy(d, BASE_ENV)
    assert any("validate: true needs an OpenAPI document" in e for e in exc.value.errors)


def test_document_change_changes_the_policy_digest(tmp_path: Path) -> None:
    d = copy_policies(tmp_path)
    before = load_policy(d, BASE_ENV).digest
    p = d / DOCUMENT_NAME
    p.write_text(p.read_text().replace("title: Edge gateway public API", "title: Edge gateway public API v1"))
    assert load_policy(d, BASE_ENV).digest != before


def test_cli_check_reports_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_policies(tmp_path)
    up = tmp_path / "upstream.json"
    up.write_text(json.dumps(upstream_document()))
    assert cli_main(["openapi", "check", "--upstream", str(up), "--policy-dir", str(d)]) == 0
    p = d / DOCUMENT_NAME
    p.write_text(p.read_text().replace("summary: Create an agent", "summary: Create a thing"))
    assert cli_main(["openapi", "check", "--upstream", str(up), "--policy-dir", str(d)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert cli_main(["openapi", "generate", "--upstream", str(up), "--policy-dir", str(d)]) == 0
    assert cli_main(["openapi", "check", "--upstream", str(up), "--policy-dir", str(d)]) == 0


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("nope", "--upstream: not a JSON document: Expecting value", id="not_json"),
    pytest.param("[]", '--upstream: (the document): [] is not of type "object"', id="not_an_object"),
    pytest.param("{}", '--upstream: (the document): "paths" is a required property', id="no_paths"),
    pytest.param('{"paths": []}', "--upstream: paths: [] is not of type", id="paths_a_list"),
    pytest.param('{"paths": {"/agents": {"get": "x"}}}', "--upstream: paths['/agents'].get: \"x\" is not of type",
                 id="operation_a_string"),
    pytest.param('{"paths": {"/agents": {"get": {"responses": {"default": {}}}}}}',
                 "--upstream: paths['/agents'].get.responses: \"default\" does not match", id="default_response"),
    pytest.param('{"paths": {"/agents": {"get": {"responses": {"²00": {}}}}}}',
                 "--upstream: paths['/agents'].get.responses: \"²00\" does not match", id="superscript_code"),
    pytest.param('{"paths": {"/agents": {"get": {"parameters": [{"in": "query"}]}}}}',
                 "--upstream: paths['/agents'].get.parameters[0]: \"name\" is a required property",
                 id="parameter_without_name"),
    pytest.param('{"paths": {}, "components": {"schemas": []}}', "--upstream: components.schemas: [] is not",
                 id="schemas_a_list"),
])
def test_a_malformed_upstream_document_is_named_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    """Each of these was an AttributeError, KeyError or int() traceback, or 'not a JSON document'
    for a document that is JSON."""
    up = tmp_path / "upstream.json"
    up.write_text(text, encoding="utf-8")
    out = tmp_path / "out.yaml"
    code = cli_main(["openapi", "generate", "--upstream", str(up), "--policy-dir", str(POLICIES), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err and not out.exists()


def test_an_unreadable_upstream_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert cli_main(["openapi", "check", "--upstream", str(missing), "--policy-dir", str(POLICIES)]) == 2
    assert f"--upstream: cannot read {missing}" in capsys.readouterr().err
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    assert cli_main(["openapi", "check", "--upstream", str(binary), "--policy-dir", str(POLICIES)]) == 2
    assert f"--upstream: cannot read {binary}" in capsys.readouterr().err
