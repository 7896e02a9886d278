"""Everything a route or job handler needs, built once at start-up and closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.requests import Request

from upstream_stub.crypto import Keyring
from upstream_stub.db import Database
from upstream_stub.kommo_client import KommoHttp
from upstream_stub.kommo_tokens import KommoApi, TokenManager
from upstream_stub.oauth_state import StateSigner
from upstream_stub.settings import UpstreamSettings
from upstream_stub.store import open_stores
from upstream_stub.store.agents import AgentStore
from upstream_stub.store.connections import ConnectionStore
from upstream_stub.store.jobs import JobStore
from upstream_stub.store.leads import LeadStore
from upstream_stub.store.oauth_states import OAuthStateStore


@dataclass
class Services:
    """The process's shared objects; one instance per app."""

    settings: UpstreamSettings
    db: Database
    keys: Keyring
    signer: StateSigner
    http: httpx.AsyncClient
    agents: AgentStore
    connections: ConnectionStore
    jobs: JobStore
    leads: LeadStore
    states: OAuthStateStore
    kommo: KommoHttp
    tokens: TokenManager
    api: KommoApi

    @classmethod
    async def start(cls, settings: UpstreamSettings, keys: Keyring, signer: StateSigner) -> Services:
        # UPSTREAM_DATABASE_URL → PostgreSQL (refused when its role could bypass row-level security).
        stores = await open_stores(settings.database_url or settings.db_path, pool_size=settings.db_pool_size)
        db = stores.db
        # No redirects: a 3xx from "Kommo" must not walk us (and a bearer token) to another host.
        http = httpx.AsyncClient(timeout=settings.kommo_timeout, follow_redirects=False,
                                 limits=httpx.Limits(max_connections=20))
        connections = stores.connections
        kommo = KommoHttp(http, stores.rate_limiter(settings.kommo_rate_per_second),
                          settings.kommo_client_id, settings.kommo_client_secret, settings.kommo_redirect_uri)
        tokens = TokenManager(connections, keys, kommo)
        return cls(settings, db, keys, signer, http, stores.agents, connections, stores.jobs, stores.leads,
                   stores.states, kommo, tokens, KommoApi(tokens, kommo))

    async def close(self) -> None:
        await self.http.aclose()
        await self.db.close()


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
