"""In-process gateway for the stage tests of issue 14: the real pipeline from a policy text, the
forwarder replaced by a tiny app that answers 200, and requests that record whether their body was
ever read (`Sent.body_reads`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from gateway.app import Gateway
from gateway.auth import mint_dev_token
from gateway.policy.loader import load_policy
from gateway.settings import Settings, effective_env

JWT_SECRET = "stage-test-jwt-secret-0123456789abcdef0123"
HOOK_SECRET = "stage-test-hook-secret-0123456789"


@dataclass
class Sent:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_reads: int = 0

    @property
    def reason(self) -> str | None:
        try:
            return str(json.loads(self.body)["reason"])
        except (ValueError, KeyError):
            return None


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    # Stands in for the forwarder: reads the (capped) body like it would, answers 200.
    ctx = scope["gateway"]
    if ctx.body is None and scope.get("gateway.has_body"):
        while (await receive()).get("more_body"):
            pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def make_gateway(policy_yaml: str, env: dict[str, str] | None = None, forwarder: Any = _ok) -> Gateway:
    """The gateway of `policy_yaml` with `env` (secrets the policy names) added, `forwarder` in the
    forwarder's place."""
    d = Path(tempfile.mkdtemp(prefix="gw-abuse-"))
    (d / "gateway.yaml").write_text(textwrap.dedent(policy_yaml))
    env = {"GATEWAY_JWT_SECRET": JWT_SECRET, "GATEWAY_IDENTITY_SECRET": "stage-test-identity-secret-0123456789",
           "HOOK_SECRET": HOOK_SECRET, "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9", **(env or {})}
    settings = Settings(policy_dir=str(d), jwt_secret=JWT_SECRET, identity_secret=env["GATEWAY_IDENTITY_SECRET"],
                        audit_log=str(d / "audit.log"), access_log="off")
    full_env = {**effective_env(settings, {}), **env}
    gw = Gateway(settings, load_policy(d, full_env, False), full_env)
    gw.observers.clear()
    gw.forwarder = forwarder
    gw.pipeline = gw.build_pipeline()
    return gw


async def request(gw: Gateway, method: str, path: str, *, ip: str, headers: dict[str, str] | None = None,
                  body: bytes = b"", query: str = "") -> Sent:
    out = Sent()
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"host", b"gw.test"))
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": raw, "client": (ip, 40000), "server": ("127.0.0.1", 8080)}

    async def receive() -> dict[str, Any]:
        out.body_reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")

    await gw.pipeline(scope, receive, send)
    return out


def token(sub: str | None = None) -> str:
    return mint_dev_token(JWT_SECRET, sub or f"user-{uuid.uuid4().hex[:8]}", "org-a", audience="authenticated")


def forged(kind: str) -> str:
    """A token that fails verification in one way (each a different reason)."""
    now = int(time.time())
    good = {"sub": f"user-{uuid.uuid4().hex[:8]}", "org_id": "org-a", "org_role": "member",
            "iat": now, "exp": now + 600, "aud": "authenticated"}
    if kind == "bad_signature":
        return jwt.encode(good, "not-the-secret-0123456789-0123456789", algorithm="HS256")
    if kind == "alg_none":
        return jwt.encode(good, None, algorithm="none")  # type: ignore[arg-type]
    if kind == "expired":
        return jwt.encode({**good, "iat": now - 7200, "exp": now - 3600}, JWT_SECRET, algorithm="HS256")
    if kind == "wrong_aud":
        return jwt.encode({**good, "aud": "someone-else"}, JWT_SECRET, algorithm="HS256")
    if kind == "malformed":
        return "not.a.jwt"
    raise ValueError(kind)


def hook_sig(body: bytes, key: str = HOOK_SECRET) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def fresh_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"192.0.2.{raw[0] or 1}" if raw[1] & 1 else f"198.18.{raw[0]}.{raw[1] or 1}"
