"""The `gateway` command line, run as a real subprocess: check, routes, token, serve refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jwt
import pytest

from gateway.settings import DEV_IDENTITY_SECRET, DEV_JWT_SECRET
from tests.policy.test_loader import THREE_MISTAKES

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies"
STRONG = "a-strong-production-secret-0123456789abcdef"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` with a clean environment (no GATEWAY_* / KOMMO_* from the caller)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_"))}
    base["PYTHONPATH"] = str(ROOT)
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=timeout)


# The same three-mistake policy the loader tests use; here it goes through the CLI.


def test_check_shipped_policy_exits_zero() -> None:
    r = run("check", str(SHIPPED))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: 18 routes")


def test_check_defaults_to_the_policy_dir_setting() -> None:
    r = run("check", env={"GATEWAY_POLICY_DIR": str(SHIPPED)})
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_prints_all_three_mistakes_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(THREE_MISTAKES)
    f = tmp_path / "routes.yaml"
    r = run("check", str(tmp_path))
    assert r.returncode == 2
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    assert any(line.startswith(f"{f}:8 routes[0].tenant.qery:") for line in lines)
    assert any(line.startswith(f"{f}:11 routes[1].methods:") and "GETT" in line for line in lines)
    assert any(line.startswith(f"{f}:17 routes[2].timeouts.total:") for line in lines)
    assert "3 error(s)" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("text", [
    pytest.param("routes: [\n", id="yaml_syntax"),
    pytest.param("routes:\n  - {id: a, path: /v1/a, methods: [GET]}\n", id="no_auth"),
    pytest.param("- just\n- a list\n", id="not_a_mapping"),
])
def test_check_exits_two_on_any_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    r = run("check", str(tmp_path))
    assert r.returncode == 2
    assert r.stdout.startswith(f"{tmp_path / 'p.yaml'}:")
    assert "Traceback" not in r.stderr


def test_check_in_production_without_kommo_secrets_exits_two() -> None:
    r = run("check", str(SHIPPED), env={"GATEWAY_ENV": "production"})
    assert r.returncode == 2
    assert "KOMMO_WEBHOOK_SECRET" in r.stdout and "webhooks.kommo" in r.stdout


def test_check_missing_directory_exits_two(tmp_path: Path) -> None:
    r = run("check", str(tmp_path / "absent"))
    assert r.returncode == 2
    assert "does not exist" in r.stdout and "Traceback" not in r.stderr


def test_routes_prints_every_route_id() -> None:
    r = run("routes", str(SHIPPED))
    assert r.returncode == 0, r.stderr
    ids = {line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()}
    assert ids == {
        "agents.list", "agents.create", "agents.read", "agents.update", "agents.delete",
        "jobs.list", "jobs.create", "jobs.read", "jobs.events",
        "crm.connections.list", "crm.connections.create", "crm.connections.modify", "crm.connections.sync",
        "kommo.oauth.authorize", "kommo.oauth.callback",
        "webhooks.kommo", "webhooks.kommo_chat", "webhooks.kommo_revoked",
    }


def test_routes_json_parses() -> None:
    r = run("routes", "--json", str(SHIPPED))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 18
    by_id = {row["id"]: row for row in rows}
    assert by_id["agents.read"]["path"] == "/v1/agents/{agentId}"
    assert by_id["agents.read"]["upstream"] == "/agents/{agentId}"
    assert by_id["agents.read"]["methods"] == ["GET", "HEAD"]
    assert by_id["agents.delete"]["roles"] == ["admin", "owner"]
    assert by_id["kommo.oauth.callback"]["auth"] == "none"
    assert by_id["webhooks.kommo"]["upstream"] == "/webhooks/kommo"
    assert all(row["source"].startswith(str(SHIPPED / "routes.yaml") + ":") or
               row["source"].startswith("policies/routes.yaml:") for row in rows)


@pytest.mark.parametrize("args", [("routes", "--json"), ("check",)])
def test_a_reader_that_leaves_early_gets_no_traceback(args: tuple[str, ...]) -> None:
    """`gateway routes | head -1`: the reader closes the pipe; the command ends quietly, exit 1."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command writes a byte: every write fails with EPIPE
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_"))}
    base["PYTHONPATH"] = str(ROOT)
    try:
        r = subprocess.run([sys.executable, "-m", "gateway", *args, str(SHIPPED)], cwd=ROOT, env=base,
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr


def test_routes_on_a_broken_policy_exits_two(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(THREE_MISTAKES)
    r = run("routes", str(tmp_path))
    assert r.returncode == 2
    assert len(r.stdout.splitlines()) == 3


def test_token_verifies_with_the_dev_secret() -> None:
    r = run("token", "--sub", "a", "--org", "o")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated",
                        options={"require": ["exp", "iat", "sub"]})
    assert claims["sub"] == "a" and claims["org_id"] == "o" and claims["org_role"] == "member"
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, DEV_IDENTITY_SECRET, algorithms=["HS256"], audience="authenticated")


