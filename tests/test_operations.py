"""gateway/operations.py: the audit observer's request record."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.operations import AuditObserver


class Captured:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def submit(self, record: dict[str, Any]) -> bool:
        self.records.append(record)
        return True


@pytest.mark.parametrize(("org", "seen"), [(42, "42"), ("   ", None), (True, None), ("org-a", "org-a")])
def test_the_record_reads_the_org_as_tenant_binding_does(org: object, seen: str | None) -> None:
    audit = Captured()
    observer = AuditObserver(audit, org_claim="app_metadata.org_id")  # type: ignore[arg-type]
    ctx = RequestContext("r" * 24, "198.51.100.7", None)  # type: ignore[arg-type]
    ctx.route = SimpleNamespace(id="agents.create", webhook=None)  # type: ignore[assignment]
    ctx.status, ctx.claims = 201, {"sub": "alice", "app_metadata": {"org_id": org}}
    observer({"method": "POST", "path": "/v1/agents", "headers": []}, ctx)
    (record,) = audit.records
    assert (record["org"], record["sub"], record["route_id"]) == (seen, "alice", "agents.create")
