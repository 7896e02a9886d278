"""Issue 5 over the wire: real gateway processes, a real upstream, a real Redis, real sockets.

What the issue says it must show: the shipped Kommo routes verify and refuse as they should (401,
never 500) and forward byte for byte without the secret path token; Standard Webhooks timestamps
are enforced both ways and key rotation works; two replicas sharing one Redis forward the same
delivery once, forward again after an upstream failure, and acknowledge a later replay without
forwarding it; `source_ips`, the 2 s webhook timeout, and the "no secret, no start" rule.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.webhooks import dedupe_key
from tests.support.gateway_proc import BASE_ENV, ROOT, Proc, echo_upstream, gateway, write_policy
from tests.support.procs import RedisServer, free_port

SHIPPED = ROOT / "policies"
VECTORS = json.loads((ROOT / "tests/webhooks/data/webhooks.json").read_text())
TOKEN = BASE_ENV["KOMMO_WEBHOOK_SECRET"]
CHANNEL = BASE_ENV["KOMMO_CHANNEL_SECRET"].encode()
CLIENT_ID = BASE_ENV["KOMMO_CLIENT_ID"]
CLIENT_SECRET = BASE_ENV["KOMMO_CLIENT_SECRET"].encode()
FORM = "application/x-www-form-urlencoded"

# Two keys of one Standard Webhooks endpoint: the old one being rotated out, the current one.
SW_OLD = "whsec_" + base64.b64encode(b"old-standard-webhooks-key-0123456").decode()
SW_NEW = "whsec_" + base64.b64encode(b"new-standard-webhooks-key-6543210").decode()
HOOK_TOKEN = "test-hook-path-token-0123456789"

TEST_POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    defaults:
      timeouts: {connect: 2, total: 30, body_read: 5}   # webhook routes must not inherit 30 s
    routes:
      - id: hooks.sw
        path: /v1/hooks/sw
        methods: [POST]
        upstream_path: /hooks/sw
        auth: webhook
        webhook: {type: standard_webhooks, secret_env: TEST_SW_SECRET, source_ips: any}
      - id: hooks.sw_vectors
        path: /v1/hooks/sw-vectors
        methods: [POST]
        upstream_path: /hooks/sw-vectors
        auth: webhook
        webhook: {type: standard_webhooks, secret_env: TEST_SW_VECTOR_SECRET, source_ips: any}
      - id: hooks.internal
        path: "/v1/hooks/internal/{token}"
        methods: [POST]
        upstream_path: /hooks/internal
        auth: webhook
        webhook: {type: url_token, secret_env: TEST_HOOK_TOKEN, param: token, source_ips: [10.9.9.0/24]}
      - id: hooks.slow
        path: "/v1/hooks/slow/{token}"
        methods: [POST]
        upstream_path: /slow
        auth: webhook
        webhook: {type: url_token, secret_env: TEST_HOOK_TOKEN, param: token, source_ips: any, dedupe: false}
"""
TEST_ENV = {"TEST_SW_SECRET": SW_NEW, "TEST_HOOK_TOKEN": HOOK_TOKEN,
            "TEST_SW_VECTOR_SECRET": VECTORS["standard_webhooks"][0]["secret"]}


# --- helpers ---------------------------------------------------------------------------------


def kommo_form(tag: str) -> bytes:
    # What Kommo sends for a lead update, plus a unique tag (dedupe keys on the body) and a
    # UTF-8 byte pair left raw, so "byte for byte" is tested beyond ASCII.
    return (f"leads%5Bupdate%5D%5B0%5D%5Bid%5D=4242&leads%5Bupdate%5D%5B0%5D%5Bname%5D=%D0%9F%D1%80"
            f"&account%5Bsubdomain%5D=acme&tag={tag}&raw=").encode() + "é".encode()


def chat_sig(body: bytes, key: bytes = CHANNEL) -> str:
    return hmac.new(key, body, hashlib.sha1).hexdigest()


def revoked_sig(account_id: str, secret: bytes = CLIENT_SECRET) -> str:
    return hmac.new(secret, f"{CLIENT_ID}|{account_id}".encode(), hashlib.sha256).hexdigest()


def sw_headers(secrets: list[str], body: bytes, *, msg_id: str | None = None,
               stamp: int | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = str(int(time.time()) if stamp is None else stamp)
    sigs = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        sigs.append("v1," + base64.b64encode(mac).decode())
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": " ".join(sigs),
            "content-type": "application/json"}


def seen(upstream: Proc, path: str) -> int:
    return int(httpx.get(f"{upstream.url}/count").json()["seen"].get(path, 0))


