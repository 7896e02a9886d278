"""WebhookStage in process: source, signature and freshness outcomes, the dedupe life cycle
(acquire, duplicate, in progress, complete on 2xx, release otherwise) and store failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.context import RequestContext
from gateway.errors import BadGateway, GatewayError, Unauthorized
from gateway.pipeline.webhook import WebhookStage
from gateway.webhooks import DedupeStore
from gateway.webhooks.dedupe import MemoryDedupeStore, State
from gateway.webhooks.errors import DedupeStoreUnavailable
from tests.pipeline.abuse_harness import Sent, hook_sig, request
from tests.pipeline.abuse_harness import make_gateway as abuse_gateway

STD_KEY = b"standard-webhooks-test-key-0123456789"
KOMMO_ID = "kommo-client-uuid-0001"
KOMMO_SECRET = "kommo-client-secret-0123456789"
URL_TOKEN = "url-token-0123456789abcdef"

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    cors:
      allow_origins: [https://app.example.com]
      allow_methods: [GET, POST]
      allow_headers: [Content-Type]
    rate_limits:
      webhook_brute_force: {max_failures: 3, window: "1 minute", cooldown_seconds: 60}
    routes:
      - id: hook
        path: /v1/hook
        methods: [POST]
        auth: webhook
        upstream_path: /hook
        webhook: {type: hmac, secret_env: HOOK_SECRET, header: X-Sig, algorithm: sha256, encoding: hex,
                  source_ips: any}
      - id: hook2
        path: /v1/hook2
        methods: [POST]
        auth: webhook
        upstream_path: /hook2
        webhook: {type: hmac, secret_env: HOOK_SECRET, header: X-Sig, algorithm: sha256, encoding: hex,
                  source_ips: any}
      - id: plain
        path: /v1/plain
        methods: [POST]
        auth: webhook
        upstream_path: /plain
        webhook: {type: hmac, secret_env: HOOK_SECRET, header: X-Sig, algorithm: sha256, encoding: hex,
                  source_ips: any, dedupe: false}
      - id: std
        path: /v1/std
        methods: [POST]
        auth: webhook
        upstream_path: /std
        webhook: {type: standard_webhooks, secret_env: STD_SECRET, tolerance_seconds: 300,
                  source_ips: ["203.0.113.0/24"], dedupe: {window_seconds: 600, in_progress_seconds: 5}}
      - id: revoked
        path: /v1/revoked
        methods: [GET]
        auth: webhook
        upstream_path: /revoked
        webhook: {type: kommo_revoked, client_id_env: KOMMO_ID, client_secret_env: KOMMO_SECRET,
                  source_ips: any}
      - id: token
        path: /v1/tok/{token}
        methods: [POST]
        auth: webhook
        upstream_path: /tok
        webhook: {type: url_token, secret_env: URL_TOKEN, param: token, source_ips: any, dedupe: false}
"""
BODY = b'{"event":"x"}'
ALLOWED_IP = "203.0.113.7"


