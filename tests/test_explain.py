"""`gateway explain`: the real pipeline, in process, against the shipped policy."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.explain import explain_main

ROOT = Path(__file__).resolve().parents[1]
POLICY = str(ROOT / "policies")
JWT_SECRET = "test-explain-jwt-secret-0123456789abcdef"
IDENTITY_SECRET = "test-explain-identity-secret-0123456789ab"
WEBHOOK_TOKEN = "test-explain-kommo-path-token-0123"
ALICE = {"sub": "alice", "org_id": "org-a", "org_role": "member"}
JWT_SHAPED = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_ENV", "GATEWAY_REDIS_URL", "GATEWAY_JWT_JWKS_URL", "GATEWAY_JWT_ISSUER",
                 "GATEWAY_TRUSTED_PROXIES", "GATEWAY_AUDIT_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("GATEWAY_IDENTITY_SECRET", IDENTITY_SECRET)
    monkeypatch.setenv("KOMMO_WEBHOOK_SECRET", WEBHOOK_TOKEN)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = explain_main(["--policy", POLICY, *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else {}, out + err


def claims(**over: Any) -> str:
    return json.dumps({**ALICE, **over})


def stage(result: dict[str, Any], name: str) -> dict[str, Any]:
    (step,) = [s for s in result["steps"] if s["stage"] == name]
    return step


def test_allowed_get_shows_the_injected_org(capsys: pytest.CaptureFixture[str]) -> None:
    code, ex, _ = run(capsys, "GET", "/v1/agents?limit=5", "--claims", claims())
    assert code == 0 and ex["allowed"] and ex["status"] == 200
    assert ex["route"]["id"] == "agents.list"
    assert ex["route"]["source"].endswith("routes.yaml:5")
    up = ex["upstream"]
    assert (up["method"], up["path"], up["query"]) == ("GET", "/agents", "limit=5&orgId=org-a")
    assert up["identity"]["org_id"] == "org-a" and up["identity"]["sub"] == "alice"
    assert stage(ex, "tenant")["decision"] == "passed"
    assert stage(ex, "authorization")["decision"] == "stepped aside"
    assert stage(ex, "forward")["decision"] == "forwarded"
    names = [k for k, _ in ex["response_headers"]]
    assert "ratelimit" in names and "vary" in names
    assert any("in-memory" in n for n in ex["notes"])


def test_allowed_post_shows_the_body_after_injection(capsys: pytest.CaptureFixture[str]) -> None:
    code, ex, _ = run(capsys, "POST", "/v1/agents", "--claims", claims(), "--body",
                      '{"name":"x","model":"gpt-4o-mini"}')
    assert code == 0
    assert ex["upstream"]["json"] == {"name": "x", "model": "gpt-4o-mini", "orgId": "org-a"}


@pytest.mark.parametrize(("argv", "status", "reason", "denied_by"), [
    pytest.param(["GET", "/v1/agents?orgId=org-b", "--claims", claims()], 403, "tenant.mismatch", "tenant",
                 id="other_org"),
    pytest.param(["GET", "/v1/agents?orgId=org-a"], 401, "auth.missing_token", "authentication",
                 id="missing_token"),
    pytest.param(["DELETE", "/v1/agents/ag-1", "--claims", claims()], 403, "authz.forbidden", "authorization",
                 id="member_on_admin_route"),
    pytest.param(["GET", "/v1/nothing-here", "--claims", claims()], 404, "route.not_found", "route match",
                 id="unknown_path"),
    pytest.param(["OPTIONS", "/v1/agents", "--origin", "https://evil.example", "-H",
                  "Access-Control-Request-Method: GET"], 403, "cors.origin_denied", "cors",
                 id="preflight_disallowed_origin"),
])
def test_denied(capsys: pytest.CaptureFixture[str], argv: list[str], status: int, reason: str,
                denied_by: str) -> None:
    code, ex, _ = run(capsys, *argv)
    assert code == 1
    assert (ex["allowed"], ex["status"], ex["reason"]) == (False, status, reason)
    assert stage(ex, denied_by)["decision"] == "denied"
    assert reason in stage(ex, denied_by)["note"]
    assert ex["upstream"] is None
    assert stage(ex, "forward")["decision"] == "not reached"


@pytest.mark.parametrize(("argv", "reason", "named"), [
    pytest.param(["GET", "/v1/agents?orgId=org-a&limit=0&cursor=%C2%86"], "request.invalid_parameter",
                 ['query parameter "limit" must be >= 1', 'query parameter "cursor" must match the pattern'],
                 id="parameters"),
    pytest.param(["GET", "/v1/agents/a.b"], "request.invalid_parameter",
                 ['path parameter "agentId" must match the pattern ^[A-Za-z0-9_-]+$'], id="path_parameter"),
    pytest.param(["POST", "/v1/agents", "--body", '{"name":5,"model":"m"}'], "request.invalid_body",
                 ["/name must be of type string"], id="body"),
])
def test_a_validation_denial_names_what_failed(capsys: pytest.CaptureFixture[str], argv: list[str], reason: str,
                                              named: list[str]) -> None:
    code, ex, _ = run(capsys, *argv, "--claims", claims())
    assert code == 1 and (ex["status"], ex["reason"]) == (422, reason)
    note = stage(ex, "validation")["note"]
    assert stage(ex, "validation")["decision"] == "denied"
    assert all(n in note for n in named), note
    assert ex["upstream"] is None


def test_unknown_path_names_no_route(capsys: pytest.CaptureFixture[str]) -> None:
    _, ex, _ = run(capsys, "GET", "/v1/nothing-here")
    assert ex["route"] is None and ex["detail"] == "no route for this path"


def test_allowed_preflight_is_answered_by_cors(capsys: pytest.CaptureFixture[str]) -> None:
    code, ex, _ = run(capsys, "OPTIONS", "/v1/agents", "--origin", "https://app.example.com",
                      "-H", "Access-Control-Request-Method: POST")
    assert code == 0 and ex["status"] == 204
    assert stage(ex, "cors")["decision"] == "answered"
    assert ["access-control-allow-origin", "https://app.example.com"] in ex["response_headers"]


def test_text_output_tells_the_story(capsys: pytest.CaptureFixture[str]) -> None:
    code = explain_main(["--policy", POLICY, "GET", "/v1/agents?orgId=org-b", "--claims", claims()])
    out = capsys.readouterr().out
    assert code == 1
    assert "DENIED 403 tenant.mismatch" in out
    assert "route: agents.list (" in out
    assert re.search(r"tenant\s+DENIED\s+403 tenant.mismatch", out)
    assert re.search(r"authorization\s+not reached", out)


def test_no_token_or_secret_is_ever_printed(capsys: pytest.CaptureFixture[str]) -> None:
    now = int(time.time())
    token = jwt.encode({**ALICE, "iat": now, "exp": now + 60, "aud": "authenticated"}, JWT_SECRET, "HS256")
    outputs = []
    code, ex, text = run(capsys, "GET", "/v1/agents/ag-1", "--token", token)
    assert code == 0 and ex["upstream"]["identity"]["sub"] == "alice"  # verified with the configured secret
    outputs.append(text)
    explain_main(["--policy", POLICY, "GET", "/v1/agents/ag-1", "--token", token])
    outputs.append("".join(capsys.readouterr()))
    code, ex, text = run(capsys, "POST", f"/v1/webhooks/kommo/{WEBHOOK_TOKEN}", "--body", "{}")
    assert code == 0 and ex["route"]["id"] == "webhooks.kommo"
    outputs.append(text)
    explain_main(["--policy", POLICY, "POST", f"/v1/webhooks/kommo/{WEBHOOK_TOKEN}", "--body", "{}"])
    outputs.append("".join(capsys.readouterr()))
    for out in outputs:
        for secret in (token, JWT_SECRET, IDENTITY_SECRET, WEBHOOK_TOKEN):
            assert secret not in out
        assert not JWT_SHAPED.search(out)  # neither the user token nor the signed identity assertion


def test_token_signed_with_another_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    now = int(time.time())
    token = jwt.encode({**ALICE, "exp": now + 60, "aud": "authenticated"}, "x" * 40, "HS256")
    code, ex, _ = run(capsys, "GET", "/v1/agents/ag-1", "--token", token)
    assert code == 1 and ex["status"] == 401 and stage(ex, "authentication")["decision"] == "denied"


@pytest.mark.parametrize("argv", [
    pytest.param(["GET"], id="missing_url"),
    pytest.param(["GET", "/v1/agents", "--claims", "[1]"], id="claims_not_object"),
    pytest.param(["GET", "/v1/agents", "--claims", "{", ], id="claims_not_json"),
    pytest.param(["GET", "v1/agents"], id="relative_url"),
    pytest.param(["GET", "/v1/agents", "-H", "no-colon"], id="bad_header"),
    pytest.param(["GET", "/v1/agents", "--token", "t", "--claims", "{}"], id="token_and_claims"),
    pytest.param(["GET", "http://[::1/v1/agents"], id="unclosed_ipv6_host"),  # was a ValueError traceback
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert explain_main(["--policy", POLICY, *argv]) == 2
    err = capsys.readouterr().err
    assert "gateway explain:" in err and "Traceback" not in err


# What Python's argv decoding makes of a byte that is not UTF-8 (0xFF): a lone surrogate. explain
# failed to encode these (a UnicodeEncodeError traceback); they now reach the pipeline as the bytes
# given, and the stage that judges such bytes on the wire answers.
RAW = "\udcff"


@pytest.mark.parametrize(("argv", "status", "reason"), [
    pytest.param(["GET", f"/v1/ag{RAW}ents"], 400, "request.bad_path", id="path"),
    pytest.param(["POST", "/v1/agents", "--body", RAW], 400, "request.bad_json", id="body"),
    pytest.param(["GET", f"/v1/agents?orgId={RAW}"], 400, "request.ambiguous", id="query_org"),
])
def test_bytes_that_are_not_utf8_are_judged_as_on_the_wire(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                          status: int, reason: str) -> None:
    code, ex, out = run(capsys, *argv, "--claims", claims())
    assert "Traceback" not in out
    assert code == 1 and ex["status"] == status and ex["reason"] == reason, out


def test_a_token_header_or_origin_that_is_not_utf8_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    code, ex, out = run(capsys, "GET", "/v1/agents", "--token", f"a{RAW}b")
    assert code == 1 and ex["status"] == 401 and ex["reason"] == "auth.malformed", out
    code, ex, out = run(capsys, "GET", "/v1/agents?orgId=org-a", "-H", f"X-Note: {RAW}", "--origin", RAW,
                        "--claims", claims())
    assert code == 0 and ex["status"] == 200, out  # obs-text in a value is legal; the origin is not allowed
    assert not any(name.lower() == "access-control-allow-origin" for name, _ in ex["response_headers"])
    assert "not allowed" in stage(ex, "cors")["note"]


@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["GET", "/v1/agents", "--client-ip", "not-an-ip"], "--client-ip must be an IPv4 or IPv6 address",
                 id="client_ip"),
    pytest.param(["GET", "http://a..b/v1/agents"], "URL host is not a valid name", id="host_label_empty"),
])
def test_explain_refuses_what_no_request_can_carry(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   message: str) -> None:
    assert explain_main(["--policy", POLICY, *argv, "--claims", claims()]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_claims_are_refused_in_production(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ENV", "production")
    for name in ("KOMMO_CHANNEL_SECRET", "KOMMO_CLIENT_ID", "KOMMO_CLIENT_SECRET"):
        monkeypatch.setenv(name, f"prod-{name.lower().replace('_', '-')}-0123456789abcdef")
    code = explain_main(["--policy", POLICY, "GET", "/v1/agents", "--claims", claims()])
    err = capsys.readouterr().err
    assert code == 2 and "production" in err


def test_policy_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes:\n  - id: x\n    pathh: /x\n")
    assert explain_main(["--policy", str(tmp_path), "GET", "/x"]) == 2
    assert f"{tmp_path / 'routes.yaml'}:" in capsys.readouterr().err
