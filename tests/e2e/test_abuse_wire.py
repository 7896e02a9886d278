"""Limits under abuse, over real sockets: the attacker is stopped, the people who share the
attacker's address are not (issue 14).

- 40 requests without a token from one address do not lock it out: a valid token then gets 200.
- 40 bad tokens: the 31st on gets 429 `auth.too_many_failures`, while a valid token from the same
  address is still served; while blocked, at most `verifications_per_second` signatures a second.
- A forged webhook flood gets 429 before its body is read or an HMAC computed: the HMAC counter
  on the admin listener proves how many were computed.

One gateway process, its address model trusting 127.0.0.1 as a proxy: each test is a fresh
client address through `X-Forwarded-For` (what a load balancer sends).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.auth import mint_dev_token
from tests.support.gateway_proc import (
    BASE_ENV,
    TEST_JWT_SECRET,
    Proc,
    echo_upstream,
    gateway,
    metric,
    write_policy,
)
from tests.support.rawhttp import read_response

CHANNEL = BASE_ENV["KOMMO_CHANNEL_SECRET"].encode()
WEBHOOK_FAILURES = 10
VERIFY_PER_SECOND = 20  # the shipped default

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    trusted_proxies: ["127.0.0.1/32"]
    auth:
      jwt: {algorithms: [HS256]}
    rate_limits:
      default: {limits: "20/second; 600/minute", key: sub, strategy: fixed-window}
      brute_force: {max_failures: 30, window: "1 minute", cooldown_seconds: 60,
                    verifications_per_second: VPS}
      webhook_brute_force: {max_failures: WHF, window: "1 minute", cooldown_seconds: 60}
    routes:
      - id: agents.list
        path: /v1/agents
        methods: [GET]
        auth: jwt
        upstream_path: /agents
      - id: webhooks.kommo_chat
        path: /v1/webhooks/kommo-chat
        methods: [POST]
        upstream_path: /webhooks/kommo-chat
        auth: webhook
        webhook: {type: hmac, secret_env: KOMMO_CHANNEL_SECRET, header: X-Signature, algorithm: sha1,
                  encoding: hex, source_ips: any, dedupe: false}
        max_body_bytes: 1048576
        rate_limit: {limits: "50/second", key: ip}
      - id: webhooks.unlimited
        path: /v1/webhooks/unlimited
        methods: [POST]
        upstream_path: /webhooks/unlimited
        auth: webhook
        webhook: {type: hmac, secret_env: KOMMO_CHANNEL_SECRET, header: X-Signature, algorithm: sha1,
                  encoding: hex, source_ips: any, dedupe: false}
        max_body_bytes: 1048576
""".replace("VPS", str(VERIFY_PER_SECOND)).replace("WHF", str(WEBHOOK_FAILURES))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with echo_upstream() as up:
        d = write_policy(tmp_path_factory.mktemp("abuse"), gateway=POLICY)
        with gateway(d, up.url) as g:
            yield g


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20, limits=httpx.Limits(max_connections=32)) as c:
        yield c


def fresh_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"203.0.{raw[0]}.{raw[1] or 1}"


def valid_token() -> str:
    return mint_dev_token(TEST_JWT_SECRET, f"user-{uuid.uuid4().hex[:8]}", "org-a", audience="authenticated")


def reason(r: httpx.Response) -> str | None:
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    return str(r.json()["reason"])


# --- JWT routes -----------------------------------------------------------------------------


def test_requests_without_a_token_never_lock_out_the_address(gw: Proc, client: httpx.Client) -> None:
    office = {"X-Forwarded-For": fresh_ip()}
    blocks_before = metric(gw, "gateway_bruteforce_blocks_total", 'scope="auth"')
    anonymous = [client.get(gw.url + "/v1/agents", headers=office) for _ in range(40)]
    assert {(r.status_code, reason(r)) for r in anonymous} == {(401, "auth.missing_token")}
    r = client.get(gw.url + "/v1/agents", headers={**office, "Authorization": f"Bearer {valid_token()}"})
    assert r.status_code == 200, r.text
    assert metric(gw, "gateway_bruteforce_blocks_total", 'scope="auth"') == blocks_before


def test_bad_tokens_block_failing_attempts_but_a_valid_token_is_served(gw: Proc, client: httpx.Client) -> None:
    ip = fresh_ip()
    blocks_before = metric(gw, "gateway_bruteforce_blocks_total", 'scope="auth"')
    refusals_before = metric(gw, "gateway_bruteforce_refusals_total", 'scope="auth"')
    forged = valid_token()[:-4] + "AAAA"  # right shape, wrong signature: a real verification fails
    bad = {"X-Forwarded-For": ip, "Authorization": f"Bearer {forged}"}
    got = [client.get(gw.url + "/v1/agents", headers=bad) for _ in range(40)]
    assert [r.status_code for r in got[:30]] == [401] * 30
    assert {reason(r) for r in got[:30]} == {"auth.bad_signature"}
    assert [(r.status_code, reason(r)) for r in got[30:]] == [(429, "auth.too_many_failures")] * 10
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in got[30:])
    # the same (shared) address, a valid token: verified and served
    good = {"X-Forwarded-For": ip, "Authorization": f"Bearer {valid_token()}"}
    assert client.get(gw.url + "/v1/agents", headers=good).status_code == 200
    # other kinds of failure are refused too while the block lasts
    for token in ("not.a.jwt", valid_token().replace(".", "..", 1)):
        r = client.get(gw.url + "/v1/agents", headers={"X-Forwarded-For": ip, "Authorization": f"Bearer {token}"})
        assert (r.status_code, reason(r)) == (429, "auth.too_many_failures")
    # an address that did nothing wrong is not collateral damage
    r = client.get(gw.url + "/v1/agents", headers={**bad, "X-Forwarded-For": fresh_ip()})
    assert (r.status_code, reason(r)) == (401, "auth.bad_signature")
    assert metric(gw, "gateway_bruteforce_blocks_total", 'scope="auth"') == blocks_before + 1
    assert metric(gw, "gateway_bruteforce_refusals_total", 'scope="auth"') >= refusals_before + 12


