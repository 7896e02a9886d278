"""Kommo token lifecycle: refresh ahead of expiry, single-flight, also across processes.

Kommo access tokens live 24 h; each refresh returns a new refresh token and the old one dies once
the new one is used, so two concurrent refreshes can strand a connection. Within a process one
asyncio lock per connection lets a single coroutine refresh; across processes the refresh is guarded
by a lease row-lock and the new pair is stored by compare-and-swap on `token_version` *before* it is
used. Everyone else waits for the version to move and reads the stored pair.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass

import httpx

from upstream_stub.crypto import DecryptError, Keyring, Sealed
from upstream_stub.kommo_client import KommoError, KommoHttp, ReauthRequired, TokenPair
from upstream_stub.store.connections import ACTIVE, REAUTH, ConnectionStore, sealed_of

log = logging.getLogger("upstream_stub.kommo")
REFRESH_AHEAD = 300.0  # refresh a token that expires within 5 minutes
LEASE_SECONDS = 30.0
WAIT_FOR_PEER = 20.0


def aad(org_id: str, conn_id: str) -> str:
    return f"crm_connections:{org_id}:{conn_id}"


def seal_pair(keys: Keyring, org_id: str, conn_id: str, pair: TokenPair) -> Sealed:
    doc = {"access_token": pair.access_token, "refresh_token": pair.refresh_token}
    return keys.seal(json.dumps(doc).encode(), aad(org_id, conn_id))


@dataclass(frozen=True, slots=True, repr=False)
class Current:
    """The token to use now, with the version it was read at and the account host."""

    host: str
    pair: TokenPair
    version: int


class TokenManager:
    """Hands out a usable access token for a connection, refreshing it exactly once when due."""

    def __init__(self, store: ConnectionStore, keys: Keyring, kommo: KommoHttp) -> None:
        self.store = store
        self.keys = keys
        self.kommo = kommo
        self.owner = uuid.uuid4().hex
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _load(self, org_id: str, conn_id: str) -> tuple[sqlite3.Row, Current]:
        row = await self.store.get(org_id, conn_id)
        if row is None:
            raise ReauthRequired("connection not found")
        sealed = sealed_of(row)
        if row["status"] != ACTIVE or sealed is None or not row["base_domain"]:
            raise ReauthRequired(f"connection is {row['status']}")
        try:
            doc = json.loads(self.keys.open(sealed, aad(org_id, conn_id)))
        except (DecryptError, ValueError):
            raise KommoError("connection secrets cannot be decrypted") from None
        pair = TokenPair(doc["access_token"], doc.get("refresh_token"), row["token_expires_at"])
        return row, Current(row["base_domain"], pair, int(row["token_version"]))

    @staticmethod
    def _fresh(cur: Current) -> bool:
        exp = cur.pair.expires_at
        return exp is None or exp - time.time() > REFRESH_AHEAD

    async def current(self, org_id: str, conn_id: str) -> Current:
        _, cur = await self._load(org_id, conn_id)
        return cur if self._fresh(cur) else await self._refresh(org_id, conn_id, cur.version)

    async def after_unauthorized(self, org_id: str, conn_id: str, version: int) -> Current:
        """Kommo said 401 to the token of `version`: refresh once (or take a peer's newer pair)."""
        return await self._refresh(org_id, conn_id, version, force=True)

    async def _refresh(self, org_id: str, conn_id: str, seen: int, force: bool = False) -> Current:
        lock = self._locks.setdefault((org_id, conn_id), asyncio.Lock())
        async with lock:
            deadline = time.monotonic() + WAIT_FOR_PEER
            while True:
                row, cur = await self._load(org_id, conn_id)
                if cur.version != seen or (not force and self._fresh(cur)):
                    return cur  # someone (here or in another process) already refreshed
                if await self.store.try_lease_refresh(org_id, conn_id, seen, self.owner, LEASE_SECONDS):
                    break
                if time.monotonic() > deadline:
                    raise KommoError("token refresh by another process did not finish")
                await asyncio.sleep(0.05)
            return await self._do_refresh(org_id, conn_id, row, cur)

    async def _do_refresh(self, org_id: str, conn_id: str, row: sqlite3.Row, cur: Current) -> Current:
        if not cur.pair.refresh_token:
            await self.store.mark(org_id, conn_id, REAUTH)
            raise ReauthRequired("connection has no refresh token")
        try:
            pair = await self.kommo.refresh(cur.host, cur.pair.refresh_token)
        except ReauthRequired:
            await self.store.mark(org_id, conn_id, REAUTH, wipe=True)
            log.warning("kommo refresh refused; connection %s needs re-authorisation", conn_id)
            raise
        except (KommoError, httpx.HTTPError):
            await self.store.release_refresh(org_id, conn_id, self.owner)
            raise
        # Store the new pair before anyone uses it: if we crashed after using it unsaved, the old
        # refresh token would be dead and the new one lost.
        stored = await self.store.store_refreshed(
            org_id, conn_id, cur.version, self.owner, seal_pair(self.keys, org_id, conn_id, pair),
            pair.expires_at or 0.0)
        if stored is None:
            log.warning("kommo refresh for %s lost its lease; using the stored pair", conn_id)
            _, newer = await self._load(org_id, conn_id)
            return newer
        log.info("kommo token refreshed for connection %s (version %d)", conn_id, cur.version + 1)
        return Current(cur.host, pair, int(stored["token_version"]))


class KommoApi:
    """Authenticated Kommo API calls for a connection: fresh token, one refresh+retry on 401."""

    def __init__(self, tokens: TokenManager, kommo: KommoHttp) -> None:
        self.tokens = tokens
        self.kommo = kommo

    async def get(self, org_id: str, conn_id: str, path: str,
                  params: dict[str, str | int] | None = None) -> httpx.Response:
        cur = await self.tokens.current(org_id, conn_id)
        resp = await self.kommo.api(cur.host, cur.pair.access_token, path, params)
        if resp.status_code == 401:
            cur = await self.tokens.after_unauthorized(org_id, conn_id, cur.version)
            resp = await self.kommo.api(cur.host, cur.pair.access_token, path, params)
            if resp.status_code == 401:
                await self.tokens.store.mark(org_id, conn_id, REAUTH)
                raise ReauthRequired("kommo refused a freshly refreshed token")
        return resp
