"""Factories for upstream tests: settings, a running app with an httpx client, a Kommo connection."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.applications import Starlette

from tests.upstream.identity import SECRET, service_headers, user_headers
from tests.upstream.kommo_fake import FakeKommo
from upstream_stub.app import create_app
from upstream_stub.services import Services
from upstream_stub.settings import UpstreamSettings

ENC_KEY = base64.b64encode(b"T" * 32).decode()
STATE_SECRET = "test-state-secret-0123456789abcdef-upstream"
CLIENT_ID = "kommo-client-id-0001"
CLIENT_SECRET = "kommo-client-secret-xyz"
SECRETS = (SECRET, ENC_KEY, STATE_SECRET, CLIENT_SECRET)


def make_settings(tmp_path: Path, **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = dict(
        env="development", db_path=str(tmp_path / "upstream.db"), identity_secret=SECRET,
        encryption_key=ENC_KEY, encryption_keys=None, state_secret=STATE_SECRET, kommo_client_id=CLIENT_ID,
        kommo_client_secret=CLIENT_SECRET, kommo_redirect_uri="https://gw.example/v1/kommo/oauth/callback",
        job_poll_seconds=0.05, job_backoff_base=0.05, job_backoff_max=0.2, job_lease_seconds=5.0,
        shutdown_grace=1.0, worker_enabled=True,
    )
    values.update(overrides)
    return UpstreamSettings(**values)


@dataclass
class Upstream:
    """A started app, a client bound to it, its services and every response it gave."""

    app: Starlette
    client: httpx.AsyncClient
    svc: Services
    responses: list[httpx.Response] = field(default_factory=list)


@asynccontextmanager
async def running(settings: UpstreamSettings) -> AsyncIterator[Upstream]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        seen: list[httpx.Response] = []

        async def keep(resp: httpx.Response) -> None:
            await resp.aread()
            seen.append(resp)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://upstream",
                                     event_hooks={"response": [keep]}) as client:
            yield Upstream(app, client, app.state.services, seen)


async def connect(up: Upstream, kommo: FakeKommo, org: str = "org_a") -> str:
    """Run the OAuth flow (authorize → consent → callback) and return the new connection id."""
    r = await up.client.get("/kommo/oauth/authorize", params={"orgId": org}, headers=user_headers(org))
    assert r.status_code == 200, r.text
    state = parse_qs(urlsplit(r.json()["url"]).query)["state"][0]
    r = await up.client.get("/kommo/oauth/callback", headers=service_headers("kommo-oauth-callback"),
                            params={"code": kommo.code, "state": state, "referer": kommo.host})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])
