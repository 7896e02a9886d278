"""Tenant (orgId) binding: a request may only name the caller's own org.

Threat: the upstream trusts `orgId` from the client (IDOR). For every route with a `tenant:`
section the gateway checks, injects or rewrites `orgId` in the path, query and JSON body
against the org claim of the verified token, and refuses any request that could be read two
ways (see query.py and body.py for the exact list).

    policy.py   TenantPolicy (the route's `tenant:` section), body path syntax
    query.py    query parameter binding (raw bytes in, raw bytes out)
    body.py     strict JSON body reading and re-serialisation
    binder.py   compile_tenant() -> TenantBinder, org_from_claims()
"""

from gateway.tenant.binder import TenantBinder, compile_tenant, org_from_claims
from gateway.tenant.body import MAX_DEPTH
from gateway.tenant.policy import Mode, TenantPolicy, parse_body_path

__all__ = [
    "MAX_DEPTH",
    "Mode",
    "TenantBinder",
    "TenantPolicy",
    "compile_tenant",
    "org_from_claims",
    "parse_body_path",
]