def assert_refused(r: httpx.Response, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["reason"] == reason


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def shipped(echo: Proc) -> Iterator[Proc]:
    with gateway(SHIPPED, echo.url) as g:
        yield g


@pytest.fixture(scope="module")
def testgw(echo: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    d = write_policy(tmp_path_factory.mktemp("wh-policy"), gateway=TEST_POLICY)
    with gateway(d, echo.url, TEST_ENV) as g:
        yield g


# --- the shipped Kommo routes ----------------------------------------------------------------


def test_kommo_account_webhook_forwarded_byte_for_byte_without_token(shipped: Proc, echo: Proc) -> None:
    body = kommo_form(uuid.uuid4().hex)
    r = httpx.post(f"{shipped.url}/v1/webhooks/kommo/{TOKEN}", content=body,
                   headers={"content-type": FORM})
    assert r.status_code == 200, r.text
    got = r.json()  # the echo upstream's account of what it received
    assert got["method"] == "POST"
    assert got["path"] == "/webhooks/kommo"
    assert got["body"].encode("latin-1") == body
    assert dict(got["headers"])["content-type"] == FORM
    # The secret path token reaches the upstream nowhere: not in the path, query, headers or body.
    assert TOKEN not in json.dumps(got)


CHAT_BODY = VECTORS["kommo_chat"][0]["body"].encode()
CHAT_SIG = VECTORS["kommo_chat"][0]["X-Signature"]


def test_kommo_chat_vector_forwarded(shipped: Proc) -> None:
    assert chat_sig(CHAT_BODY) == CHAT_SIG  # the vector was made with the test channel secret
    r = httpx.post(f"{shipped.url}/v1/webhooks/kommo-chat", content=CHAT_BODY,
                   headers={"X-Signature": CHAT_SIG, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/webhooks/kommo-chat"
    assert r.json()["body"].encode("latin-1") == CHAT_BODY


def test_kommo_revoked_vector_forwarded(shipped: Proc) -> None:
    q = VECTORS["kommo_revoked"][0]["query"]
    assert revoked_sig(q["account_id"]) == q["signature"]
    r = httpx.get(f"{shipped.url}/v1/webhooks/kommo/revoked", params=q)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/webhooks/kommo/revoked"


def _one_char_off(token: str) -> str:
    return token[:-1] + ("1" if token[-1] != "1" else "2")


def _chat_body() -> bytes:
    return json.dumps({"account_id": "a1", "message": {"id": uuid.uuid4().hex}}).encode()


_BODY = _chat_body()
_ACC = "29371234"

BAD_SHIPPED = [
    pytest.param("POST", f"/v1/webhooks/kommo/{_one_char_off(TOKEN)}", {"content-type": FORM}, b"a=1",
                 "/webhooks/kommo", id="url_token_one_char_off"),
    pytest.param("POST", f"/v1/webhooks/kommo/{TOKEN[:-1]}", {"content-type": FORM}, b"a=1",
                 "/webhooks/kommo", id="url_token_truncated"),
    pytest.param("POST", f"/v1/webhooks/kommo/{TOKEN}x", {"content-type": FORM}, b"a=1",
                 "/webhooks/kommo", id="url_token_extended"),
    pytest.param("POST", "/v1/webhooks/kommo-chat", {"X-Signature": chat_sig(_BODY)}, _BODY + b" ",
                 "/webhooks/kommo-chat", id="chat_tampered_body"),
    pytest.param("POST", "/v1/webhooks/kommo-chat", {"X-Signature": chat_sig(_BODY, b"wrong-secret")}, _BODY,
                 "/webhooks/kommo-chat", id="chat_wrong_secret"),
    pytest.param("POST", "/v1/webhooks/kommo-chat", {}, _BODY, "/webhooks/kommo-chat", id="chat_missing_header"),
    pytest.param("POST", "/v1/webhooks/kommo-chat", {"X-Signature": "zz" * 20}, _BODY,
                 "/webhooks/kommo-chat", id="chat_not_hex"),
    pytest.param("POST", "/v1/webhooks/kommo-chat", {"X-Signature": chat_sig(_BODY)[:-2]}, _BODY,
                 "/webhooks/kommo-chat", id="chat_truncated_sig"),
    pytest.param("GET", f"/v1/webhooks/kommo/revoked?client_uuid={CLIENT_ID}&account_id={_ACC}"
                 f"&signature={revoked_sig(_ACC, b'wrong-secret')}", {}, b"", "/webhooks/kommo/revoked",
                 id="revoked_wrong_secret"),
    pytest.param("GET", f"/v1/webhooks/kommo/revoked?client_uuid={CLIENT_ID}&account_id=999"
                 f"&signature={revoked_sig(_ACC)}", {}, b"", "/webhooks/kommo/revoked",
                 id="revoked_other_account"),
    pytest.param("GET", f"/v1/webhooks/kommo/revoked?client_uuid=00000000-0000-0000-0000-000000000000"
                 f"&account_id={_ACC}&signature={revoked_sig(_ACC)}", {}, b"", "/webhooks/kommo/revoked",
                 id="revoked_other_client"),
    pytest.param("GET", f"/v1/webhooks/kommo/revoked?client_uuid={CLIENT_ID}&account_id={_ACC}", {}, b"",
                 "/webhooks/kommo/revoked", id="revoked_missing_signature"),
    pytest.param("GET", f"/v1/webhooks/kommo/revoked?client_uuid={CLIENT_ID}&account_id={_ACC}"
                 f"&signature={revoked_sig(_ACC)}&signature={revoked_sig(_ACC)}", {}, b"",
                 "/webhooks/kommo/revoked", id="revoked_signature_twice"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "upstream_path"), BAD_SHIPPED)
def test_shipped_webhooks_refuse_bad_signatures(shipped: Proc, echo: Proc, method: str, path: str,
                                                headers: dict[str, str], body: bytes,
                                                upstream_path: str) -> None:
    before = seen(echo, upstream_path)
    r = httpx.request(method, f"{shipped.url}{path}", headers=headers, content=body or None)
    assert_refused(r, 401, "webhook.bad_signature")
    assert TOKEN not in r.text and CHANNEL.decode() not in r.text
    assert seen(echo, upstream_path) == before


# --- Standard Webhooks on a test route -------------------------------------------------------


def test_standard_webhooks_valid_forwarded(testgw: Proc) -> None:
    body = json.dumps({"type": "invoice.paid", "n": uuid.uuid4().hex}).encode()
    r = httpx.post(f"{testgw.url}/v1/hooks/sw", content=body, headers=sw_headers([SW_NEW], body))
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/hooks/sw"
    assert r.json()["body"].encode("latin-1") == body


def test_standard_webhooks_key_rotation(testgw: Proc) -> None:
    body = json.dumps({"n": uuid.uuid4().hex}).encode()
    # The sender signs with the old and the new key during the rotation; we hold the new one.
    h = sw_headers([SW_OLD, SW_NEW], body)
    r = httpx.post(f"{testgw.url}/v1/hooks/sw", content=body, headers=h)
    assert r.status_code == 200, r.text
    # An unknown scheme version in front of the matching v1 is skipped, not failed.
    h = sw_headers([SW_NEW], body)
    h["webhook-signature"] = "v2,AAAA " + h["webhook-signature"]
    r = httpx.post(f"{testgw.url}/v1/hooks/sw", content=body, headers=h)
    assert r.status_code == 200, r.text


def _sw_bad(kind: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"n": uuid.uuid4().hex}).encode()
    now = int(time.time())
    if kind == "stale":
        return body, sw_headers([SW_NEW], body, stamp=now - 600)
    if kind == "future":
        return body, sw_headers([SW_NEW], body, stamp=now + 600)
    if kind == "old_key_only":
        return body, sw_headers([SW_OLD], body)
    if kind == "tampered":
        return body + b" ", sw_headers([SW_NEW], body)
    if kind == "missing_signature":
        h = sw_headers([SW_NEW], body)
        del h["webhook-signature"]
        return body, h
    if kind == "missing_id":
        h = sw_headers([SW_NEW], body)
        del h["webhook-id"]
        return body, h
    if kind == "stale_wrong_key":  # authenticity first: a forged old message is "bad", not "stale"
        return body, sw_headers([SW_OLD], body, stamp=now - 600)
    if kind == "timestamp_not_a_number":
        h = sw_headers([SW_NEW], body)
        h["webhook-timestamp"] = "soon"
        return body, h
    raise ValueError(kind)


@pytest.mark.parametrize(("kind", "reason"), [
    pytest.param("stale", "webhook.stale", id="stale"),
    pytest.param("future", "webhook.stale", id="future"),
    pytest.param("old_key_only", "webhook.bad_signature", id="wrong_secret"),
    pytest.param("tampered", "webhook.bad_signature", id="tampered_body"),
    pytest.param("missing_signature", "webhook.bad_signature", id="missing_signature"),
    pytest.param("missing_id", "webhook.bad_signature", id="missing_id"),
    pytest.param("stale_wrong_key", "webhook.bad_signature", id="stale_wrong_key"),
    pytest.param("timestamp_not_a_number", "webhook.bad_signature", id="timestamp_nan"),
])
def test_standard_webhooks_refusals(testgw: Proc, echo: Proc, kind: str, reason: str) -> None:
    body, headers = _sw_bad(kind)
    before = seen(echo, "/hooks/sw")
    r = httpx.post(f"{testgw.url}/v1/hooks/sw", content=body, headers=headers)
    assert_refused(r, 401, reason)
    assert seen(echo, "/hooks/sw") == before


@pytest.mark.parametrize("vector", [pytest.param(v, id=f"vector{i}")
                                    for i, v in enumerate(VECTORS["standard_webhooks"])
                                    if v["secret"] == VECTORS["standard_webhooks"][0]["secret"]])
def test_standard_webhooks_vectors_over_the_wire(testgw: Proc, vector: dict[str, Any]) -> None:
    # The published vectors carry timestamps from years ago: a genuine one is "stale", a forged
    # one "bad_signature" — which shows the gateway told them apart over the wire.
    headers = {k: vector[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    r = httpx.post(f"{testgw.url}/v1/hooks/sw-vectors", content=vector["body"].encode(), headers=headers)
    assert_refused(r, 401, "webhook.stale" if vector["valid"] else "webhook.bad_signature")


# --- source addresses, timeouts --------------------------------------------------------------


def test_source_ips_refuse_loopback_peer(testgw: Proc, echo: Proc) -> None:
    before = seen(echo, "/hooks/internal")
    r = httpx.post(f"{testgw.url}/v1/hooks/internal/{HOOK_TOKEN}", content=b"a=1",
                   headers={"content-type": FORM})
    assert_refused(r, 403, "webhook.source_denied")
    assert seen(echo, "/hooks/internal") == before


def test_webhook_route_default_timeout_is_at_most_two_seconds(testgw: Proc) -> None:
    start = time.monotonic()
    r = httpx.post(f"{testgw.url}/v1/hooks/slow/{HOOK_TOKEN}?ms=3000", content=b"a=1",
                   headers={"content-type": FORM}, timeout=10)
    elapsed = time.monotonic() - start
    assert r.status_code == 504, r.text
    # Bound, not benchmark: the global default here is 30 s; the webhook cap is 2 s.
    assert elapsed < 2.9


# --- two replicas, one Redis -----------------------------------------------------------------


class _Counting(BaseHTTPRequestHandler):
    """Counts deliveries per body; a body containing `fail-once` gets a 500 the first time."""

    counts: Counter[bytes]
    lock: threading.Lock

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.lock:
            self.counts[body] += 1
            n = self.counts[body]
        time.sleep(0.15)  # hold the delivery "in progress" long enough for the race to matter
        status = 500 if b"fail-once" in body and n == 1 else 200
        out = json.dumps({"upstream": "counting", "attempt": n}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def counting() -> Iterator[tuple[str, Counter[bytes]]]:
    counts: Counter[bytes] = Counter()
    handler = type("Handler", (_Counting,), {"counts": counts, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", counts
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def replicas(counting: tuple[str, Counter[bytes]], own_redis: RedisServer) -> Iterator[tuple[Proc, Proc]]:
    env = {"GATEWAY_REDIS_URL": own_redis.url}
    with gateway(SHIPPED, counting[0], env) as a, gateway(SHIPPED, counting[0], env) as b:
        yield a, b


def _post_kommo(g: Proc, body: bytes) -> httpx.Response:
    return httpx.post(f"{g.url}/v1/webhooks/kommo/{TOKEN}", content=body,
                      headers={"content-type": FORM}, timeout=10)


def test_same_delivery_to_two_replicas_reaches_upstream_once(
    replicas: tuple[Proc, Proc], counting: tuple[str, Counter[bytes]]
) -> None:
    a, b = replicas
    counts = counting[1]
    outcomes: Counter[str] = Counter()
    for _ in range(10):
        body = kommo_form(f"race-{uuid.uuid4().hex}")
        barrier = threading.Barrier(2)

        def send(g: Proc, body: bytes = body, barrier: threading.Barrier = barrier) -> httpx.Response:
            barrier.wait()
            return _post_kommo(g, body)

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(send, [a, b]))
        assert counts[body] == 1, [r.text for r in responses]
        forwarded = [r for r in responses if r.status_code == 200 and r.json().get("upstream") == "counting"]
        others = [r for r in responses if r not in forwarded]
        assert len(forwarded) == 1, [(r.status_code, r.text) for r in responses]
        (other,) = others
        if other.status_code == 409:
            assert other.json()["reason"] == "webhook.in_progress"
            assert int(other.headers["retry-after"]) > 0
            outcomes["in_progress"] += 1
        else:
            assert other.status_code == 200, other.text
            assert other.json()["reason"] == "webhook.duplicate"
            outcomes["duplicate"] += 1
    assert sum(outcomes.values()) == 10


def test_failed_delivery_is_forwarded_again_then_acknowledged(
    replicas: tuple[Proc, Proc], counting: tuple[str, Counter[bytes]], own_redis: RedisServer
) -> None:
    a, b = replicas
    counts = counting[1]
    body = kommo_form(f"fail-once-{uuid.uuid4().hex}")

    first = _post_kommo(a, body)
    assert first.status_code >= 500, first.text  # the sender sees a failure and will retry
    assert counts[body] == 1

    retry = _post_kommo(b, body)  # Kommo's retry may land on the other replica
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"upstream": "counting", "attempt": 2}
    assert counts[body] == 2

    for g in (a, b):
        replay = _post_kommo(g, body)
        assert replay.status_code == 200, replay.text
        assert replay.json()["reason"] == "webhook.duplicate"
    assert counts[body] == 2

    # "A replay an hour later": the done marker lives in the shared Redis for the window.
    r = redis.Redis.from_url(own_redis.url)
    try:
        key = "gw:wh:" + dedupe_key("webhooks.kommo", None, body)
        assert r.get(key) == b"done"
        ttl = r.ttl(key)
        assert 3600 <= ttl <= 86400
        assert all(k.startswith(b"gw:wh:") for k in r.scan_iter("gw:wh:*"))
    finally:
        r.close()


# --- no secret, no start ---------------------------------------------------------------------


def _production_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_", "UPSTREAM_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "GATEWAY_ENV": "production",
        "GATEWAY_POLICY_DIR": str(SHIPPED),
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_ADMIN_PORT": str(free_port()),
        "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9",
        "GATEWAY_DRAIN_DELAY": "0",
        "GATEWAY_JWT_SECRET": os.urandom(32).hex(),
        "GATEWAY_IDENTITY_SECRET": os.urandom(32).hex(),
        "GATEWAY_AUDIT_KEY": "k1:" + os.urandom(32).hex(),
        "KOMMO_WEBHOOK_SECRET": os.urandom(24).hex(),
        "KOMMO_CHANNEL_SECRET": os.urandom(24).hex(),
        "KOMMO_CLIENT_ID": str(uuid.uuid4()),
        "KOMMO_CLIENT_SECRET": os.urandom(24).hex(),
        "GATEWAY_CORS_ORIGINS": "https://app.acme-corp.io",  # production refuses the example.com placeholders
    })
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


BAD_SECRETS = [
    pytest.param(None, id="unset"),
    pytest.param("", id="empty"),
    pytest.param("dev-only-" + os.urandom(16).hex(), id="dev_default"),
]


@pytest.mark.parametrize("value", BAD_SECRETS)
def test_production_refuses_to_start_without_webhook_secret(value: str | None) -> None:
    env = _production_env(KOMMO_WEBHOOK_SECRET=value)
    try:
        done = subprocess.run([sys.executable, "-m", "gateway", "serve"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the gateway started (still running after 60 s) without a usable KOMMO_WEBHOOK_SECRET")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "webhooks.kommo" in out and "KOMMO_WEBHOOK_SECRET" in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("value", BAD_SECRETS)
def test_gateway_check_reports_missing_webhook_secret(value: str | None) -> None:
    env = _production_env(KOMMO_WEBHOOK_SECRET=value)
    done = subprocess.run([sys.executable, "-m", "gateway", "check", "policies"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "webhooks.kommo" in out and "KOMMO_WEBHOOK_SECRET" in out, out
    assert "routes.yaml:" in out, out  # names the place in the file, too


def test_production_starts_with_every_secret_set() -> None:
    # The control for the refusals above: the same environment with the secret set does start.
    env = _production_env()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"gw-prod-{uuid.uuid4().hex}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        port = int(env["GATEWAY_PORT"])
        deadline = time.monotonic() + 90  # start-up on a busy machine
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                pass
            if healthy:
                break
            time.sleep(0.1)
        assert healthy, log.read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(15)
        log.unlink(missing_ok=True)
