"""Micro-benchmark of the tenant binder (not a test; run by hand, numbers vary by machine).

.venv/bin/python -m tests.tenant.bench_tenant
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

from gateway.tenant import TenantPolicy, compile_tenant, org_from_claims

ORG = "6f1c2b7e-3a4d-4e8f-9b0a-1c2d3e4f5a6b"
JSON = b"application/json; charset=utf-8"
DOC = {
    "orgId": ORG,
    "name": "Support agent (Spanish)",
    "model": "gpt-4o-mini",
    "temperature": 0.2,
    "enabled": True,
    "items": [{"orgId": ORG, "kind": "faq"}, {"orgId": ORG, "kind": "handoff"}],
}


def run(label: str, fn: Callable[[], object], number: int = 20_000) -> None:
    best = min(timeit.repeat(fn, number=number, repeat=3)) / number
    print(f"{label:<52} {best * 1e6:7.2f} µs")


def main() -> None:
    body = json.dumps(DOC).encode()
    no_org = json.dumps({k: v for k, v in DOC.items() if k != "orgId"}).encode()
    print(f"body: {len(body)} bytes")
    q = compile_tenant(TenantPolicy(mode="verify", query="orgId"))
    qr = compile_tenant(TenantPolicy(mode="rewrite", query="orgId"))
    b = compile_tenant(TenantPolicy(mode="verify", body="orgId"))
    ba = compile_tenant(TenantPolicy(mode="verify", body=["orgId", "items[*].orgId"]))
    qs = f"limit=20&cursor=eyJpZCI6MTJ9&orgId={ORG}&sort=-created".encode()
    run("bind_query verify, present and equal", lambda: q.bind_query(qs, ORG))
    run(
        "bind_query verify, absent -> inject (fast path)",
        lambda: q.bind_query(b"limit=20&sort=-created", ORG),
    )
    run("bind_query verify, empty query -> inject", lambda: q.bind_query(b"", ORG))
    run("bind_query rewrite, different -> rewrite", lambda: qr.bind_query(qs.replace(b"6f1c", b"0000"), ORG))
    run(f"bind_body verify orgId, equal ({len(body)} B, passthrough)", lambda: b.bind_body(body, JSON, ORG))
    run(f"bind_body verify orgId, absent ({len(no_org)} B, inject)", lambda: b.bind_body(no_org, JSON, ORG))
    run("bind_body verify orgId + items[*].orgId, equal", lambda: ba.bind_body(body, JSON, ORG))
    run("json.loads alone (reference)", lambda: json.loads(body))
    claims = {"sub": "u1", "app_metadata": {"org_id": ORG}}
    run("org_from_claims app_metadata.org_id", lambda: org_from_claims(claims, "app_metadata.org_id"))


if __name__ == "__main__":
    main()
