"""Broken set-ups, each run through `gateway check` AND `gateway serve`: both refuse with the same
one-line message naming what to fix, exit 2, and never print a Python traceback."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway_proc import shipped_policy
from tests.support.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies"


def strong() -> str:
    return secrets.token_urlsafe(40)


def production() -> dict[str, str]:
    """A production environment that starts: every secret strong and distinct, real CORS origins."""
    return {"GATEWAY_ENV": "production", "GATEWAY_JWT_SECRET": strong(), "GATEWAY_IDENTITY_SECRET": strong(),
            "KOMMO_WEBHOOK_SECRET": strong(), "KOMMO_CHANNEL_SECRET": strong(),
            "KOMMO_CLIENT_ID": "11111111-2222-3333-4444-555555555555", "KOMMO_CLIENT_SECRET": strong(),
            "GATEWAY_CORS_ORIGINS": "https://app.acme-corp.io,https://admin.acme-corp.io"}


def edit(old: str, new: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        f = d / "gateway.yaml"
        text = f.read_text()
        assert old in text, old
        f.write_text(text.replace(old, new))
    return apply


def edit_routes(old: str, new: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        f = d / "routes.yaml"
        text = f.read_text()
        assert old in text, old
        f.write_text(text.replace(old, new, 1))
    return apply


def write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


def same(env: dict[str, str], a: str, b: str) -> dict[str, str]:
    env[a] = env[b]
    return env


# (id, environment, policy edit, what the one line must say)
CASES: list[Any] = [
    pytest.param({"GATEWAY_JWT_JWKS_URL": "notaurl"}, None, "GATEWAY_JWT_JWKS_URL must be an https:// URL",
                 id="jwks_url_not_a_url"),
    pytest.param({}, edit("algorithms: [HS256, RS256, ES256, EdDSA]", "algorithms: [RS256]"),
                 "needs GATEWAY_JWT_JWKS_URL", id="rs256_policy_without_jwks"),
    pytest.param({"GATEWAY_JWT_JWKS_URL": "https://idp.test/jwks.json"},
                 edit("algorithms: [HS256, RS256, ES256, EdDSA]", "algorithms: [HS256]"),
                 "GATEWAY_JWT_JWKS_URL is set but auth.jwt.algorithms", id="hs256_policy_with_jwks_only"),
    pytest.param({"GATEWAY_ENV": "production"}, None, "GATEWAY_JWT_SECRET or GATEWAY_JWT_JWKS_URL must be set",
                 id="production_without_secrets"),
    pytest.param(lambda: same(production(), "GATEWAY_IDENTITY_SECRET", "GATEWAY_JWT_SECRET"), None,
                 "GATEWAY_IDENTITY_SECRET equals GATEWAY_JWT_SECRET", id="identity_equals_jwt_secret"),
    pytest.param(lambda: same(production(), "GATEWAY_IDENTITY_SECRET", "KOMMO_CHANNEL_SECRET"), None,
                 "GATEWAY_IDENTITY_SECRET equals KOMMO_CHANNEL_SECRET", id="identity_equals_webhook_secret"),
    pytest.param(lambda: {**production(), "GATEWAY_JWT_SECRET": "a" * 32}, None,
                 "GATEWAY_JWT_SECRET has only 1 distinct characters", id="jwt_secret_one_char_repeated"),
    pytest.param(lambda: {**production(), "GATEWAY_IDENTITY_SECRET": "Pa55word!" * 4}, None,
                 "GATEWAY_IDENTITY_SECRET has only", id="identity_secret_short_pattern"),
    pytest.param(lambda: {**production(), "KOMMO_CHANNEL_SECRET": "0123456789abcdefghijklmnopqrstuv" * 2}, None,
                 "KOMMO_CHANNEL_SECRET is a 32-character pattern repeated", id="webhook_secret_repeated"),
    pytest.param(lambda: {**production(), "GATEWAY_JWT_JWKS_URL": "http://idp.acme-corp.io/jwks.json"}, None,
                 "GATEWAY_JWT_JWKS_URL must use https:// in production", id="http_jwks_in_production"),
    pytest.param(lambda: {k: v for k, v in production().items() if k != "GATEWAY_CORS_ORIGINS"}, None,
                 "'https://app.example.com': example / local origins are refused in production",
                 id="placeholder_cors_in_production"),
    pytest.param(lambda: {**production(), "GATEWAY_CORS_ORIGINS": "https://localhost:3000"}, None,
                 "example / local origins are refused", id="localhost_cors_in_production"),
    pytest.param({"GATEWAY_PORT": "eighty"}, None, "GATEWAY_PORT: Input should be a valid integer",
                 id="port_not_a_number"),
    pytest.param({"GATEWAY_WORKERS": "0"}, None, "GATEWAY_WORKERS: Input should be greater than or equal to 1",
                 id="zero_workers"),
    pytest.param({"GATEWAY_ENV": "prod"}, None, "GATEWAY_ENV: Input should be 'development' or 'production'",
                 id="env_misspelt"),
    pytest.param({"GATEWAY_REDIS_URL": "http://cache:6379"}, None, "GATEWAY_REDIS_URL must start with redis://",
                 id="redis_url_scheme"),
    # check passed it, and serve then failed at start with a ValueError traceback (SELECT int('abc')).
    pytest.param({"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/abc"}, None,
                 "GATEWAY_REDIS_URL: the database number must be digits, e.g. /0 (got 'abc')", id="redis_db_not_a_number"),
    pytest.param({"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0?db=one"}, None,
                 "GATEWAY_REDIS_URL: the database number must be digits", id="redis_db_query_not_a_number"),
    # Each of these passed check, and serve then failed at start (a traceback, or a file that
    # every write failed on).
    pytest.param({"GATEWAY_UPSTREAM_URL": "http://[::1"}, None, "upstream url is malformed (Invalid IPv6 URL)",
                 id="upstream_url_malformed"),
    pytest.param({"GATEWAY_UPSTREAM_URL": "http://"}, None, "upstream url names no host", id="upstream_url_no_host"),
    pytest.param({"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:0"}, None, "upstream url port must be 1-65535",
                 id="upstream_url_port_zero"),
    pytest.param({"GATEWAY_UPSTREAM_PROBE_INTERVAL": "inf"}, None,
                 "GATEWAY_UPSTREAM_PROBE_INTERVAL: Input should be a finite number", id="probe_interval_inf"),
    pytest.param({"GATEWAY_GRACE_TIMEOUT": "inf"}, None, "GATEWAY_GRACE_TIMEOUT: Input should be a finite number",
                 id="grace_timeout_inf"),
    pytest.param({"GATEWAY_HOST": "not a host"}, None, "GATEWAY_HOST: must be an IP address or a host name",
                 id="listen_host_with_a_space"),
    pytest.param({"GATEWAY_ADMIN_HOST": "256.1.1.1"}, None, "GATEWAY_ADMIN_HOST: must be an IP address or a host name",
                 id="admin_host_not_an_address"),
    pytest.param({"GATEWAY_LOG_LEVEL": "loud"}, None,
                 "GATEWAY_LOG_LEVEL: must be one of critical, error, warning, info, debug", id="log_level_unknown"),
    pytest.param({"GATEWAY_UPSTREAM_PROBE_PATH": "healthz"}, None,
                 "GATEWAY_UPSTREAM_PROBE_PATH: must be a path starting with /", id="probe_path_relative"),
    pytest.param(lambda: {"GATEWAY_ACCESS_LOG": tempfile.mkdtemp(prefix="gw-logdir-")}, None,
                 "is a directory; name a file in it", id="access_log_a_directory"),
    pytest.param(lambda: {"GATEWAY_AUDIT_LOG": tempfile.mkdtemp(prefix="gw-logdir-")}, None,
                 "is a directory; name a file in it", id="audit_log_a_directory"),
    pytest.param(lambda: {"GATEWAY_AUDIT_LOG": tempfile.mkdtemp(prefix="gw-logdir-") + "/audit.log",
                          "GATEWAY_AUDIT_CHECKPOINTS": "/nonexistent-dir-for-test/audit.checkpoints"}, None,
                 "GATEWAY_AUDIT_CHECKPOINTS: directory /nonexistent-dir-for-test does not exist",
                 id="checkpoints_dir_missing"),
    pytest.param({"GATEWAY_TRUSTED_PROXIES": "10.0.0.300/8"}, None, "GATEWAY_TRUSTED_PROXIES",
                 id="trusted_proxy_not_a_cidr"),
    pytest.param({"GATEWAY_AUDIT_LOG": "/nonexistent-dir-for-test/audit.jsonl"}, None,
                 "GATEWAY_AUDIT_LOG: directory /nonexistent-dir-for-test does not exist", id="audit_dir_missing"),
    pytest.param({}, edit("algorithms: [HS256, RS256, ES256, EdDSA]", "algorithms: [none]"),
                 'auth.jwt.algorithms: "none" is never an acceptable algorithm', id="alg_none"),
    pytest.param({}, edit_routes("roles: [admin, owner]", "roles: [admn, owner]"),
                 'unknown role \'admn\' (did you mean "admin"?)', id="undeclared_role"),
    pytest.param({}, edit_routes("methods: [GET]", "methds: [GET]"),
                 "routes.yaml:7 routes[0].methds: Extra inputs are not permitted (did you mean \"methods\"?)",
                 id="key_typo"),
    pytest.param({}, write("zz.yaml", b"routes: [\n"), "zz.yaml:2 (yaml)", id="yaml_syntax"),
    pytest.param({}, write("zz.yaml", b"\xff\xfe not utf-8"), "zz.yaml: not UTF-8 text (invalid start byte at byte 0)",
                 id="policy_not_utf8"),
    pytest.param({"GATEWAY_POLICY_DIR": "/nonexistent-policy-dir"}, None,
                 "/nonexistent-policy-dir: policy directory does not exist", id="policy_dir_missing"),
]


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_", "UPSTREAM_"))}
    base.update(PYTHONPATH=str(ROOT), GATEWAY_PORT=str(free_port()), GATEWAY_ADMIN_PORT=str(free_port()),
                GATEWAY_DRAIN_DELAY="0")
    base.update(env)
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=base, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("env,change,message", CASES)
def test_check_and_serve_refuse_with_one_line(tmp_path: Path, env: Any, change: Any, message: str) -> None:
    policy = shipped_policy(tmp_path)
    if change is not None:
        change(policy)
    environ = {"GATEWAY_POLICY_DIR": str(policy), **(env() if callable(env) else env)}
    checked = run(["check"], environ)
    out = checked.stdout + checked.stderr
    assert checked.returncode == 2, out
    assert message in out, out
    assert "Traceback" not in out and 'File "' not in out, out
    served = run(["serve"], environ)
    out = served.stdout + served.stderr
    assert served.returncode == 2, out
    assert any(message in line and "refusing to start" in line for line in out.splitlines()), out
    assert "Traceback" not in out and 'File "' not in out, out


def test_one_root_cause_gives_one_message(tmp_path: Path) -> None:
    policy = shipped_policy(tmp_path)
    edit("algorithms: [HS256, RS256, ES256, EdDSA]", "algorithms: [none]")(policy)
    checked = run(["check"], {"GATEWAY_POLICY_DIR": str(policy)})
    assert checked.returncode == 2
    line = next(i for i, text in enumerate((policy / "gateway.yaml").read_text().splitlines(), 1)
                if "algorithms: [none]" in text)
    assert checked.stdout.splitlines() == [
        f'{policy}/gateway.yaml:{line} auth.jwt.algorithms: "none" is never an acceptable algorithm'], checked.stdout


@pytest.mark.parametrize("variable", ["GATEWAY_PORT", "GATEWAY_ADMIN_PORT"])
def test_serve_names_a_busy_port(variable: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        served = run(["serve"], {"GATEWAY_POLICY_DIR": str(SHIPPED), variable: str(port)})
    out = served.stdout + served.stderr
    assert served.returncode == 2, out
    assert f"{variable}: cannot listen on 127.0.0.1:{port}: already in use" in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("ttl", ["-5", "0", "abc", "99999999"])
def test_token_ttl_out_of_range_is_a_clean_error(ttl: str) -> None:
    done = run(["token", "--sub", "a", "--org", "o", "--ttl", ttl], {})
    assert done.returncode == 2 and done.stdout == ""
    assert "--ttl" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_check_prints_the_effective_setup() -> None:
    env = {"GATEWAY_POLICY_DIR": str(SHIPPED), "GATEWAY_JWT_SECRET": strong(),
           "GATEWAY_JWT_JWKS_URL": "https://ref.supabase.co/auth/v1/.well-known/jwks.json",
           "GATEWAY_JWT_ORG_CLAIM": "app_metadata.org_id", "GATEWAY_REDIS_URL": "redis://:hunter2@cache:6379/0"}
    done = run(["check"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "HS256 with GATEWAY_JWT_SECRET" in out
    assert "RS256, ES256, EdDSA with keys from https://ref.supabase.co/auth/v1/.well-known/jwks.json" in out
    assert "org app_metadata.org_id, role org_role" in out and "owner, admin, member, viewer" in out
    assert "Redis redis://:***@cache:6379/0" in out and "hunter2" not in out
    assert re.search(r"policy .*: \d+ routes \(\d+ jwt, \d+ none, \d+ webhook\)", out), out
    assert env["GATEWAY_JWT_SECRET"] not in out


def test_unknown_gateway_variable_is_warned_with_a_suggestion() -> None:
    done = run(["check"], {"GATEWAY_POLICY_DIR": str(SHIPPED), "GATEWAY_JWT_SECRT": "x"})
    assert done.returncode == 0
    assert ("warning: GATEWAY_JWT_SECRT is set but no part of the gateway reads it "
            "(did you mean GATEWAY_JWT_SECRET?)") in done.stderr, done.stderr
    quiet = run(["check"], {"GATEWAY_POLICY_DIR": str(SHIPPED), "GATEWAY_CORS_ORIGINS": "https://a.acme.io"})
    assert "warning" not in quiet.stderr, quiet.stderr