def test_verification_budget_bounds_the_work_for_a_blocked_address(gw: Proc, client: httpx.Client) -> None:
    ip = fresh_ip()
    bad = {"X-Forwarded-For": ip, "Authorization": f"Bearer {valid_token()[:-4]}AAAA"}
    for _ in range(30):
        client.get(gw.url + "/v1/agents", headers=bad)
    budget_before = metric(gw, "gateway_auth_verify_budget_refusals_total")
    # 150 fresh forged tokens (none can be in the verified-token cache), 8 connections at once
    tokens = [valid_token()[:-4] + "AAAA" for _ in range(150)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda t: client.get(
            gw.url + "/v1/agents", headers={"X-Forwarded-For": ip, "Authorization": f"Bearer {t}"}), tokens))
    elapsed = time.monotonic() - started
    assert {(r.status_code, reason(r)) for r in got} == {(429, "auth.too_many_failures")}
    refused_unverified = metric(gw, "gateway_auth_verify_budget_refusals_total") - budget_before
    verified = len(tokens) - refused_unverified
    # the budget is 20 a second (and a burst of 20): that many signatures, never more
    assert verified <= VERIFY_PER_SECOND * (elapsed + 1), (verified, elapsed)
    if elapsed < 5:  # on any but a hopelessly loaded machine the flood outruns the budget
        assert refused_unverified > 0
    # a valid token is still served from that address (the failing ones spent the budget, and
    # it refills within a second; a valid token gives its verification back)
    time.sleep(1.1)
    good = {"X-Forwarded-For": ip, "Authorization": f"Bearer {valid_token()}"}
    assert client.get(gw.url + "/v1/agents", headers=good).status_code == 200
    # once verified it is cached: served without a signature check even while the budget is spent
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda t: client.get(
            gw.url + "/v1/agents", headers={"X-Forwarded-For": ip, "Authorization": f"Bearer {t}"}), tokens))
    r = client.get(gw.url + "/v1/agents", headers=good)
    assert r.status_code == 200, r.text


# --- webhooks -------------------------------------------------------------------------------


BODY = b'{"message":"' + b"x" * (1024 * 1024 - 20) + b'"}'


def post_raw(gw: Proc, path: str, ip: str, body: bytes, signature: str) -> tuple[int, str]:
    """One POST on its own connection; the answer is read while the body is still being sent."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
        head = (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                f"X-Forwarded-For: {ip}\r\nX-Signature: {signature}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()

        def send() -> None:
            try:
                s.sendall(head + body)
            except OSError:
                pass  # refused before the body was read: the server stops reading

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        r = read_response(s, timeout=20)
        sender.join(20)
    return r.status, str(r.json().get("reason")) if r.status != 200 else ""


@pytest.mark.parametrize(("path", "route"), [
    pytest.param("/v1/webhooks/kommo-chat", "webhooks.kommo_chat", id="with_per_address_limit"),
    pytest.param("/v1/webhooks/unlimited", "webhooks.unlimited", id="failure_guard_alone"),
])
def test_forged_webhook_flood_is_refused_before_verification(gw: Proc, path: str, route: str) -> None:
    ip = fresh_ip()
    hmacs_before = metric(gw, "gateway_webhook_hmac_total", f'route="{route}"')
    forged = hmac.new(b"not-the-secret", BODY, hashlib.sha1).hexdigest()
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: post_raw(gw, path, ip, BODY, forged), range(120)))
    counts = Counter(got)
    hmacs = metric(gw, "gateway_webhook_hmac_total", f'route="{route}"') - hmacs_before
    assert set(counts) <= {(401, "webhook.bad_signature"), (429, "ratelimit.exceeded"),
                           (429, "webhook.too_many_failures")}, counts
    # every HMAC computed was a 401; the rest were refused before one was computed
    assert counts[(401, "webhook.bad_signature")] == hmacs
    # the failure guard stops the flood after its threshold (a few more may be in flight at once)
    assert WEBHOOK_FAILURES <= hmacs <= WEBHOOK_FAILURES + 8, counts
    assert counts[(429, "webhook.too_many_failures")] + counts[(429, "ratelimit.exceeded")] == 120 - hmacs
    assert counts[(429, "webhook.too_many_failures")] >= 1, counts
    # a genuine delivery from another address still goes through
    status, _ = post_raw(gw, path, fresh_ip(), BODY, hmac.new(CHANNEL, BODY, hashlib.sha1).hexdigest())
    assert status == 200
    assert metric(gw, "gateway_bruteforce_blocks_total", 'scope="webhook"') >= 1