def test_token_uses_the_configured_secret_role_issuer_and_audience() -> None:
    r = run("token", "--sub", "bob", "--org", "org-b", "--role", "admin", "--ttl", "60",
            env={"GATEWAY_JWT_SECRET": STRONG, "GATEWAY_JWT_ISSUER": "https://idp.example",
                 "GATEWAY_JWT_AUDIENCE": "api"})
    assert r.returncode == 0, r.stderr
    claims = jwt.decode(r.stdout.strip(), STRONG, algorithms=["HS256"], audience="api",
                        issuer="https://idp.example")
    assert claims["org_role"] == "admin" and claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize("args", [
    pytest.param(["--sub", "", "--org", "o"], id="empty_sub"),
    pytest.param(["--sub", "a", "--org", "  "], id="blank_org"),
])
def test_token_with_a_blank_sub_or_org_is_not_minted(args: list[str]) -> None:
    """The gateway reads a blank claim as missing: such a token would be refused on every route."""
    r = run("token", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert "must not be blank" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("env", [
    pytest.param({"GATEWAY_ENV": "production"}, id="no_secret"),
    pytest.param({"GATEWAY_ENV": "production", "GATEWAY_JWT_SECRET": STRONG}, id="with_strong_secret"),
])
def test_token_is_refused_in_production(env: dict[str, str]) -> None:
    r = run("token", "--sub", "a", "--org", "o", env=env)
    assert r.returncode == 2
    assert r.stdout == ""  # nothing that looks like a token
    assert "production" in r.stderr


@pytest.mark.parametrize(("env", "variable", "why"), [
    pytest.param({}, "GATEWAY_JWT_SECRET", "must be set", id="no_secrets"),
    pytest.param({"GATEWAY_JWT_SECRET": DEV_JWT_SECRET, "GATEWAY_IDENTITY_SECRET": STRONG},
                 "GATEWAY_JWT_SECRET", "development default", id="dev_jwt_secret"),
    pytest.param({"GATEWAY_JWT_SECRET": STRONG, "GATEWAY_IDENTITY_SECRET": DEV_IDENTITY_SECRET},
                 "GATEWAY_IDENTITY_SECRET", "development default", id="dev_identity_secret"),
    pytest.param({"GATEWAY_JWT_SECRET": "short", "GATEWAY_IDENTITY_SECRET": STRONG},
                 "GATEWAY_JWT_SECRET", "shorter", id="weak_jwt_secret"),
    pytest.param({"GATEWAY_JWT_SECRET": STRONG}, "GATEWAY_IDENTITY_SECRET", "must be set",
                 id="no_identity_secret"),
    pytest.param({"GATEWAY_JWT_SECRET": STRONG, "GATEWAY_IDENTITY_SECRET": STRONG + "-id"},
                 "GATEWAY_AUDIT_KEY", "must be set", id="no_audit_key"),
    pytest.param({"GATEWAY_JWT_SECRET": STRONG, "GATEWAY_IDENTITY_SECRET": STRONG + "-id",
                  "GATEWAY_AUDIT_KEY": "k1:short"}, "GATEWAY_AUDIT_KEY", "shorter", id="weak_audit_key"),
])
def test_serve_refuses_to_start_in_production_with_dev_or_weak_secrets(
        env: dict[str, str], variable: str, why: str) -> None:
    r = run("serve", env={"GATEWAY_ENV": "production", "GATEWAY_POLICY_DIR": str(SHIPPED),
                          "GATEWAY_PORT": "1", **env}, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert any(variable in line and why in line and "refusing to start" in line
               for line in r.stderr.splitlines()), r.stderr


def test_serve_refuses_production_when_policy_secrets_are_dev_defaults() -> None:
    env = {"GATEWAY_ENV": "production", "GATEWAY_POLICY_DIR": str(SHIPPED), "GATEWAY_PORT": "1",
           "GATEWAY_JWT_SECRET": STRONG, "GATEWAY_IDENTITY_SECRET": STRONG + "-id",
           "GATEWAY_AUDIT_KEY": "k1:" + STRONG + "-audit",
           "KOMMO_WEBHOOK_SECRET": "dev-only-kommo-webhook-path-token",
           "KOMMO_CHANNEL_SECRET": "c" * 40, "KOMMO_CLIENT_ID": "id", "KOMMO_CLIENT_SECRET": "s" * 40}
    r = run("serve", env=env, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "KOMMO_WEBHOOK_SECRET" in r.stderr and "webhooks.kommo" in r.stderr


def test_serve_refuses_a_broken_policy(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(THREE_MISTAKES))
    r = run("serve", env={"GATEWAY_POLICY_DIR": str(tmp_path), "GATEWAY_PORT": "1"}, timeout=60)
    assert r.returncode == 2
    assert "3 policy error(s)" in r.stderr
