"""The audit sink failing is a policy decision: `refuse` turns mutating requests away (503
`audit.unavailable`) while reads go on; `continue` keeps serving and counts the failures."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import echo_upstream, gateway, write_policy

POLICY = """
    upstream: {{url: "${{GATEWAY_UPSTREAM_URL}}"}}
    audit: {{on_failure: {mode}}}
    routes:
      - {{id: echo.get, path: /v1/echo, methods: [GET, POST], auth: none}}
"""


@pytest.mark.parametrize("mode,post_status", [("refuse", 503), ("continue", 200)])
def test_failing_audit_sink(tmp_path: Path, mode: str, post_status: int) -> None:
    policy = write_policy(tmp_path / "pol", gateway=POLICY.format(mode=mode))
    unwritable = tmp_path / "is-a-directory"
    unwritable.mkdir()  # opening a directory as the audit file fails: the sink is broken
    with echo_upstream() as up, gateway(policy, up.url, {"GATEWAY_AUDIT_LOG": str(unwritable)}) as gw:
        assert httpx.get(f"{gw.url}/v1/echo").status_code == 200
        r = httpx.post(f"{gw.url}/v1/echo", content=b"x")
        assert r.status_code == post_status, r.text
        if mode == "refuse":
            assert r.json()["reason"] == "audit.unavailable"
            assert r.headers["retry-after"] == "5"
            seen = httpx.get(f"{up.url}/count").json()["seen"]
            assert "/echo" in seen and seen["/echo"] == 1  # only the GET reached the upstream