class Upstream:
    """Stands in for the forwarder: records what reached it, reads `receive` like the real one
    (disconnect watch), answers `status`, or raises `fail`, or waits on `gate` first."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.received: list[str] = []
        self.request_ids: list[str] = []
        self.status = 200
        self.fail: GatewayError | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx = scope["gateway"]
        self.calls.append((ctx.route.id, ctx.body))
        self.request_ids.append(ctx.request_id)
        self.received.append((await receive())["type"])
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def make_gateway(upstream: Upstream) -> Gateway:
    return abuse_gateway(POLICY, {"STD_SECRET": "whsec_" + base64.b64encode(STD_KEY).decode(), "KOMMO_ID": KOMMO_ID,
                                  "KOMMO_SECRET": KOMMO_SECRET, "URL_TOKEN": URL_TOKEN}, upstream)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def gw(upstream: Upstream) -> Gateway:
    return make_gateway(upstream)


async def deliver(gw: Gateway, method: str, path: str, *, ip: str = "192.0.2.10",
                  headers: dict[str, str] | None = None, body: bytes = b"", query: str = "") -> Sent:
    return await request(gw, method, path, ip=ip, headers=headers, body=body, query=query)


def signed(body: bytes = BODY) -> dict[str, str]:
    return {"X-Sig": hook_sig(body)}


def std_headers(msg_id: str, body: bytes, stamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if stamp is None else stamp)
    sig = base64.b64encode(hmac.new(STD_KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": "v1," + sig.decode()}


def revoked_query(account_id: str) -> str:
    sig = hmac.new(KOMMO_SECRET.encode(), f"{KOMMO_ID}|{account_id}".encode(), hashlib.sha256).hexdigest()
    return f"client_uuid={KOMMO_ID}&account_id={account_id}&signature={sig}"


def outcome(gw: Gateway, route: str, what: str) -> float:
    gw.metrics.flush()  # outcomes are batched
    return float(gw.metrics.webhooks.labels(route, what)._value.get())


def store_errors(gw: Gateway) -> float:
    return float(gw.metrics.redis_errors.labels("webhook_dedupe")._value.get())


def unique_body() -> bytes:
    return json.dumps({"event": uuid.uuid4().hex}).encode()


async def test_duplicate_is_acknowledged_and_not_forwarded(gw: Gateway, upstream: Upstream) -> None:
    accepted, dup, errors = outcome(gw, "hook", "accepted"), outcome(gw, "hook", "duplicate"), store_errors(gw)
    first = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (first.status, first.body) == (200, b"{}")
    again = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert again.status == 200
    doc = json.loads(again.body)
    assert doc == {"status": "duplicate", "reason": "webhook.duplicate", "request_id": doc["request_id"]}
    assert doc["request_id"] and again.headers["x-request-id"] == doc["request_id"]
    assert again.headers["content-type"] == "application/json"
    assert again.headers["content-length"] == str(len(again.body))
    assert upstream.calls == [("hook", BODY)]
    assert upstream.received == ["http.request"]  # the forwarder got the client's receive channel
    assert outcome(gw, "hook", "accepted") == accepted + 1
    assert outcome(gw, "hook", "duplicate") == dup + 1
    assert store_errors(gw) == errors  # a settled delivery is not a store error


async def test_dedupe_keys_are_per_route_and_per_body(gw: Gateway, upstream: Upstream) -> None:
    other = unique_body()
    got = [await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed()),
           await deliver(gw, "POST", "/v1/hook", body=other, headers=signed(other)),
           await deliver(gw, "POST", "/v1/hook2", body=BODY, headers=signed())]
    assert [(r.status, r.body) for r in got] == [(200, b"{}")] * 3
    assert upstream.calls == [("hook", BODY), ("hook", other), ("hook2", BODY)]


async def test_delivery_id_is_the_dedupe_key_when_the_scheme_has_one(gw: Gateway, upstream: Upstream) -> None:
    got = [await deliver(gw, "POST", "/v1/std", ip=ALLOWED_IP, body=BODY, headers=std_headers(i, BODY))
           for i in ("msg-1", "msg-2", "msg-1")]
    assert [(r.status, r.reason) for r in got] == [(200, None), (200, None), (200, "webhook.duplicate")]
    assert upstream.calls == [("std", BODY), ("std", BODY)]


async def test_source_and_freshness_outcomes(gw: Gateway, upstream: Upstream) -> None:
    denied, stale = outcome(gw, "std", "source_denied"), outcome(gw, "std", "stale")
    blocks = gw.metrics.abuse.blocks.labels("webhook")._value.get()
    # source_denied never counts towards the brute-force guard (threshold 3)
    for _ in range(4):
        r = await deliver(gw, "POST", "/v1/std", ip="198.51.100.7", body=BODY,
                          headers=std_headers(uuid.uuid4().hex, BODY))
        assert (r.status, r.reason) == (403, "webhook.source_denied")
    assert outcome(gw, "std", "source_denied") == denied + 4
    old = await deliver(gw, "POST", "/v1/std", ip=ALLOWED_IP, body=BODY,
                        headers=std_headers("msg-old", BODY, int(time.time()) - 3600))
    assert (old.status, old.reason) == (401, "webhook.stale")
    assert outcome(gw, "std", "stale") == stale + 1
    assert gw.metrics.abuse.blocks.labels("webhook")._value.get() == blocks
    assert upstream.calls == []


async def test_block_event_only_for_the_failure_that_starts_the_block(gw: Gateway) -> None:
    ip = "192.0.2.77"
    blocks = gw.metrics.abuse.blocks.labels("webhook")._value.get()
    bad_sig = outcome(gw, "plain", "bad_signature")
    bad = {"X-Sig": hook_sig(BODY, "wrong-key-0123456789")}
    for expected_blocks in (0, 0, 1):
        r = await deliver(gw, "POST", "/v1/plain", ip=ip, body=BODY, headers=bad)
        assert (r.status, r.reason) == (401, "webhook.bad_signature")
        assert gw.metrics.abuse.blocks.labels("webhook")._value.get() == blocks + expected_blocks
    assert outcome(gw, "plain", "bad_signature") == bad_sig + 3


async def test_without_dedupe_each_delivery_is_forwarded_and_counted(gw: Gateway, upstream: Upstream) -> None:
    accepted = outcome(gw, "plain", "accepted")
    hmacs = gw.metrics.abuse.hmac.labels("plain")._value.get()
    got = [await deliver(gw, "POST", "/v1/plain", body=BODY, headers=signed()) for _ in range(2)]
    assert [r.status for r in got] == [200, 200]
    assert upstream.calls == [("plain", BODY)] * 2
    assert upstream.received == ["http.request"] * 2
    assert outcome(gw, "plain", "accepted") == accepted + 2
    assert gw.metrics.abuse.hmac.labels("plain")._value.get() == hmacs + 2


async def test_url_token_route(gw: Gateway, upstream: Upstream) -> None:
    hmacs = gw.metrics.abuse.hmac.labels("token")._value.get()
    ok = await deliver(gw, "POST", f"/v1/tok/{URL_TOKEN}", body=BODY)
    assert ok.status == 200
    wrong = await deliver(gw, "POST", "/v1/tok/not-the-token", body=BODY)
    assert (wrong.status, wrong.reason) == (401, "webhook.bad_signature")
    assert upstream.calls == [("token", BODY)]
    assert gw.metrics.abuse.hmac.labels("token")._value.get() == hmacs  # no HMAC in this scheme


async def test_kommo_revoked_reads_the_query_and_dedupes_per_account(gw: Gateway, upstream: Upstream) -> None:
    hmacs = gw.metrics.abuse.hmac.labels("revoked")._value.get()
    got = [await deliver(gw, "GET", "/v1/revoked", query=revoked_query(a)) for a in ("1001", "1002", "1001")]
    assert [(r.status, r.reason) for r in got] == [(200, None), (200, None), (200, "webhook.duplicate")]
    assert upstream.calls == [("revoked", b""), ("revoked", b"")]
    assert gw.metrics.abuse.hmac.labels("revoked")._value.get() == hmacs + 3
    forged = await deliver(gw, "GET", "/v1/revoked", query=revoked_query("1003").replace("signature=", "signature=00"))
    assert (forged.status, forged.reason) == (401, "webhook.bad_signature")


async def test_concurrent_copy_gets_409_while_the_first_is_in_progress(gw: Gateway, upstream: Upstream) -> None:
    upstream.gate = asyncio.Event()
    first = asyncio.create_task(deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed()))
    await asyncio.wait_for(upstream.entered.wait(), 10)
    # bounded: were the copy forwarded too, it would wait on the gate for ever
    copy = await asyncio.wait_for(deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed()), 10)
    assert (copy.status, copy.reason, copy.headers["retry-after"]) == (409, "webhook.in_progress", "2")
    assert json.loads(copy.body)["detail"] == "this delivery is being processed; retry later"
    upstream.gate.set()
    assert (await asyncio.wait_for(first, 10)).status == 200
    late = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (late.status, late.reason) == (200, "webhook.duplicate")
    assert upstream.calls == [("hook", BODY)]


@pytest.mark.parametrize("status", [500, 300, 404])
async def test_non_2xx_answer_releases_the_delivery_for_a_retry(gw: Gateway, upstream: Upstream,
                                                                status: int) -> None:
    failed, accepted = outcome(gw, "hook", "upstream_failed"), outcome(gw, "hook", "accepted")
    errors = store_errors(gw)
    upstream.status = status
    r = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert r.status == status
    assert outcome(gw, "hook", "upstream_failed") == failed + 1
    assert outcome(gw, "hook", "accepted") == accepted
    upstream.status = 200
    retry = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (retry.status, retry.body) == (200, b"{}")
    assert upstream.calls == [("hook", BODY)] * 2
    assert outcome(gw, "hook", "accepted") == accepted + 1
    assert store_errors(gw) == errors


async def test_upstream_error_releases_the_delivery_for_a_retry(gw: Gateway, upstream: Upstream) -> None:
    failed = outcome(gw, "hook", "upstream_failed")
    upstream.fail = BadGateway()
    r = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (r.status, r.reason) == (502, "upstream.unavailable")
    assert outcome(gw, "hook", "upstream_failed") == failed + 1
    upstream.fail = None
    retry = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (retry.status, retry.body) == (200, b"{}")
    assert upstream.calls == [("hook", BODY)] * 2


class FlakyStore:
    """A MemoryDedupeStore whose chosen operations fail like an unreachable Redis."""

    def __init__(self, *failing: str) -> None:
        self.inner = MemoryDedupeStore()
        self.failing = set(failing)
        self.calls: list[str] = []

    def _maybe_fail(self, op: str) -> None:
        self.calls.append(op)
        if op in self.failing:
            raise DedupeStoreUnavailable()

    async def acquire(self, key: str, in_progress_ttl: float) -> State:
        self._maybe_fail("acquire")
        return await self.inner.acquire(key, in_progress_ttl)

    async def complete(self, key: str, window_seconds: float) -> bool:
        self._maybe_fail("complete")
        return await self.inner.complete(key, window_seconds)

    async def release(self, key: str) -> bool:
        self._maybe_fail("release")
        return await self.inner.release(key)

    async def close(self) -> None:
        await self.inner.close()


def use_store(gw: Gateway, store: FlakyStore) -> None:
    dedupe: DedupeStore = store
    gw.dedupe = dedupe


async def test_unreachable_store_fails_closed_before_forwarding(gw: Gateway, upstream: Upstream) -> None:
    use_store(gw, FlakyStore("acquire"))
    errors = store_errors(gw)
    r = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (r.status, r.reason) == (503, "webhook.store_unavailable")
    assert store_errors(gw) == errors + 1
    assert upstream.calls == []


@pytest.mark.parametrize(("status", "op"), [(200, "complete"), (500, "release")])
async def test_store_failure_after_the_answer_is_counted_not_surfaced(
        gw: Gateway, upstream: Upstream, caplog: pytest.LogCaptureFixture, status: int, op: str) -> None:
    store = FlakyStore(op)
    use_store(gw, store)
    errors = store_errors(gw)
    upstream.status = status
    with caplog.at_level(logging.ERROR, logger="gateway.webhook"):
        r = await deliver(gw, "POST", "/v1/hook", body=BODY, headers=signed())
    assert (r.status, r.body) == (status, b"{}")
    assert store.calls == ["acquire", op]
    assert store_errors(gw) == errors + 1
    logged = [rec for rec in caplog.records if rec.name == "gateway.webhook"]
    assert [(rec.levelno, rec.getMessage()) for rec in logged] == \
        [(logging.ERROR, "dedupe store: webhook.store_unavailable")]
    assert getattr(logged[0], "request_id", None) == upstream.request_ids[0]


async def test_cors_preflight_is_not_verified(gw: Gateway, upstream: Upstream) -> None:
    r = await deliver(gw, "OPTIONS", "/v1/hook", headers={"Origin": "https://app.example.com",
                                                          "Access-Control-Request-Method": "POST"})
    assert r.status == 204, (r.status, r.body)
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert upstream.calls == []


def stage_scope(gw: Gateway, path: str, headers: dict[str, str], **extra: object) -> dict[str, Any]:
    parts = path.strip("/").split("/")
    route, params, _ = gw.policy.table.lookup("POST", path, parts)
    ctx = RequestContext(f"req-{uuid.uuid4().hex[:8]}", "192.0.2.5", gw.policy)
    ctx.route = route
    ctx.path_params = params
    ctx.body = BODY
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": raw,
            "gateway": ctx, **extra}


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def test_stage_alone_without_hooks(gw: Gateway, upstream: Upstream) -> None:
    """The stage as a library: no outcome, store-error, guard, event or HMAC hooks given."""
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    store = MemoryDedupeStore()
    stage = WebhookStage(upstream, lambda: store)
    # a CORS preflight is not a delivery: passed on unverified
    await stage(stage_scope(gw, "/v1/plain", {}, **{"gateway.preflight": True}), _no_receive, send)
    assert upstream.calls == [("plain", BODY)]
    # a forged delivery is refused (no guard to feed is not an error)
    with pytest.raises(Unauthorized) as exc:
        await stage(stage_scope(gw, "/v1/plain", {"X-Sig": hook_sig(BODY, "wrong-key-0123456789")}),
                    _no_receive, send)
    assert exc.value.reason == "webhook.bad_signature"
    # a duplicate is answered here and recorded on the request context (access log, audit)
    scope = stage_scope(gw, "/v1/hook", signed())
    await stage(scope, _no_receive, send)
    dup = stage_scope(gw, "/v1/hook", signed())
    await stage(dup, _no_receive, send)
    ctx: RequestContext = dup["gateway"]
    assert (ctx.status, ctx.decision, ctx.reason) == (200, "duplicate", "webhook.duplicate")
    assert upstream.calls == [("plain", BODY), ("hook", BODY)]


async def test_an_inner_app_that_never_answers_is_an_upstream_failure(gw: Gateway) -> None:
    outcomes: list[tuple[str, str]] = []

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def send(message: MutableMapping[str, Any]) -> None:
        raise AssertionError(message)

    store = MemoryDedupeStore()
    stage = WebhookStage(silent, lambda: store, lambda route, what: outcomes.append((route, what)))
    await stage(stage_scope(gw, "/v1/hook", signed()), _no_receive, send)
    assert outcomes == [("hook", "upstream_failed")]
    # released, not completed: the retry is forwarded again
    await stage(stage_scope(gw, "/v1/hook", signed()), _no_receive, send)
    assert outcomes == [("hook", "upstream_failed")] * 2
