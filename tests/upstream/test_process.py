"""`python -m upstream_stub` as a real process: serves, checks identity, stops cleanly on SIGTERM,
and refuses to start in production without its secrets."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.procs import free_port, wait_port
from tests.upstream.identity import SECRET, user_headers

REPO = Path(__file__).resolve().parents[2]


async def test_module_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "UPSTREAM_PORT": str(port), "GATEWAY_ENV": "development",
           "UPSTREAM_DB": str(tmp_path / "up.db"), "GATEWAY_IDENTITY_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "upstream_stub", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_port, port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.get("/agents")).status_code == 401
            assert (await client.get("/agents", headers=user_headers())).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    # A graceful stop is a clean exit (uvicorn's re-raise of the signal is suppressed).
    assert proc.returncode == 0, out.decode()
    assert b"upstream stopped" in out and b"Application shutdown complete" in out


async def test_module_refuses_production_without_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "KOMMO_", "GATEWAY_"))}
    env.update(PYTHONPATH=str(REPO), GATEWAY_ENV="production")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "upstream_stub", cwd=tmp_path, env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    for variable in ("GATEWAY_IDENTITY_SECRET", "UPSTREAM_ENCRYPTION_KEY", "UPSTREAM_STATE_SECRET"):
        assert variable.encode() in err


@pytest.mark.parametrize(("variable", "value", "message"), [
    pytest.param("UPSTREAM_PORT", "abc", "UPSTREAM_PORT: Input should be a valid integer", id="port_not_a_number"),
    pytest.param("UPSTREAM_PORT", "99999", "UPSTREAM_PORT: Input should be less than or equal to 65535",
                 id="port_out_of_range"),
    pytest.param("UPSTREAM_JOB_MAX_ATTEMPTS", "-1", "UPSTREAM_JOB_MAX_ATTEMPTS: Input should be greater than",
                 id="attempts_negative"),
    pytest.param("UPSTREAM_LOG_LEVEL", "loud", "UPSTREAM_LOG_LEVEL: must be one of critical, error, warning",
                 id="log_level_unknown"),
    pytest.param("UPSTREAM_DB", "/nonexistent-dir-for-test/up.db",
                 "UPSTREAM_DB: directory /nonexistent-dir-for-test does not exist", id="db_directory_missing"),
    pytest.param("UPSTREAM_DATABASE_POOL_SIZE", "s3cret-looking", "UPSTREAM_DATABASE_POOL_SIZE: Input should be",
                 id="pool_size_not_a_number"),
    pytest.param("UPSTREAM_SHUTDOWN_GRACE", "inf", "UPSTREAM_SHUTDOWN_GRACE: Input should be a finite number",
                 id="grace_infinite"),  # an OverflowError traceback at start
    pytest.param("UPSTREAM_JOB_LEASE_SECONDS", "inf", "UPSTREAM_JOB_LEASE_SECONDS: Input should be a finite number",
                 id="lease_infinite"),  # started: a crashed worker's job would never be handed on
    pytest.param("UPSTREAM_IDENTITY_AUDIENCE", "", "UPSTREAM_IDENTITY_AUDIENCE: String should have at least 1",
                 id="audience_empty"),  # started, and refused every request's identity (aud mismatch)
])
async def test_a_malformed_variable_is_one_line_naming_it_not_a_traceback(
        tmp_path: Path, variable: str, value: str, message: str) -> None:
    """Each of these was a pydantic ValidationError or ValueError traceback, or (UPSTREAM_DB)
    uvicorn's 'Application startup failed' after a sqlite traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "KOMMO_", "GATEWAY_"))}
    env.update(PYTHONPATH=str(REPO), UPSTREAM_PORT=str(free_port()), UPSTREAM_DB=str(tmp_path / "up.db"))
    env[variable] = value
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "upstream_stub", cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = (out + err).decode()
    assert proc.returncode == 2, text
    assert message in text and "Traceback" not in text


def test_secrets_keys_and_urls_are_named_but_not_quoted_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Today every secret, key and URL variable is a plain string that cannot fail validation; should
    one ever be typed, its value (a URL may carry a password) must still not reach the terminal."""
    from pydantic import ValidationError

    from upstream_stub import settings as mod

    def invalid(**_: object) -> mod.UpstreamSettings:
        raise ValidationError.from_exception_data("UpstreamSettings", [
            {"type": "string_type", "loc": ("UPSTREAM_DATABASE_URL",), "input": "postgresql://u:hunter2@h/db"},
            {"type": "string_type", "loc": ("UPSTREAM_STATE_SECRET",), "input": "s3cret-value"},
            {"type": "int_parsing", "loc": ("UPSTREAM_PORT",), "input": "abc"}])
    monkeypatch.setattr(mod, "UpstreamSettings", invalid)
    with pytest.raises(mod.SettingsError) as exc:
        mod.load_settings()
    url, secret, port = exc.value.problems
    assert url.startswith("UPSTREAM_DATABASE_URL: ") and "hunter2" not in url and "got" not in url
    assert secret.startswith("UPSTREAM_STATE_SECRET: ") and "s3cret" not in secret
    assert port.startswith("UPSTREAM_PORT: ") and port.endswith("(got 'abc')")
