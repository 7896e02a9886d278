"""Fair share of the upstream over real sockets: one org flooding slow requests does not delay
another org; over the org's share → 429 ratelimit.concurrency; no free connection → 503."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from gateway.auth import mint_dev_token
from gateway.forwarder import Forwarder
from tests.support.gateway_proc import TEST_JWT_SECRET, Proc, gateway, write_policy
from tests.support.rogue_upstream import RogueUpstream

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}", pool_size: 4, pool_wait: 0.5}
    defaults:
      timeouts: {connect: 1, total: 20, body_read: 2}
    limits: {max_in_flight_per_org: 3}
    auth:
      jwt: {algorithms: [HS256], org_claim: org_id, role_claim: org_role}
    routes:
      - {id: slow, path: /v1/slow, methods: [GET, PATCH], auth: jwt, upstream_path: /slow}
      - {id: fast, path: /v1/fast, methods: [GET], auth: jwt, upstream_path: /fast}
      - {id: public, path: /v1/public, methods: [GET], auth: none, upstream_path: /slow}
"""
SLOW = 6.0


def answer(conn: socket.socket, raw: bytes) -> bool:
    if raw.startswith((b"GET /slow", b"PATCH /slow")):
        time.sleep(SLOW)
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    return True


def auth(sub: str, org: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_dev_token(TEST_JWT_SECRET, sub, org, role="member")}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, RogueUpstream]]:
    d = write_policy(Path(tmp_path_factory.mktemp("fairness")), gateway=POLICY)
    with RogueUpstream(answer) as up, gateway(d, up.url) as gw:
        yield gw, up


def test_one_org_flooding_slow_requests_does_not_delay_another(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, _ = rig
    flood = [auth(f"attacker-{i}", "org-a") for i in range(12)]  # many users, one org
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(httpx.get, f"{gw.url}/v1/slow", headers=h, timeout=30) for h in flood]
        time.sleep(1.0)  # org A's share is in flight at the upstream, the rest refused
        b = httpx.get(f"{gw.url}/v1/fast", headers=auth("bob", "org-b"), timeout=30)
        a_still_running = sum(1 for f in futures if not f.done())
        results = [f.result() for f in futures]
    assert b.status_code == 200
    # Causality, not a stopwatch: org B was answered while org A's slow requests still ran.
    assert a_still_running >= 3, "org B waited for org A's slow requests"
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 3, statuses
    assert statuses.count(429) == 9, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "ratelimit.concurrency"
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["request_id"] == refused.headers["x-request-id"]


def test_no_free_connection_within_pool_wait_is_503_saturated(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, _ = rig
    # Four orgs (within their shares) take the four connections; a fifth waits 0.5 s, then 503.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.get, f"{gw.url}/v1/slow", headers=auth(f"u{i}", f"org-{i}"), timeout=30)
                   for i in range(4)]
        time.sleep(1.0)
        t = time.monotonic()
        r = httpx.get(f"{gw.url}/v1/fast", headers=auth("eve", "org-e"), timeout=30)
        waited = time.monotonic() - t
        assert [f.result().status_code for f in futures] == [200] * 4
    assert r.status_code == 503
    assert r.json()["reason"] == "upstream.saturated"
    assert r.headers["retry-after"] == "1"
    assert waited < SLOW, "the wait for a connection is bounded by pool_wait, not by the slow requests"


def test_anonymous_requests_share_by_client_address(rig: tuple[Proc, RogueUpstream]) -> None:
    gw, _ = rig
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(httpx.get, f"{gw.url}/v1/public", timeout=30) for _ in range(5)]
        statuses = sorted(f.result().status_code for f in futures)
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.parametrize(("claims", "key"), [
    ({"org_id": "org-a"}, "org:org-a"),
    ({"org_id": 42}, "org:42"),           # a numeric org id is that org, as tenant binding reads it
    ({"org_id": "   "}, "addr:10.0.0.9"),  # blank: no org, the client's address
    ({"org_id": True}, "addr:10.0.0.9"),
    ({"app_metadata": {"org_id": "org-b"}}, "addr:10.0.0.9"),  # not where this policy reads it
    (None, "addr:10.0.0.9"),
])
def test_the_fair_share_key_reads_the_org_as_tenant_binding_does(claims: dict | None, key: str) -> None:
    auth = SimpleNamespace(jwt=SimpleNamespace(org_claim="org_id"))
    ctx = SimpleNamespace(claims=claims, client_ip="10.0.0.9",
                          policy=SimpleNamespace(sections={"compiled.auth": auth}))
    assert Forwarder().tenant_key(ctx) == key  # type: ignore[arg-type]


def test_the_fair_share_key_follows_a_reload_that_moves_the_org_claim() -> None:
    def policy(path: str) -> SimpleNamespace:
        return SimpleNamespace(sections={"compiled.auth": SimpleNamespace(jwt=SimpleNamespace(org_claim=path))})

    fwd = Forwarder()
    claims = {"org_id": "org-top", "app_metadata": {"org_id": "org-nested"}}
    before, after = policy("org_id"), policy("app_metadata.org_id")
    assert fwd.tenant_key(SimpleNamespace(claims=claims, client_ip="10.0.0.9", policy=before)) == "org:org-top"  # type: ignore[arg-type]
    assert fwd.tenant_key(SimpleNamespace(claims=claims, client_ip="10.0.0.9", policy=after)) == "org:org-nested"  # type: ignore[arg-type]
