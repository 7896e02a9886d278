"""The audit sink failing is a policy decision: `refuse` turns mutating requests away (503
`audit.unavailable`) while reads go on; `continue` keeps serving and counts the failures."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import echo_upstream, gateway, metric, wait_until, write_policy

POLICY = """
    upstream: {{url: "${{GATEWAY_UPSTREAM_URL}}"}}
    audit: {{on_failure: {mode}}}
    routes:
      - {{id: echo.get, path: /v1/echo, methods: [GET, POST], auth: none}}
"""


@pytest.mark.parametrize("mode,post_status", [("refuse", 503), ("continue", 200)])
def test_failing_audit_sink(tmp_path: Path, mode: str, post_status: int) -> None:
    policy = write_policy(tmp_path / "pol", gateway=POLICY.format(mode=mode))
    audit = tmp_path / "audit.log"
    with echo_upstream() as up, gateway(policy, up.url, {"GATEWAY_AUDIT_LOG": str(audit)}) as gw:
        # The sink breaks while the gateway runs: the file is replaced by a directory, which the
        # sink (it reopens a file rotated away) cannot open. A directory given at start is refused
        # by check and serve, so the breakage has to come later.
        assert wait_until(audit.exists, timeout=20)
        audit.unlink()
        audit.mkdir()

        def sink_failed() -> bool:  # a refused request is audited: its write meets the directory
            httpx.get(f"{gw.url}/v1/no-such-route")
            return metric(gw, "gateway_audit_failures_total") > 0

        assert wait_until(sink_failed, timeout=20, interval=0.2)
        assert httpx.get(f"{gw.url}/v1/echo").status_code == 200
        r = httpx.post(f"{gw.url}/v1/echo", content=b"x")
        assert r.status_code == post_status, r.text
        if mode == "refuse":
            assert r.json()["reason"] == "audit.unavailable"
            assert r.headers["retry-after"] == "5"
            seen = httpx.get(f"{up.url}/count").json()["seen"]
            assert "/echo" in seen and seen["/echo"] == 1  # only the GET reached the upstream
