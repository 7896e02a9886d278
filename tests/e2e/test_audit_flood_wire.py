"""Over real sockets: a flood of refused requests cannot rotate the audit trail away.

Without a bound every denial is a line, and anyone without credentials could push the retained
files' records (the served writes, the tenant-crossing attempts) out within minutes. With
`audit.denial_lines_per_second` / `denial_burst`, the flood leaves a burst of lines and chained
`request.denials_folded` summaries whose counts add up to every other denial; the served write in
the middle of it keeps its own line, and the chain verifies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from gateway.audit import verify_files
from gateway.audit.fold import FOLDED_EVENT
from tests.support.gateway_proc import echo_upstream, start_gateway, write_policy

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    audit: {denial_lines_per_second: 1, denial_burst: 20}
    routes:
      - {id: echo, path: /v1/echo, methods: [GET, POST], auth: none, upstream_path: /echo}
"""
FLOOD = 400


def test_a_flood_of_denials_leaves_a_short_complete_verifiable_trail(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    d = write_policy(tmp_path / "policy", gateway=POLICY)
    env = {"GATEWAY_WORKERS": "1", "GATEWAY_AUDIT_LOG": str(audit), "GATEWAY_ACCESS_LOG": "off"}
    with echo_upstream() as up:
        gw = start_gateway(d, up.url, env)
        try:
            started = time.monotonic()
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                statuses = [client.get(f"/v1/nope/{i}").status_code for i in range(FLOOD // 2)]
                served = client.post("/v1/echo", content=b"{}", headers={"content-type": "application/json"})
                statuses += [client.get(f"/v1/nope/{i}").status_code for i in range(FLOOD // 2)]
            elapsed = time.monotonic() - started
            assert statuses == [404] * FLOOD
            assert served.status_code == 200, served.text
            rid = served.headers["x-request-id"]
        finally:
            gw.stop()  # SIGTERM: the writer writes the open summaries, then the last checkpoint
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["request_id"] for r in lines if r.get("decision") == "allow"] == [rid]
    individual = [r for r in lines if r.get("decision") == "deny"]
    summaries = [r for r in lines if r["event"] == FOLDED_EVENT]
    assert all(r["reason"] == "route.not_found" for r in individual + summaries)
    # The burst, plus one a second of the flood's duration (time on a busy machine included).
    assert 20 <= len(individual) <= 20 + int(elapsed) + 1, (len(individual), elapsed)
    assert summaries and all(s["client_ip"] == "127.0.0.1" and s["status"] == 404 for s in summaries)
    assert len(individual) + sum(s["count"] for s in summaries) == FLOOD  # no denial uncounted
    assert verify_files([str(audit)]).ok
