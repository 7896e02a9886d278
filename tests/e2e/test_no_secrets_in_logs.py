"""Traffic with real tokens and secrets; none of them may appear in any log or audit line."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import httpx
import jwt

from gateway.auth import mint_dev_token
from tests.support.gateway_proc import BASE_ENV, ROOT, TEST_IDENTITY_SECRET, TEST_JWT_SECRET, echo_upstream, gateway


def test_no_token_or_secret_in_logs_or_audit(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    good = mint_dev_token(TEST_JWT_SECRET, "alice", "org-a", role="admin")
    forged = mint_dev_token("another-secret-that-is-long-enough-0000", "mallory", "org-a")
    expired = jwt.encode({"sub": "alice", "org_id": "org-a", "aud": "authenticated", "iat": 1, "exp": 2},
                         TEST_JWT_SECRET, algorithm="HS256")
    path_secret = BASE_ENV["KOMMO_WEBHOOK_SECRET"]
    chat_secret = BASE_ENV["KOMMO_CHANNEL_SECRET"]
    body = b'{"message":{"text":"hello"}}'
    chat_sig = hmac.new(chat_secret.encode(), body, hashlib.sha1).hexdigest()
    client_id, client_secret = BASE_ENV["KOMMO_CLIENT_ID"], BASE_ENV["KOMMO_CLIENT_SECRET"]
    revoked_sig = hmac.new(client_secret.encode(), f"{client_id}|42".encode(), hashlib.sha256).hexdigest()
    with echo_upstream() as up, gateway(ROOT / "policies", up.url,
                                        {"GATEWAY_AUDIT_LOG": str(audit), "GATEWAY_LOG_LEVEL": "debug"}) as gw:
        url = gw.url
        for tok in (good, forged, expired, good + "x", "not-a-jwt"):
            httpx.get(f"{url}/v1/agents?orgId=org-a", headers={"Authorization": f"Bearer {tok}"})
            httpx.post(f"{url}/v1/agents", headers={"Authorization": f"Bearer {tok}"}, json={"name": "n"})
        httpx.get(f"{url}/v1/agents?orgId=org-b", headers={"Authorization": f"Bearer {good}"})
        httpx.post(f"{url}/v1/webhooks/kommo/{path_secret}", content=b"leads[add][0][id]=1",
                   headers={"content-type": "application/x-www-form-urlencoded"})
        httpx.post(f"{url}/v1/webhooks/kommo/{path_secret[:-1]}X", content=b"leads[add][0][id]=2",
                   headers={"content-type": "application/x-www-form-urlencoded"})
        httpx.post(f"{url}/v1/webhooks/kommo-chat", content=body, headers={"X-Signature": chat_sig})
        httpx.post(f"{url}/v1/webhooks/kommo-chat", content=body + b" ", headers={"X-Signature": chat_sig})
        httpx.get(f"{url}/v1/webhooks/kommo/revoked",
                  params={"client_uuid": client_id, "account_id": "42", "signature": revoked_sig})
        time.sleep(0.5)
        logs = gw.log()
    audit_text = audit.read_text()
    assert audit_text.count("\n") >= 10, "the audit log recorded the traffic"
    assert "tenant.mismatch" in audit_text and "webhook.bad_signature" in audit_text
    secrets = {
        "jwt": good, "forged": forged, "expired": expired, "jwt_secret": TEST_JWT_SECRET,
        "identity_secret": TEST_IDENTITY_SECRET, "path_token": path_secret, "path_token_variant": path_secret[:-1],
        "chat_secret": chat_secret, "chat_signature": chat_sig, "client_secret": client_secret,
        "revoked_signature": revoked_sig, "jwt_signature": good.rsplit(".", 1)[1],
    }
    for name, value in secrets.items():
        assert value not in logs, f"{name} appears in the gateway log"
        assert value not in audit_text, f"{name} appears in the audit log"
