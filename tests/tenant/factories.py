from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.tenant import TenantBinder, TenantPolicy, compile_tenant

ORG = "org-a"
MODES = ["verify", "require", "rewrite"]


def make_binder(mode: str = "verify", route_id: str | None = "r1", **locations: Any) -> TenantBinder:
    return compile_tenant(TenantPolicy(mode=mode, **locations), route_id=route_id)


def expect_refusal(exc: pytest.ExceptionInfo[GatewayError], status: int, reason: str) -> None:
    assert exc.value.status == status, exc.value
    assert exc.value.reason == reason, exc.value
