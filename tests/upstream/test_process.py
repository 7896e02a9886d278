"""`python -m upstream_stub` as a real process: serves, checks identity, stops cleanly on SIGTERM,
and refuses to start in production without its secrets."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

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
