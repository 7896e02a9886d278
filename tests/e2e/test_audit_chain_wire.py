"""The audit trail against someone with write access to its files, with the real gateway process:
cut the tail while it is stopped, restart it, and `gateway audit verify` still shows the cut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.gateway_proc import ROOT, _env, echo_upstream, start_gateway, wait_until, write_policy

KEY = "k2026:" + "q" * 48
POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    routes:
      - {id: echo, path: /v1/echo, methods: [POST], auth: none, upstream_path: /echo}
"""


def verify(log: Path, key: str = KEY, *extra: str) -> subprocess.CompletedProcess[str]:
    env = _env({"GATEWAY_AUDIT_KEY": key, "GATEWAY_AUDIT_CHECKPOINTS": str(log.parent.parent / "cp" / "audit.cp")})
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", *extra, str(log)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cut_tail_and_restart_is_caught(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "pol", gateway=POLICY)
    log = tmp_path / "logs" / "audit.log"
    log.parent.mkdir()
    (tmp_path / "cp").mkdir()
    env = {"GATEWAY_AUDIT_LOG": str(log), "GATEWAY_AUDIT_KEY": KEY, "GATEWAY_ACCESS_LOG": "off",
           "GATEWAY_AUDIT_CHECKPOINTS": str(tmp_path / "cp" / "audit.cp")}
    with echo_upstream() as up:
        gw = start_gateway(policy, up.url, env)
        try:
            for _ in range(7):
                assert httpx.post(f"{gw.url}/v1/echo", content=b"{}").status_code == 200
        finally:
            gw.stop()  # SIGTERM: the writer drains and checkpoints
        assert wait_until(lambda: len(log.read_text().splitlines()) == 7)
        ok = verify(log)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "OK: 7 lines in 1 files, 1 checkpoints" in ok.stdout, gw.log()
        assert verify(log, "k2026:" + "z" * 48).returncode == 1  # another key: refused

        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:4]))  # someone cuts the last three records
        cut = verify(log)
        assert cut.returncode == 1 and "tail truncated" in cut.stdout, cut.stdout

        gw = start_gateway(policy, up.url, env)  # ... and the gateway is restarted
        try:
            assert httpx.post(f"{gw.url}/v1/echo", content=b"{}").status_code == 200
            metrics = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics").text  # type: ignore[attr-defined]
            assert "gateway_audit_segments_total 1.0" in metrics
        finally:
            gw.stop()
        assert "audit.segment" in gw.log() or "new segment" in gw.log()
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert records[4]["event"] == "audit.segment" and records[4]["reason"] == "truncated"
    after = verify(log)
    assert after.returncode == 1
    assert "seq 5..7 are lost" in after.stdout, after.stdout
